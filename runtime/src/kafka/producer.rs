//! One managed librdkafka producer: bounded in-flight messages, delivery reports feeding the
//! pool's counters, and quarantine after a fatal error.
//!
//! Invariants:
//! - every message handed to librdkafka holds exactly one in-flight slot, returned by its
//!   delivery report (success or failure) — so at most `max_in_flight_messages` are queued;
//! - the sending side and the delivery-report thread write disjoint cache lines: in-flight
//!   and age accounting keep one monotonic counter per side (in flight = admitted − released),
//!   so a message costs no cache-line transfer between them beyond librdkafka's own;
//! - every enqueued message gets exactly one delivery report, unless the producer is dropped
//!   with messages still queued, which the flush in `Drop` and the pool's shutdown prevent.

use std::future::Future;
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use rdkafka::bindings as rd;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message, OwnedHeaders};
use rdkafka::producer::{Producer, ProducerContext, PurgeConfig, ThreadedProducer};
use rdkafka::util::IntoOpaque;
use tokio::sync::Notify;

use crate::error::{ErrorCode, OnexError};
use crate::kafka::batch::{BatchState, Slot, SlotRef};
use crate::kafka::error::delivery_error;
use crate::kafka::metrics::{PoolMetrics, TopicCounters};
use crate::kafka::topic::{Topic, TopicCache};
use crate::sanitize::sanitize_message;

/// One message to produce. Borrowed, so producing copies the bytes once (into librdkafka).
#[derive(Debug, Clone, Copy)]
pub struct ProduceRecord<'a> {
    /// Destination topic.
    pub topic: &'a str,
    /// Partitioning key; `None` lets librdkafka spread messages over partitions.
    pub key: Option<&'a [u8]>,
    /// Message value; `None` is a tombstone (a null value, for compacted topics).
    pub payload: Option<&'a [u8]>,
    /// Explicit partition; `None` uses the partitioner.
    pub partition: Option<i32>,
}

impl<'a> ProduceRecord<'a> {
    /// A record for `topic` with `payload`, no key.
    pub fn new(topic: &'a str, payload: &'a [u8]) -> Self {
        Self { topic, key: None, payload: Some(payload), partition: None }
    }

    /// A record for `topic` with a null value (a tombstone).
    pub fn tombstone(topic: &'a str) -> Self {
        Self { topic, key: None, payload: None, partition: None }
    }

    /// Sets the key.
    pub fn key(mut self, key: &'a [u8]) -> Self {
        self.key = Some(key);
        self
    }

    /// Sets the partition.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }
}

/// Message headers from `(name, value)` pairs, in order (names may repeat).
pub fn headers<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> OwnedHeaders {
    pairs.into_iter().fold(OwnedHeaders::new(), |headers, (key, value)| {
        headers.insert(rdkafka::message::Header { key, value: Some(value.as_bytes()) })
    })
}

/// Where a message landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Partition.
    pub partition: i32,
    /// Offset in the partition.
    pub offset: i64,
}

/// Resolves once the broker acknowledged (or definitely failed) one message.
///
/// Shares the message's pending record with librdkafka instead of a separate channel: one
/// allocation per message, not two, and it is usually freed by the caller's thread (the last
/// to let go), where glibc's malloc frees it without taking another thread's arena lock.
#[must_use = "a delivery future does nothing unless awaited; use `enqueue` to fire and forget"]
pub struct DeliveryFuture {
    pending: Arc<Pending>,
}

impl std::fmt::Debug for DeliveryFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryFuture").field("enqueued_us", &self.pending.sent.enqueued_us).finish_non_exhaustive()
    }
}

impl Future for DeliveryFuture {
    type Output = Result<Delivered, OnexError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let reply = &self.pending.reply;
        // Registered before looking, so a report stored in between still wakes this task.
        reply.waker.register(cx.waker());
        match reply.outcome.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(outcome) => Poll::Ready(outcome),
            None => Poll::Pending,
        }
    }
}

/// What the delivery report needs to know about a message's send.
pub(crate) struct Sent {
    /// On the pool clock ([`PoolMetrics::now_us`]).
    pub(crate) enqueued_us: u64,
    pub(crate) topic: Arc<TopicCounters>,
    pub(crate) bytes: u64,
}

/// The record of a message sent alone; its [`DeliveryFuture`] (if anyone waits) holds the
/// other reference.
pub(crate) struct Pending {
    sent: Sent,
    reply: Reply,
}

/// Carried through librdkafka with each message and handed back in its delivery report.
///
/// librdkafka hands every accepted message's opaque back exactly once, through the delivery
/// report (also for messages purged when a producer is dropped), and a refused send returns it
/// at once; so every ticket is completed exactly once.
pub(crate) enum Ticket {
    /// A message sent alone.
    Alone(Arc<Pending>),
    /// A message of a [`SendBatch`](crate::kafka::SendBatch).
    InBatch(SlotRef),
}

// Tickets travel as one pointer, tagged in its lowest bit (free: both targets are aligned).
const _: () = assert!(std::mem::align_of::<Pending>() >= 2 && std::mem::align_of::<Slot>() >= 2);

impl IntoOpaque for Ticket {
    fn into_ptr(self) -> *mut std::ffi::c_void {
        match self {
            Ticket::Alone(pending) => Arc::into_raw(pending).cast_mut().cast(),
            Ticket::InBatch(slot) => slot.into_raw().as_ptr().map_addr(|a| a | 1).cast(),
        }
    }

    unsafe fn from_ptr(ptr: *mut std::ffi::c_void) -> Self {
        if ptr.addr() & 1 == 0 {
            // SAFETY: an untagged pointer came from `Arc::into_raw` above, taken back once.
            Ticket::Alone(unsafe { Arc::from_raw(ptr.cast::<Pending>()) })
        } else {
            let slot = ptr.map_addr(|a| a & !1).cast::<Slot>();
            // SAFETY: a tagged pointer came from `SlotRef::into_raw` above (never null), taken
            // back once.
            Ticket::InBatch(unsafe { SlotRef::from_raw(NonNull::new_unchecked(slot)) })
        }
    }
}

impl Ticket {
    fn sent(&self) -> Option<&Sent> {
        match self {
            Ticket::Alone(pending) => Some(&pending.sent),
            Ticket::InBatch(slot) => slot.sent(),
        }
    }

    fn complete(self, outcome: Result<Delivered, OnexError>) {
        match self {
            Ticket::Alone(pending) => pending.reply.send(outcome),
            Ticket::InBatch(slot) => slot.complete(outcome),
        }
    }
}

/// The outcome of one message, stored by the delivery report and taken by its future.
#[derive(Default)]
struct Reply {
    outcome: Mutex<Option<Result<Delivered, OnexError>>>,
    waker: futures::task::AtomicWaker,
}

impl Reply {
    fn send(&self, outcome: Result<Delivered, OnexError>) {
        *self.outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
        self.waker.wake();
    }
}

/// Lifecycle state of one producer, shared with its librdkafka callbacks.
#[derive(Debug)]
pub(crate) struct ProducerState {
    pub(crate) id: String,
    quarantined: AtomicBool,
    fatal_reason: Mutex<Option<String>>,
    errors: AtomicU64,
    /// Set by every librdkafka error event: the next check asks librdkafka whether the
    /// error was fatal (so the send path does not ask on every message).
    suspect: AtomicBool,
}

impl ProducerState {
    pub(crate) fn is_quarantined(&self) -> bool {
        self.quarantined.load(Ordering::Acquire)
    }

    pub(crate) fn fatal_reason(&self) -> Option<String> {
        self.fatal_reason.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn error_count(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    fn quarantine(&self, reason: String) {
        *self.fatal_reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
        self.quarantined.store(true, Ordering::Release);
    }
}

/// Unreported messages counted by the quarter-second they were enqueued in, so the watchdog
/// can tell whether any message is older than the message timeout without a per-message timer.
/// Each bucket is two monotonic counters, one per side (sent, reported), so the sending side
/// and the delivery thread never write the same line. Looks back [`UnreportedAges::HORIZON`];
/// older buckets wrap around (harmless: the watchdog acts long before).
pub(crate) struct UnreportedAges {
    sent: Box<[AtomicU64]>,
    reported: Box<[AtomicU64]>,
}

impl UnreportedAges {
    const BUCKETS: usize = 512;
    const BUCKET_US: u64 = 250_000;
    /// How far back the buckets reach (128 s).
    pub(crate) const HORIZON: Duration = Duration::from_micros(Self::BUCKET_US * Self::BUCKETS as u64);

    fn new() -> Self {
        let buckets = || (0..Self::BUCKETS).map(|_| AtomicU64::new(0)).collect();
        Self { sent: buckets(), reported: buckets() }
    }

    fn slot(at_us: u64) -> usize {
        ((at_us / Self::BUCKET_US) % Self::BUCKETS as u64) as usize
    }

    /// A message enqueued at `at_us` (pool clock).
    fn add(&self, at_us: u64) {
        self.sent[Self::slot(at_us)].fetch_add(1, Ordering::Relaxed);
    }

    /// The message enqueued at `at_us` was reported.
    fn remove(&self, at_us: u64) {
        self.reported[Self::slot(at_us)].fetch_add(1, Ordering::Relaxed);
    }

    fn unreported(&self, slot: usize) -> u64 {
        // Reported first: a report is counted after its send, so this never reads a report
        // without its send.
        let reported = self.reported[slot].load(Ordering::Acquire);
        self.sent[slot].load(Ordering::Acquire).wrapping_sub(reported)
    }

    /// Whether a message enqueued at least `age` before `now_us` (pool clock) is still
    /// unreported.
    fn any_older_than(&self, now_us: u64, age: Duration) -> bool {
        if age >= Self::HORIZON - Duration::from_micros(Self::BUCKET_US) {
            return false;
        }
        let now_index = now_us / Self::BUCKET_US;
        // A message in bucket i was enqueued before (i + 1) × BUCKET, so it is at least `age`
        // old once (i + 1) × BUCKET + age ≤ now.
        let age_buckets = (age.as_micros() as u64).div_ceil(Self::BUCKET_US) + 1;
        let Some(newest) = now_index.checked_sub(age_buckets) else { return false };
        let oldest = now_index.saturating_sub(Self::BUCKETS as u64 - 1);
        (oldest..=newest).any(|i| self.unreported((i % Self::BUCKETS as u64) as usize) > 0)
    }
}

/// The sending side's half of the in-flight accounting.
#[derive(Debug, Default)]
struct Admissions {
    /// Slots taken, ever (monotonic).
    admitted: AtomicU64,
    /// The latest `released` count this side read. Never ahead of the real count, so judging
    /// the bound against it is conservative, and it spares the send path a read of the line
    /// the delivery thread keeps writing until the bound is near.
    released_seen: AtomicU64,
}

/// The librdkafka context: turns delivery reports into counters, in-flight slots and replies.
pub(crate) struct DeliveryContext {
    metrics: Arc<PoolMetrics>,
    /// Written by senders only.
    admissions: CachePadded<Admissions>,
    /// Slots returned by delivery reports (or refused sends), ever; written by the delivery
    /// thread. In flight = admitted − released, bounded by `max_in_flight`.
    released: CachePadded<AtomicU64>,
    state: Arc<ProducerState>,
    /// Senders waiting for a delivery (in-flight bound reached, or `QueueFull`); deliveries
    /// wake them.
    space_waiters: AtomicUsize,
    space: Notify,
    ages: UnreportedAges,
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let message = sanitize_message(message);
        let id = &self.state.id;
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                tracing::error!(producer = %id, facility, "librdkafka: {message}");
            }
            RDKafkaLogLevel::Warning => tracing::warn!(producer = %id, facility, "librdkafka: {message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(producer = %id, facility, "librdkafka: {message}");
            }
            RDKafkaLogLevel::Debug => tracing::debug!(producer = %id, facility, "librdkafka: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let reason = sanitize_message(reason);
        self.state.errors.fetch_add(1, Ordering::Relaxed);
        self.state.suspect.store(true, Ordering::Release);
        // A fatal error arrives with its underlying code; `ManagedProducer::is_quarantined`
        // asks librdkafka whether the handle is fatally failed.
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::AllBrokersDown) => {
                tracing::warn!(producer = %self.state.id, "all brokers down: {reason}");
                self.metrics.set_brokers_down(true);
            }
            _ => tracing::warn!(producer = %self.state.id, "librdkafka error {error}: {reason}"),
        }
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Ticket;

    fn delivery(&self, result: &DeliveryResult<'_>, ticket: Ticket) {
        let sent = ticket.sent();
        if let Some(sent) = sent {
            self.ages.remove(sent.enqueued_us);
        }
        let outcome = match result {
            Ok(message) => {
                if let Some(sent) = sent {
                    self.metrics.delivered(&sent.topic, sent.bytes, sent.enqueued_us);
                }
                Ok(Delivered { partition: message.partition(), offset: message.offset() })
            }
            Err((error, message)) => {
                if let Some(sent) = sent {
                    self.metrics.failed(&sent.topic);
                }
                Err(delivery_error(message.topic(), error))
            }
        };
        // Release first: whoever sees the reply may rely on the message no longer being in flight.
        self.release();
        // Stored even when nobody waits (fire and forget, or a caller that stopped waiting):
        // the counters above already hold the outcome, and the record goes with the last Arc.
        ticket.complete(outcome);
    }
}

impl DeliveryContext {
    /// Messages admitted and not yet reported.
    fn in_flight(&self) -> u64 {
        let released = self.released.load(Ordering::SeqCst);
        self.admissions.admitted.load(Ordering::SeqCst).saturating_sub(released)
    }

    /// Takes an in-flight slot if fewer than `max` are taken.
    fn try_admit(&self, max: u64) -> bool {
        let admissions = &*self.admissions;
        let before = admissions.admitted.fetch_add(1, Ordering::SeqCst);
        if before.saturating_sub(admissions.released_seen.load(Ordering::Acquire)) < max {
            return true;
        }
        let released = self.released.load(Ordering::SeqCst);
        admissions.released_seen.fetch_max(released, Ordering::AcqRel);
        if before.saturating_sub(released) < max {
            return true;
        }
        admissions.admitted.fetch_sub(1, Ordering::SeqCst);
        false
    }

    /// Returns a slot and wakes senders waiting for one. SeqCst pairs with the waiters'
    /// register-then-recheck in `admit`, so either they see this release or it sees them.
    fn release(&self) {
        self.released.fetch_add(1, Ordering::SeqCst);
        if self.space_waiters.load(Ordering::SeqCst) > 0 {
            self.space.notify_waiters();
        }
    }
}

/// How long a send that found librdkafka's queue full waits for a delivery report before it
/// looks again (see `enqueue_ticket`).
const QUEUE_FULL_RECHECK: Duration = Duration::from_millis(5);

/// librdkafka's `RD_KAFKA_PARTITION_UA` (a C macro, not in the bindings): the partitioner picks.
const PARTITION_UNASSIGNED: i32 = -1;

/// A librdkafka producer with bounded in-flight messages.
pub(crate) struct ManagedProducer {
    /// Emptied in `Drop` before `producer` goes: librdkafka wants topic handles released before
    /// their client.
    topics: TopicCache,
    producer: ThreadedProducer<DeliveryContext>,
    pub(crate) state: Arc<ProducerState>,
    max_in_flight: u32,
    message_timeout: Duration,
    closed: AtomicBool,
}

impl ManagedProducer {
    pub(crate) fn create(
        id: String,
        client: &rdkafka::ClientConfig,
        max_in_flight: u32,
        message_timeout: Duration,
        metrics: Arc<PoolMetrics>,
    ) -> Result<Self, OnexError> {
        let state = Arc::new(ProducerState {
            id: id.clone(),
            quarantined: AtomicBool::new(false),
            fatal_reason: Mutex::new(None),
            errors: AtomicU64::new(0),
            suspect: AtomicBool::new(false),
        });
        let context = DeliveryContext {
            metrics,
            admissions: CachePadded::default(),
            released: CachePadded::default(),
            state: Arc::clone(&state),
            space_waiters: AtomicUsize::new(0),
            space: Notify::new(),
            ages: UnreportedAges::new(),
        };
        let mut client = client.clone();
        client.set("client.id", client.get("client.id").map_or(id.clone(), str::to_owned));
        let producer = client.create_with_context(context).map_err(|e| {
            OnexError::new(ErrorCode::ConfigurationError, format!("cannot create Kafka producer {id}")).with_source(e)
        })?;
        Ok(Self {
            topics: TopicCache::default(),
            producer,
            state,
            max_in_flight,
            message_timeout,
            closed: AtomicBool::new(false),
        })
    }

    /// Whether the producer hit a fatal error (librdkafka refuses all further work on it then).
    /// The first time it is seen, the producer is quarantined and the reason kept.
    pub(crate) fn is_quarantined(&self) -> bool {
        if self.state.is_quarantined() {
            return true;
        }
        // Looked at before it is cleared: a plain load on every message, the read-modify-write
        // only after an error event.
        if !self.state.suspect.load(Ordering::Acquire) || !self.state.suspect.swap(false, Ordering::AcqRel) {
            return false;
        }
        match self.producer.client().fatal_error() {
            None => false,
            Some((code, reason)) => {
                let reason = format!("{code:?}: {}", sanitize_message(&reason));
                tracing::error!(producer = %self.state.id, "fatal producer error, quarantining: {reason}");
                self.state.quarantine(reason);
                true
            }
        }
    }

    /// Messages handed to librdkafka and not yet reported.
    pub(crate) fn in_flight(&self) -> u32 {
        self.producer.context().in_flight().min(u64::from(u32::MAX)) as u32
    }

    /// Messages ever admitted (a monotonic activity count).
    pub(crate) fn admitted(&self) -> u64 {
        self.producer.context().admissions.admitted.load(Ordering::Relaxed)
    }

    /// Enqueues `record`, waiting while `max_in_flight` messages are unreported. Returns the
    /// receiver of its delivery report when `want_report` is set.
    pub(crate) async fn enqueue(
        &self,
        record: ProduceRecord<'_>,
        headers: Option<OwnedHeaders>,
        want_report: bool,
    ) -> Result<Option<DeliveryFuture>, OnexError> {
        let mut receiver = None;
        self.enqueue_ticket(record, headers, |sent| {
            let pending = Arc::new(Pending { sent, reply: Reply::default() });
            if want_report {
                receiver = Some(DeliveryFuture { pending: Arc::clone(&pending) });
            }
            Ok(Ticket::Alone(pending))
        })
        .await?;
        Ok(receiver)
    }

    /// Enqueues `record` as message `index` of `batch`.
    pub(crate) async fn enqueue_in(
        &self,
        batch: &Arc<BatchState>,
        index: usize,
        record: ProduceRecord<'_>,
        headers: Option<OwnedHeaders>,
    ) -> Result<(), OnexError> {
        self.enqueue_ticket(record, headers, |sent| batch.ticket(index, sent).map(Ticket::InBatch)).await
    }

    /// Admits `record`, makes its ticket and hands both to librdkafka, waiting while the queue
    /// is full. A refused message's ticket is completed with the error returned.
    async fn enqueue_ticket(
        &self,
        record: ProduceRecord<'_>,
        headers: Option<OwnedHeaders>,
        ticket: impl FnOnce(Sent) -> Result<Ticket, OnexError>,
    ) -> Result<(), OnexError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(OnexError::new(
                ErrorCode::IntegrationServiceUnavailable,
                format!("Kafka producer {} is shut down", self.state.id),
            ));
        }
        if self.is_quarantined() {
            return Err(self.quarantined_error());
        }
        let context = self.producer.context();
        let topic = self.topics.get(self.producer.client().native_ptr(), record.topic, &context.metrics)?;
        let bytes = record.payload.map_or(0, |p| p.len() as u64);
        self.admit(context).await;
        let enqueued_us = context.metrics.now_us();
        let ticket = match ticket(Sent { enqueued_us, topic: Arc::clone(&topic.counters), bytes }) {
            Ok(ticket) => ticket,
            Err(e) => {
                context.release();
                return Err(e);
            }
        };
        context.metrics.enqueued();
        context.ages.add(enqueued_us);
        // Fast path: no waiter registration (a mutex inside `Notify`) unless the queue is full,
        // so delivery reports only wake anyone while someone really waits.
        let (mut ticket, mut headers) = match self.produce(&topic, &record, ticket, headers) {
            Ok(()) => return Ok(()),
            Err((RDKafkaErrorCode::QueueFull, ticket, headers)) => (ticket, headers),
            Err((code, ticket, _)) => return Err(self.refuse(ticket, record.topic, enqueued_us, code)),
        };
        let deadline = Instant::now() + self.message_timeout;
        loop {
            context.metrics.queue_full();
            context.space_waiters.fetch_add(1, Ordering::SeqCst);
            let space = context.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            // Retried after registering, so a delivery between the failed attempt and the wait
            // is not missed.
            match self.produce(&topic, &record, ticket, headers) {
                Ok(()) => {
                    context.space_waiters.fetch_sub(1, Ordering::SeqCst);
                    return Ok(());
                }
                Err((RDKafkaErrorCode::QueueFull, returned, returned_headers)) => {
                    (ticket, headers) = (returned, returned_headers);
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        context.space_waiters.fetch_sub(1, Ordering::SeqCst);
                        return Err(self.refuse(ticket, record.topic, enqueued_us, RDKafkaErrorCode::QueueFull));
                    }
                    // Woken by the next delivery report. librdkafka frees a reported message's
                    // queue space only after its report, so when the last report has already
                    // come there is no next one to wait for: look again after a short while.
                    let _ = tokio::time::timeout(left.min(QUEUE_FULL_RECHECK), space).await;
                    context.space_waiters.fetch_sub(1, Ordering::SeqCst);
                }
                Err((code, ticket, _)) => {
                    context.space_waiters.fetch_sub(1, Ordering::SeqCst);
                    return Err(self.refuse(ticket, record.topic, enqueued_us, code));
                }
            }
        }
    }

    /// Hands one message to librdkafka, which copies its key and value; on success librdkafka
    /// owns the ticket (handed back in the delivery report) and the headers. On failure both
    /// come back with the error, as rdkafka's `BaseProducer::send` does, which this replaces
    /// only to name the topic by handle (see [`crate::kafka::topic`]).
    fn produce(
        &self,
        topic: &Topic,
        record: &ProduceRecord<'_>,
        ticket: Ticket,
        headers: Option<OwnedHeaders>,
    ) -> Result<(), (RDKafkaErrorCode, Ticket, Option<OwnedHeaders>)> {
        fn bytes(field: Option<&[u8]>) -> (*mut std::ffi::c_void, usize) {
            field.map_or((std::ptr::null_mut(), 0), |b| (b.as_ptr().cast_mut().cast(), b.len()))
        }
        let (value, value_len) = bytes(record.payload);
        let (key, key_len) = bytes(record.key);
        let opaque = ticket.into_ptr();
        // rdkafka keeps `OwnedHeaders::ptr` to itself; `as_borrowed` is that same native pointer
        // cast to a reference (rdkafka 0.39, message.rs), so this recovers it. The test
        // `kafka_pool::a_message_keeps_its_key_value_partition_and_headers` reads headers back.
        let headers_ptr = headers.as_ref().map_or(std::ptr::null_mut(), |h| {
            std::ptr::from_ref(h.as_borrowed()).cast_mut().cast::<rd::rd_kafka_headers_t>()
        });
        use rd::rd_kafka_vtype_t::*;
        // SAFETY: the client and the topic handle are alive for the call (`self` owns both); the
        // key and value are valid for their lengths and copied (`RD_KAFKA_MSG_F_COPY`); each
        // variadic argument has the C type its tag announces, in the order rdkafka's own
        // `BaseProducer::send` passes them.
        let error = unsafe {
            rd::rd_kafka_producev(
                self.producer.client().native_ptr(),
                RD_KAFKA_VTYPE_RKT,
                topic.handle.as_ptr(),
                RD_KAFKA_VTYPE_PARTITION,
                record.partition.unwrap_or(PARTITION_UNASSIGNED),
                RD_KAFKA_VTYPE_MSGFLAGS,
                rd::RD_KAFKA_MSG_F_COPY,
                RD_KAFKA_VTYPE_VALUE,
                value,
                value_len,
                RD_KAFKA_VTYPE_KEY,
                key,
                key_len,
                RD_KAFKA_VTYPE_OPAQUE,
                opaque,
                RD_KAFKA_VTYPE_HEADERS,
                headers_ptr,
                RD_KAFKA_VTYPE_END,
            )
        };
        if error == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            // librdkafka now owns the headers (and frees them with the message).
            std::mem::forget(headers);
            Ok(())
        } else {
            // SAFETY: librdkafka refused the message, so the opaque is still ours, exactly once.
            let ticket = unsafe { Ticket::from_ptr(opaque) };
            Err((error.into(), ticket, headers))
        }
    }

    /// Takes one in-flight slot, waiting for a delivery report while `max_in_flight`
    /// messages are unreported.
    async fn admit(&self, context: &DeliveryContext) {
        let max = u64::from(self.max_in_flight);
        loop {
            if context.try_admit(max) {
                return;
            }
            context.space_waiters.fetch_add(1, Ordering::SeqCst);
            let space = context.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            // Re-check after registering, so a delivery in between is not missed.
            if context.in_flight() >= max {
                space.await;
            }
            context.space_waiters.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Undoes the bookkeeping of a message librdkafka would not take, and completes its ticket
    /// with the error.
    fn refuse(&self, ticket: Ticket, topic: &str, enqueued_us: u64, code: RDKafkaErrorCode) -> OnexError {
        let context = self.producer.context();
        context.ages.remove(enqueued_us);
        if let Some(sent) = ticket.sent() {
            // `failed` also takes the message out of the queue depth `enqueued` added it to.
            context.metrics.failed(&sent.topic);
        }
        context.release();
        let error = delivery_error(topic, &KafkaError::MessageProduction(code));
        ticket.complete(Err(error.clone()));
        error
    }

    fn quarantined_error(&self) -> OnexError {
        OnexError::new(
            ErrorCode::IntegrationServiceError,
            format!("Kafka producer {} is quarantined after a fatal error", self.state.id),
        )
        .with_detail("reason", self.state.fatal_reason().unwrap_or_default())
    }

    /// Waits (blocking) until every queued message is reported or `timeout` passes. Returns
    /// the number still unreported.
    pub(crate) fn flush_blocking(&self, timeout: Duration) -> u32 {
        if self.in_flight() == 0 {
            return 0;
        }
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(producer = %self.state.id, "flush did not complete: {e}");
        }
        // Delivery callbacks run on the poll thread; give the last ones a moment to land.
        let settle = Instant::now() + Duration::from_millis(200);
        while self.in_flight() > 0 && Instant::now() < settle {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.in_flight()
    }

    /// One watchdog pass: librdkafka reports message timeouts late when the broker vanished
    /// (measured: up to 3× `message.timeout.ms` with idempotence), so messages still
    /// unreported after the message timeout are purged from librdkafka's queues, which reports
    /// them at once as `PurgeQueue` (mapped to `OPERATION_TIMEOUT`). Only queued messages are
    /// purged, never in-flight ones, so an acknowledgement is never voided.
    pub(crate) fn expire_overdue(&self) -> bool {
        let context = self.producer.context();
        if !context.ages.any_older_than(context.metrics.now_us(), self.message_timeout) {
            return false;
        }
        tracing::warn!(producer = %self.state.id, "messages outlived the message timeout; purging queued messages");
        self.producer.purge(PurgeConfig::default().queue().non_blocking());
        true
    }

    /// Runs [`ManagedProducer::expire_overdue`] every quarter second while the producer lives.
    /// Without a tokio runtime there is no watchdog (librdkafka's own timeout still applies).
    pub(crate) fn spawn_watchdog(producer: &Arc<ManagedProducer>) {
        if producer.message_timeout >= UnreportedAges::HORIZON - Duration::from_secs(1) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let weak = Arc::downgrade(producer);
        runtime.spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(250));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(producer) = weak.upgrade() else { return };
                if producer.closed.load(Ordering::Acquire) && producer.in_flight() == 0 {
                    return;
                }
                producer.expire_overdue();
            }
        });
    }

    /// Refuses new messages from now on.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Fetches cluster metadata (blocking) to prove the brokers answer.
    pub(crate) fn probe_blocking(&self, timeout: Duration) -> Result<usize, OnexError> {
        self.producer.client().fetch_metadata(None, timeout).map(|metadata| metadata.brokers().len()).map_err(|e| {
            OnexError::new(ErrorCode::IntegrationServiceUnavailable, "Kafka brokers did not answer a metadata request")
                .with_source(e)
        })
    }

    #[cfg(test)]
    pub(crate) fn inject_fatal_error(&self) {
        let reason = std::ffi::CString::new("injected by a test").expect("no NUL");
        // SAFETY: the producer handle is alive for the duration of the call; librdkafka copies
        // the reason.
        unsafe {
            rdkafka::bindings::rd_kafka_test_fatal_error(
                self.producer.client().native_ptr(),
                rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                reason.as_ptr(),
            );
        }
    }
}

impl Drop for ManagedProducer {
    fn drop(&mut self) {
        // librdkafka purges whatever is still queued when the handle is destroyed; flush first so
        // a pool dropped without `shutdown` still loses nothing within the message timeout.
        let left = self.flush_blocking(self.message_timeout);
        if left > 0 {
            tracing::error!(producer = %self.state.id, left, "producer dropped with undelivered messages");
        }
        self.topics.clear();
    }
}

impl std::fmt::Debug for ManagedProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedProducer")
            .field("id", &self.state.id)
            .field("in_flight", &self.in_flight())
            .field("quarantined", &self.state.is_quarantined())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_tell_overdue_messages_apart() {
        const S: u64 = 1_000_000;
        let ages = UnreportedAges::new();
        ages.add(0);
        let timeout = Duration::from_secs(5);
        assert!(!ages.any_older_than(4 * S, timeout));
        assert!(ages.any_older_than(5_500_000, timeout));
        ages.remove(0);
        assert!(!ages.any_older_than(6 * S, timeout));
        ages.add(10 * S);
        assert!(!ages.any_older_than(12 * S, timeout));
        assert!(ages.any_older_than(16 * S, timeout));
        assert!(!ages.any_older_than(16 * S, UnreportedAges::HORIZON));
    }

    fn pending() -> Arc<Pending> {
        Arc::new(Pending { sent: Sent { enqueued_us: 0, topic: Arc::default(), bytes: 0 }, reply: Reply::default() })
    }

    #[test]
    fn a_ticket_of_a_message_sent_alone_crosses_librdkafka() {
        let pending = pending();
        let ptr = Ticket::Alone(Arc::clone(&pending)).into_ptr();
        assert_eq!(ptr.addr() & 1, 0, "untagged");
        // SAFETY: `ptr` came from `into_ptr` just above and is taken back once.
        let ticket = unsafe { Ticket::from_ptr(ptr) };
        assert!(matches!(&ticket, Ticket::Alone(p) if Arc::ptr_eq(p, &pending)));
        ticket.complete(Ok(Delivered { partition: 1, offset: 2 }));
        assert_eq!(Arc::strong_count(&pending), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_report_stored_while_the_future_waits_wakes_it() {
        // One deadline for all rounds: a future the report does not wake would sit until then.
        let rounds = async {
            for _ in 0..1_000 {
                let pending = pending();
                let mut future = DeliveryFuture { pending: Arc::clone(&pending) };
                assert!(futures::poll!(&mut future).is_pending());
                let report = tokio::spawn(async move { pending.reply.send(Ok(Delivered { partition: 2, offset: 7 })) });
                assert_eq!(future.await.unwrap(), Delivered { partition: 2, offset: 7 });
                report.await.unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(5), rounds).await.expect("every future woken by its report");
    }

    #[tokio::test]
    async fn a_report_stored_before_the_first_poll_is_ready_at_once() {
        let pending = pending();
        let future = DeliveryFuture { pending: Arc::clone(&pending) };
        pending.reply.send(Err(OnexError::new(ErrorCode::IntegrationServiceError, "refused")));
        drop(pending);
        let outcome = futures::poll!(future);
        assert!(matches!(outcome, Poll::Ready(Err(e)) if e.code() == ErrorCode::IntegrationServiceError));
    }
}
