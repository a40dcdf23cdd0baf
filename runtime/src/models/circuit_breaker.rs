//! Circuit-breaker shared models.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Breaker states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitBreakerState {
    /// Calls pass.
    Closed,
    /// Calls are rejected without I/O.
    Open,
    /// Trial calls decide whether to close again.
    HalfOpen,
}

/// What the breaker did with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitAction {
    /// Sent to the publisher.
    Published,
    /// Kept for republishing when the circuit closes.
    Queued,
    /// Moved to the dead-letter queue or discarded.
    Dropped,
    /// Refused (degradation off).
    Rejected,
}

/// Breaker settings; each field names its allowed range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Consecutive failures that open the circuit (1–20).
    pub failure_threshold: u32,
    /// Seconds open before a trial call (5–300).
    pub recovery_timeout_secs: u32,
    /// Successes in half-open that close it (1–10).
    pub success_threshold: u32,
    /// A call slower than this counts as a failure (5–120 s).
    pub timeout_secs: u32,
    /// Events queued while open (10–10000).
    pub max_queue_size: u32,
    /// Overflow goes to the dead-letter queue.
    pub dead_letter_enabled: bool,
    /// Queue instead of failing.
    pub graceful_degradation: bool,
}

/// Breaker counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CircuitBreakerMetrics {
    /// Events seen.
    pub total_events: u64,
    /// Published.
    pub successful_events: u64,
    /// Failed.
    pub failed_events: u64,
    /// Queued.
    pub queued_events: u64,
    /// Dropped.
    pub dropped_events: u64,
    /// In the dead-letter queue.
    pub dead_letter_events: u64,
    /// Times the circuit opened.
    pub circuit_opens: u64,
    /// Times it closed.
    pub circuit_closes: u64,
    /// Last failure.
    #[serde(default)]
    pub last_failure: Option<DateTime<Utc>>,
    /// Last success.
    #[serde(default)]
    pub last_success: Option<DateTime<Utc>>,
}

/// One dead-letter entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetterEntry {
    /// The event, as published.
    pub event: serde_json::Value,
    /// When it was dead-lettered.
    pub timestamp: DateTime<Utc>,
    /// Why ("Queue capacity exceeded").
    pub reason: String,
    /// Breaker state at that moment.
    pub circuit_state: CircuitBreakerState,
    /// Republish attempts so far.
    pub retry_count: u32,
}
