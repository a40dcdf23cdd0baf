//! The circuit breakers' Prometheus series, registered by
//! [`CircuitBreaker::with_metrics`](super::CircuitBreaker::with_metrics). A process may have
//! several breakers: they share these families, each with its own `breaker` label.
//!
//! - `onex_circuit_breaker_state{breaker}`: 0 closed, 1 open or forced open, 2 half open; a
//!   disabled breaker (which guards nothing) is 0. An open breaker whose wait is over stays 1
//!   until the next call makes it half open.
//! - `onex_circuit_breaker_transitions_total{breaker,to="open"|"half_open"|"closed"}`: the
//!   transitions the breaker made by itself: opens (from closed or half open), the ends of
//!   the open wait, and closes after successful trial calls. Operator actions
//!   ([`force_open`](super::CircuitBreaker::force_open),
//!   [`disable`](super::CircuitBreaker::disable), [`reset`](super::CircuitBreaker::reset))
//!   are not transitions here.
//! - `onex_circuit_breaker_calls_total{breaker,outcome="success"|"failure"|"rejected"|"ignored"}`:
//!   calls by outcome (a failure includes timeouts; ignored: the classifier did not count
//!   the error).
//!
//! Invariants:
//! - Every figure is read at scrape time from the breaker's own state word and counters
//!   (what [`CircuitBreaker::metrics`](super::CircuitBreaker::metrics) sums); registering
//!   adds nothing to the call path. [`reset`](super::CircuitBreaker::reset) zeroes those
//!   counters, which Prometheus reads as a counter reset.
//! - One name, one breaker: a name taken by a live breaker is refused. The collector holds
//!   breakers weakly; a dropped breaker's series are no longer written and its name is free
//!   again.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use crossbeam_utils::CachePadded;

use super::{Counters, decode};
use crate::error::{ErrorCode, OnexError};
use crate::metrics::{
    Collector, ConstCounter, ConstGauge, DescriptorEncoder, EncodeMetric, MetricType, MetricsRegistry,
};
use crate::models::circuit_breaker::CircuitBreakerState;
use crate::stripes::Striped;

/// The state, as a number.
pub const STATE: &str = "onex_circuit_breaker_state";
/// Transitions, by the state entered (a counter: the exposition adds `_total`).
pub const TRANSITIONS: &str = "onex_circuit_breaker_transitions";
/// Calls, by outcome.
pub const CALLS: &str = "onex_circuit_breaker_calls";

/// Every family of the breakers.
pub const FAMILIES: [&str; 3] = [STATE, TRANSITIONS, CALLS];

/// Longest breaker name (a label value), in bytes.
const MAX_NAME_BYTES: usize = 128;

type StateWord = CachePadded<AtomicU64>;

/// One registered breaker.
struct Member {
    name: String,
    state: Weak<StateWord>,
    counters: Striped<Counters>,
}

/// The breakers of one registry: the value [`MetricsRegistry::shared`] keeps, and the
/// collector's list.
struct Breakers {
    members: Arc<Mutex<Vec<Member>>>,
}

/// Adds a breaker (`state`, `counters`) named `name` to the breakers of `registry`,
/// registering the families with the first one.
pub(super) fn register(
    registry: &MetricsRegistry,
    name: &str,
    state: &Arc<StateWord>,
    counters: &Striped<Counters>,
) -> Result<(), OnexError> {
    check_name(name)?;
    let breakers = registry.shared(|registry| {
        let members = Arc::new(Mutex::new(Vec::new()));
        registry.register_collector(&FAMILIES, BreakersCollector { members: Arc::clone(&members) })?;
        Ok(Breakers { members })
    })?;
    let mut members = breakers.members.lock().unwrap_or_else(PoisonError::into_inner);
    members.retain(|member| member.state.strong_count() > 0);
    if let Some(taken) = members.iter().find(|member| member.name == name) {
        let same = taken.state.upgrade().is_some_and(|word| Arc::ptr_eq(&word, state));
        return Err(OnexError::configuration(if same {
            format!("circuit breaker '{name}' already has its series in this registry")
        } else {
            format!(
                "another circuit breaker is already named '{name}' in this registry: give each breaker its own name"
            )
        })
        .with_detail("name", name));
    }
    if let Some(other) = members.iter().find(|member| member.state.upgrade().is_some_and(|w| Arc::ptr_eq(&w, state))) {
        return Err(OnexError::configuration(format!(
            "this circuit breaker already has its series in this registry, as '{}'",
            other.name
        ))
        .with_detail("name", other.name.clone()));
    }
    members.push(Member { name: name.to_owned(), state: Arc::downgrade(state), counters: counters.clone() });
    Ok(())
}

fn check_name(name: &str) -> Result<(), OnexError> {
    let problem = if name.trim().is_empty() {
        "must not be empty".to_owned()
    } else if name.len() > MAX_NAME_BYTES {
        format!("is {} bytes long, more than {MAX_NAME_BYTES}", name.len())
    } else if name.chars().any(char::is_control) {
        "must not contain control characters".to_owned()
    } else {
        return Ok(());
    };
    Err(OnexError::new(ErrorCode::ValidationError, format!("circuit breaker name {problem}"))
        .with_detail("field", "name"))
}

/// What one scrape shows of one breaker.
struct Reading<'a> {
    name: &'a str,
    state: i64,
    /// open, half_open, closed.
    transitions: [u64; 3],
    /// success, failure, rejected, ignored.
    calls: [u64; 4],
}

impl<'a> Reading<'a> {
    fn of(member: &'a Member) -> Option<Self> {
        let word = member.state.upgrade()?.load(Ordering::Acquire);
        let state = match decode(word) {
            CircuitBreakerState::Closed | CircuitBreakerState::Disabled => 0,
            CircuitBreakerState::Open | CircuitBreakerState::ForcedOpen => 1,
            CircuitBreakerState::HalfOpen => 2,
        };
        let sum = |counter: fn(&Counters) -> &AtomicU64| -> u64 {
            member.counters.iter().map(|c| counter(c).load(Ordering::Relaxed)).sum()
        };
        Some(Self {
            name: &member.name,
            state,
            transitions: [sum(|c| &c.opens), sum(|c| &c.half_opens), sum(|c| &c.closes)],
            calls: [sum(|c| &c.successful), sum(|c| &c.failed), sum(|c| &c.rejected), sum(|c| &c.ignored)],
        })
    }
}

struct BreakersCollector {
    members: Arc<Mutex<Vec<Member>>>,
}

impl fmt::Debug for BreakersCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_list().entries(members.iter().map(|m| &m.name)).finish()
    }
}

impl Collector for BreakersCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        let readings: Vec<Reading<'_>> = members.iter().filter_map(Reading::of).collect();
        if readings.is_empty() {
            return Ok(());
        }
        {
            let mut family = encoder.encode_descriptor(
                STATE,
                "Circuit breaker state: 0 closed (or disabled), 1 open or forced open, 2 half open.",
                None,
                MetricType::Gauge,
            )?;
            for r in &readings {
                ConstGauge::new(r.state).encode(family.encode_family(&[("breaker", r.name)])?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                TRANSITIONS,
                "Circuit breaker transitions the breaker made itself, by the state entered.",
                None,
                MetricType::Counter,
            )?;
            for r in &readings {
                for (to, count) in ["open", "half_open", "closed"].into_iter().zip(r.transitions) {
                    ConstCounter::new(count).encode(family.encode_family(&[("breaker", r.name), ("to", to)])?)?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            CALLS,
            "Calls through the circuit breaker, by outcome.",
            None,
            MetricType::Counter,
        )?;
        for r in &readings {
            for (outcome, count) in ["success", "failure", "rejected", "ignored"].into_iter().zip(r.calls) {
                ConstCounter::new(count).encode(family.encode_family(&[("breaker", r.name), ("outcome", outcome)])?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::CircuitBreaker;
    use super::*;
    use crate::environment::Environment;
    use crate::models::circuit_breaker::CircuitBreakerConfig;

    /// Opens after 5 consecutive failures, half open after 60 s, closed after 3 trials.
    fn breaker() -> CircuitBreaker {
        let mut config = CircuitBreakerConfig::for_environment(Environment::Production);
        config.failure_rate_threshold = 0;
        config.slow_call_rate_threshold = 0;
        CircuitBreaker::new(config).unwrap()
    }

    fn down() -> OnexError {
        OnexError::new(ErrorCode::IntegrationServiceUnavailable, "down")
    }

    fn line(text: &str, series: &str) -> Option<String> {
        text.lines().find(|l| l.starts_with(series) && l[series.len()..].starts_with(' ')).map(str::to_owned)
    }

    fn value(text: &str, series: &str) -> i64 {
        line(text, series)
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no `{series}` in\n{text}"))
    }

    #[tokio::test(start_paused = true)]
    async fn a_breaker_shows_its_state_transitions_and_calls_under_its_name() {
        let registry = MetricsRegistry::new("test");
        let b = breaker().with_metrics(&registry, "kafka").unwrap();
        let text = registry.encode().unwrap();
        assert_eq!(value(&text, "onex_circuit_breaker_state{environment=\"test\",breaker=\"kafka\"}"), 0);
        b.call(async { Ok(()) }).await.unwrap();
        b.call(async { Err::<(), _>(OnexError::validation("bad input")) }).await.unwrap_err();
        for _ in 0..5 {
            b.call(async { Err::<(), _>(down()) }).await.unwrap_err();
        }
        b.call(async { Ok(()) }).await.unwrap_err();
        let text = registry.encode().unwrap();
        let series = |tail: &str| format!("onex_circuit_breaker_{tail}");
        assert_eq!(value(&text, &series("state{environment=\"test\",breaker=\"kafka\"}")), 1);
        for (outcome, expected) in [("success", 1), ("failure", 5), ("rejected", 1), ("ignored", 1)] {
            let name = series(&format!("calls_total{{environment=\"test\",breaker=\"kafka\",outcome=\"{outcome}\"}}"));
            assert_eq!(value(&text, &name), expected, "{outcome}");
        }
        let transitions = |text: &str, to: &str| {
            value(text, &series(&format!("transitions_total{{environment=\"test\",breaker=\"kafka\",to=\"{to}\"}}")))
        };
        assert_eq!(
            (transitions(&text, "open"), transitions(&text, "half_open"), transitions(&text, "closed")),
            (1, 0, 0)
        );

        tokio::time::advance(Duration::from_secs(61)).await;
        let permit = b.try_acquire().unwrap();
        let text = registry.encode().unwrap();
        assert_eq!(value(&text, &series("state{environment=\"test\",breaker=\"kafka\"}")), 2);
        assert_eq!(transitions(&text, "half_open"), 1);
        permit.success();
        for _ in 0..2 {
            b.call(async { Ok(()) }).await.unwrap();
        }
        let text = registry.encode().unwrap();
        assert_eq!(value(&text, &series("state{environment=\"test\",breaker=\"kafka\"}")), 0);
        assert_eq!(
            (transitions(&text, "open"), transitions(&text, "half_open"), transitions(&text, "closed")),
            (1, 1, 1)
        );
        let metrics = b.metrics();
        assert_eq!((metrics.circuit_opens, metrics.circuit_half_opens, metrics.circuit_closes), (1, 1, 1));

        b.force_open();
        assert_eq!(value(&registry.encode().unwrap(), &series("state{environment=\"test\",breaker=\"kafka\"}")), 1);
        b.disable();
        assert_eq!(value(&registry.encode().unwrap(), &series("state{environment=\"test\",breaker=\"kafka\"}")), 0);
    }

    #[test]
    fn breakers_share_the_families_and_each_name_is_taken_once() {
        let registry = MetricsRegistry::new("test");
        let kafka = breaker().with_metrics(&registry, "kafka").unwrap();
        let postgres = breaker().with_metrics(&registry, "postgres").unwrap();
        kafka.force_open();
        let text = registry.encode().unwrap();
        assert_eq!(text.matches("# TYPE onex_circuit_breaker_state gauge").count(), 1, "{text}");
        assert_eq!(value(&text, "onex_circuit_breaker_state{environment=\"test\",breaker=\"kafka\"}"), 1);
        assert_eq!(value(&text, "onex_circuit_breaker_state{environment=\"test\",breaker=\"postgres\"}"), 0);

        let err = breaker().with_metrics(&registry, "kafka").unwrap_err();
        assert_eq!(err.code(), ErrorCode::ConfigurationError);
        assert!(err.message().contains("already named 'kafka'"), "{err}");
        for bad in ["", "  ", "a\nb"] {
            let err = breaker().with_metrics(&registry, bad).unwrap_err();
            assert_eq!(err.code(), ErrorCode::ValidationError, "{bad:?}");
            assert_eq!(err.details()["field"], "name");
        }
        assert_eq!(breaker().with_metrics(&registry, &"x".repeat(129)).unwrap_err().code(), ErrorCode::ValidationError);

        // A dropped breaker's series go, and its name is free again.
        drop(kafka);
        let text = registry.encode().unwrap();
        assert!(!text.contains("breaker=\"kafka\""), "{text}");
        let again = breaker().with_metrics(&registry, "kafka").unwrap();
        assert!(
            registry.encode().unwrap().contains("onex_circuit_breaker_state{environment=\"test\",breaker=\"kafka\"} 0")
        );
        drop((again, postgres));
        let text = registry.encode().unwrap();
        assert!(!text.contains("onex_circuit_breaker"), "{text}");
    }

    #[test]
    fn one_breaker_registers_once_per_registry() {
        let registry = MetricsRegistry::new("test");
        let b = breaker();
        register(&registry, "a", &b.state, &b.counters).unwrap();
        let err = register(&registry, "b", &b.state, &b.counters).unwrap_err();
        assert!(err.message().contains("already has its series in this registry, as 'a'"), "{err}");
        let err = register(&registry, "a", &b.state, &b.counters).unwrap_err();
        assert!(err.message().contains("'a' already has its series"), "{err}");
    }
}
