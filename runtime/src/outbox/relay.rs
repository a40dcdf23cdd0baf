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
//! - Publishes run concurrently, but a key's rows never overlap: the oldest claimed row of
//!   every key is ready at once, and a key's next row becomes ready only when the one before
//!   it was acknowledged. Ready rows are sent oldest (`id`) first, at most `window` at a time.
//!   The window starts at the probe size, `min(max_consecutive_failures, batch)`, opens to
//!   `batch` on an acknowledgement, and after a failure shrinks to the failures still
//!   tolerated (no new publish starts while that many are in flight), so a pass that starts
//!   against a broker that is down makes no more attempts than it tolerates. Publishes
//!   already in flight when the broker goes down are not recalled; they fail and are counted.
//!   [`Outbox::drain`] carries the window from one pass to the next; each
//!   [`Outbox::relay_once`] starts with the probe.
//! - An acknowledged row is marked `published_at = now()` before the commit; a failed one
//!   gets `attempts + 1` and `last_error`, and the later rows of its key in this pass are
//!   `deferred`. Failures are consecutive when no acknowledgement completes between them, in
//!   the order publishes complete. After [`super::OutboxConfig::max_consecutive_failures`]
//!   of them the pass sends nothing more, waits for the publishes still in flight (marking
//!   the ones acknowledged, so they are not sent again), commits and leaves the rest.
//! - A row whose stored payload no longer decodes as an event cannot ever be published and
//!   would block its key forever: the pass moves it to the dead-letter table (circuit state
//!   `unknown`), in the same transaction, before it publishes anything.
//! - Dropping a pass (cancellation) rolls its transaction back: rows it published stay
//!   unpublished and go out again later, with the same `event_id` (at least once).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;

use futures::{FutureExt, StreamExt, stream::FuturesUnordered};

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

/// The depth known after a pass that claimed `claimed` rows of a `batch` and published or
/// dead-lettered `done` of them, when `known` was known before. A claim of less than the
/// batch saw every unpublished row no other relay held: what it left is the depth. A full
/// claim may have left more behind: the known depth less what went, but never less than
/// what the pass itself left.
fn depth_after_pass(known: i64, claimed: usize, done: usize, batch: usize) -> i64 {
    let left = i64::try_from(claimed.saturating_sub(done)).unwrap_or(i64::MAX);
    if claimed < batch { left } else { known.saturating_sub(i64::try_from(done).unwrap_or(i64::MAX)).max(left) }
}

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
        self.relay_pass(publisher, batch, &mut 0).await
    }

    /// A pass whose publish window starts at `window` (raised to the probe size), and is
    /// left in `window` for the next pass.
    async fn relay_pass<P>(&self, publisher: &P, batch: usize, window: &mut usize) -> Result<RelayReport, OnexError>
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
            self.relayed(&report, batch);
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

        // Per key, its claimed rows in `id` order, cut at the first row held back by an older
        // row another pass holds. A row that does not decode is dead-lettered here, before
        // any publish: it publishes nothing, so it cannot break the order of its key.
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut chains: Vec<VecDeque<(i64, OnexEvent)>> = Vec::new();
        let mut cut: HashSet<usize> = HashSet::new();
        for row in rows {
            let chain = *index.entry(row.key.clone()).or_insert_with(|| {
                chains.push(VecDeque::new());
                chains.len() - 1
            });
            if cut.contains(&chain) || held.get(&row.key).is_some_and(|first| *first < row.id) {
                cut.insert(chain);
                report.deferred += 1;
                continue;
            }
            match serde_json::from_value::<OnexEvent>(row.payload) {
                Ok(event) => chains[chain].push_back((row.id, event)),
                Err(e) => {
                    let reason = format!("stored payload is not an event: {e}");
                    tracing::error!(target: "onex::outbox", id = row.id, %reason, "dead-lettering an outbox row");
                    tx.execute_query(UNDECODABLE, &[json!(row.id), json!(reason)]).await?;
                    report.dead_lettered += 1;
                }
            }
        }

        // The oldest unpublished row of every key is ready; a key's next row becomes ready
        // when the one before it is acknowledged. Ready rows go out oldest first, up to
        // `window` at a time.
        let mut ready: BinaryHeap<Reverse<(i64, usize)>> = BinaryHeap::new();
        let mut events: HashMap<i64, OnexEvent> = HashMap::new();
        for (chain, rows) in chains.iter_mut().enumerate() {
            if let Some((id, event)) = rows.pop_front() {
                ready.push(Reverse((id, chain)));
                events.insert(id, event);
            }
        }
        let probe = usize::try_from(self.config.max_consecutive_failures).unwrap_or(usize::MAX).min(batch);
        let mut open = (*window).clamp(probe, batch);
        let mut in_flight = FuturesUnordered::new();
        let mut acked = Vec::with_capacity(report.claimed);
        let mut failures: Vec<(i64, String)> = Vec::new();
        let mut consecutive = 0;
        loop {
            while !report.stopped && in_flight.len() < open {
                let Some(Reverse((id, chain))) = ready.pop() else { break };
                let Some(event) = events.remove(&id) else { continue };
                in_flight.push(publisher.publish_admitted(event).map(move |result| (id, chain, result)));
            }
            let Some((id, chain, result)) = in_flight.next().await else { break };
            match result {
                Ok(()) => {
                    acked.push(id);
                    consecutive = 0;
                    open = batch;
                    if let Some((next, event)) = chains[chain].pop_front() {
                        ready.push(Reverse((next, chain)));
                        events.insert(next, event);
                    }
                }
                Err(e) => {
                    failures.push((id, e.to_string()));
                    report.deferred += chains[chain].len();
                    chains[chain].clear();
                    report.failed += 1;
                    report.last_error = Some(e);
                    consecutive += 1;
                    // No more in flight than failures still tolerated: if they all fail
                    // too, the pass stops without having sent anything past the limit.
                    match self.config.max_consecutive_failures.checked_sub(consecutive) {
                        Some(left) if left > 0 => open = usize::try_from(left).unwrap_or(usize::MAX).min(probe),
                        _ => report.stopped = true,
                    }
                }
            }
        }
        *window = open;
        for (id, error) in failures {
            tx.execute_query(MARK_FAILED, &[json!(id), json!(error)]).await?;
        }
        if !acked.is_empty() {
            tx.execute_query(MARK_PUBLISHED, &[json!(acked)]).await?;
        }
        report.published = acked.len();
        tx.commit().await?;
        self.relayed(&report, batch);
        if let Some(e) = report.last_error.as_ref().filter(|_| report.stopped) {
            tracing::warn!(target: "onex::outbox", error = %e, failed = report.failed, "relay pass stopped after consecutive publish failures");
        }
        Ok(report)
    }

    /// Updates the depth gauge after a committed pass (see the module documentation of
    /// [`super`]).
    fn relayed(&self, report: &RelayReport, batch: usize) {
        let done = report.published + report.dead_lettered;
        let _ = self.depth.inner().fetch_update(Ordering::Relaxed, Ordering::Relaxed, |known| {
            Some(depth_after_pass(known, report.claimed, done, batch))
        });
    }

    /// Runs [`Self::relay_once`] until a pass makes no progress (the outbox is empty, or
    /// what is left is held by other relays or failed) or stops after consecutive failures.
    /// Dropping the future stops it; the current pass rolls back (see the module invariants).
    pub async fn drain<P>(&self, publisher: &P, batch: usize) -> Result<DrainReport, OnexError>
    where
        P: EventPublisher + ?Sized,
    {
        let mut total = DrainReport::default();
        let mut window = 0;
        loop {
            let pass = self.relay_pass(publisher, batch, &mut window).await?;
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

#[cfg(test)]
mod tests {
    use super::depth_after_pass;

    #[test]
    fn a_pass_that_saw_every_row_sets_the_depth_and_a_full_one_subtracts() {
        // 3 of 4 claimed rows published, 1 failed; the claim was short of the batch of 10.
        assert_eq!(depth_after_pass(0, 4, 3, 10), 1);
        assert_eq!(depth_after_pass(50, 4, 3, 10), 1);
        assert_eq!(depth_after_pass(0, 0, 0, 10), 0);
        // A full batch: the known 250 less the 10 that went...
        assert_eq!(depth_after_pass(250, 10, 10, 10), 240);
        // ...but never below what the pass left (the known depth was stale).
        assert_eq!(depth_after_pass(3, 10, 6, 10), 4);
    }
}
