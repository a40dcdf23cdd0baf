//! `node_infrastructure_observability_compute` built through the container (typed, and once
//! through the generated registry with JSON), with real circuit breakers and the process's
//! metrics registry. The collector runs every 20 ms (a 1 h interval where a test must show that
//! an alert did not wait for a pass); tests wait for its passes through its pass counter, and
//! for an alert with a generous deadline, never for a fixed time.
//!
//! The original system's behaviours, and where each is checked:
//!
//! | behaviour | test |
//! |---|---|
//! | a breaker open raises a critical alert, de-duplicated by name until resolved | `a_forced_open_breaker_raises_one_critical_alert_across_passes_and_resolving_clears_it` |
//! | the collector actually runs (the original never started it) | the same, and `an_opening_is_alerted_at_once_not_at_the_next_pass` |
//! | resolve by id; an unknown id is refused | the first test, and `resolving_an_unknown_alert_id_is_not_found` |
//! | the export repeats no series (the original wrote every retained sample) | `the_export_writes_one_sample_per_series_beside_the_services_series` |
//! | health score and p95/p99 | `the_health_summary_and_the_trends_follow_the_recorded_figures` |
//! | parameter limits (time_period_hours ≥ 1) | `bad_inputs_are_validation_errors_naming_the_field`, `the_registry_built_node_answers_json_and_refuses_hours_below_one` |

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use onex_generated::nodes::node_infrastructure_observability_compute::v1_0_0::models::{
    EnumInfrastructureObservabilityOperation as Op, ModelInfrastructureObservabilityInput as Input,
    ModelInfrastructureObservabilityOutput as Output,
};
use onex_generated::nodes::node_infrastructure_observability_compute::v1_0_0::{
    InfrastructureObservability, NodeInfrastructureObservabilityCompute,
};
use onex_runtime::circuit_breaker::{CircuitBreaker, GuardedPublisher};
use onex_runtime::environment::Environment;
use onex_runtime::event::OnexEvent;
use onex_runtime::event_bus::EventPublisher;
use onex_runtime::metrics::{Counter, MetricsRegistry};
use onex_runtime::models::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerState};
use onex_runtime::models::health::HealthStatus;
use onex_runtime::models::observability::{AlertSeverity, MetricType};
use onex_runtime::node::BoxFuture;
use onex_runtime::observability::ObservabilityConfig;
use onex_runtime::{Container, Context, DynNode, ErrorCode, Node, OnexError};
use serde_json::json;

type ObservabilityNode = NodeInfrastructureObservabilityCompute<InfrastructureObservability>;

const NODE: &str = "node_infrastructure_observability_compute";
const FAST: Duration = Duration::from_millis(20);
/// The longest any wait below may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(10);

struct Setup {
    node: ObservabilityNode,
    registry: Arc<MetricsRegistry>,
    breaker: Arc<CircuitBreaker>,
}

fn breaker() -> Arc<CircuitBreaker> {
    Arc::new(CircuitBreaker::new(CircuitBreakerConfig::for_environment(Environment::Development)).unwrap())
}

/// A node on a container holding a registry, a breaker and a collector interval.
fn setup(interval: Duration) -> Setup {
    let registry = Arc::new(MetricsRegistry::new("test"));
    let breaker = breaker();
    let mut container = Container::new();
    container.register(Arc::clone(&registry));
    container.register(Arc::clone(&breaker));
    container.register(Arc::new(ObservabilityConfig { collect_interval: interval, ..ObservabilityConfig::default() }));
    let node = ObservabilityNode::new(&container).expect("the node builds");
    Setup { node, registry, breaker }
}

async fn call(node: &ObservabilityNode, input: Input) -> Result<Output, OnexError> {
    node.process(input, Context::new()).await
}

fn record(name: &str, value: f64, kind: MetricType, labels: &[(&str, &str)]) -> Input {
    let mut input = Input::new(Op::RecordMetric);
    input.metric_name = Some(name.to_owned());
    input.metric_value = Some(value);
    input.metric_type = kind;
    input.metric_labels = Some(labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect());
    input
}

fn get_alerts(active_only: bool) -> Input {
    let mut input = Input::new(Op::GetAlerts);
    input.active_only = active_only;
    input
}

fn resolve(id: &str) -> Input {
    let mut input = Input::new(Op::ResolveAlert);
    input.alert_id = Some(id.to_owned());
    input
}

/// Waits until the node's collector has completed `at_least` passes.
async fn wait_for_passes(node: &ObservabilityNode, at_least: u64) {
    let mut passes = node.handler().observability().passes();
    tokio::time::timeout(DEADLINE, passes.wait_for(|n| *n >= at_least))
        .await
        .unwrap_or_else(|_| panic!("the collector did not reach {at_least} passes within {DEADLINE:?}"))
        .expect("the collector is gone");
}

fn passes(node: &ObservabilityNode) -> u64 {
    *node.handler().observability().passes().borrow()
}

fn field(error: &OnexError) -> String {
    error.details().get("field").and_then(|v| v.as_str()).unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_forced_open_breaker_raises_one_critical_alert_across_passes_and_resolving_clears_it() {
    let s = setup(FAST);
    wait_for_passes(&s.node, 1).await;
    let opened = Instant::now();
    s.breaker.force_open();
    let after = passes(&s.node) + 5;
    wait_for_passes(&s.node, after).await;
    println!("5 collector passes after the opening took {:?}", opened.elapsed());

    let out = call(&s.node, get_alerts(true)).await.unwrap();
    let alerts = out.alerts.unwrap();
    assert_eq!(alerts.len(), 1, "one alert, not one per pass: {alerts:#?}");
    let alert = &alerts[0];
    assert_eq!(alert.name, "circuit_breaker_open_default");
    assert_eq!(alert.severity, AlertSeverity::Critical);
    assert!(!alert.resolved);
    assert!(alert.occurrences >= 5, "each pass saw the open breaker: {alert:#?}");
    assert_eq!(alert.details["state"], "forced_open");
    assert_eq!(out.alerts_count, Some(1));

    // Closed again first, so the passes below have nothing to raise.
    s.breaker.reset();
    let resolved = call(&s.node, resolve(&alert.id)).await.unwrap();
    let resolved_alert = &resolved.alerts.as_ref().unwrap()[0];
    assert_eq!(resolved_alert.id, alert.id);
    assert!(resolved_alert.resolved && resolved_alert.resolved_at.is_some());
    assert_eq!(resolved.alerts_count, Some(0));

    let after = passes(&s.node) + 2;
    wait_for_passes(&s.node, after).await;
    assert_eq!(call(&s.node, get_alerts(true)).await.unwrap().alerts.unwrap(), []);
    let all = call(&s.node, get_alerts(false)).await.unwrap().alerts.unwrap();
    assert_eq!(all.len(), 1);
    assert!(all[0].resolved);
}

#[tokio::test]
async fn an_opening_is_alerted_at_once_not_at_the_next_pass() {
    let s = setup(Duration::from_secs(3600));
    wait_for_passes(&s.node, 1).await;
    let opened = Instant::now();
    s.breaker.force_open();
    let mut input = get_alerts(true);
    input.alert_severity = Some(AlertSeverity::Critical);
    loop {
        let alerts = call(&s.node, input.clone()).await.unwrap().alerts.unwrap();
        if !alerts.is_empty() {
            assert_eq!(alerts.len(), 1, "{alerts:#?}");
            break;
        }
        assert!(opened.elapsed() < DEADLINE, "no alert within {DEADLINE:?} of the opening");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    println!("the alert was raised {:?} after the opening", opened.elapsed());
    assert_eq!(passes(&s.node), 1, "a pass ran before the alert: it did not come from the transition");
}

#[tokio::test]
async fn the_event_bus_publisher_breaker_is_watched_under_its_own_name() {
    struct Accepting;
    impl EventPublisher for Accepting {
        fn publish(&self, _event: OnexEvent) -> BoxFuture<'_, Result<(), OnexError>> {
            Box::pin(async { Ok(()) })
        }
    }
    let bus_breaker = breaker();
    let publisher = Arc::new(GuardedPublisher::new(Arc::new(Accepting), Arc::clone(&bus_breaker), None));
    let mut container = Container::new();
    container.register(Arc::new(MetricsRegistry::new("test")));
    container.register(publisher);
    // The same breaker in the container too: watched once.
    container.register(Arc::clone(&bus_breaker));
    container.register(Arc::new(ObservabilityConfig { collect_interval: FAST, ..ObservabilityConfig::default() }));
    let node = ObservabilityNode::new(&container).unwrap();
    assert_eq!(node.handler().observability().watched_breakers(), ["event_bus"]);
    bus_breaker.force_open();
    let after = passes(&node) + 2;
    wait_for_passes(&node, after).await;
    let alerts = call(&node, get_alerts(true)).await.unwrap().alerts.unwrap();
    let names: Vec<_> = alerts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["circuit_breaker_open_event_bus"]);
}

#[tokio::test]
async fn resolving_an_unknown_alert_id_is_not_found() {
    let s = setup(FAST);
    let error = call(&s.node, resolve("circuit_breaker_open_default_1700000000_0")).await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::NotFound, "{error}");
    assert_eq!(field(&error), "alert_id");
}

#[tokio::test]
async fn the_export_writes_one_sample_per_series_beside_the_services_series() {
    let s = setup(FAST);
    // A series a service registered itself.
    let calls = Counter::<u64>::default();
    s.registry.register("onex_test_service_calls", "Calls a service made.", calls.clone()).unwrap();
    calls.inc_by(7);

    for i in 0..100 {
        call(&s.node, record("queue_depth", f64::from(i), MetricType::Gauge, &[("queue", "a")])).await.unwrap();
    }
    for i in 0..5 {
        call(&s.node, record("queue_depth", f64::from(i), MetricType::Gauge, &[("queue", "b")])).await.unwrap();
    }
    for total in 1..=10 {
        call(&s.node, record("jobs_total", f64::from(total), MetricType::Counter, &[])).await.unwrap();
    }
    for i in 0..20 {
        let seconds = f64::from(i) / 100.0;
        call(&s.node, record("event_publishing_latency_seconds", seconds, MetricType::Histogram, &[])).await.unwrap();
    }

    let out = call(&s.node, Input::new(Op::ExportPrometheus)).await.unwrap();
    let text = out.prometheus_text.unwrap();
    println!("{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(text.contains("onex_test_service_calls_total{environment=\"test\"} 7\n"), "{text}");
    assert_eq!(text.matches("# TYPE queue_depth gauge\n").count(), 1, "{text}");
    assert_eq!(text.lines().filter(|l| l.starts_with("queue_depth{")).count(), 2, "{text}");
    assert!(text.contains("queue_depth{environment=\"test\",queue=\"a\"} 99.0\n"), "{text}");
    assert!(text.contains("queue_depth{environment=\"test\",queue=\"b\"} 4.0\n"), "{text}");
    assert!(text.contains("# TYPE jobs counter\n"), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with("jobs_total{")).collect::<Vec<_>>(),
        ["jobs_total{environment=\"test\"} 10.0"]
    );
    assert!(text.contains("# TYPE event_publishing_latency_seconds histogram\n"), "{text}");
    assert!(text.contains("event_publishing_latency_seconds_count{environment=\"test\"} 20\n"), "{text}");
    // No sample (name and labels) appears twice anywhere in the exposition.
    let samples: Vec<&str> =
        text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.rsplit_once(' ').map(|(key, _)| key)).collect();
    let distinct: BTreeSet<&str> = samples.iter().copied().collect();
    assert_eq!(distinct.len(), samples.len(), "a sample repeats: {text}");

    let current = call(&s.node, Input::new(Op::GetCurrentMetrics)).await.unwrap();
    assert_eq!(current.metrics_count, Some(4));
    let latest: BTreeMap<String, f64> = current
        .metrics
        .unwrap()
        .into_iter()
        .map(|p| (format!("{}{:?}", p.name, p.labels.values().collect::<Vec<_>>()), p.value))
        .collect();
    assert_eq!(latest["queue_depth[\"a\"]"], 99.0);
    assert_eq!(latest["jobs_total[]"], 10.0);
    assert_eq!(latest["event_publishing_latency_seconds[]"], 0.19);
}

#[tokio::test]
async fn bad_inputs_are_validation_errors_naming_the_field() {
    let s = setup(FAST);
    s.registry.register("onex_test_service_depth", "A service's own.", Counter::<u64>::default()).unwrap();
    call(&s.node, record("depth", 1.0, MetricType::Gauge, &[])).await.unwrap();

    let mut no_name = record("x", 1.0, MetricType::Gauge, &[]);
    no_name.metric_name = None;
    let mut no_value = record("x", 1.0, MetricType::Gauge, &[]);
    no_value.metric_value = None;
    let mut no_hours = Input::new(Op::GetPerformanceTrends);
    no_hours.time_period_hours = 0;
    let mut no_id = Input::new(Op::ResolveAlert);
    no_id.alert_id = None;
    let cases = [
        (no_name, "metric_name"),
        (no_value, "metric_value"),
        (record("9lives", 1.0, MetricType::Gauge, &[]), "metric_name"),
        (record("onex_test_service_depth", 1.0, MetricType::Gauge, &[]), "metric_name"),
        (record("x", f64::NAN, MetricType::Gauge, &[]), "metric_value"),
        (record("x", -1.0, MetricType::Counter, &[]), "metric_value"),
        (record("depth", 1.0, MetricType::Counter, &[]), "metric_type"),
        (record("x", 1.0, MetricType::Gauge, &[("bad-label", "v")]), "metric_labels.bad-label"),
        (record("x", 1.0, MetricType::Gauge, &[("environment", "prod")]), "metric_labels.environment"),
        (record("service_error_rate", 0.5, MetricType::Gauge, &[]), "metric_labels.service"),
        (no_hours, "time_period_hours"),
        (no_id, "alert_id"),
        (resolve("  "), "alert_id"),
    ];
    for (input, expected) in cases {
        let shown = format!("{input:?}");
        let error = call(&s.node, input).await.unwrap_err();
        assert_eq!(error.code(), ErrorCode::ValidationError, "{shown}: {error}");
        assert_eq!(field(&error), expected, "{shown}: {error}");
        assert!(error.message().contains(expected.split('.').next().unwrap()), "{error}");
    }
    let current = call(&s.node, Input::new(Op::GetCurrentMetrics)).await.unwrap();
    assert_eq!(current.metrics_count, Some(1), "a refused sample was kept: {:?}", current.metrics);
}

#[tokio::test]
async fn the_health_summary_and_the_trends_follow_the_recorded_figures() {
    let s = setup(FAST);
    for ms in 1..=100 {
        let seconds = f64::from(ms) / 1000.0 + 0.1495;
        call(&s.node, record("event_publishing_latency_seconds", seconds, MetricType::Histogram, &[])).await.unwrap();
    }
    call(&s.node, record("service_error_rate", 0.02, MetricType::Gauge, &[("service", "postgres")])).await.unwrap();
    call(&s.node, record("service_error_rate", 0.01, MetricType::Gauge, &[("service", "kafka")])).await.unwrap();

    let summary = call(&s.node, Input::new(Op::GetHealthSummary)).await.unwrap().health_summary.unwrap();
    // Mean latency 0.2 s → 80; worst error rate 0.02 → 80; closed breaker → 100:
    // 0.4·100 + 0.3·80 + 0.3·80 = 88.
    assert!((summary.health_score - 88.0).abs() < 1e-6, "{summary:?}");
    assert_eq!(summary.status, HealthStatus::Degraded);
    assert_eq!(summary.circuit_score, Some(100.0));
    assert_eq!(summary.error_rate, Some(0.02));
    assert!((summary.p95_latency_ms.unwrap() - 244.5).abs() < 1e-6, "{summary:?}");
    assert!((summary.p99_latency_ms.unwrap() - 248.5).abs() < 1e-6, "{summary:?}");

    s.breaker.force_open();
    let summary = call(&s.node, Input::new(Op::GetHealthSummary)).await.unwrap().health_summary.unwrap();
    assert!((summary.health_score - 48.0).abs() < 1e-6, "{summary:?}");
    assert_eq!(summary.status, HealthStatus::Unhealthy);
    assert_eq!(s.breaker.state(), CircuitBreakerState::ForcedOpen);

    let trends = call(&s.node, Input::new(Op::GetPerformanceTrends)).await.unwrap().trends.unwrap();
    assert_eq!(trends.period_hours, 1);
    assert_eq!(trends.latency_samples, 100);
    assert!((trends.average_latency_ms.unwrap() - 200.0).abs() < 1e-6, "{trends:?}");
    let rates = trends.error_rates.unwrap();
    assert_eq!(rates.len(), 2);
    assert!((rates["postgres"] - 0.02).abs() < 1e-12);
}

#[tokio::test]
async fn the_registry_built_node_answers_json_and_refuses_hours_below_one() {
    let mut container = Container::new();
    container.register(Arc::new(MetricsRegistry::new("test")));
    let node = onex_generated::registry().build(NODE, None, &container).expect("the registry builds the node");
    let node: &dyn DynNode = node.as_ref();
    let recorded = node
        .process_json(
            json!({"operation_type": "record_metric", "metric_name": "jobs", "metric_value": 3, "metric_type": "counter"}),
            Context::new(),
        )
        .await
        .unwrap();
    assert_eq!(recorded["metrics"][0]["name"], "jobs_total");
    assert_eq!(recorded["metrics_count"], 1);
    let error = node
        .process_json(json!({"operation_type": "get_performance_trends", "time_period_hours": 0}), Context::new())
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::ValidationError);
    assert_eq!(field(&error), "time_period_hours");
    let exported = node.process_json(json!({"operation_type": "export_prometheus"}), Context::new()).await.unwrap();
    assert!(exported["prometheus_text"].as_str().unwrap().contains("jobs_total{environment=\"test\"} 3.0\n"));
}

#[tokio::test]
async fn a_node_without_a_registry_in_the_container_exports_its_own() {
    let node = ObservabilityNode::new(&Container::new()).unwrap();
    call(&node, record("depth", 2.0, MetricType::Gauge, &[])).await.unwrap();
    let text = call(&node, Input::new(Op::ExportPrometheus)).await.unwrap().prometheus_text.unwrap();
    assert!(text.lines().any(|l| l.starts_with("depth{environment=") && l.ends_with(" 2.0")), "{text}");
}

#[tokio::test]
async fn the_collector_stops_when_the_node_is_dropped() {
    let s = setup(FAST);
    wait_for_passes(&s.node, 2).await;
    assert!(s.node.handler().observability().is_running());
    let mut passes = s.node.handler().observability().passes();
    drop(s.node);
    // The pass counter closes once the stopped task has let go of everything.
    tokio::time::timeout(DEADLINE, async { while passes.changed().await.is_ok() {} })
        .await
        .expect("the collector still runs after the node was dropped");
}
