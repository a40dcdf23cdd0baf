//! The collector task: every interval it reads the watched breakers (and their queues), the
//! latest error rates and the current event latency, and raises the alerts the rules call
//! for; between passes it listens to the breakers' transitions, so an opening raises its
//! critical alert at once rather than at the next pass.
//!
//! Invariants:
//! - The first pass runs as soon as the task starts; later ones every interval after the end of
//!   the previous one (a slow pass delays the next instead of queueing passes).
//! - A breaker's transitions are subscribed when it is registered, before the task sees it:
//!   no transition after registration is missed. A receiver that lagged reads the breaker's
//!   current state instead.
//! - Reading a guarded publisher's queue (a PostgreSQL query) is bounded by
//!   [`QUEUE_READ_TIMEOUT`]; a queue that could not be read is skipped for that pass.
//! - The task holds no lock across an await: aborting it (stop, drop) leaves every structure
//!   whole.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use futures::stream::{BoxStream, SelectAll};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::MissedTickBehavior;

use super::rules::{self, BreakerReading, QueueReading, Readings};
use super::{Inner, Subscription, Watched};
use crate::circuit_breaker::CircuitBreaker;
use crate::models::circuit_breaker::CircuitBreakerState;

/// Longest wait for a guarded publisher's queue figures in one pass.
pub const QUEUE_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Something a breaker did: the state it entered, or `None` when its receiver lagged.
type Change = (String, Arc<CircuitBreaker>, Option<CircuitBreakerState>);

/// Runs passes every `interval` and handles transitions until aborted.
pub(crate) async fn run(inner: Arc<Inner>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut changes: SelectAll<BoxStream<'static, Change>> = SelectAll::new();
    loop {
        for subscription in inner.take_subscriptions() {
            changes.push(transitions(subscription));
        }
        tokio::select! {
            _ = ticker.tick() => collect_pass(&inner).await,
            Some((name, breaker, entered)) = changes.next() => {
                let state = entered.unwrap_or_else(|| breaker.state());
                check_breaker(&inner, &name, &breaker, state);
            }
        }
    }
}

/// One pass: reads everything the rules look at and raises what they call for.
pub(crate) async fn collect_pass(inner: &Inner) {
    let watched: Vec<Watched> = inner.watched();
    let mut readings = Readings::default();
    for one in &watched {
        readings.breakers.push(reading(&one.name, &one.breaker, one.breaker.state()));
        let Some(publisher) = &one.publisher else { continue };
        let Some(capacity) = publisher.outbox().map(|outbox| outbox.config().max_depth) else { continue };
        match tokio::time::timeout(QUEUE_READ_TIMEOUT, publisher.metrics()).await {
            Ok(metrics) if metrics.outbox_error.is_none() => readings.queues.push(QueueReading {
                name: one.name.clone(),
                queued: metrics.queued_events,
                capacity,
                dead_letters: metrics.dead_letter_events,
            }),
            Ok(metrics) => {
                tracing::warn!(target: "onex::observability", queue = %one.name, error = ?metrics.outbox_error, "the queue figures could not be read");
            }
            Err(_) => {
                tracing::warn!(target: "onex::observability", queue = %one.name, "reading the queue figures timed out");
            }
        }
    }
    readings.error_rates = inner.store.latest_error_rates();
    readings.latency_seconds = inner.store.latency().current_seconds;
    for spec in rules::evaluate(&readings) {
        inner.alerts.raise(spec);
    }
    inner.passes.send_modify(|passes| *passes += 1);
}

/// Raises the critical alert of `breaker` when `state` is open or forced open.
fn check_breaker(inner: &Inner, name: &str, breaker: &CircuitBreaker, state: CircuitBreakerState) {
    let readings = Readings { breakers: vec![reading(name, breaker, state)], ..Readings::default() };
    for spec in rules::evaluate(&readings) {
        inner.alerts.raise(spec);
    }
}

/// The reading of `breaker` in `state`, with its counters.
fn reading(name: &str, breaker: &CircuitBreaker, state: CircuitBreakerState) -> BreakerReading {
    let metrics = breaker.metrics();
    BreakerReading {
        name: name.to_owned(),
        state,
        failed_calls: metrics.failed_calls,
        rejected_calls: metrics.rejected_calls,
        window_failure_rate_percent: metrics.window_failure_rate,
    }
}

/// The changes of one subscribed breaker, ending when the breaker is gone.
fn transitions(subscription: Subscription) -> BoxStream<'static, Change> {
    let Subscription { name, breaker, receiver } = subscription;
    futures::stream::unfold((name, breaker, receiver), |(name, breaker, mut receiver)| async move {
        let entered = match receiver.recv().await {
            Ok(transition) => Some(transition.to),
            Err(RecvError::Lagged(_)) => None,
            Err(RecvError::Closed) => return None,
        };
        Some(((name.clone(), Arc::clone(&breaker), entered), (name, breaker, receiver)))
    })
    .boxed()
}
