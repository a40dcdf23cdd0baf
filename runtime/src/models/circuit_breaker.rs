//! Circuit-breaker shared models.
//!
//! [`CircuitBreakerConfig`] is the breaker's configuration: per-environment defaults
//! ([`CircuitBreakerConfig::for_environment`]), `CIRCUIT_BREAKER_*` overrides
//! ([`CircuitBreakerConfig::from_env`]) and validation ([`CircuitBreakerConfig::validate`]),
//! which refuses an out-of-range value with a `CONFIGURATION_ERROR` naming the field and its
//! allowed range instead of clamping it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::environment::{self, EnvSource, Environment};
use crate::error::OnexError;

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
    /// Opened by an operator: every call is rejected until a reset.
    ForcedOpen,
    /// Switched off by an operator: every call passes and nothing is recorded until a reset.
    Disabled,
}

impl CircuitBreakerState {
    /// Whether a breaker in this state counts as healthy: closed or half open (recovering).
    pub const fn is_healthy(self) -> bool {
        matches!(self, Self::Closed | Self::HalfOpen)
    }

    /// `closed`, `open`, `half_open`, `forced_open` or `disabled` (the serialized form).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
            Self::ForcedOpen => "forced_open",
            Self::Disabled => "disabled",
        }
    }
}

impl std::fmt::Display for CircuitBreakerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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

/// How the failure-rate and slow-call-rate policies delimit the recent calls they judge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlidingWindowType {
    /// The last `sliding_window_size` calls.
    CountBased,
    /// The calls of the last `sliding_window_size` seconds.
    TimeBased,
}

/// Breaker settings; each field names its allowed range.
///
/// The first seven fields are those of the original system. The others configure the
/// policies added beside the consecutive-failures one (failure rate and slow-call rate over a
/// sliding window, growth and jitter of the open wait); they have serde defaults, so a
/// configuration written before they existed still deserializes.
///
/// Cross-field rules: `recovery_timeout_secs ≥ 2 × failure_threshold`,
/// `success_threshold ≤ failure_threshold`, `slow_call_duration_threshold_ms ≤
/// timeout_secs × 1000`, `max_recovery_timeout_secs ≥ recovery_timeout_secs`, and for a
/// count-based window `minimum_number_of_calls ≤ sliding_window_size`.
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
    /// Percentage of failed calls in the sliding window that opens the circuit (1–100), or 0
    /// to switch the failure-rate policy off. Default 50.
    #[serde(default = "defaults::failure_rate_threshold")]
    pub failure_rate_threshold: u32,
    /// Percentage of slow calls in the sliding window that opens the circuit (1–100), or 0 to
    /// switch the slow-call policy off. Default 100: only a window of nothing but slow calls.
    #[serde(default = "defaults::slow_call_rate_threshold")]
    pub slow_call_rate_threshold: u32,
    /// A call at least this slow (milliseconds) is slow (1 – timeout_secs × 1000). Default 5000.
    #[serde(default = "defaults::slow_call_duration_threshold_ms")]
    pub slow_call_duration_threshold_ms: u64,
    /// Count-based or time-based window. Default count-based.
    #[serde(default = "defaults::sliding_window_type")]
    pub sliding_window_type: SlidingWindowType,
    /// Calls (count-based, 1–1000) or seconds (time-based, 1–300) in the window. Default 100.
    #[serde(default = "defaults::sliding_window_size")]
    pub sliding_window_size: u32,
    /// Calls the window must hold before either rate can open the circuit (1–1000). Default 20.
    #[serde(default = "defaults::minimum_number_of_calls")]
    pub minimum_number_of_calls: u32,
    /// Each reopen from half-open multiplies the open wait by this (1.0–10.0). Default 1.0:
    /// the wait stays `recovery_timeout_secs`.
    #[serde(default = "defaults::backoff_multiplier")]
    pub backoff_multiplier: f64,
    /// Ceiling of the grown open wait, in seconds (recovery_timeout_secs – 3600). Default 300.
    #[serde(default = "defaults::max_recovery_timeout_secs")]
    pub max_recovery_timeout_secs: u32,
    /// The open wait is lengthened by a random 0 – this percent (0–100), so that instances
    /// opened together do not all probe together. Default 0 (no jitter).
    #[serde(default = "defaults::jitter_percent")]
    pub jitter_percent: u32,
}

/// Serde defaults of the fields added after the original seven.
mod defaults {
    use super::SlidingWindowType;

    pub(super) fn failure_rate_threshold() -> u32 {
        50
    }
    pub(super) fn slow_call_rate_threshold() -> u32 {
        100
    }
    pub(super) fn slow_call_duration_threshold_ms() -> u64 {
        5_000
    }
    pub(super) fn sliding_window_type() -> SlidingWindowType {
        SlidingWindowType::CountBased
    }
    pub(super) fn sliding_window_size() -> u32 {
        100
    }
    pub(super) fn minimum_number_of_calls() -> u32 {
        20
    }
    pub(super) fn backoff_multiplier() -> f64 {
        1.0
    }
    pub(super) fn max_recovery_timeout_secs() -> u32 {
        300
    }
    pub(super) fn jitter_percent() -> u32 {
        0
    }
}

/// The environment variables [`CircuitBreakerConfig::from_env`] reads, with the field each
/// sets.
pub const ENV_VARIABLES: [(&str, &str); 7] = [
    ("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "failure_threshold"),
    ("CIRCUIT_BREAKER_RECOVERY_TIMEOUT", "recovery_timeout_secs"),
    ("CIRCUIT_BREAKER_SUCCESS_THRESHOLD", "success_threshold"),
    ("CIRCUIT_BREAKER_TIMEOUT", "timeout_secs"),
    ("CIRCUIT_BREAKER_MAX_QUEUE", "max_queue_size"),
    ("CIRCUIT_BREAKER_DEAD_LETTER", "dead_letter_enabled"),
    ("CIRCUIT_BREAKER_GRACEFUL_DEGRADATION", "graceful_degradation"),
];

impl CircuitBreakerConfig {
    /// The defaults of `environment`:
    ///
    /// | environment | failures | recovery | successes | timeout | queue | dead letter |
    /// |-------------|----------|----------|-----------|---------|-------|-------------|
    /// | production  | 5        | 60 s     | 3         | 30 s    | 1000  | on          |
    /// | staging     | 3        | 30 s     | 2         | 20 s    | 500   | on          |
    /// | development | 2        | 15 s     | 1         | 10 s    | 100   | off         |
    ///
    /// Graceful degradation is on everywhere; the window, slow-call and backoff fields take
    /// their serde defaults.
    pub fn for_environment(environment: Environment) -> Self {
        let (failure, recovery, success, timeout, queue, dead_letter) = match environment {
            Environment::Production => (5, 60, 3, 30, 1000, true),
            Environment::Staging => (3, 30, 2, 20, 500, true),
            Environment::Development => (2, 15, 1, 10, 100, false),
        };
        Self {
            failure_threshold: failure,
            recovery_timeout_secs: recovery,
            success_threshold: success,
            timeout_secs: timeout,
            max_queue_size: queue,
            dead_letter_enabled: dead_letter,
            graceful_degradation: true,
            failure_rate_threshold: defaults::failure_rate_threshold(),
            slow_call_rate_threshold: defaults::slow_call_rate_threshold(),
            slow_call_duration_threshold_ms: defaults::slow_call_duration_threshold_ms(),
            sliding_window_type: defaults::sliding_window_type(),
            sliding_window_size: defaults::sliding_window_size(),
            minimum_number_of_calls: defaults::minimum_number_of_calls(),
            backoff_multiplier: defaults::backoff_multiplier(),
            max_recovery_timeout_secs: defaults::max_recovery_timeout_secs(),
            jitter_percent: defaults::jitter_percent(),
        }
    }

    /// The defaults of the detected environment (unknown means development) with the
    /// overrides of [`ENV_VARIABLES`] applied, validated. A value that does not parse or is
    /// out of range is a `CONFIGURATION_ERROR` naming the variable.
    pub fn from_env(env: &dyn EnvSource) -> Result<Self, OnexError> {
        let mut config = Self::for_environment(Environment::detect(env));
        config.failure_threshold =
            environment::parse_or(env, "CIRCUIT_BREAKER_FAILURE_THRESHOLD", config.failure_threshold)?;
        config.recovery_timeout_secs =
            environment::parse_or(env, "CIRCUIT_BREAKER_RECOVERY_TIMEOUT", config.recovery_timeout_secs)?;
        config.success_threshold =
            environment::parse_or(env, "CIRCUIT_BREAKER_SUCCESS_THRESHOLD", config.success_threshold)?;
        config.timeout_secs = environment::parse_or(env, "CIRCUIT_BREAKER_TIMEOUT", config.timeout_secs)?;
        config.max_queue_size = environment::parse_or(env, "CIRCUIT_BREAKER_MAX_QUEUE", config.max_queue_size)?;
        config.dead_letter_enabled =
            environment::flag_or(env, "CIRCUIT_BREAKER_DEAD_LETTER", config.dead_letter_enabled)?;
        config.graceful_degradation =
            environment::flag_or(env, "CIRCUIT_BREAKER_GRACEFUL_DEGRADATION", config.graceful_degradation)?;
        config.validate().map_err(|err| {
            // Name the variable that set the offending field, when one did.
            let field = err.details().get("field").and_then(|f| f.as_str()).map(str::to_owned);
            match ENV_VARIABLES.iter().find(|(var, f)| Some(*f) == field.as_deref() && env.var(var).is_some()) {
                Some((var, _)) => err.with_detail("variable", *var),
                None => err,
            }
        })?;
        Ok(config)
    }

    /// Checks every field against its range and the cross-field rules (see the type's
    /// documentation). The error is a `CONFIGURATION_ERROR` whose message names the field,
    /// its allowed range and the value, with the details `field`, `min`, `max` and `value`.
    pub fn validate(&self) -> Result<(), OnexError> {
        range("failure_threshold", self.failure_threshold.into(), 1, 20)?;
        range("recovery_timeout_secs", self.recovery_timeout_secs.into(), 5, 300)?;
        range("success_threshold", self.success_threshold.into(), 1, 10)?;
        range("timeout_secs", self.timeout_secs.into(), 5, 120)?;
        range("max_queue_size", self.max_queue_size.into(), 10, 10_000)?;
        range("failure_rate_threshold", self.failure_rate_threshold.into(), 0, 100)?;
        range("slow_call_rate_threshold", self.slow_call_rate_threshold.into(), 0, 100)?;
        let window_max = match self.sliding_window_type {
            SlidingWindowType::CountBased => 1000,
            SlidingWindowType::TimeBased => 300,
        };
        range("sliding_window_size", self.sliding_window_size.into(), 1, window_max)?;
        range("jitter_percent", self.jitter_percent.into(), 0, 100)?;
        // Cross-field rules, named after the field the rule bounds.
        cross(
            "recovery_timeout_secs",
            self.recovery_timeout_secs.into(),
            2 * u64::from(self.failure_threshold),
            300,
            "recovery_timeout_secs >= 2 x failure_threshold",
        )?;
        cross(
            "success_threshold",
            self.success_threshold.into(),
            1,
            self.failure_threshold.into(),
            "success_threshold <= failure_threshold",
        )?;
        cross(
            "slow_call_duration_threshold_ms",
            self.slow_call_duration_threshold_ms,
            1,
            u64::from(self.timeout_secs) * 1000,
            "slow_call_duration_threshold_ms <= timeout_secs x 1000",
        )?;
        match self.sliding_window_type {
            SlidingWindowType::CountBased => cross(
                "minimum_number_of_calls",
                self.minimum_number_of_calls.into(),
                1,
                self.sliding_window_size.into(),
                "minimum_number_of_calls <= sliding_window_size of a count-based window",
            )?,
            SlidingWindowType::TimeBased => {
                range("minimum_number_of_calls", self.minimum_number_of_calls.into(), 1, 1000)?
            }
        }
        cross(
            "max_recovery_timeout_secs",
            self.max_recovery_timeout_secs.into(),
            self.recovery_timeout_secs.into(),
            3600,
            "max_recovery_timeout_secs >= recovery_timeout_secs",
        )?;
        if !(self.backoff_multiplier.is_finite() && (1.0..=10.0).contains(&self.backoff_multiplier)) {
            return Err(OnexError::configuration(format!(
                "circuit breaker backoff_multiplier must be between 1.0 and 10.0, got {}",
                self.backoff_multiplier
            ))
            .with_detail("field", "backoff_multiplier")
            .with_detail("min", 1.0)
            .with_detail("max", 10.0));
        }
        Ok(())
    }
}

/// `Ok` when `min ≤ value ≤ max`, else the error [`CircuitBreakerConfig::validate`] documents.
fn range(field: &str, value: u64, min: u64, max: u64) -> Result<(), OnexError> {
    if (min..=max).contains(&value) {
        return Ok(());
    }
    Err(OnexError::configuration(format!("circuit breaker {field} must be between {min} and {max}, got {value}"))
        .with_detail("field", field)
        .with_detail("min", min)
        .with_detail("max", max)
        .with_detail("value", value))
}

/// [`range`] for a bound that comes from another field: the message and the `rule` detail
/// say which rule it is.
fn cross(field: &str, value: u64, min: u64, max: u64, rule: &str) -> Result<(), OnexError> {
    range(field, value, min, max).map_err(|err| {
        let message = format!("{} (rule: {rule})", err.message());
        let mut out = OnexError::configuration(message);
        for (key, value) in err.details() {
            out = out.with_detail(key.clone(), value.clone());
        }
        out.with_detail("rule", rule)
    })
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
    #[serde(default, with = "crate::rfc3339::option")]
    pub last_failure: Option<DateTime<Utc>>,
    /// Last success.
    #[serde(default, with = "crate::rfc3339::option")]
    pub last_success: Option<DateTime<Utc>>,
}

/// One dead-letter entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetterEntry {
    /// The event, as published.
    pub event: serde_json::Value,
    /// When it was dead-lettered.
    #[serde(with = "crate::rfc3339")]
    pub timestamp: DateTime<Utc>,
    /// Why ("Queue capacity exceeded").
    pub reason: String,
    /// Breaker state at that moment.
    pub circuit_state: CircuitBreakerState,
    /// Republish attempts so far.
    pub retry_count: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_are_the_serialized_forms() {
        use CircuitBreakerState::*;
        for state in [Closed, Open, HalfOpen, ForcedOpen, Disabled] {
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
            assert_eq!(state.to_string(), state.as_str());
        }
    }
}
