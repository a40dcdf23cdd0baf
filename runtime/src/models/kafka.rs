//! Kafka shared models (seed inventory §2 and §8).

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

/// Producer settings, mapped onto librdkafka properties.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KafkaProducerConfig {
    /// Comma-separated `host:port` list.
    pub bootstrap_servers: String,
    /// `client.id`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// `acks`: `all` by default.
    pub acks: String,
    /// `enable.idempotence`: on by default.
    pub enable_idempotence: bool,
    /// `linger.ms`.
    pub linger_ms: u32,
    /// `batch.size` in bytes.
    pub batch_size: u32,
    /// `compression.type`.
    #[serde(default)]
    pub compression_type: Option<String>,
    /// `message.max.bytes`.
    pub max_request_size: u32,
    /// `request.timeout.ms`.
    pub request_timeout_ms: u32,
    /// `message.timeout.ms` (delivery timeout): finite, 30 s by default.
    pub delivery_timeout_ms: u32,
    /// Messages in flight per producer before `publish` waits (backpressure).
    pub max_in_flight_messages: u32,
    /// Security.
    #[serde(default)]
    pub security: KafkaSecurityConfig,
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
    #[serde(default)]
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
