//! The relay: republishes unpublished outbox rows and marks what the broker acknowledged.
//!
//! Invariants (a pass is one [`Outbox::relay_once`]):
//! - A pass runs in one transaction. It claims up to `batch` unpublished rows in `id` order
//!   with `FOR UPDATE SKIP LOCKED`, so rows another pass holds are skipped, not waited for,
//!   and no two passes hold the same row. The locks last until the pass commits, after the
//!   publishes, so no row is published by two passes at the same time.
//! - A claimed row is published only if no older unpublished row of its correlation id
//!   exists outside this pass's claim (held by another pass, or claimed-then-released after a
//!   failure) and no older row of that id failed earlier in this pass. Skipped rows are
//!   `deferred`: left for a later pass, unchanged.
//! - Rows are published one after the other in `id` order; an acknowledged row is marked
//!   `published_at = now()` before the commit, a failed one gets `attempts + 1` and
//!   `last_error`. After [`super::OutboxConfig::max_consecutive_failures`] failures in a
//!   row the pass stops, commits what it has and leaves the rest.
//! - A row whose stored payload no longer decodes as an event cannot ever be published and
//!   would block its key forever: the pass moves it to the dead-letter table (circuit state
//!   `unknown`), in the same transaction.
//! - Dropping a pass (cancellation) rolls its transaction back: rows it published stay
//!   unpublished and go out again later, with the same `event_id` (at least once).

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value, json};

use super::Outbox;
use crate::error::{ErrorCode, OnexError};
use crate::event::OnexEvent;
use crate::event_bus::EventPublisher;
use crate::models::postgres::IsolationLevel;
use crate::postgres::TransactionOptions;

/// What one relay pass did.
#[derive(Debug, Clone, Default)]
pub struct RelayReport {
    /// Rows claimed (locked) by the pass.
    pub claimed: usize,
    /// Rows published and marked.
    pub published: usize,
    /// Publishes that failed; those rows stay unpublished with `attempts` raised.
    pub failed: usize,
    /// Rows left alone to keep per-key order (an older row of the key is held elsewhere or
    /// failed in this pass).
    pub deferred: usize,
    /// Rows whose payload did not decode, moved to the dead-letter table.
    pub dead_lettered: usize,
    /// The pass stopped early after too many consecutive publish failures.
    pub stopped: bool,
    /// The last publish error, if any.
    pub last_error: Option<OnexError>,
}

/// What [`Outbox::drain`] did, summed over its passes.
#[derive(Debug, Clone, Default)]
pub struct DrainReport {
    /// Passes run.
    pub passes: usize,
    /// Rows published.
    pub published: usize,
    /// Failed publishes.
    pub failed: usize,
    /// Rows moved to the dead-letter table.
    pub dead_lettered: usize,
    /// The last pass stopped after consecutive publish failures.
    pub stopped: bool,
    /// The last publish error, if any.
    pub last_error: Option<OnexError>,
}

const CLAIM: &str = "SELECT id, correlation_id, payload FROM onex_outbox WHERE published_at IS NULL \
     ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED";

/// Per correlation id among `$1`, the oldest unpublished row outside this pass's claim `$2`.
const HELD_ELSEWHERE: &str = "SELECT correlation_id, min(id) AS first_id FROM onex_outbox \
     WHERE published_at IS NULL AND correlation_id = ANY($1::uuid[]) AND id <> ALL($2::bigint[]) \
     GROUP BY correlation_id";

const MARK_PUBLISHED: &str = "UPDATE onex_outbox SET published_at = now() WHERE id = ANY($1::bigint[])";

const MARK_FAILED: &str = "UPDATE onex_outbox SET attempts = attempts + 1, last_error = $2::text WHERE id = $1";

const UNDECODABLE: &str = "WITH gone AS (DELETE FROM onex_outbox WHERE id = $1 RETURNING payload, attempts) \
     INSERT INTO onex_dead_letter (event, reason, circuit_state, retry_count) \
     SELECT payload, $2::text, 'unknown', attempts FROM gone";

struct Claimed {
    id: i64,
    key: String,
    payload: Value,
}

impl Claimed {
    fn from_row(mut row: Map<String, Value>) -> Result<Self, OnexError> {
        let id = row.get("id").and_then(Value::as_i64);
        let key = match row.remove("correlation_id") {
            Some(Value::String(key)) => Some(key),
            _ => None,
        };
        match (id, key, row.remove("payload")) {
            (Some(id), Some(key), Some(payload)) => Ok(Self { id, key, payload }),
            _ => Err(OnexError::new(ErrorCode::InternalError, "an outbox row lacks id, correlation_id or payload")),
        }
    }
}

impl Outbox {
    /// One relay pass over up to `batch` rows through `publisher` (see the module
    /// invariants). A database error is returned as is and rolls the pass back; publish
    /// errors are counted in the report.
    pub async fn relay_once<P>(&self, publisher: &P, batch: usize) -> Result<RelayReport, OnexError>
    where
        P: EventPublisher + ?Sized,
    {
        if batch == 0 {
            return Err(OnexError::validation("the relay batch size must be greater than 0"));
        }
        let limit = i64::try_from(batch).unwrap_or(i64::MAX);
        // READ COMMITTED, whatever the server default: each statement must see what other
        // relays committed up to its start (the held-elsewhere check), and a row another
        // relay marked meanwhile must be skipped, not a serialization failure.
        let options = TransactionOptions { isolation: IsolationLevel::ReadCommitted, ..TransactionOptions::default() };
        let mut tx = self.manager.begin(options).await?;
        let rows = tx.execute_query(CLAIM, &[json!(limit)]).await?.rows;
        let mut report = RelayReport { claimed: rows.len(), ..RelayReport::default() };
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(report);
        }
        let rows = rows.into_iter().map(Claimed::from_row).collect::<Result<Vec<_>, _>>()?;

        let mut keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let held = tx.execute_query(HELD_ELSEWHERE, &[json!(keys), json!(ids)]).await?.rows;
        let held: HashMap<String, i64> = held
            .into_iter()
            .filter_map(|row| {
                let first = row.get("first_id").and_then(Value::as_i64)?;
                match row.get("correlation_id") {
                    Some(Value::String(key)) => Some((key.clone(), first)),
                    _ => None,
                }
            })
            .collect();

        let mut failed_keys = HashSet::new();
        let mut acked = Vec::with_capacity(rows.len());
        let mut consecutive = 0;
        for row in rows {
            if failed_keys.contains(&row.key) || held.get(&row.key).is_some_and(|first| *first < row.id) {
                report.deferred += 1;
                continue;
            }
            let event: OnexEvent = match serde_json::from_value(row.payload) {
                Ok(event) => event,
                Err(e) => {
                    let reason = format!("stored payload is not an event: {e}");
                    tracing::error!(target: "onex::outbox", id = row.id, %reason, "dead-lettering an outbox row");
                    tx.execute_query(UNDECODABLE, &[json!(row.id), json!(reason)]).await?;
                    report.dead_lettered += 1;
                    continue;
                }
            };
            match publisher.publish(event).await {
                Ok(()) => {
                    acked.push(row.id);
                    consecutive = 0;
                }
                Err(e) => {
                    tx.execute_query(MARK_FAILED, &[json!(row.id), json!(e.to_string())]).await?;
                    failed_keys.insert(row.key);
                    report.failed += 1;
                    report.last_error = Some(e);
                    consecutive += 1;
                    if consecutive >= self.config.max_consecutive_failures {
                        report.stopped = true;
                        break;
                    }
                }
            }
        }
        if !acked.is_empty() {
            tx.execute_query(MARK_PUBLISHED, &[json!(acked)]).await?;
        }
        report.published = acked.len();
        tx.commit().await?;
        if let Some(e) = report.last_error.as_ref().filter(|_| report.stopped) {
            tracing::warn!(target: "onex::outbox", error = %e, failed = report.failed, "relay pass stopped after consecutive publish failures");
        }
        Ok(report)
    }

    /// Runs [`Self::relay_once`] until a pass makes no progress (the outbox is empty, or
    /// what is left is held by other relays or failed) or stops after consecutive failures.
    /// Dropping the future stops it; the current pass rolls back (see the module invariants).
    pub async fn drain<P>(&self, publisher: &P, batch: usize) -> Result<DrainReport, OnexError>
    where
        P: EventPublisher + ?Sized,
    {
        let mut total = DrainReport::default();
        loop {
            let pass = self.relay_once(publisher, batch).await?;
            total.passes += 1;
            total.published += pass.published;
            total.failed += pass.failed;
            total.dead_lettered += pass.dead_lettered;
            total.stopped = pass.stopped;
            if pass.last_error.is_some() {
                total.last_error = pass.last_error;
            }
            if pass.stopped || pass.published + pass.dead_lettered == 0 {
                return Ok(total);
            }
        }
    }
}
