//! The tracing pipeline against a real OTLP receiver on loopback: export over gRPC and
//! HTTP/protobuf, sampling, a collector that is down or hangs, shutdown, configuration errors
//! and the `tracing` bridge.

use std::time::{Duration, Instant};

use onex_runtime::ErrorCode;
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

// ---------------------------------------------------------------------------------------------
// Sampling
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenth_of_root_spans_are_sampled_at_rate_0_1_and_exactly_those_are_exported() {
    const ROOTS: usize = 10_000;
    let receiver = OtlpReceiver::start_grpc().await;
    // A queue large enough that no sampled span is dropped: what arrives is what was sampled.
    let limits = QueueLimits { max_queued: ROOTS, ..QueueLimits::default() };
    let tracing = Tracing::with_limits(&receiver.trace_configuration(0.1), limits).expect("tracing");
    let mut sampled = std::collections::BTreeSet::new();
    for _ in 0..ROOTS {
        let span = tracing.span_in("sampled-root", SpanKind::Internal, &telemetry::OtelContext::new());
        if span.is_recording() {
            sampled.insert(span.span_context().expect("enabled").span_id().to_string());
        }
    }
    // Binomial(10 000, 0.1): mean 1000, sigma 30; 5 sigma either side.
    println!("rate 0.1: {} of {ROOTS} root spans sampled", sampled.len());
    assert!((850..=1150).contains(&sampled.len()), "{} of {ROOTS} sampled at rate 0.1", sampled.len());
    flush(&tracing).await;
    let spans = receiver.wait_for(|spans| spans.len() >= sampled.len(), WAIT).await.expect("the sampled spans");
    let received: std::collections::BTreeSet<String> = spans.iter().map(|s| s.span_id.clone()).collect();
    assert_eq!(spans.len(), received.len(), "a span was exported twice");
    assert_eq!(received, sampled, "the collector got other spans than the sampled ones");
    assert_eq!(tracing.stats().exported, sampled.len() as u64);
    assert_eq!(tracing.stats().dropped(), 0);
    shutdown(&tracing).await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_follow_their_parents_sampling_decision() {
    let receiver = OtlpReceiver::start_grpc().await;
    let tracing = Tracing::with_limits(&receiver.trace_configuration(0.5), QueueLimits::default()).expect("tracing");
    let (mut recorded_roots, mut unrecorded_roots) = (0, 0);
    for _ in 0..400 {
        let root = tracing.span_in("coin-root", SpanKind::Server, &telemetry::OtelContext::new());
        let root_recorded = root.is_recording();
        if root_recorded {
            recorded_roots += 1;
        } else {
            unrecorded_roots += 1;
        }
        let cx = root.into_context(&telemetry::OtelContext::new());
        for _ in 0..3 {
            let child = tracing.span_in("coin-child", SpanKind::Client, &cx);
            assert_eq!(child.is_recording(), root_recorded, "a child decided apart from its parent");
            let grandchild = tracing.span_in("coin-grandchild", SpanKind::Internal, &child.into_context(&cx));
            assert_eq!(grandchild.is_recording(), root_recorded);
        }
    }
    println!("rate 0.5: {recorded_roots} roots recorded, {unrecorded_roots} not");
    assert!(recorded_roots > 0 && unrecorded_roots > 0, "rate 0.5 gave one outcome 400 times");
    flush(&tracing).await;
    let spans = receiver.wait_for(|spans| spans.len() >= recorded_roots * 7, WAIT).await.expect("the recorded traces");
    assert_eq!(spans.len(), recorded_roots * 7, "only recorded roots and all their descendants arrive");
    let roots: std::collections::BTreeSet<&str> =
        spans.iter().filter(|s| s.name == "coin-root").map(|s| s.trace_id.as_str()).collect();
    assert!(spans.iter().all(|s| roots.contains(s.trace_id.as_str())), "a span arrived without its root");
    shutdown(&tracing).await.expect("shutdown");
}

fn remote_parent(sampled: bool) -> onex_runtime::TraceContext {
    onex_runtime::TraceContext {
        trace_id: *uuid::Uuid::new_v4().as_bytes(),
        span_id: uuid::Uuid::new_v4().as_bytes()[..8].try_into().expect("8 bytes"),
        flags: u8::from(sampled),
        trace_state: None,
    }
}

async fn child_of_remote_parent(rate: f64, sampled_parent: bool) -> (bool, OtlpReceiver, Tracing, String) {
    let receiver = OtlpReceiver::start_grpc().await;
    let tracing = Tracing::with_limits(&receiver.trace_configuration(rate), QueueLimits::default()).expect("tracing");
    let parent = remote_parent(sampled_parent);
    let cx = telemetry::carrier::remote_context(&parent);
    let child = tracing.span_in("consume-remote", SpanKind::Consumer, &cx);
    let recorded = child.is_recording();
    let trace_id = child.span_context().expect("enabled").trace_id().to_string();
    assert_eq!(trace_id, hex(&parent.trace_id), "the child left the remote parent's trace");
    child.end();
    (recorded, receiver, tracing, hex(&parent.span_id))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sampled_remote_parent_makes_its_child_recorded_even_at_rate_0() {
    let (recorded, receiver, tracing, parent_id) = child_of_remote_parent(0.0, true).await;
    assert!(recorded, "flags 01 from upstream, rate 0: the child must still be recorded");
    flush(&tracing).await;
    let spans = receiver.wait_for(|spans| !spans.is_empty(), WAIT).await.expect("the child");
    assert_eq!(spans[0].name, "consume-remote");
    assert_eq!(spans[0].parent_span_id.as_deref(), Some(parent_id.as_str()));
    assert_eq!(spans[0].kind, "consumer");
    shutdown(&tracing).await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsampled_remote_parent_makes_its_child_unrecorded_even_at_rate_1() {
    let (recorded, receiver, tracing, _) = child_of_remote_parent(1.0, false).await;
    assert!(!recorded, "flags 00 from upstream, rate 1: the child must not be recorded");
    // A recorded root after it, flushed: once it arrives, the child would have too.
    tracing.span_in("marker-root", SpanKind::Internal, &telemetry::OtelContext::new()).end();
    flush(&tracing).await;
    let spans = receiver.wait_for(|spans| spans.iter().any(|s| s.name == "marker-root"), WAIT).await.expect("marker");
    assert!(spans.iter().all(|s| s.name != "consume-remote"), "an unsampled child was exported: {spans:#?}");
    shutdown(&tracing).await.expect("shutdown");
}

// ---------------------------------------------------------------------------------------------
// A collector that is down or hangs
// ---------------------------------------------------------------------------------------------

/// Small limits, so a dead collector fills the queue quickly.
fn small_limits() -> QueueLimits {
    QueueLimits {
        max_queued: 256,
        max_batch: 64,
        schedule_delay: Duration::from_millis(50),
        export_timeout: Duration::from_millis(500),
    }
}

/// Ends `spans` root spans, each with an attribute, as a traced workload would; returns the
/// rate in spans per second.
fn traced_workload(tracing: &Tracing, spans: usize) -> f64 {
    let started = Instant::now();
    for n in 0..spans {
        let mut span = tracing.span_in("workload", SpanKind::Internal, &telemetry::OtelContext::new());
        if span.is_recording() {
            span.set_attribute(KeyValue::new("n", n as i64));
        }
    }
    spans as f64 / started.elapsed().as_secs_f64()
}

/// Ends a marker span and flushes until the receiver has one (a reconnecting exporter may
/// lose the first batches); each round waits on the flush, not on a timer.
async fn export_until_received(tracing: &Tracing, receiver: &OtlpReceiver, name: &'static str) -> ReceivedSpan {
    let deadline = Instant::now() + WAIT;
    loop {
        tracing.span_in(name, SpanKind::Internal, &telemetry::OtelContext::new()).end();
        let flushing = tracing.clone();
        let _ = tokio::task::spawn_blocking(move || flushing.flush()).await;
        if let Some(span) = receiver.spans().into_iter().find(|s| s.name == name) {
            return span;
        }
        assert!(Instant::now() < deadline, "no {name} span reached the collector within {WAIT:?}");
    }
}

const WORKLOAD: usize = 50_000;

async fn workload_survives_a_dead_collector(mut receiver: OtlpReceiver, comes_back_as: onex_tests::otlp::Mode) {
    let label = format!("{:?}", receiver.mode());
    // The same workload with the collector up, measured in this test, is the yardstick.
    let up = OtlpReceiver::start_grpc().await;
    let tracing_up = Tracing::with_limits(&up.trace_configuration(1.0), small_limits()).expect("tracing");
    let rate_up = tokio::task::spawn_blocking({
        let tracing = tracing_up.clone();
        move || traced_workload(&tracing, WORKLOAD)
    })
    .await
    .expect("workload");
    shutdown(&tracing_up).await.expect("shutdown");

    let config = onex_tests::otlp::trace_configuration(&receiver.endpoint(), receiver.protocol(), 1.0);
    let tracing = Tracing::with_limits(&config, small_limits()).expect("an unreachable collector is no start-up error");
    let rate_down = tokio::task::spawn_blocking({
        let tracing = tracing.clone();
        move || traced_workload(&tracing, WORKLOAD)
    })
    .await
    .expect("workload");
    let stats = tracing.stats();
    println!(
        "collector {label}: {rate_down:.0} spans/s; collector up: {rate_up:.0} spans/s; {stats:?}; up: {:?}",
        tracing_up.stats()
    );
    assert!(
        rate_down * 3.0 >= rate_up,
        "the workload ran {:.1}x slower with the collector {label}",
        rate_up / rate_down
    );
    assert!(stats.dropped() > 0, "{stats:?}");
    assert_eq!(stats.exported, 0, "{stats:?}");
    // What is still queued is tried, fails within the export timeout, and is counted.
    let flushing = tracing.clone();
    let flushed = tokio::task::spawn_blocking(move || flushing.flush()).await.expect("flush task");
    let stats = tracing.stats();
    println!("collector {label}, after a flush: {flushed:?}; {stats:?}");
    assert!(flushed.is_err(), "a flush to a collector that is {label} reported success");
    assert!(stats.failed_exports > 0 && stats.dropped_export_failed > 0, "{stats:?}");
    assert_eq!((stats.exported, stats.queued), (0, 0), "{stats:?}");

    receiver.restart_as(comes_back_as).await;
    let span = export_until_received(&tracing, &receiver, "after-the-collector-came-back").await;
    assert_eq!(span.resource_str("service.name"), Some("onex-test"));
    assert!(tracing.stats().exported > 0);
    println!("collector back: {:?}", tracing.stats());
    shutdown(&tracing).await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_finishes_and_counts_drops_while_the_grpc_collector_is_down_then_exports_when_it_is_back() {
    let mut receiver = OtlpReceiver::start_grpc().await;
    receiver.stop().await;
    workload_survives_a_dead_collector(receiver, onex_tests::otlp::Mode::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_finishes_and_counts_drops_while_the_http_collector_is_down_then_exports_when_it_is_back() {
    let mut receiver = OtlpReceiver::start_http().await;
    receiver.stop().await;
    workload_survives_a_dead_collector(receiver, onex_tests::otlp::Mode::Http).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_finishes_and_counts_drops_while_the_collector_hangs_then_exports_when_it_answers() {
    let receiver = OtlpReceiver::start_blackhole().await;
    workload_survives_a_dead_collector(receiver, onex_tests::otlp::Mode::Grpc).await;
}

// ---------------------------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_exports_the_spans_ended_just_before_it_and_none_after() {
    let receiver = OtlpReceiver::start_http().await;
    // A long delay: without shutdown's flush these spans would still be waiting.
    let limits = QueueLimits { schedule_delay: Duration::from_secs(60), ..QueueLimits::default() };
    let tracing = Tracing::with_limits(&receiver.trace_configuration(1.0), limits).expect("tracing");
    for _ in 0..10 {
        tracing.span_in("before-shutdown", SpanKind::Internal, &telemetry::OtelContext::new()).end();
    }
    let took = shutdown(&tracing).await.expect("shutdown");
    println!("shutdown with a working collector took {took:?}");
    // The receiver records a request before answering it: shutdown returned, so they are here.
    let spans = receiver.spans();
    assert_eq!(spans.iter().filter(|s| s.name == "before-shutdown").count(), 10, "{spans:#?}");
    let requests = receiver.requests();

    let after = tracing.span_in("after-shutdown", SpanKind::Internal, &telemetry::OtelContext::new());
    assert!(!after.is_recording(), "a span started after shutdown is recorded");
    after.end();
    assert!(tracing.flush().is_err(), "flush after shutdown claims success");
    assert!(shutdown(&tracing).await.is_ok(), "a second shutdown is a no-op");
    // Another tracer's marker, flushed: the collector is up and answering.
    let other = Tracing::with_limits(&receiver.trace_configuration(1.0), QueueLimits::default()).expect("tracing");
    export_until_received(&other, &receiver, "marker-after-shutdown").await;
    shutdown(&other).await.expect("shutdown");
    assert_eq!(receiver.requests(), requests + 1, "the shut-down tracer sent another request");
    assert!(receiver.spans().iter().all(|s| s.name != "after-shutdown"));
    assert_eq!(tracing.stats().exported, 10);
    assert_eq!(tracing.stats().queued, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_within_its_bound_when_the_collector_hangs() {
    let receiver = OtlpReceiver::start_blackhole().await;
    // The default limits: one export may take 10 s, twice the shutdown bound.
    let tracing = Tracing::with_limits(&receiver.trace_configuration(1.0), QueueLimits::default()).expect("tracing");
    for _ in 0..2_000 {
        tracing.span_in("into-the-void", SpanKind::Internal, &telemetry::OtelContext::new()).end();
    }
    let started = Instant::now();
    let outcome = shutdown(&tracing).await;
    let took = started.elapsed();
    println!("shutdown against a hung collector took {took:?}: {outcome:?}; {:?}", tracing.stats());
    assert!(took < Duration::from_secs(8), "shutdown took {took:?}");
    let error = outcome.expect_err("a shutdown that exported nothing reports it");
    assert_eq!(error.code(), onex_runtime::ErrorCode::IntegrationServiceUnavailable);
    assert_eq!(tracing.stats().exported, 0);
}

// ---------------------------------------------------------------------------------------------
// Configuration errors
// ---------------------------------------------------------------------------------------------

fn assert_configuration_error(outcome: Result<Tracing, onex_runtime::OnexError>, variable: &str, secret: &str) {
    let error = outcome.expect_err("a bad setting must fail at start-up");
    assert_eq!(error.code(), onex_runtime::ErrorCode::ConfigurationError, "{error}");
    let shown = format!("{error} {error:?}");
    assert!(shown.contains(variable), "the error does not name {variable}: {shown}");
    assert!(!shown.contains(secret), "the error shows a header value: {shown}");
}

#[test]
fn a_malformed_endpoint_is_a_configuration_error_naming_the_variable() {
    use onex_runtime::models::tracing::OtlpProtocol;
    for protocol in [OtlpProtocol::Grpc, OtlpProtocol::HttpProtobuf] {
        for endpoint in [
            "not a url",
            "http://",
            "localhost:4317",
            "http://host:notaport",
            "ftp://host:21",
            "http://host name:4317",
            "http://[::1",
            "http://user:s3cr3t@host:4317",
        ] {
            let config = onex_tests::otlp::trace_configuration(endpoint, protocol, 1.0);
            let outcome = Tracing::with_limits(&config, QueueLimits::default());
            println!("{protocol:?} {endpoint:?}: {:?}", outcome.as_ref().map(|_| ()).map_err(ToString::to_string));
            assert_configuration_error(outcome, "OTEL_EXPORTER_OTLP_ENDPOINT", "s3cr3t");
        }
        // Well-formed endpoints of any shape are accepted, reachable or not.
        for endpoint in ["http://[::1]:4317", "http://collector.example:4318/v1/traces", "http://localhost"] {
            let config = onex_tests::otlp::trace_configuration(endpoint, protocol, 1.0);
            let tracing = Tracing::with_limits(&config, QueueLimits::default());
            assert!(tracing.is_ok(), "{protocol:?} {endpoint}: {:?}", tracing.err());
        }
    }
}

#[test]
fn a_malformed_header_is_a_configuration_error_that_never_shows_values() {
    use onex_runtime::models::tracing::OtlpProtocol;
    const SECRET: &str = "s3cr3t-token";
    for protocol in [OtlpProtocol::Grpc, OtlpProtocol::HttpProtobuf] {
        let base = onex_tests::otlp::trace_configuration("http://127.0.0.1:4317", protocol, 1.0);
        let bad_name = onex_tests::otlp::with_header(base.clone(), "x bad name", SECRET);
        assert_configuration_error(
            Tracing::with_limits(&bad_name, QueueLimits::default()),
            "OTEL_EXPORTER_OTLP_HEADERS",
            SECRET,
        );
        let bad_value = onex_tests::otlp::with_header(base.clone(), "authorization", &format!("Bearer {SECRET}\nx: y"));
        assert_configuration_error(
            Tracing::with_limits(&bad_value, QueueLimits::default()),
            "OTEL_EXPORTER_OTLP_HEADERS",
            SECRET,
        );
    }
}

#[test]
fn configuration_from_the_environment_rejects_bad_endpoints_and_headers_without_showing_secrets() {
    use onex_runtime::environment::{Environment, MapEnv};
    use onex_runtime::models::tracing::TraceConfiguration;
    let from = |pairs: &[(&str, &str)]| {
        TraceConfiguration::from_env(&MapEnv::from_pairs(pairs.iter().copied()), Environment::Development)
    };
    for (variable, value) in [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "not a url"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "bad name=s3cr3t"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=s3cr3t%0A"),
    ] {
        let outcome = from(&[(variable, value)]);
        println!("{variable}={value:?}: {:?}", outcome.as_ref().map(|_| ()).map_err(ToString::to_string));
        let error = match outcome {
            Err(error) => error,
            // The environment layer lets it through: the pipeline must catch it at start-up.
            Ok(config) => Tracing::with_limits(&config, QueueLimits::default()).expect_err("caught at start-up"),
        };
        assert_eq!(error.code(), onex_runtime::ErrorCode::ConfigurationError);
        assert!(error.message().contains(variable), "{error}");
        assert!(!format!("{error} {error:?}").contains("s3cr3t"), "{error:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_from_the_environment_reach_the_collector_and_never_show_in_debug_output() {
    use onex_runtime::environment::{Environment, MapEnv};
    use onex_runtime::models::tracing::TraceConfiguration;
    for receiver in [OtlpReceiver::start_grpc().await, OtlpReceiver::start_http().await] {
        let protocol = if receiver.mode() == onex_tests::otlp::Mode::Http { "http/protobuf" } else { "grpc" };
        let env = MapEnv::from_pairs([
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint().as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
            ("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Bearer%20s3cr3t-token,x-tenant=acme"),
        ]);
        let config = TraceConfiguration::from_env(&env, Environment::Development).expect("config");
        let tracing = Tracing::with_limits(&config, QueueLimits::default()).expect("tracing");
        for shown in [format!("{config:?}"), format!("{tracing:?}"), format!("{tracing:#?}")] {
            assert!(!shown.contains("s3cr3t"), "{shown}");
        }
        export_until_received(&tracing, &receiver, "with-headers").await;
        let headers = receiver.request_headers();
        let last = headers.last().expect("a request");
        assert_eq!(last.get("authorization").map(String::as_str), Some("Bearer s3cr3t-token"), "{protocol}");
        assert_eq!(last.get("x-tenant").map(String::as_str), Some("acme"), "{protocol}");
        shutdown(&tracing).await.expect("shutdown");
    }
}

// ---------------------------------------------------------------------------------------------
// The `tracing` bridge
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tracing_span_opened_in_a_runtime_span_becomes_its_child() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let receiver = OtlpReceiver::start_grpc().await;
    let tracing = Tracing::with_limits(&receiver.trace_configuration(1.0), QueueLimits::default()).expect("tracing");
    let layer = tracing.layer().expect("enabled");
    let subscriber = tracing_subscriber::registry().with(layer);
    let operation = tracing.span_in("node-operation", SpanKind::Server, &telemetry::OtelContext::new());
    let operation_id = operation.span_context().expect("enabled").span_id().to_string();
    let cx = operation.into_context(&telemetry::OtelContext::new());
    tracing::subscriber::with_default(subscriber, || {
        futures::executor::block_on(telemetry::in_span(cx, async {
            let handler = tracing::info_span!("handler-work", order = 42);
            let _entered = handler.enter();
            let inner = tracing::info_span!("handler-inner");
            inner.in_scope(|| tracing::info!("inside"));
        }));
    });
    flush(&tracing).await;
    let spans = receiver
        .wait_for(
            |spans| {
                ["node-operation", "handler-work", "handler-inner"].iter().all(|n| spans.iter().any(|s| s.name == *n))
            },
            WAIT,
        )
        .await
        .expect("the three spans");
    let operation = by_name(&spans, "node-operation");
    let handler = by_name(&spans, "handler-work");
    let inner = by_name(&spans, "handler-inner");
    assert_eq!(handler.parent_span_id.as_deref(), Some(operation_id.as_str()));
    assert_eq!(handler.trace_id, operation.trace_id);
    assert_eq!(inner.parent_span_id.as_deref(), Some(handler.span_id.as_str()));
    assert_eq!(handler.attributes.get("order"), Some(&serde_json::json!(42)));
    shutdown(&tracing).await.expect("shutdown");
}

#[test]
fn an_https_endpoint_is_refused_at_start_up_because_the_exporter_has_no_tls() {
    // Neither the gRPC client nor the OTLP/HTTP exporter is built with a TLS feature, so every
    // export to https would fail. Both are refused at start-up, saying why.
    use onex_runtime::models::tracing::OtlpProtocol;
    for protocol in [OtlpProtocol::Grpc, OtlpProtocol::HttpProtobuf] {
        let config = onex_tests::otlp::trace_configuration("https://collector.example:4318", protocol, 1.0);
        let error = Tracing::with_limits(&config, QueueLimits::default()).expect_err("https without TLS");
        println!("{protocol:?}: {error}");
        assert_eq!(error.code(), onex_runtime::ErrorCode::ConfigurationError);
        assert!(error.message().contains("OTEL_EXPORTER_OTLP_ENDPOINT") && error.message().contains("TLS"), "{error}");
    }
}

// ---------------------------------------------------------------------------------------------
// Errors and carriers, as the collector sees them
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_recorded_on_a_span_arrives_as_error_status_with_an_exception_event() {
    let receiver = OtlpReceiver::start_http().await;
    let tracing = Tracing::with_limits(&receiver.trace_configuration(1.0), QueueLimits::default()).expect("tracing");
    let error = onex_runtime::OnexError::new(ErrorCode::IntegrationServiceUnavailable, "database unreachable");
    let mut span = tracing.span_in("failing-operation", SpanKind::Client, &telemetry::OtelContext::new());
    span.record_result::<()>(&Err(error.clone()));
    span.end();
    // The same through a context, as code that only holds the context records it.
    let cx = tracing
        .span_in("failing-in-context", SpanKind::Internal, &telemetry::OtelContext::new())
        .into_context(&telemetry::OtelContext::new());
    telemetry::span::record_error_on(&cx, &error);
    drop(cx);
    flush(&tracing).await;
    let spans = receiver.wait_for(|spans| spans.len() >= 2, WAIT).await.expect("both spans");
    for name in ["failing-operation", "failing-in-context"] {
        let span = by_name(&spans, name);
        assert_eq!((span.status_code, span.status_message.as_str()), ("error", "database unreachable"), "{name}");
        assert_eq!(span.attribute_str("error.type"), Some(ErrorCode::IntegrationServiceUnavailable.as_str()));
        let [event] = span.events.as_slice() else { panic!("{name}: {:?}", span.events) };
        assert_eq!(event.name, "exception");
        assert_eq!(event.attributes["exception.type"], ErrorCode::IntegrationServiceUnavailable.as_str());
        assert_eq!(event.attributes["exception.message"], "database unreachable");
    }
    shutdown(&tracing).await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_carried_in_an_event_envelope_continues_at_the_consumer() {
    use onex_runtime::event::EventMetadata;
    let receiver = OtlpReceiver::start_grpc().await;
    let producer = Tracing::with_limits(&receiver.trace_configuration(1.0), QueueLimits::default()).expect("tracing");
    // The consumer's own rate is 0: only the producer's sampled flag makes its span recorded.
    let consumer = Tracing::with_limits(&receiver.trace_configuration(0.0), QueueLimits::default()).expect("tracing");
    let send = producer.span_in("publish", SpanKind::Producer, &telemetry::OtelContext::new());
    let send_cx = send.into_context(&telemetry::OtelContext::new());
    let mut metadata = EventMetadata::default();
    telemetry::carrier::stamp_envelope(&mut metadata, &send_cx, &producer);
    drop(send_cx);
    assert_eq!(metadata.trace_service.as_deref(), Some("onex-test"));
    assert_eq!(metadata.trace_environment.as_deref(), Some("test"));
    let parent = telemetry::carrier::extract_parent(None, Some(&metadata.trace_context)).expect("a parent");
    let receive = consumer.span_in("consume", SpanKind::Consumer, &parent);
    assert!(receive.is_recording(), "the producer's sampled flag did not travel");
    receive.end();
    flush(&producer).await;
    flush(&consumer).await;
    let spans = receiver.wait_for(|spans| spans.len() >= 2, WAIT).await.expect("both spans");
    let (publish, consume) = (by_name(&spans, "publish"), by_name(&spans, "consume"));
    assert_eq!(consume.trace_id, publish.trace_id);
    assert_eq!(consume.parent_span_id.as_deref(), Some(publish.span_id.as_str()));
    shutdown(&producer).await.expect("shutdown");
    shutdown(&consumer).await.expect("shutdown");
}
