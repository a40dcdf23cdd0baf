//! The alert rules: which readings raise which alert.
//!
//! | condition | alert name | severity |
//! |---|---|---|
//! | a breaker is open or forced open | `circuit_breaker_open_{breaker}` | critical |
//! | a service's latest error rate is above 10 % | `high_error_rate_{service}` | high |
//! | the current event latency is above 5 s | `high_event_latency` | high |
//! | a queue is more than 80 % full | `queue_utilization_high_{queue}` | medium |
//! | a dead-letter queue holds more than 10 events | `dead_letter_queue_high_{queue}` | medium |
//!
//! A half-open breaker raises nothing: it is recovering. The current event latency is the
//! one the health score uses (the mean of the latest [`super::store::RECENT_LATENCIES`]).

use super::alerts::AlertSpec;
use crate::models::circuit_breaker::CircuitBreakerState;
use crate::models::observability::AlertSeverity;

/// An error rate above this fraction raises a high alert.
pub const ERROR_RATE_THRESHOLD: f64 = 0.10;
/// A current event latency above this many seconds raises a high alert.
pub const LATENCY_THRESHOLD_SECONDS: f64 = 5.0;
/// A queue fuller than this fraction of its capacity raises a medium alert.
pub const QUEUE_UTILIZATION_THRESHOLD: f64 = 0.80;
/// A dead-letter queue holding more events than this raises a medium alert.
pub const DEAD_LETTER_THRESHOLD: u64 = 10;

/// The state of one breaker.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerReading {
    /// The breaker's name.
    pub name: String,
    /// Its state.
    pub state: CircuitBreakerState,
    /// Calls that failed.
    pub failed_calls: u64,
    /// Calls refused without being made.
    pub rejected_calls: u64,
    /// Failure rate of its sliding window, percent.
    pub window_failure_rate_percent: f64,
}

/// The fill of one queue and its dead-letter queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueReading {
    /// The queue's name.
    pub name: String,
    /// Events waiting.
    pub queued: u64,
    /// Most events it holds.
    pub capacity: u64,
    /// Events in its dead-letter queue.
    pub dead_letters: u64,
}

/// Everything the rules look at.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Readings {
    /// Every watched breaker.
    pub breakers: Vec<BreakerReading>,
    /// Every watched queue.
    pub queues: Vec<QueueReading>,
    /// The latest error rate (a fraction) of each service.
    pub error_rates: Vec<(String, f64)>,
    /// The current event latency in seconds, when there are latency samples.
    pub latency_seconds: Option<f64>,
}

/// The alerts `readings` call for.
pub fn evaluate(readings: &Readings) -> Vec<AlertSpec> {
    let mut alerts = Vec::new();
    for breaker in &readings.breakers {
        if matches!(breaker.state, CircuitBreakerState::Open | CircuitBreakerState::ForcedOpen) {
            alerts.push(breaker_open(breaker));
        }
    }
    for (service, rate) in &readings.error_rates {
        if *rate > ERROR_RATE_THRESHOLD {
            alerts.push(
                AlertSpec::new(
                    format!("high_error_rate_{service}"),
                    AlertSeverity::High,
                    format!(
                        "the error rate of {service} is {:.1} %, above {:.0} %",
                        rate * 100.0,
                        ERROR_RATE_THRESHOLD * 100.0
                    ),
                )
                .with_detail("service", service.as_str())
                .with_detail("error_rate", *rate)
                .with_detail("threshold", ERROR_RATE_THRESHOLD),
            );
        }
    }
    if let Some(latency) = readings.latency_seconds.filter(|l| *l > LATENCY_THRESHOLD_SECONDS) {
        alerts.push(
            AlertSpec::new(
                "high_event_latency",
                AlertSeverity::High,
                format!("the event publishing latency is {latency:.2} s, above {LATENCY_THRESHOLD_SECONDS} s"),
            )
            .with_detail("latency_seconds", latency)
            .with_detail("threshold_seconds", LATENCY_THRESHOLD_SECONDS),
        );
    }
    for queue in &readings.queues {
        let utilization = queue.queued as f64 / queue.capacity.max(1) as f64;
        if utilization > QUEUE_UTILIZATION_THRESHOLD {
            alerts.push(
                AlertSpec::new(
                    format!("queue_utilization_high_{}", queue.name),
                    AlertSeverity::Medium,
                    format!(
                        "the {} queue holds {} of {} events ({:.0} %), above {:.0} %",
                        queue.name,
                        queue.queued,
                        queue.capacity,
                        utilization * 100.0,
                        QUEUE_UTILIZATION_THRESHOLD * 100.0
                    ),
                )
                .with_detail("queued_events", queue.queued)
                .with_detail("capacity", queue.capacity)
                .with_detail("utilization", utilization),
            );
        }
        if queue.dead_letters > DEAD_LETTER_THRESHOLD {
            alerts.push(
                AlertSpec::new(
                    format!("dead_letter_queue_high_{}", queue.name),
                    AlertSeverity::Medium,
                    format!(
                        "the {} dead-letter queue holds {} events, above {DEAD_LETTER_THRESHOLD}",
                        queue.name, queue.dead_letters
                    ),
                )
                .with_detail("dead_letter_events", queue.dead_letters)
                .with_detail("threshold", DEAD_LETTER_THRESHOLD),
            );
        }
    }
    alerts
}

/// The critical alert of an open or forced-open breaker.
fn breaker_open(breaker: &BreakerReading) -> AlertSpec {
    let BreakerReading { name, state, .. } = breaker;
    AlertSpec::new(
        format!("circuit_breaker_open_{name}"),
        AlertSeverity::Critical,
        format!("the {name} circuit breaker is {state}: calls through it are refused"),
    )
    .with_detail("breaker", name.as_str())
    .with_detail("state", state.as_str())
    .with_detail("failed_calls", breaker.failed_calls)
    .with_detail("rejected_calls", breaker.rejected_calls)
    .with_detail("window_failure_rate_percent", breaker.window_failure_rate_percent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(readings: &Readings) -> Vec<(String, AlertSeverity)> {
        evaluate(readings).into_iter().map(|a| (a.name, a.severity)).collect()
    }

    #[test]
    fn an_open_or_forced_open_breaker_is_critical_and_half_open_is_not() {
        let breakers = [
            ("a", CircuitBreakerState::Open),
            ("b", CircuitBreakerState::ForcedOpen),
            ("c", CircuitBreakerState::HalfOpen),
            ("d", CircuitBreakerState::Closed),
            ("e", CircuitBreakerState::Disabled),
        ]
        .map(|(name, state)| BreakerReading {
            name: name.into(),
            state,
            failed_calls: 0,
            rejected_calls: 0,
            window_failure_rate_percent: 0.0,
        });
        let readings = Readings { breakers: breakers.to_vec(), ..Readings::default() };
        assert_eq!(
            names(&readings),
            [
                ("circuit_breaker_open_a".to_owned(), AlertSeverity::Critical),
                ("circuit_breaker_open_b".to_owned(), AlertSeverity::Critical)
            ]
        );
    }

    #[test]
    fn error_rates_above_ten_percent_and_latency_above_five_seconds_are_high() {
        let readings = Readings {
            error_rates: vec![("db".into(), 0.11), ("kafka".into(), 0.10)],
            latency_seconds: Some(5.01),
            ..Readings::default()
        };
        assert_eq!(
            names(&readings),
            [
                ("high_error_rate_db".to_owned(), AlertSeverity::High),
                ("high_event_latency".to_owned(), AlertSeverity::High)
            ]
        );
        let calm = Readings { latency_seconds: Some(5.0), ..Readings::default() };
        assert!(evaluate(&calm).is_empty());
    }

    #[test]
    fn a_queue_above_eighty_percent_or_a_dead_letter_queue_above_ten_is_medium() {
        let queue =
            |queued, dead_letters| QueueReading { name: "event_bus".into(), queued, capacity: 100, dead_letters };
        let readings = Readings { queues: vec![queue(81, 11)], ..Readings::default() };
        assert_eq!(
            names(&readings),
            [
                ("queue_utilization_high_event_bus".to_owned(), AlertSeverity::Medium),
                ("dead_letter_queue_high_event_bus".to_owned(), AlertSeverity::Medium)
            ]
        );
        let at_limits = Readings { queues: vec![queue(80, 10)], ..Readings::default() };
        assert!(evaluate(&at_limits).is_empty());
    }
}
