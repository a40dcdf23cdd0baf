//! [`GuardedPublisher`]: an [`EventPublisher`] behind a [`CircuitBreaker`], with the durable
//! [`Outbox`] as its queue.
//!
//! # What happens to one event
//!
//! - First the inner publisher admits it ([`EventPublisher::admit`]: the bus's per-caller
//!   rate limit). A refusal comes back at once and nothing is stored. An event is admitted
//!   once: the relay republishes queued events with [`EventPublisher::publish_admitted`], so a
//!   backlog drains at the broker's pace, not at the rate limit's.
//! - Closed, half open or disabled: the event is published through the breaker (which
//!   enforces `timeout_secs` and judges the outcome). Acknowledged: [`CircuitAction::Published`].
//! - Refused by the breaker (open, forced open, half open with every trial slot taken) or
//!   failed with a counted error, *with* graceful degradation and an outbox: the event is
//!   stored in the outbox before the publish returns ([`CircuitAction::Queued`]); if the
//!   outbox is full it is stored in the dead-letter table instead, with the reason
//!   [`crate::outbox::CAPACITY_EXCEEDED`] and the circuit state ([`CircuitAction::Dropped`]).
//!   Either way the publish returns `Ok`: the event is durable.
//! - The same *without* graceful degradation: `INTEGRATION_SERVICE_UNAVAILABLE` with the
//!   details `circuit_state` and `queued_events` (the outbox depth, 0 without an outbox).
//! - The same with graceful degradation but *without* an outbox (no PostgreSQL): there is
//!   nowhere durable to keep the event, and an in-memory queue would lose it in a crash
//!   while the caller believed it accepted. So this is `INTEGRATION_SERVICE_UNAVAILABLE`
//!   too (detail `outbox: "none"`): the caller keeps the event and decides.
//! - An error the breaker's classifier ignores (the caller's fault, e.g. `VALIDATION_ERROR`)
//!   comes back unchanged and nothing is stored; an event the outbox refuses (it cannot be
//!   serialized, holds a NUL character, or is larger than the outbox limit) is that
//!   outbox `VALIDATION_ERROR`, at once: no later retry could succeed.
//! - The outbox itself failing (PostgreSQL down) is returned as its error, with the details
//!   `circuit_state` and `publish_error`: the event was neither published nor stored.
//!
//! The dead-letter setting `dead_letter_enabled` does not change the overflow: the outbox
//! always dead-letters an event it cannot hold, because discarding an accepted event is
//! exactly the loss this type exists to prevent.
//!
//! # The relay
//!
//! [`GuardedPublisher::start`] spawns one background task (it needs a tokio runtime) that
//! republishes the outbox through the inner publisher with [`Outbox::drain`] (which stops a
//! pass by itself after `max_consecutive_failures` failed publishes in a row):
//! - at start, so a process restarted after a crash sends what its predecessor queued;
//! - on every transition to closed or disabled ([`CircuitBreaker::subscribe`]);
//! - after an event was queued while the circuit was closed (a single failure does not
//!   open it), and again after a drain in which a publish failed or that could not reach
//!   the database, each time `relay_retry` later (default `recovery_timeout_secs`), as long as
//!   the circuit is closed or disabled.
//!
//! The relay publishes straight through the inner publisher, not through the breaker: its
//! failures are the outbox's to count (`attempts`), and its order is the outbox's
//! (per correlation id, in enqueue order). Delivery is at least once: a crash between the
//! acknowledgement and the commit republishes an event with its original `event_id`.
//! Events published directly while the relay still drains may overtake queued ones.
//!
//! The same task runs the outbox maintenance ([`Outbox::run_maintenance`]) at start and
//! every [`crate::outbox::DEFAULT_MAINTENANCE_INTERVAL`] (300 s): dead letters older than
//! their TTL (24 h) or beyond the cap (500, oldest first) and published rows past their
//! retention are deleted.
//!
//! Dropping the publisher (or [`GuardedPublisher::close`]) stops the relay; a pass cut
//! short rolls back and its rows go out later.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Notify, OnceCell, broadcast, watch};
use tokio::task::JoinHandle;

use super::{BreakerMetrics, CallError, CircuitBreaker};
use crate::error::{ErrorCode, OnexError};
use crate::event::OnexEvent;
use crate::event_bus::EventPublisher;
use crate::models::circuit_breaker::{CircuitAction, CircuitBreakerMetrics, CircuitBreakerState};
use crate::node::BoxFuture;
use crate::outbox::{DrainReport, Enqueued, Outbox, OutboxStats};

/// Rows per relay pass.
const RELAY_BATCH: usize = 100;

/// A snapshot of a [`GuardedPublisher`]: the breaker's counters and the queue's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GuardedMetrics {
    /// The breaker's counters.
    pub breaker: BreakerMetrics,
    /// Events waiting in the outbox (0 without an outbox).
    pub queued_events: u64,
    /// Rows in the dead-letter table (0 without an outbox).
    pub dead_letter_events: u64,
    /// Events this publisher dead-lettered because the outbox was full.
    pub dropped_events: u64,
    /// Events this publisher stored in the outbox.
    pub enqueued_events: u64,
    /// Events the relay republished.
    pub republished_events: u64,
    /// Why the outbox figures could not be read (they are then 0).
    pub outbox_error: Option<String>,
}

impl GuardedMetrics {
    /// The shared metrics model: the breaker's counters with the queue figures filled in.
    pub fn to_model(&self) -> CircuitBreakerMetrics {
        CircuitBreakerMetrics {
            queued_events: self.queued_events,
            dead_letter_events: self.dead_letter_events,
            dropped_events: self.dropped_events,
            ..self.breaker.to_model()
        }
    }
}

#[derive(Default)]
struct Counters {
    enqueued: AtomicU64,
    dropped: AtomicU64,
    republished: AtomicU64,
}

struct Shared {
    inner: Arc<dyn EventPublisher>,
    breaker: Arc<CircuitBreaker>,
    outbox: Option<Outbox>,
    migrated: OnceCell<()>,
    counters: Counters,
    /// Something was queued while the circuit was closed: the relay schedules a pass.
    queued_while_closed: Notify,
    relay_retry: Duration,
}

impl Shared {
    /// Creates the outbox tables once per publisher (the migration is idempotent).
    async fn outbox(&self) -> Result<Option<&Outbox>, OnexError> {
        let Some(outbox) = &self.outbox else { return Ok(None) };
        self.migrated.get_or_try_init(|| async { crate::outbox::migrate(outbox.manager()).await.map(drop) }).await?;
        Ok(Some(outbox))
    }

    async fn drain(&self) -> Result<DrainReport, OnexError> {
        let Some(outbox) = self.outbox().await? else { return Ok(DrainReport::default()) };
        let report = outbox.drain(self.inner.as_ref(), RELAY_BATCH).await?;
        self.counters.republished.fetch_add(report.published as u64, Ordering::Relaxed);
        Ok(report)
    }
}

struct Relay {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// An [`EventPublisher`] that publishes through a [`CircuitBreaker`] and keeps what it cannot
/// publish in an [`Outbox`] (see the module documentation for every rule).
pub struct GuardedPublisher {
    shared: Arc<Shared>,
    relay: Mutex<Option<Relay>>,
}

impl std::fmt::Debug for GuardedPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedPublisher")
            .field("breaker", &self.shared.breaker)
            .field("outbox", &self.shared.outbox.is_some())
            .finish_non_exhaustive()
    }
}

impl GuardedPublisher {
    /// A publisher guarding `inner` with `breaker`, queueing into `outbox` when there is one.
    /// The relay is not running until [`GuardedPublisher::start`].
    pub fn new(inner: Arc<dyn EventPublisher>, breaker: Arc<CircuitBreaker>, outbox: Option<Outbox>) -> Self {
        let relay_retry = Duration::from_secs(breaker.config().recovery_timeout_secs.into());
        Self {
            shared: Arc::new(Shared {
                inner,
                breaker,
                outbox,
                migrated: OnceCell::new(),
                counters: Counters::default(),
                queued_while_closed: Notify::new(),
                relay_retry,
            }),
            relay: Mutex::new(None),
        }
    }

    /// Sets the wait before the relay retries a pass that failed or an event queued while the
    /// circuit was closed (default `recovery_timeout_secs`). Call before [`Self::start`].
    pub fn with_relay_retry(mut self, retry: Duration) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.relay_retry = retry.max(Duration::from_millis(10));
        }
        self
    }

    /// The breaker.
    pub fn breaker(&self) -> &Arc<CircuitBreaker> {
        &self.shared.breaker
    }

    /// The outbox, if any.
    pub fn outbox(&self) -> Option<&Outbox> {
        self.shared.outbox.as_ref()
    }

    /// The breaker's state.
    pub fn state(&self) -> CircuitBreakerState {
        self.shared.breaker.state()
    }

    /// Starts the relay task (idempotent; a no-op without an outbox). Must be called inside a
    /// tokio runtime; outside one it returns a `CONFIGURATION_ERROR`.
    pub fn start(&self) -> Result<(), OnexError> {
        if self.shared.outbox.is_none() {
            return Ok(());
        }
        let mut relay = self.relay.lock().unwrap_or_else(PoisonError::into_inner);
        if relay.is_some() {
            return Ok(());
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            OnexError::configuration("the outbox relay needs a tokio runtime: start it from inside one")
        })?;
        let (stop, stopped) = watch::channel(false);
        // Subscribed before the task runs, so no transition after start() is missed.
        let transitions = self.shared.breaker.subscribe();
        let task = runtime.spawn(run_relay(self.shared.clone(), transitions, stopped));
        *relay = Some(Relay { stop, task });
        Ok(())
    }

    /// Whether the relay task is running.
    pub fn is_relaying(&self) -> bool {
        self.relay.lock().unwrap_or_else(PoisonError::into_inner).as_ref().is_some_and(|r| !r.task.is_finished())
    }

    /// Stops the relay and waits for it; a pass in progress is cut short and rolls back.
    pub async fn close(&self) {
        let relay = self.relay.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(relay) = relay {
            let _ = relay.stop.send(true);
            relay.task.abort();
            let _ = relay.task.await;
        }
    }

    /// Runs one drain of the outbox now, in the caller's task (independently of the relay).
    pub async fn drain_now(&self) -> Result<DrainReport, OnexError> {
        self.shared.drain().await
    }

    /// Publishes `event` (see the module documentation) and says what became of it:
    /// published, queued or dead-lettered (dropped). Every other outcome is an error.
    pub async fn publish_with_action(&self, event: OnexEvent) -> Result<CircuitAction, OnexError> {
        self.shared.inner.admit(&event)?;
        self.publish_admitted_with_action(event).await
    }

    /// [`GuardedPublisher::publish_with_action`] of an event the inner publisher admitted.
    async fn publish_admitted_with_action(&self, event: OnexEvent) -> Result<CircuitAction, OnexError> {
        let shared = &*self.shared;
        // Kept only when it could be queued: the clone costs one copy of the payload per publish.
        let keep = shared.outbox.is_some() && shared.breaker.config().graceful_degradation;
        let fallback = keep.then(|| event.clone());
        // `publish` is called inside the future, which the breaker polls only once it admitted
        // the call: a publisher may start work when called, before its future is awaited.
        let refused = match shared.breaker.call(async { shared.inner.publish_admitted(event).await }).await {
            Ok(()) => return Ok(CircuitAction::Published),
            Err(CallError::Failed { error, counted: false, .. }) => return Err(error),
            Err(refused) => refused,
        };
        let state = match &refused {
            CallError::Rejected(rejected) => rejected.state,
            CallError::Failed { state, .. } => *state,
        };
        match fallback {
            Some(event) => self.enqueue(event, state, refused).await,
            None => Err(self.unavailable(refused).await),
        }
    }

    async fn enqueue(
        &self,
        event: OnexEvent,
        state: CircuitBreakerState,
        refused: CallError,
    ) -> Result<CircuitAction, OnexError> {
        let shared = &*self.shared;
        let stored = match shared.outbox().await {
            Ok(Some(outbox)) => outbox.enqueue(&event, state.as_str()).await,
            Ok(None) => unreachable_outbox(),
            Err(e) => Err(e),
        };
        let stored = stored.map_err(|e| {
            if e.code() == ErrorCode::ValidationError {
                return e;
            }
            e.with_detail("circuit_state", state.as_str()).with_detail("publish_error", refused.to_string())
        })?;
        match stored {
            Enqueued::Queued { .. } | Enqueued::Duplicate => {
                shared.counters.enqueued.fetch_add(1, Ordering::Relaxed);
                if matches!(shared.breaker.state(), CircuitBreakerState::Closed | CircuitBreakerState::Disabled) {
                    shared.queued_while_closed.notify_one();
                }
                Ok(CircuitAction::Queued)
            }
            Enqueued::DeadLettered { .. } => {
                shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(target: "onex::circuit_breaker", event_id = %event.event_id, circuit_state = %state,
                    "outbox full: event dead-lettered");
                Ok(CircuitAction::Dropped)
            }
        }
    }

    async fn unavailable(&self, refused: CallError) -> OnexError {
        let queued = match &self.shared.outbox {
            Some(outbox) => outbox.depth().await.unwrap_or(0),
            None => 0,
        };
        let degrading = self.shared.breaker.config().graceful_degradation;
        let error = refused.into_error();
        let error = if error.code() == ErrorCode::IntegrationServiceUnavailable {
            error
        } else {
            OnexError::new(ErrorCode::IntegrationServiceUnavailable, error.message().to_owned())
                .with_detail("cause_code", error.code().as_str())
        };
        let error = error.with_detail("queued_events", queued);
        if degrading {
            // Degradation asked for, but with no outbox the event could only be kept in
            // memory, and lost in a crash: refuse instead.
            error.with_detail("outbox", "none")
        } else {
            error
        }
    }

    /// The breaker's counters and the outbox figures (read from the database; on a database
    /// error they are 0 and `outbox_error` says why).
    pub async fn metrics(&self) -> GuardedMetrics {
        let shared = &*self.shared;
        let (stats, outbox_error) = match shared.outbox().await {
            Ok(Some(outbox)) => match outbox.stats().await {
                Ok(stats) => (stats, None),
                Err(e) => (OutboxStats { depth: 0, dead_letters: 0 }, Some(e.to_string())),
            },
            Ok(None) => (OutboxStats { depth: 0, dead_letters: 0 }, None),
            Err(e) => (OutboxStats { depth: 0, dead_letters: 0 }, Some(e.to_string())),
        };
        GuardedMetrics {
            breaker: shared.breaker.metrics(),
            queued_events: stats.depth,
            dead_letter_events: stats.dead_letters,
            dropped_events: shared.counters.dropped.load(Ordering::Relaxed),
            enqueued_events: shared.counters.enqueued.load(Ordering::Relaxed),
            republished_events: shared.counters.republished.load(Ordering::Relaxed),
            outbox_error,
        }
    }

    /// Back to closed with the breaker's counters and this publisher's queue counters zeroed;
    /// the outbox keeps its events (the close makes the relay send them).
    pub fn reset(&self) {
        let counters = &self.shared.counters;
        for counter in [&counters.enqueued, &counters.dropped, &counters.republished] {
            counter.store(0, Ordering::Relaxed);
        }
        self.shared.breaker.reset();
    }
}

fn unreachable_outbox() -> Result<Enqueued, OnexError> {
    Err(OnexError::new(ErrorCode::InternalError, "the outbox vanished while queueing"))
}

impl EventPublisher for GuardedPublisher {
    /// `Ok` when the event was published, queued or dead-lettered (it is durable either way).
    fn publish(&self, event: OnexEvent) -> BoxFuture<'_, Result<(), OnexError>> {
        Box::pin(async move { self.publish_with_action(event).await.map(drop) })
    }

    fn admit(&self, event: &OnexEvent) -> Result<(), OnexError> {
        self.shared.inner.admit(event)
    }

    fn publish_admitted(&self, event: OnexEvent) -> BoxFuture<'_, Result<(), OnexError>> {
        Box::pin(async move { self.publish_admitted_with_action(event).await.map(drop) })
    }
}

impl Drop for GuardedPublisher {
    fn drop(&mut self) {
        if let Some(relay) = self.relay.get_mut().unwrap_or_else(PoisonError::into_inner).take() {
            let _ = relay.stop.send(true);
            relay.task.abort();
        }
    }
}

/// One outbox maintenance pass: dead letters past their TTL or beyond the cap, published
/// rows past their retention.
async fn purge(shared: &Shared) {
    let outcome = match shared.outbox().await {
        Ok(Some(outbox)) => outbox.run_maintenance().await,
        Ok(None) => return,
        Err(e) => Err(e),
    };
    if let Err(e) = outcome {
        tracing::warn!(target: "onex::circuit_breaker", error = %e, "outbox maintenance failed");
    }
}

fn relays_in(state: CircuitBreakerState) -> bool {
    matches!(state, CircuitBreakerState::Closed | CircuitBreakerState::Disabled)
}

async fn run_relay(
    shared: Arc<Shared>,
    mut transitions: broadcast::Receiver<crate::circuit_breaker::Transition>,
    mut stopped: watch::Receiver<bool>,
) {
    // Drain at start: what a previous process queued goes out without waiting for a transition.
    let mut retry_at = Some(tokio::time::Instant::now());
    let mut maintenance = tokio::time::interval(crate::outbox::DEFAULT_MAINTENANCE_INTERVAL);
    maintenance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let wake = async move {
            match retry_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let drain_now = tokio::select! {
            _ = stopped.changed() => return,
            _ = maintenance.tick() => {
                purge(&shared).await;
                false
            }
            () = wake => {
                let relaying = relays_in(shared.breaker.state());
                if !relaying {
                    // Due while the circuit is open: the next close triggers the drain.
                    retry_at = None;
                }
                relaying
            }
            () = shared.queued_while_closed.notified() => {
                retry_at.get_or_insert_with(|| tokio::time::Instant::now() + shared.relay_retry);
                false
            }
            received = transitions.recv() => match received {
                Ok(transition) => relays_in(transition.to) && relays_in(shared.breaker.state()),
                // Missed transitions: judge by the state now.
                Err(broadcast::error::RecvError::Lagged(_)) => relays_in(shared.breaker.state()),
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        if !drain_now {
            continue;
        }
        let started = std::time::Instant::now();
        match shared.drain().await {
            // A failed publish leaves its row, and every later row of its key, for later
            // (per-key order), even when the pass did not stop: retry then too.
            Ok(report) if report.failed == 0 => {
                if report.published > 0 {
                    tracing::info!(target: "onex::circuit_breaker", published = report.published,
                        elapsed_ms = started.elapsed().as_millis() as u64, "outbox drained");
                }
                retry_at = None;
            }
            Ok(report) => {
                tracing::warn!(target: "onex::circuit_breaker", published = report.published, failed = report.failed,
                    error = ?report.last_error.as_ref().map(ToString::to_string), "outbox relay publishes failed; will retry");
                retry_at = Some(tokio::time::Instant::now() + shared.relay_retry);
            }
            Err(e) => {
                tracing::warn!(target: "onex::circuit_breaker", error = %e, "outbox relay failed; will retry");
                retry_at = Some(tokio::time::Instant::now() + shared.relay_retry);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::models::circuit_breaker::CircuitBreakerConfig;

    /// Counts calls to `publish` (not polls) and answers with `result`.
    struct Fixed {
        calls: AtomicUsize,
        result: Result<(), OnexError>,
    }

    impl EventPublisher for Fixed {
        fn publish(&self, _event: OnexEvent) -> BoxFuture<'_, Result<(), OnexError>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let result = self.result.clone();
            Box::pin(async move { result })
        }
    }

    fn guarded(result: Result<(), OnexError>, degrade: bool) -> (GuardedPublisher, Arc<Fixed>) {
        let inner = Arc::new(Fixed { calls: AtomicUsize::new(0), result });
        let config = CircuitBreakerConfig {
            graceful_degradation: degrade,
            ..CircuitBreakerConfig::for_environment(crate::environment::Environment::Production)
        };
        let breaker = Arc::new(CircuitBreaker::new(config).unwrap());
        (GuardedPublisher::new(inner.clone(), breaker, None), inner)
    }

    fn event() -> OnexEvent {
        OnexEvent::new("test.guarded", "unit", Uuid::new_v4(), json!({}))
    }

    #[tokio::test]
    async fn a_closed_circuit_publishes() {
        let (guarded, inner) = guarded(Ok(()), true);
        assert_eq!(guarded.publish_with_action(event()).await.unwrap(), CircuitAction::Published);
        assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
        assert_eq!(guarded.metrics().await.breaker.successful_calls, 1);
    }

    #[tokio::test]
    async fn without_an_outbox_degradation_refuses_instead_of_keeping_in_memory() {
        let (guarded, inner) = guarded(Ok(()), true);
        guarded.breaker().force_open();
        let err = guarded.publish(event()).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::IntegrationServiceUnavailable);
        assert_eq!(err.details().get("circuit_state"), Some(&json!("forced_open")));
        assert_eq!(err.details().get("queued_events"), Some(&json!(0)));
        assert_eq!(err.details().get("outbox"), Some(&json!("none")));
        assert_eq!(inner.calls.load(Ordering::SeqCst), 0, "a refused call never reaches the publisher");
    }

    #[tokio::test]
    async fn a_counted_failure_without_degradation_keeps_its_cause() {
        let (guarded, _) = guarded(Err(OnexError::new(ErrorCode::IntegrationServiceError, "down")), false);
        let err = guarded.publish(event()).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::IntegrationServiceUnavailable);
        assert_eq!(err.details().get("cause_code"), Some(&json!("INTEGRATION_SERVICE_ERROR")));
        assert_eq!(err.details().get("circuit_state"), Some(&json!("closed")));
        assert!(err.details().get("outbox").is_none());
    }

    #[tokio::test]
    async fn the_callers_own_fault_comes_back_unchanged() {
        let (guarded, _) = guarded(Err(OnexError::validation("bad event")), true);
        let err = guarded.publish(event()).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::ValidationError);
        assert_eq!(guarded.metrics().await.breaker.failed_calls, 0);
    }

    #[tokio::test]
    async fn start_without_an_outbox_runs_no_relay() {
        let (guarded, _) = guarded(Ok(()), true);
        guarded.start().unwrap();
        assert!(!guarded.is_relaying());
        guarded.close().await;
    }
}
