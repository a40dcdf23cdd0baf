//! The plain loops: the host's Kafka work with no node, no envelope and no bookkeeping beyond
//! what at-least-once needs. Each consumes the request topic in a consumer group with the
//! host's consumer settings (offsets stored by the application, committed in the background
//! every second), produces a fixed answer of the host's answer size, with the host's two
//! headers, keyed by the request's key, with the host's producer settings (acks=all,
//! idempotence, linger 5 ms), holds at most `max_in_flight` unacknowledged answers, and stores
//! a partition's offset once every answer up to it is acknowledged. Answers leave in the order
//! their requests were fetched, so a key's answers keep their order without a queue per key.
//!
//! - `plain-async`: a `StreamConsumer` and a `FutureProducer` on the tokio runtime, every
//!   outstanding delivery awaited in one `FuturesUnordered`;
//! - `plain-threaded`: a `BaseConsumer` polled on a thread of its own and a `ThreadedProducer`
//!   whose delivery callback hands (partition, offset) back over a channel: no futures, no
//!   wakers, no allocation per message besides librdkafka's.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use onex_runtime::environment::MapEnv;
use onex_runtime::kafka::config::{consumer_properties, producer_config_from_env, producer_properties};
use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, FutureProducer, FutureRecord, Producer, ProducerContext, ThreadedProducer,
};
use tokio::sync::watch;

/// Which plain loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Async,
    Threaded,
}

/// What a plain loop needs.
pub struct Plan {
    pub env: MapEnv,
    pub group: String,
    pub requests: String,
    pub answers: String,
    pub max_in_flight: usize,
    pub answer_bytes: usize,
}

/// A running plain loop.
pub enum Running {
    Async { stop: watch::Sender<bool>, task: tokio::task::JoinHandle<u64> },
    Threaded { stop: Arc<AtomicBool>, thread: std::thread::JoinHandle<u64> },
}

impl Running {
    /// Stops fetching, waits for what is in flight, commits, leaves the group. Returns the
    /// answers whose delivery failed (none expected).
    pub async fn stop(self) -> u64 {
        match self {
            Self::Async { stop, task } => {
                let _ = stop.send(true);
                task.await.expect("plain loop task")
            }
            Self::Threaded { stop, thread } => {
                stop.store(true, Ordering::Relaxed);
                tokio::task::spawn_blocking(move || thread.join().expect("plain loop thread")).await.expect("join")
            }
        }
    }
}

/// Starts `variant` on `plan`.
pub fn start(variant: Variant, plan: Plan) -> Running {
    let kafka = producer_config_from_env(&plan.env).expect("producer settings");
    let mut consumer = consumer_properties(&kafka, &plan.group).expect("consumer settings").to_client_config();
    // As the host sets them.
    consumer.set("session.timeout.ms", "10000").set("heartbeat.interval.ms", "2000");
    let producer = producer_properties(&kafka).expect("producer settings").to_client_config();
    match variant {
        Variant::Async => {
            let (stop, stopped) = watch::channel(false);
            let task = tokio::spawn(run_async(consumer, producer, plan, stopped));
            Running::Async { stop, task }
        }
        Variant::Threaded => {
            let stop = Arc::new(AtomicBool::new(false));
            let stopping = Arc::clone(&stop);
            let thread = std::thread::Builder::new()
                .name("plain-loop".into())
                .spawn(move || run_threaded(&consumer, &producer, &plan, &stopping))
                .expect("plain loop thread");
            Running::Threaded { stop, thread }
        }
    }
}

fn answer_headers() -> OwnedHeaders {
    // The host's answer carries its event type and event id.
    OwnedHeaders::new_with_capacity(2)
        .insert(Header { key: "onex-event-type", value: Some("node_event_bus_circuit_breaker_compute.completed") })
        .insert(Header { key: "onex-event-id", value: Some("3f2b8c1e-8d6a-4c4e-9b0a-2f7d5e6c1a90") })
}

/// Per partition, the offsets fetched and whether each answer was acknowledged: the offset
/// stored is the last of an unbroken run of acknowledged ones.
#[derive(Default)]
struct Watermarks(HashMap<i32, VecDeque<(i64, bool)>>);

impl Watermarks {
    fn fetched(&mut self, partition: i32, offset: i64) {
        self.0.entry(partition).or_default().push_back((offset, false));
    }

    fn acknowledged(&mut self, partition: i32, offset: i64) -> Option<i64> {
        let open = self.0.get_mut(&partition)?;
        let index = open.binary_search_by_key(&offset, |(o, _)| *o).ok()?;
        open[index].1 = true;
        let mut committable = None;
        while let Some(&(offset, true)) = open.front() {
            committable = Some(offset);
            open.pop_front();
        }
        committable
    }
}

async fn run_async(consumer: ClientConfig, producer: ClientConfig, plan: Plan, mut stop: watch::Receiver<bool>) -> u64 {
    let consumer: StreamConsumer = consumer.create().expect("plain consumer");
    let producer: FutureProducer = producer.create().expect("plain producer");
    consumer.subscribe(&[&plan.requests]).expect("subscribe");
    let answer = vec![b'a'; plan.answer_bytes];
    let headers = answer_headers();
    let mut marks = Watermarks::default();
    let mut pending = FuturesUnordered::new();
    let mut failed = 0;
    let mut stopping = false;
    loop {
        tokio::select! {
            biased;
            _ = stop.changed(), if !stopping => stopping = true,
            Some((partition, offset, delivered)) = pending.next() => {
                let delivered: Result<Result<_, _>, _> = delivered;
                match delivered {
                    Ok(Ok(_)) => {
                        if let Some(offset) = marks.acknowledged(partition, offset) {
                            consumer.store_offset(&plan.requests, partition, offset).expect("store offset");
                        }
                    }
                    _ => failed += 1,
                }
            }
            received = consumer.recv(), if !stopping && pending.len() < plan.max_in_flight => {
                let message = received.expect("consume a request");
                let (partition, offset) = (message.partition(), message.offset());
                let mut record = FutureRecord::to(&plan.answers).payload(&answer).headers(headers.clone());
                if let Some(key) = message.key() {
                    record = record.key(key);
                }
                let delivery = producer.send_result(record).map_err(|(e, _)| e).expect("enqueue an answer");
                marks.fetched(partition, offset);
                pending.push(async move { (partition, offset, delivery.await) });
            }
            else => break,
        }
    }
    commit(&consumer);
    failed
}

/// Hands each delivery's (partition, offset) back to the loop.
struct Acks(mpsc::Sender<(usize, bool)>);

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let _ = self.0.send((opaque, result.is_ok()));
    }
}

/// A fetched message's (partition, offset) in one word: no allocation for the delivery opaque.
const OFFSET_BITS: u32 = 48;

fn run_threaded(consumer: &ClientConfig, producer: &ClientConfig, plan: &Plan, stop: &AtomicBool) -> u64 {
    let consumer: BaseConsumer = consumer.create().expect("plain consumer");
    let (acks, acked) = mpsc::channel();
    let producer: ThreadedProducer<Acks> = producer.create_with_context(Acks(acks)).expect("plain producer");
    consumer.subscribe(&[&plan.requests]).expect("subscribe");
    let answer = vec![b'a'; plan.answer_bytes];
    let headers = answer_headers();
    let mut marks = Watermarks::default();
    let (mut in_flight, mut failed) = (0usize, 0u64);
    let book = |marks: &mut Watermarks, in_flight: &mut usize, failed: &mut u64, (word, ok): (usize, bool)| {
        *in_flight -= 1;
        if !ok {
            *failed += 1;
            return;
        }
        let (partition, offset) = ((word >> OFFSET_BITS) as i32, (word & ((1 << OFFSET_BITS) - 1)) as i64);
        if let Some(offset) = marks.acknowledged(partition, offset) {
            consumer.store_offset(&plan.requests, partition, offset).expect("store offset");
        }
    };
    while !stop.load(Ordering::Relaxed) {
        while let Ok(ack) = acked.try_recv() {
            book(&mut marks, &mut in_flight, &mut failed, ack);
        }
        if in_flight >= plan.max_in_flight {
            if let Ok(ack) = acked.recv_timeout(Duration::from_millis(100)) {
                book(&mut marks, &mut in_flight, &mut failed, ack);
            }
            continue;
        }
        // Short while answers are outstanding: their acknowledgements free slots.
        let wait = if in_flight > 0 { Duration::from_millis(1) } else { Duration::from_millis(50) };
        let Some(received) = consumer.poll(wait) else { continue };
        let message = received.expect("consume a request");
        let (partition, offset) = (message.partition(), message.offset());
        let word = ((partition as usize) << OFFSET_BITS) | offset as usize;
        let mut record = BaseRecord::with_opaque_to(&plan.answers, word).payload(&answer).headers(headers.clone());
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        producer.send(record).map_err(|(e, _)| e).expect("enqueue an answer");
        marks.fetched(partition, offset);
        in_flight += 1;
    }
    while in_flight > 0 {
        match acked.recv_timeout(Duration::from_secs(30)) {
            Ok(ack) => book(&mut marks, &mut in_flight, &mut failed, ack),
            Err(_) => break,
        }
    }
    let _ = producer.flush(Duration::from_secs(10));
    commit(&consumer);
    failed
}

fn commit<C: rdkafka::consumer::ConsumerContext>(consumer: &impl Consumer<C>) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(rdkafka::error::KafkaError::ConsumerCommit(rdkafka::error::RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => eprintln!("plain loop: final commit failed: {e}"),
    }
    consumer.unsubscribe();
}
