//! Health states shared by every component.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The three health states, ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Everything works.
    Healthy,
    /// Serving, with reduced capacity or a failing optional part.
    Degraded,
    /// Not serving.
    Unhealthy,
}

impl HealthStatus {
    /// The worse of two states.
    pub fn worst(self, other: Self) -> Self {
        self.max(other)
    }

    /// The Prometheus value: 1 healthy, 0.5 degraded, 0 unhealthy.
    pub fn gauge(self) -> f64 {
        match self {
            Self::Healthy => 1.0,
            Self::Degraded => 0.5,
            Self::Unhealthy => 0.0,
        }
    }
}

/// The health of one component, as the health monitor aggregates it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentHealth {
    /// `postgres`, `kafka`, `circuit_breaker`, …
    pub component: String,
    /// Its state.
    pub status: HealthStatus,
    /// When it was checked.
    #[serde(with = "crate::rfc3339")]
    pub checked_at: DateTime<Utc>,
    /// How long the check took.
    pub response_time_ms: f64,
    /// Why it is not healthy.
    #[serde(default)]
    pub errors: Vec<String>,
    /// Component-specific figures.
    #[serde(default)]
    pub metrics: serde_json::Map<String, serde_json::Value>,
}

/// The five limits the health monitor holds its figures to; a figure above its limit makes a
/// healthy result degraded. One set per deployment environment
/// ([`crate::health::assess`] has the values).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HealthThresholds {
    /// Failed operations, percent of all operations.
    pub error_rate_percent: f64,
    /// The database's response time, in milliseconds.
    pub response_time_ms: f64,
    /// Connections checked out, percent of the pool's maximum.
    pub pool_utilization_percent: f64,
    /// Calls through the circuit breaker that failed, percent.
    pub breaker_failure_rate_percent: f64,
    /// Events waiting in the outbox for the broker.
    pub queued_events: u64,
}

/// What the health monitor measured for one result: the figures held to
/// [`HealthThresholds`].
///
/// Operations, failures and the breaker's failure rate count what happened since the
/// monitor's previous result (since it was created, for the first), so a burst of failures
/// weighs on the results that saw it and not on every later one.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct HealthFigures {
    /// Operations that succeeded: statements, Kafka deliveries, published events, breaker calls.
    pub operations: u64,
    /// Operations that failed: failed statements, checkouts that timed out, failed
    /// deliveries, events that failed for good, failed breaker calls.
    pub failures: u64,
    /// `failures / max(operations + failures, 1) × 100`.
    pub error_rate_percent: f64,
    /// The PostgreSQL probe's round trip; without PostgreSQL, the slowest probe's.
    pub response_time_ms: f64,
    /// PostgreSQL connections checked out, percent of the pool's maximum.
    pub pool_utilization_percent: f64,
    /// Failed calls through the circuit breaker, percent of its counted calls.
    pub breaker_failure_rate_percent: f64,
    /// Events waiting in the circuit breaker's outbox.
    pub queued_events: u64,
}

/// Infrastructure-wide figures of one result, read when it was made.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct HealthTotals {
    /// Open PostgreSQL connections.
    pub postgres_connections: u64,
    /// Live Kafka producers.
    pub kafka_producers: u64,
    /// Messages acknowledged by Kafka since the pool started.
    pub messages_processed: u64,
    /// Events waiting in the circuit breaker's outbox.
    pub events_queued: u64,
    /// The PostgreSQL probe's round trip, when PostgreSQL is checked.
    pub database_response_time_ms: Option<f64>,
    /// Kafka deliveries per second since the pool started, when Kafka is checked.
    pub kafka_messages_per_second: Option<f64>,
    /// The circuit breaker's `successful / max(total, 1) × 100`, when there is a breaker.
    pub circuit_breaker_success_rate: Option<f64>,
}

/// One result of the health monitor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthAssessment {
    /// Unhealthy when a critical component (PostgreSQL) is unhealthy; degraded when another
    /// component is not healthy or a figure is above its threshold; healthy otherwise.
    pub overall_status: HealthStatus,
    /// The environment whose thresholds applied.
    pub environment: crate::environment::Environment,
    /// When the check started.
    #[serde(with = "crate::rfc3339")]
    pub checked_at: DateTime<Utc>,
    /// How long the check took.
    pub duration_ms: f64,
    /// Every probe's result, then the `thresholds` component, whose errors name each figure
    /// above its limit.
    pub components: Vec<ComponentHealth>,
    /// The figures held to the thresholds.
    pub figures: HealthFigures,
    /// The thresholds that applied.
    pub thresholds: HealthThresholds,
    /// Infrastructure-wide figures.
    pub totals: HealthTotals,
}

/// One kept result, as trends list it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HealthSample {
    /// When the check started.
    #[serde(with = "crate::rfc3339")]
    pub checked_at: DateTime<Utc>,
    /// Its overall status.
    pub overall_status: HealthStatus,
    /// Its error rate.
    pub error_rate_percent: f64,
}

/// A summary of the kept results of a period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthTrends {
    /// The period, in seconds, ending now.
    pub period_seconds: u64,
    /// Kept results that started inside the period.
    pub samples: u64,
    /// Share of them that were healthy, percent (`None` without results).
    pub healthy_percent: Option<f64>,
    /// Share of them that were degraded, percent.
    pub degraded_percent: Option<f64>,
    /// Share of them that were unhealthy, percent.
    pub unhealthy_percent: Option<f64>,
    /// Mean of their error rates.
    pub average_error_rate_percent: Option<f64>,
    /// The results, oldest first.
    pub history: Vec<HealthSample>,
}
