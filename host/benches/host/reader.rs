//! Reads the answer topic on a thread of its own, as a requester waiting for answers would,
//! and notes when each answer arrived. Answers are told apart by their key (the request's
//! correlation id, which the host and the plain loop both copy from the request), so a
//! redelivered request answered twice counts once (and as a duplicate).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use onex_tests::kafka::bootstrap;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio::sync::oneshot;

use crate::machine::Snapshot;

/// Checks an answer's value; the error says what is wrong with it.
pub type Check = fn(&[u8]) -> Result<(), String>;

/// Every how many answers the reader checks one (parsing each would make the reader the
/// bottleneck of the fastest contender).
const CHECK_EVERY: usize = 50;

/// One answer, first seen.
pub struct Arrival {
    pub key: Vec<u8>,
    pub at: Instant,
}

/// The answers of one phase: from the first that arrived after the previous phase ended to
/// the one that made up the count asked for.
pub struct Phase {
    pub arrivals: Vec<Arrival>,
    /// The clocks when the first of them arrived, and when the last did.
    pub first: Snapshot,
    pub last: Snapshot,
    /// Answers that came again (a request answered twice) so far, over all phases.
    pub duplicates: usize,
    /// Mean size of the answers' values, in bytes.
    pub mean_value_bytes: f64,
    /// Answers checked, and how many of them were wrong, so far over all phases.
    pub checked: usize,
    pub wrong: usize,
    /// What was wrong with the first wrong answer.
    pub first_wrong: Option<String>,
}

struct Wait {
    unique: usize,
    reply: oneshot::Sender<Phase>,
}

/// The reading thread.
pub struct Reader {
    /// Different answers read so far (for progress reports).
    pub seen: Arc<AtomicUsize>,
    waits: Option<mpsc::Sender<Wait>>,
    thread: Option<JoinHandle<()>>,
}

impl Reader {
    /// Starts reading every partition of `topic` from its beginning.
    pub fn start(topic: &str, check: Check) -> Self {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .set("group.id", format!("host-bench-reader-{}", uuid::Uuid::new_v4().simple()))
            .set("enable.auto.commit", "false")
            // The arrival of an answer should not wait for a fetch held open by the broker.
            .set("fetch.wait.max.ms", "10")
            .create()
            .expect("reader consumer");
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("answer topic metadata");
        let partitions = metadata.topics().first().map_or(0, |t| t.partitions().len());
        assert!(partitions > 0, "answer topic {topic} has no partitions");
        let mut assignment = TopicPartitionList::new();
        for p in 0..partitions {
            let p = i32::try_from(p).expect("partition index");
            assignment.add_partition_offset(topic, p, Offset::Beginning).expect("partition offset");
        }
        consumer.assign(&assignment).expect("assign the answer topic");
        let (waits, requests) = mpsc::channel();
        let seen = Arc::new(AtomicUsize::new(0));
        let counting = Arc::clone(&seen);
        let thread = std::thread::Builder::new()
            .name("answer-reader".into())
            .spawn(move || read(&consumer, &requests, check, &counting))
            .expect("reader thread");
        Self { seen, waits: Some(waits), thread: Some(thread) }
    }

    /// Waits until `unique` different answers arrived in all (this phase's and the earlier
    /// ones'), or `within` passed (then panics: the contender lost answers).
    pub async fn until(&self, unique: usize, within: Duration) -> Phase {
        let (reply, phase) = oneshot::channel();
        self.waits.as_ref().expect("reader running").send(Wait { unique, reply }).expect("reader thread alive");
        match tokio::time::timeout(within, phase).await {
            Ok(Ok(phase)) => phase,
            Ok(Err(_)) => panic!("the reader thread ended before {unique} answers arrived"),
            Err(_) => panic!("fewer than {unique} answers arrived within {within:?}"),
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        drop(self.waits.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn read(consumer: &BaseConsumer, waits: &mpsc::Receiver<Wait>, check: Check, counting: &AtomicUsize) {
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    let mut arrivals: Vec<Arrival> = Vec::new();
    let mut first: Option<Snapshot> = None;
    let (mut duplicates, mut bytes, mut checked, mut wrong) = (0usize, 0usize, 0usize, 0usize);
    let mut first_wrong: Option<String> = None;
    let mut wait: Option<Wait> = None;
    loop {
        if wait.is_none() {
            match waits.try_recv() {
                Ok(next) => wait = Some(next),
                Err(mpsc::TryRecvError::Disconnected) => return,
                Err(mpsc::TryRecvError::Empty) => {}
            }
        }
        if let Some(w) = wait.take_if(|w| seen.len() >= w.unique) {
            let last = Snapshot::take();
            let count = arrivals.len().max(1) as f64;
            let phase = Phase {
                arrivals: std::mem::take(&mut arrivals),
                first: first.take().unwrap_or(last),
                last,
                duplicates,
                mean_value_bytes: bytes as f64 / count,
                checked,
                wrong,
                first_wrong: first_wrong.clone(),
            };
            bytes = 0;
            let _ = w.reply.send(phase);
            continue;
        }
        let Some(message) = consumer.poll(Duration::from_millis(20)) else { continue };
        let at = Instant::now();
        let message = message.expect("answer consumed");
        let key = message.key().unwrap_or_default().to_vec();
        if !seen.insert(key.clone()) {
            duplicates += 1;
            continue;
        }
        if first.is_none() {
            first = Some(Snapshot::take());
        }
        let value = message.payload().unwrap_or_default();
        bytes += value.len();
        if seen.len() % CHECK_EVERY == 1 {
            checked += 1;
            if let Err(why) = check(value) {
                wrong += 1;
                first_wrong.get_or_insert(why);
            }
        }
        arrivals.push(Arrival { key, at });
        counting.store(seen.len(), Ordering::Relaxed);
    }
}
