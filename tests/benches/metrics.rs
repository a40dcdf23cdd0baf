//! What metrics cost the process that keeps them, in one run:
//!
//! 1. **Recording**: nanoseconds per sample on the hot path, on 1 thread and on 2 OS threads
//!    recording into the same metric (the 2-thread figure is the time per sample one of them
//!    sees, so contention on the shared cache lines shows as a larger figure). Contenders:
//!    - `counter`: prometheus-client's `Counter::inc` (what every `onex_*_total` series is);
//!    - `tikv-counter`: the `prometheus` crate's `IntCounter::inc`;
//!    - `family-lookup+inc`: `Family::get_or_create(labels).inc()` per sample, what a caller
//!      pays when it looks the labelled handle up each time instead of holding it;
//!    - `onex-histogram`: `onex_runtime::metrics::Histogram::observe` (lock-free);
//!    - `client-histogram`: prometheus-client's own `Histogram::observe` (a mutex);
//!    - `tikv-histogram`: the `prometheus` crate's `Histogram::observe` (lock-free, a hot and a
//!      cold shard);
//!    - `tikv-local-histogram`: its thread-local `LocalHistogram::observe`, flushed every 1024
//!      samples (no shared write between flushes; a scrape misses what is not flushed yet);
//!    - `bare`: the loop alone, reading the same sample values.
//!
//!    Every histogram has the same buckets (`LATENCY_SECONDS`, 14 bounds) and records the same
//!    values, spread log-uniformly from 0.2 ms to 2 s. Each figure comes from the wall clock
//!    and from the recording threads' CPU time (`CLOCK_THREAD_CPUTIME_ID`): on a busy 2-core
//!    machine the 2-thread wall figure also counts waits for a core.
//! 2. **Scraping**: a registry holding every series the runtime registers, each registered by
//!    its service's own `with_metrics` (PostgreSQL pool, Kafka producer pool, event bus,
//!    outbox, tracing, three circuit breakers, every operation of the nine generated nodes,
//!    the health monitor; see [`full_registry`]), after some work through each; encoded while
//!    `METRICS_BENCH_LOAD_THREADS` threads call a node and a breaker without pause (each call
//!    records into their series); p50/p99/max of `MetricsRegistry::encode` (wall, and the
//!    encoding thread's CPU time) and of an HTTP GET of `/metrics` through
//!    `ObservabilityServer` on a kept-alive connection (wall, as Prometheus sees it); each
//!    also with no load thread and with one. Needs PostgreSQL and the test broker.
//!
//! Rounds interleave the contenders in a rotating order, so load from elsewhere on the
//! machine hits them alike; each recording figure is the median over rounds, each scrape
//! figure a percentile over every scrape of every round. Prints markdown tables, asserts
//! nothing beyond the work being counted. Run with `scripts/bench-metrics.sh`; writes
//! `target/bench/metrics.json`.
//!
//! Knobs: `METRICS_BENCH_ROUNDS` (7), `METRICS_BENCH_SAMPLES` (samples per thread per round,
//! 20000000), `METRICS_BENCH_SCRAPES` (per scrape contender and round, 300),
//! `METRICS_BENCH_LOAD_THREADS` (2), `METRICS_BENCH_ONLY` (comma-separated sections: `record`,
//! `scrape`), `METRICS_BENCH_OUT`, `METRICS_BENCH_PRINT` (set: print the scraped exposition).

use std::hint::black_box;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use onex_runtime::circuit_breaker::CircuitBreaker;
use onex_runtime::environment::Environment;
use onex_runtime::event::OnexEvent;
use onex_runtime::event_bus::{EventPublisher, KafkaEventBus, TopicNamer};
use onex_runtime::health::{HealthChecker, HealthMonitor, Services};
use onex_runtime::http::{ObservabilityServer, ObservabilityServerConfig};
use onex_runtime::kafka::{KafkaPoolSettings, KafkaProducerPool};
use onex_runtime::metrics::{Counter, Family, Histogram, LATENCY_SECONDS, MetricsRegistry};
use onex_runtime::models::circuit_breaker::CircuitBreakerConfig;
use onex_runtime::models::kafka::KafkaProducerConfig;
use onex_runtime::node::NodeInstruments;
use onex_runtime::outbox::{Outbox, OutboxConfig};
use onex_runtime::postgres::PostgresConnectionManager;
use onex_runtime::telemetry::Tracing;
use onex_runtime::{Container, Context, DynNode};
use onex_tests::bench::{Only, env_usize, median};
use onex_tests::kafka::{bootstrap, create_topic};
use onex_tests::postgres::TestDatabase;
use serde::Serialize;

type Labels = Vec<(String, String)>;
type ClientHistogram = prometheus_client::metrics::histogram::Histogram;

/// Sample values cycle through this many precomputed latencies (a power of two).
const VALUES: usize = 1024;
/// `tikv-local-histogram` flushes to the shared histogram every this many samples.
const LOCAL_FLUSH_EVERY: usize = 1024;

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Record {
    Sample {
        section: &'static str,
        contender: &'static str,
        threads: usize,
        /// Wall time per sample one recording thread sees (median over rounds), loop included.
        ns_per_sample: f64,
        /// The same from the recording threads' CPU time.
        cpu_ns_per_sample: f64,
        /// `ns_per_sample` less the bare loop's, median of per-round differences.
        above_bare_ns: f64,
        /// Recording threads on a core at once, on average (median over rounds): below 2 on
        /// 2 threads, they took turns part of the time and contended less.
        threads_on_cpu: f64,
        settings: String,
    },
    Scrape {
        section: &'static str,
        contender: &'static str,
        load_threads: usize,
        /// Percentiles over every scrape of every round.
        p50_us: f64,
        p99_us: f64,
        max_us: f64,
        /// The median over rounds of each round's p99: a burst of load from elsewhere on
        /// the machine, which spoils the p99 of the round it falls in, moves it less.
        round_p99_us: f64,
        /// The encoding thread's CPU time per scrape (`encode` only: an HTTP scrape is
        /// encoded on the server's thread).
        #[serde(skip_serializing_if = "Option::is_none")]
        cpu_p50_us: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cpu_p99_us: Option<f64>,
        /// Calls (node operations and breaker calls, each recording into its series) the load
        /// threads made per second while this contender scraped.
        load_calls_per_sec: f64,
        bytes: usize,
        families: usize,
        sample_lines: usize,
        scrapes: usize,
        settings: String,
    },
}

/// CPU time the calling thread has used, in ns (`CLOCK_THREAD_CPUTIME_ID`: precise to the
/// nanosecond, where `/proc`'s figures come in 10 ms ticks).
fn thread_cpu_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid, writable timespec; the clock id is a constant Linux knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// Latencies spread log-uniformly over 0.2 ms to 2 s, from a fixed seed (xorshift), so every
/// histogram sees the same values in the same order and every bucket gets samples.
fn sample_values() -> Vec<f64> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..VALUES)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let unit = (state >> 11) as f64 / (1u64 << 53) as f64;
            0.0002 * 10f64.powf(4.0 * unit)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// 1. Recording

#[derive(Clone, Copy, PartialEq, Debug)]
enum Recorder {
    Bare,
    Counter,
    TikvCounter,
    FamilyLookup,
    OnexHistogram,
    ClientHistogram,
    TikvHistogram,
    TikvLocalHistogram,
}

impl Recorder {
    const ALL: [Recorder; 8] = [
        Recorder::Bare,
        Recorder::Counter,
        Recorder::TikvCounter,
        Recorder::FamilyLookup,
        Recorder::OnexHistogram,
        Recorder::ClientHistogram,
        Recorder::TikvHistogram,
        Recorder::TikvLocalHistogram,
    ];

    fn name(self) -> &'static str {
        match self {
            Recorder::Bare => "bare",
            Recorder::Counter => "counter",
            Recorder::TikvCounter => "tikv-counter",
            Recorder::FamilyLookup => "family-lookup+inc",
            Recorder::OnexHistogram => "onex-histogram",
            Recorder::ClientHistogram => "client-histogram",
            Recorder::TikvHistogram => "tikv-histogram",
            Recorder::TikvLocalHistogram => "tikv-local-histogram",
        }
    }
}

/// One metric of each kind, shared by every thread of a measurement.
struct Targets {
    counter: Counter,
    tikv_counter: tikv_prometheus::IntCounter,
    family: Family<Labels, Counter>,
    labels: Labels,
    onex: Histogram,
    client: ClientHistogram,
    tikv: tikv_prometheus::Histogram,
}

impl Targets {
    fn new() -> Self {
        let tikv_opts = tikv_prometheus::HistogramOpts::new("bench_seconds", "bench").buckets(LATENCY_SECONDS.to_vec());
        Self {
            counter: Counter::default(),
            tikv_counter: tikv_prometheus::IntCounter::new("bench_total", "bench").expect("tikv counter"),
            family: Family::default(),
            labels: vec![("outcome".to_owned(), "ok".to_owned())],
            onex: Histogram::latency(),
            client: ClientHistogram::new(LATENCY_SECONDS.iter().copied()),
            tikv: tikv_prometheus::Histogram::with_opts(tikv_opts).expect("tikv histogram"),
        }
    }

    /// Samples recorded into `recorder`'s metric so far.
    fn count(&self, recorder: Recorder) -> Option<u64> {
        use tikv_prometheus::core::Collector as _;
        let tikv_count = || self.tikv.collect()[0].get_metric()[0].get_histogram().get_sample_count();
        match recorder {
            Recorder::Bare => None,
            Recorder::Counter => Some(self.counter.get()),
            Recorder::TikvCounter => Some(self.tikv_counter.get()),
            Recorder::FamilyLookup => Some(self.family.get_or_create(&self.labels).get()),
            Recorder::OnexHistogram => Some(self.onex.count()),
            Recorder::ClientHistogram => {
                let mut text = String::new();
                let mut registry = prometheus_client::registry::Registry::default();
                registry.register("bench_seconds", "bench", self.client.clone());
                prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
                text.lines()
                    .find_map(|line| line.strip_prefix("bench_seconds_count "))
                    .and_then(|count| count.trim().parse().ok())
            }
            Recorder::TikvHistogram | Recorder::TikvLocalHistogram => Some(tikv_count()),
        }
    }
}

/// `samples` samples through `recorder`; one loop per recorder, so each compiles on its own.
fn drive(targets: &Targets, recorder: Recorder, values: &[f64], samples: usize) {
    let value = |i: usize| black_box(values[i & (VALUES - 1)]);
    match recorder {
        Recorder::Bare => (0..samples).for_each(|i| {
            value(i);
        }),
        Recorder::Counter => (0..samples).for_each(|i| {
            value(i);
            targets.counter.inc();
        }),
        Recorder::TikvCounter => (0..samples).for_each(|i| {
            value(i);
            targets.tikv_counter.inc();
        }),
        Recorder::FamilyLookup => (0..samples).for_each(|i| {
            value(i);
            targets.family.get_or_create(&targets.labels).inc();
        }),
        Recorder::OnexHistogram => (0..samples).for_each(|i| targets.onex.observe(value(i))),
        Recorder::ClientHistogram => (0..samples).for_each(|i| targets.client.observe(value(i))),
        Recorder::TikvHistogram => (0..samples).for_each(|i| targets.tikv.observe(value(i))),
        Recorder::TikvLocalHistogram => {
            let local = targets.tikv.local();
            for i in 0..samples {
                local.observe(value(i));
                if i % LOCAL_FLUSH_EVERY == LOCAL_FLUSH_EVERY - 1 {
                    local.flush();
                }
            }
            local.flush();
        }
    }
}

/// Time per sample one recording thread sees.
#[derive(Clone, Copy)]
struct SampleTime {
    wall_ns: f64,
    cpu_ns: f64,
    /// The recording threads' CPU time over the wall time from the first start to the last end:
    /// how many of them were on a core at once, on average. Two threads contend only while
    /// both run; on a busy machine they often take turns, and the 2-thread figures then show
    /// less contention than two dedicated cores would.
    on_cpu: f64,
}

/// `threads` OS threads start together and record `samples` samples each into one shared
/// set of metrics; the mean of their per-sample times.
fn time_samples(recorder: Recorder, threads: usize, samples: usize, values: &[f64]) -> SampleTime {
    let targets = Targets::new();
    let start = Barrier::new(threads);
    let warmup = samples / 100;
    let per_thread = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (targets, start) = (&targets, &start);
                scope.spawn(move || {
                    drive(targets, recorder, values, warmup);
                    start.wait();
                    let cpu = thread_cpu_ns();
                    let started = Instant::now();
                    drive(targets, recorder, values, samples);
                    let ended = Instant::now();
                    (started, ended, (thread_cpu_ns() - cpu) as f64)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("bench thread")).collect::<Vec<_>>()
    });
    let first = per_thread.iter().map(|t| t.0).min().expect("a thread");
    let last = per_thread.iter().map(|t| t.1).max().expect("a thread");
    let span = last.duration_since(first).as_nanos() as f64;
    let on_cpu = per_thread.iter().map(|t| t.2).sum::<f64>() / span;
    let per_thread: Vec<SampleTime> = per_thread
        .iter()
        .map(|(started, ended, cpu)| SampleTime {
            wall_ns: ended.duration_since(*started).as_nanos() as f64 / samples as f64,
            cpu_ns: cpu / samples as f64,
            on_cpu,
        })
        .collect();
    if let Some(count) = targets.count(recorder) {
        assert_eq!(count, (threads * (samples + warmup)) as u64, "{} lost samples", recorder.name());
    }
    let mean = |f: fn(&SampleTime) -> f64| per_thread.iter().map(f).sum::<f64>() / per_thread.len() as f64;
    SampleTime { wall_ns: mean(|t| t.wall_ns), cpu_ns: mean(|t| t.cpu_ns), on_cpu }
}

fn record(rounds: usize, samples: usize) -> Vec<Record> {
    let values = sample_values();
    let mut records = Vec::new();
    for threads in [1, 2] {
        let mut runs: Vec<Vec<SampleTime>> = vec![Vec::new(); Recorder::ALL.len()];
        for round in 0..rounds {
            for k in 0..Recorder::ALL.len() {
                let slot = (round + k) % Recorder::ALL.len();
                let time = time_samples(Recorder::ALL[slot], threads, samples, &values);
                eprintln!(
                    "round {round} threads={threads} {:<21} {:>7.1} ns/sample wall {:>7.1} ns/sample CPU, {:.2} on a core",
                    Recorder::ALL[slot].name(),
                    time.wall_ns,
                    time.cpu_ns,
                    time.on_cpu
                );
                runs[slot].push(time);
            }
        }
        let bare: Vec<f64> = runs[0].iter().map(|t| t.wall_ns).collect();
        for (recorder, times) in Recorder::ALL.iter().zip(&runs) {
            let wall: Vec<f64> = times.iter().map(|t| t.wall_ns).collect();
            let cpu: Vec<f64> = times.iter().map(|t| t.cpu_ns).collect();
            let above: Vec<f64> = wall.iter().zip(&bare).map(|(w, b)| w - b).collect();
            let on_cpu: Vec<f64> = times.iter().map(|t| t.on_cpu).collect();
            records.push(Record::Sample {
                section: "record",
                contender: recorder.name(),
                threads,
                ns_per_sample: median(&wall).unwrap_or(f64::NAN),
                cpu_ns_per_sample: median(&cpu).unwrap_or(f64::NAN),
                above_bare_ns: median(&above).unwrap_or(f64::NAN),
                threads_on_cpu: median(&on_cpu).unwrap_or(f64::NAN),
                settings: format!("samples_per_thread={samples} rounds={rounds} buckets=LATENCY_SECONDS (median)"),
            });
        }
    }
    records
}

// ---------------------------------------------------------------------------------------
// 2. Scraping

/// Breakers of the scraped process (a label value each).
const BREAKERS: [&str; 3] = ["event_bus", "postgres", "consul"];
/// The node the load threads call (needs nothing from the container).
const LOAD_NODE: &str = "node_event_bus_circuit_breaker_compute";
const EVENT_TYPE: &str = "bench.metrics.published";

/// The services of the scraped process: kept alive while it is scraped (the collectors
/// hold them weakly).
struct Process {
    registry: Arc<MetricsRegistry>,
    pg: Arc<PostgresConnectionManager>,
    pool: Arc<KafkaProducerPool>,
    breakers: Vec<Arc<CircuitBreaker>>,
    node: Arc<dyn DynNode>,
    _bus: Arc<KafkaEventBus>,
    _outbox: Outbox,
    _nodes: Vec<NodeInstruments>,
    _monitor: HealthMonitor,
    _tracing: Tracing,
    _db: TestDatabase,
}

/// A registry holding every series the runtime registers, each through the real
/// `with_metrics` of its service: the PostgreSQL pool (on a database of its own), the Kafka
/// producer pool and event bus (on the test broker), the outbox, tracing, `BREAKERS`
/// circuit breakers, every operation of every generated node, and the health monitor after
/// one check. Then some work through each, so the counts are not all zero.
async fn full_registry() -> Process {
    let registry = Arc::new(MetricsRegistry::new("production"));
    let tracing = Tracing::disabled().with_metrics(&registry).expect("tracing series");
    let db = TestDatabase::create("metricsbench").await;
    let pg = PostgresConnectionManager::connect(db.config()).await.expect("connect to PostgreSQL");
    let pg = Arc::new(pg.with_metrics(&registry).expect("pool series"));
    let outbox = Outbox::new(Arc::clone(&pg), OutboxConfig::default())
        .expect("outbox")
        .with_metrics(&registry)
        .expect("outbox series");
    let pool = KafkaProducerPool::new(KafkaPoolSettings::default(), KafkaProducerConfig::new(bootstrap()))
        .expect("producer pool")
        .with_metrics(&registry)
        .expect("producer series");
    let pool = Arc::new(pool);
    let namer = TopicNamer::new("dev", &format!("t{}", uuid::Uuid::new_v4().simple()), "onex").expect("namer");
    create_topic(&namer.topic_for(EVENT_TYPE).expect("topic"), 1).await;
    let bus =
        KafkaEventBus::new(Arc::clone(&pool), namer).with_rate_limit(None).with_metrics(&registry).expect("bus series");
    let bus = Arc::new(bus);
    let breakers: Vec<Arc<CircuitBreaker>> = BREAKERS
        .iter()
        .map(|name| {
            let config = CircuitBreakerConfig::for_environment(Environment::Production);
            let breaker = CircuitBreaker::new(config).expect("breaker").with_metrics(&registry, name);
            Arc::new(breaker.expect("breaker series"))
        })
        .collect();
    let generated = onex_generated::registry();
    let nodes: Vec<NodeInstruments> = generated
        .entries()
        .iter()
        .map(|entry| NodeInstruments::disabled(entry.contract).with_metrics(&registry).expect("node series"))
        .collect();
    let mut container = Container::new();
    container.register(Arc::clone(&registry));
    let node: Arc<dyn DynNode> = Arc::from(generated.build(LOAD_NODE, None, &container).expect("the load node"));

    // Work through every service: statements (some failing), messages through a breaker,
    // node operations.
    for i in 0..200 {
        pg.fetch_value("SELECT $1::bigint", &[serde_json::json!(i)]).await.expect("statement");
    }
    for _ in 0..5 {
        pg.execute_query("SELECT * FROM no_such_table", &[]).await.expect_err("a failing statement");
    }
    for n in 0..200 {
        let event = OnexEvent::new(EVENT_TYPE, "bench-metrics", uuid::Uuid::new_v4(), serde_json::json!({ "n": n }));
        breakers[0].call(bus.publish(event)).await.expect("publish");
    }
    for _ in 0..100 {
        node.process_json(serde_json::json!({"operation_type": "get_state"}), Context::new()).await.expect("get_state");
    }
    let services = Services {
        postgres: Some(Arc::clone(&pg)),
        kafka: Some(Arc::clone(&pool)),
        event_bus: Some(Arc::clone(&bus)),
        breaker: Some(Arc::clone(&breakers[0])),
        publisher: None,
    };
    let checker = Arc::new(HealthChecker::from_services(&services, &Container::new()));
    let monitor = HealthMonitor::new(checker, services, Environment::Production);
    monitor.register_metrics(&registry).expect("health series");
    monitor.check().await;
    Process {
        registry,
        pg,
        pool,
        breakers,
        node,
        _bus: bus,
        _outbox: outbox,
        _nodes: nodes,
        _monitor: monitor,
        _tracing: tracing,
        _db: db,
    }
}

/// Load threads, each calling the node and a breaker without pause on a runtime of its own
/// (every call records into the node's counter, in-flight gauge and latency histogram, and
/// the breaker's counters), until finished; counts their calls.
struct Load {
    stop: Arc<AtomicBool>,
    calls: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
    started: Instant,
}

impl Load {
    fn start(process: &Process, threads: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicU64::new(0));
        let threads = (0..threads)
            .map(|t| {
                let node = Arc::clone(&process.node);
                let breaker = Arc::clone(&process.breakers[t % process.breakers.len()]);
                let (stop, calls) = (Arc::clone(&stop), Arc::clone(&calls));
                std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                    let done = runtime.block_on(async {
                        let mut done = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            for _ in 0..64 {
                                let input = serde_json::json!({"operation_type": "get_state"});
                                node.process_json(input, Context::new()).await.expect("get_state");
                                breaker.call(async { Ok(()) }).await.expect("a closed breaker admits");
                            }
                            done += 64 * 2;
                        }
                        done
                    });
                    calls.fetch_add(done, Ordering::Relaxed);
                })
            })
            .collect();
        Self { stop, calls, threads, started: Instant::now() }
    }

    /// Stops the threads; calls made per second.
    fn finish(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        let count = self.threads.len();
        for thread in self.threads {
            thread.join().expect("load thread");
        }
        if count == 0 {
            return 0.0;
        }
        self.calls.load(Ordering::Relaxed) as f64 / self.started.elapsed().as_secs_f64()
    }
}

/// A kept-alive HTTP/1.1 connection to the server, as Prometheus keeps one to each target.
struct Scraper {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Scraper {
    fn connect(address: SocketAddr) -> Self {
        let stream = TcpStream::connect(address).expect("connect to /metrics");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        Self { reader: BufReader::new(stream.try_clone().expect("clone the stream")), writer: stream }
    }

    /// GET /metrics; the body's length.
    fn scrape(&mut self) -> usize {
        self.writer.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nAccept: */*\r\n\r\n").expect("send");
        let mut line = String::new();
        let mut length = None;
        let mut status = None;
        loop {
            line.clear();
            self.reader.read_line(&mut line).expect("read a header line");
            let trimmed = line.trim_end();
            if trimmed.is_empty() {
                break;
            }
            if status.is_none() {
                status = trimmed.split(' ').nth(1).map(str::to_owned);
            } else if let Some((name, value)) = trimmed.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse::<usize>().ok();
            }
        }
        assert_eq!(status.as_deref(), Some("200"), "GET /metrics");
        let length = length.expect("a Content-Length");
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).expect("read the body");
        length
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Scrape {
    Encode,
    Http,
}

/// Percentile `p` (0..=1, nearest rank) of `values`, sorted in place.
fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(((values.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(f64::NAN)
}

fn scrape(rounds: usize, scrapes: usize, load_threads: usize) -> Vec<Record> {
    // The services' own tasks and the HTTP server run on one worker; the load threads and
    // the scraping thread are threads of their own.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let process = runtime.block_on(full_registry());
    let registry = Arc::clone(&process.registry);
    let text = registry.encode().expect("encode");
    let bytes = text.len();
    let families = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
    let sample_lines = text.lines().filter(|l| !l.starts_with('#')).count();
    eprintln!("registry: {families} families, {sample_lines} sample lines, {bytes} bytes");
    if std::env::var_os("METRICS_BENCH_PRINT").is_some() {
        eprintln!("{text}");
    }

    let server = runtime.block_on(async {
        let config = ObservabilityServerConfig { address: "127.0.0.1:0".parse().unwrap() };
        ObservabilityServer::start(config, Arc::clone(&registry), Arc::new(HealthChecker::new()))
            .await
            .expect("observability server")
    });
    let mut scraper = Scraper::connect(server.local_addr());
    for _ in 0..scrapes / 10 + 1 {
        black_box(registry.encode().expect("encode"));
        scraper.scrape();
    }

    // (what, load threads): the wall and CPU µs of every scrape, and the load's rate per round.
    // No load, and the load named; with 2 or more load threads also one, which leaves the
    // scrape a core of its own on a 2-core machine.
    let mut levels = vec![0, 1.min(load_threads), load_threads];
    levels.dedup();
    let contenders: Vec<(Scrape, usize)> =
        [Scrape::Encode, Scrape::Http].into_iter().flat_map(|what| levels.iter().map(move |&n| (what, n))).collect();
    let mut wall: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
    let mut round_p99s: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
    for round in 0..rounds {
        for k in 0..contenders.len() {
            let slot = (round + k) % contenders.len();
            let (what, threads) = contenders[slot];
            let load = Load::start(&process, threads);
            // Let the load threads get going before the first timed scrape.
            std::thread::sleep(Duration::from_millis(20));
            for _ in 0..scrapes {
                let cpu_before = thread_cpu_ns();
                let started = Instant::now();
                let size = match what {
                    Scrape::Encode => registry.encode().expect("encode").len(),
                    Scrape::Http => scraper.scrape(),
                };
                wall[slot].push(started.elapsed().as_nanos() as f64 / 1000.0);
                cpu[slot].push((thread_cpu_ns() - cpu_before) as f64 / 1000.0);
                black_box(size);
            }
            let rate = load.finish();
            rates[slot].push(rate);
            let mut last: Vec<f64> = wall[slot][wall[slot].len() - scrapes..].to_vec();
            round_p99s[slot].push(percentile(&mut last, 0.99));
            eprintln!(
                "round {round} {:<6} load_threads={threads} p50 {:>7.1} µs p99 {:>7.1} µs ({:.0} calls/s)",
                if what == Scrape::Encode { "encode" } else { "http" },
                percentile(&mut last, 0.5),
                percentile(&mut last, 0.99),
                rate
            );
        }
    }
    drop(scraper);
    runtime.block_on(async {
        server.shutdown().await;
        process.pool.shutdown().await.expect("pool shutdown");
        process.pg.close();
    });

    contenders
        .iter()
        .enumerate()
        .map(|(slot, &(what, threads))| {
            let (contender, cpu_counts) = match what {
                Scrape::Encode => ("encode", true),
                Scrape::Http => ("http-get", false),
            };
            let cpu = &mut cpu[slot];
            Record::Scrape {
                section: "scrape",
                contender,
                load_threads: threads,
                p50_us: percentile(&mut wall[slot], 0.5),
                p99_us: percentile(&mut wall[slot], 0.99),
                round_p99_us: median(&round_p99s[slot]).unwrap_or(f64::NAN),
                max_us: percentile(&mut wall[slot], 1.0),
                cpu_p50_us: cpu_counts.then(|| percentile(cpu, 0.5)),
                cpu_p99_us: cpu_counts.then(|| percentile(cpu, 0.99)),
                load_calls_per_sec: median(&rates[slot]).unwrap_or(0.0),
                bytes,
                families,
                sample_lines,
                scrapes: wall[slot].len(),
                settings: format!(
                    "breakers={} nodes={} rounds={rounds} scrapes_per_round={scrapes}",
                    BREAKERS.len(),
                    onex_generated::registry().entries().len()
                ),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------

fn main() {
    let rounds = env_usize("METRICS_BENCH_ROUNDS", 7).max(1);
    let samples = env_usize("METRICS_BENCH_SAMPLES", 20_000_000).max(100);
    let scrapes = env_usize("METRICS_BENCH_SCRAPES", 300).max(1);
    let load_threads = env_usize("METRICS_BENCH_LOAD_THREADS", 2);
    let only = Only::from_env("METRICS_BENCH_ONLY");
    let wanted = |section: &str| only.wants(section);

    let mut records = Vec::new();
    if wanted("record") {
        records.extend(record(rounds, samples));
    }
    if wanted("scrape") {
        records.extend(scrape(rounds, scrapes, load_threads));
    }

    let path = std::env::var_os("METRICS_BENCH_OUT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench/metrics.json"));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("create the output directory");
    }
    std::fs::write(&path, serde_json::to_string_pretty(&records).unwrap()).expect("write the JSON report");

    println!(
        "| recording | threads | ns/sample (wall) | ns/sample (CPU) | above bare loop (wall) | threads on a core |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for record in &records {
        if let Record::Sample {
            contender,
            threads,
            ns_per_sample,
            cpu_ns_per_sample,
            above_bare_ns,
            threads_on_cpu,
            ..
        } = record
        {
            let above = if *contender == "bare" { "-".to_owned() } else { format!("{above_bare_ns:.1}") };
            println!(
                "| {contender} | {threads} | {ns_per_sample:.1} | {cpu_ns_per_sample:.1} | {above} | {threads_on_cpu:.2} |"
            );
        }
    }
    let mut first = true;
    for record in &records {
        if let Record::Scrape {
            contender,
            load_threads,
            p50_us,
            p99_us,
            max_us,
            round_p99_us,
            cpu_p50_us,
            cpu_p99_us,
            load_calls_per_sec,
            bytes,
            families,
            sample_lines,
            scrapes,
            ..
        } = record
        {
            if first {
                println!(
                    "\nscrape of {families} families, {sample_lines} sample lines, {bytes} bytes; {scrapes} scrapes per row"
                );
                println!(
                    "| scrape | load threads | p50 µs | p99 µs | max µs | p99 µs, median of rounds | CPU p50 / p99 µs | load calls/ms |"
                );
                println!("|---|---:|---:|---:|---:|---:|---:|---:|");
                first = false;
            }
            let cpu = match (cpu_p50_us, cpu_p99_us) {
                (Some(p50), Some(p99)) => format!("{p50:.1} / {p99:.1}"),
                _ => "-".to_owned(),
            };
            println!(
                "| {contender} | {load_threads} | {p50_us:.1} | {p99_us:.1} | {max_us:.1} | {round_p99_us:.1} | {cpu} | {:.1} |",
                load_calls_per_sec / 1e3
            );
        }
    }
    println!("\nwritten to {}", path.canonicalize().unwrap_or(path).display());
}
