//! The PostgreSQL connection manager: a pool of tokio-postgres connections and the
//! operations the `node_postgres_connection_manager_effect` node exposes.
//!
//! - [`config`]: `POSTGRES_*` variables → [`PostgresConnectionConfig`], validated.
//! - The pool (private): min pre-warmed connections kept by a background task, max open,
//!   finite wait/create/recycle timeouts, expiry by idle time and query count enforced by
//!   that task, prepared statements cached per connection, `search_path` set once per
//!   connection.
//! - [`PostgresConnectionManager`]: statements with JSON parameters and JSON rows,
//!   transactions, function calls, health, stats and query metrics.
//! - [`guard`]: the checks `node_postgres_adapter_effect` runs before a statement reaches the
//!   pool (size, parameter and timeout limits per deployment environment, injection patterns,
//!   complexity score), in one walk over the statement.
//!
//! - Metrics ([`series`]): with a [`MetricsRegistry`] given to
//!   [`PostgresConnectionManager::with_metrics`], the pool's `onex_postgres_*` series: its own
//!   counters read at scrape time, plus a statement-duration histogram and an in-flight gauge
//!   recorded per statement; without one (the default) a statement costs one branch more.
//! - Spans (module `trace`): with a [`Tracing`] given to
//!   [`PostgresConnectionManager::with_tracing`], every call is one CLIENT span `postgres.{call}`
//!   with the database conventions' attributes and the statement sanitized; without one (the
//!   default) a call costs one branch more.
//!
//! Errors: statement failures are `DATABASE_QUERY_ERROR` (SQLSTATE in `details.sqlstate`),
//! checkout failures `DATABASE_OPERATION_ERROR`, connect failures and lost connections
//! `DATABASE_CONNECTION_FAILED`, bad parameters `VALIDATION_ERROR`. Messages never carry the
//! password: it lives in a [`crate::Sensitive`] and in the driver configuration, and driver
//! text is sanitized.

pub mod config;
mod conn;
mod connect;
pub mod guard;
mod health;
pub mod ident;
pub mod metrics;
mod numeric;
mod params;
mod pool;
mod rows;
pub mod series;
mod stats;
mod trace;
mod transaction;

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::environment::EnvSource;
use crate::error::{ErrorCode, OnexError};
use crate::models::postgres::{
    ConnectionStats, IsolationLevel, PostgresConnectionConfig, PostgresHealth, QueryMetric, QueryResult,
};
use conn::{Outcome, Take};
use metrics::{QueryLog, Record, StatementInfo};
use pool::{Limits, Pool, PooledConn};
use trace::StatementTracing;

use crate::metrics::MetricsRegistry;
use crate::telemetry::Tracing;

pub use stats::WAIT_BUCKETS_MS;
pub use trace::UNSANITIZABLE;
pub use transaction::Transaction;

/// Per-call options of a statement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueryOptions {
    /// Statement timeout; `None` means the configured command timeout.
    pub timeout: Option<Duration>,
    /// When the whole call must end: the wait for a connection and the statement are both cut
    /// short to meet it (each keeps its own timeout when that comes first).
    pub deadline: Option<Instant>,
    /// Whether the execution goes into the query metrics log.
    pub record_metrics: bool,
}

impl Default for QueryOptions {
    fn default() -> Self {
        Self { timeout: None, deadline: None, record_metrics: true }
    }
}

/// `limit` from `now`, cut short to end by `deadline` when that comes first: the wait for a
/// connection and the statement each keep their own timeout under a call's deadline.
fn cut_by(limit: Duration, deadline: Option<Instant>, now: Instant) -> Duration {
    deadline.map_or(limit, |d| limit.min(d.saturating_duration_since(now)))
}

/// How a transaction starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransactionOptions {
    /// Isolation level.
    pub isolation: IsolationLevel,
    /// `READ ONLY`.
    pub read_only: bool,
    /// `DEFERRABLE` (effective only with serializable and read only).
    pub deferrable: bool,
}

impl TransactionOptions {
    /// The `BEGIN` statement for these options.
    pub fn begin_statement(&self) -> String {
        let isolation = match self.isolation {
            IsolationLevel::ReadCommitted => "READ COMMITTED",
            IsolationLevel::RepeatableRead => "REPEATABLE READ",
            IsolationLevel::Serializable => "SERIALIZABLE",
        };
        let mut sql = format!("BEGIN ISOLATION LEVEL {isolation}");
        sql.push_str(if self.read_only { ", READ ONLY" } else { ", READ WRITE" });
        if self.deferrable {
            sql.push_str(", DEFERRABLE");
        }
        sql
    }
}

/// The PostgreSQL connection manager service that `node_postgres_connection_manager_effect`
/// resolves from the container. Build one per process (or per test) and share it in an
/// `Arc`; [`PostgresConnectionManager::close`] shuts it down.
pub struct PostgresConnectionManager {
    pool: Pool,
    config: PostgresConnectionConfig,
    log: QueryLog,
    command_timeout: Duration,
    tracing: StatementTracing,
    /// What each statement records once the manager has metrics.
    live: Option<series::Live>,
}

impl std::fmt::Debug for PostgresConnectionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConnectionManager")
            .field("target", &self.pool.shared().connector.target())
            .field("schema", &self.config.schema)
            .field("closed", &self.pool.is_closed())
            .finish_non_exhaustive()
    }
}

impl PostgresConnectionManager {
    /// Reads the configuration from `POSTGRES_*` variables and connects.
    pub async fn from_env(env: &dyn EnvSource) -> Result<Self, OnexError> {
        Self::connect(config::config_from_env(env)?).await
    }

    /// Validates `config`, opens `min_connections` connections (each with its
    /// `search_path`), verifies that the schema exists and starts the maintenance task.
    /// A missing schema or an unreachable server is `DATABASE_CONNECTION_FAILED`.
    pub async fn connect(config: PostgresConnectionConfig) -> Result<Self, OnexError> {
        config::validate(&config)?;
        let connector = connect::Connector::new(&config)?;
        let pool = Pool::start(Limits::from_config(&config), connector).await?;
        let manager = Self {
            pool,
            command_timeout: config::secs(config.command_timeout_secs),
            config,
            log: QueryLog::default(),
            tracing: StatementTracing::default(),
            live: None,
        };
        if let Err(e) = manager.verify_schema().await {
            manager.close();
            return Err(e);
        }
        Ok(manager)
    }

    async fn verify_schema(&self) -> Result<(), OnexError> {
        let options = QueryOptions { record_metrics: false, ..QueryOptions::default() };
        let current = self.fetch_value_with("SELECT current_schema()", &[], options).await?;
        match current {
            Some(Value::String(schema)) if schema == self.config.schema => Ok(()),
            other => Err(OnexError::new(
                ErrorCode::DatabaseConnectionFailed,
                format!(
                    "schema '{}' does not exist in database '{}' (current_schema() is {})",
                    self.config.schema,
                    self.config.database,
                    other.map_or_else(|| "null".to_owned(), |v| v.to_string())
                ),
            )
            .with_detail("schema", self.config.schema.clone())),
        }
    }

    /// Records a span per call with `tracing` (see the module documentation), unless it switched
    /// database spans off; the default is [`Tracing::disabled`].
    pub fn with_tracing(mut self, tracing: Tracing) -> Self {
        self.tracing = StatementTracing::new(tracing.for_database(), &self.config);
        self
    }

    /// The tracing the manager records its spans with.
    pub fn tracing(&self) -> &Tracing {
        self.tracing.tracing()
    }

    /// Registers the pool's series (see [`series`]) in `registry` and records the statement
    /// figures nothing else counts from now on. A registry holds one manager's series: a
    /// second manager (or a second call) on the same registry is a `CONFIGURATION_ERROR`
    /// naming the family already there.
    pub fn with_metrics(mut self, registry: &MetricsRegistry) -> Result<Self, OnexError> {
        self.live = Some(series::register(registry, &self.pool)?);
        Ok(self)
    }

    /// The configuration (the password inside is [`crate::Sensitive`]).
    pub fn config(&self) -> &PostgresConnectionConfig {
        &self.config
    }

    /// Checks a connection out. It returns to the pool when dropped.
    pub async fn acquire(&self) -> Result<PostgresConnection, OnexError> {
        self.pool.get().await.map(|conn| PostgresConnection { conn })
    }

    /// Runs one statement: rows for statements that return them (SELECT, WITH, VALUES,
    /// RETURNING), otherwise `row_count` = rows affected.
    pub async fn execute_query(&self, sql: &str, params: &[Value]) -> Result<QueryResult, OnexError> {
        self.execute_query_with(sql, params, QueryOptions::default()).await
    }

    /// [`Self::execute_query`] with per-call options.
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn would store its arguments twice in the future (see onex_runtime::node::dispatch)"
    )]
    pub fn execute_query_with(
        &self,
        sql: &str,
        params: &[Value],
        options: QueryOptions,
    ) -> impl Future<Output = Result<QueryResult, OnexError>> + Send {
        async move {
            let mut span = self.tracing.span("postgres.query", sql);
            let mut conn = self.pool.get_by(options.deadline).await.inspect_err(|e| span.failed(e))?;
            self.run_on(&mut conn, sql, params, options, Take::AllRows)
                .await
                .inspect_err(|e| span.failed(e))
                .map(|o| o.result)
        }
    }

    /// The first row, if any.
    pub async fn fetch_one(&self, sql: &str, params: &[Value]) -> Result<Option<Map<String, Value>>, OnexError> {
        let mut span = self.tracing.span("postgres.fetch_one", sql);
        let mut conn = self.pool.get().await.inspect_err(|e| span.failed(e))?;
        let outcome = self
            .run_on(&mut conn, sql, params, QueryOptions::default(), Take::FirstRow)
            .await
            .inspect_err(|e| span.failed(e))?;
        Ok(outcome.result.rows.into_iter().next())
    }

    /// The first column of the first row, if any.
    pub async fn fetch_value(&self, sql: &str, params: &[Value]) -> Result<Option<Value>, OnexError> {
        self.fetch_value_with(sql, params, QueryOptions::default()).await
    }

    /// [`Self::fetch_value`] with per-call options.
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn would store its arguments twice in the future (see onex_runtime::node::dispatch)"
    )]
    pub fn fetch_value_with(
        &self,
        sql: &str,
        params: &[Value],
        options: QueryOptions,
    ) -> impl Future<Output = Result<Option<Value>, OnexError>> + Send {
        async move {
            let mut span = self.tracing.span("postgres.fetch_value", sql);
            let mut conn = self.pool.get_by(options.deadline).await.inspect_err(|e| span.failed(e))?;
            Ok(self
                .run_on(&mut conn, sql, params, options, Take::FirstValue)
                .await
                .inspect_err(|e| span.failed(e))?
                .value)
        }
    }

    /// Starts a transaction. Commit it with [`Transaction::commit`]; dropping it (or an error
    /// in `commit`) rolls it back before the connection is reused.
    pub async fn begin(&self, options: TransactionOptions) -> Result<Transaction<'_>, OnexError> {
        let begin = options.begin_statement();
        let mut span = self.tracing.span("postgres.begin", &begin);
        let mut conn = self.pool.get().await.inspect_err(|e| span.failed(e))?;
        conn.in_transaction = true;
        conn.control(&begin, self.command_timeout).await.inspect_err(|e| span.failed(e))?;
        Ok(Transaction::new(self, conn))
    }

    /// Calls `schema.function($1, …)` with `args` (the schema defaults to the configured
    /// one); both names are quoted identifiers, so they cannot inject SQL.
    pub async fn call_function(
        &self,
        function: &str,
        args: &[Value],
        schema: Option<&str>,
    ) -> Result<QueryResult, OnexError> {
        self.call_function_with(function, args, schema, QueryOptions::default()).await
    }

    /// [`Self::call_function`] with per-call options.
    pub async fn call_function_with(
        &self,
        function: &str,
        args: &[Value],
        schema: Option<&str>,
        options: QueryOptions,
    ) -> Result<QueryResult, OnexError> {
        ident::validate_ident("function_name", function)?;
        let schema = schema.unwrap_or(&self.config.schema);
        ident::validate_ident("schema", schema)?;
        let placeholders: Vec<String> = (1..=args.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT * FROM {}.{}({})",
            ident::quote_ident(schema),
            ident::quote_ident(function),
            placeholders.join(", ")
        );
        let mut span = self.tracing.span("postgres.call_function", &sql);
        let mut conn = self.pool.get_by(options.deadline).await.inspect_err(|e| span.failed(e))?;
        self.run_on(&mut conn, &sql, args, options, Take::AllRows)
            .await
            .inspect_err(|e| span.failed(e))
            .map(|o| o.result)
    }

    /// Runs the four probes (version, current_schema, pg_stat_activity, schema exists):
    /// healthy when all pass, degraded when the schema is missing, unhealthy when the
    /// manager is closed or any probe fails. Never fails itself.
    pub async fn health_check(&self) -> PostgresHealth {
        health::check(self).await
    }

    /// Pool figures from live counters; does not touch the database.
    pub fn connection_stats(&self) -> ConnectionStats {
        self.pool.stats()
    }

    /// The newest `limit` recorded executions (at most 1000 are kept), newest first.
    pub fn query_metrics(&self, limit: usize) -> Vec<QueryMetric> {
        self.log.recent(limit)
    }

    /// Drops the recorded executions; returns how many there were.
    pub fn clear_metrics(&self) -> u64 {
        self.log.clear()
    }

    /// Closes the pool: waiters and new checkouts fail, idle connections close now and
    /// checked-out ones when they are returned.
    pub fn close(&self) {
        self.pool.close();
    }

    /// Whether [`Self::close`] ran.
    pub fn is_closed(&self) -> bool {
        self.pool.is_closed()
    }

    /// Runs a statement on a checked-out connection and records it.
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn would store its arguments twice in the future (see onex_runtime::node::dispatch)"
    )]
    fn run_on(
        &self,
        conn: &mut PooledConn,
        sql: &str,
        params: &[Value],
        options: QueryOptions,
        take: Take,
    ) -> impl Future<Output = Result<Outcome, OnexError>> + Send {
        async move {
            let started = Instant::now();
            let timeout = cut_by(options.timeout.unwrap_or(self.command_timeout), options.deadline, started);
            let connector = &self.pool.shared().connector;
            let running = self.live.as_ref().map(series::Live::start);
            let outcome = conn.run(sql, params, take, started, timeout, connector).await;
            drop(running);
            let elapsed = started.elapsed();
            conn.counters().record_query(elapsed, outcome.is_ok());
            if let Some(live) = &self.live {
                live.ran(elapsed);
            }
            if options.record_metrics {
                let record = match &outcome {
                    Ok(Outcome { result, info, .. }) => Record {
                        info: *info,
                        execution_time_ms: elapsed.as_secs_f64() * 1000.0,
                        rows: result.row_count,
                        error_code: None,
                        at: started + elapsed,
                    },
                    Err(e) => Record {
                        info: StatementInfo::of(sql),
                        execution_time_ms: elapsed.as_secs_f64() * 1000.0,
                        rows: 0,
                        error_code: Some(e.code().as_str()),
                        at: started + elapsed,
                    },
                };
                self.log.record(record);
            }
            outcome
        }
    }
}

/// A checked-out connection, for callers that need the driver directly. It returns to the
/// pool when dropped; leave it as you found it (no open transaction, same settings).
pub struct PostgresConnection {
    conn: PooledConn,
}

impl PostgresConnection {
    /// The tokio-postgres client.
    pub fn client(&self) -> &tokio_postgres::Client {
        self.conn.client()
    }
}

impl std::fmt::Debug for PostgresConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConnection").field("closed", &self.conn.is_closed()).finish_non_exhaustive()
    }
}
