//! Spans of the PostgreSQL connection manager and trace contexts kept by the outbox, on the
//! real server (each test its own database), read back from an in-memory exporter.

use std::sync::Arc;

use onex_runtime::ErrorCode;
use onex_runtime::event::OnexEvent;
use onex_runtime::outbox::{self, Outbox, OutboxConfig};
use onex_runtime::postgres::{PostgresConnectionManager, TransactionOptions, UNSANITIZABLE};
use onex_runtime::telemetry::capture::{SpanCapture, attribute};
use onex_runtime::telemetry::{CorrelationId, OtelContext, SpanKind, Tracing, carrier, in_span};
use onex_tests::postgres::TestDatabase;
use opentelemetry::trace::{SpanId, Status, TraceContextExt as _};
use opentelemetry_sdk::trace::SpanData;
use serde_json::json;
use uuid::Uuid;

async fn traced_manager(db: &TestDatabase, tracing: &Tracing) -> PostgresConnectionManager {
    PostgresConnectionManager::connect(db.config()).await.expect("connect").with_tracing(tracing.clone())
}

/// A `request` span, and the context that has it active and names `correlation`.
fn request(tracing: &Tracing, correlation: Uuid) -> (OtelContext, SpanId) {
    let cx = tracing
        .span_in("request", SpanKind::Server, &OtelContext::new())
        .into_context(&OtelContext::new())
        .with_value(CorrelationId(correlation));
    let id = cx.span().span_context().span_id();
    (cx, id)
}

fn only(capture: &SpanCapture, name: &str) -> SpanData {
    let spans = capture.named(name);
    assert_eq!(spans.len(), 1, "one {name} span expected: {:?}", capture.spans());
    spans.into_iter().next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_is_one_client_span_under_the_caller_with_its_statement_sanitized() {
    let db = TestDatabase::create("app").await;
    let capture = SpanCapture::new();
    let tracing = capture.tracing("pg-test").unwrap();
    let pg = traced_manager(&db, &tracing).await;
    pg.execute_query("CREATE TABLE t (a text)", &[]).await.unwrap();
    pg.execute_query("INSERT INTO t VALUES ($1), ('other')", &[json!("secret")]).await.unwrap();
    tracing.flush().unwrap();
    capture.clear();

    let correlation = Uuid::new_v4();
    let (cx, request_id) = request(&tracing, correlation);
    let count = in_span(cx.clone(), pg.fetch_value("SELECT COUNT(*) FROM t WHERE a = 'secret'", &[])).await.unwrap();
    assert_eq!(count, Some(json!(1)));
    drop(cx);
    tracing.flush().unwrap();

    let span = only(&capture, "postgres.fetch_value");
    assert_eq!(span.span_kind, SpanKind::Client);
    assert_eq!(span.parent_span_id, request_id, "a child of the caller's span");
    let text = attribute(&span, "db.query.text").expect("db.query.text");
    assert!(text.contains("COUNT(*)") && text.contains('?') && !text.contains("secret"), "{text}");
    assert_eq!(text, "SELECT COUNT(*) FROM t WHERE a = ?");
    for (key, value) in [
        ("db.system.name", "postgresql".to_owned()),
        ("db.system", "postgresql".to_owned()),
        ("db.namespace", db.name.clone()),
        ("db.operation.name", "SELECT".to_owned()),
        ("server.address", onex_tests::postgres::host()),
        ("server.port", onex_tests::postgres::port().to_string()),
        ("correlation_id", correlation.to_string()),
    ] {
        assert_eq!(attribute(&span, key), Some(value), "{key}");
    }
    assert_eq!(span.status, Status::Unset);
    assert!(!format!("{:?}", capture.spans()).contains("secret"), "the literal appears nowhere in what was exported");
    pg.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_statement_records_its_error_and_sqlstate() {
    let db = TestDatabase::create("app").await;
    let capture = SpanCapture::new();
    let tracing = capture.tracing("pg-test").unwrap();
    let pg = traced_manager(&db, &tracing).await;
    let err = pg.execute_query("SELECT * FROM missing WHERE k = 'hunter2'", &[]).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::DatabaseQueryError);
    tracing.flush().unwrap();
    let span = only(&capture, "postgres.query");
    assert!(matches!(&span.status, Status::Error { .. }), "{:?}", span.status);
    assert_eq!(attribute(&span, "error.type").as_deref(), Some("DATABASE_QUERY_ERROR"));
    assert_eq!(attribute(&span, "db.response.status_code").as_deref(), Some("42P01"));
    assert!(!format!("{:?}", span).contains("hunter2"), "the literal never reaches the span");
    pg.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_the_sanitizer_cannot_read_still_runs_and_shows_no_text() {
    let db = TestDatabase::create("app").await;
    let capture = SpanCapture::new();
    let tracing = capture.tracing("pg-test").unwrap();
    let pg = traced_manager(&db, &tracing).await;
    // Valid PostgreSQL (a backslash is an ordinary character in a standard string), which the
    // sanitizer reads as an escaped quote and so as an unterminated literal.
    let path = pg.fetch_value(r"SELECT 'C:\' AS path", &[]).await.expect("the statement runs");
    assert_eq!(path, Some(json!("C:\\")));
    tracing.flush().unwrap();
    let span = only(&capture, "postgres.fetch_value");
    assert_eq!(attribute(&span, "db.query.text").as_deref(), Some(UNSANITIZABLE));
    assert_eq!(span.status, Status::Unset, "the call succeeded");
    pg.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_is_a_span_per_call_and_functions_name_their_call() {
    let db = TestDatabase::create("app").await;
    let capture = SpanCapture::new();
    let tracing = capture.tracing("pg-test").unwrap();
    let pg = traced_manager(&db, &tracing).await;
    pg.execute_query("CREATE FUNCTION app.twice(x int) RETURNS int LANGUAGE sql AS 'SELECT x * 2'", &[]).await.unwrap();
    let mut tx = pg.begin(TransactionOptions::default()).await.unwrap();
    tx.execute_query("SELECT 1", &[]).await.unwrap();
    tx.commit().await.unwrap();
    let out = pg.call_function("twice", &[json!(21)], None).await.unwrap();
    assert_eq!(out.rows[0]["twice"], json!(42));
    tracing.flush().unwrap();
    let names: Vec<String> = capture.spans().iter().map(|s| s.name.to_string()).collect();
    assert_eq!(
        names,
        ["postgres.query", "postgres.begin", "postgres.query", "postgres.commit", "postgres.call_function"],
        "one span per call, none nested"
    );
    let begin = only(&capture, "postgres.begin");
    assert_eq!(attribute(&begin, "db.operation.name").as_deref(), Some("BEGIN"));
    let call = only(&capture, "postgres.call_function");
    assert_eq!(attribute(&call, "db.query.text").as_deref(), Some(r#"SELECT * FROM "app"."twice"($1)"#));
    pg.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_without_tracing_records_nothing_even_inside_a_traced_request() {
    let db = TestDatabase::create("app").await;
    let capture = SpanCapture::new();
    let tracing = capture.tracing("pg-test").unwrap();
    let pg = PostgresConnectionManager::connect(db.config()).await.unwrap();
    assert!(!pg.tracing().is_enabled(), "tracing is opt-in");
    let (cx, _) = request(&tracing, Uuid::new_v4());
    assert_eq!(in_span(cx.clone(), pg.fetch_value("SELECT 1", &[])).await.unwrap(), Some(json!(1)));
    drop(cx);
    tracing.flush().unwrap();
    let names: Vec<String> = capture.spans().iter().map(|s| s.name.to_string()).collect();
    assert_eq!(names, ["request"]);
    pg.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_queued_in_the_outbox_keeps_the_trace_context_of_its_enqueue() {
    let db = TestDatabase::create("obx").await;
    let capture = SpanCapture::new();
    let tracing = capture.tracing("outbox-test").unwrap();
    let pg = Arc::new(traced_manager(&db, &tracing).await);
    outbox::migrate(&pg).await.unwrap();
    let outbox = Outbox::new(Arc::clone(&pg), OutboxConfig::default()).unwrap();

    let (cx, request_id) = request(&tracing, Uuid::new_v4());
    let fresh = OnexEvent::new("test.traced", "outbox-test", Uuid::new_v4(), json!({}));
    let mut carried = OnexEvent::new("test.traced", "outbox-test", Uuid::new_v4(), json!({}));
    let theirs = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    carried.metadata.trace_context.insert("traceparent".into(), theirs.into());
    in_span(cx.clone(), async {
        outbox.enqueue(&fresh, "open").await.unwrap();
        outbox.enqueue(&carried, "open").await.unwrap();
    })
    .await;

    let stored = |id: Uuid| {
        let pg = Arc::clone(&pg);
        async move {
            let payload = pg
                .fetch_value("SELECT payload FROM onex_outbox WHERE event_id = $1", &[json!(id.to_string())])
                .await
                .unwrap()
                .expect("stored");
            serde_json::from_value::<OnexEvent>(payload).unwrap()
        }
    };
    let fresh_stored = stored(fresh.event_id).await;
    let parent = carrier::extract_parent(None, Some(&fresh_stored.metadata.trace_context)).expect("a context");
    assert_eq!(parent.span().span_context().span_id(), request_id, "the enqueuer's span");
    assert_eq!(parent.span().span_context().trace_id(), cx.span().span_context().trace_id());
    assert_eq!(fresh_stored.metadata.trace_service.as_deref(), Some("outbox-test"));
    assert_eq!(fresh_stored.metadata.trace_environment.as_deref(), Some("test"));
    assert!(fresh_stored.metadata.trace_timestamp.is_some());
    let carried_stored = stored(carried.event_id).await;
    assert_eq!(carried_stored.metadata.trace_context.get("traceparent").map(String::as_str), Some(theirs));
    assert_eq!(carried_stored.metadata.trace_service, None, "a context the event had is kept as it was");
    pg.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_event_continues_the_trace_it_was_enqueued_in() {
    use onex_runtime::event_bus::{KafkaEventBus, TopicNamer};
    use onex_runtime::kafka::{KafkaPoolSettings, KafkaProducerPool};
    use onex_runtime::models::kafka::KafkaProducerConfig;

    let db = TestDatabase::create("obx").await;
    let capture = SpanCapture::new();
    let tracing = capture.tracing("outbox-test").unwrap();
    let pg = Arc::new(traced_manager(&db, &tracing).await);
    outbox::migrate(&pg).await.unwrap();
    let outbox = Outbox::new(Arc::clone(&pg), OutboxConfig::default()).unwrap();
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    let namer = TopicNamer::default();
    mock.create_topic(&namer.topic_for("test.traced").unwrap(), 1, 1).unwrap();
    let pool = KafkaProducerPool::new(KafkaPoolSettings::default(), KafkaProducerConfig::new(mock.bootstrap_servers()))
        .unwrap()
        .with_tracing(tracing.clone());
    let bus = KafkaEventBus::new(Arc::new(pool), namer);

    // Queued while the broker was out of reach, inside a request.
    let (cx, request_id) = request(&tracing, Uuid::new_v4());
    let queued = OnexEvent::new("test.traced", "outbox-test", Uuid::new_v4(), json!({}));
    in_span(cx.clone(), outbox.enqueue(&queued, "open")).await.unwrap();
    let trace_id = cx.span().span_context().trace_id();
    drop(cx);

    // Relayed later, by a task that runs in no request.
    let report = outbox.relay_once(&bus, 10).await.unwrap();
    assert_eq!(report.published, 1, "{report:?}");
    tracing.flush().unwrap();
    let publish = only(&capture, "kafka.publish");
    assert_eq!(publish.parent_span_id, request_id, "the relayed send hangs off the request that queued it");
    assert_eq!(publish.span_context.trace_id(), trace_id);
    pg.close();
}
