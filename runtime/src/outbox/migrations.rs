//! The schema the outbox needs, as versioned migrations the runtime ships.
//!
//! Invariants:
//! - Every migration runs at most once per schema: applied versions are rows of
//!   `onex_schema_migrations(version, name, applied_at)`, written in the same transaction as
//!   the migration's statements, so a migration and its record commit together or not at all.
//! - All of [`migrate`] runs in one transaction holding a transaction-level advisory lock
//!   keyed by the current schema: two processes starting together queue on the lock, and
//!   the second sees what the first committed. A transaction-level lock is released by
//!   commit, rollback or a dropped connection, so a cancelled caller never leaves it held.
//! - Statements are idempotent (`IF NOT EXISTS`), so even a schema created by hand before
//!   the bookkeeping existed migrates cleanly.
//! - Tables are created unqualified, in the pool's schema (its `search_path`).

use serde_json::{Value, json};

use crate::error::{ErrorCode, OnexError};
use crate::postgres::{PostgresConnectionManager, TransactionOptions};

/// One versioned migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// Version; migrations apply in ascending order.
    pub version: i32,
    /// Short name, recorded beside the version.
    pub name: &'static str,
    /// The statements. Each ends with `;` at the end of a line, and none contains a
    /// dollar-quoted body: the runner splits the text there, because the pool prepares every
    /// statement and a prepared statement holds exactly one command.
    pub sql: &'static str,
}

/// The migrations of the runtime, in version order.
pub const MIGRATIONS: &[Migration] =
    &[Migration { version: 1, name: "outbox", sql: include_str!("../../migrations/0001_outbox.sql") }];

const BOOKKEEPING: &str = "CREATE TABLE IF NOT EXISTS onex_schema_migrations (\
     version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())";

/// Serializes [`migrate`] per schema across processes.
const LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext('onex_schema_migrations:' || current_schema()))";

/// Applies the [`MIGRATIONS`] not yet applied in the pool's schema and returns their
/// versions (empty when the schema is current). Safe to call at every start, from any
/// number of processes at once.
pub async fn migrate(manager: &PostgresConnectionManager) -> Result<Vec<i32>, OnexError> {
    apply(manager, MIGRATIONS).await
}

/// Applies `migrations` (see [`migrate`]); exposed so other runtime parts can ship their own.
/// Versions must be unique and ascending.
pub async fn apply(manager: &PostgresConnectionManager, migrations: &[Migration]) -> Result<Vec<i32>, OnexError> {
    if let Some(pair) = migrations.windows(2).find(|pair| pair[0].version >= pair[1].version) {
        return Err(OnexError::new(
            ErrorCode::InternalError,
            format!("migration versions must ascend: {} is followed by {}", pair[0].version, pair[1].version),
        ));
    }
    let mut tx = manager.begin(TransactionOptions::default()).await?;
    tx.execute_query(LOCK, &[]).await?;
    tx.execute_query(BOOKKEEPING, &[]).await?;
    let done = tx.execute_query("SELECT version FROM onex_schema_migrations", &[]).await?;
    let done: Vec<i64> = done.rows.iter().filter_map(|row| row.get("version").and_then(Value::as_i64)).collect();
    let mut applied = Vec::new();
    for migration in migrations.iter().filter(|m| !done.contains(&i64::from(m.version))) {
        for statement in statements(migration.sql) {
            tx.execute_query(&statement, &[]).await.map_err(|e| {
                OnexError::new(
                    e.code(),
                    format!("migration {} ({}) failed: {}", migration.version, migration.name, e.message()),
                )
                .with_detail("version", migration.version)
                .with_source(e)
            })?;
        }
        tx.execute_query(
            "INSERT INTO onex_schema_migrations (version, name) VALUES ($1, $2)",
            &[json!(migration.version), json!(migration.name)],
        )
        .await?;
        applied.push(migration.version);
    }
    tx.commit().await?;
    if !applied.is_empty() {
        tracing::info!(target: "onex::outbox", ?applied, "applied schema migrations");
    }
    Ok(applied)
}

/// The statements of a migration text: split after each line that ends with `;`, with
/// comment-only and blank lines dropped.
fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with("--") {
            continue;
        }
        if !current.is_empty() {
            current.push('\n');
        }
        current.push_str(line);
        if trimmed.ends_with(';') {
            current.truncate(current.trim_end().len() - 1);
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.trim().is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_statements_at_line_ends_and_drops_comments() {
        let sql = "-- header\nCREATE TABLE a (\n  x int\n);\n\n-- note\nCREATE INDEX i ON a (x);\n-- trailing\n";
        assert_eq!(statements(sql), vec!["CREATE TABLE a (\n  x int\n)", "CREATE INDEX i ON a (x)"]);
    }

    #[test]
    fn shipped_migrations_ascend_and_split_into_statements() {
        assert!(MIGRATIONS.windows(2).all(|p| p[0].version < p[1].version));
        let first = statements(MIGRATIONS[0].sql);
        assert_eq!(first.len(), 6, "{first:#?}");
        assert!(first.iter().all(|s| !s.contains(';')));
    }
}
