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
//!
//! Split as rdkafka splits its producer: [`record`] is what a caller sends, [`ticket`] what
//! travels with a message and comes back as its outcome, [`accounting`] the counters and
//! flags the delivery reports keep, and [`ffi`] the unsafe librdkafka calls; this module
//! holds the send path that ties them together.

mod accounting;
mod ffi;
mod identity;
mod record;
mod ticket;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{Producer, PurgeConfig, ThreadedProducer};
use tokio::sync::Notify;

use self::accounting::{DeliveryContext, ProducerState, UnreportedAges};
use self::identity::IdentityWatch;
pub use self::record::{ProduceRecord, headers};
use self::ticket::Tickets;
pub use self::ticket::{Delivered, DeliveryFuture};
pub(crate) use self::ticket::{Sent, Ticket};
use crate::error::{ErrorCode, OnexError};
use crate::kafka::batch::BatchState;
use crate::kafka::error::delivery_error;
use crate::kafka::metrics::PoolMetrics;
use crate::kafka::topic::{Topic, TopicCache};
use crate::sanitize::sanitize_message;

/// How long a send that found librdkafka's queue full waits for a delivery report before it
/// looks again (see `enqueue_ticket`).
const QUEUE_FULL_RECHECK: Duration = Duration::from_millis(5);

/// A librdkafka producer with bounded in-flight messages.
pub(crate) struct ManagedProducer {
    /// Emptied in `Drop` before `producer` goes: librdkafka wants topic handles released before
    /// their client.
    topics: TopicCache,
    /// The records of messages sent alone.
    tickets: Tickets,
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
        identity_stall_limit: Duration,
        metrics: Arc<PoolMetrics>,
    ) -> Result<Self, OnexError> {
        let idempotent = client.get("enable.idempotence") == Some("true");
        let state = Arc::new(ProducerState {
            id: id.clone(),
            quarantined: AtomicBool::new(false),
            fatal_reason: Mutex::new(None),
            errors: AtomicU64::new(0),
            suspect: AtomicBool::new(false),
            refused: AtomicBool::new(false),
            refusal: Mutex::new(None),
        });
        let context = DeliveryContext {
            metrics,
            admissions: CachePadded::default(),
            released: CachePadded::default(),
            state: Arc::clone(&state),
            space_waiters: AtomicUsize::new(0),
            space: Notify::new(),
            ages: UnreportedAges::new(),
            identity: idempotent.then(|| IdentityWatch::new(identity_stall_limit)),
        };
        let mut client = client.clone();
        client.set("client.id", client.get("client.id").map_or(id.clone(), str::to_owned));
        if idempotent {
            client.set("statistics.interval.ms", identity::STATISTICS_INTERVAL.as_millis().to_string());
        }
        let producer = client.create_with_context(context).map_err(|e| {
            OnexError::new(ErrorCode::ConfigurationError, format!("cannot create Kafka producer {id}")).with_source(e)
        })?;
        Ok(Self {
            topics: TopicCache::default(),
            tickets: Tickets::default(),
            producer,
            state,
            max_in_flight,
            message_timeout,
            closed: AtomicBool::new(false),
        })
    }

    /// Whether the producer hit a fatal error (librdkafka refuses all further work on it then).
    /// The first time it is seen, the producer is quarantined and the reason kept.
    #[inline]
    pub(crate) fn is_quarantined(&self) -> bool {
        if self.state.is_quarantined() {
            return true;
        }
        // Looked at before it is cleared: a plain load on every message (inline, as it is
        // asked twice per message), the read-modify-write only after an error event.
        self.state.suspect.load(Ordering::Acquire) && self.check_suspect()
    }

    #[cold]
    fn check_suspect(&self) -> bool {
        if !self.state.suspect.swap(false, Ordering::AcqRel) {
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
    ///
    /// A plain function returning `enqueue_ticket`'s future: as an `async fn` it would hold
    /// the record and headers once more.
    pub(crate) fn enqueue<'a>(
        &'a self,
        record: ProduceRecord<'a>,
        headers: Option<OwnedHeaders>,
        want_report: bool,
    ) -> impl Future<Output = Result<Option<DeliveryFuture>, OnexError>> + Send + 'a {
        self.enqueue_ticket(record, headers, move |sent| {
            let pending = self.tickets.claim(sent);
            let receiver = want_report.then(|| DeliveryFuture::new(pending.share()));
            Ok((Ticket::Alone(pending), receiver))
        })
    }

    /// Enqueues `record` as message `index` of `batch`.
    pub(crate) async fn enqueue_in(
        &self,
        batch: &Arc<BatchState>,
        index: usize,
        record: ProduceRecord<'_>,
        headers: Option<OwnedHeaders>,
    ) -> Result<(), OnexError> {
        self.enqueue_ticket(record, headers, |sent| batch.ticket(index, sent).map(|slot| (Ticket::InBatch(slot), ())))
            .await
    }

    /// Admits `record`, makes its ticket (and what the caller keeps of it, returned once the
    /// message is enqueued) and hands both to librdkafka, waiting while the queue is full. A
    /// refused message's ticket is completed with the error returned.
    async fn enqueue_ticket<R>(
        &self,
        record: ProduceRecord<'_>,
        headers: Option<OwnedHeaders>,
        ticket: impl FnOnce(Sent) -> Result<(Ticket, R), OnexError>,
    ) -> Result<R, OnexError> {
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
        // The waits are boxed, here and below: inline, their futures (a `Notified`, a timer)
        // would enlarge every send's future, which a node's request holds while it waits for
        // the report.
        if !context.try_admit(u64::from(self.max_in_flight)) {
            Box::pin(self.admit(context)).await;
        }
        let enqueued_us = context.metrics.now_us();
        let (ticket, kept) = match ticket(Sent { enqueued_us, topic: topic.counters, bytes }) {
            Ok(made) => made,
            Err(e) => {
                context.release();
                return Err(e);
            }
        };
        context.metrics.enqueued();
        context.ages.add(enqueued_us);
        // Fast path: no waiter registration (a mutex inside `Notify`) unless the queue is full,
        // so delivery reports only wake anyone while someone really waits.
        let (ticket, headers) = match self.produce(&topic, &record, ticket, headers) {
            Ok(()) => return Ok(kept),
            Err((RDKafkaErrorCode::QueueFull, ticket, headers)) => (ticket, headers),
            Err((code, ticket, _)) => return Err(self.refuse(ticket, record.topic, enqueued_us, code)),
        };
        Box::pin(self.wait_for_room(&topic, &record, ticket, headers, enqueued_us)).await.map(|()| kept)
    }

    /// Retries a message librdkafka's full queue refused, each time a delivery report frees
    /// room, until `message_timeout`; past it the message is refused.
    async fn wait_for_room(
        &self,
        topic: &Topic,
        record: &ProduceRecord<'_>,
        mut ticket: Ticket,
        mut headers: Option<OwnedHeaders>,
        enqueued_us: u64,
    ) -> Result<(), OnexError> {
        let context = self.producer.context();
        let deadline = Instant::now() + self.message_timeout;
        loop {
            context.metrics.queue_full();
            context.space_waiters.fetch_add(1, Ordering::SeqCst);
            let space = context.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            // Retried after registering, so a delivery between the failed attempt and the wait
            // is not missed.
            match self.produce(topic, record, ticket, headers) {
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
            // SAFETY: the topic's counters came from this context's metrics (`TopicCache::get`).
            context.metrics.failed(unsafe { context.metrics.counters(sent.topic) });
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
    ///
    /// Messages are purged at once, whatever their age, while the broker refuses the connection
    /// itself (authentication or TLS, see `ProducerState::refusal`): librdkafka would only keep
    /// retrying, and the sender learns why from the delivery error.
    pub(crate) fn expire_overdue(&self) -> bool {
        let context = self.producer.context();
        if let Some((code, _)) = self.state.refusal()
            && self.in_flight() > 0
        {
            tracing::warn!(producer = %self.state.id, "the broker refuses the connection ({code}); failing queued messages");
            self.producer.purge(PurgeConfig::default().queue().non_blocking());
            return true;
        }
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

    /// Fetches cluster metadata (blocking) to prove the brokers answer. Asks in short slices
    /// so that a broker refusing the connection (authentication, TLS) is reported as such as
    /// soon as librdkafka says so, not as a timeout at the end.
    pub(crate) fn probe_blocking(&self, timeout: Duration) -> Result<usize, OnexError> {
        const SLICE: Duration = Duration::from_millis(100);
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.producer.client().fetch_metadata(None, left.min(SLICE)) {
                Ok(metadata) => {
                    self.state.connection_works();
                    return Ok(metadata.brokers().len());
                }
                Err(e) => {
                    if let Some((code, reason)) = self.state.refusal() {
                        let what = if code == "SSL" { "the TLS handshake failed" } else { "authentication failed" };
                        return Err(OnexError::new(
                            ErrorCode::IntegrationServiceError,
                            format!("the Kafka broker refused the connection, {what}: {reason}"),
                        )
                        .with_detail("kafka_error", code)
                        .with_detail("retriable", false));
                    }
                    if Instant::now() >= deadline {
                        return Err(OnexError::new(
                            ErrorCode::IntegrationServiceUnavailable,
                            "Kafka brokers did not answer a metadata request",
                        )
                        .with_source(e));
                    }
                }
            }
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
