//! One health model for every service: probes, each with its own timeout, run concurrently and
//! aggregated into liveness and readiness.
//!
//! - A [`HealthProbe`] checks one dependency and says how much it matters ([`Criticality`]).
//! - [`HealthChecker::readiness`] runs every probe at once, each under its own timeout; a probe
//!   that does not answer in time is unhealthy with the reason "timed out after N ms" and never
//!   holds the others or the aggregate up.
//! - The aggregate: a [`Criticality::Critical`] probe that is unhealthy (PostgreSQL down) makes
//!   the process unhealthy; any other probe that is not healthy makes it degraded; otherwise it
//!   is healthy. A process is ready unless it is unhealthy.
//! - [`HealthChecker::liveness`] touches no dependency: a process that can answer is alive.
//!
//! Probes must be asynchronous: a probe that blocks its thread cannot be interrupted by its
//! timeout.
//!
//! - [`probes`]: the probes of the runtime's services (PostgreSQL, the Kafka producer pool,
//!   the event bus, the circuit breaker) and [`HealthChecker::from_container`].
//! - [`assess`]: the per-environment thresholds and the rule that makes one status of it all.
//! - [`monitor`]: [`HealthMonitor`], which checks on demand or periodically, keeps the last
//!   100 results for trends and exposes the `omnibase_*` series.

pub mod assess;
pub mod monitor;
pub mod probes;

pub use monitor::HealthMonitor;
pub use probes::{CircuitBreakerProbe, EventBusProbe, KafkaPoolProbe, PostgresProbe, Services};

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::{BoxFuture, join_all};
use serde::Serialize;

use crate::models::health::{ComponentHealth, HealthStatus};

/// The timeout of a probe that does not set its own.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How much a failing probe matters to the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Criticality {
    /// The process cannot serve without it: unhealthy makes the process unhealthy (not ready).
    Critical,
    /// The process serves with less without it: unhealthy makes the process degraded.
    Degrades,
}

/// What a probe found.
#[derive(Debug, Clone, PartialEq)]
pub struct Probed {
    /// Its state.
    pub status: HealthStatus,
    /// Why it is not healthy.
    pub errors: Vec<String>,
    /// Figures of the component (pool sizes, counts, rates).
    pub metrics: serde_json::Map<String, serde_json::Value>,
}

impl Probed {
    /// Healthy, with no figures.
    pub fn healthy() -> Self {
        Self { status: HealthStatus::Healthy, errors: Vec::new(), metrics: serde_json::Map::new() }
    }

    /// `status` for `reason`.
    pub fn failing(status: HealthStatus, reason: impl Into<String>) -> Self {
        Self { status, errors: vec![reason.into()], metrics: serde_json::Map::new() }
    }

    /// Adds the figure `key`.
    pub fn with_metric(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.metrics.insert(key.to_owned(), value.into());
        self
    }
}

impl From<ComponentHealth> for Probed {
    fn from(health: ComponentHealth) -> Self {
        Self { status: health.status, errors: health.errors, metrics: health.metrics }
    }
}

/// A check of one dependency.
pub trait HealthProbe: Send + Sync {
    /// The component's name in reports (`postgres`, `kafka`, …).
    fn name(&self) -> &str;

    /// How much the component matters.
    fn criticality(&self) -> Criticality {
        Criticality::Degrades
    }

    /// How long the check may take before it counts as unhealthy.
    fn timeout(&self) -> Duration {
        DEFAULT_PROBE_TIMEOUT
    }

    /// Checks the component.
    fn check(&self) -> BoxFuture<'_, Probed>;

    /// The result when [`HealthProbe::check`] did not answer within `limit`: unhealthy with
    /// the reason "timed out after N ms". A probe overrides it to add what it can tell
    /// without waiting (a pool's waiters, say), so a timeout still explains itself.
    fn timed_out(&self, limit: Duration) -> Probed {
        Probed::failing(HealthStatus::Unhealthy, timeout_reason(limit))
    }
}

/// "timed out after N ms": the reason of a probe that did not answer within `limit`.
pub fn timeout_reason(limit: Duration) -> String {
    format!("timed out after {} ms", limit.as_millis())
}

/// The health of the process: the aggregate and every component.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthReport {
    /// The aggregate.
    pub status: HealthStatus,
    /// Whether the process should get traffic: every state but unhealthy.
    pub ready: bool,
    /// When the check started.
    pub checked_at: DateTime<Utc>,
    /// How long the whole check took.
    pub duration_ms: f64,
    /// Every probe's result, in registration order.
    pub components: Vec<ComponentHealth>,
}

/// The probes of a process.
#[derive(Clone, Default)]
pub struct HealthChecker {
    probes: Vec<Arc<dyn HealthProbe>>,
}

impl HealthChecker {
    /// A checker with no probes: always healthy.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `probe`.
    pub fn with_probe(mut self, probe: Arc<dyn HealthProbe>) -> Self {
        self.probes.push(probe);
        self
    }

    /// Adds `probe`.
    pub fn add_probe(&mut self, probe: Arc<dyn HealthProbe>) {
        self.probes.push(probe);
    }

    /// The probes' names, in registration order.
    pub fn probe_names(&self) -> Vec<&str> {
        self.probes.iter().map(|probe| probe.name()).collect()
    }

    /// The probes' criticalities, in registration order (the order of a report's components).
    pub fn criticalities(&self) -> Vec<Criticality> {
        self.probes.iter().map(|probe| probe.criticality()).collect()
    }

    /// Alive: the process answers. No dependency is touched.
    pub fn liveness(&self) -> HealthReport {
        HealthReport {
            status: HealthStatus::Healthy,
            ready: true,
            checked_at: Utc::now(),
            duration_ms: 0.0,
            components: Vec::new(),
        }
    }

    /// Runs every probe concurrently, each under its own timeout, and aggregates them.
    pub async fn readiness(&self) -> HealthReport {
        let checked_at = Utc::now();
        let started = Instant::now();
        let components = join_all(self.probes.iter().map(|probe| run_probe(probe.as_ref()))).await;
        let status = aggregate(self.probes.iter().map(|probe| probe.criticality()).zip(&components));
        HealthReport {
            status,
            ready: status != HealthStatus::Unhealthy,
            checked_at,
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
            components,
        }
    }
}

impl std::fmt::Debug for HealthChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthChecker").field("probes", &self.probe_names()).finish()
    }
}

/// The aggregate of probe results: unhealthy when a critical component is unhealthy, degraded
/// when any component is not healthy, else healthy.
pub fn aggregate<'a>(results: impl IntoIterator<Item = (Criticality, &'a ComponentHealth)>) -> HealthStatus {
    let mut status = HealthStatus::Healthy;
    for (criticality, component) in results {
        status = status.worst(match (criticality, component.status) {
            (_, HealthStatus::Healthy) => HealthStatus::Healthy,
            (Criticality::Critical, HealthStatus::Unhealthy) => HealthStatus::Unhealthy,
            _ => HealthStatus::Degraded,
        });
    }
    status
}

/// Runs one probe under its timeout.
pub async fn run_probe(probe: &dyn HealthProbe) -> ComponentHealth {
    let checked_at = Utc::now();
    let started = Instant::now();
    let limit = probe.timeout();
    let probed = match tokio::time::timeout(limit, probe.check()).await {
        Ok(probed) => probed,
        Err(_) => probe.timed_out(limit),
    };
    ComponentHealth {
        component: probe.name().to_owned(),
        status: probed.status,
        checked_at,
        response_time_ms: started.elapsed().as_secs_f64() * 1000.0,
        errors: probed.errors,
        metrics: probed.metrics,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed {
        name: &'static str,
        criticality: Criticality,
        status: HealthStatus,
        hang: bool,
    }

    impl HealthProbe for Fixed {
        fn name(&self) -> &str {
            self.name
        }
        fn criticality(&self) -> Criticality {
            self.criticality
        }
        fn timeout(&self) -> Duration {
            Duration::from_millis(50)
        }
        fn check(&self) -> BoxFuture<'_, Probed> {
            Box::pin(async move {
                if self.hang {
                    std::future::pending::<()>().await;
                }
                Probed { status: self.status, errors: Vec::new(), metrics: serde_json::Map::new() }
            })
        }
    }

    fn probe(name: &'static str, criticality: Criticality, status: HealthStatus) -> Arc<dyn HealthProbe> {
        Arc::new(Fixed { name, criticality, status, hang: false })
    }

    #[tokio::test]
    async fn a_critical_probe_down_makes_the_process_unhealthy_and_not_ready() {
        let checker = HealthChecker::new()
            .with_probe(probe("postgres", Criticality::Critical, HealthStatus::Unhealthy))
            .with_probe(probe("kafka", Criticality::Degrades, HealthStatus::Healthy));
        let report = checker.readiness().await;
        assert_eq!(report.status, HealthStatus::Unhealthy);
        assert!(!report.ready);
        assert!(checker.liveness().ready, "liveness must not depend on probes");
    }

    #[tokio::test]
    async fn another_probe_down_only_degrades_the_process() {
        let checker = HealthChecker::new()
            .with_probe(probe("postgres", Criticality::Critical, HealthStatus::Healthy))
            .with_probe(probe("kafka", Criticality::Degrades, HealthStatus::Unhealthy));
        let report = checker.readiness().await;
        assert_eq!(report.status, HealthStatus::Degraded);
        assert!(report.ready);
        assert_eq!(report.components.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_probe_is_unhealthy_after_its_timeout_and_the_others_still_answer() {
        let checker = HealthChecker::new()
            .with_probe(Arc::new(Fixed {
                name: "stuck",
                criticality: Criticality::Degrades,
                status: HealthStatus::Healthy,
                hang: true,
            }))
            .with_probe(probe("postgres", Criticality::Critical, HealthStatus::Healthy));
        let report = checker.readiness().await;
        assert_eq!(report.status, HealthStatus::Degraded);
        assert_eq!(report.components[0].errors, vec!["timed out after 50 ms".to_owned()]);
        assert_eq!(report.components[1].status, HealthStatus::Healthy);
    }
}
