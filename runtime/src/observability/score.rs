//! The health score: one number from the circuit state, the event latency and the error rate.
//!
//! `score = 0.4 × circuit + 0.3 × latency + 0.3 × error`, where
//! - `circuit` is 100 for a closed (or disabled: calls pass) breaker, 50 for a half-open one
//!   (recovering: trial calls pass, the rest are refused) and 0 for an open or forced-open one;
//!   with several breakers the lowest counts, and with none it is 100;
//! - `latency = max(0, 100 − latency_s × 100)`: full marks at 0 s, none from 1 s on;
//! - `error = max(0, 100 − error_rate × 1000)`, the rate a fraction: none from 10 % on.
//!
//! A score of 90 or more is healthy, 70 or more degraded, anything lower unhealthy.

use crate::models::circuit_breaker::CircuitBreakerState;
use crate::models::health::HealthStatus;

/// Weight of the circuit score.
pub const CIRCUIT_WEIGHT: f64 = 0.4;
/// Weight of the latency score.
pub const LATENCY_WEIGHT: f64 = 0.3;
/// Weight of the error score.
pub const ERROR_WEIGHT: f64 = 0.3;
/// Lowest healthy score.
pub const HEALTHY_FROM: f64 = 90.0;
/// Lowest degraded score.
pub const DEGRADED_FROM: f64 = 70.0;

/// A health score and its parts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthScore {
    /// The weighted score, 0 to 100.
    pub score: f64,
    /// The status it maps to.
    pub status: HealthStatus,
    /// The circuit part, 0 to 100.
    pub circuit: f64,
    /// The latency part, 0 to 100.
    pub latency: f64,
    /// The error part, 0 to 100.
    pub error: f64,
}

/// The circuit score of one breaker state.
pub const fn circuit_score(state: CircuitBreakerState) -> f64 {
    match state {
        CircuitBreakerState::Closed | CircuitBreakerState::Disabled => 100.0,
        CircuitBreakerState::HalfOpen => 50.0,
        CircuitBreakerState::Open | CircuitBreakerState::ForcedOpen => 0.0,
    }
}

/// The circuit score of several breakers: the lowest, or 100 without any.
pub fn circuits_score(states: impl IntoIterator<Item = CircuitBreakerState>) -> f64 {
    states.into_iter().map(circuit_score).fold(100.0, f64::min)
}

/// The score of `circuit` (0–100), a latency of `latency_s` seconds and an error rate of
/// `error_rate` (a fraction).
pub fn health_score(circuit: f64, latency_s: f64, error_rate: f64) -> HealthScore {
    let circuit = circuit.clamp(0.0, 100.0);
    let latency = (100.0 - latency_s * 100.0).clamp(0.0, 100.0);
    let error = (100.0 - error_rate * 1000.0).clamp(0.0, 100.0);
    let score = CIRCUIT_WEIGHT * circuit + LATENCY_WEIGHT * latency + ERROR_WEIGHT * error;
    HealthScore { score, status: status_of(score), circuit, latency, error }
}

/// The status a score maps to.
pub fn status_of(score: f64) -> HealthStatus {
    if score >= HEALTHY_FROM {
        HealthStatus::Healthy
    } else if score >= DEGRADED_FROM {
        HealthStatus::Degraded
    } else {
        HealthStatus::Unhealthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn a_closed_circuit_with_no_latency_and_no_errors_scores_100() {
        let s = health_score(100.0, 0.0, 0.0);
        assert!(close(s.score, 100.0), "{s:?}");
        assert_eq!(s.status, HealthStatus::Healthy);
    }

    #[test]
    fn the_score_follows_the_formula_on_fixed_inputs() {
        // 0.4·100 + 0.3·(100 − 20) + 0.3·(100 − 20) = 88: degraded.
        let s = health_score(100.0, 0.2, 0.02);
        assert!(close(s.latency, 80.0) && close(s.error, 80.0), "{s:?}");
        assert!(close(s.score, 88.0), "{s:?}");
        assert_eq!(s.status, HealthStatus::Degraded);
        // Half open: 0.4·50 + 0.3·(100 − 5) + 0.3·(100 − 10) = 20 + 28.5 + 27 = 75.5.
        let s = health_score(circuit_score(CircuitBreakerState::HalfOpen), 0.05, 0.01);
        assert!(close(s.score, 75.5), "{s:?}");
        assert_eq!(s.status, HealthStatus::Degraded);
        // Open: 0.4·0 + 0.3·100 + 0.3·100 = 60: unhealthy.
        let s = health_score(circuit_score(CircuitBreakerState::Open), 0.0, 0.0);
        assert!(close(s.score, 60.0), "{s:?}");
        assert_eq!(s.status, HealthStatus::Unhealthy);
    }

    #[test]
    fn the_latency_and_error_parts_stop_at_zero() {
        let s = health_score(100.0, 7.5, 0.5);
        assert_eq!((s.latency, s.error), (0.0, 0.0));
        assert!(close(s.score, 40.0), "{s:?}");
    }

    #[test]
    fn the_status_thresholds_are_inclusive() {
        assert_eq!(status_of(90.0), HealthStatus::Healthy);
        assert_eq!(status_of(89.999), HealthStatus::Degraded);
        assert_eq!(status_of(70.0), HealthStatus::Degraded);
        assert_eq!(status_of(69.999), HealthStatus::Unhealthy);
    }

    #[test]
    fn the_worst_breaker_sets_the_circuit_score() {
        assert_eq!(circuits_score([]), 100.0);
        assert_eq!(circuits_score([CircuitBreakerState::Closed, CircuitBreakerState::HalfOpen]), 50.0);
        assert_eq!(circuits_score([CircuitBreakerState::Disabled, CircuitBreakerState::ForcedOpen]), 0.0);
    }
}
