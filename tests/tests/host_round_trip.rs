//! Requests round-trip through an in-process node host: request topic → host → node → answer
//! topic, with the correlation id and trace context kept. Every node of the generated registry
//! is served once, with the services it needs configured through the host's environment, and
//! answers one real operation whose effect is checked where it lands.

use std::time::Duration;

use onex_host::{Host, HostReport};
use onex_runtime::environment::MapEnv;
use onex_runtime::event::OnexEvent;
use onex_tests::consul::{ConsulFixture, DATACENTER};
use onex_tests::host::{Requester, TestHost, answers, create_topics, host_env, records, request, routes_in, serving};
use onex_tests::postgres::TestDatabase;
use serde_json::{Value, json};
use uuid::Uuid;

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";

/// `answer` is the node's output for `ask`: its type, correlation and request id.
fn assert_completes(node: &str, ask: &OnexEvent, answer: &OnexEvent) {
    assert_eq!(answer.event_type, format!("{node}.completed"), "{answer:?}");
    assert_eq!(answer.correlation_id, ask.correlation_id, "{answer:?}");
    assert_eq!(answer.metadata.extra["request_event_id"], ask.event_id.to_string());
}

/// The host answered `completed` outputs and `failed` failures, and left nothing unanswered.
fn assert_counted(report: &HostReport, completed: u64, failed: u64) {
    let summary = report.counters.summary();
    assert_eq!(report.counters.completed.get(), completed, "{summary}");
    assert_eq!(report.counters.failed.get(), failed, "{summary}");
    assert_eq!(report.counters.dead_lettered.get(), 0, "{summary}");
    assert_eq!(report.unanswered, 0, "{summary}");
}

/// The environment of a host whose nodes reach `db`.
fn postgres_env(db: &TestDatabase) -> std::collections::BTreeMap<String, String> {
    let mut env = host_env(&[]);
    env.extend(db.env().0);
    env
}

/// The environment of a host whose nodes reach `consul`.
fn consul_env(consul: &ConsulFixture) -> std::collections::BTreeMap<String, String> {
    let port = consul.addr().port().to_string();
    host_env(&[
        ("CONSUL_HOST", &consul.addr().ip().to_string()),
        ("CONSUL_PORT", &port),
        ("CONSUL_DATACENTER", DATACENTER),
    ])
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_that_is_not_the_input_model_fails_naming_the_field_and_the_partition_goes_on() {
    let node = "node_distributed_tracing_compute";
    let served = TestHost::start(node, host_env(&[]), 1, &[]).await;

    // The same correlation id keys both requests to one partition, the second behind the first.
    let correlation = Uuid::new_v4();
    let mut misspelled = request(json!({"operation": "trace_database", "database_query": "SELECT 1"}));
    misspelled.correlation_id = correlation;
    let mut next = request(json!({"operation_type": "trace_database", "database_query": "SELECT 1"}));
    next.correlation_id = correlation;
    served.send(&misspelled).await;
    served.send(&next).await;

    let failure = served.failed(&misspelled, 1).await;
    assert_eq!(failure.event_type, format!("{node}.failed"));
    assert_eq!(failure.correlation_id, correlation);
    assert_eq!(failure.payload["error_code"], "VALIDATION_ERROR", "{}", failure.payload);
    assert_eq!(failure.payload["attempts"], 1, "a validation error is not retried: {}", failure.payload);
    let message = failure.payload["message"].as_str().unwrap_or_default();
    assert!(message.contains("`operation_type`"), "the message names the missing field: {message}");
    assert!(message.contains("ModelDistributedTracingInput"), "and the input model: {message}");

    let answer = served.completed(&next, 1).await;
    assert_completes(node, &next, &answer);
    assert_eq!(answer.payload["sanitized_query"], "SELECT ?", "{}", answer.payload);
    assert_counted(&served.stop().await, 1, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consul_node_puts_a_key_that_a_second_request_reads_back() {
    let node = "node_consul_effect";
    let consul = ConsulFixture::start().await;
    let served = TestHost::start(node, consul_env(&consul), 2, &["consul.kv.changed"]).await;

    let put = request(json!({"operation_type": "kv_put", "key": "app/config/db", "value": "postgres://db:5432"}));
    served.send(&put).await;
    let answer = served.completed(&put, 1).await;
    assert_completes(node, &put, &answer);
    assert_eq!(
        (&answer.payload["success"], &answer.payload["status"], &answer.payload["key"]),
        (&json!(true), &json!("success"), &json!("app/config/db")),
        "{}",
        answer.payload
    );
    assert_eq!(
        answer.payload["correlation_id"],
        put.correlation_id.to_string(),
        "the node ran in the request's context"
    );
    assert_eq!(consul.key("app/config/db").as_deref(), Some(&b"postgres://db:5432"[..]), "the key is in Consul");

    let get = request(json!({"operation_type": "kv_get", "key": "app/config/db"}));
    served.send(&get).await;
    let answer = served.completed(&get, 2).await;
    assert_completes(node, &get, &answer);
    assert_eq!(answer.payload["value"], "postgres://db:5432", "{}", answer.payload);
    assert!(answer.payload["modify_index"].as_u64().is_some_and(|i| i > 0), "{}", answer.payload);

    // The write was announced on the host's event bus, without its value.
    let events = answers(&served.event_topic("consul.kv.changed"), 1, Duration::from_secs(30)).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].correlation_id, put.correlation_id);
    assert_eq!(events[0].payload["key"], "app/config/db", "{}", events[0].payload);
    assert!(!events[0].payload.to_string().contains("postgres://"), "{}", events[0].payload);
    assert_counted(&served.stop().await, 2, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consul_projector_projects_the_keys_consul_holds() {
    let node = "node_consul_projector_effect";
    let consul = ConsulFixture::start().await;
    consul.put_key("features/dark-mode", b"on");
    consul.put_key("features/beta", b"off");
    consul.put_key("config/db/host", b"10.0.0.5");
    let served = TestHost::start(node, consul_env(&consul), 2, &["consul.projection.completed"]).await;

    let ask =
        request(json!({"operation_type": "project_kv_state", "key_prefixes": ["features/"], "include_values": true}));
    served.send(&ask).await;
    let answer = served.completed(&ask, 1).await;
    assert_completes(node, &ask, &answer);
    let kv = &answer.payload["kv"];
    assert_eq!((&answer.payload["success"], &kv["total_keys"]), (&json!(true), &json!(2)), "{}", answer.payload);
    assert_eq!(kv["prefixes"], json!(["features/"]), "{kv}");
    let entries: Vec<(&str, &str)> = kv["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| (e["key"].as_str().unwrap_or_default(), e["value"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(entries, [("features/beta", "off"), ("features/dark-mode", "on")], "{kv}");
    assert_counted(&served.stop().await, 1, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tracing_node_stamps_an_event_with_the_trace_the_request_came_in() {
    let node = "node_distributed_tracing_compute";
    let served = TestHost::start(node, host_env(&[]), 2, &[]).await;

    let event = OnexEvent::new("order.placed", "shop", Uuid::new_v4(), json!({"order": 7}));
    let mut ask = request(json!({"operation_type": "inject_context", "event": event}));
    ask.metadata.trace_context.insert("traceparent".into(), TRACEPARENT.into());
    served.send(&ask).await;
    let answer = served.completed(&ask, 1).await;
    assert_completes(node, &ask, &answer);
    assert_eq!(answer.metadata.trace_context["traceparent"], TRACEPARENT);

    let out = &answer.payload;
    assert_eq!((&out["success"], &out["trace_id"]), (&json!(true), &json!(TRACE_ID)), "{out}");
    let stamped: OnexEvent = serde_json::from_value(out["event"].clone()).expect("the stamped event");
    assert_eq!((stamped.event_id, &stamped.payload), (event.event_id, &event.payload));
    let traceparent = &stamped.metadata.trace_context["traceparent"];
    assert!(traceparent.starts_with(&format!("00-{TRACE_ID}-")), "the request's trace goes on: {traceparent}");
    assert_eq!(out["carrier"]["traceparent"], *traceparent, "{out}");
    assert_counted(&served.stop().await, 1, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_monitor_checks_the_services_the_host_built() {
    let node = "node_infrastructure_health_monitor_orchestrator";
    let db = TestDatabase::create("app").await;
    let served = TestHost::start(node, postgres_env(&db), 2, &[]).await;

    let ask = request(json!({"operation_type": "comprehensive_health_check"}));
    served.send(&ask).await;
    let answer = served.completed(&ask, 1).await;
    assert_completes(node, &ask, &answer);
    let out = &answer.payload;
    assert_eq!(out["correlation_id"], ask.correlation_id.to_string(), "{out}");
    let components = out["components"].as_array().expect("components");
    let status = |name: &str| {
        components.iter().find(|c| c["component"] == name).map(|c| c["status"].clone()).unwrap_or(Value::Null)
    };
    for service in ["postgres", "kafka", "event_bus"] {
        assert_eq!(status(service), "healthy", "{service} runs: {out}");
    }
    assert_eq!(out["overall_status"], "healthy", "{out}");
    assert!(out["totals"]["postgres_connections"].as_u64().is_some_and(|n| n >= 1), "{out}");
    assert_counted(&served.stop().await, 1, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_observability_node_records_a_metric_the_host_serves_on_metrics() {
    let node = "node_infrastructure_observability_compute";
    let served = TestHost::start(node, host_env(&[]), 2, &[]).await;

    let ask = request(json!({"operation_type": "record_metric", "metric_name": "orders_processed",
                             "metric_value": 7, "metric_type": "counter", "metric_labels": {"region": "eu"}}));
    served.send(&ask).await;
    let answer = served.completed(&ask, 1).await;
    assert_completes(node, &ask, &answer);
    let point = &answer.payload["metrics"][0];
    assert_eq!((&point["name"], &point["value"]), (&json!("orders_processed_total"), &json!(7.0)), "{point}");
    assert_eq!(point["labels"]["region"], "eu", "{point}");

    let address = served.host.http_address().expect("the host serves HTTP");
    let (status, body) = onex_tests::http::get(address, "/metrics").await.expect("GET /metrics");
    assert_eq!(status, 200, "{body}");
    let sample = body
        .lines()
        .find(|l| l.starts_with("orders_processed_total{") && l.contains("region=\"eu\""))
        .unwrap_or_else(|| panic!("no orders_processed_total sample in /metrics:\n{body}"));
    let value: f64 = sample.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("a sample value");
    assert_eq!(value, 7.0, "{sample}");
    assert_counted(&served.stop().await, 1, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kafka_node_sends_a_message_that_lands_on_its_topic() {
    let node = "node_kafka_producer_pool_effect";
    let served = TestHost::start(node, host_env(&[]), 2, &[]).await;
    let target = onex_tests::kafka::unique_topic("host-kafka-node");
    onex_tests::kafka::create_topic(&target, 1).await;

    let ask = request(json!({"operation_type": "send_message", "topic": target, "key": "order-7",
                             "value": {"order": 7}, "headers": {"origin": "host-test"}}));
    served.send(&ask).await;
    let answer = served.completed(&ask, 1).await;
    assert_completes(node, &ask, &answer);
    let out = &answer.payload;
    assert_eq!((&out["success"], &out["delivered"], &out["failed"]), (&json!(true), &json!(1), &json!(0)), "{out}");

    let landed = records(&target, 1, Duration::from_secs(30)).await;
    assert_eq!(landed.len(), 1, "{landed:?}");
    let record = &landed[0];
    assert_eq!((json!(record.partition), json!(record.offset)), (out["partition"].clone(), out["offset"].clone()));
    assert_eq!(record.key.as_deref(), Some(&b"order-7"[..]));
    assert_eq!(serde_json::from_slice::<Value>(&record.value).expect("a JSON value"), json!({"order": 7}));
    assert!(record.headers.contains(&("origin".to_owned(), "host-test".to_owned())), "{:?}", record.headers);
    assert_counted(&served.stop().await, 1, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_adapter_selects_the_rows_of_a_table_and_announces_it() {
    let node = "node_postgres_adapter_effect";
    let db = TestDatabase::create("app").await;
    let admin = db.client().await;
    admin
        .batch_execute(
            "CREATE TABLE app.orders (id int PRIMARY KEY, item text NOT NULL);
             INSERT INTO app.orders VALUES (1, 'tea'), (2, 'coffee'), (3, 'cocoa');",
        )
        .await
        .expect("the table");
    let events = ["postgres.query.completed", "postgres.query.failed"];
    let served = TestHost::start(node, postgres_env(&db), 2, &events).await;

    let ask = request(json!({"operation_type": "query", "query_request": {
        "query": "SELECT id, item FROM app.orders WHERE id >= $1 ORDER BY id", "parameters": [2]}}));
    served.send(&ask).await;
    let answer = served.completed(&ask, 1).await;
    assert_completes(node, &ask, &answer);
    let out = &answer.payload;
    assert_eq!(out["success"], true, "{out}");
    assert_eq!(out["correlation_id"], ask.correlation_id.to_string(), "{out}");
    assert_eq!(out["query_result"]["rows"], json!([{"id": 2, "item": "coffee"}, {"id": 3, "item": "cocoa"}]), "{out}");

    let announced = answers(&served.event_topic("postgres.query.completed"), 1, Duration::from_secs(30)).await;
    assert_eq!(announced.len(), 1, "{announced:?}");
    assert_eq!(announced[0].correlation_id, ask.correlation_id);
    assert_eq!(announced[0].payload["database_type"], "postgresql", "{}", announced[0].payload);
    assert_counted(&served.stop().await, 1, 0);
}

/// The event bus's default per-caller limit (a burst of 100, then 1,000 a minute) would refuse
/// the adapter's announcement past the hundredth request in a row; a host sets no limit unless
/// configured to, so every request is answered with `success: true` and announced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_adapter_serves_more_requests_than_the_bus_default_burst() {
    const REQUESTS: usize = 150;
    let db = TestDatabase::create("app").await;
    db.client()
        .await
        .batch_execute("CREATE TABLE app.t (id int PRIMARY KEY); INSERT INTO app.t VALUES (1);")
        .await
        .expect("the table");
    let events = ["postgres.query.completed", "postgres.query.failed"];
    let served = TestHost::start("node_postgres_adapter_effect", postgres_env(&db), 2, &events).await;
    for _ in 0..REQUESTS {
        let ask = request(json!({"operation_type": "query", "query_request": {"query": "SELECT id FROM app.t"}}));
        served.send(&ask).await;
    }
    let answered = answers(&served.routes.completed, REQUESTS, Duration::from_secs(120)).await;
    let refused: Vec<&Value> = answered.iter().map(|a| &a.payload).filter(|p| p["success"] != true).collect();
    assert!(refused.is_empty(), "{} of {REQUESTS} answers failed, e.g. {}", refused.len(), refused[0]);
    assert_eq!(answered.len(), REQUESTS);
    let announced = answers(&served.event_topic("postgres.query.completed"), REQUESTS, Duration::from_secs(60)).await;
    assert_eq!(announced.len(), REQUESTS);
    assert_counted(&served.stop().await, REQUESTS as u64, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_connection_manager_commits_a_transaction() {
    let node = "node_postgres_connection_manager_effect";
    let db = TestDatabase::create("app").await;
    let admin = db.client().await;
    admin.batch_execute("CREATE TABLE app.ledger (k text PRIMARY KEY, v int NOT NULL)").await.expect("the table");
    let events = ["postgres.query.completed", "postgres.query.failed"];
    let served = TestHost::start(node, postgres_env(&db), 2, &events).await;

    let ask = request(json!({"operation_type": "transaction", "statements": [
        {"query": "INSERT INTO app.ledger VALUES ($1, $2)", "parameters": ["a", 1]},
        {"query": "INSERT INTO app.ledger VALUES ($1, $2) RETURNING k, v", "parameters": ["b", 2]}
    ]}));
    served.send(&ask).await;
    let answer = served.completed(&ask, 1).await;
    assert_completes(node, &ask, &answer);
    let out = &answer.payload;
    assert_eq!(out["success"], true, "{out}");
    assert_eq!(out["rows"], json!([{"k": "b", "v": 2}]), "{out}");

    let rows = admin.query("SELECT k, v FROM app.ledger ORDER BY k", &[]).await.expect("read the ledger");
    let committed: Vec<(String, i32)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(committed, [("a".to_owned(), 1), ("b".to_owned(), 2)], "both rows are committed");
    assert_counted(&served.stop().await, 1, 0);
}
