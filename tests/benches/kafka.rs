//! Producer throughput and delivery latency against the test broker, side by side:
//!
//! - `raw-rdkafka`: one `FutureProducer` used well (many sends in flight, results awaited
//!   through `FuturesUnordered`);
//! - `pool`: `KafkaProducerPool::send` (one shared producer), same pattern;
//! - `pool-N`: the pool with N producers for the same configuration;
//! - `node-send-batch`: `node_kafka_producer_pool_effect` `send_batch` requests of 1,000
//!   JSON messages, as many requests in flight as fill the 50,000-message window; each request
//!   is built (its owned strings allocated) inside the measured window, as a caller would;
//! - `node-prebuilt`: the same requests, all built before the window opens: the node's own
//!   cost without the caller's. The difference between the two is what building the contract's
//!   JSON requests costs (three allocations per message, made a thousand at a time);
//! - `pool-traced-1.0`, `pool-traced-0.1`: `pool` with tracing on, a PRODUCER span per message
//!   (sampling 1.0 and 0.1) exported over OTLP/gRPC to a receiver in a child process on
//!   loopback. What tracing costs is each one's rate over `pool`'s in the same round.
//!
//! 100-byte messages, acks=all, with and without idempotence. Run with
//! `scripts/bench-kafka.sh`, which runs this binary once on glibc's malloc, once on glibc's
//! malloc with a larger per-thread cache and once with jemalloc preloaded (each result records
//! which); writes `target/bench/kafka.json` and prints a markdown table.
//! Knobs: `KAFKA_BENCH_MESSAGES` (default 1000000), `KAFKA_BENCH_LINGER_MS` (pool default),
//! `KAFKA_BENCH_ONLY` (comma-separated contender names), `KAFKA_BENCH_ROUNDS` (5),
//! `KAFKA_BENCH_BATCH` (messages per node request, 1000),
//! `KAFKA_BENCH_OUT` (default `target/bench/kafka.json`).
//!
//! Besides throughput, each contender reports the CPU time this process spent per message
//! (the client side: rdkafka's threads, the pool, the node). The broker shares the machine's
//! cores, so throughput swings with whatever else runs; client CPU per message is the steadier
//! figure for comparing wrappers. Context switches per 1,000 messages show lock contention
//! (glibc's malloc arenas, above all) that neither figure explains.

use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use onex_generated::nodes::node_kafka_producer_pool_effect::v1_0_0::NodeKafkaProducerPoolEffect;
use onex_generated::nodes::node_kafka_producer_pool_effect::v1_0_0::models::{
    EnumKafkaProducerPoolOperation, ModelKafkaMessage, ModelKafkaProducerPoolInput,
};
use onex_runtime::kafka::{KafkaPoolSettings, KafkaProducerPool, ProduceRecord};
use onex_runtime::models::kafka::KafkaProducerConfig;
use onex_runtime::models::tracing::OtlpProtocol;
use onex_runtime::telemetry::{QueueLimits, Tracing};
use onex_runtime::{Container, Context, Node};
use onex_tests::bench::{Only, allocator, context_switches, median, paired_ratios, percentile_ms, process_cpu};
use onex_tests::kafka::{TestTopic, bootstrap};
use onex_tests::otlp::{Mode, trace_configuration};
use onex_tests::otlp_child::{ReceiverProcess, serve_if_child};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;

/// Messages awaited at most at once by every contender.
const WINDOW: usize = 50_000;
const PAYLOAD_BYTES: usize = 100;
const PARTITIONS: i32 = 3;
const WARMUP: u32 = 2_000;

#[derive(Debug, Serialize)]
struct Outcome {
    name: String,
    /// The C allocator of the process (`system`, `system-tcache` or `jemalloc`): see
    /// `scripts/bench-kafka.sh`.
    allocator: &'static str,
    settings: String,
    msgs_per_sec: f64,
    /// Against raw rdkafka with the same idempotence, as a fraction (−0.05 is 5 % slower): the
    /// median over rounds of this contender's rate divided by raw rdkafka's in the same round.
    /// Pairs each run with one a few seconds away, so it moves less with the machine's load
    /// than the ratio of the two medians.
    vs_raw_per_round: Option<f64>,
    /// CPU time of this process per message, in µs (client side only).
    client_cpu_us_per_msg: Option<f64>,
    /// Context switches of this process's threads per 1,000 messages.
    context_switches_per_1k_msgs: Option<f64>,
    p50_ms: f64,
    p99_ms: f64,
    /// Traced contenders: the median over rounds of this contender's rate divided by the
    /// untraced pool's in the same round.
    vs_untraced_pool_per_round: Option<f64>,
    /// Traced contenders: spans accepted by the receiver in this round.
    spans_exported: Option<u64>,
    /// Traced contenders: spans dropped (export queue full, or export failed) in this round.
    spans_dropped: Option<u64>,
}

struct Latencies(Vec<u32>);

impl Latencies {
    fn with_capacity(n: usize) -> Self {
        Self(Vec::with_capacity(n))
    }

    fn push(&mut self, latency: Duration) {
        self.0.push(latency.as_micros().min(u128::from(u32::MAX)) as u32);
    }

    fn quantile_ms(&mut self, q: f64) -> f64 {
        self.0.sort_unstable();
        percentile_ms(&self.0, q).unwrap_or(0.0)
    }
}

/// Wall clock, process CPU and context switches from the start of a measured window.
struct Window {
    started: Instant,
    cpu: Option<Duration>,
    switches: Option<u64>,
}

impl Window {
    fn open() -> Self {
        Self { cpu: process_cpu(), switches: context_switches(), started: Instant::now() }
    }

    /// Ends the window over `run.messages` messages: the contender's outcome, with its
    /// `settings` described after the run's own.
    fn close(self, run: &Run, name: String, settings: String, latencies: &mut Latencies) -> Outcome {
        let elapsed = self.started.elapsed().as_secs_f64();
        let messages = f64::from(run.messages);
        let cpu = self.cpu.zip(process_cpu()).map(|(before, after)| after.saturating_sub(before));
        let switches = self.switches.zip(context_switches()).map(|(before, after)| after.saturating_sub(before));
        Outcome {
            name,
            allocator: run.allocator,
            settings,
            msgs_per_sec: messages / elapsed,
            vs_raw_per_round: None,
            client_cpu_us_per_msg: cpu.map(|c| c.as_secs_f64() * 1e6 / messages),
            context_switches_per_1k_msgs: switches.map(|s| s as f64 * 1000.0 / messages),
            p50_ms: latencies.quantile_ms(0.50),
            p99_ms: latencies.quantile_ms(0.99),
            vs_untraced_pool_per_round: None,
            spans_exported: None,
            spans_dropped: None,
        }
    }
}

struct Run {
    messages: u32,
    /// The process's C allocator, read once: it cannot change while the process runs.
    allocator: &'static str,
    /// Messages per `send_batch` request; as many requests are kept in flight as fill `WINDOW`.
    batch: usize,
    linger_ms: u32,
}

fn payload() -> Vec<u8> {
    vec![b'p'; PAYLOAD_BYTES]
}

fn settings(run: &Run, idempotence: bool, extra: &str) -> String {
    format!(
        "messages={} bytes={PAYLOAD_BYTES} acks=all idempotence={idempotence} linger.ms={} window={WINDOW} partitions={PARTITIONS} allocator={}{extra}",
        run.messages, run.linger_ms, run.allocator
    )
}

/// A fresh topic, deleted again when dropped: the test broker keeps every message in memory,
/// and a run of several million messages would otherwise slow the later contenders down.
async fn fresh_topic(name: &str) -> TestTopic {
    TestTopic::create(&format!("bench-{name}"), PARTITIONS).await
}

async fn raw_rdkafka(run: &Run, idempotence: bool) -> Outcome {
    let topic_guard = fresh_topic("raw").await;
    let topic = topic_guard.name.as_str();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("acks", "all")
        .set("enable.idempotence", idempotence.to_string())
        .set("linger.ms", run.linger_ms.to_string())
        .set("message.timeout.ms", "30000")
        .create()
        .expect("raw producer");
    let body = payload();
    // Warm-up (connections, metadata, producer id): enqueued together, awaited together.
    let warm: Vec<_> = (0..WARMUP)
        .map(|i| {
            let key = i.to_be_bytes();
            producer.send_result(FutureRecord::to(topic).key(&key[..]).payload(&body[..])).map_err(|(e, _)| e).unwrap()
        })
        .collect();
    for delivery in futures::future::join_all(warm).await {
        delivery.expect("channel").expect("warm-up delivery");
    }
    let mut latencies = Latencies::with_capacity(run.messages as usize);
    let mut pending = FuturesUnordered::new();
    let window = Window::open();
    for i in 0..run.messages {
        let key = i.to_be_bytes();
        let sent_at = Instant::now();
        let delivery = producer
            .send_result(FutureRecord::to(topic).key(&key[..]).payload(&body[..]))
            .map_err(|(e, _)| e)
            .expect("enqueue");
        pending.push(async move { (delivery.await, sent_at.elapsed()) });
        if pending.len() >= WINDOW {
            let (result, latency) = pending.next().await.unwrap();
            result.expect("channel").expect("delivery");
            latencies.push(latency);
        }
    }
    while let Some((result, latency)) = pending.next().await {
        result.expect("channel").expect("delivery");
        latencies.push(latency);
    }
    window.close(run, "raw-rdkafka".into(), settings(run, idempotence, " producers=1"), &mut latencies)
}

fn pool_for(run: &Run, idempotence: bool, producers: usize) -> KafkaProducerPool {
    let config = KafkaProducerConfig {
        enable_idempotence: idempotence,
        linger_ms: run.linger_ms,
        ..KafkaProducerConfig::new(bootstrap())
    };
    let settings = KafkaPoolSettings { producers_per_config: producers, ..Default::default() };
    KafkaProducerPool::new(settings, config).expect("pool")
}

async fn pool(run: &Run, idempotence: bool, producers: usize, tracing: Option<Tracing>) -> Outcome {
    let topic_guard = fresh_topic("pool").await;
    let topic = topic_guard.name.as_str();
    let pool = pool_for(run, idempotence, producers).with_tracing(tracing.clone().unwrap_or_default());
    let body = payload();
    let mut warm = Vec::with_capacity(WARMUP as usize);
    for i in 0..WARMUP {
        warm.push(pool.send(ProduceRecord::new(topic, &body).key(&i.to_be_bytes()), None).await.expect("warm-up"));
    }
    for delivery in futures::future::join_all(warm).await {
        delivery.expect("warm-up delivery");
    }
    let mut latencies = Latencies::with_capacity(run.messages as usize);
    let mut pending = FuturesUnordered::new();
    let window = Window::open();
    for i in 0..run.messages {
        let key = i.to_be_bytes();
        let sent_at = Instant::now();
        let delivery = pool.send(ProduceRecord::new(topic, &body).key(&key), None).await.expect("enqueue");
        pending.push(async move { (delivery.await, sent_at.elapsed()) });
        if pending.len() >= WINDOW {
            let (result, latency) = pending.next().await.unwrap();
            result.expect("delivery");
            latencies.push(latency);
        }
    }
    while let Some((result, latency)) = pending.next().await {
        result.expect("delivery");
        latencies.push(latency);
    }
    let name = match (&tracing, producers) {
        (Some(tracing), _) => format!("pool-traced-{:.1}", tracing.sample_rate().unwrap_or_default()),
        (None, 1) => "pool".into(),
        (None, n) => format!("pool-{n}"),
    };
    let mut outcome =
        window.close(run, name, settings(run, idempotence, &format!(" producers={producers}")), &mut latencies);
    if let Some(tracing) = tracing {
        // After the window: the final export is not measured.
        let _ = tracing.shutdown();
        let spans = tracing.stats();
        outcome.spans_exported = Some(spans.exported);
        outcome.spans_dropped = Some(spans.dropped());
    }
    let stats = pool.stats();
    assert_eq!(stats.total_messages_failed, 0);
    pool.shutdown().await.expect("shutdown");
    outcome
}

fn batch_input(topic: &str, first: u32, count: usize, value: &serde_json::Value) -> ModelKafkaProducerPoolInput {
    ModelKafkaProducerPoolInput {
        messages: Some(
            (0..count as u32)
                .map(|i| ModelKafkaMessage {
                    key: Some((first + i).to_string()),
                    ..ModelKafkaMessage::new(topic.to_owned(), value.clone())
                })
                .collect(),
        ),
        ..ModelKafkaProducerPoolInput::new(EnumKafkaProducerPoolOperation::SendBatch)
    }
}

/// When the node's requests are built.
#[derive(Clone, Copy, PartialEq)]
enum Requests {
    /// Inside the measured window, one request as a slot frees (the caller's real cost).
    OnDemand,
    /// All before the window opens: the window measures `process` alone.
    Prebuilt,
}

async fn node(run: &Run, idempotence: bool, requests: Requests) -> Outcome {
    let topic_guard = fresh_topic("node").await;
    let topic = topic_guard.name.as_str();
    let mut container = Container::new();
    container.register(std::sync::Arc::new(pool_for(run, idempotence, 1)));
    let node: NodeKafkaProducerPoolEffect = NodeKafkaProducerPoolEffect::new(&container).expect("node");
    // A JSON string of 98 characters encodes to exactly 100 bytes.
    let value = serde_json::Value::String("v".repeat(PAYLOAD_BYTES - 2));
    let warm = node.process(batch_input(topic, 0, WARMUP as usize, &value), Context::new()).await.unwrap();
    assert!(warm.success);
    let (batch, in_flight) = (run.batch, WINDOW / run.batch);
    let batches = (run.messages as usize).div_ceil(batch);
    let build = |b: usize| {
        let first = (b * batch) as u32;
        batch_input(topic, first, batch.min(run.messages as usize - b * batch), &value)
    };
    let prebuilt: Vec<ModelKafkaProducerPoolInput> =
        if requests == Requests::Prebuilt { (0..batches).map(build).collect() } else { Vec::new() };
    let mut prebuilt = prebuilt.into_iter();
    let mut latencies = Latencies::with_capacity(batches);
    let window = Window::open();
    let mut results = futures::stream::iter(0..batches)
        .map(|b| {
            let input = prebuilt.next().unwrap_or_else(|| build(b));
            let node = &node;
            async move {
                let sent_at = Instant::now();
                let out = node.process(input, Context::new()).await;
                (out, sent_at.elapsed())
            }
        })
        .buffer_unordered(in_flight);
    let mut delivered = 0u64;
    while let Some((out, latency)) = results.next().await {
        let out = out.expect("send_batch");
        assert!(out.success, "{:?}", out.errors);
        delivered += out.delivered.unwrap_or(0);
        latencies.push(latency);
    }
    let (name, built) = match requests {
        Requests::OnDemand => ("node-send-batch", "in-window"),
        Requests::Prebuilt => ("node-prebuilt", "before-window"),
    };
    let extra =
        format!(" producers=1 batch={batch} batches_in_flight={in_flight} requests_built={built} latency=per-request");
    let outcome = window.close(run, name.into(), settings(run, idempotence, &extra), &mut latencies);
    assert_eq!(delivered, u64::from(run.messages));
    outcome
}

fn env_u32(key: &str, default: u32) -> u32 {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

const CONTENDERS: [&str; 8] = [
    "raw-rdkafka",
    "pool",
    "pool-2",
    "pool-4",
    "node-send-batch",
    "node-prebuilt",
    "pool-traced-1.0",
    "pool-traced-0.1",
];

/// Tracing at `rate` that exports to the receiver at `endpoint`.
fn tracing_to(endpoint: Option<&str>, rate: f64) -> Tracing {
    let endpoint = endpoint.expect("traced contenders have a receiver");
    Tracing::with_limits(&trace_configuration(endpoint, OtlpProtocol::Grpc, rate), QueueLimits::default())
        .expect("tracing")
}

fn main() {
    serve_if_child();
    let run = Run {
        messages: env_u32("KAFKA_BENCH_MESSAGES", 1_000_000),
        allocator: allocator(),
        batch: (env_u32("KAFKA_BENCH_BATCH", 1_000) as usize).clamp(1, WINDOW),
        linger_ms: env_u32("KAFKA_BENCH_LINGER_MS", KafkaProducerConfig::DEFAULT_LINGER_MS),
    };
    let only = Only::from_env("KAFKA_BENCH_ONLY");
    let contenders: Vec<(&str, bool)> = [false, true]
        .into_iter()
        .flat_map(|idempotence| CONTENDERS.into_iter().map(move |name| (name, idempotence)))
        .filter(|(name, _)| only.wants(name))
        .collect();
    assert!(!contenders.is_empty(), "KAFKA_BENCH_ONLY names none of {CONTENDERS:?}");
    let receiver = contenders
        .iter()
        .any(|(name, _)| name.starts_with("pool-traced"))
        .then(|| ReceiverProcess::start(Mode::Grpc).expect("start the OTLP receiver process"));
    let otlp = receiver.as_ref().map(|r| r.endpoint().to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let rounds = env_u32("KAFKA_BENCH_ROUNDS", 5).max(1) as usize;
    let outcomes: Vec<Outcome> = runtime.block_on(async {
        // Rounds interleave the contenders in a rotating order, so that load from elsewhere on
        // the machine (and the broker's growing memory) hits them alike; each contender reports
        // its median-throughput round.
        let mut samples: Vec<Vec<Outcome>> = contenders.iter().map(|_| Vec::new()).collect();
        for round in 0..rounds {
            for k in 0..contenders.len() {
                let slot = (round + k) % contenders.len();
                let (name, idempotence) = contenders[slot];
                let outcome = match name {
                    "raw-rdkafka" => raw_rdkafka(&run, idempotence).await,
                    "pool" => pool(&run, idempotence, 1, None).await,
                    "pool-2" => pool(&run, idempotence, 2, None).await,
                    "pool-4" => pool(&run, idempotence, 4, None).await,
                    "pool-traced-1.0" => pool(&run, idempotence, 1, Some(tracing_to(otlp.as_deref(), 1.0))).await,
                    "pool-traced-0.1" => pool(&run, idempotence, 1, Some(tracing_to(otlp.as_deref(), 0.1))).await,
                    "node-prebuilt" => node(&run, idempotence, Requests::Prebuilt).await,
                    _ => node(&run, idempotence, Requests::OnDemand).await,
                };
                eprintln!(
                    "round {round} {:<16} idempotence={idempotence:<5} {:>10.0} msgs/s {:>6.2} µs CPU/msg {:>7.1} switches/1k msgs",
                    outcome.name,
                    outcome.msgs_per_sec,
                    outcome.client_cpu_us_per_msg.unwrap_or(f64::NAN),
                    outcome.context_switches_per_1k_msgs.unwrap_or(f64::NAN)
                );
                samples[slot].push(outcome);
            }
        }
        let per_round: Vec<Option<f64>> = contenders
            .iter()
            .zip(&samples)
            .map(|(&(_, idempotence), runs)| {
                let raw = contenders.iter().position(|&c| c == ("raw-rdkafka", idempotence))?;
                let rates = |runs: &[Outcome]| runs.iter().map(|o| o.msgs_per_sec).collect::<Vec<_>>();
                median(&paired_ratios(&rates(runs), &[&rates(&samples[raw])])).map(|ratio| ratio - 1.0)
            })
            .collect();
        let vs_pool: Vec<Option<f64>> = contenders
            .iter()
            .zip(&samples)
            .map(|(&(name, idempotence), runs)| {
                if !name.starts_with("pool-traced") {
                    return None;
                }
                let untraced = contenders.iter().position(|&c| c == ("pool", idempotence))?;
                let rates = |runs: &[Outcome]| runs.iter().map(|o| o.msgs_per_sec).collect::<Vec<_>>();
                median(&paired_ratios(&rates(runs), &[&rates(&samples[untraced])]))
            })
            .collect();
        samples
            .into_iter()
            .zip(per_round.into_iter().zip(vs_pool))
            .map(|(mut runs, (vs_raw_per_round, vs_untraced_pool_per_round))| {
                runs.sort_by(|a, b| a.msgs_per_sec.total_cmp(&b.msgs_per_sec));
                let n = runs.len();
                let mut middle = runs.swap_remove(n / 2);
                middle.settings.push_str(&format!(" rounds={n} (median)"));
                middle.vs_raw_per_round = vs_raw_per_round;
                middle.vs_untraced_pool_per_round = vs_untraced_pool_per_round;
                middle
            })
            .collect()
    });
    let path = std::env::var_os("KAFKA_BENCH_OUT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench/kafka.json"));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("create the output directory");
    }
    std::fs::write(&path, serde_json::to_string_pretty(&outcomes).unwrap()).expect("write the JSON report");
    println!("Allocator: {}\n", run.allocator);
    println!(
        "| contender | idempotence | msgs/s | vs raw | vs raw, per round | client CPU µs/msg | context switches / 1k msgs | p50 ms | p99 ms |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for o in &outcomes {
        let idempotence = o.settings.contains("idempotence=true");
        let raw = outcomes
            .iter()
            .find(|r| r.name == "raw-rdkafka" && r.settings.contains("idempotence=true") == idempotence)
            .map(|r| r.msgs_per_sec);
        let relative = raw.map_or("-".to_owned(), |raw| format!("{:+.1} %", (o.msgs_per_sec / raw - 1.0) * 100.0));
        let per_round = o.vs_raw_per_round.map_or("-".to_owned(), |r| format!("{:+.1} %", r * 100.0));
        let cpu = o.client_cpu_us_per_msg.map_or("-".to_owned(), |c| format!("{c:.2}"));
        let switches = o.context_switches_per_1k_msgs.map_or("-".to_owned(), |s| format!("{s:.1}"));
        println!(
            "| {} | {} | {:.0} | {} | {} | {} | {} | {:.2} | {:.2} |",
            o.name, idempotence, o.msgs_per_sec, relative, per_round, cpu, switches, o.p50_ms, o.p99_ms
        );
    }
    for o in outcomes.iter().filter(|o| o.vs_untraced_pool_per_round.is_some()) {
        println!(
            "{} (idempotence={}): {:.3} x the untraced pool, per round (median); spans exported {}, dropped {}",
            o.name,
            o.settings.contains("idempotence=true"),
            o.vs_untraced_pool_per_round.unwrap_or(f64::NAN),
            o.spans_exported.unwrap_or(0),
            o.spans_dropped.unwrap_or(0)
        );
    }
    if let Some(spans) = receiver.and_then(ReceiverProcess::stop) {
        println!("the OTLP receiver received {spans} spans");
    }
    println!("\nwritten to {}", path.canonicalize().unwrap_or(path).display());
}
