//! A host whose environment names an OTLP collector records the served node's span in the
//! requester's trace, and flushes it on shutdown. Its own test binary: tracing is installed
//! process-wide.

use std::time::{Duration, Instant};

use onex_tests::host::{TestHost, host_env, request};
use onex_tests::otlp::OtlpReceiver;
use serde_json::json;

const NODE: &str = "node_event_bus_circuit_breaker_compute";
const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT: &str = "b7ad6b7169203331";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_node_records_its_span_in_the_requesters_trace() {
    let receiver = OtlpReceiver::start_grpc().await;
    let endpoint = receiver.endpoint();
    let env = host_env(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_TRACE_SAMPLE_RATE", "1.0"),
        ("OTEL_SERVICE_NAME", "onex-host-test"),
    ]);
    let host = TestHost::start(NODE, env, 1, &[]).await;
    let mut ask = request(json!({"operation_type": "get_state"}));
    ask.metadata.trace_context.insert("traceparent".into(), format!("00-{TRACE_ID}-{PARENT}-01"));
    host.send(&ask).await;
    host.completed(&ask, 1).await;
    host.stop().await;

    let deadline = Instant::now() + Duration::from_secs(30);
    let span = loop {
        if let Some(span) = receiver.spans().into_iter().find(|s| s.name.starts_with(NODE)) {
            break span;
        }
        assert!(Instant::now() < deadline, "no node span; received: {:?}", receiver.spans());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(span.trace_id, TRACE_ID, "{span:?}");
    assert_eq!(span.parent_span_id.as_deref(), Some(PARENT));
    assert_eq!(span.attribute_str("correlation_id"), Some(ask.correlation_id.to_string().as_str()));
    assert_eq!(span.resource_str("service.name"), Some("onex-host-test"));
}
