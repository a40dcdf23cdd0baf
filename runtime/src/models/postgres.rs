//! PostgreSQL shared models.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::models::health::HealthStatus;
use crate::sensitive::Sensitive;

/// TLS modes for the PostgreSQL connection (`POSTGRES_SSL_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it.
    #[default]
    Prefer,
    /// TLS always, without verifying the server.
    Require,
    /// TLS always, verifying the certificate chain and the host name.
    VerifyFull,
}

/// Connection and pool settings; every field has a `POSTGRES_*` variable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostgresConnectionConfig {
    /// `POSTGRES_HOST`.
    pub host: String,
    /// `POSTGRES_PORT` (5432).
    pub port: u16,
    /// `POSTGRES_DATABASE`.
    pub database: String,
    /// `POSTGRES_USER`.
    pub user: String,
    /// `POSTGRES_PASSWORD` or the trimmed content of `POSTGRES_PASSWORD_FILE`.
    #[serde(default)]
    pub password: Sensitive<String>,
    /// `POSTGRES_SCHEMA` ("infrastructure"); set as `search_path = <schema>, public`.
    pub schema: String,
    /// `POSTGRES_MIN_CONNECTIONS` (5): kept open and replenished in the background.
    pub min_connections: u32,
    /// `POSTGRES_MAX_CONNECTIONS` (50).
    pub max_connections: u32,
    /// `POSTGRES_MAX_INACTIVE_LIFETIME` (300 s): idle connections older than this are closed.
    pub max_inactive_connection_lifetime_secs: u64,
    /// `POSTGRES_MAX_QUERIES` (50,000): a connection is recycled after this many queries.
    pub max_queries: u64,
    /// `POSTGRES_COMMAND_TIMEOUT` (60 s).
    pub command_timeout_secs: f64,
    /// `POSTGRES_SSL_MODE` (prefer).
    pub ssl_mode: SslMode,
    /// `POSTGRES_SSL_CERT_FILE`.
    #[serde(default)]
    pub ssl_cert_file: Option<String>,
    /// `POSTGRES_SSL_KEY_FILE`.
    #[serde(default)]
    pub ssl_key_file: Option<String>,
    /// `POSTGRES_SSL_CA_FILE`.
    #[serde(default)]
    pub ssl_ca_file: Option<String>,
    /// `POSTGRES_POOL_WAIT_TIMEOUT` (5 s): how long a caller waits for a free connection.
    #[serde(default = "default_wait_timeout_secs")]
    pub wait_timeout_secs: f64,
    /// `POSTGRES_POOL_CREATE_TIMEOUT` (5 s): connect plus session set-up of one connection.
    #[serde(default = "default_create_timeout_secs")]
    pub create_timeout_secs: f64,
    /// `POSTGRES_POOL_RECYCLE_TIMEOUT` (1 s): the `ROLLBACK` that cleans a connection returned
    /// inside an open transaction.
    #[serde(default = "default_recycle_timeout_secs")]
    pub recycle_timeout_secs: f64,
    /// `POSTGRES_POOL_MAINTENANCE_INTERVAL` (1 s): how often the reaper closes expired idle
    /// connections and replenishes the pool to `min_connections`.
    #[serde(default = "default_maintenance_interval_secs")]
    pub maintenance_interval_secs: f64,
    /// `POSTGRES_STATEMENT_CACHE_SIZE` (256): prepared statements kept per connection.
    #[serde(default = "default_statement_cache_size")]
    pub statement_cache_size: usize,
    /// `POSTGRES_APPLICATION_NAME` ("onex-runtime"): shown in `pg_stat_activity`.
    #[serde(default = "default_application_name")]
    pub application_name: String,
}

fn default_wait_timeout_secs() -> f64 {
    5.0
}

fn default_create_timeout_secs() -> f64 {
    5.0
}

fn default_recycle_timeout_secs() -> f64 {
    1.0
}

fn default_maintenance_interval_secs() -> f64 {
    1.0
}

fn default_statement_cache_size() -> usize {
    256
}

fn default_application_name() -> String {
    "onex-runtime".to_owned()
}

impl PostgresConnectionConfig {
    /// A configuration for `user@host:port/database` using `schema`, with every pool setting at
    /// its default (min 5, max 50, 300 s idle, 50,000 queries, 60 s command timeout, TLS prefer).
    pub fn new(
        host: impl Into<String>,
        port: u16,
        database: impl Into<String>,
        user: impl Into<String>,
        schema: impl Into<String>,
    ) -> Self {
        Self {
            host: host.into(),
            port,
            database: database.into(),
            user: user.into(),
            password: Sensitive::default(),
            schema: schema.into(),
            min_connections: 5,
            max_connections: 50,
            max_inactive_connection_lifetime_secs: 300,
            max_queries: 50_000,
            command_timeout_secs: 60.0,
            ssl_mode: SslMode::Prefer,
            ssl_cert_file: None,
            ssl_key_file: None,
            ssl_ca_file: None,
            wait_timeout_secs: default_wait_timeout_secs(),
            create_timeout_secs: default_create_timeout_secs(),
            recycle_timeout_secs: default_recycle_timeout_secs(),
            maintenance_interval_secs: default_maintenance_interval_secs(),
            statement_cache_size: default_statement_cache_size(),
            application_name: default_application_name(),
        }
    }
}

/// What kind of statement a query is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueryType {
    /// SELECT / WITH.
    Select,
    /// INSERT.
    Insert,
    /// UPDATE.
    Update,
    /// DELETE.
    Delete,
    /// CREATE / ALTER / DROP.
    Ddl,
    /// GRANT / REVOKE.
    Dcl,
    /// BEGIN / COMMIT / ROLLBACK.
    Tcl,
    /// Anything else.
    #[default]
    General,
}

/// Transaction isolation levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IsolationLevel {
    /// READ COMMITTED (PostgreSQL's default).
    #[default]
    ReadCommitted,
    /// REPEATABLE READ.
    RepeatableRead,
    /// SERIALIZABLE.
    Serializable,
}

/// Rows returned by a statement.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueryResult {
    /// Each row as column name → JSON value.
    pub rows: Vec<serde_json::Map<String, serde_json::Value>>,
    /// Column names in select order.
    pub column_names: Vec<String>,
    /// Number of rows returned, or affected for statements without rows.
    pub row_count: u64,
    /// Whether more rows exist than were returned.
    #[serde(default)]
    pub has_more: bool,
    /// The command tag PostgreSQL reported for statements without rows (`INSERT 0 3`).
    #[serde(default)]
    pub command_tag: Option<String>,
}

/// One recorded query execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryMetric {
    /// A hash of the statement text, stable across processes (FNV-1a 64, hex).
    pub query_hash: String,
    /// The statement kind.
    pub query_type: QueryType,
    /// Wall time.
    pub execution_time_ms: f64,
    /// Rows returned or affected.
    pub rows_affected: u64,
    /// Whether it succeeded.
    pub success: bool,
    /// When it finished.
    #[serde(with = "crate::rfc3339")]
    pub timestamp: DateTime<Utc>,
    /// The error code when it failed.
    #[serde(default)]
    pub error_code: Option<String>,
}

/// One bucket of a latency histogram: count of observations `<= le_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistogramBucket {
    /// Upper bound in milliseconds (`f64::INFINITY` is written as `null`).
    pub le_ms: Option<f64>,
    /// Cumulative count.
    pub count: u64,
}

/// Pool figures, computed from live counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnectionStats {
    /// Open connections.
    pub size: u32,
    /// Open and idle.
    pub idle: u32,
    /// Checked out.
    pub in_use: u32,
    /// Callers waiting for a connection.
    pub waiting: u32,
    /// Configured minimum.
    pub min_size: u32,
    /// Configured maximum.
    pub max_size: u32,
    /// Successful checkouts.
    pub checkouts: u64,
    /// Checkouts that had to wait.
    pub waited_checkouts: u64,
    /// Checkouts that hit the wait timeout.
    pub wait_timeouts: u64,
    /// Wait-time histogram (cumulative buckets).
    pub wait_time_histogram: Vec<HistogramBucket>,
    /// Connections opened.
    pub connections_created: u64,
    /// Connections closed, by reason (`idle`, `max_queries`, `broken`, `shutdown`, …).
    pub connections_closed: BTreeMap<String, u64>,
    /// Failed connection attempts and acquire errors.
    pub failed_connections: u64,
    /// Queries run.
    pub total_queries: u64,
    /// Queries that failed.
    pub failed_queries: u64,
    /// Mean wall time of every recorded query, failures included.
    #[serde(default)]
    pub average_query_time_ms: f64,
}

/// The result of the four health probes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostgresHealth {
    /// Overall state.
    pub status: HealthStatus,
    /// When the check ran.
    #[serde(with = "crate::rfc3339")]
    pub timestamp: DateTime<Utc>,
    /// Pool figures at that moment.
    pub connection_pool: ConnectionStats,
    /// `SELECT version()`.
    #[serde(default)]
    pub server_version: Option<String>,
    /// `current_schema()`.
    #[serde(default)]
    pub current_schema: Option<String>,
    /// Connections to this database according to `pg_stat_activity`.
    #[serde(default)]
    pub active_connections: Option<i64>,
    /// The configured schema.
    pub schema: String,
    /// Whether it exists.
    pub schema_exists: bool,
    /// How long the probes took.
    pub response_time_ms: f64,
    /// What failed.
    #[serde(default)]
    pub errors: Vec<String>,
}
