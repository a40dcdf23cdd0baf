//! The durable event outbox: events wait in PostgreSQL until the broker acknowledges them.
//!
//! Invariants:
//! - An accepted event is stored before [`Outbox::enqueue`] returns (or, with
//!   [`Outbox::enqueue_in`], commits or rolls back with the caller's own writes: the
//!   transactional-outbox pattern). Its row leaves the unpublished set only after a
//!   publisher acknowledged it; nothing is dropped silently.
//! - Refused input is never stored: an event that cannot be serialized, that PostgreSQL
//!   `jsonb` cannot hold (a NUL character), or whose JSON exceeds
//!   [`OutboxConfig::max_event_bytes`] is a `VALIDATION_ERROR` at once.
//! - Capacity: when [`OutboxConfig::max_depth`] unpublished rows wait, an enqueued event goes
//!   to `onex_dead_letter` instead (reason [`CAPACITY_EXCEEDED`], the caller's circuit
//!   state, retry count 0), in the same statement. The limit is soft under concurrency:
//!   enqueuers that count at the same moment (or in transactions not yet committed) may
//!   each add one row past it; serializing them would make every transactional enqueue
//!   wait for the others to commit.
//! - Enqueue is idempotent per `event_id`: an event already in the outbox is not stored
//!   again ([`Enqueued::Duplicate`]).
//! - Order: the relay publishes rows of one correlation id (the Kafka key) in `id` order,
//!   and never publishes a row while an older unpublished row of that key is held by another
//!   relay or failed in the same pass. `id` order is commit order for one producer; rows of
//!   one key enqueued by concurrent, uncommitted transactions have no order to keep.
//! - Exclusion: rows are claimed with `SELECT … FOR UPDATE SKIP LOCKED` in a transaction
//!   held across the publish, so relays in any number of processes sharing the database
//!   never publish one row at the same time. A row lock, unlike a lease column, ends by
//!   itself when its holder commits, rolls back, crashes or loses its connection: there is
//!   no lease length to tune against publish latency and no clock to trust. The price is
//!   one open transaction (and connection) per relay pass for as long as the publishes take.
//! - Delivery is at least once: a row is marked published (`published_at`) in the claiming
//!   transaction after the acknowledgement, so a crash between the two republishes it. A
//!   republished event is the stored one, with its original `event_id`, so consumers can
//!   drop duplicates by it.
//! - Published rows are kept (marked, not deleted) for [`OutboxConfig::published_retention`]
//!   as a record of what went out, then deleted by maintenance; depth counts only
//!   unpublished rows.
//! - The relay publishes rows of different keys concurrently (one row per key in flight at
//!   a time). It stops a pass after [`OutboxConfig::max_consecutive_failures`] publishes fail
//!   in a row, in the order they complete (the broker is likely down), and leaves the rows
//!   for a later pass; after a failure it starts no new publish while as many are in
//!   flight as failures it still tolerates.
//! - Trace context: with the manager's tracing enabled, an event enqueued without a trace
//!   context is stored with the one current at enqueue (the caller's span, in
//!   `metadata.trace_context`), so the relay's later publish continues the caller's trace
//!   instead of starting one of its own. An event that carries a context keeps it.
//!
//! - Depth gauge: every outbox keeps `onex_outbox_depth`, the unpublished rows as this
//!   process last knew them, and [`Outbox::with_metrics`] shows it in a registry. It is set
//!   exactly by each count ([`Outbox::stats`], [`Outbox::depth`]) and by each relay pass that
//!   claimed fewer rows than its batch (that claim saw every unpublished row no other relay
//!   held, so what it left is the depth: its failed and deferred rows). In between, an event
//!   stored by [`Outbox::enqueue`] adds one, and a relay pass that claimed a full batch
//!   subtracts what it published or dead-lettered (never going below the rows it left).
//!   Rows stored by [`Outbox::enqueue_in`] (whose transaction may still roll back) or by other
//!   processes show at the next exact point. Reading it costs nothing: no statement runs.
//!
//! The schema comes from [`migrations::migrate`]; call it once at start (it is idempotent).

pub mod maintenance;
pub mod migrations;
pub mod relay;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::error::{ErrorCode, OnexError};
use crate::event::OnexEvent;
use crate::metrics::{Gauge, MetricsRegistry};
use crate::postgres::{PostgresConnectionManager, Transaction};

pub use maintenance::{DEFAULT_MAINTENANCE_INTERVAL, MaintenanceHandle, PurgeReport};
pub use migrations::{MIGRATIONS, Migration, migrate};
pub use relay::{DrainReport, RelayReport};

/// The dead-letter reason of an event refused because the outbox was full.
pub const CAPACITY_EXCEEDED: &str = "Queue capacity exceeded";

/// The family of the depth gauge (see the module documentation).
pub const DEPTH_SERIES: &str = "onex_outbox_depth";

/// Limits and intervals of an [`Outbox`].
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxConfig {
    /// Largest serialized event accepted, in bytes (default 1 MiB, the broker's usual
    /// message limit: a larger event could never be published).
    pub max_event_bytes: usize,
    /// Most unpublished rows kept; beyond it events are dead-lettered (default 100,000).
    pub max_depth: u64,
    /// Dead letters older than this are purged (default 24 h).
    pub dead_letter_ttl: Duration,
    /// Most dead letters kept; the oldest beyond it are purged (default 500).
    pub dead_letter_cap: u64,
    /// Published rows older than this are deleted by maintenance (default 24 h).
    pub published_retention: Duration,
    /// A relay pass stops after this many publishes fail in a row, in the order they
    /// complete (default 3). It is also how many publishes a pass starts with before the
    /// first acknowledgement opens its window to the whole batch.
    pub max_consecutive_failures: u32,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            max_event_bytes: 1024 * 1024,
            max_depth: 100_000,
            dead_letter_ttl: Duration::from_secs(24 * 3600),
            dead_letter_cap: 500,
            published_retention: Duration::from_secs(24 * 3600),
            max_consecutive_failures: 3,
        }
    }
}

impl OutboxConfig {
    fn validate(&self) -> Result<(), OnexError> {
        let zero = [
            ("max_event_bytes", self.max_event_bytes == 0),
            ("max_depth", self.max_depth == 0),
            ("max_consecutive_failures", self.max_consecutive_failures == 0),
        ];
        if let Some((name, _)) = zero.iter().find(|(_, is_zero)| *is_zero) {
            return Err(OnexError::configuration(format!("outbox {name} must be greater than 0")));
        }
        if i64::try_from(self.max_depth).is_err() || i64::try_from(self.dead_letter_cap).is_err() {
            return Err(OnexError::configuration("outbox max_depth and dead_letter_cap must fit in i64"));
        }
        Ok(())
    }
}

/// What [`Outbox::enqueue`] did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Stored in `onex_outbox` with this row id.
    Queued {
        /// `onex_outbox.id`.
        id: i64,
    },
    /// The outbox was full: stored in `onex_dead_letter` with this row id.
    DeadLettered {
        /// `onex_dead_letter.id`.
        id: i64,
    },
    /// An event with this `event_id` is already in the outbox; nothing was stored.
    Duplicate,
}

/// Outbox figures read from the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxStats {
    /// Unpublished rows.
    pub depth: u64,
    /// Rows in the dead-letter table.
    pub dead_letters: u64,
}

/// The outbox on one PostgreSQL pool. Cheap to clone; clones share the pool and the depth
/// gauge.
#[derive(Debug, Clone)]
pub struct Outbox {
    manager: Arc<PostgresConnectionManager>,
    config: OutboxConfig,
    /// Unpublished rows as last known (see the module documentation).
    depth: Gauge,
}

/// Stores the event unless the outbox is full (then dead-letters it) or already holds it.
/// `$1` event_id, `$2` correlation_id, `$3` event_type, `$4` payload, `$5` max depth,
/// `$6` circuit state, `$7` [`CAPACITY_EXCEEDED`]. One statement, so it is atomic even
/// outside a transaction.
///
/// Counting the unpublished rows costs time in proportion to the depth, on every enqueue.
/// So the count runs only when the cheap bound `max(id) - min(unpublished id) + 1` (two
/// index probes; every unpublished row lies in that id range) reaches the limit, and even
/// then stops at the limit. Uncorrelated subqueries in a `CASE` branch are evaluated only
/// when that branch is taken.
const ENQUEUE: &str = "\
WITH capacity AS (SELECT CASE
    WHEN coalesce((SELECT max(id) FROM onex_outbox)
                  - (SELECT min(id) FROM onex_outbox WHERE published_at IS NULL) + 1, 0) < $5::bigint
        THEN false
    ELSE (SELECT count(*) FROM (SELECT 1 FROM onex_outbox WHERE published_at IS NULL LIMIT $5::bigint) AS waiting)
        >= $5::bigint
    END AS full_up),
queued AS (
    INSERT INTO onex_outbox (event_id, correlation_id, event_type, payload)
    SELECT $1::uuid, $2::uuid, $3::text, $4::jsonb FROM capacity WHERE NOT full_up
    ON CONFLICT (event_id) DO NOTHING
    RETURNING id),
dead AS (
    INSERT INTO onex_dead_letter (event, reason, circuit_state, retry_count)
    SELECT $4::jsonb, $7::text, $6::text, 0 FROM capacity
    WHERE full_up AND NOT EXISTS (SELECT 1 FROM onex_outbox WHERE event_id = $1::uuid)
    RETURNING id)
SELECT (SELECT id FROM queued) AS queued_id, (SELECT id FROM dead) AS dead_id";

const DEAD_LETTER: &str = "INSERT INTO onex_dead_letter (event, reason, circuit_state, retry_count) \
     VALUES ($1::jsonb, $2::text, $3::text, $4::integer) RETURNING id";

impl Outbox {
    /// An outbox on `manager`'s database. Run [`migrate`] once before using it.
    pub fn new(manager: Arc<PostgresConnectionManager>, config: OutboxConfig) -> Result<Self, OnexError> {
        config.validate()?;
        Ok(Self { manager, config, depth: Gauge::default() })
    }

    /// Shows the depth gauge as `onex_outbox_depth` in `registry` (see the module
    /// documentation for what it counts and when it changes). A registry holds one outbox's
    /// gauge: a second outbox (or a second call) on the same registry is a
    /// `CONFIGURATION_ERROR`.
    pub fn with_metrics(self, registry: &MetricsRegistry) -> Result<Self, OnexError> {
        registry
            .register(
                DEPTH_SERIES,
                "Unpublished outbox rows, as last counted or seen by a relay pass of this process",
                self.depth.clone(),
            )
            .map_err(|e| crate::metrics::refused("an outbox", "outbox", &e))?;
        Ok(self)
    }

    /// The depth gauge's value: unpublished rows as last known, without a statement (see the
    /// module documentation); [`Outbox::depth`] counts them.
    pub fn known_depth(&self) -> u64 {
        u64::try_from(self.depth.get()).unwrap_or(0)
    }

    /// The configuration.
    pub fn config(&self) -> &OutboxConfig {
        &self.config
    }

    /// The pool.
    pub fn manager(&self) -> &Arc<PostgresConnectionManager> {
        &self.manager
    }

    /// Stores `event` in its own transaction. `circuit_state` is recorded if the outbox is
    /// full and the event is dead-lettered instead.
    pub async fn enqueue(&self, event: &OnexEvent, circuit_state: &str) -> Result<Enqueued, OnexError> {
        let params = self.enqueue_params(event, circuit_state)?;
        let row = self.manager.fetch_one(ENQUEUE, &params).await?;
        let outcome = enqueued(row.as_ref());
        if let Enqueued::Queued { .. } = outcome {
            self.depth.inc();
        }
        Ok(outcome)
    }

    /// Stores `event` inside the caller's transaction: it becomes visible to the relay when
    /// `tx` commits, and vanishes with the caller's own writes if `tx` rolls back. A failure
    /// here fails `tx` (its commit is refused), so the caller cannot commit its writes
    /// without the event.
    pub async fn enqueue_in(
        &self,
        tx: &mut Transaction<'_>,
        event: &OnexEvent,
        circuit_state: &str,
    ) -> Result<Enqueued, OnexError> {
        let params = self.enqueue_params(event, circuit_state)?;
        let row = tx.fetch_one(ENQUEUE, &params).await?;
        Ok(enqueued(row.as_ref()))
    }

    /// Stores `event` in the dead-letter table with `reason`, and returns the row id.
    pub async fn dead_letter(
        &self,
        event: &OnexEvent,
        reason: &str,
        circuit_state: &str,
        retry_count: i32,
    ) -> Result<i64, OnexError> {
        let payload = encode(event, self.config.max_event_bytes)?;
        let params = [payload, json!(reason), json!(circuit_state), json!(retry_count)];
        let id = self.manager.fetch_value(DEAD_LETTER, &params).await?;
        id.as_ref()
            .and_then(Value::as_i64)
            .ok_or_else(|| OnexError::new(ErrorCode::InternalError, "INSERT … RETURNING id returned no id"))
    }

    /// Unpublished rows and dead letters.
    pub async fn stats(&self) -> Result<OutboxStats, OnexError> {
        let row = self
            .manager
            .fetch_one(
                "SELECT (SELECT count(*) FROM onex_outbox WHERE published_at IS NULL) AS depth, \
                 (SELECT count(*) FROM onex_dead_letter) AS dead_letters",
                &[],
            )
            .await?;
        let count = |name: &str| row.as_ref().and_then(|r| r.get(name)).and_then(Value::as_u64).unwrap_or(0);
        let stats = OutboxStats { depth: count("depth"), dead_letters: count("dead_letters") };
        self.depth.set(i64::try_from(stats.depth).unwrap_or(i64::MAX));
        Ok(stats)
    }

    /// Unpublished rows.
    pub async fn depth(&self) -> Result<u64, OnexError> {
        Ok(self.stats().await?.depth)
    }

    fn enqueue_params(&self, event: &OnexEvent, circuit_state: &str) -> Result<[Value; 7], OnexError> {
        let tracing = self.manager.tracing();
        let payload = if tracing.is_enabled() && event.metadata.trace_context.is_empty() {
            let mut stamped = event.clone();
            crate::telemetry::OtelContext::map_current(|cx| {
                crate::telemetry::carrier::stamp_envelope(&mut stamped.metadata, cx, tracing);
            });
            encode(&stamped, self.config.max_event_bytes)?
        } else {
            encode(event, self.config.max_event_bytes)?
        };
        let max_depth = i64::try_from(self.config.max_depth).unwrap_or(i64::MAX);
        Ok([
            json!(event.event_id.to_string()),
            json!(event.correlation_id.to_string()),
            json!(event.event_type),
            payload,
            json!(max_depth),
            json!(circuit_state),
            json!(CAPACITY_EXCEEDED),
        ])
    }
}

fn enqueued(row: Option<&serde_json::Map<String, Value>>) -> Enqueued {
    let id = |name: &str| row.and_then(|r| r.get(name)).and_then(Value::as_i64);
    match (id("queued_id"), id("dead_id")) {
        (Some(id), _) => Enqueued::Queued { id },
        (None, Some(id)) => Enqueued::DeadLettered { id },
        (None, None) => Enqueued::Duplicate,
    }
}

/// The event as the JSON stored in `payload`, or a `VALIDATION_ERROR` saying why it cannot
/// be stored.
fn encode(event: &OnexEvent, max_bytes: usize) -> Result<Value, OnexError> {
    let refused = |why: String| {
        OnexError::validation(format!("event {} cannot be stored in the outbox: {why}", event.event_id))
            .with_detail("event_id", event.event_id.to_string())
            .with_detail("event_type", event.event_type.clone())
    };
    let value = serde_json::to_value(event).map_err(|e| refused(format!("it cannot be serialized: {e}")))?;
    if has_nul(&value) {
        return Err(refused(
            "it contains a NUL character (\\u0000), which a PostgreSQL jsonb value cannot hold".to_owned(),
        ));
    }
    let mut size = ByteCount(0);
    serde_json::to_writer(&mut size, &value).map_err(|e| refused(format!("it cannot be serialized: {e}")))?;
    if size.0 > max_bytes {
        return Err(refused(format!("its JSON is {} bytes, more than the limit of {max_bytes}", size.0))
            .with_detail("size_bytes", size.0)
            .with_detail("max_event_bytes", max_bytes));
    }
    Ok(value)
}

fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// Counts what is written, to size JSON without building the text.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn event(payload: Value) -> OnexEvent {
        OnexEvent::new("test.happened", "unit", Uuid::new_v4(), payload)
    }

    #[test]
    fn encode_measures_the_json_and_refuses_oversize_and_nul() {
        let ok = event(json!({"a": "b"}));
        let size = serde_json::to_vec(&ok).unwrap().len();
        assert!(encode(&ok, size).is_ok());
        let err = encode(&ok, size - 1).unwrap_err();
        assert_eq!(err.code(), ErrorCode::ValidationError);
        assert!(err.message().contains(&format!("{size} bytes, more than the limit of {}", size - 1)), "{err}");
        let err = encode(&event(json!({"k": ["x\0y"]})), 1 << 20).unwrap_err();
        assert!(err.message().contains("NUL character"), "{err}");
    }

    #[test]
    fn zero_limits_are_configuration_errors() {
        let config = OutboxConfig { max_depth: 0, ..OutboxConfig::default() };
        let err = config.validate().unwrap_err();
        assert_eq!(err.code(), ErrorCode::ConfigurationError);
        assert!(err.message().contains("max_depth"));
    }
}
