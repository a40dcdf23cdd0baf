//! The optional answer store of EFFECT nodes (`idempotency: postgres`): a redelivered request
//! whose answer is stored gets that answer again instead of running the node again.
//!
//! What it guarantees, precisely:
//! - keyed by the node and the request's `event_id` (a requester that retries sends the same
//!   envelope; one correlation may carry several distinct requests);
//! - an answer is stored before it is published, so any redelivery after a publish (a host
//!   killed before committing, a rebalance) finds it: the node's effect is not repeated, and
//!   the requester sees the same answer twice, never two different ones;
//! - a host that dies after the node ran but before the answer was stored runs the request
//!   again on redelivery: the effect itself is at least once. Exactly once would need the
//!   node's own write and the stored answer in one transaction, which a node that talks to
//!   other systems (Kafka, Consul) cannot share;
//! - two hosts handed the same request at once (during a rebalance) may both run it; the first
//!   answer stored wins and both publish it.
//! - answers older than the retention are deleted at start-up and then hourly; a redelivery
//!   later than that runs again.

use std::sync::Arc;
use std::time::Duration;

use onex_runtime::OnexError;
use onex_runtime::postgres::PostgresConnectionManager;
use serde_json::{Value, json};
use uuid::Uuid;

/// The table, created when missing.
const CREATE: &str = "CREATE TABLE IF NOT EXISTS onex_host_answers (
    node TEXT NOT NULL,
    request_event_id UUID NOT NULL,
    event_type TEXT NOT NULL,
    payload JSONB NOT NULL,
    stored_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (node, request_event_id)
)";

/// A stored answer: its event type (`…completed` or `…failed`) and payload.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAnswer {
    pub event_type: String,
    pub payload: Value,
}

/// Answers of EFFECT nodes in PostgreSQL.
pub struct AnswerStore {
    db: Arc<PostgresConnectionManager>,
    retention: Duration,
}

impl AnswerStore {
    /// Creates the table if needed and deletes answers older than `retention`.
    pub async fn open(db: Arc<PostgresConnectionManager>, retention: Duration) -> Result<Self, OnexError> {
        db.execute_query(CREATE, &[]).await?;
        let store = Self { db, retention };
        store.prune().await?;
        Ok(store)
    }

    /// The answer stored for `request` of `node`, if any.
    pub async fn find(&self, node: &str, request: Uuid) -> Result<Option<StoredAnswer>, OnexError> {
        let row = self
            .db
            .fetch_one(
                "SELECT event_type, payload FROM onex_host_answers WHERE node = $1 AND request_event_id = $2",
                &[json!(node), json!(request.to_string())],
            )
            .await?;
        Ok(row.map(|mut row| StoredAnswer {
            event_type: row.remove("event_type").and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
            payload: row.remove("payload").unwrap_or(Value::Null),
        }))
    }

    /// Stores `answer` for `request` unless one is stored already; returns the stored one
    /// (the earlier answer when another host stored first).
    pub async fn keep(&self, node: &str, request: Uuid, answer: StoredAnswer) -> Result<StoredAnswer, OnexError> {
        let inserted = self
            .db
            .execute_query(
                "INSERT INTO onex_host_answers (node, request_event_id, event_type, payload) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (node, request_event_id) DO NOTHING",
                &[json!(node), json!(request.to_string()), json!(answer.event_type), answer.payload.clone()],
            )
            .await?;
        if inserted.row_count > 0 {
            return Ok(answer);
        }
        Ok(self.find(node, request).await?.unwrap_or(answer))
    }

    /// Deletes answers older than the retention; returns how many.
    pub async fn prune(&self) -> Result<u64, OnexError> {
        let seconds = self.retention.as_secs_f64();
        let deleted = self
            .db
            .execute_query(
                "DELETE FROM onex_host_answers WHERE stored_at < now() - make_interval(secs => $1)",
                &[json!(seconds)],
            )
            .await?;
        Ok(deleted.row_count)
    }
}
