//! The tracing pipeline against a real OTLP receiver on loopback: export over gRPC and
//! HTTP/protobuf, sampling, a collector that is down or hangs, shutdown, configuration errors
//! and the `tracing` bridge.

use std::time::{Duration, Instant};

use onex_runtime::telemetry::{self, KeyValue, QueueLimits, SpanKind, Tracing};
use onex_tests::otlp::{OtlpReceiver, ReceivedSpan};

const WAIT: Duration = Duration::from_secs(20);

/// A root span with two children, one of which has a child of its own; returns the root's
/// trace id as hex.
fn record_a_small_trace(tracing: &Tracing) -> String {
    let mut root = tracing.span_in("root-operation", SpanKind::Server, &telemetry::OtelContext::new());
    root.set_attribute(KeyValue::new("onex.test", "yes"));
    let trace_id = root.span_context().expect("enabled").trace_id().to_string();
    let cx = root.into_context(&telemetry::OtelContext::new());
    let child = tracing.span_in("child-statement", SpanKind::Client, &cx);
    let child_cx = child.into_context(&cx);
    tracing.span_in("grandchild-send", SpanKind::Producer, &child_cx).end();
    drop(child_cx);
    tracing.span_in("second-child", SpanKind::Internal, &cx).end();
    drop(cx);
    trace_id
}

/// `Tracing::flush` blocks its thread until the export thread answers; run it off the runtime
/// that serves the receiver.
async fn flush(tracing: &Tracing) {
    let tracing = tracing.clone();
    tokio::task::spawn_blocking(move || tracing.flush()).await.expect("flush task").expect("flush");
}

/// `Tracing::shutdown` off the runtime, with how long it took.
async fn shutdown(tracing: &Tracing) -> Result<Duration, onex_runtime::OnexError> {
    let tracing = tracing.clone();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        tracing.shutdown().map(|()| started.elapsed())
    })
    .await
    .expect("shutdown task")
}

fn by_name<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    spans.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no span {name} in {spans:#?}"))
}

async fn spans_arrive_with_their_resource_and_parent_links(receiver: OtlpReceiver) {
    let tracing = Tracing::with_limits(&receiver.trace_configuration(1.0), QueueLimits::default()).expect("tracing");
    let trace_id = record_a_small_trace(&tracing);
    flush(&tracing).await;
    let spans = receiver
        .wait_for(|spans| spans.iter().filter(|s| s.trace_id == trace_id).count() == 4, WAIT)
        .await
        .expect("the four spans");
    let root = by_name(&spans, "root-operation");
    let child = by_name(&spans, "child-statement");
    let grandchild = by_name(&spans, "grandchild-send");
    let second = by_name(&spans, "second-child");
    assert_eq!(root.parent_span_id, None);
    assert_eq!(child.parent_span_id.as_deref(), Some(root.span_id.as_str()));
    assert_eq!(second.parent_span_id.as_deref(), Some(root.span_id.as_str()));
    assert_eq!(grandchild.parent_span_id.as_deref(), Some(child.span_id.as_str()));
    assert_eq!([root.kind, child.kind, grandchild.kind, second.kind], ["server", "client", "producer", "internal"]);
    assert_eq!(root.attribute_str("onex.test"), Some("yes"));
    for span in [root, child, grandchild, second] {
        assert_eq!(span.trace_id, trace_id);
        assert_eq!(span.resource_str("service.name"), Some("onex-test"));
        assert_eq!(span.resource_str("service.version"), Some("0.0.0-test"));
        assert_eq!(span.resource_str("deployment.environment"), Some("test"));
        assert_eq!(span.scope, "onex-runtime");
    }
    assert_eq!(tracing.stats().exported, 4);
    shutdown(&tracing).await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_exported_over_grpc_arrive_with_the_resource_and_their_parents() {
    spans_arrive_with_their_resource_and_parent_links(OtlpReceiver::start_grpc().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_exported_over_http_protobuf_arrive_with_the_resource_and_their_parents() {
    spans_arrive_with_their_resource_and_parent_links(OtlpReceiver::start_http().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receiver_refuses_connections_when_stopped_and_serves_again_on_the_same_port() {
    let mut receiver = OtlpReceiver::start_grpc().await;
    let port = receiver.port();
    receiver.stop().await;
    let refused = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
    assert!(refused.is_err(), "a stopped receiver still accepts connections");
    receiver.restart().await;
    assert_eq!(receiver.port(), port);
    let tracing = Tracing::with_limits(&receiver.trace_configuration(1.0), QueueLimits::default()).expect("tracing");
    let trace_id = record_a_small_trace(&tracing);
    flush(&tracing).await;
    receiver.wait_for(|spans| spans.iter().any(|s| s.trace_id == trace_id), WAIT).await.expect("spans after restart");
    shutdown(&tracing).await.expect("shutdown");
}
