//! Producer throughput and delivery latency against the test broker, side by side.
//!
//! Per message (one message per call, as many in flight as fill the 50,000-message window;
//! latency from the call to that message's delivery report):
//!
//! - `raw-base-producer`: the anchor, raw rdkafka used at its strongest: a `ThreadedProducer`
//!   (a `BaseProducer` with rdkafka's poll thread) whose `ProducerContext` counts deliveries and
//!   records latency in the delivery callback. No future, no channel and no allocation of ours
//!   per message; the window is an atomic count the sender parks on when it is full, woken
//!   once 1/16 of it has been delivered. The overhead targets are stated against this row;
//! - `raw-rdkafka`: one `FutureProducer` used well (sends awaited through `FuturesUnordered`),
//!   the usual async use and the baseline of earlier runs;
//! - `pool`: `KafkaProducerPool::send` (one shared producer), same pattern;
//! - `pool-in-order`: the pool used as the anchor uses librdkafka: sends run ahead, and once
//!   the window is full the sender awaits delivery futures oldest first down to the anchor's
//!   low-water mark. A future whose report is in returns without a waker, so the sender is
//!   woken about once per drained 1/16 of the window, where `pool`'s `FuturesUnordered` takes a
//!   task, a waker and a wake-up per message. The like-for-like pair with the anchor;
//! - `pool-N`: the pool with N producers for the same configuration;
//! - `node-send-message`: the generated `node_kafka_producer_pool_effect`'s `send_message`
//!   operation, one request per message (a JSON string value of 98 characters, 100 bytes
//!   encoded), each request built inside the measured window as a caller would;
//! - `contract-floor`: what that operation's contract asks for, written straight on the pool
//!   with the same requests and calls (the topic checked, the value encoded, the delivery
//!   awaited under a timer, an answer with its time, correlation id, partition and offset),
//!   without the generated node. A reference row: the node's layer is its cost above it;
//! - `bus-publish`: `KafkaEventBus::publish_event`, one `OnexEvent` per message (cloned from a
//!   template inside the window with fresh ids, a null payload): envelope encoding, topic
//!   naming, headers, the per-source rate limit (a rule wide enough never to refuse, so its
//!   check is paid) and the retry wrapper. Its Kafka value is the JSON envelope (260
//!   bytes, recorded in `settings`), not 100 bytes: what the bus costs includes writing it;
//! - `pool-traced-1.0`, `pool-traced-0.1`: `pool` with tracing on, a PRODUCER span per message
//!   (sampling 1.0 and 0.1) exported over OTLP/gRPC to a receiver in a child process on
//!   loopback. What tracing costs is each one's rate over `pool`'s in the same round;
//! - `bus-publish-traced-1.0`, `bus-publish-traced-0.1`: `bus-publish` with tracing on (its
//!   `kafka.publish` PRODUCER span, the context stamped into the envelope and its headers),
//!   held against `bus-publish` the same way. The pool's messages carry no headers of their
//!   own, so there the context's header list is part of tracing's cost; the bus's events always
//!   carry headers, so this is tracing's cost on what services send;
//! - `pool-traced-0.0`, `bus-publish-traced-0.0`: the same at sampling 0.0: nothing is recorded
//!   or exported, but every message still carries its (unsampled) context, as parent-based
//!   sampling downstream needs. The floor of tracing's cost at any rate.
//!
//! Per request (throughput still counted in messages; latency is per request, in fields of
//! its own):
//!
//! - `node-send-batch`: `send_batch` requests of 1,000 JSON messages, as many requests in
//!   flight as fill the window; each request is built (its owned strings allocated) inside the
//!   measured window, as a caller would;
//! - `node-prebuilt`: the same requests, all built before the window opens: the node's own
//!   cost without the caller's.
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

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use onex_generated::nodes::node_kafka_producer_pool_effect::v1_0_0::NodeKafkaProducerPoolEffect;
use onex_generated::nodes::node_kafka_producer_pool_effect::v1_0_0::models::{
    EnumKafkaProducerPoolOperation, ModelKafkaMessage, ModelKafkaProducerPoolInput, ModelKafkaProducerPoolOutput,
};
use onex_runtime::event::OnexEvent;
use onex_runtime::event_bus::{KafkaEventBus, RateLimitRule, TopicNamer};
use onex_runtime::kafka::{DeliveryFuture, KafkaPoolSettings, KafkaProducerPool, ProduceRecord};
use onex_runtime::models::kafka::KafkaProducerConfig;
use onex_runtime::models::tracing::OtlpProtocol;
use onex_runtime::telemetry::{QueueLimits, Tracing};
use onex_runtime::{Container, Context, Node};
use onex_tests::bench::{Only, allocator, context_switches, median, paired_ratios, percentile_ms, process_cpu};
use onex_tests::kafka::{TestTopic, bootstrap, create_topic};
use onex_tests::otlp::{Mode, trace_configuration};
use onex_tests::otlp_child::{ReceiverProcess, serve_if_child};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, FutureProducer, FutureRecord, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext};
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
    /// Messages per call: 1 for the per-message contenders, the batch size for
    /// `node-send-batch` and `node-prebuilt`.
    messages_per_request: u32,
    /// Messages (never requests) a second.
    msgs_per_sec: f64,
    /// Against the anchor, `raw-base-producer`, with the same idempotence, as a fraction
    /// (−0.05 is 5 % slower): the median over rounds of this contender's rate divided by the
    /// anchor's in the same round. Pairs each run with one a few seconds away, so it moves
    /// less with the machine's load than the ratio of the two medians.
    vs_base_producer_per_round: Option<f64>,
    /// The same against `raw-rdkafka` (the `FutureProducer`), the baseline of earlier runs.
    vs_raw_per_round: Option<f64>,
    /// CPU time of this process per message, in µs (client side only).
    client_cpu_us_per_msg: Option<f64>,
    /// Context switches of this process's threads per 1,000 messages.
    context_switches_per_1k_msgs: Option<f64>,
    /// Per-message contenders: the median latency from a message's call to its delivery
    /// report. Absent for the per-request contenders, which cannot see a message's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    message_p50_ms: Option<f64>,
    /// Per-message contenders: the 99th percentile of the same.
    #[serde(skip_serializing_if = "Option::is_none")]
    message_p99_ms: Option<f64>,
    /// Per-request contenders: the median latency from a request's call to its answer (all of
    /// its `messages_per_request` messages delivered).
    #[serde(skip_serializing_if = "Option::is_none")]
    request_p50_ms: Option<f64>,
    /// Per-request contenders: the 99th percentile of the same.
    #[serde(skip_serializing_if = "Option::is_none")]
    request_p99_ms: Option<f64>,
    /// Traced contenders: the median over rounds of this contender's rate divided by its
    /// untraced counterpart's (`pool`, `bus-publish`) in the same round.
    vs_untraced_per_round: Option<f64>,
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

    /// Ends the window over `run.messages` messages sent `per_request` to a call: the
    /// contender's outcome, with its `settings` described after the run's own. `latencies`
    /// are per message when `per_request` is 1 and per request otherwise.
    fn close(self, run: &Run, name: String, settings: String, per_request: u32, latencies: &mut Latencies) -> Outcome {
        let elapsed = self.started.elapsed().as_secs_f64();
        let messages = f64::from(run.messages);
        let cpu = self.cpu.zip(process_cpu()).map(|(before, after)| after.saturating_sub(before));
        let switches = self.switches.zip(context_switches()).map(|(before, after)| after.saturating_sub(before));
        let (p50, p99) = (latencies.quantile_ms(0.50), latencies.quantile_ms(0.99));
        let per_message = per_request == 1;
        Outcome {
            name,
            allocator: run.allocator,
            settings,
            messages_per_request: per_request,
            msgs_per_sec: messages / elapsed,
            vs_base_producer_per_round: None,
            vs_raw_per_round: None,
            client_cpu_us_per_msg: cpu.map(|c| c.as_secs_f64() * 1e6 / messages),
            context_switches_per_1k_msgs: switches.map(|s| s as f64 * 1000.0 / messages),
            message_p50_ms: per_message.then_some(p50),
            message_p99_ms: per_message.then_some(p99),
            request_p50_ms: (!per_message).then_some(p50),
            request_p99_ms: (!per_message).then_some(p99),
            vs_untraced_per_round: None,
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

/// The settings of both raw contenders.
fn raw_config(run: &Run, idempotence: bool) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap())
        .set("acks", "all")
        .set("enable.idempotence", idempotence.to_string())
        .set("linger.ms", run.linger_ms.to_string())
        .set("message.timeout.ms", "30000");
    config
}

/// What the anchor's delivery callback keeps: run on rdkafka's poll thread, read by the
/// sender.
struct Deliveries {
    /// When the run started: each message's opaque is its send time in ns since then, so a
    /// message carries its timestamp without an allocation.
    epoch: Instant,
    /// Messages sent and not yet reported.
    in_flight: AtomicUsize,
    /// While the sender is parked: the count in flight at which to wake it (`usize::MAX`
    /// otherwise), so that the callback wakes it once, not per delivery.
    wake_at: AtomicUsize,
    failed: AtomicU64,
    /// Latencies in µs; only the poll thread locks it while messages fly.
    latencies: Mutex<Latencies>,
    /// The sender, parked while the window is full.
    sender: std::thread::Thread,
}

#[derive(Clone)]
struct Counting(Arc<Deliveries>);

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_ns: usize) {
        let d = &self.0;
        let sent_at = d.epoch + Duration::from_nanos(sent_ns as u64);
        d.latencies.lock().unwrap().push(sent_at.elapsed());
        if result.is_err() {
            d.failed.fetch_add(1, Ordering::Relaxed);
        }
        // Sequentially consistent, with the sender's store of `wake_at` and load of
        // `in_flight`: either the sender sees this delivery or this sees its `wake_at`.
        let left = d.in_flight.fetch_sub(1, Ordering::SeqCst) - 1;
        if left <= d.wake_at.load(Ordering::SeqCst) {
            d.sender.unpark();
        }
    }
}

/// Once the window is full the sender waits until this many are in flight: a low-water mark,
/// as librdkafka's own loop polls for a while when its queue is full, so that the sender is
/// woken once per 1/16 of the window rather than once per delivery.
const LOW_WATER: usize = WINDOW - WINDOW / 16;

impl Deliveries {
    /// Parks the sender until at most `most` messages are in flight. The timeout only guards
    /// against a lost wake-up.
    fn wait_until_at_most(&self, most: usize) {
        if self.in_flight.load(Ordering::Acquire) <= most {
            return;
        }
        self.wake_at.store(most, Ordering::SeqCst);
        while self.in_flight.load(Ordering::SeqCst) > most {
            std::thread::park_timeout(Duration::from_millis(10));
        }
        self.wake_at.store(usize::MAX, Ordering::Release);
    }
}

/// Sends `count` messages (keys from `first`) through the anchor, at most `WINDOW` in flight.
fn send_through(
    producer: &ThreadedProducer<Counting>,
    deliveries: &Deliveries,
    topic: &str,
    body: &[u8],
    first: u32,
    count: u32,
) {
    for i in first..first + count {
        if deliveries.in_flight.load(Ordering::Acquire) >= WINDOW {
            deliveries.wait_until_at_most(LOW_WATER);
        }
        let key = i.to_be_bytes();
        let sent_ns = deliveries.epoch.elapsed().as_nanos() as usize;
        let mut record = BaseRecord::with_opaque_to(topic, sent_ns).key(&key[..]).payload(body);
        deliveries.in_flight.fetch_add(1, Ordering::AcqRel);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                // librdkafka's own queue is full (its limit is above the window, so this is
                // rare): wait for the poll thread to drain some, as librdkafka's docs advise.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => panic!("enqueue: {e}"),
            }
        }
    }
    deliveries.wait_until_at_most(0);
}

/// The anchor: raw rdkafka at its strongest (see the module documentation).
async fn raw_base_producer(run: &Run, idempotence: bool) -> Outcome {
    let topic_guard = fresh_topic("base").await;
    let topic = topic_guard.name.as_str();
    let deliveries = Arc::new(Deliveries {
        epoch: Instant::now(),
        in_flight: AtomicUsize::new(0),
        wake_at: AtomicUsize::new(usize::MAX),
        failed: AtomicU64::new(0),
        latencies: Mutex::new(Latencies::with_capacity((run.messages + WARMUP) as usize)),
        sender: std::thread::current(),
    });
    let producer: ThreadedProducer<Counting> =
        raw_config(run, idempotence).create_with_context(Counting(Arc::clone(&deliveries))).expect("raw producer");
    let body = payload();
    // Synchronous sends on this (the runtime's `block_on`) thread: nothing else runs on it.
    send_through(&producer, &deliveries, topic, &body, 0, WARMUP);
    deliveries.latencies.lock().unwrap().0.clear();
    let window = Window::open();
    send_through(&producer, &deliveries, topic, &body, WARMUP, run.messages);
    let mut latencies = std::mem::replace(&mut *deliveries.latencies.lock().unwrap(), Latencies::with_capacity(0));
    let outcome = window.close(
        run,
        "raw-base-producer".into(),
        settings(run, idempotence, " producers=1 delivery=callback"),
        1,
        &mut latencies,
    );
    assert_eq!(deliveries.failed.load(Ordering::Relaxed), 0, "failed deliveries");
    assert_eq!(latencies.0.len(), run.messages as usize);
    outcome
}

async fn raw_rdkafka(run: &Run, idempotence: bool) -> Outcome {
    let topic_guard = fresh_topic("raw").await;
    let topic = topic_guard.name.as_str();
    let producer: FutureProducer = raw_config(run, idempotence).create().expect("raw producer");
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
    window.close(run, "raw-rdkafka".into(), settings(run, idempotence, " producers=1"), 1, &mut latencies)
}

/// Runs `call(i)` for each message `i`, at most `WINDOW` calls in flight, each call sending
/// one message and returning once it is delivered: the per-message latencies.
async fn per_message_calls<F, Fut>(run: &Run, call: F) -> Latencies
where
    F: Fn(u32) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut latencies = Latencies::with_capacity(run.messages as usize);
    let call = &call;
    let mut calls = futures::stream::iter(0..run.messages)
        .map(|i| async move {
            let sent_at = Instant::now();
            call(i).await;
            sent_at.elapsed()
        })
        .buffer_unordered(WINDOW);
    while let Some(latency) = calls.next().await {
        latencies.push(latency);
    }
    latencies
}

fn send_message_input(topic: &str, key: u32, value: &serde_json::Value) -> ModelKafkaProducerPoolInput {
    ModelKafkaProducerPoolInput {
        topic: Some(topic.to_owned()),
        key: Some(key.to_string()),
        value: Some(value.clone()),
        ..ModelKafkaProducerPoolInput::new(EnumKafkaProducerPoolOperation::SendMessage)
    }
}

/// The node's `send_message`, one request per message.
async fn node_send_message(run: &Run, idempotence: bool) -> Outcome {
    let topic_guard = fresh_topic("node-msg").await;
    let topic = topic_guard.name.as_str();
    let mut container = Container::new();
    container.register(Arc::new(pool_for(run, idempotence, 1)));
    let node: NodeKafkaProducerPoolEffect = NodeKafkaProducerPoolEffect::new(&container).expect("node");
    // A JSON string of 98 characters encodes to exactly 100 bytes.
    let value = serde_json::Value::String("v".repeat(PAYLOAD_BYTES - 2));
    let send = |i: u32| {
        let (node, value) = (&node, &value);
        async move {
            let out = node.process(send_message_input(topic, i, value), Context::new()).await.expect("send_message");
            assert!(out.success, "{:?}", out.errors);
        }
    };
    let warm: Vec<_> = (0..WARMUP).map(send).collect();
    futures::future::join_all(warm).await;
    let window = Window::open();
    let mut latencies = per_message_calls(run, |i| send(WARMUP + i)).await;
    window.close(
        run,
        "node-send-message".into(),
        settings(run, idempotence, " producers=1 requests_built=in-window"),
        1,
        &mut latencies,
    )
}

/// What the producer pool node's contract asks of one `send_message`, written straight on
/// the pool: the topic checked, the JSON value encoded, the delivery awaited under the
/// request's wait limit (one timer, as the node's), the answer stamped with the time, the
/// correlation id, the partition and the offset.
async fn contract_floor_send(
    pool: &KafkaProducerPool,
    input: ModelKafkaProducerPoolInput,
    ctx: Context,
) -> ModelKafkaProducerPoolOutput {
    let topic = input.topic.as_deref().filter(|topic| !topic.trim().is_empty()).expect("a topic");
    let mut buffer = Vec::new();
    onex_runtime::json::append_json(&mut buffer, input.value.as_ref().expect("a value")).expect("JSON");
    let mut record = ProduceRecord::new(topic, &buffer);
    if let Some(key) = &input.key {
        record = record.key(key.as_bytes());
    }
    let delivery = async { pool.send(record, None).await?.await };
    let delivered = tokio::time::timeout(Duration::from_secs(30), delivery).await.expect("in time").expect("delivered");
    let mut out =
        ModelKafkaProducerPoolOutput::new(true, input.operation_type, ctx.correlation_id(), chrono::Utc::now());
    out.delivered = Some(1);
    out.failed = Some(0);
    out.partition = u64::try_from(delivered.partition).ok();
    out.offset = u64::try_from(delivered.offset).ok();
    out
}

/// [`contract_floor_send`] per message, called as `node-send-message` calls the node: the
/// node's share of `node-send-message` is its cost above this row.
async fn contract_floor(run: &Run, idempotence: bool) -> Outcome {
    let topic_guard = fresh_topic("floor").await;
    let topic = topic_guard.name.as_str();
    let pool = pool_for(run, idempotence, 1);
    let value = serde_json::Value::String("v".repeat(PAYLOAD_BYTES - 2));
    let send = |i: u32| {
        let (pool, value) = (&pool, &value);
        async move {
            let out = contract_floor_send(pool, send_message_input(topic, i, value), Context::new()).await;
            assert!(out.success && out.offset.is_some());
        }
    };
    let warm: Vec<_> = (0..WARMUP).map(send).collect();
    futures::future::join_all(warm).await;
    let window = Window::open();
    let mut latencies = per_message_calls(run, |i| send(WARMUP + i)).await;
    let outcome = window.close(
        run,
        "contract-floor".into(),
        settings(run, idempotence, " producers=1 requests_built=in-window"),
        1,
        &mut latencies,
    );
    pool.shutdown().await.expect("shutdown");
    outcome
}

/// The event bus's `publish_event`, one `OnexEvent` per message; with `tracing`, the bus and its
/// pool record their spans with it.
async fn bus_publish(run: &Run, idempotence: bool, tracing: Option<Tracing>) -> Outcome {
    let namer = TopicNamer::default();
    // The bus names the topic after the event type: a fresh type, so a fresh topic.
    let event_type = format!("bench.bus.{}", uuid::Uuid::new_v4().simple());
    let topic = namer.topic_for(&event_type).expect("topic name");
    create_topic(&topic, PARTITIONS).await;
    let _topic_guard = TestTopic { name: topic };
    let pool = Arc::new(pool_for(run, idempotence, 1).with_tracing(tracing.clone().unwrap_or_default()));
    // Wide enough never to refuse, so the bench pays the limiter's check as a caller does
    // without being throttled by it.
    let rule = RateLimitRule { per_minute: u32::MAX, burst: u32::MAX, penalty: Duration::ZERO };
    let bus = KafkaEventBus::new(Arc::clone(&pool), namer).with_rate_limit(Some(rule));
    let template = OnexEvent::new(event_type, "bench-bus", uuid::Uuid::nil(), serde_json::Value::Null);
    let value_bytes = bus.encode(&template).expect("encode").value.len();
    let publish = |i: u32| {
        let (bus, template) = (&bus, &template);
        async move {
            // Fresh ids as a caller's new event has; from a counter, so that the random source
            // is not measured.
            let mut event = template.clone();
            event.event_id = uuid::Uuid::from_u128((u128::from(i) << 64) | 1);
            event.correlation_id = uuid::Uuid::from_u128(u128::from(i));
            bus.publish_event(&event).await.expect("publish_event");
        }
    };
    let warm: Vec<_> = (0..WARMUP).map(publish).collect();
    futures::future::join_all(warm).await;
    let window = Window::open();
    let mut latencies = per_message_calls(run, |i| publish(WARMUP + i)).await;
    let name = match &tracing {
        Some(tracing) => format!("bus-publish-traced-{:.1}", tracing.sample_rate().unwrap_or_default()),
        None => "bus-publish".into(),
    };
    let mut outcome = window.close(
        run,
        name,
        settings(run, idempotence, &format!(" producers=1 value_bytes={value_bytes} headers=2 events_built=in-window")),
        1,
        &mut latencies,
    );
    assert_eq!(bus.stats().published, u64::from(run.messages + WARMUP));
    if let Some(tracing) = tracing {
        // After the window: the final export is not measured.
        let _ = tracing.shutdown();
        let spans = tracing.stats();
        outcome.spans_exported = Some(spans.exported);
        outcome.spans_dropped = Some(spans.dropped());
    }
    drop(bus);
    if let Ok(pool) = Arc::try_unwrap(pool) {
        pool.shutdown().await.expect("shutdown");
    }
    outcome
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
        window.close(run, name, settings(run, idempotence, &format!(" producers={producers}")), 1, &mut latencies);
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

/// Sends `count` messages (keys from `first`) through `pool`, awaiting delivery futures in
/// send order once `WINDOW` are in flight, down to `LOW_WATER`, and all of them at the end.
async fn send_in_order(pool: &KafkaProducerPool, topic: &str, body: &[u8], first: u32, count: u32) {
    let mut pending = std::collections::VecDeque::with_capacity(WINDOW);
    for i in first..first + count {
        if pending.len() >= WINDOW {
            while pending.len() > LOW_WATER {
                let delivery: DeliveryFuture = pending.pop_front().unwrap();
                delivery.await.expect("delivery");
            }
        }
        pending
            .push_back(pool.send(ProduceRecord::new(topic, body).key(&i.to_be_bytes()), None).await.expect("enqueue"));
    }
    for delivery in pending {
        delivery.await.expect("delivery");
    }
}

/// `pool-in-order`: the pool used the way the anchor uses librdkafka: sends run ahead and
/// the sender waits in bulk. Delivery futures are kept in send order and awaited only once the
/// window is full, oldest first, down to the anchor's low-water mark. A future whose report is
/// already in returns without registering a waker, so, as with the anchor's callback, the
/// sender is woken about once per drained 1/16 of the window, not once per message. Latency is
/// the pool's own delivery histogram (librdkafka's intake to the report, bucketed, warm-up
/// included), since the sender sees a report only when it gets round to it.
async fn pool_in_order(run: &Run, idempotence: bool) -> Outcome {
    let topic_guard = fresh_topic("pool-in-order").await;
    let topic = topic_guard.name.as_str();
    let pool = pool_for(run, idempotence, 1);
    let body = payload();
    send_in_order(&pool, topic, &body, 0, WARMUP).await;
    let window = Window::open();
    send_in_order(&pool, topic, &body, WARMUP, run.messages).await;
    let stats = pool.stats();
    let mut outcome = window.close(
        run,
        "pool-in-order".into(),
        settings(run, idempotence, " producers=1 awaited=in-order latency=pool-histogram"),
        1,
        &mut Latencies::with_capacity(0),
    );
    (outcome.message_p50_ms, outcome.message_p99_ms) = (Some(stats.p50_delivery_ms), Some(stats.p99_delivery_ms));
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
    container.register(Arc::new(pool_for(run, idempotence, 1)));
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
    let outcome = window.close(run, name.into(), settings(run, idempotence, &extra), batch as u32, &mut latencies);
    assert_eq!(delivered, u64::from(run.messages));
    outcome
}

fn env_u32(key: &str, default: u32) -> u32 {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

const CONTENDERS: [&str; 17] = [
    "raw-base-producer",
    "raw-rdkafka",
    "pool",
    "pool-in-order",
    "pool-2",
    "pool-4",
    "node-send-message",
    "contract-floor",
    "bus-publish",
    "node-send-batch",
    "node-prebuilt",
    "pool-traced-1.0",
    "pool-traced-0.1",
    "pool-traced-0.0",
    "bus-publish-traced-1.0",
    "bus-publish-traced-0.1",
    "bus-publish-traced-0.0",
];

/// The contender each per-message wrapper is held against (overhead target ≤ 10 %).
const ANCHOR: &str = "raw-base-producer";

/// A traced contender's name, `<untraced>-traced-<rate>`, as its two parts.
fn traced_parts(name: &str) -> Option<(&str, &str)> {
    name.split_once("-traced-")
}

/// The untraced contender a traced one is held against.
fn untraced_of(name: &str) -> Option<&str> {
    traced_parts(name).map(|(untraced, _)| untraced)
}

/// The sampling rate a traced contender's name ends in (`pool-traced-0.1`: 0.1).
fn sample_rate_of(name: &str) -> Option<f64> {
    let (_, rate) = traced_parts(name)?;
    Some(rate.parse().unwrap_or_else(|_| panic!("{name}: the name ends in its sampling rate")))
}

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
        .any(|(name, _)| untraced_of(name).is_some())
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
                // A traced contender runs its untraced counterpart with tracing at the rate its
                // name ends in.
                let tracing = sample_rate_of(name).map(|rate| tracing_to(otlp.as_deref(), rate));
                let outcome = match untraced_of(name).unwrap_or(name) {
                    "raw-base-producer" => raw_base_producer(&run, idempotence).await,
                    "raw-rdkafka" => raw_rdkafka(&run, idempotence).await,
                    "node-send-message" => node_send_message(&run, idempotence).await,
                    "contract-floor" => contract_floor(&run, idempotence).await,
                    "bus-publish" => bus_publish(&run, idempotence, tracing).await,
                    "pool" => pool(&run, idempotence, 1, tracing).await,
                    "pool-in-order" => pool_in_order(&run, idempotence).await,
                    "pool-2" => pool(&run, idempotence, 2, None).await,
                    "pool-4" => pool(&run, idempotence, 4, None).await,
                    "node-prebuilt" => node(&run, idempotence, Requests::Prebuilt).await,
                    _ => node(&run, idempotence, Requests::OnDemand).await,
                };
                eprintln!(
                    "round {round} {:<17} idempotence={idempotence:<5} {:>10.0} msgs/s {:>6.2} µs CPU/msg {:>7.1} switches/1k msgs",
                    outcome.name,
                    outcome.msgs_per_sec,
                    outcome.client_cpu_us_per_msg.unwrap_or(f64::NAN),
                    outcome.context_switches_per_1k_msgs.unwrap_or(f64::NAN)
                );
                samples[slot].push(outcome);
            }
        }
        let rates = |runs: &[Outcome]| runs.iter().map(|o| o.msgs_per_sec).collect::<Vec<_>>();
        // Each contender's rate over `against`'s (same idempotence) round by round, median.
        let per_round = |against: &str| -> Vec<Option<f64>> {
            contenders
                .iter()
                .zip(&samples)
                .map(|(&(_, idempotence), runs)| {
                    let other = contenders.iter().position(|&c| c == (against, idempotence))?;
                    median(&paired_ratios(&rates(runs), &[&rates(&samples[other])])).map(|ratio| ratio - 1.0)
                })
                .collect()
        };
        let (vs_anchor, vs_raw) = (per_round(ANCHOR), per_round("raw-rdkafka"));
        let vs_untraced: Vec<Option<f64>> = contenders
            .iter()
            .zip(&samples)
            .map(|(&(name, idempotence), runs)| {
                let untraced = untraced_of(name)?;
                let untraced = contenders.iter().position(|&c| c == (untraced, idempotence))?;
                median(&paired_ratios(&rates(runs), &[&rates(&samples[untraced])]))
            })
            .collect();
        samples
            .into_iter()
            .zip(vs_anchor.into_iter().zip(vs_raw).zip(vs_untraced))
            .map(|(mut runs, ((vs_base_producer_per_round, vs_raw_per_round), vs_untraced_per_round))| {
                runs.sort_by(|a, b| a.msgs_per_sec.total_cmp(&b.msgs_per_sec));
                let n = runs.len();
                let mut middle = runs.swap_remove(n / 2);
                middle.settings.push_str(&format!(" rounds={n} (median)"));
                middle.vs_base_producer_per_round = vs_base_producer_per_round;
                middle.vs_raw_per_round = vs_raw_per_round;
                middle.vs_untraced_per_round = vs_untraced_per_round;
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
        "| contender | messages per call | idempotence | msgs/s | vs {ANCHOR}, per round | vs raw-rdkafka, per round | client CPU µs/msg | context switches / 1k msgs | message p50 / p99 ms | request p50 / p99 ms |"
    );
    println!("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    let percent = |r: Option<f64>| r.map_or("-".to_owned(), |r| format!("{:+.1} %", r * 100.0));
    let quantiles = |p50: Option<f64>, p99: Option<f64>| match p50.zip(p99) {
        Some((p50, p99)) => format!("{p50:.2} / {p99:.2}"),
        None => "-".to_owned(),
    };
    for o in &outcomes {
        let idempotence = o.settings.contains("idempotence=true");
        let cpu = o.client_cpu_us_per_msg.map_or("-".to_owned(), |c| format!("{c:.2}"));
        let switches = o.context_switches_per_1k_msgs.map_or("-".to_owned(), |s| format!("{s:.1}"));
        println!(
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} |",
            o.name,
            o.messages_per_request,
            idempotence,
            o.msgs_per_sec,
            percent(o.vs_base_producer_per_round),
            percent(o.vs_raw_per_round),
            cpu,
            switches,
            quantiles(o.message_p50_ms, o.message_p99_ms),
            quantiles(o.request_p50_ms, o.request_p99_ms)
        );
    }
    for o in outcomes.iter().filter(|o| o.vs_untraced_per_round.is_some()) {
        println!(
            "{} (idempotence={}): {:.3} x {}, per round (median); spans exported {}, dropped {}",
            o.name,
            o.settings.contains("idempotence=true"),
            o.vs_untraced_per_round.unwrap_or(f64::NAN),
            untraced_of(&o.name).unwrap_or_default(),
            o.spans_exported.unwrap_or(0),
            o.spans_dropped.unwrap_or(0)
        );
    }
    if let Some(spans) = receiver.and_then(ReceiverProcess::stop) {
        println!("the OTLP receiver received {spans} spans");
    }
    println!("\nwritten to {}", path.canonicalize().unwrap_or(path).display());
}
