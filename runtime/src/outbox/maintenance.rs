//! Dead-letter and published-row cleanup, on demand or as a periodic task.
//!
//! Invariants:
//! - Dead letters older than the TTL are deleted; then, beyond the cap, the oldest (by
//!   `created_at`, then `id`) are deleted, so the table never holds more than the cap after
//!   a purge.
//! - Published outbox rows older than the retention are deleted; unpublished rows are never
//!   touched by maintenance.
//! - The task of [`Outbox::spawn_maintenance`] runs a pass at once and then every interval
//!   (a late pass delays the next rather than bunching them). A failed pass is logged and
//!   the next one runs as scheduled. [`MaintenanceHandle::stop`] ends it, also mid-pass (a
//!   cancelled statement rolls back); dropping the handle stops it too.

use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Outbox;
use crate::error::OnexError;

/// The usual interval of [`Outbox::spawn_maintenance`]: 300 s.
pub const DEFAULT_MAINTENANCE_INTERVAL: Duration = Duration::from_secs(300);

/// What a purge deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Dead letters older than the TTL.
    pub expired: u64,
    /// Dead letters beyond the cap.
    pub over_cap: u64,
    /// Published outbox rows older than the retention (only [`Outbox::run_maintenance`]).
    pub published: u64,
}

/// The periodic maintenance task. Dropping it stops the task.
#[derive(Debug)]
#[must_use = "dropping the handle stops the maintenance task"]
pub struct MaintenanceHandle {
    stop: watch::Sender<bool>,
    passes: watch::Receiver<u64>,
    task: Option<JoinHandle<()>>,
}

impl MaintenanceHandle {
    /// The number of finished passes (failed ones included), for waiting on the task:
    /// `passes().wait_for(|n| *n >= 2)`.
    pub fn passes(&self) -> watch::Receiver<u64> {
        self.passes.clone()
    }

    /// Stops the task and waits until it has ended.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            // A panic inside a pass is the only error here; the task is over either way.
            let _ = task.await;
        }
    }
}

impl Drop for MaintenanceHandle {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

impl Outbox {
    /// Deletes dead letters older than `ttl`, then the oldest beyond `cap`.
    pub async fn purge_dead_letters(&self, ttl: Duration, cap: u64) -> Result<PurgeReport, OnexError> {
        let expired = self
            .manager
            .execute_query(
                "DELETE FROM onex_dead_letter WHERE created_at < now() - make_interval(secs => $1)",
                &[json!(ttl.as_secs_f64())],
            )
            .await?
            .row_count;
        let cap = i64::try_from(cap).unwrap_or(i64::MAX);
        let over_cap = self
            .manager
            .execute_query(
                "DELETE FROM onex_dead_letter WHERE id IN \
                 (SELECT id FROM onex_dead_letter ORDER BY created_at DESC, id DESC OFFSET $1)",
                &[json!(cap)],
            )
            .await?
            .row_count;
        Ok(PurgeReport { expired, over_cap, published: 0 })
    }

    /// Deletes published outbox rows older than `retention`; returns how many.
    pub async fn purge_published(&self, retention: Duration) -> Result<u64, OnexError> {
        Ok(self
            .manager
            .execute_query(
                "DELETE FROM onex_outbox WHERE published_at < now() - make_interval(secs => $1)",
                &[json!(retention.as_secs_f64())],
            )
            .await?
            .row_count)
    }

    /// One maintenance pass with the configured TTL, cap and retention.
    pub async fn run_maintenance(&self) -> Result<PurgeReport, OnexError> {
        let mut report = self.purge_dead_letters(self.config.dead_letter_ttl, self.config.dead_letter_cap).await?;
        report.published = self.purge_published(self.config.published_retention).await?;
        Ok(report)
    }

    /// Starts a task that runs [`Self::run_maintenance`] now and every `interval` (usually
    /// [`DEFAULT_MAINTENANCE_INTERVAL`]) until stopped. Must be called inside a Tokio
    /// runtime; a zero interval is a `CONFIGURATION_ERROR`.
    pub fn spawn_maintenance(&self, interval: Duration) -> Result<MaintenanceHandle, OnexError> {
        if interval.is_zero() {
            return Err(OnexError::configuration("the outbox maintenance interval must be greater than 0"));
        }
        let (stop, mut stopped) = watch::channel(false);
        let (count, passes) = watch::channel(0_u64);
        let outbox = self.clone();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                // `wait_for` also returns (with an error) when the handle is gone.
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = stopped.wait_for(|stop| *stop) => return,
                }
                tokio::select! {
                    outcome = outbox.run_maintenance() => match outcome {
                        Ok(report) if report != PurgeReport::default() => {
                            tracing::info!(target: "onex::outbox", ?report, "outbox maintenance purged rows");
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(target: "onex::outbox", error = %e, "outbox maintenance failed"),
                    },
                    _ = stopped.wait_for(|stop| *stop) => return,
                }
                count.send_modify(|n| *n += 1);
            }
        });
        Ok(MaintenanceHandle { stop, passes, task: Some(task) })
    }
}
