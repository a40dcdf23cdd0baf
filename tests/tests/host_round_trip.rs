//! Requests round-trip through an in-process node host: request topic → host → node → answer
//! topic, with the correlation id and trace context kept.

use std::time::Duration;

use onex_host::Host;
use onex_host::config::{HostConfig, NodeSelection};
use onex_runtime::environment::MapEnv;
use onex_tests::host::{Requester, answers, create_topics, host_env, request, routes_in};
use serde_json::json;

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

fn serving(node: &str) -> HostConfig {
    let mut config = HostConfig::serving(vec![NodeSelection { name: node.to_owned(), version: None }]);
    config.group_id = format!("host-test-{}", uuid::Uuid::new_v4().simple());
    config.http = Some("127.0.0.1:0".parse().unwrap());
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compute_node_answers_a_request_with_its_correlation_and_trace() {
    let node = "node_event_bus_circuit_breaker_compute";
    let registry = onex_generated::registry();
    let env = host_env(&[]);
    let routes = routes_in(&env, &registry, node);
    create_topics(&routes, 2).await;
    let host = Host::start(serving(node), &registry, &MapEnv(env)).await.expect("host starts");

    let mut ask = request(json!({"operation_type": "get_state"}));
    ask.metadata.trace_context.insert("traceparent".into(), TRACEPARENT.into());
    let invalid = request(json!({"operation_type": "no_such_operation"}));
    let requester = Requester::default();
    requester.send(&routes.requests[0], &ask).await;
    requester.send(&routes.requests[0], &invalid).await;

    let done = answers(&routes.completed, 1, Duration::from_secs(60)).await;
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0].correlation_id, ask.correlation_id);
    assert_eq!(done[0].event_type, format!("{node}.completed"));
    assert_eq!(done[0].payload["state"], "closed", "{}", done[0].payload);
    assert_eq!(done[0].metadata.trace_context["traceparent"], TRACEPARENT);
    let failed = answers(&routes.failed, 1, Duration::from_secs(30)).await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].correlation_id, invalid.correlation_id);
    assert_eq!(failed[0].payload["error_code"], "VALIDATION_ERROR", "{}", failed[0].payload);

    let report = host.shutdown().await.expect("host stops");
    assert_eq!(report.counters.completed.get(), 1, "{}", report.counters.summary());
    assert_eq!(report.counters.failed.get(), 1, "{}", report.counters.summary());
    assert_eq!(report.unanswered, 0);
}
