//! `node_consul_effect` built through the container and the generated registry, on the Consul
//! API fixture (tests/support/consul.rs) on loopback.

use std::sync::Arc;
use std::time::{Duration, Instant};

use onex_runtime::consul::{AgentService, CatalogNode, CheckStatus, ConsulClient, HealthCheck, ServiceEntry};
use onex_runtime::event_bus::EventPublisher;
use onex_runtime::{Container, Context, DynNode, ErrorCode};
use onex_tests::consul::{AGENT_NODE, ConsulFixture, Failure, REQUEST_TIMEOUT};
use onex_tests::events::RecordingBus;
use serde_json::{Value, json};
use uuid::Uuid;

const NODE: &str = "node_consul_effect";

fn node_for(client: ConsulClient) -> (Box<dyn DynNode>, Arc<RecordingBus>) {
    let bus = Arc::new(RecordingBus::default());
    let mut container = Container::new();
    container.register(Arc::new(client));
    container.register::<dyn EventPublisher>(bus.clone());
    let node = onex_generated::registry().build(NODE, None, &container).expect("the registry builds the node");
    (node, bus)
}

async fn call(node: &dyn DynNode, input: Value) -> Value {
    node.process_json(input, Context::new()).await.expect("the node answers")
}

fn assert_failed(out: &Value, status: &str, code: ErrorCode) {
    assert_eq!(out["success"], false, "{out}");
    assert_eq!(out["status"], status, "{out}");
    assert_eq!(out["error"]["code"], code.as_str(), "{out}");
    assert!(!out["error"]["message"].as_str().unwrap_or("").is_empty(), "{out}");
}

fn service(id: &str, name: &str, port: u16) -> Value {
    json!({"service_id": id, "name": name, "address": "10.0.0.7", "port": port,
           "tags": ["v1"], "meta": {"team": "platform"}})
}

#[tokio::test]
async fn every_operation_through_the_generated_registry() {
    let fixture = ConsulFixture::start().await;
    let (node, bus) = node_for(fixture.client());
    let node = node.as_ref();

    let out =
        call(node, json!({"operation_type": "kv_put", "key": "app/config/db", "value": "postgres://db:5432"})).await;
    assert_eq!(
        (out["success"].clone(), out["status"].clone(), out["key"].clone()),
        (json!(true), json!("success"), json!("app/config/db")),
        "{out}"
    );
    call(node, json!({"operation_type": "kv_put", "key": "app/config/cache", "value": "redis"})).await;
    assert_eq!(fixture.key("app/config/db").as_deref(), Some(&b"postgres://db:5432"[..]));

    let out = call(node, json!({"operation_type": "kv_get", "key": "app/config/db"})).await;
    assert_eq!(out["value"], "postgres://db:5432", "{out}");
    assert!(out["modify_index"].as_u64().unwrap() > 0, "{out}");

    // An empty value is a value: the key exists and reads back empty.
    call(node, json!({"operation_type": "kv_put", "key": "app/config/flag", "value": ""})).await;
    let out = call(node, json!({"operation_type": "kv_get", "key": "app/config/flag"})).await;
    assert_eq!((out["success"].clone(), out["value"].clone()), (json!(true), json!("")), "{out}");

    let out = call(node, json!({"operation_type": "kv_delete", "key": "app/config/", "recurse": true})).await;
    assert_eq!(out["success"], true, "{out}");
    assert_eq!(fixture.key("app/config/cache"), None);
    let out = call(node, json!({"operation_type": "kv_get", "key": "app/config/db"})).await;
    assert_failed(&out, "not_found", ErrorCode::NotFound);
    assert_eq!(out["key"], "app/config/db");

    let out = call(node, json!({"operation_type": "service_register", "service": service("web-1", "web", 8080)})).await;
    assert_eq!((out["success"].clone(), out["service_id"].clone()), (json!(true), json!("web-1")), "{out}");
    let out = call(node, json!({"operation_type": "service_register", "service": service("", "db", 5432)})).await;
    assert_eq!(out["service_id"], "db", "Consul uses the name when no id is given: {out}");

    let out = call(node, json!({"operation_type": "service_list"})).await;
    assert_eq!(out["service_count"], 2, "{out}");
    assert_eq!(out["services"][1], service("web-1", "web", 8080), "{out}");

    fixture.set_check_status("web-1", CheckStatus::Warning);
    let out = call(node, json!({"operation_type": "health_check", "service_name": "web"})).await;
    assert_eq!(out["health"], json!([{"service": "web", "status": "degraded", "instances": 1}]), "{out}");
    assert_eq!(out["overall_health"], "degraded");

    let out = call(node, json!({"operation_type": "service_deregister", "service_id": "web-1"})).await;
    assert_eq!((out["success"].clone(), out["service_id"].clone()), (json!(true), json!("web-1")), "{out}");
    let out = call(node, json!({"operation_type": "service_deregister", "service_id": "web-1"})).await;
    assert_failed(&out, "not_found", ErrorCode::NotFound);
    let out = call(node, json!({"operation_type": "health_check", "service_name": "web"})).await;
    assert_failed(&out, "not_found", ErrorCode::NotFound);
    assert!(out.get("health").is_none(), "{out}");

    let events: Vec<(String, Value)> = bus.events().into_iter().map(|e| (e.event_type, e.payload)).collect();
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "consul.kv.changed",
            "consul.kv.changed",
            "consul.kv.changed",
            "consul.kv.changed",
            "consul.service.registered",
            "consul.service.registered",
            "consul.service.deregistered",
        ],
        "one event per successful write, none for reads or failures"
    );
    assert_eq!(events[3].1, json!({"operation": "delete", "key": "app/config/", "recurse": true, "datacenter": "dc1"}));
    assert_eq!(events[4].1["service_id"], "web-1");
    for (_, payload) in &events {
        assert!(!payload.to_string().contains("postgres://"), "a KV value never travels in an event: {payload}");
    }
}

#[tokio::test]
async fn health_check_reports_the_worst_status_per_service_node_checks_included() {
    let fixture = ConsulFixture::start().await;
    let (node, _) = node_for(fixture.client());
    let node = node.as_ref();

    let out = call(node, json!({"operation_type": "health_check"})).await;
    assert_eq!((out["health"].clone(), out["overall_health"].clone()), (json!([]), json!("healthy")), "{out}");

    for (id, name) in [("web-1", "web"), ("web-2", "web"), ("db-1", "db")] {
        call(node, json!({"operation_type": "service_register", "service": service(id, name, 80)})).await;
    }
    fixture.set_check_status("web-1", CheckStatus::Passing);
    fixture.set_check_status("web-2", CheckStatus::Warning);
    fixture.set_check_status("db-1", CheckStatus::Passing);
    // On another node whose serf check fails, with a passing check of its own.
    let check = |id: &str, service: &str, status| HealthCheck {
        node: "node-b".into(),
        check_id: id.into(),
        name: id.into(),
        status,
        output: String::new(),
        service_id: if service.is_empty() { String::new() } else { format!("{service}-1") },
        service_name: service.into(),
    };
    fixture.add_instance(ServiceEntry {
        node: CatalogNode::new("node-b", "10.0.0.9", "dc1"),
        service: AgentService::new("cache-1", "cache", 6379),
        checks: vec![
            check("serfHealth", "", CheckStatus::Critical),
            check("service:cache-1", "cache", CheckStatus::Passing),
        ],
    });

    let out = call(node, json!({"operation_type": "health_check"})).await;
    assert_eq!(
        out["health"],
        json!([
            {"service": "cache", "status": "unhealthy", "instances": 1},
            {"service": "db", "status": "healthy", "instances": 1},
            {"service": "web", "status": "degraded", "instances": 2},
        ]),
        "{out}"
    );
    assert_eq!(out["overall_health"], "unhealthy");

    // service_list shows an instance without an address at its node's address.
    let out = call(node, json!({"operation_type": "service_list"})).await;
    assert_eq!(out["services"][0]["address"], "10.0.0.9", "{out}");

    // The agent's own node failing makes its services unhealthy too.
    fixture.set_node_check_status(AGENT_NODE, CheckStatus::Critical);
    let out = call(node, json!({"operation_type": "health_check", "service_name": "db"})).await;
    assert_eq!(out["health"], json!([{"service": "db", "status": "unhealthy", "instances": 1}]), "{out}");
}

#[tokio::test]
async fn requests_missing_what_their_operation_needs_are_validation_errors_and_reach_no_consul() {
    let fixture = ConsulFixture::start().await;
    let (node, bus) = node_for(fixture.client());
    let node = node.as_ref();
    for input in [
        json!({"operation_type": "kv_get"}),
        json!({"operation_type": "kv_get", "key": "  "}),
        json!({"operation_type": "kv_put", "key": "k"}),
        json!({"operation_type": "kv_put", "value": "v"}),
        json!({"operation_type": "kv_delete"}),
        json!({"operation_type": "kv_delete", "key": "/leading"}),
        json!({"operation_type": "service_register"}),
        json!({"operation_type": "service_register", "service": service("x", "", 80)}),
        json!({"operation_type": "service_deregister"}),
        json!({"operation_type": "health_check", "service_name": ""}),
    ] {
        let out = call(node, input.clone()).await;
        assert_failed(&out, "failed", ErrorCode::ValidationError);
        assert!(out["error"]["message"].as_str().unwrap().contains("required") || input["key"] == "/leading", "{out}");
    }
    assert!(fixture.request_log().is_empty(), "{:?}", fixture.request_log());
    assert!(bus.events().is_empty());
}

#[tokio::test]
async fn an_unreachable_consul_fails_the_operation_and_never_answers_from_a_mock() {
    let fixture = ConsulFixture::start().await;
    let (node, bus) = node_for(fixture.client());
    let node = node.as_ref();
    call(node, json!({"operation_type": "kv_put", "key": "k", "value": "v"})).await;
    let ceiling = REQUEST_TIMEOUT + Duration::from_secs(3);

    for failure in [Failure::Refuse, Failure::Delay(Duration::from_secs(30))] {
        fixture.inject(failure);
        for input in [
            json!({"operation_type": "kv_get", "key": "k"}),
            json!({"operation_type": "kv_put", "key": "k", "value": "w"}),
            json!({"operation_type": "service_list"}),
            json!({"operation_type": "health_check"}),
            json!({"operation_type": "service_deregister", "service_id": "web-1"}),
        ] {
            let started = Instant::now();
            let out = call(node, input.clone()).await;
            let elapsed = started.elapsed();
            println!("{failure:?}, {}: {} after {elapsed:?}", input["operation_type"], out["error"]["code"]);
            assert_failed(&out, "failed", ErrorCode::IntegrationServiceUnavailable);
            assert!(
                out.get("value").is_none() && out.get("health").is_none() && out.get("services").is_none(),
                "{out}"
            );
            assert!(elapsed < ceiling, "{elapsed:?}");
        }
        fixture.clear_failure();
    }
    fixture.inject(Failure::Status500);
    let out = call(node, json!({"operation_type": "health_check", "service_name": "web"})).await;
    assert_failed(&out, "failed", ErrorCode::IntegrationServiceError);
    fixture.inject(Failure::MalformedJson);
    let out = call(node, json!({"operation_type": "kv_get", "key": "k"})).await;
    assert_failed(&out, "failed", ErrorCode::IntegrationServiceError);
    fixture.clear_failure();

    assert_eq!(bus.events().len(), 1, "only the write before the outage published an event");
    let out = call(node, json!({"operation_type": "kv_get", "key": "k"})).await;
    assert_eq!(out["value"], "v", "the refused put never reached Consul, the delayed one is still held: {out}");
}

#[tokio::test]
async fn the_correlation_id_is_echoed_and_generated_when_absent() {
    let fixture = ConsulFixture::start().await;
    let (node, bus) = node_for(fixture.client());
    let node = node.as_ref();
    let given = Uuid::new_v4();
    let out = call(node, json!({"operation_type": "kv_put", "key": "k", "value": "v", "correlation_id": given})).await;
    assert_eq!(out["correlation_id"], json!(given));
    let out = call(node, json!({"operation_type": "kv_get", "key": "missing", "correlation_id": given})).await;
    assert_eq!(out["correlation_id"], json!(given), "echoed on failures too");

    let ctx = Context::new();
    let expected = ctx.correlation_id();
    let out = node.process_json(json!({"operation_type": "kv_delete", "key": "k"}), ctx).await.unwrap();
    let generated: Uuid = serde_json::from_value(out["correlation_id"].clone()).unwrap();
    assert!(!generated.is_nil());
    assert_eq!(generated, expected, "the context's generated id");
    assert!(out["timestamp"].as_str().is_some(), "{out}");
    let ids: Vec<Uuid> = bus.events().iter().map(|e| e.correlation_id).collect();
    assert_eq!(ids, [given, generated]);
}

#[tokio::test]
async fn the_token_never_shows_in_the_nodes_answers() {
    let fixture = ConsulFixture::start().await;
    fixture.require_token(Some("the-right-token"));
    let secret = "n0de-s3cret-t0ken";
    let (node, _) = node_for(ConsulClient::new(fixture.config().with_token(secret)).unwrap());
    let node = node.as_ref();
    let out = call(node, json!({"operation_type": "kv_get", "key": "k"})).await;
    assert_failed(&out, "failed", ErrorCode::IntegrationServiceError);
    assert!(out["error"]["message"].as_str().unwrap().contains("lacks permission"), "{out}");
    fixture.answer_verbatim("GET", "/v1/kv/echo", 502, &format!("upstream saw X-Consul-Token: {secret}"));
    fixture.require_token(None);
    let out = call(node, json!({"operation_type": "kv_get", "key": "echo"})).await;
    assert_failed(&out, "failed", ErrorCode::IntegrationServiceError);
    assert!(!out.to_string().contains(secret), "{out}");
}

#[test]
fn the_node_cannot_be_built_without_a_consul_client() {
    let err = onex_generated::registry().build(NODE, None, &Container::new()).err().expect("missing dependency");
    assert_eq!(err.code(), ErrorCode::RegistryResolutionFailed, "{err}");
    assert!(err.message().contains("consul_client"), "{err}");
}
