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
