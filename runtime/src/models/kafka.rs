//! Kafka shared models.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::models::health::HealthStatus;
use crate::sensitive::Sensitive;

/// The four Kafka security protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SecurityProtocol {
    /// No TLS, no authentication.
    #[default]
    Plaintext,
    /// TLS.
    Ssl,
    /// SASL without TLS.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

/// TLS settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KafkaSslConfig {
    /// CA bundle (`ssl.ca.location`).
    #[serde(default)]
    pub ca_location: Option<String>,
    /// Client certificate (`ssl.certificate.location`), for mTLS.
    #[serde(default)]
    pub certificate_location: Option<String>,
    /// Client key (`ssl.key.location`), for mTLS.
    #[serde(default)]
    pub key_location: Option<String>,
    /// Password of the client key.
    #[serde(default)]
    pub key_password: Option<Sensitive<String>>,
    /// Verify the broker's host name (true).
    #[serde(default = "default_true")]
    pub check_hostname: bool,
}

/// SASL settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KafkaSaslConfig {
    /// `PLAIN` (default), `SCRAM-SHA-256`, `SCRAM-SHA-512`.
    #[serde(default = "default_sasl_mechanism")]
    pub mechanism: String,
    /// User name.
    pub username: String,
    /// Password.
    pub password: Sensitive<String>,
}

/// Security settings of a producer or consumer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KafkaSecurityConfig {
    /// Protocol.
    #[serde(default)]
    pub security_protocol: SecurityProtocol,
    /// TLS settings (SSL, SASL_SSL).
    #[serde(default)]
    pub ssl: Option<KafkaSslConfig>,
    /// SASL settings (SASL_PLAINTEXT, SASL_SSL).
    #[serde(default)]
    pub sasl: Option<KafkaSaslConfig>,
}

/// Producer settings, mapped onto librdkafka properties by `onex_runtime::kafka::config`.
///
/// Only `bootstrap_servers` is required; every other field has the default of
/// [`KafkaProducerConfig::new`] when absent from serialized input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KafkaProducerConfig {
    /// Comma-separated `host:port` list.
    pub bootstrap_servers: String,
    /// `client.id`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// `acks`: `all` by default.
    #[serde(default = "default_acks")]
    pub acks: String,
    /// `enable.idempotence`: on by default.
    #[serde(default = "default_true")]
    pub enable_idempotence: bool,
    /// `linger.ms`.
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u32,
    /// `batch.size` in bytes.
    #[serde(default = "default_batch_size")]
    pub batch_size: u32,
    /// `compression.type`.
    #[serde(default)]
    pub compression_type: Option<String>,
    /// `message.max.bytes`.
    #[serde(default = "default_max_request_size")]
    pub max_request_size: u32,
    /// `request.timeout.ms`.
    #[serde(default = "default_timeout_ms")]
    pub request_timeout_ms: u32,
    /// `message.timeout.ms` (delivery timeout): finite, 30 s by default.
    #[serde(default = "default_timeout_ms")]
    pub delivery_timeout_ms: u32,
    /// Messages in flight per producer before `publish` waits (backpressure).
    #[serde(default = "default_max_in_flight_messages")]
    pub max_in_flight_messages: u32,
    /// Security.
    #[serde(default)]
    pub security: KafkaSecurityConfig,
}

impl KafkaProducerConfig {
    /// Default `linger.ms`: measured with `scripts/bench-kafka.sh` (see the README).
    pub const DEFAULT_LINGER_MS: u32 = 5;
    /// Default `batch.size`: librdkafka's own (1 MB); `linger.ms` bounds batches first.
    pub const DEFAULT_BATCH_SIZE: u32 = 1_000_000;
    /// Default request and delivery timeout: 30 s, never librdkafka's 300 s.
    pub const DEFAULT_TIMEOUT_MS: u32 = 30_000;
    /// Default bound on messages in flight per producer.
    pub const DEFAULT_MAX_IN_FLIGHT_MESSAGES: u32 = 100_000;

    /// The defaults for `bootstrap_servers`: acks=all, idempotence on, 30 s delivery
    /// timeout, PLAINTEXT.
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            client_id: None,
            acks: default_acks(),
            enable_idempotence: true,
            linger_ms: Self::DEFAULT_LINGER_MS,
            batch_size: Self::DEFAULT_BATCH_SIZE,
            compression_type: None,
            max_request_size: default_max_request_size(),
            request_timeout_ms: Self::DEFAULT_TIMEOUT_MS,
            delivery_timeout_ms: Self::DEFAULT_TIMEOUT_MS,
            max_in_flight_messages: Self::DEFAULT_MAX_IN_FLIGHT_MESSAGES,
            security: KafkaSecurityConfig::default(),
        }
    }
}

/// Per-topic traffic.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KafkaTopicStats {
    /// Messages acknowledged by the broker.
    pub sent: u64,
    /// Messages that failed delivery.
    pub failed: u64,
    /// Payload bytes acknowledged.
    pub bytes: u64,
    /// Last delivery report.
    #[serde(default, with = "crate::rfc3339::option")]
    pub last_activity: Option<DateTime<Utc>>,
}

/// Pool statistics, computed from real counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KafkaProducerPoolStats {
    /// Pool name.
    pub pool_name: String,
    /// Producers alive.
    pub total_producers: u32,
    /// Producers with messages in flight.
    pub active_producers: u32,
    /// Producers with nothing in flight.
    pub idle_producers: u32,
    /// Producers quarantined after a fatal error.
    pub failed_producers: u32,
    /// Messages acknowledged.
    pub total_messages_sent: u64,
    /// Messages failed.
    pub total_messages_failed: u64,
    /// Payload bytes acknowledged.
    pub total_bytes_sent: u64,
    /// Messages enqueued and not yet reported.
    pub queue_depth: u64,
    /// Times a send found librdkafka's queue full and waited for deliveries.
    #[serde(default)]
    pub queue_full_events: u64,
    /// Acknowledged messages per second since start.
    pub messages_per_second: f64,
    /// Mean delivery latency.
    pub average_delivery_ms: f64,
    /// p50 delivery latency.
    pub p50_delivery_ms: f64,
    /// p99 delivery latency.
    pub p99_delivery_ms: f64,
    /// `sent / (sent + failed) × 100`, 100 when idle.
    pub success_rate: f64,
    /// `100 − success_rate`.
    pub error_rate: f64,
    /// Health.
    pub pool_health: HealthStatus,
    /// Seconds since the pool started.
    pub uptime_seconds: f64,
    /// Per-topic traffic.
    #[serde(default)]
    pub topics: BTreeMap<String, KafkaTopicStats>,
}

fn default_true() -> bool {
    true
}

fn default_sasl_mechanism() -> String {
    "PLAIN".to_owned()
}

fn default_acks() -> String {
    "all".to_owned()
}

fn default_linger_ms() -> u32 {
    KafkaProducerConfig::DEFAULT_LINGER_MS
}

fn default_batch_size() -> u32 {
    KafkaProducerConfig::DEFAULT_BATCH_SIZE
}

fn default_max_request_size() -> u32 {
    1_048_576
}

fn default_timeout_ms() -> u32 {
    KafkaProducerConfig::DEFAULT_TIMEOUT_MS
}

fn default_max_in_flight_messages() -> u32 {
    KafkaProducerConfig::DEFAULT_MAX_IN_FLIGHT_MESSAGES
}
