//! How the health monitor turns probe results and figures into one status.
//!
//! - A critical component (PostgreSQL) unhealthy: **unhealthy**.
//! - Otherwise any component not healthy (Kafka or the broker down, the breaker open, a user
//!   probe failing), or any of the five figures above its threshold: **degraded**.
//! - Otherwise **healthy**.
//!
//! The five thresholds, production / staging / development (an unknown environment is
//! development):
//!
//! | figure | production | staging | development |
//! |---|---|---|---|
//! | error rate | 1 % | 2 % | 5 % |
//! | response time | 500 ms | 1000 ms | 2000 ms |
//! | pool utilization | 80 % | 85 % | 90 % |
//! | circuit-breaker failure rate | 0.5 % | 1 % | 2 % |
//! | queued events | 500 | 200 | 50 |
//!
//! A figure counts as above its threshold when it is strictly greater. The figures are
//! reported as a component of their own, `thresholds`, whose errors name every threshold
//! exceeded, so a degraded result always says why.

use chrono::{DateTime, Utc};
use serde_json::Map;

use super::{Criticality, aggregate};
use crate::environment::Environment;
use crate::models::health::{ComponentHealth, HealthFigures, HealthStatus, HealthThresholds};

/// The name of the component that reports the figures against their thresholds.
pub const THRESHOLDS_COMPONENT: &str = "thresholds";

impl HealthThresholds {
    /// The thresholds of `environment`.
    pub const fn for_environment(environment: Environment) -> Self {
        match environment {
            Environment::Production => Self {
                error_rate_percent: 1.0,
                response_time_ms: 500.0,
                pool_utilization_percent: 80.0,
                breaker_failure_rate_percent: 0.5,
                queued_events: 500,
            },
            Environment::Staging => Self {
                error_rate_percent: 2.0,
                response_time_ms: 1000.0,
                pool_utilization_percent: 85.0,
                breaker_failure_rate_percent: 1.0,
                queued_events: 200,
            },
            Environment::Development => Self {
                error_rate_percent: 5.0,
                response_time_ms: 2000.0,
                pool_utilization_percent: 90.0,
                breaker_failure_rate_percent: 2.0,
                queued_events: 50,
            },
        }
    }
}

/// `failures / max(operations + failures, 1) × 100`.
pub fn error_rate_percent(operations: u64, failures: u64) -> f64 {
    failures as f64 / operations.saturating_add(failures).max(1) as f64 * 100.0
}

/// Every figure above its threshold, each as a sentence naming the threshold.
pub fn breaches(figures: &HealthFigures, thresholds: &HealthThresholds, environment: Environment) -> Vec<String> {
    let env = environment.as_str();
    let mut found = Vec::new();
    if figures.error_rate_percent > thresholds.error_rate_percent {
        found.push(format!(
            "error rate {:.2} % is above the {env} threshold of {} % ({} of {} operations failed)",
            figures.error_rate_percent,
            thresholds.error_rate_percent,
            figures.failures,
            figures.operations.saturating_add(figures.failures)
        ));
    }
    if figures.response_time_ms > thresholds.response_time_ms {
        found.push(format!(
            "response time {:.1} ms is above the {env} threshold of {} ms",
            figures.response_time_ms, thresholds.response_time_ms
        ));
    }
    if figures.pool_utilization_percent > thresholds.pool_utilization_percent {
        found.push(format!(
            "pool utilization {:.1} % is above the {env} threshold of {} %",
            figures.pool_utilization_percent, thresholds.pool_utilization_percent
        ));
    }
    if figures.breaker_failure_rate_percent > thresholds.breaker_failure_rate_percent {
        found.push(format!(
            "circuit-breaker failure rate {:.2} % is above the {env} threshold of {} %",
            figures.breaker_failure_rate_percent, thresholds.breaker_failure_rate_percent
        ));
    }
    if figures.queued_events > thresholds.queued_events {
        found.push(format!(
            "{} queued events are above the {env} threshold of {}",
            figures.queued_events, thresholds.queued_events
        ));
    }
    found
}

/// The `thresholds` component: degraded when a figure is above its threshold (its errors say
/// which), healthy otherwise; its metrics hold every figure beside its limit.
pub fn thresholds_component(
    figures: &HealthFigures,
    thresholds: &HealthThresholds,
    environment: Environment,
    checked_at: DateTime<Utc>,
) -> ComponentHealth {
    let errors = breaches(figures, thresholds, environment);
    let mut metrics = Map::new();
    let mut put = |key: &str, value: serde_json::Value| {
        metrics.insert(key.to_owned(), value);
    };
    put("environment", environment.as_str().into());
    put("operations", figures.operations.into());
    put("failures", figures.failures.into());
    put("error_rate_percent", figures.error_rate_percent.into());
    put("error_rate_threshold_percent", thresholds.error_rate_percent.into());
    put("response_time_ms", figures.response_time_ms.into());
    put("response_time_threshold_ms", thresholds.response_time_ms.into());
    put("pool_utilization_percent", figures.pool_utilization_percent.into());
    put("pool_utilization_threshold_percent", thresholds.pool_utilization_percent.into());
    put("breaker_failure_rate_percent", figures.breaker_failure_rate_percent.into());
    put("breaker_failure_rate_threshold_percent", thresholds.breaker_failure_rate_percent.into());
    put("queued_events", figures.queued_events.into());
    put("queued_events_threshold", thresholds.queued_events.into());
    ComponentHealth {
        component: THRESHOLDS_COMPONENT.to_owned(),
        status: if errors.is_empty() { HealthStatus::Healthy } else { HealthStatus::Degraded },
        checked_at,
        response_time_ms: 0.0,
        errors,
        metrics,
    }
}

/// The overall status of probe results (each with its probe's criticality) and the
/// `thresholds` component, by the rule of this module.
pub fn overall_status<'a>(
    probed: impl IntoIterator<Item = (Criticality, &'a ComponentHealth)>,
    thresholds: &'a ComponentHealth,
) -> HealthStatus {
    aggregate(probed.into_iter().chain([(Criticality::Degrades, thresholds)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component(name: &str, status: HealthStatus) -> ComponentHealth {
        ComponentHealth {
            component: name.to_owned(),
            status,
            checked_at: Utc::now(),
            response_time_ms: 1.0,
            errors: Vec::new(),
            metrics: Map::new(),
        }
    }

    fn quiet() -> HealthFigures {
        HealthFigures { operations: 1000, ..HealthFigures::default() }
    }

    #[test]
    fn each_environment_has_its_five_thresholds_and_unknown_ones_are_development() {
        let prod = HealthThresholds::for_environment(Environment::Production);
        assert_eq!((prod.error_rate_percent, prod.response_time_ms, prod.pool_utilization_percent), (1.0, 500.0, 80.0));
        assert_eq!((prod.breaker_failure_rate_percent, prod.queued_events), (0.5, 500));
        let staging = HealthThresholds::for_environment(Environment::Staging);
        assert_eq!(
            (staging.error_rate_percent, staging.response_time_ms, staging.pool_utilization_percent),
            (2.0, 1000.0, 85.0)
        );
        assert_eq!((staging.breaker_failure_rate_percent, staging.queued_events), (1.0, 200));
        let unknown = HealthThresholds::for_environment(Environment::parse_lenient("qa"));
        assert_eq!(unknown, HealthThresholds::for_environment(Environment::Development));
        assert_eq!(
            (unknown.error_rate_percent, unknown.response_time_ms, unknown.pool_utilization_percent),
            (5.0, 2000.0, 90.0)
        );
        assert_eq!((unknown.breaker_failure_rate_percent, unknown.queued_events), (2.0, 50));
    }

    #[test]
    fn the_error_rate_counts_failures_against_operations_plus_failures() {
        assert_eq!(error_rate_percent(0, 0), 0.0);
        assert_eq!(error_rate_percent(0, 3), 100.0);
        assert_eq!(error_rate_percent(95, 5), 5.0);
        assert_eq!(error_rate_percent(u64::MAX, 1), 1.0 / u64::MAX as f64 * 100.0);
    }

    #[test]
    fn every_one_of_the_five_thresholds_degrades_a_healthy_result_and_is_named() {
        let env = Environment::Production;
        let limits = HealthThresholds::for_environment(env);
        let over = [
            ("error rate", HealthFigures { failures: 2, operations: 98, error_rate_percent: 2.0, ..quiet() }),
            ("response time", HealthFigures { response_time_ms: 501.0, ..quiet() }),
            ("pool utilization", HealthFigures { pool_utilization_percent: 81.0, ..quiet() }),
            ("circuit-breaker failure rate", HealthFigures { breaker_failure_rate_percent: 0.6, ..quiet() }),
            ("queued events", HealthFigures { queued_events: 501, ..quiet() }),
        ];
        let postgres = component("postgres", HealthStatus::Healthy);
        for (name, figures) in over {
            let thresholds = thresholds_component(&figures, &limits, env, Utc::now());
            assert_eq!(thresholds.errors.len(), 1, "{name}: {:?}", thresholds.errors);
            assert!(thresholds.errors[0].contains(name), "{name}: {:?}", thresholds.errors);
            assert!(thresholds.errors[0].contains("production threshold"), "{:?}", thresholds.errors);
            let status = overall_status([(Criticality::Critical, &postgres)], &thresholds);
            assert_eq!(status, HealthStatus::Degraded, "{name}");
        }
        // At the limit is not above it.
        let at = HealthFigures {
            response_time_ms: 500.0,
            pool_utilization_percent: 80.0,
            breaker_failure_rate_percent: 0.5,
            queued_events: 500,
            error_rate_percent: 1.0,
            ..quiet()
        };
        let thresholds = thresholds_component(&at, &limits, env, Utc::now());
        assert_eq!(thresholds.status, HealthStatus::Healthy, "{:?}", thresholds.errors);
        assert_eq!(overall_status([(Criticality::Critical, &postgres)], &thresholds), HealthStatus::Healthy);
        assert_eq!(thresholds.metrics["queued_events_threshold"], 500);
    }

    #[test]
    fn postgres_down_is_unhealthy_and_the_broker_down_only_degraded() {
        let env = Environment::Development;
        let limits = HealthThresholds::for_environment(env);
        let thresholds = thresholds_component(&quiet(), &limits, env, Utc::now());
        let postgres_down = component("postgres", HealthStatus::Unhealthy);
        let postgres_up = component("postgres", HealthStatus::Healthy);
        let kafka_down = component("kafka", HealthStatus::Unhealthy);
        let breaker_open = component("circuit_breaker", HealthStatus::Unhealthy);
        let kafka_up = component("kafka", HealthStatus::Healthy);
        assert_eq!(
            overall_status([(Criticality::Critical, &postgres_down), (Criticality::Degrades, &kafka_up)], &thresholds),
            HealthStatus::Unhealthy
        );
        assert_eq!(
            overall_status(
                [
                    (Criticality::Critical, &postgres_up),
                    (Criticality::Degrades, &kafka_down),
                    (Criticality::Degrades, &breaker_open)
                ],
                &thresholds
            ),
            HealthStatus::Degraded
        );
        // A breach never makes anything worse than degraded.
        let breached = thresholds_component(&HealthFigures { queued_events: 51, ..quiet() }, &limits, env, Utc::now());
        assert_eq!(overall_status([(Criticality::Critical, &postgres_down)], &breached), HealthStatus::Unhealthy);
    }
}
