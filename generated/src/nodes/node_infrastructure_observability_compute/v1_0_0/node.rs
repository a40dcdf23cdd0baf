// The handler of `node_infrastructure_observability_compute` v1.0.0: Records infrastructure metrics (kept 24 h) and exports them through the process's metrics registry, one sample per series; raises alerts from the circuit breakers, error rates, event latency and queues, de-duplicated by name until resolved by id; computes a weighted health score and latency percentiles.
//
// Created once by `cargo run -p codegen` from contracts/nodes/node_infrastructure_observability_compute/v1_0_0/contract.yaml.
// From then on this file is owned by people: regeneration never overwrites it.
//
// The handler is a thin adapter over `onex_runtime::observability::Observability`, which holds
// the rules (what a sample may be, retention, de-duplication, the alert rules, the score). What
// it adds is where the parts come from and the request checks below.
//
// Where things come from:
// - the metrics registry: the container's `MetricsRegistry` (the process's, also served on
//   /metrics), else one of the node's own labelled with the deployment environment. Recorded
//   series are written to it, and export_prometheus returns its whole exposition, the services'
//   series included;
// - the settings: an `ObservabilityConfig` registered in the container, else the defaults
//   (retention 24 h, a collector pass every 30 s);
// - the watched breakers: the container's `GuardedPublisher` (its breaker and outbox queue, as
//   `event_bus`) and the container's `CircuitBreaker` (as `default`, unless it is the
//   publisher's own).
//
// The collector starts with the node when the node is built inside a tokio runtime, otherwise
// at its first operation; it stops when the node is dropped.
//
// Errors: a request that cannot be served is an `Err`, never an output: VALIDATION_ERROR with
// the detail `field` for a missing or bad field (metric_name and metric_value for
// record_metric, alert_id for resolve_alert, time_period_hours below 1 for
// get_performance_trends, and every rule of the store on names, labels, values and types),
// NOT_FOUND for an alert id the node does not hold.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::Utc;
use onex_runtime::environment::{Environment, ProcessEnv};
use onex_runtime::metrics::MetricsRegistry;
use onex_runtime::observability::{Observability, ObservabilityConfig};
use onex_runtime::{Container, Context, OnexError};

use super::handler::{Dependencies, InfrastructureObservabilityHandler, Input, Output};
use super::models::{ModelObservabilityHealthSummary, ModelObservabilityPerformanceTrends};

/// Name under which the container's `GuardedPublisher` is watched.
pub const EVENT_BUS_BREAKER: &str = "event_bus";
/// Name under which the container's `CircuitBreaker` is watched.
pub const DEFAULT_BREAKER: &str = "default";

/// Implements the operations of `node_infrastructure_observability_compute`.
pub struct InfrastructureObservability {
    /// The contract's dependencies, resolved from the container.
    pub dependencies: Dependencies,
    observability: Observability,
    config: ObservabilityConfig,
    /// Set when the node was built outside a runtime: the first operation starts the collector.
    start_pending: AtomicBool,
}

impl std::fmt::Debug for InfrastructureObservability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InfrastructureObservability")
            .field("observability", &self.observability)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl InfrastructureObservability {
    /// The metrics, alerts and collector behind the node.
    pub fn observability(&self) -> &Observability {
        &self.observability
    }

    /// Starts the collector if the node was built outside a runtime.
    fn ensure_collecting(&self) -> Result<(), OnexError> {
        if self.start_pending.swap(false, Ordering::AcqRel) {
            self.observability.start(self.config.collect_interval)?;
        }
        Ok(())
    }

    /// An answer to `input` with the counts every answer carries.
    fn output(&self, input: &Input, ctx: &Context) -> Output {
        let correlation_id = input.correlation_id.unwrap_or_else(|| ctx.correlation_id());
        let mut out = Output::new(true, input.operation_type, correlation_id, Utc::now());
        out.metrics_count = Some(self.observability.store().series_count() as u64);
        out.alerts_count = Some(self.observability.alert_book().active_count() as u64);
        out
    }
}

impl InfrastructureObservabilityHandler for InfrastructureObservability {
    fn new(container: &Container) -> Result<Self, OnexError> {
        let dependencies = Dependencies::resolve(container)?;
        let config =
            container.try_resolve::<ObservabilityConfig>().map_or_else(ObservabilityConfig::default, |c| (*c).clone());
        let registry = dependencies
            .metrics_registry
            .clone()
            .unwrap_or_else(|| Arc::new(MetricsRegistry::new(Environment::detect(&ProcessEnv).as_str())));
        let observability = Observability::new(registry, &config)?;
        if let Some(publisher) = &dependencies.guarded_publisher {
            observability.register_guarded_publisher(EVENT_BUS_BREAKER, Arc::clone(publisher))?;
        }
        if let Some(breaker) = &dependencies.circuit_breaker {
            // The publisher's own breaker is watched once, as `event_bus`.
            observability.register_circuit_breaker(DEFAULT_BREAKER, Arc::clone(breaker))?;
        }
        let in_runtime = tokio::runtime::Handle::try_current().is_ok();
        if in_runtime {
            observability.start(config.collect_interval)?;
        }
        Ok(Self { dependencies, observability, config, start_pending: AtomicBool::new(!in_runtime) })
    }

    async fn record_metric(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        self.ensure_collecting()?;
        let name = input.metric_name.as_deref().ok_or_else(|| {
            required("metric_name", "record_metric needs metric_name, the name of the metric to record")
        })?;
        let value = input
            .metric_value
            .ok_or_else(|| required("metric_value", "record_metric needs metric_value, the value of the sample"))?;
        let labels = input.metric_labels.clone().unwrap_or_default();
        let point = self.observability.record_metric(name, value, input.metric_type, labels)?;
        let mut out = self.output(&input, ctx);
        out.metrics = Some(vec![point]);
        Ok(out)
    }

    async fn get_current_metrics(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        self.ensure_collecting()?;
        let mut out = self.output(&input, ctx);
        out.metrics = Some(self.observability.store().current_metrics());
        Ok(out)
    }

    async fn get_health_summary(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        self.ensure_collecting()?;
        let summary = self.observability.health_summary();
        let score = summary.score;
        let mut model = ModelObservabilityHealthSummary::new(score.score, score.status, summary.active_alerts as u64);
        model.circuit_score = Some(score.circuit);
        model.latency_score = Some(score.latency);
        model.error_score = Some(score.error);
        model.p95_latency_ms = summary.latency.p95_seconds.map(|s| s * 1000.0);
        model.p99_latency_ms = summary.latency.p99_seconds.map(|s| s * 1000.0);
        model.error_rate = Some(summary.error_rate);
        let mut out = self.output(&input, ctx);
        out.health_summary = Some(model);
        Ok(out)
    }

    async fn get_performance_trends(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        self.ensure_collecting()?;
        if input.time_period_hours < 1 {
            return Err(OnexError::validation(format!(
                "time_period_hours is {}; it must be at least 1",
                input.time_period_hours
            ))
            .with_detail("field", "time_period_hours"));
        }
        let trends = self.observability.store().performance_trends(input.time_period_hours);
        let mut model = ModelObservabilityPerformanceTrends::new(trends.period_hours, trends.latency_samples);
        model.average_latency_ms = trends.average_latency_ms;
        model.p95_latency_ms = trends.p95_latency_ms;
        model.p99_latency_ms = trends.p99_latency_ms;
        model.error_rates = Some(trends.error_rates);
        let mut out = self.output(&input, ctx);
        out.trends = Some(model);
        Ok(out)
    }

    async fn export_prometheus(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        self.ensure_collecting()?;
        let text = self.observability.export()?;
        let mut out = self.output(&input, ctx);
        out.prometheus_text = Some(text);
        Ok(out)
    }

    async fn get_alerts(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        self.ensure_collecting()?;
        let alerts = self.observability.alerts(input.alert_severity, input.active_only);
        let mut out = self.output(&input, ctx);
        out.alerts = Some(alerts);
        Ok(out)
    }

    async fn resolve_alert(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        self.ensure_collecting()?;
        let id = input
            .alert_id
            .as_deref()
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| required("alert_id", "resolve_alert needs alert_id, the id of the alert to resolve"))?;
        let alert = self.observability.resolve_alert(id)?;
        let mut out = self.output(&input, ctx);
        out.alerts = Some(vec![alert]);
        Ok(out)
    }
}

/// The `VALIDATION_ERROR` of a missing field.
fn required(field: &str, message: &str) -> OnexError {
    OnexError::validation(message).with_detail("field", field)
}
