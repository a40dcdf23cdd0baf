//! An open transaction on one checked-out connection.

use serde_json::{Map, Value};

use super::conn::Take;
use super::pool::PooledConn;
use super::{PostgresConnectionManager, QueryOptions};
use crate::error::{ErrorCode, OnexError};
use crate::models::postgres::QueryResult;

/// A transaction started by [`PostgresConnectionManager::begin`].
///
/// Invariant: until `commit` or `rollback` succeeds, the connection is flagged as inside a
/// transaction, and the pool sends `ROLLBACK` (bounded by the recycle timeout) before anyone
/// else can use it; if that fails the connection is closed. So dropping a transaction, or
/// a cancelled caller, never leaks its writes or locks into the next checkout.
pub struct Transaction<'m> {
    manager: &'m PostgresConnectionManager,
    conn: PooledConn,
    /// A statement failed, so the server has aborted the transaction.
    failed: bool,
}

impl std::fmt::Debug for Transaction<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction").field("open", &self.conn.in_transaction).finish_non_exhaustive()
    }
}

impl<'m> Transaction<'m> {
    pub(crate) fn new(manager: &'m PostgresConnectionManager, conn: PooledConn) -> Self {
        Self { manager, conn, failed: false }
    }

    /// Runs one statement inside the transaction (see
    /// [`PostgresConnectionManager::execute_query`]).
    pub async fn execute_query(&mut self, sql: &str, params: &[Value]) -> Result<QueryResult, OnexError> {
        self.execute_query_with(sql, params, QueryOptions::default()).await
    }

    /// [`Self::execute_query`] with per-call options.
    pub async fn execute_query_with(
        &mut self,
        sql: &str,
        params: &[Value],
        options: QueryOptions,
    ) -> Result<QueryResult, OnexError> {
        let mut span = self.manager.tracing.span("postgres.query", sql);
        self.run(sql, params, options, Take::AllRows).await.inspect_err(|e| span.failed(e)).map(|o| o.result)
    }

    async fn run(
        &mut self,
        sql: &str,
        params: &[Value],
        options: QueryOptions,
        take: Take,
    ) -> Result<super::conn::Outcome, OnexError> {
        let outcome = self.manager.run_on(&mut self.conn, sql, params, options, take).await;
        self.failed |= outcome.is_err();
        outcome
    }

    /// The first row, if any.
    pub async fn fetch_one(&mut self, sql: &str, params: &[Value]) -> Result<Option<Map<String, Value>>, OnexError> {
        let mut span = self.manager.tracing.span("postgres.fetch_one", sql);
        let outcome =
            self.run(sql, params, QueryOptions::default(), Take::FirstRow).await.inspect_err(|e| span.failed(e))?;
        Ok(outcome.result.rows.into_iter().next())
    }

    /// The first column of the first row, if any.
    pub async fn fetch_value(&mut self, sql: &str, params: &[Value]) -> Result<Option<Value>, OnexError> {
        let mut span = self.manager.tracing.span("postgres.fetch_value", sql);
        let outcome =
            self.run(sql, params, QueryOptions::default(), Take::FirstValue).await.inspect_err(|e| span.failed(e))?;
        Ok(outcome.value)
    }

    /// Commits. After a failed statement nothing can be committed: the transaction is rolled
    /// back and this returns a `DATABASE_QUERY_ERROR` saying so (PostgreSQL itself would
    /// answer `COMMIT` with a silent `ROLLBACK`). On any error the transaction is rolled back.
    pub async fn commit(self) -> Result<(), OnexError> {
        let mut span = self.manager.tracing.span("postgres.commit", "COMMIT");
        self.commit_untraced().await.inspect_err(|e| span.failed(e))
    }

    async fn commit_untraced(mut self) -> Result<(), OnexError> {
        if self.failed {
            self.conn.control("ROLLBACK", self.manager.command_timeout).await?;
            self.conn.in_transaction = false;
            return Err(OnexError::new(
                ErrorCode::DatabaseQueryError,
                "the transaction was rolled back because one of its statements failed",
            ));
        }
        self.conn.control("COMMIT", self.manager.command_timeout).await?;
        self.conn.in_transaction = false;
        Ok(())
    }

    /// Rolls back now.
    pub async fn rollback(mut self) -> Result<(), OnexError> {
        let mut span = self.manager.tracing.span("postgres.rollback", "ROLLBACK");
        self.conn.control("ROLLBACK", self.manager.command_timeout).await.inspect_err(|e| span.failed(e))?;
        self.conn.in_transaction = false;
        Ok(())
    }
}
