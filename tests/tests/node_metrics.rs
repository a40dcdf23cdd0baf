//! Node operation series end to end: `node_event_bus_circuit_breaker_compute` (which needs no
//! outside service) built through the generated registry from a container holding the process's
//! `MetricsRegistry`, called, and scraped over HTTP from the observability server.

use std::sync::Arc;

use onex_generated::nodes::node_event_bus_circuit_breaker_compute::v1_0_0::models::{
    EnumEventBusCircuitBreakerOperation, ModelEventBusCircuitBreakerInput,
};
use onex_generated::nodes::node_event_bus_circuit_breaker_compute::v1_0_0::{
    EventBusCircuitBreaker, NodeEventBusCircuitBreakerCompute as CircuitBreakerNode,
};
use onex_runtime::event::OnexEvent;
use onex_runtime::health::HealthChecker;
use onex_runtime::http::{ObservabilityServer, ObservabilityServerConfig};
use onex_runtime::metrics::MetricsRegistry;
use onex_runtime::{Container, Context, DynNode, ErrorCode, Node};
use serde_json::{Value, json};
use uuid::Uuid;

const NODE: &str = "node_event_bus_circuit_breaker_compute";
const OPERATIONS: [&str; 5] = ["publish_event", "get_state", "get_metrics", "reset_circuit", "get_health_status"];

async fn call(node: &dyn DynNode, input: Value) -> Result<Value, onex_runtime::OnexError> {
    node.process_json(input, Context::new()).await
}

/// The body of `GET /metrics`.
async fn scrape(server: &ObservabilityServer) -> String {
    let (status, body) = onex_tests::http::get(server.local_addr(), "/metrics").await.expect("GET /metrics");
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of the sample of `name` whose labels are exactly `environment="test"`, the
/// node's, `operation` and `extra`, in any order.
fn sample<'t>(text: &'t str, name: &str, operation: &str, extra: &[(&str, &str)]) -> Option<&'t str> {
    let mut wanted: Vec<String> = [("environment", "test"), ("node", NODE), ("operation", operation)]
        .iter()
        .chain(extra)
        .map(|(key, value)| format!(r#"{key}="{value}""#))
        .collect();
    wanted.sort();
    text.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (line_name, labels) = series.strip_suffix('}')?.split_once('{')?;
        let mut labels: Vec<String> = labels.split(',').map(str::to_owned).collect();
        labels.sort();
        (line_name == name && labels == wanted).then_some(value)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_node_counts_times_and_exposes_every_operation_by_outcome() {
    let registry = Arc::new(MetricsRegistry::new("test"));
    let mut container = Container::new();
    container.register(Arc::clone(&registry));
    // Two instances of one node in one process: the second must not trip over the families
    // the first registered, and both count into the same series.
    let first = onex_generated::registry().build(NODE, None, &container).expect("the first node builds");
    let second = onex_generated::registry().build(NODE, None, &container).expect("the second node builds");

    let state = call(first.as_ref(), json!({"operation_type": "get_state"})).await.expect("get_state answers");
    assert_eq!(state["state"], "closed", "{state}");
    call(second.as_ref(), json!({"operation_type": "get_state"})).await.expect("get_state answers");
    // Without a publisher in the container, publishing is refused: an error answer.
    let event = OnexEvent::new("test.metrics.happened", "node-metrics-test", Uuid::new_v4(), json!({}));
    let refused = call(first.as_ref(), json!({"operation_type": "publish_event", "event": event})).await.unwrap_err();
    assert_eq!(refused.code(), ErrorCode::ConfigurationError, "{refused}");

    let server = ObservabilityServer::start(
        ObservabilityServerConfig { address: "127.0.0.1:0".parse().unwrap() },
        Arc::clone(&registry),
        Arc::new(HealthChecker::new()),
    )
    .await
    .expect("the server starts");
    let text = scrape(&server).await;
    server.shutdown().await;

    for family in [
        "# TYPE onex_node_operations counter",
        "# TYPE onex_node_operations_in_flight gauge",
        "# TYPE onex_node_operation_duration_seconds histogram",
    ] {
        assert_eq!(text.matches(family).count(), 1, "{family} once:\n{text}");
    }
    let ok = [("outcome", "ok")];
    let error = [("outcome", "error")];
    let expected = [
        ("onex_node_operations_total", "get_state", &ok[..], "2"),
        ("onex_node_operations_total", "get_state", &error[..], "0"),
        ("onex_node_operations_total", "publish_event", &ok[..], "0"),
        ("onex_node_operations_total", "publish_event", &error[..], "1"),
        ("onex_node_operation_duration_seconds_count", "get_state", &[], "2"),
        ("onex_node_operation_duration_seconds_count", "publish_event", &[], "1"),
        ("onex_node_operation_duration_seconds_bucket", "get_state", &[("le", "+Inf")], "2"),
        ("onex_node_operations_in_flight", "get_state", &[], "0"),
        ("onex_node_operations_in_flight", "publish_event", &[], "0"),
    ];
    for (name, operation, extra, value) in expected {
        assert_eq!(sample(&text, name, operation, extra), Some(value), "{name} {operation} {extra:?}:\n{text}");
    }
    // Every operation of the contract is exposed from the start, the unused ones at zero.
    for operation in OPERATIONS {
        let count = sample(&text, "onex_node_operation_duration_seconds_count", operation, &[]);
        assert!(count.is_some(), "{operation} has no duration:\n{text}");
    }
    assert_eq!(sample(&text, "onex_node_operations_total", "reset_circuit", &ok), Some("0"), "{text}");
    let help = text.lines().filter(|line| line.starts_with("# HELP onex_node_")).collect::<Vec<_>>();
    assert_eq!(help.len(), 3, "{text}");
    assert!(
        help.iter().all(|line| line.ends_with(|c: char| c.is_alphanumeric() || c == '.') && !line.ends_with("..")),
        "{help:?}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_built_without_a_registry_records_into_one_given_later() {
    let node = CircuitBreakerNode::<EventBusCircuitBreaker>::new(&Container::new()).expect("the node builds");
    assert!(!node.instruments().has_metrics(), "no registry in the container, yet series");
    let registry = MetricsRegistry::new("test");
    let node = node.with_metrics(&registry).expect("the registry takes the node families");
    let input = ModelEventBusCircuitBreakerInput::new(EnumEventBusCircuitBreakerOperation::GetHealthStatus);
    node.process(input, Context::new()).await.expect("get_health_status answers");
    let text = registry.encode().unwrap();
    let ok = sample(&text, "onex_node_operations_total", "get_health_status", &[("outcome", "ok")]);
    assert_eq!(ok, Some("1"), "{text}");
}
