//! Observability shared models.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Metric types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricType {
    /// Monotonic.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Distribution.
    Histogram,
}

/// One sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricPoint {
    /// Metric name.
    pub name: String,
    /// Value.
    pub value: f64,
    /// When it was taken.
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

/// An alert, de-duplicated by name until resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// `{name}_{epoch seconds}`.
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
    pub created_at: DateTime<Utc>,
    /// Resolved?
    pub resolved: bool,
    /// Resolved at.
    #[serde(default)]
    pub resolved_at: Option<DateTime<Utc>>,
}
