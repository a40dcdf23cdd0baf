// The handler of `node_infrastructure_health_monitor_orchestrator` v1.0.0: Aggregates the health of PostgreSQL, Kafka and the event bus circuit breaker into one status, keeps the last 100 results for trends, runs periodic monitoring and exposes the omnibase Prometheus series.
//
// Created once by `cargo run -p codegen` from contracts/nodes/node_infrastructure_health_monitor_orchestrator/v1_0_0/contract.yaml.
// From then on this file is owned by people: regeneration never overwrites it.
//
// The handler is a thin adapter over `onex_runtime::health::HealthMonitor`, which checks the
// services of the container (PostgreSQL, the Kafka producer pool, the event bus, the circuit
// breaker, and the probes registered with `Container::register_probe`), judges each result
// by the thresholds of the deployment environment, keeps the last 100 results and exposes the
// seven omnibase series. Which monitor:
// - the `HealthMonitor` registered in the container, when there is one (one monitor per
//   process: its history, its periodic task and its series are shared by every node built
//   from that container);
// - otherwise one made here from the container, judged by the thresholds of the environment
//   `Environment::detect` finds, publishing a status change through the container's event
//   publisher when there is one. Its series go to the container's `MetricsRegistry`; a second
//   node made from the same container without a registered monitor fails with
//   CONFIGURATION_ERROR, since the series can be registered once.
//
// Bad input is an error, not an answer: `time_period_hours` below 1 or
// `monitoring_interval_seconds` below 10 is VALIDATION_ERROR naming the field, whatever the
// operation (they are limits of the input model). An infrastructure that is unhealthy is
// still a successful check.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use onex_runtime::environment::{EnvSource, Environment, ProcessEnv};
use onex_runtime::health::HealthMonitor;
use onex_runtime::health::monitor::MIN_MONITORING_INTERVAL;
use onex_runtime::models::health::HealthAssessment;
use onex_runtime::{Container, Context, OnexError};
use uuid::Uuid;

use super::handler::{Dependencies, InfrastructureHealthMonitorHandler, Input, Output};
use super::models::{
    ModelInfrastructureHealthSample, ModelInfrastructureHealthTotals, ModelInfrastructureHealthTrends,
};

/// The shortest period `get_health_trends` summarizes, in hours.
const MIN_PERIOD_HOURS: u64 = 1;

/// Implements the operations of `node_infrastructure_health_monitor_orchestrator`.
pub struct InfrastructureHealthMonitor {
    /// The contract's dependencies, resolved from the container.
    pub dependencies: Dependencies,
    monitor: Arc<HealthMonitor>,
}

impl std::fmt::Debug for InfrastructureHealthMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InfrastructureHealthMonitor").field("monitor", &self.monitor).finish_non_exhaustive()
    }
}

impl InfrastructureHealthMonitor {
    /// The handler with the deployment environment read from `env` instead of the process
    /// environment (tests, embedded hosts); it only matters when the container holds no
    /// `HealthMonitor`.
    pub fn with_env(container: &Container, env: &dyn EnvSource) -> Result<Self, OnexError> {
        let dependencies = Dependencies::resolve(container)?;
        let monitor = match container.try_resolve::<HealthMonitor>() {
            Some(monitor) => monitor,
            None => {
                let monitor = Arc::new(HealthMonitor::from_container(container, Environment::detect(env))?);
                if let Some(publisher) = &dependencies.protocol_event_bus {
                    monitor.set_publisher(Arc::clone(publisher));
                }
                monitor
            }
        };
        Ok(Self { dependencies, monitor })
    }

    /// The monitor the operations run on.
    pub fn monitor(&self) -> &Arc<HealthMonitor> {
        &self.monitor
    }

    /// A successful answer for `input` with the monitoring state after the operation.
    fn output(&self, input: &Input, ctx: &Context) -> Output {
        let interval = self.monitor.monitoring_interval();
        let mut out =
            Output::new(true, input.operation_type, correlation_id(input, ctx), Utc::now(), interval.is_some());
        out.monitoring_interval_seconds = interval.map(|interval| interval.as_secs());
        out.environment = Some(self.monitor.environment().as_str().to_owned());
        out
    }
}

impl InfrastructureHealthMonitorHandler for InfrastructureHealthMonitor {
    fn new(container: &Container) -> Result<Self, OnexError> {
        Self::with_env(container, &ProcessEnv)
    }

    async fn comprehensive_health_check(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        validate(&input)?;
        let result = self.monitor.check().await;
        let mut out = self.output(&input, ctx);
        describe(&mut out, &result);
        Ok(out)
    }

    async fn get_health_trends(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        validate(&input)?;
        let hours = input.time_period_hours;
        let trends = self.monitor.trends(Duration::from_secs(hours.saturating_mul(3600)));
        let mut out = self.output(&input, ctx);
        out.trends = Some(ModelInfrastructureHealthTrends {
            healthy_percent: trends.healthy_percent,
            degraded_percent: trends.degraded_percent,
            unhealthy_percent: trends.unhealthy_percent,
            average_error_rate_percent: trends.average_error_rate_percent,
            history: Some(
                trends
                    .history
                    .iter()
                    .map(|s| ModelInfrastructureHealthSample::new(s.checked_at, s.overall_status, s.error_rate_percent))
                    .collect(),
            ),
            ..ModelInfrastructureHealthTrends::new(hours, trends.samples)
        });
        if let Some(latest) = self.monitor.latest() {
            out.overall_status = Some(latest.overall_status);
            out.error_rate_percent = Some(latest.figures.error_rate_percent);
            out.error_rate_threshold_percent = Some(latest.thresholds.error_rate_percent);
        }
        Ok(out)
    }

    async fn start_monitoring(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        validate(&input)?;
        self.monitor.start_monitoring(Duration::from_secs(input.monitoring_interval_seconds))?;
        Ok(self.output(&input, ctx))
    }

    async fn stop_monitoring(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        validate(&input)?;
        self.monitor.stop_monitoring().await;
        Ok(self.output(&input, ctx))
    }

    async fn get_prometheus_metrics(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        validate(&input)?;
        let mut out = self.output(&input, ctx);
        out.prometheus_text = Some(self.monitor.prometheus_text()?);
        Ok(out)
    }
}

/// The input model's limits: `time_period_hours` ≥ 1, `monitoring_interval_seconds` ≥ 10.
fn validate(input: &Input) -> Result<(), OnexError> {
    if input.time_period_hours < MIN_PERIOD_HOURS {
        return Err(OnexError::validation(format!(
            "time_period_hours must be at least {MIN_PERIOD_HOURS}, got {}",
            input.time_period_hours
        ))
        .with_detail("field", "time_period_hours"));
    }
    let min_interval = MIN_MONITORING_INTERVAL.as_secs();
    if input.monitoring_interval_seconds < min_interval {
        return Err(OnexError::validation(format!(
            "monitoring_interval_seconds must be at least {min_interval}, got {}",
            input.monitoring_interval_seconds
        ))
        .with_detail("field", "monitoring_interval_seconds"));
    }
    Ok(())
}

/// Puts `result` into `out`.
fn describe(out: &mut Output, result: &HealthAssessment) {
    out.overall_status = Some(result.overall_status);
    out.components = Some(result.components.clone());
    out.error_rate_percent = Some(result.figures.error_rate_percent);
    out.error_rate_threshold_percent = Some(result.thresholds.error_rate_percent);
    out.environment = Some(result.environment.as_str().to_owned());
    let totals = &result.totals;
    out.totals = Some(ModelInfrastructureHealthTotals {
        database_response_time_ms: totals.database_response_time_ms,
        kafka_messages_per_second: totals.kafka_messages_per_second,
        circuit_breaker_success_rate: totals.circuit_breaker_success_rate,
        ..ModelInfrastructureHealthTotals::new(
            totals.postgres_connections,
            totals.kafka_producers,
            totals.messages_processed,
            totals.events_queued,
        )
    });
}

fn correlation_id(input: &Input, ctx: &Context) -> Uuid {
    input.correlation_id.unwrap_or_else(|| ctx.correlation_id())
}
