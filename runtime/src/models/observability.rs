//! Observability shared models.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Metric types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricType {
    /// A running total that only grows (a lower value is a reset of its source); each
    /// sample is the total, not an increment.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// A distribution: each sample is one observation.
    Histogram,
}

impl MetricType {
    /// `counter`, `gauge` or `histogram` (the serialized form).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

impl std::fmt::Display for MetricType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricPoint {
    /// Metric name as exported: a counter's ends with `_total`.
    pub name: String,
    /// Value.
    pub value: f64,
    /// When it was taken.
    #[serde(with = "crate::rfc3339")]
    pub timestamp: DateTime<Utc>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Type.
    pub metric_type: MetricType,
}

/// Alert severities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertSeverity {
    /// Informational.
    Low,
    /// Queue above 80 % or DLQ above 10.
    Medium,
    /// Error rate above 10 % or latency above 5 s.
    High,
    /// Circuit open.
    Critical,
}

impl AlertSeverity {
    /// `low`, `medium`, `high` or `critical` (the serialized form).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

impl std::fmt::Display for AlertSeverity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An alert, de-duplicated by name until resolved: while one of a name is unresolved, raising
/// that name again updates it (message, details, `last_seen_at`, `occurrences`) instead of
/// adding another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// `{name}_{epoch seconds}_{sequence}`: unique even when an alert of the same name is
    /// raised, resolved and raised again within a second.
    pub id: String,
    /// Alert name.
    pub name: String,
    /// Severity.
    pub severity: AlertSeverity,
    /// What happened.
    pub message: String,
    /// Figures behind it.
    #[serde(default)]
    pub details: serde_json::Map<String, serde_json::Value>,
    /// Raised at.
    #[serde(with = "crate::rfc3339")]
    pub created_at: DateTime<Utc>,
    /// The last time its condition was seen (the last raise).
    #[serde(with = "crate::rfc3339")]
    pub last_seen_at: DateTime<Utc>,
    /// How many times it was raised while unresolved (1 for a new alert).
    #[serde(default = "one")]
    pub occurrences: u64,
    /// Resolved?
    pub resolved: bool,
    /// Resolved at.
    #[serde(default, with = "crate::rfc3339::option")]
    pub resolved_at: Option<DateTime<Utc>>,
}

fn one() -> u64 {
    1
}
