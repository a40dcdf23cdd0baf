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
//! 2. **Scraping**: a registry holding every series the runtime registers, with label values
//!    as a running process has them (see [`full_registry`]), encoded while
//!    `METRICS_BENCH_LOAD_THREADS` threads record samples into its hot series without pause;
//!    p50/p99/max of `MetricsRegistry::encode` (wall, and the encoding thread's CPU time) and
//!    of an HTTP GET of `/metrics` through `ObservabilityServer` on a kept-alive connection
//!    (wall, as Prometheus sees it); each also with no recorder running.
//!
//! Rounds interleave the contenders in a rotating order, so load from elsewhere on the
//! machine hits them alike; each recording figure is the median over rounds, each scrape
//! figure a percentile over every scrape of every round. Prints markdown tables, asserts
//! nothing beyond the work being counted. Run with `scripts/bench-metrics.sh`; writes
//! `target/bench/metrics.json`.
//!
//! Knobs: `METRICS_BENCH_ROUNDS` (7), `METRICS_BENCH_SAMPLES` (samples per thread per round,
//! 20000000), `METRICS_BENCH_SCRAPES` (per scrape contender and round, 300),
//! `METRICS_BENCH_LOAD_THREADS` (2), `METRICS_BENCH_NODES` (9) and `METRICS_BENCH_OPERATIONS`
//! (operations per node, 3) for the registry's size, `METRICS_BENCH_ONLY` (comma-separated
//! sections: `record`, `scrape`), `METRICS_BENCH_OUT`.

use std::hint::black_box;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use onex_runtime::health::HealthChecker;
use onex_runtime::http::{ObservabilityServer, ObservabilityServerConfig};
use onex_runtime::metrics::{Counter, Family, Gauge, Histogram, LATENCY_SECONDS, MetricsRegistry, WAIT_SECONDS};
use onex_tests::bench::median;
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
        p50_us: f64,
        p99_us: f64,
        max_us: f64,
        /// The encoding thread's CPU time per scrape (`encode` only: an HTTP scrape is
        /// encoded on the server's thread).
        #[serde(skip_serializing_if = "Option::is_none")]
        cpu_p50_us: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cpu_p99_us: Option<f64>,
        /// Samples the load threads recorded per second while this contender scraped.
        load_samples_per_sec: f64,
        bytes: usize,
        families: usize,
        sample_lines: usize,
        scrapes: usize,
        settings: String,
    },
}

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
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

/// The nine nodes of the project's contracts, the label values of the node series.
const NODES: [&str; 9] = [
    "node_consul_effect",
    "node_consul_projector_effect",
    "node_distributed_tracing_compute",
    "node_event_bus_circuit_breaker_compute",
    "node_infrastructure_health_monitor_orchestrator",
    "node_infrastructure_observability_compute",
    "node_kafka_producer_pool_effect",
    "node_postgres_adapter_effect",
    "node_postgres_connection_manager_effect",
];
const OPERATIONS: [&str; 6] =
    ["execute_query", "health_check", "publish_event", "get_metrics", "record_metric", "query"];
const BREAKERS: [&str; 3] = ["event_bus", "postgres", "consul"];

/// The series a load thread records into: what a busy process touches on every call.
#[derive(Clone)]
struct Hot {
    histograms: Vec<Histogram>,
    counters: Vec<Counter>,
    gauges: Vec<Gauge>,
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn outcome_counter(registry: &MetricsRegistry, name: &str, help: &str, outcomes: &[&str]) -> Vec<Counter> {
    let family = Family::<Labels, Counter>::default();
    registry.register(name, help, family.clone()).expect("register");
    outcomes.iter().map(|o| family.get_or_create(&labels(&[("outcome", o)])).clone()).collect()
}

fn histogram(registry: &MetricsRegistry, name: &str, help: &str, bounds: &[f64]) -> Histogram {
    let h = Histogram::new(bounds).expect("bounds");
    registry.register(name, help, h.clone()).expect("register");
    h
}

fn gauge(registry: &MetricsRegistry, name: &str, help: &str) -> Gauge {
    let g = Gauge::default();
    registry.register(name, help, g.clone()).expect("register");
    g
}

/// A registry with every series the runtime's services register, under the names and labels
/// they use (PostgreSQL pool, Kafka producer pool, event bus, `BREAKERS` circuit breakers,
/// outbox, tracing, `nodes` × `operations` node operations, the seven health-monitor series),
/// every label value present with counts in it, and the handles a busy process records into.
fn full_registry(nodes: usize, operations: usize) -> (Arc<MetricsRegistry>, Hot) {
    let registry = Arc::new(MetricsRegistry::new("production"));
    let r = &*registry;
    let mut hot = Hot { histograms: Vec::new(), counters: Vec::new(), gauges: Vec::new() };

    // PostgreSQL pool.
    hot.counters.extend(outcome_counter(r, "onex_postgres_queries", "Statements run, by outcome", &["ok", "error"]));
    hot.histograms.push(histogram(r, "onex_postgres_query_duration_seconds", "Statement latency", LATENCY_SECONDS));
    hot.histograms.push(histogram(r, "onex_postgres_acquire_wait_seconds", "Wait for a connection", WAIT_SECONDS));
    let connections = Family::<Labels, Gauge>::default();
    r.register("onex_postgres_connections", "Pool connections, by state", connections.clone()).expect("register");
    for state in ["idle", "in_use"] {
        hot.gauges.push(connections.get_or_create(&labels(&[("state", state)])).clone());
    }
    hot.gauges.push(gauge(r, "onex_postgres_waiting", "Callers waiting for a connection"));
    hot.gauges.push(gauge(r, "onex_postgres_in_flight", "Statements running"));

    // Kafka producer pool and event bus.
    hot.counters.extend(outcome_counter(
        r,
        "onex_kafka_messages",
        "Messages sent, by outcome",
        &["delivered", "failed"],
    ));
    hot.histograms.push(histogram(
        r,
        "onex_kafka_delivery_duration_seconds",
        "Send to acknowledgement",
        LATENCY_SECONDS,
    ));
    hot.gauges.push(gauge(r, "onex_kafka_in_flight", "Messages awaiting acknowledgement"));
    gauge(r, "onex_kafka_producers", "Producers in the pool").set(4);
    hot.counters.extend(outcome_counter(r, "onex_event_bus_events", "Events, by outcome", &["published", "failed"]));
    let retries = Counter::default();
    r.register("onex_event_bus_retries", "Publish retries", retries.clone()).expect("register");
    hot.counters.push(retries);

    // Circuit breakers.
    let state = Family::<Labels, Gauge>::default();
    let transitions = Family::<Labels, Counter>::default();
    let calls = Family::<Labels, Counter>::default();
    r.register("onex_circuit_breaker_state", "0 closed, 1 open, 2 half open", state.clone()).expect("register");
    r.register("onex_circuit_breaker_transitions", "State changes, by new state", transitions.clone())
        .expect("register");
    r.register("onex_circuit_breaker_calls", "Calls, by outcome", calls.clone()).expect("register");
    for breaker in BREAKERS {
        state.get_or_create(&labels(&[("breaker", breaker)])).set(0);
        for to in ["open", "half_open", "closed"] {
            transitions.get_or_create(&labels(&[("breaker", breaker), ("to", to)])).inc();
        }
        for outcome in ["success", "failure", "rejected", "ignored"] {
            hot.counters.push(calls.get_or_create(&labels(&[("breaker", breaker), ("outcome", outcome)])).clone());
        }
    }

    // Outbox and tracing.
    hot.gauges.push(gauge(r, "onex_outbox_depth", "Events waiting in the outbox"));
    for name in ["onex_tracing_spans_exported", "onex_tracing_spans_dropped"] {
        let c = Counter::default();
        r.register(name, "Spans", c.clone()).expect("register");
        hot.counters.push(c);
    }

    // Node operations.
    let ops = Family::<Labels, Counter>::default();
    let in_flight = Family::<Labels, Gauge>::default();
    let durations = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(Histogram::latency);
    r.register("onex_node_operations", "Node operations, by outcome", ops.clone()).expect("register");
    r.register("onex_node_operations_in_flight", "Node operations running", in_flight.clone()).expect("register");
    r.register("onex_node_operation_duration_seconds", "Node operation latency", durations.clone()).expect("register");
    for n in 0..nodes {
        let node = NODES[n % NODES.len()];
        let node = if n < NODES.len() { node.to_owned() } else { format!("{node}_{n}") };
        for o in 0..operations {
            let operation = OPERATIONS[o % OPERATIONS.len()];
            let pair = [("node", node.as_str()), ("operation", operation)];
            hot.histograms.push(durations.get_or_create(&labels(&pair)).clone());
            hot.gauges.push(in_flight.get_or_create(&labels(&pair)).clone());
            for outcome in ["ok", "error"] {
                let mut with_outcome = labels(&pair);
                with_outcome.push(("outcome".to_owned(), outcome.to_owned()));
                hot.counters.push(ops.get_or_create(&with_outcome).clone());
            }
        }
    }

    // Health monitor.
    for name in [
        "omnibase_infrastructure_health",
        "omnibase_postgres_connections",
        "omnibase_kafka_producers",
        "omnibase_error_rate_percent",
        "omnibase_events_queued",
        "omnibase_response_time_ms",
    ] {
        gauge(r, name, "Health monitor").set(1);
    }
    let processed = Counter::default();
    r.register("omnibase_messages_processed", "Messages processed", processed.clone()).expect("register");
    hot.counters.push(processed);

    // Counts in every series, as after a while of running.
    let values = sample_values();
    for (i, h) in hot.histograms.iter().enumerate() {
        for v in values.iter().skip(i % 7).step_by(3) {
            h.observe(*v);
        }
    }
    for (i, c) in hot.counters.iter().enumerate() {
        c.inc_by(1_000 + i as u64 * 37);
    }
    (registry, hot)
}

/// Load threads recording into `hot` without pause until dropped; counts their samples.
struct Load {
    stop: Arc<AtomicBool>,
    samples: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
    started: Instant,
}

impl Load {
    fn start(hot: &Hot, threads: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(AtomicU64::new(0));
        let values = Arc::new(sample_values());
        let threads = (0..threads)
            .map(|t| {
                let (hot, stop, samples, values) =
                    (hot.clone(), Arc::clone(&stop), Arc::clone(&samples), Arc::clone(&values));
                std::thread::spawn(move || {
                    // Each thread walks the hot series from its own offset: a call records a
                    // latency, counts an outcome and moves an in-flight gauge.
                    let mut i = t * 7;
                    let mut done = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..256 {
                            hot.histograms[i % hot.histograms.len()].observe(values[i & (VALUES - 1)]);
                            hot.counters[i % hot.counters.len()].inc();
                            let gauge = &hot.gauges[i % hot.gauges.len()];
                            gauge.inc();
                            gauge.dec();
                            i = i.wrapping_add(1);
                        }
                        done += 256 * 4;
                    }
                    samples.fetch_add(done, Ordering::Relaxed);
                })
            })
            .collect();
        Self { stop, samples, threads, started: Instant::now() }
    }

    /// Stops the threads; samples recorded per second.
    fn finish(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        let count = self.threads.len();
        for thread in self.threads {
            thread.join().expect("load thread");
        }
        if count == 0 {
            return 0.0;
        }
        self.samples.load(Ordering::Relaxed) as f64 / self.started.elapsed().as_secs_f64()
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

fn scrape(rounds: usize, scrapes: usize, load_threads: usize, nodes: usize, operations: usize) -> Vec<Record> {
    let (registry, hot) = full_registry(nodes, operations);
    let text = registry.encode().expect("encode");
    let bytes = text.len();
    let families = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
    let sample_lines = text.lines().filter(|l| !l.starts_with('#')).count();
    eprintln!("registry: {families} families, {sample_lines} sample lines, {bytes} bytes");

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
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
    let contenders =
        [(Scrape::Encode, 0), (Scrape::Encode, load_threads), (Scrape::Http, 0), (Scrape::Http, load_threads)];
    let mut wall: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
    for round in 0..rounds {
        for k in 0..contenders.len() {
            let slot = (round + k) % contenders.len();
            let (what, threads) = contenders[slot];
            let load = Load::start(&hot, threads);
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
            eprintln!(
                "round {round} {:<6} load_threads={threads} p50 {:>7.1} µs p99 {:>7.1} µs ({:.1} M samples/s recorded)",
                if what == Scrape::Encode { "encode" } else { "http" },
                percentile(&mut last, 0.5),
                percentile(&mut last, 0.99),
                rate / 1e6
            );
        }
    }
    drop(scraper);
    runtime.block_on(server.shutdown());

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
                max_us: percentile(&mut wall[slot], 1.0),
                cpu_p50_us: cpu_counts.then(|| percentile(cpu, 0.5)),
                cpu_p99_us: cpu_counts.then(|| percentile(cpu, 0.99)),
                load_samples_per_sec: median(&rates[slot]).unwrap_or(0.0),
                bytes,
                families,
                sample_lines,
                scrapes: wall[slot].len(),
                settings: format!(
                    "nodes={nodes} operations={operations} breakers={} rounds={rounds} scrapes_per_round={scrapes}",
                    BREAKERS.len()
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
    let nodes = env_usize("METRICS_BENCH_NODES", NODES.len()).max(1);
    let operations = env_usize("METRICS_BENCH_OPERATIONS", 3).max(1);
    let only: Vec<String> = std::env::var("METRICS_BENCH_ONLY")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    let wanted = |section: &str| only.is_empty() || only.iter().any(|o| o == section);

    let mut records = Vec::new();
    if wanted("record") {
        records.extend(record(rounds, samples));
    }
    if wanted("scrape") {
        records.extend(scrape(rounds, scrapes, load_threads, nodes, operations));
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
            cpu_p50_us,
            cpu_p99_us,
            load_samples_per_sec,
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
                println!("| scrape | load threads | p50 µs | p99 µs | max µs | CPU p50 / p99 µs | load M samples/s |");
                println!("|---|---:|---:|---:|---:|---:|---:|");
                first = false;
            }
            let cpu = match (cpu_p50_us, cpu_p99_us) {
                (Some(p50), Some(p99)) => format!("{p50:.1} / {p99:.1}"),
                _ => "-".to_owned(),
            };
            println!(
                "| {contender} | {load_threads} | {p50_us:.1} | {p99_us:.1} | {max_us:.1} | {cpu} | {:.1} |",
                load_samples_per_sec / 1e6
            );
        }
    }
    println!("\nwritten to {}", path.canonicalize().unwrap_or(path).display());
}
