//! The circuit breaker's cost, and the outbox relay's throughput, in one process:
//!
//! 1. **Closed-path overhead**: our `CircuitBreaker::call`, failsafe's and recloser's
//!    future-aware `call`, each around the same no-op `async` call returning `Ok`, against the
//!    bare no-op call; reported as nanoseconds per call *above* the bare call (`bare` itself
//!    reports its own time). On 1 thread and on 2 OS threads, each driving its own loop on a
//!    current-thread runtime against one shared breaker: the 2-thread figure is the time per
//!    call seen by one of the callers, so contention on the shared state shows as a larger
//!    figure than on 1 thread. Each figure comes from the wall clock and from the calling
//!    threads' CPU time: on a busy machine the wall figure also counts waits for a core.
//! 2. **Publish throughput**: `KafkaEventBus::publish` of prebuilt events, many in flight
//!    (`buffer_unordered`), alone (`bus-publish`) and wrapped in `breaker.call`
//!    (`breaker-publish`), against the test broker; events/s and, per round, the ratio of the
//!    two. `permit-publish` takes a permit and records the outcome without `call`'s timeout,
//!    whose timer is registered for every publish (each is pending when first polled).
//! 3. **Outbox relay**: `Outbox::relay_once` passes (what `drain` loops over) publishing
//!    queued events through the bus, with the pool's default `linger.ms` (`outbox-relay`) and
//!    with `linger.ms` 0 (`outbox-relay-linger0`), and through a publisher that acknowledges
//!    at once without sending (`outbox-relay-no-broker`: the relay's database work alone).
//!    The events are enqueued first, untimed, into a fresh database (and topped up between
//!    rounds); each relay contender drains until the outbox is empty or its time budget runs
//!    out, and reports events published per second of draining.
//!
//! Every bus here runs without its per-caller rate limit (by default 1,000 events a minute per
//! source), which would otherwise be the only thing measured.
//!
//! Section 1 also times the parts of our `call` (`onex-permit-only`: `try_acquire` and
//! `Permit::record` without the timeout; `tokio-timeout-only`; `instant+utc-now`: one clock
//! read of each kind), to show where its time goes.
//!
//! Rounds interleave the contenders in a rotating order, so that load from elsewhere on the
//! machine hits them alike; each figure is the median over rounds (overheads and ratios are
//! medians of per-round differences and ratios). Prints medians, asserts nothing beyond the
//! calls succeeding. Run with `scripts/bench-circuit-breaker.sh` (starts PostgreSQL and the
//! broker); writes `target/bench/circuit_breaker.json`.
//!
//! Knobs: `CB_BENCH_ROUNDS` (7, section 1), `CB_BENCH_PUBLISH_ROUNDS` (9, section 2: single
//! rounds move by ±20 %, so fewer rounds cannot tell a 5 % difference), `CB_BENCH_IO_ROUNDS`
//! (3, section 3), `CB_BENCH_CALLS` (calls per thread per round, 3000000), `CB_BENCH_EVENTS` (events per
//! publish round, 100000), `CB_BENCH_IN_FLIGHT` (10000), `CB_BENCH_RELAY_EVENTS` (events
//! enqueued for the relay, 100000), `CB_BENCH_RELAY_BATCH` (rows per relay pass, 1000),
//! `CB_BENCH_RELAY_SECONDS` (time budget per relay contender, 30), `CB_BENCH_ONLY`
//! (comma-separated sections: `overhead`, `publish`, `relay`), `CB_BENCH_OUT`.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use failsafe::futures::CircuitBreaker as _;
use futures::StreamExt;
use onex_runtime::OnexError;
use onex_runtime::circuit_breaker::CircuitBreaker;
use onex_runtime::environment::Environment;
use onex_runtime::event::OnexEvent;
use onex_runtime::event_bus::{EventPublisher, KafkaEventBus, TopicNamer};
use onex_runtime::kafka::{KafkaPoolSettings, KafkaProducerPool};
use onex_runtime::models::circuit_breaker::CircuitBreakerConfig;
use onex_runtime::models::kafka::KafkaProducerConfig;
use onex_runtime::node::BoxFuture;
use onex_runtime::outbox::{self, Enqueued, Outbox, OutboxConfig};
use onex_runtime::postgres::PostgresConnectionManager;
use onex_tests::bench::{Only, env_usize, median, thread_cpu};
use onex_tests::kafka::{TestTopic, bootstrap, create_topic};
use onex_tests::postgres::TestDatabase;
use serde::Serialize;
use uuid::Uuid;

const EVENT_TYPE: &str = "bench.breaker.published";
const PARTITIONS: i32 = 3;
const WARMUP_EVENTS: usize = 1_000;
/// Enqueues in flight while filling the outbox (the pool's connections, less one spare).
const ENQUEUERS: usize = 8;
/// The production profile's `timeout_secs`, which [`breaker_config`] uses.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Record {
    Call {
        contender: &'static str,
        threads: usize,
        /// For a breaker, its overhead above the bare call (median of per-round
        /// differences); for `bare`, the no-op call's own time.
        ns_per_call: f64,
        /// The same from the calling threads' CPU time instead of the wall clock.
        cpu_ns_per_call: f64,
        /// The wrapped call's whole wall time (median over rounds).
        total_ns_per_call: f64,
        settings: String,
    },
    Throughput {
        contender: &'static str,
        events_per_sec: f64,
        /// Publishes through the breaker only: median of per-round `rate / bus-publish`.
        #[serde(skip_serializing_if = "Option::is_none")]
        ratio_to_bus: Option<f64>,
        settings: String,
    },
}

fn breaker_config() -> CircuitBreakerConfig {
    CircuitBreakerConfig::for_environment(Environment::Production)
}

// ---------------------------------------------------------------------------------------
// 1. Closed-path overhead

#[derive(Clone, Copy, PartialEq, Debug)]
enum Wrapper {
    Bare,
    Onex,
    Failsafe,
    Recloser,
    /// Where our `call`'s time goes: `try_acquire` + `Permit::record`, without the timeout.
    OnexPermit,
    /// ... the `tokio::time::timeout` that `call` wraps the call in ...
    TokioTimeout,
    /// ... and one monotonic and one wall-clock read (`call` makes two of each kind, counting
    /// tokio's).
    Clocks,
}

impl Wrapper {
    const ALL: [Wrapper; 7] = [
        Wrapper::Bare,
        Wrapper::Onex,
        Wrapper::Failsafe,
        Wrapper::Recloser,
        Wrapper::OnexPermit,
        Wrapper::TokioTimeout,
        Wrapper::Clocks,
    ];

    fn name(self) -> &'static str {
        match self {
            Wrapper::Bare => "bare",
            Wrapper::Onex => "onex",
            Wrapper::Failsafe => "failsafe",
            Wrapper::Recloser => "recloser",
            Wrapper::OnexPermit => "onex-permit-only",
            Wrapper::TokioTimeout => "tokio-timeout-only",
            Wrapper::Clocks => "instant+utc-now",
        }
    }
}

/// One breaker of each kind, shared by every thread of a measurement.
struct Breakers {
    onex: CircuitBreaker,
    failsafe: failsafe::StateMachine<
        failsafe::failure_policy::OrElse<
            failsafe::failure_policy::SuccessRateOverTimeWindow<failsafe::backoff::EqualJittered>,
            failsafe::failure_policy::ConsecutiveFailures<failsafe::backoff::EqualJittered>,
        >,
        (),
    >,
    recloser: recloser::AsyncRecloser,
}

impl Breakers {
    fn new() -> Self {
        Self {
            onex: CircuitBreaker::new(breaker_config()).expect("breaker config"),
            failsafe: failsafe::Config::new().build(),
            recloser: recloser::AsyncRecloser::from(recloser::Recloser::default()),
        }
    }
}

/// The wrapped call: does nothing, succeeds. Not inlined, so the bare loop still makes a call.
#[inline(never)]
async fn noop() -> Result<(), OnexError> {
    Ok(())
}

/// `calls` calls through `wrapper`; one loop per wrapper, so each is compiled on its own.
async fn drive(breakers: &Breakers, wrapper: Wrapper, calls: usize) {
    match wrapper {
        Wrapper::Bare => {
            for _ in 0..calls {
                black_box(noop().await.is_ok());
            }
        }
        Wrapper::Onex => {
            for _ in 0..calls {
                black_box(breakers.onex.call(noop()).await.is_ok());
            }
        }
        Wrapper::Failsafe => {
            for _ in 0..calls {
                black_box(breakers.failsafe.call(noop()).await.is_ok());
            }
        }
        Wrapper::Recloser => {
            for _ in 0..calls {
                black_box(breakers.recloser.call(noop()).await.is_ok());
            }
        }
        Wrapper::OnexPermit => {
            for _ in 0..calls {
                let permit = breakers.onex.try_acquire().expect("a closed breaker admits");
                let result = noop().await;
                black_box(permit.record(&result));
            }
        }
        Wrapper::TokioTimeout => {
            for _ in 0..calls {
                black_box(tokio::time::timeout(CALL_TIMEOUT, noop()).await.is_ok());
            }
        }
        Wrapper::Clocks => {
            for _ in 0..calls {
                black_box(Instant::now());
                black_box(chrono::Utc::now());
                black_box(noop().await.is_ok());
            }
        }
    }
}

/// Time per call seen by one caller.
#[derive(Clone, Copy)]
struct CallTime {
    wall_ns: f64,
    /// The calling thread's CPU time per call: leaves out waits for a core, which on a busy
    /// 2-core machine inflate the 2-thread wall figure.
    cpu_ns: f64,
}

/// `threads` OS threads, each with its own current-thread runtime, start together and make
/// `calls` calls on one shared set of breakers; the mean of their per-call times.
fn time_calls(wrapper: Wrapper, threads: usize, calls: usize) -> CallTime {
    let breakers = Breakers::new();
    let start = Barrier::new(threads);
    let per_thread: Vec<CallTime> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (breakers, start) = (&breakers, &start);
                scope.spawn(move || {
                    // Timers on: our breaker's `call` enforces its timeout with tokio's timer.
                    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                    runtime.block_on(drive(breakers, wrapper, calls / 100));
                    start.wait();
                    let cpu = thread_cpu();
                    let started = Instant::now();
                    runtime.block_on(drive(breakers, wrapper, calls));
                    let wall = started.elapsed();
                    let cpu = cpu.zip(thread_cpu()).map_or(wall, |(before, after)| after.saturating_sub(before));
                    let per_call = |d: Duration| d.as_secs_f64() * 1e9 / calls as f64;
                    CallTime { wall_ns: per_call(wall), cpu_ns: per_call(cpu) }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("bench thread")).collect()
    });
    assert_eq!(breakers.onex.metrics().failed_calls, 0);
    let mean = |f: fn(&CallTime) -> f64| per_thread.iter().map(f).sum::<f64>() / per_thread.len() as f64;
    CallTime { wall_ns: mean(|t| t.wall_ns), cpu_ns: mean(|t| t.cpu_ns) }
}

fn overhead(rounds: usize, calls: usize) -> Vec<Record> {
    let mut records = Vec::new();
    for threads in [1, 2] {
        let mut samples: Vec<Vec<CallTime>> = vec![Vec::new(); Wrapper::ALL.len()];
        for round in 0..rounds {
            for k in 0..Wrapper::ALL.len() {
                let slot = (round + k) % Wrapper::ALL.len();
                let time = time_calls(Wrapper::ALL[slot], threads, calls);
                eprintln!(
                    "round {round} threads={threads} {:<18} {:>8.1} ns/call wall {:>8.1} ns/call CPU",
                    Wrapper::ALL[slot].name(),
                    time.wall_ns,
                    time.cpu_ns
                );
                samples[slot].push(time);
            }
        }
        let bare = samples[0].clone();
        for (wrapper, runs) in Wrapper::ALL.iter().zip(&samples) {
            // For a wrapper, the median of its per-round differences from the bare call.
            let above_bare = |f: fn(&CallTime) -> f64| {
                let values: Vec<f64> = if *wrapper == Wrapper::Bare {
                    runs.iter().map(f).collect()
                } else {
                    runs.iter().zip(&bare).map(|(w, b)| f(w) - f(b)).collect()
                };
                median(&values).unwrap_or(f64::NAN)
            };
            records.push(Record::Call {
                contender: wrapper.name(),
                threads,
                ns_per_call: above_bare(|t| t.wall_ns),
                cpu_ns_per_call: above_bare(|t| t.cpu_ns),
                total_ns_per_call: median(&runs.iter().map(|t| t.wall_ns).collect::<Vec<_>>()).unwrap_or(f64::NAN),
                settings: format!("calls_per_thread={calls} rounds={rounds} (median)"),
            });
        }
    }
    records
}

// ---------------------------------------------------------------------------------------
// 2. Publish throughput, bus alone and through the breaker

/// A bus with its own tenant, so its topic is fresh; the topic is deleted when the guard drops
/// (the broker keeps every message in memory).
async fn fresh_bus(linger_ms: Option<u32>) -> (KafkaEventBus, TestTopic) {
    let mut config = KafkaProducerConfig::new(bootstrap());
    if let Some(linger) = linger_ms {
        config.linger_ms = linger;
    }
    let pool = KafkaProducerPool::new(KafkaPoolSettings::default(), config).expect("producer pool");
    let tenant = format!("t{}", Uuid::new_v4().simple());
    let namer = TopicNamer::new("dev", &tenant, "onex").expect("namer");
    let topic = namer.topic_for(EVENT_TYPE).expect("topic name");
    create_topic(&topic, PARTITIONS).await;
    // Without the per-caller rate limit: its default (`event_publish`, 1,000 events a minute
    // per source, bursts of 100) would measure the limiter, not the publish path.
    let bus = KafkaEventBus::new(Arc::new(pool), namer).with_rate_limit(None);
    (bus, TestTopic { name: topic })
}

fn events(count: usize) -> Vec<OnexEvent> {
    (0..count)
        .map(|n| OnexEvent::new(EVENT_TYPE, "bench-breaker", Uuid::new_v4(), serde_json::json!({ "n": n })))
        .collect()
}

#[derive(Clone, Copy, PartialEq)]
enum Publish {
    Bus,
    Breaker,
    /// `try_acquire` + `Permit::record` around the publish: the breaker without `call`'s
    /// timeout, whose timer is registered here (the publish is pending when first polled).
    Permit,
}

impl Publish {
    const ALL: [Publish; 3] = [Publish::Bus, Publish::Breaker, Publish::Permit];

    fn name(self) -> &'static str {
        match self {
            Publish::Bus => "bus-publish",
            Publish::Breaker => "breaker-publish",
            Publish::Permit => "permit-publish",
        }
    }
}

async fn publish_round(how: Publish, count: usize, in_flight: usize) -> f64 {
    let (bus, _topic) = fresh_bus(None).await;
    let breaker = CircuitBreaker::new(breaker_config()).expect("breaker config");
    bus.publish_batch(events(WARMUP_EVENTS)).await.expect("warm-up");
    let prebuilt = events(count);
    let started = Instant::now();
    let mut results = futures::stream::iter(prebuilt)
        .map(|event| {
            let (bus, breaker) = (&bus, &breaker);
            async move {
                match how {
                    Publish::Bus => bus.publish(event).await,
                    Publish::Breaker => breaker.call(bus.publish(event)).await.map_err(|e| e.into_error()),
                    Publish::Permit => {
                        let permit = breaker.try_acquire().map_err(|rejected| rejected.to_error())?;
                        let result = bus.publish(event).await;
                        permit.record(&result);
                        result
                    }
                }
            }
        })
        .buffer_unordered(in_flight);
    while let Some(result) = results.next().await {
        result.expect("publish");
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    drop(results);
    bus.pool().shutdown().await.expect("pool shutdown");
    rate
}

async fn publish(rounds: usize, count: usize, in_flight: usize) -> Vec<Record> {
    let mut samples = vec![Vec::new(); Publish::ALL.len()];
    for round in 0..rounds {
        for k in 0..Publish::ALL.len() {
            let slot = (round + k) % Publish::ALL.len();
            let rate = publish_round(Publish::ALL[slot], count, in_flight).await;
            eprintln!("round {round} {:<16} {rate:>10.0} events/s", Publish::ALL[slot].name());
            samples[slot].push(rate);
        }
    }
    let settings = format!("events={count} in_flight={in_flight} partitions={PARTITIONS} rounds={rounds} (median)");
    Publish::ALL
        .iter()
        .zip(&samples)
        .map(|(how, runs)| {
            let ratios: Vec<f64> = runs.iter().zip(&samples[0]).map(|(rate, bus)| rate / bus).collect();
            Record::Throughput {
                contender: how.name(),
                events_per_sec: median(runs).unwrap_or(f64::NAN),
                ratio_to_bus: (*how != Publish::Bus).then(|| median(&ratios)).flatten(),
                settings: settings.clone(),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// 3. The outbox relay

async fn fill(outbox: &Outbox, count: usize) {
    let started = Instant::now();
    let mut results = futures::stream::iter(events(count))
        .map(|event| async move { outbox.enqueue(&event, "closed").await })
        .buffer_unordered(ENQUEUERS);
    while let Some(result) = results.next().await {
        let outcome = result.expect("enqueue");
        assert!(matches!(outcome, Enqueued::Queued { .. }), "{outcome:?}");
    }
    eprintln!("enqueued {count} events in {:.1} s (untimed)", started.elapsed().as_secs_f64());
}

/// Acknowledges every event at once without sending it: a relay through it measures the
/// relay's database work alone (claim, order check, decode, mark, commit).
struct Discard;

impl EventPublisher for Discard {
    fn publish(&self, event: OnexEvent) -> BoxFuture<'_, Result<(), OnexError>> {
        black_box(event);
        Box::pin(async { Ok(()) })
    }
}

/// Where a relay contender publishes.
#[derive(Clone, Copy)]
enum RelayTo {
    /// The bus on the test broker, with this `linger.ms` (`None`: the pool's default).
    Bus(Option<u32>),
    Discard,
}

/// Relay passes until the outbox is empty or `budget` has passed: events published per second.
async fn relay_round(outbox: &Outbox, to: RelayTo, batch: usize, budget: Duration) -> (f64, usize) {
    let bus = match to {
        RelayTo::Bus(linger_ms) => {
            let (bus, topic) = fresh_bus(linger_ms).await;
            bus.publish_batch(events(WARMUP_EVENTS)).await.expect("warm-up");
            Some((bus, topic))
        }
        RelayTo::Discard => None,
    };
    let publisher: &dyn EventPublisher = match &bus {
        Some((bus, _)) => bus,
        None => &Discard,
    };
    let started = Instant::now();
    let mut published = 0;
    while started.elapsed() < budget {
        let pass = outbox.relay_once(publisher, batch).await.expect("relay pass");
        assert_eq!(pass.failed, 0, "{:?}", pass.last_error);
        published += pass.published;
        if pass.claimed == 0 {
            break;
        }
    }
    let rate = published as f64 / started.elapsed().as_secs_f64();
    if let Some((bus, _topic)) = bus {
        bus.pool().shutdown().await.expect("pool shutdown");
    }
    (rate, published)
}

async fn relay(rounds: usize, count: usize, batch: usize, budget: Duration) -> Vec<Record> {
    let db = TestDatabase::create("cbbench").await;
    let mut config = db.config();
    config.max_connections = ENQUEUERS as u32 + 2;
    let pg = Arc::new(PostgresConnectionManager::connect(config).await.expect("connect"));
    outbox::migrate(&pg).await.expect("migrate");
    let outbox_config = OutboxConfig {
        max_depth: (count as u64 + 1).max(OutboxConfig::default().max_depth),
        ..OutboxConfig::default()
    };
    let outbox = Outbox::new(pg, outbox_config).expect("outbox");
    let contenders: [(&'static str, RelayTo); 3] = [
        ("outbox-relay", RelayTo::Bus(None)),
        ("outbox-relay-linger0", RelayTo::Bus(Some(0))),
        ("outbox-relay-no-broker", RelayTo::Discard),
    ];
    let mut samples = vec![Vec::new(); contenders.len()];
    let mut drained = vec![0usize; contenders.len()];
    for round in 0..rounds {
        for k in 0..contenders.len() {
            let slot = (round + k) % contenders.len();
            // Refill, untimed, so each round drains from a full outbox.
            let depth = outbox.depth().await.expect("depth") as usize;
            if depth < count {
                fill(&outbox, count - depth).await;
            }
            let (name, to) = contenders[slot];
            let (rate, published) = relay_round(&outbox, to, batch, budget).await;
            eprintln!("round {round} {name:<22} {rate:>10.0} events/s ({published} published)");
            samples[slot].push(rate);
            drained[slot] = drained[slot].max(published);
        }
    }
    contenders
        .iter()
        .zip(samples.iter().zip(drained))
        .map(|(&(contender, to), (runs, published))| {
            let publisher = match to {
                RelayTo::Bus(linger) => {
                    format!("bus linger.ms={}", linger.unwrap_or(KafkaProducerConfig::DEFAULT_LINGER_MS))
                }
                RelayTo::Discard => "none (acknowledged at once)".to_owned(),
            };
            Record::Throughput {
                contender,
                events_per_sec: median(runs).unwrap_or(f64::NAN),
                ratio_to_bus: None,
                settings: format!(
                    "queued={count} batch={batch} budget_s={} most_published_in_a_round={published} publisher={publisher} rounds={rounds} (median)",
                    budget.as_secs()
                ),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------

fn main() {
    let rounds = env_usize("CB_BENCH_ROUNDS", 7).max(1);
    let io_rounds = env_usize("CB_BENCH_IO_ROUNDS", 3).max(1);
    let publish_rounds = env_usize("CB_BENCH_PUBLISH_ROUNDS", 9).max(1);
    let calls = env_usize("CB_BENCH_CALLS", 3_000_000).max(100);
    let events = env_usize("CB_BENCH_EVENTS", 100_000).max(1);
    let in_flight = env_usize("CB_BENCH_IN_FLIGHT", 10_000).max(1);
    let relay_events = env_usize("CB_BENCH_RELAY_EVENTS", 100_000).max(1);
    let relay_batch = env_usize("CB_BENCH_RELAY_BATCH", 1_000).max(1);
    let relay_budget = Duration::from_secs(env_usize("CB_BENCH_RELAY_SECONDS", 30).max(1) as u64);
    let only = Only::from_env("CB_BENCH_ONLY");
    let wanted = |section: &str| only.wants(section);

    let mut records = Vec::new();
    if wanted("overhead") {
        records.extend(overhead(rounds, calls));
    }
    if wanted("publish") || wanted("relay") {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async {
            if wanted("publish") {
                records.extend(publish(publish_rounds, events, in_flight).await);
            }
            if wanted("relay") {
                records.extend(relay(io_rounds, relay_events, relay_batch, relay_budget).await);
            }
        });
    }

    let path = std::env::var_os("CB_BENCH_OUT").map(std::path::PathBuf::from).unwrap_or_else(|| {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench/circuit_breaker.json")
    });
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("create the output directory");
    }
    std::fs::write(&path, serde_json::to_string_pretty(&records).unwrap()).expect("write the JSON report");

    println!("| contender | threads | overhead ns/call (wall) | overhead ns/call (CPU) | whole call ns (wall) |");
    println!("|---|---:|---:|---:|---:|");
    for record in &records {
        if let Record::Call { contender, threads, ns_per_call, cpu_ns_per_call, total_ns_per_call, .. } = record {
            let (wall, cpu) = if *contender == "bare" {
                ("-".to_owned(), "-".to_owned())
            } else {
                (format!("{ns_per_call:.1}"), format!("{cpu_ns_per_call:.1}"))
            };
            println!("| {contender} | {threads} | {wall} | {cpu} | {total_ns_per_call:.1} |");
        }
    }
    println!("\n| contender | events/s | vs bus-publish, per round |");
    println!("|---|---:|---:|");
    for record in &records {
        if let Record::Throughput { contender, events_per_sec, ratio_to_bus, .. } = record {
            let ratio = ratio_to_bus.map_or("-".to_owned(), |r| format!("{r:.3}"));
            println!("| {contender} | {events_per_sec:.0} | {ratio} |");
        }
    }
    println!("\nwritten to {}", path.canonicalize().unwrap_or(path).display());
}
