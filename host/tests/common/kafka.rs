//! Requests sent to chosen partitions, and topics read back while the hosts write them.
//!
//! Every request names its partition, so a test knows which partition each answer's request
//! came from (and so which host held it) without recomputing the broker's key hash.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use onex_runtime::event::OnexEvent;
use onex_runtime::event_bus::{EncodedEvent, TopicNamer};
use onex_tests::kafka::bootstrap;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use uuid::Uuid;

const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends requests to explicit partitions and waits for the broker's acknowledgements.
pub struct Sender {
    producer: FutureProducer,
}

impl Default for Sender {
    fn default() -> Self {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .set("linger.ms", "5")
            .create()
            .expect("request producer");
        Self { producer }
    }
}

impl Sender {
    /// Sends `value` with `key` to `partition` of `topic`.
    pub async fn send_raw(&self, topic: &str, partition: i32, key: Option<&[u8]>, value: &[u8]) {
        let mut record = FutureRecord::to(topic).partition(partition).payload(value);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Err((e, _)) = self.producer.send(record, BROKER_TIMEOUT).await {
            panic!("cannot send a request to {topic}[{partition}]: {e}");
        }
    }

    /// Sends `event` as a requester does (key = correlation id) to `partition` of `topic`.
    pub async fn send(&self, topic: &str, partition: i32, event: &OnexEvent) {
        let encoded = EncodedEvent::new(&TopicNamer::default(), event).expect("encode a request");
        self.send_raw(topic, partition, Some(encoded.key.as_bytes()), &encoded.value).await;
    }

    /// Sends every `(partition, event)` at once and waits for all acknowledgements.
    pub async fn send_all(&self, topic: &str, batch: &[(i32, OnexEvent)]) {
        futures::future::join_all(batch.iter().map(|(partition, event)| self.send(topic, *partition, event))).await;
    }
}

/// Requests sent in the background, `per_tick` at a time, so a test can act mid-stream.
pub struct Paced {
    sent: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Paced {
    /// Starts sending `requests` to `topic`: a batch of `per_tick`, acknowledged, every `tick`.
    pub fn start(topic: &str, requests: Vec<(i32, OnexEvent)>, per_tick: usize, tick: Duration) -> Self {
        let sent = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&sent);
        let topic = topic.to_owned();
        let task = tokio::spawn(async move {
            let sender = Sender::default();
            let mut ticks = tokio::time::interval(tick);
            for batch in requests.chunks(per_tick) {
                ticks.tick().await;
                sender.send_all(&topic, batch).await;
                counter.fetch_add(batch.len(), Ordering::Relaxed);
            }
        });
        Self { sent, task }
    }

    /// Requests acknowledged so far.
    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::Relaxed)
    }

    /// Waits until every request is sent.
    pub async fn finish(self) {
        self.task.await.expect("the request stream failed");
    }
}

/// A message read back.
#[derive(Debug)]
pub struct Record {
    /// When this process read it.
    pub at: Instant,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, String)>,
    /// The value as an ONEX event, if it is one.
    pub event: Option<OnexEvent>,
}

impl Record {
    /// The value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The event, which an answer topic holds only.
    pub fn answer(&self) -> &OnexEvent {
        self.event.as_ref().unwrap_or_else(|| panic!("not an ONEX event: {}", String::from_utf8_lossy(&self.value)))
    }
}

#[derive(Default)]
struct State {
    records: Vec<Record>,
    /// Next offset to read, per partition.
    next: HashMap<i32, i64>,
    error: Option<String>,
}

struct Shared {
    stop: AtomicBool,
    state: Mutex<State>,
}

/// Every message of a topic, from its beginning, read by a thread as it arrives (a plain
/// consumer: no group, no commits).
pub struct TopicLog {
    topic: String,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl TopicLog {
    /// Starts reading `topic`.
    pub fn follow(topic: &str) -> Self {
        let consumer = plain_consumer(None);
        let partitions = partition_count(&consumer, topic);
        let mut assignment = TopicPartitionList::new();
        for p in 0..partitions {
            assignment.add_partition_offset(topic, p, Offset::Beginning).expect("partition offset");
        }
        consumer.assign(&assignment).expect("assign the partitions");
        let shared = Arc::new(Shared { stop: AtomicBool::new(false), state: Mutex::new(State::default()) });
        let reading = Arc::clone(&shared);
        let thread = std::thread::spawn(move || read(&consumer, &reading));
        Self { topic: topic.to_owned(), shared, thread: Some(thread) }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        let state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(error) = &state.error {
            panic!("reading {} failed: {error}", self.topic);
        }
        state
    }

    /// `f` of the records read so far.
    pub fn with<R>(&self, f: impl FnOnce(&[Record]) -> R) -> R {
        f(&self.state().records)
    }

    /// How many records were read so far.
    pub fn len(&self) -> usize {
        self.state().records.len()
    }

    /// Waits until everything the topic holds now has been read, at most `within`.
    pub async fn drain(&self, within: Duration) -> bool {
        let ends = end_offsets(&self.topic).await;
        super::wait_for(within, || {
            let state = self.state();
            ends.iter().all(|(p, end)| state.next.get(p).copied().unwrap_or(0) >= *end)
        })
        .await
        .is_some()
    }
}

impl Drop for TopicLog {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn read(consumer: &BaseConsumer, shared: &Shared) {
    while !shared.stop.load(Ordering::Relaxed) {
        let Some(polled) = consumer.poll(Duration::from_millis(50)) else { continue };
        let mut state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
        match polled {
            Ok(message) => {
                let value = message.payload().unwrap_or_default().to_vec();
                let headers = message
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                state.next.insert(message.partition(), message.offset() + 1);
                state.records.push(Record {
                    at: Instant::now(),
                    partition: message.partition(),
                    offset: message.offset(),
                    key: message.key().map(<[u8]>::to_vec),
                    event: serde_json::from_slice(&value).ok(),
                    value,
                    headers,
                });
            }
            Err(e) => {
                state.error = Some(e.to_string());
                return;
            }
        }
    }
}

fn plain_consumer(group: Option<&str>) -> BaseConsumer {
    let group = group.map_or_else(|| format!("reader-{}", Uuid::new_v4().simple()), str::to_owned);
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer")
}

fn partition_count(consumer: &BaseConsumer, topic: &str) -> i32 {
    let metadata = consumer.fetch_metadata(Some(topic), BROKER_TIMEOUT).expect("topic metadata");
    let count = metadata.topics().first().map_or(0, |t| t.partitions().len());
    assert!(count > 0, "topic {topic} has no partitions");
    i32::try_from(count).expect("partition count")
}

/// Each partition's end (the offset the next message will get).
pub async fn end_offsets(topic: &str) -> Vec<(i32, i64)> {
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer = plain_consumer(None);
        (0..partition_count(&consumer, &topic))
            .map(|p| (p, consumer.fetch_watermarks(&topic, p, BROKER_TIMEOUT).expect("watermarks").1))
            .collect()
    })
    .await
    .expect("watermarks")
}

/// The offsets `group` committed on each partition of `topic` (`None`: nothing committed).
pub async fn committed(group: &str, topic: &str) -> Vec<(i32, Option<i64>)> {
    let (group, topic) = (group.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer = plain_consumer(Some(&group));
        let mut list = TopicPartitionList::new();
        for p in 0..partition_count(&consumer, &topic) {
            list.add_partition(&topic, p);
        }
        let committed = consumer.committed_offsets(list, BROKER_TIMEOUT).expect("committed offsets");
        committed
            .elements()
            .iter()
            .map(|e| {
                let offset = match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                };
                (e.partition(), offset)
            })
            .collect()
    })
    .await
    .expect("committed offsets")
}
