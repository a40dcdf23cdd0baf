//! The consume loop: fetches requests in the consumer group, starts an answering task for
//! each (one at a time per key, at most `max_in_flight` held), and stores a partition's offset
//! once every request before it is answered and acknowledged. Stored offsets are committed in
//! the background, on a rebalance and at shutdown, so delivery is at least once: a host that
//! dies loses nothing, and the requests it had not committed are answered again elsewhere.
//!
//! The loop alone owns the bookkeeping ([`Offsets`], [`KeyQueues`]). Requests are answered in
//! lanes, one long-lived task per runtime worker, each running its requests' futures side by
//! side; a finished request reports back over a channel. Lanes instead of a task per request:
//! spawning one cost a cache-aligned allocation, a move of the whole future into it and often
//! the wake-up of another thread, several thousand instructions per request.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt as _;
use futures::stream::{FuturesUnordered, StreamExt as _};
use onex_runtime::OnexError;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::answer::{Answering, Fetched, ServedNode, answer};
use crate::progress::{KeyQueues, Offsets, Partition};

/// Notes the partitions a rebalance takes away, for the loop to forget.
#[derive(Default)]
pub struct HostContext {
    revoked: Mutex<Vec<(String, i32)>>,
}

impl ClientContext for HostContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        if (level as i32) <= (rdkafka::config::RDKafkaLogLevel::Warning as i32) {
            tracing::warn!(facility, "librdkafka: {}", onex_runtime::sanitize::sanitize_message(message));
        }
    }
}

impl ConsumerContext for HostContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let mut revoked = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
            revoked.extend(list.elements().iter().map(|e| (e.topic().to_owned(), e.partition())));
        }
    }
}

/// A fetched request on its way to (or waiting for) an answering task.
struct Job {
    node: usize,
    partition: Partition,
    epoch: u64,
    message: Fetched,
    _permit: OwnedSemaphorePermit,
}

/// An answering task's report.
struct Done {
    partition: Partition,
    epoch: u64,
    offset: i64,
    key: Option<Vec<u8>>,
    acknowledged: bool,
    /// The request's in-flight permit, released once the loop has booked the report: requests
    /// fetched and not yet booked stay within the bound.
    _permit: OwnedSemaphorePermit,
}

/// The loop's fixed inputs.
pub struct Loop {
    pub consumer: StreamConsumer<HostContext>,
    /// Request topics, by index; `topic_node[i]` serves `topics[i]`. Shared with every fetched
    /// request of the topic (one name, not one copy per message).
    pub topics: Vec<Arc<str>>,
    pub topic_node: Vec<usize>,
    pub nodes: Vec<Arc<ServedNode>>,
    pub answering: Arc<Answering>,
    pub max_in_flight: usize,
    pub shutdown_timeout: Duration,
    /// Set by the deadline of a shutdown: tells answering tasks to stop retrying publishes.
    pub abandon: watch::Sender<bool>,
}

impl Loop {
    /// The index of request topic `name`. A scan: a host serves a handful of topics, and
    /// comparing a few strings is cheaper per message than hashing one.
    fn topic_index(&self, name: &str) -> Option<usize> {
        self.topics.iter().position(|topic| &**topic == name)
    }
}

/// Answers requests until `stop` turns true, then finishes what runs (within the shutdown
/// timeout), commits and leaves the group. Returns how many fetched requests were left
/// unanswered (redelivered to the group).
pub async fn run(this: Loop, mut stop: watch::Receiver<bool>) -> Result<usize, OnexError> {
    let permits = Arc::new(Semaphore::new(this.max_in_flight));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let mut lanes = Lanes::start(&this, &done_tx);
    drop(done_tx);
    let mut offsets = Offsets::default();
    let mut keys: KeyQueues<Job> = KeyQueues::default();
    let mut running = 0usize;
    let mut receive_errors = 0u32;
    loop {
        forget_revoked(&this, &mut offsets, &mut keys);
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            Some(done) = done_rx.recv() => {
                running -= 1;
                if let Some(next) = finish(&this, &mut offsets, &mut keys, done) {
                    running += 1;
                    lanes.answer(next);
                }
            }
            received = this.consumer.recv(), if permits.available_permits() > 0 => {
                // The loop is the only one taking permits: one is free.
                let permit = Arc::clone(&permits).try_acquire_owned().map_err(|_| {
                    OnexError::new(onex_runtime::ErrorCode::InternalError, "no in-flight permit although one was free")
                })?;
                let message = match received {
                    Ok(message) => { receive_errors = 0; message }
                    Err(e) => {
                        // Broker away or a rebalance: librdkafka recovers by itself.
                        tracing::warn!("consume error: {e}");
                        receive_errors += 1;
                        tokio::time::sleep(Duration::from_millis(50 << receive_errors.min(6))).await;
                        continue;
                    }
                };
                forget_revoked(&this, &mut offsets, &mut keys);
                let Some(topic) = this.topic_index(message.topic()) else { continue };
                let partition = (topic, message.partition());
                let epoch = offsets.fetched(partition, message.offset());
                let traceparent = message.headers().and_then(|h| {
                    h.iter().find(|h| h.key == "traceparent").and_then(|h| h.value).and_then(|v| std::str::from_utf8(v).ok()).map(str::to_owned)
                });
                let fetched = Fetched {
                    topic: Arc::clone(&this.topics[topic]),
                    partition: message.partition(),
                    offset: message.offset(),
                    key: message.key().map(<[u8]>::to_vec),
                    value: message.payload().map(<[u8]>::to_vec),
                    traceparent,
                };
                drop(message);
                this.answering.counters.received.inc();
                let job = Job { node: this.topic_node[topic], partition, epoch, message: fetched, _permit: permit };
                let ready = keys.arrive(partition, job, |job| job.message.key.as_deref());
                if let Some(job) = ready {
                    running += 1;
                    lanes.answer(job);
                }
            }
        }
        this.answering
            .counters
            .in_flight
            .set(i64::try_from(this.max_in_flight - permits.available_permits()).unwrap_or(i64::MAX));
    }
    // Shutdown: nothing more is fetched. What runs finishes (or is abandoned at the deadline);
    // what waits behind a key stays uncommitted and goes to the next owner.
    let deadline = tokio::time::Instant::now() + this.shutdown_timeout;
    let mut abandoned = false;
    while running > 0 {
        match tokio::time::timeout_at(deadline, done_rx.recv()).await {
            Ok(Some(done)) => {
                running -= 1;
                // Started requests finish; waiting ones are not started any more.
                let _ = finish(&this, &mut offsets, &mut keys, done);
            }
            Ok(None) => break,
            Err(_) if !abandoned => {
                abandoned = true;
                let _ = this.abandon.send(true);
                tracing::warn!(running, "shutdown deadline passed; abandoning unacknowledged answers");
            }
            Err(_) => break,
        }
    }
    let unanswered = offsets.open();
    match this.consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(rdkafka::error::RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => tracing::warn!("final offset commit failed: {e}"),
    }
    this.consumer.unsubscribe();
    Ok(unanswered)
}

/// The lanes requests are answered in. Dropping it ends every lane once its requests are done.
struct Lanes {
    senders: Vec<mpsc::UnboundedSender<Job>>,
    next: usize,
}

impl Lanes {
    /// One lane per runtime worker, so that requests are answered on every core.
    fn start(this: &Loop, done_tx: &mpsc::UnboundedSender<Done>) -> Self {
        let count = tokio::runtime::Handle::current().metrics().num_workers().max(1);
        let senders = (0..count)
            .map(|_| {
                let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
                tokio::spawn(lane(Arc::clone(&this.answering), this.nodes.clone(), jobs_rx, done_tx.clone()));
                jobs_tx
            })
            .collect();
        Self { senders, next: 0 }
    }

    /// Hands `job` to the next lane, round-robin (a key's order is kept before this point).
    fn answer(&mut self, job: Job) {
        self.next = (self.next + 1) % self.senders.len();
        // A lane ends only when its sender is dropped, so the send cannot fail; were it to,
        // the job (and its permit) would be dropped unanswered and redelivered to the group.
        let _ = self.senders[self.next].send(job);
    }
}

/// A lane: answers the jobs it is handed, side by side, until its sender is dropped and what
/// it runs is done.
async fn lane(
    answering: Arc<Answering>,
    nodes: Vec<Arc<ServedNode>>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    done_tx: mpsc::UnboundedSender<Done>,
) {
    let mut running = FuturesUnordered::new();
    let mut open = true;
    while open || !running.is_empty() {
        tokio::select! {
            biased;
            Some(done) = running.next(), if !running.is_empty() => {
                let _ = done_tx.send(done);
            }
            job = jobs.recv(), if open => match job {
                Some(job) => running.push(task(&answering, &nodes[job.node], job)),
                None => open = false,
            },
        }
    }
}

/// Answers `job` and reports how it went; the job's in-flight permit goes with the report. A
/// panic while answering (outside the node, whose panics are answered as errors)
/// counts as not acknowledged: the offset is not committed and the request is redelivered.
async fn task(answering: &Answering, served: &ServedNode, job: Job) -> Done {
    let acknowledged = std::panic::AssertUnwindSafe(answer(answering, served, &job.message))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| {
            tracing::error!(offset = job.message.offset, "answering a request panicked; it will be redelivered");
            false
        });
    let Job { partition, epoch, message, _permit, .. } = job;
    Done { partition, epoch, offset: message.offset, key: message.key, acknowledged, _permit }
}

/// Books a finished request: stores the offset it makes committable, and returns the request
/// waiting behind its key, if any.
fn finish(this: &Loop, offsets: &mut Offsets, keys: &mut KeyQueues<Job>, done: Done) -> Option<Job> {
    if !done.acknowledged {
        // Its answer may not have reached the broker (only at shutdown): leave the offset, and
        // the requests waiting behind its key, for redelivery to the next owner.
        return None;
    }
    let current = offsets.is_current(done.partition, done.epoch);
    if let Some(offset) = offsets.finished(done.partition, done.epoch, done.offset) {
        let (topic, partition) = done.partition;
        if let Err(e) = this.consumer.store_offset(&this.topics[topic], partition, offset) {
            tracing::warn!("cannot store offset {offset} of {}[{partition}]: {e}", this.topics[topic]);
        }
    }
    match (&done.key, current) {
        (Some(key), true) => keys.finish(done.partition, key),
        _ => None,
    }
}

fn forget_revoked(this: &Loop, offsets: &mut Offsets, keys: &mut KeyQueues<Job>) {
    let revoked = std::mem::take(&mut *this.consumer.context().revoked.lock().unwrap_or_else(|p| p.into_inner()));
    for (name, partition) in revoked {
        if let Some(topic) = this.topic_index(&name) {
            offsets.revoked((topic, partition));
            let dropped = keys.revoked((topic, partition));
            tracing::info!(topic = %name, partition, dropped, "partition revoked");
        }
    }
}

#[cfg(test)]
mod tests {
    use onex_runtime::event_bus::TopicNamer;
    use onex_runtime::kafka::{KafkaPoolSettings, KafkaProducerPool};
    use onex_runtime::models::kafka::KafkaProducerConfig;

    use super::*;
    use crate::answer::RecentIds;
    use crate::counters::HostCounters;
    use crate::routes::Routes;

    fn answering() -> Arc<Answering> {
        // Never used: the task is not run, and the pool connects only on a first send.
        let pool = KafkaProducerPool::new(KafkaPoolSettings::default(), KafkaProducerConfig::new("127.0.0.1:9"));
        Arc::new(Answering {
            pool: Arc::new(pool.unwrap()),
            counters: HostCounters::default(),
            max_attempts: 1,
            retry_backoff: Duration::ZERO,
            source: "test".into(),
            recent: Mutex::new(RecentIds::default()),
            store: None,
            abandon: watch::channel(false).1,
        })
    }

    fn served() -> Arc<ServedNode> {
        let registry = onex_generated::registry();
        let registration = registry.find("node_event_bus_circuit_breaker_compute", None).unwrap();
        let node = (registration.construct)(&onex_runtime::Container::new()).unwrap();
        let routes = Routes::of(registration.contract, &TopicNamer::default());
        Arc::new(ServedNode { contract: registration.contract, node, routes })
    }

    #[test]
    fn an_answering_task_holds_its_in_flight_permit_until_it_ends() {
        let permits = Arc::new(Semaphore::new(1));
        let message =
            Fetched { topic: Arc::from("t"), partition: 0, offset: 7, key: None, value: None, traceparent: None };
        let permit = Arc::clone(&permits).try_acquire_owned().unwrap();
        let job = Job { node: 0, partition: (0, 0), epoch: 1, message, _permit: permit };
        let (answering, served) = (answering(), served());
        let running = task(&answering, &served, job);
        assert_eq!(permits.available_permits(), 0, "the task was made, so its request is held");
        drop(running);
        assert_eq!(permits.available_permits(), 1, "the task is gone, so is its request");
    }
}
