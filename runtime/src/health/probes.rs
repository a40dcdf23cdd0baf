//! Probes of the runtime's own services, and the checker a container's services make.
//!
//! | probe | component | criticality | healthy / degraded / unhealthy |
//! |---|---|---|---|
//! | [`PostgresProbe`] | `postgres` | critical | [`PostgresConnectionManager::health_check`]: the four check statements pass / the schema is missing / the pool is closed, a statement fails or the check times out |
//! | [`KafkaPoolProbe`] | `kafka` | degrades | [`KafkaProducerPool::health_check`]: the pool's counters plus a metadata round trip to the brokers |
//! | [`EventBusProbe`] | `event_bus` | degrades | since its previous check: no event failed for good / some failed and some were published / some failed and none was published |
//! | [`CircuitBreakerProbe`] | `circuit_breaker` | degrades | closed / half open or disabled / open or forced open |
//!
//! Every probe runs under its own timeout ([`SERVICE_PROBE_TIMEOUT`] unless set), so a
//! readiness check never waits on an exhausted pool or an unreachable broker for longer than
//! that. The PostgreSQL probe still reports the pool's figures (waiters, utilization) when it
//! times out: an exhausted pool is the usual reason, and its figures say so.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Map, Value};

use super::{Criticality, HealthChecker, HealthProbe, Probed, timeout_reason};
use crate::Container;
use crate::circuit_breaker::{CircuitBreaker, GuardedPublisher};
use crate::event_bus::{EventBusStats, KafkaEventBus};
use crate::kafka::KafkaProducerPool;
use crate::models::circuit_breaker::CircuitBreakerState;
use crate::models::health::HealthStatus;
use crate::models::postgres::ConnectionStats;
use crate::postgres::PostgresConnectionManager;

/// The timeout of the service probes: readiness answers within a second.
pub const SERVICE_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The runtime services a container holds, as health checks find them.
#[derive(Clone, Default)]
pub struct Services {
    /// The PostgreSQL connection manager.
    pub postgres: Option<Arc<PostgresConnectionManager>>,
    /// The Kafka producer pool: the container's, else the event bus's.
    pub kafka: Option<Arc<KafkaProducerPool>>,
    /// The Kafka event bus.
    pub event_bus: Option<Arc<KafkaEventBus>>,
    /// The circuit breaker: the container's, else the guarded publisher's.
    pub breaker: Option<Arc<CircuitBreaker>>,
    /// The guarded publisher, whose outbox holds the queued events.
    pub publisher: Option<Arc<GuardedPublisher>>,
}

impl Services {
    /// The services registered (by type) in `container`.
    pub fn from_container(container: &Container) -> Self {
        let event_bus = container.try_resolve::<KafkaEventBus>();
        let publisher = container.try_resolve::<GuardedPublisher>();
        Self {
            postgres: container.try_resolve::<PostgresConnectionManager>(),
            kafka: container
                .try_resolve::<KafkaProducerPool>()
                .or_else(|| event_bus.as_ref().map(|bus| Arc::clone(bus.pool()))),
            breaker: container
                .try_resolve::<CircuitBreaker>()
                .or_else(|| publisher.as_ref().map(|publisher| Arc::clone(publisher.breaker()))),
            event_bus,
            publisher,
        }
    }

    /// A probe for each service, with the default timeout, in the order PostgreSQL, Kafka,
    /// event bus, circuit breaker.
    pub fn probes(&self) -> Vec<Arc<dyn HealthProbe>> {
        let mut probes: Vec<Arc<dyn HealthProbe>> = Vec::new();
        if let Some(postgres) = &self.postgres {
            probes.push(Arc::new(PostgresProbe::new(Arc::clone(postgres))));
        }
        if let Some(kafka) = &self.kafka {
            probes.push(Arc::new(KafkaPoolProbe::new(Arc::clone(kafka))));
        }
        if let Some(bus) = &self.event_bus {
            probes.push(Arc::new(EventBusProbe::new(Arc::clone(bus))));
        }
        if let Some(breaker) = &self.breaker {
            probes.push(Arc::new(CircuitBreakerProbe::new(Arc::clone(breaker))));
        }
        probes
    }
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("postgres", &self.postgres.is_some())
            .field("kafka", &self.kafka.is_some())
            .field("event_bus", &self.event_bus.is_some())
            .field("breaker", &self.breaker.is_some())
            .field("publisher", &self.publisher.is_some())
            .finish()
    }
}

impl HealthChecker {
    /// A checker with a probe for each runtime service registered in `container`
    /// ([`Services::probes`]), then the probes registered with
    /// [`Container::register_probe`].
    pub fn from_container(container: &Container) -> Self {
        Self::from_services(&Services::from_container(container), container)
    }

    /// A checker with a probe for each of `services`, then `container`'s own probes.
    pub fn from_services(services: &Services, container: &Container) -> Self {
        let mut checker = Self::new();
        for probe in services.probes().into_iter().chain(container.probes().iter().cloned()) {
            checker.add_probe(probe);
        }
        checker
    }
}

/// PostgreSQL, critical: down makes the process unhealthy and not ready.
pub struct PostgresProbe {
    manager: Arc<PostgresConnectionManager>,
    timeout: Duration,
}

impl PostgresProbe {
    /// A probe of `manager` with [`SERVICE_PROBE_TIMEOUT`].
    pub fn new(manager: Arc<PostgresConnectionManager>) -> Self {
        Self { manager, timeout: SERVICE_PROBE_TIMEOUT }
    }

    /// The same probe with `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl HealthProbe for PostgresProbe {
    fn name(&self) -> &str {
        "postgres"
    }

    fn criticality(&self) -> Criticality {
        Criticality::Critical
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn check(&self) -> BoxFuture<'_, Probed> {
        Box::pin(async move {
            let health = self.manager.health_check().await;
            let mut metrics = pool_figures(&health.connection_pool);
            if let Some(version) = health.server_version {
                metrics.insert("server_version".into(), version.into());
            }
            if let Some(active) = health.active_connections {
                metrics.insert("active_connections".into(), active.into());
            }
            metrics.insert("schema".into(), health.schema.into());
            metrics.insert("schema_exists".into(), health.schema_exists.into());
            Probed { status: health.status, errors: health.errors, metrics }
        })
    }

    fn timed_out(&self, limit: Duration) -> Probed {
        let stats = self.manager.connection_stats();
        let mut probed = Probed::failing(HealthStatus::Unhealthy, timeout_reason(limit));
        // The probe's own wait has ended by now: `waiting` counts the other callers.
        if stats.max_size > 0 && stats.in_use >= stats.max_size {
            probed.errors.push(format!(
                "the pool is exhausted: all {} connections are in use and {} other callers wait",
                stats.max_size, stats.waiting
            ));
        }
        probed.metrics = pool_figures(&stats);
        probed
    }
}

/// The pool's figures as a probe reports them.
fn pool_figures(stats: &ConnectionStats) -> Map<String, Value> {
    let mut figures = Map::new();
    let mut put = |key: &str, value: Value| {
        figures.insert(key.to_owned(), value);
    };
    put("size", stats.size.into());
    put("idle", stats.idle.into());
    put("in_use", stats.in_use.into());
    put("waiting", stats.waiting.into());
    put("max_size", stats.max_size.into());
    put("utilization_percent", utilization_percent(stats).into());
    put("wait_timeouts", stats.wait_timeouts.into());
    put("failed_connections", stats.failed_connections.into());
    put("total_queries", stats.total_queries.into());
    put("failed_queries", stats.failed_queries.into());
    put("average_query_time_ms", stats.average_query_time_ms.into());
    figures
}

/// Connections checked out, percent of the pool's maximum.
pub(crate) fn utilization_percent(stats: &ConnectionStats) -> f64 {
    if stats.max_size == 0 { 0.0 } else { f64::from(stats.in_use) / f64::from(stats.max_size) * 100.0 }
}

/// The Kafka producer pool; degrades: without Kafka the process serves with less.
pub struct KafkaPoolProbe {
    pool: Arc<KafkaProducerPool>,
    timeout: Duration,
}

impl KafkaPoolProbe {
    /// A probe of `pool` with [`SERVICE_PROBE_TIMEOUT`].
    pub fn new(pool: Arc<KafkaProducerPool>) -> Self {
        Self { pool, timeout: SERVICE_PROBE_TIMEOUT }
    }

    /// The same probe with `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl HealthProbe for KafkaPoolProbe {
    fn name(&self) -> &str {
        "kafka"
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn check(&self) -> BoxFuture<'_, Probed> {
        // The round trip ends a little before the probe's timeout, so the answer says what the
        // brokers did rather than only that the probe timed out, and no thread lingers.
        let limit = self.timeout.mul_f64(0.9);
        Box::pin(async move { Probed::from(self.pool.health_check_within(limit).await) })
    }

    fn timed_out(&self, limit: Duration) -> Probed {
        // The pool's counters need no I/O: say what they say beside the timeout.
        let mut probed = Probed::from(self.pool.health());
        probed.status = HealthStatus::Unhealthy;
        probed.errors.insert(0, format!("the brokers did not answer: {}", timeout_reason(limit)));
        probed
    }
}

/// The Kafka event bus; degrades. Judged on what happened since its previous check: events
/// that failed for good (after the bus's retries) with none published make it unhealthy,
/// failures beside publishes degraded. So a check reflects the bus now, not its whole past.
pub struct EventBusProbe {
    bus: Arc<KafkaEventBus>,
    last: Mutex<EventBusStats>,
}

impl EventBusProbe {
    /// A probe of `bus`; its first check looks at everything since the bus was made.
    pub fn new(bus: Arc<KafkaEventBus>) -> Self {
        Self { bus, last: Mutex::new(EventBusStats::default()) }
    }
}

impl HealthProbe for EventBusProbe {
    fn name(&self) -> &str {
        "event_bus"
    }

    fn check(&self) -> BoxFuture<'_, Probed> {
        let now = self.bus.stats();
        let before = std::mem::replace(&mut *self.last.lock().unwrap_or_else(PoisonError::into_inner), now);
        // A counter below its earlier value cannot happen with one bus; saturate anyway.
        let published = now.published.saturating_sub(before.published);
        let failed = now.failed.saturating_sub(before.failed);
        let mut probed = match (failed, published) {
            (0, _) => Probed::healthy(),
            (failed, 0) => Probed::failing(
                HealthStatus::Unhealthy,
                format!("{failed} events failed for good since the last check, and none was published"),
            ),
            (failed, published) => Probed::failing(
                HealthStatus::Degraded,
                format!("{failed} events failed for good since the last check ({published} published)"),
            ),
        };
        probed = probed
            .with_metric("published", now.published)
            .with_metric("failed", now.failed)
            .with_metric("retries", now.retries)
            .with_metric("rate_limited", now.rate_limited)
            .with_metric("published_since_last_check", published)
            .with_metric("failed_since_last_check", failed);
        Box::pin(std::future::ready(probed))
    }
}

/// The circuit breaker; degrades: an open breaker means its service is being spared, not that
/// the process cannot serve.
pub struct CircuitBreakerProbe {
    breaker: Arc<CircuitBreaker>,
}

impl CircuitBreakerProbe {
    /// A probe of `breaker`.
    pub fn new(breaker: Arc<CircuitBreaker>) -> Self {
        Self { breaker }
    }
}

impl HealthProbe for CircuitBreakerProbe {
    fn name(&self) -> &str {
        "circuit_breaker"
    }

    fn check(&self) -> BoxFuture<'_, Probed> {
        let metrics = self.breaker.metrics();
        let probed = match metrics.state {
            CircuitBreakerState::Closed => Probed::healthy(),
            CircuitBreakerState::HalfOpen => Probed::failing(
                HealthStatus::Degraded,
                "the circuit is half open: trial calls decide whether it closes",
            ),
            CircuitBreakerState::Disabled => {
                Probed::failing(HealthStatus::Degraded, "the circuit breaker is disabled: calls pass unguarded")
            }
            CircuitBreakerState::Open => {
                Probed::failing(HealthStatus::Unhealthy, "the circuit is open: calls are rejected")
            }
            CircuitBreakerState::ForcedOpen => {
                Probed::failing(HealthStatus::Unhealthy, "the circuit is forced open: calls are rejected until a reset")
            }
        };
        let probed = probed
            .with_metric("state", metrics.state.as_str())
            .with_metric("total_calls", metrics.total_calls)
            .with_metric("successful_calls", metrics.successful_calls)
            .with_metric("failed_calls", metrics.failed_calls)
            .with_metric("rejected_calls", metrics.rejected_calls)
            .with_metric("circuit_opens", metrics.circuit_opens)
            .with_metric("success_rate", metrics.success_rate)
            .with_metric("window_failure_rate", metrics.window_failure_rate);
        Box::pin(std::future::ready(probed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::environment::Environment;
    use crate::error::{ErrorCode, OnexError};
    use crate::health::monitor::HealthMonitor;
    use crate::models::circuit_breaker::CircuitBreakerConfig;

    fn breaker() -> Arc<CircuitBreaker> {
        let mut config = CircuitBreakerConfig::for_environment(Environment::Production);
        // Only the run of consecutive failures opens it: five calls are enough.
        config.failure_rate_threshold = 0;
        config.slow_call_rate_threshold = 0;
        Arc::new(CircuitBreaker::new(config).unwrap())
    }

    async fn status(probe: &CircuitBreakerProbe) -> (HealthStatus, String) {
        let probed = probe.check().await;
        (probed.status, probed.metrics["state"].as_str().unwrap_or_default().to_owned())
    }

    #[tokio::test(start_paused = true)]
    async fn the_breaker_is_healthy_closed_degraded_half_open_and_unhealthy_open() {
        let breaker = breaker();
        let probe = CircuitBreakerProbe::new(Arc::clone(&breaker));
        assert_eq!(probe.criticality(), Criticality::Degrades);
        assert_eq!(status(&probe).await, (HealthStatus::Healthy, "closed".to_owned()));
        for _ in 0..breaker.config().failure_threshold {
            let _ = breaker
                .call(async { Err::<(), _>(OnexError::new(ErrorCode::IntegrationServiceUnavailable, "down")) })
                .await;
        }
        assert_eq!(status(&probe).await, (HealthStatus::Unhealthy, "open".to_owned()));
        tokio::time::advance(Duration::from_secs(u64::from(breaker.config().recovery_timeout_secs))).await;
        breaker.call(async { Ok(()) }).await.unwrap();
        assert_eq!(status(&probe).await, (HealthStatus::Degraded, "half_open".to_owned()));
        breaker.force_open();
        assert_eq!(status(&probe).await, (HealthStatus::Unhealthy, "forced_open".to_owned()));
        breaker.disable();
        assert_eq!(status(&probe).await, (HealthStatus::Degraded, "disabled".to_owned()));
    }

    #[tokio::test]
    async fn the_monitor_uses_the_containers_breaker_and_holds_its_failure_rate_to_the_threshold() {
        let breaker = breaker();
        let mut container = Container::new();
        container.register(Arc::clone(&breaker));
        let monitor = HealthMonitor::from_container(&container, Environment::Production).unwrap();
        assert_eq!(monitor.checker().probe_names(), ["circuit_breaker"]);
        for _ in 0..99 {
            breaker.call(async { Ok(()) }).await.unwrap();
        }
        let _ = breaker
            .call(async { Err::<(), _>(OnexError::new(ErrorCode::IntegrationServiceUnavailable, "down")) })
            .await;
        let result = monitor.check().await;
        assert_eq!(result.figures.breaker_failure_rate_percent, 1.0);
        assert_eq!((result.figures.operations, result.figures.failures), (99, 1));
        assert_eq!(result.overall_status, HealthStatus::Degraded, "1 % is above production's 0.5 %");
        let thresholds = result.components.last().unwrap();
        assert_eq!(thresholds.component, "thresholds");
        assert!(
            thresholds.errors.iter().any(|e| e.contains("circuit-breaker failure rate")),
            "{:?}",
            thresholds.errors
        );
        assert_eq!(result.totals.circuit_breaker_success_rate, Some(99.0));
        // The next result counts only what happened since: nothing failed, healthy again.
        breaker.call(async { Ok(()) }).await.unwrap();
        let result = monitor.check().await;
        assert_eq!((result.figures.operations, result.figures.failures), (1, 0));
        assert_eq!(result.overall_status, HealthStatus::Healthy, "{:?}", result.components);
    }
}
