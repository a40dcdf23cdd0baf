//! The accounting of one producer: in-flight slots, the ages of unreported messages, the
//! error and fatal-error flags, and the librdkafka context whose callbacks keep them.
//!
//! Invariants:
//! - the sending side and the delivery-report thread write disjoint cache lines: in-flight
//!   and age accounting keep one monotonic counter per side (in flight = admitted − released),
//!   so a message costs no cache-line transfer between them beyond librdkafka's own;
//! - a slot is released exactly once per admitted message, by its delivery report or by the
//!   refusal of its send, and before its ticket is completed, so whoever sees the outcome may
//!   rely on the message no longer being in flight;
//! - a release wakes waiting senders whenever any are registered (`SeqCst` on both sides), so
//!   a sender that registered and then found no slot is never left waiting.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::ProducerContext;
use tokio::sync::Notify;

use super::identity::IdentityWatch;
use super::ticket::{Delivered, Ticket};
use crate::kafka::error::{delivery_error, refused_error};
use crate::kafka::metrics::PoolMetrics;
use crate::sanitize::sanitize_message;

/// Lifecycle state of one producer, shared with its librdkafka callbacks.
#[derive(Debug)]
pub(crate) struct ProducerState {
    pub(crate) id: String,
    pub(super) quarantined: AtomicBool,
    pub(super) fatal_reason: Mutex<Option<String>>,
    pub(super) errors: AtomicU64,
    /// Set by every librdkafka error event: the next check asks librdkafka whether the
    /// error was fatal (so the send path does not ask on every message).
    pub(super) suspect: AtomicBool,
    /// Whether `refusal` holds a reason (read without the lock on every delivery report).
    pub(super) refused: AtomicBool,
    /// Why the broker last refused the connection itself (authentication, or the TLS
    /// handshake), as (librdkafka code name, sanitized reason); cleared by the next sign of a
    /// working connection (a delivery or a metadata answer). librdkafka only retries such a
    /// connection, so without this a message would wait for its whole timeout.
    pub(super) refusal: Mutex<Option<(&'static str, String)>>,
}

impl ProducerState {
    #[inline]
    pub(crate) fn is_quarantined(&self) -> bool {
        self.quarantined.load(Ordering::Acquire)
    }

    pub(crate) fn fatal_reason(&self) -> Option<String> {
        self.fatal_reason.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn error_count(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// The broker's last refusal of the connection, if no working connection came since.
    pub(crate) fn refusal(&self) -> Option<(&'static str, String)> {
        if !self.refused.load(Ordering::Acquire) {
            return None;
        }
        self.refusal.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn refuse(&self, code: &'static str, reason: String) {
        *self.refusal.lock().unwrap_or_else(|p| p.into_inner()) = Some((code, reason));
        self.refused.store(true, Ordering::Release);
    }

    /// A connection works (a delivery or a metadata answer came back).
    #[inline]
    pub(crate) fn connection_works(&self) {
        // Inline: a plain load on every delivery report, the rest only after a refusal.
        if self.refused.load(Ordering::Relaxed) {
            self.forget_refusal();
        }
    }

    #[cold]
    fn forget_refusal(&self) {
        self.refused.store(false, Ordering::Release);
        *self.refusal.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub(super) fn quarantine(&self, reason: String) {
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

    pub(super) fn new() -> Self {
        let buckets = || (0..Self::BUCKETS).map(|_| AtomicU64::new(0)).collect();
        Self { sent: buckets(), reported: buckets() }
    }

    fn slot(at_us: u64) -> usize {
        ((at_us / Self::BUCKET_US) % Self::BUCKETS as u64) as usize
    }

    /// A message enqueued at `at_us` (pool clock).
    pub(super) fn add(&self, at_us: u64) {
        self.sent[Self::slot(at_us)].fetch_add(1, Ordering::Relaxed);
    }

    /// The message enqueued at `at_us` was reported.
    pub(super) fn remove(&self, at_us: u64) {
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
    pub(super) fn any_older_than(&self, now_us: u64, age: Duration) -> bool {
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
pub(super) struct Admissions {
    /// Slots taken, ever (monotonic).
    pub(super) admitted: AtomicU64,
    /// The latest `released` count this side read. Never ahead of the real count, so judging
    /// the bound against it is conservative, and it spares the send path a read of the line
    /// the delivery thread keeps writing until the bound is near.
    released_seen: AtomicU64,
}

/// The librdkafka context: turns delivery reports into counters, in-flight slots and replies.
pub(crate) struct DeliveryContext {
    pub(super) metrics: Arc<PoolMetrics>,
    /// Written by senders only.
    pub(super) admissions: CachePadded<Admissions>,
    /// Slots returned by delivery reports (or refused sends), ever; written by the delivery
    /// thread. In flight = admitted − released, bounded by `max_in_flight`.
    pub(super) released: CachePadded<AtomicU64>,
    pub(super) state: Arc<ProducerState>,
    /// Senders waiting for a delivery (in-flight bound reached, or `QueueFull`); deliveries
    /// wake them.
    pub(super) space_waiters: AtomicUsize,
    pub(super) space: Notify,
    pub(super) ages: UnreportedAges,
    /// Set for idempotent producers (the only ones that wait for a producer id).
    pub(super) identity: Option<IdentityWatch>,
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

    fn stats_raw(&self, statistics: &[u8]) {
        let Some(identity) = &self.identity else { return };
        if let Some(reason) = identity.observe(statistics, std::time::Instant::now())
            && !self.state.is_quarantined()
        {
            tracing::error!(producer = %self.state.id, "{reason}; quarantining");
            self.state.quarantine(reason);
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
            Some(code) if refusal_kind(code, &reason).is_some() => {
                let name = refusal_kind(code, &reason).unwrap_or("SSL");
                tracing::warn!(producer = %self.state.id, "the Kafka broker refused the connection ({name}): {reason}");
                self.state.refuse(name, reason);
            }
            _ => tracing::warn!(producer = %self.state.id, "librdkafka error {error}: {reason}"),
        }
    }
}

/// Whether librdkafka's error `code` with `reason` says the broker refused the connection
/// itself, and how: `Authentication` (SASL) or `SSL` (our side of the TLS handshake failed, or
/// the server sent a TLS alert, which is how a server refuses a missing or unknown client
/// certificate under TLS 1.3: the client's handshake has already finished, so librdkafka sees
/// the alert on its first read and reports a transport failure).
fn refusal_kind(code: RDKafkaErrorCode, reason: &str) -> Option<&'static str> {
    match code {
        RDKafkaErrorCode::Authentication => Some("Authentication"),
        RDKafkaErrorCode::SSL => Some("SSL"),
        RDKafkaErrorCode::BrokerTransportFailure if reason.contains("SSL routines::") && reason.contains(" alert ") => {
            Some("SSL")
        }
        _ => None,
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Ticket;

    fn delivery(&self, result: &DeliveryResult<'_>, ticket: Ticket) {
        // SAFETY: every record's topic was named by this context's metrics (`TopicCache::get`).
        let sent = ticket.sent().map(|sent| (sent, unsafe { self.metrics.counters(sent.topic) }));
        if let Some((sent, _)) = sent {
            self.ages.remove(sent.enqueued_us);
        }
        let outcome = match result {
            Ok(message) => {
                if let Some((sent, topic)) = sent {
                    match super::ffi::latency_us(message) {
                        Some(latency_us) => {
                            self.metrics.delivered_after(topic, sent.bytes, sent.enqueued_us, latency_us);
                        }
                        None => self.metrics.delivered(topic, sent.bytes, sent.enqueued_us),
                    }
                }
                self.state.connection_works();
                Ok(Delivered { partition: message.partition(), offset: message.offset() })
            }
            Err((error, message)) => {
                if let Some((_, topic)) = sent {
                    self.metrics.failed(topic);
                }
                self.quarantine_if_identity_lost(error);
                match (error.rdkafka_error_code(), self.state.refusal()) {
                    // Purged by the watchdog because the broker refuses the connection: say so.
                    (Some(RDKafkaErrorCode::PurgeQueue), Some((code, reason))) => {
                        Err(refused_error(message.topic(), code, &reason))
                    }
                    _ => Err(delivery_error(message.topic(), error)),
                }
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
    /// Quarantines the producer when the broker no longer accepts its idempotent identity
    /// (fenced by a newer producer with the same id, or its epoch refused). librdkafka keeps
    /// such a non-transactional producer open and fails every later message the same way,
    /// so only a new producer, which asks for a new identity, can deliver again. Seen with a
    /// broker that restarted without its producer state and handed the old id to another
    /// producer.
    fn quarantine_if_identity_lost(&self, error: &KafkaError) {
        let code = error.rdkafka_error_code();
        if !matches!(code, Some(RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch))
            || self.state.is_quarantined()
        {
            return;
        }
        let reason = format!("{code:?}: the broker refused the producer's idempotent identity");
        tracing::error!(producer = %self.state.id, "{reason}; quarantining");
        self.state.quarantine(reason);
    }

    /// Messages admitted and not yet reported.
    pub(super) fn in_flight(&self) -> u64 {
        let released = self.released.load(Ordering::SeqCst);
        self.admissions.admitted.load(Ordering::SeqCst).saturating_sub(released)
    }

    /// Takes an in-flight slot if fewer than `max` are taken.
    pub(super) fn try_admit(&self, max: u64) -> bool {
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
    pub(super) fn release(&self) {
        self.released.fetch_add(1, Ordering::SeqCst);
        if self.space_waiters.load(Ordering::SeqCst) > 0 {
            self.space.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_told_from_other_failures() {
        use RDKafkaErrorCode as C;
        assert_eq!(refusal_kind(C::Authentication, "SASL authentication error"), Some("Authentication"));
        assert_eq!(refusal_kind(C::SSL, "SSL handshake failed"), Some("SSL"));
        let alert = "ssl://127.0.0.1:1/bootstrap: Receive failed: error:0A00045C:SSL routines::tlsv13 alert \
                     certificate required: SSL alert number 116";
        assert_eq!(refusal_kind(C::BrokerTransportFailure, alert), Some("SSL"));
        assert_eq!(refusal_kind(C::BrokerTransportFailure, "Connection refused"), None);
        assert_eq!(refusal_kind(C::AllBrokersDown, alert), None);
    }

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
}
