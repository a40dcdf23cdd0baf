//! `node_consul_projector_effect` against the in-process Consul API server: every projection
//! is built from the state seeded there, the cache answers without asking Consul, a change in
//! Consul is seen before the TTL runs out, and a failing Consul is an error, never made-up data.

use std::sync::Arc;
use std::time::{Duration, Instant};

use onex_generated::nodes::node_consul_projector_effect::v1_0_0::handler::NodeConsulProjectorEffect;
use onex_generated::nodes::node_consul_projector_effect::v1_0_0::node::PROJECTION_EVENT;
use onex_runtime::consul::{
    AgentService, CatalogNode, CheckStatus, ConsulClient, HealthCheck, ServiceEntry, ServiceProxy, Upstream,
};
use onex_runtime::event_bus::EventPublisher;
use onex_runtime::{Container, Context, Node};
use onex_tests::consul::{ConsulFixture, Failure};
use onex_tests::events::RecordingBus;
use serde_json::{Value, json};
use uuid::Uuid;

const NODE: &str = "node_consul_projector_effect";

fn check(node: &str, id: &str, service_id: &str, status: CheckStatus) -> HealthCheck {
    HealthCheck {
        node: node.into(),
        check_id: id.into(),
        name: id.into(),
        status,
        output: String::new(),
        service_id: service_id.into(),
        service_name: String::new(),
    }
}

fn instance(service: &str, id: &str, node: &str, node_status: CheckStatus, status: CheckStatus) -> ServiceEntry {
    ServiceEntry {
        node: CatalogNode::new(node, format!("10.0.0.{}", node.len()), "dc1"),
        service: AgentService::new(id, service, 8080),
        checks: vec![check(node, "serfHealth", "", node_status), check(node, &format!("{id}-check"), id, status)],
    }
}

/// Three services and a proxy: `web` has two instances, one warning; `api` declares in its meta
/// that it needs `db`; `web`'s Connect proxy has `api` upstream; `db` runs on `node-2`, whose
/// node check is critical. Keys under `config/` and `features/`, one of them binary.
///
/// Distinct checks: node-1 and node-2 serfHealth, web-1, web-2, api-1, the proxy, db-1.
fn seed(fixture: &ConsulFixture) {
    use CheckStatus::*;
    fixture.add_instance(instance("web", "web-1", "node-1", Passing, Passing));
    fixture.add_instance(instance("web", "web-2", "node-1", Passing, Warning));
    let mut api = instance("api", "api-1", "node-1", Passing, Passing);
    api.service.meta.insert("dependencies".into(), "db".into());
    fixture.add_instance(api);
    let mut proxy = instance("web-sidecar-proxy", "web-1-sidecar-proxy", "node-1", Passing, Passing);
    proxy.service.kind = "connect-proxy".into();
    proxy.service.proxy = Some(ServiceProxy {
        destination_service_name: "web".into(),
        upstreams: vec![Upstream {
            destination_name: "api".into(),
            destination_type: "service".into(),
            local_bind_port: 9191,
        }],
    });
    fixture.add_instance(proxy);
    fixture.add_instance(instance("db", "db-1", "node-2", Critical, Passing));
    fixture.put_key("config/db/host", b"10.0.0.5");
    fixture.put_key("config/web/port", b"8080");
    fixture.put_key("features/dark-mode", b"on");
    fixture.put_key("features/blob", &[0xff, 0x00]);
}

/// Sources a projection of every service watches: the catalog and each of the 4 services.
const ALL_SERVICE_SOURCES: usize = 5;

struct Setup {
    fixture: ConsulFixture,
    node: NodeConsulProjectorEffect,
    bus: Arc<RecordingBus>,
}

async fn setup() -> Setup {
    let fixture = ConsulFixture::start().await;
    seed(&fixture);
    let bus = Arc::new(RecordingBus::default());
    let mut container = Container::new();
    container.register::<ConsulClient>(Arc::new(fixture.client()));
    container.register::<dyn EventPublisher>(bus.clone());
    let node = NodeConsulProjectorEffect::new(&container).expect("the node builds");
    Setup { fixture, node, bus }
}

/// Plain reads of paths under `prefix` so far: the requests without `index=`, which the
/// watchers' blocking queries carry.
fn reads(fixture: &ConsulFixture, prefix: &str) -> usize {
    fixture.request_log().iter().filter(|r| r.path.starts_with(prefix) && !r.query.contains("index=")).count()
}

async fn call(node: &NodeConsulProjectorEffect, input: Value) -> Value {
    let input = serde_json::from_value(input).expect("a valid input");
    let output = node.process(input, Context::new()).await.expect("the node answers");
    serde_json::to_value(output).unwrap()
}

fn services(out: &Value) -> Vec<(String, String, u64)> {
    out.as_array()
        .unwrap_or_else(|| panic!("services in {out}"))
        .iter()
        .map(|s| {
            (
                s["service"].as_str().unwrap().into(),
                s["status"].as_str().unwrap().into(),
                s["instances"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn svc(name: &str, status: &str, instances: u64) -> (String, String, u64) {
    (name.into(), status.into(), instances)
}

#[tokio::test]
async fn each_projection_is_built_from_what_consul_holds() {
    let Setup { node, fixture: _fixture, .. } = setup().await;

    let out = call(&node, json!({"operation_type": "project_service_state"})).await;
    assert_eq!(out["success"], true, "{out}");
    assert_eq!(out["from_cache"], false);
    assert_eq!(
        services(&out["services"]),
        vec![
            svc("api", "healthy", 1),
            svc("db", "unhealthy", 1),
            svc("web", "degraded", 2),
            svc("web-sidecar-proxy", "healthy", 1),
        ]
    );
    let out =
        call(&node, json!({"operation_type": "project_service_state", "target_services": ["web", "ghost"]})).await;
    assert_eq!(services(&out["services"]), vec![svc("ghost", "unhealthy", 0), svc("web", "degraded", 2)]);

    let out = call(&node, json!({"operation_type": "project_health_state"})).await;
    let health = &out["health"];
    assert_eq!(
        (health["passing"].clone(), health["warning"].clone(), health["critical"].clone()),
        (json!(5), json!(1), json!(1)),
        "{out}"
    );
    assert_eq!(health["overall"], "unhealthy");
    assert_eq!(services(&health["services"]).len(), 4);
    let out = call(&node, json!({"operation_type": "project_health_state", "health_states": ["critical"]})).await;
    let health = &out["health"];
    assert_eq!(
        (health["passing"].clone(), health["warning"].clone(), health["critical"].clone()),
        (json!(0), json!(0), json!(1)),
        "{out}"
    );
    assert_eq!(services(&health["services"]), vec![svc("db", "unhealthy", 1)]);

    let out = call(
        &node,
        json!({"operation_type": "project_kv_state", "key_prefixes": ["config/", "features/"], "include_values": true}),
    )
    .await;
    assert_eq!(
        out["kv"],
        json!({
            "total_keys": 4,
            "prefixes": ["config/", "features/"],
            "entries": [
                {"key": "config/db/host", "value": "10.0.0.5", "value_encoding": "text", "modify_index": out["kv"]["entries"][0]["modify_index"]},
                {"key": "config/web/port", "value": "8080", "value_encoding": "text", "modify_index": out["kv"]["entries"][1]["modify_index"]},
                {"key": "features/blob", "value": "/wA=", "value_encoding": "base64", "modify_index": out["kv"]["entries"][2]["modify_index"]},
                {"key": "features/dark-mode", "value": "on", "value_encoding": "text", "modify_index": out["kv"]["entries"][3]["modify_index"]},
            ]
        }),
        "{out}"
    );
    let indexes: Vec<u64> =
        out["kv"]["entries"].as_array().unwrap().iter().map(|e| e["modify_index"].as_u64().unwrap()).collect();
    assert!(
        indexes.windows(2).all(|w| w[0] != w[1]) && indexes.iter().all(|i| *i > 0),
        "each key its own write: {indexes:?}"
    );
    let out = call(&node, json!({"operation_type": "project_kv_state", "key_prefixes": ["config/"]})).await;
    assert_eq!(out["kv"]["total_keys"], 2);
    assert!(
        out["kv"]["entries"].as_array().unwrap().iter().all(|e| e.get("value").is_none()),
        "no values unless asked: {out}"
    );

    let out = call(&node, json!({"operation_type": "project_topology", "target_services": ["web"], "depth": 1})).await;
    assert_eq!(
        out["topology"]["edges"],
        json!([{"source": "web", "target": "api", "relationship": "connect_upstream"}]),
        "{out}"
    );
    assert_eq!(services(&out["topology"]["nodes"]), vec![svc("api", "healthy", 1), svc("web", "degraded", 2)]);
    assert_eq!(out["topology"]["depth"], 1);

    let out = call(&node, json!({"operation_type": "project_topology", "target_services": ["web"], "depth": 5})).await;
    assert_eq!(
        out["topology"]["edges"],
        json!([
            {"source": "api", "target": "db", "relationship": "service_meta"},
            {"source": "web", "target": "api", "relationship": "connect_upstream"},
        ])
    );
    assert_eq!(
        services(&out["topology"]["nodes"]),
        vec![svc("api", "healthy", 1), svc("db", "unhealthy", 1), svc("web", "degraded", 2)]
    );
    assert_eq!(out["topology"]["depth"], 2, "two hops were there to follow, not five");
}

#[tokio::test]
async fn a_cache_hit_makes_no_request_to_consul() {
    let Setup { fixture, node, .. } = setup().await;
    let started = Instant::now();
    let first = call(&node, json!({"operation_type": "project_service_state"})).await;
    let read = started.elapsed();
    assert_eq!(first["from_cache"], false);
    // The watchers' blocking queries are requests too: once they are held, nothing else may come.
    fixture.wait_for_held_queries(ALL_SERVICE_SOURCES).await;
    let before = fixture.request_log().len();
    let started = Instant::now();
    let second = call(&node, json!({"operation_type": "project_service_state"})).await;
    println!("every service read from Consul in {read:?}, from the cache in {:?}", started.elapsed());
    assert_eq!(second["from_cache"], true, "{second}");
    assert_eq!(second["services"], first["services"]);
    assert_eq!(second["projected_at"], first["projected_at"]);
    assert_ne!(second["timestamp"], first["timestamp"]);
    assert_eq!(fixture.request_log().len(), before, "a cache hit asked Consul");
}

#[tokio::test]
async fn a_zero_ttl_reads_consul_again() {
    let Setup { fixture, node, .. } = setup().await;
    call(&node, json!({"operation_type": "project_service_state"})).await;
    fixture.wait_for_held_queries(ALL_SERVICE_SOURCES).await;
    let (catalog, health) = (reads(&fixture, "/v1/catalog/services"), reads(&fixture, "/v1/health/service/"));
    let out = call(&node, json!({"operation_type": "project_service_state", "cache_ttl_seconds": 0})).await;
    assert_eq!(out["from_cache"], false);
    assert_eq!(reads(&fixture, "/v1/catalog/services"), catalog + 1);
    assert_eq!(reads(&fixture, "/v1/health/service/"), health + 4, "one read per service");
}

/// Asks `input` until `done` holds for the answer, at most 10 s; the time it took.
async fn until(node: &NodeConsulProjectorEffect, input: Value, done: impl Fn(&Value) -> bool) -> Duration {
    let started = Instant::now();
    loop {
        let out = call(node, input.clone()).await;
        if done(&out) {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "not seen within 10 s: {out}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_change_in_consul_is_seen_before_the_ttl_runs_out() {
    let Setup { fixture, node, .. } = setup().await;
    let services_input = json!({"operation_type": "project_service_state", "target_services": ["web"]});
    let kv_input = json!({"operation_type": "project_kv_state", "key_prefixes": ["features/"], "include_values": true});
    call(&node, services_input.clone()).await;
    call(&node, kv_input.clone()).await;
    fixture.wait_for_held_queries(2).await;
    assert_eq!(call(&node, services_input.clone()).await["from_cache"], true);

    fixture.set_check_status("web-2", CheckStatus::Critical);
    let seen = until(&node, services_input.clone(), |out| out["services"][0]["status"] == "unhealthy").await;
    println!("a check turning critical seen after {seen:?} (TTL 300 s)");

    fixture.put_key("features/dark-mode", b"off");
    let seen = until(&node, kv_input, |out| out["kv"]["entries"][1]["value"] == "off").await;
    println!("a changed key seen after {seen:?} (TTL 300 s)");

    fixture.add_instance(instance("web", "web-3", "node-1", CheckStatus::Passing, CheckStatus::Passing));
    let seen = until(&node, services_input, |out| out["services"][0]["instances"] == 3).await;
    println!("a new instance seen after {seen:?} (TTL 300 s)");
}

fn error_code(out: &Value) -> &str {
    out["error"]["code"].as_str().unwrap_or_else(|| panic!("an error code in {out}"))
}

/// No projection field and no projection time: a failure carries nothing that looks like data.
fn assert_no_data(out: &Value) {
    assert_eq!(out["success"], false, "{out}");
    for field in ["services", "health", "kv", "topology", "projected_at", "from_cache"] {
        assert!(out.get(field).is_none(), "{field} in a failed answer: {out}");
    }
}

const EVERY_OPERATION: [&str; 4] =
    ["project_service_state", "project_health_state", "project_kv_state", "project_topology"];

#[tokio::test]
async fn an_unreachable_consul_is_integration_service_unavailable_and_never_made_up_data() {
    let Setup { fixture, node, .. } = setup().await;
    for operation in EVERY_OPERATION {
        assert_eq!(call(&node, json!({"operation_type": operation})).await["success"], true);
    }
    fixture.inject(Failure::Refuse);
    // The watchers lose their connections and drop what they watched: a warm cache does not
    // answer for a Consul that is gone.
    let cache = node.handler().projector().cache();
    let started = Instant::now();
    while !cache.is_empty() {
        assert!(started.elapsed() < Duration::from_secs(10), "cached projections outlived Consul: {cache:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("every cached projection dropped {:?} after Consul went away", started.elapsed());
    for operation in EVERY_OPERATION {
        let out = call(&node, json!({"operation_type": operation})).await;
        assert_no_data(&out);
        assert_eq!(error_code(&out), "INTEGRATION_SERVICE_UNAVAILABLE", "{out}");
        let message = out["error"]["message"].as_str().unwrap();
        assert!(message.contains(&fixture.addr().to_string()), "the message says which Consul: {message}");
    }

    fixture.clear_failure();
    let out = call(&node, json!({"operation_type": "project_service_state"})).await;
    assert_eq!((out["success"].clone(), out["from_cache"].clone()), (json!(true), json!(false)), "{out}");
}

#[tokio::test]
async fn a_consul_answering_500_or_malformed_json_is_the_clients_error() {
    let Setup { fixture, node, .. } = setup().await;
    for failure in [Failure::Status500, Failure::MalformedJson] {
        fixture.inject(failure);
        for operation in EVERY_OPERATION {
            let out = call(&node, json!({"operation_type": operation, "cache_ttl_seconds": 0})).await;
            assert_no_data(&out);
            assert_eq!(error_code(&out), "INTEGRATION_SERVICE_ERROR", "{failure:?}: {out}");
        }
        fixture.clear_failure();
    }
    assert_eq!(call(&node, json!({"operation_type": "project_topology"})).await["success"], true);
}

#[tokio::test]
async fn a_consul_that_does_not_answer_in_time_is_unavailable_within_the_client_timeout() {
    let Setup { fixture, node, .. } = setup().await;
    fixture.inject(Failure::Delay(onex_tests::consul::REQUEST_TIMEOUT * 3));
    let started = Instant::now();
    let out = call(&node, json!({"operation_type": "project_kv_state"})).await;
    let elapsed = started.elapsed();
    assert_no_data(&out);
    assert_eq!(error_code(&out), "INTEGRATION_SERVICE_UNAVAILABLE", "{out}");
    println!("a silent Consul answered as unavailable after {elapsed:?}");
    assert!(
        elapsed < onex_tests::consul::REQUEST_TIMEOUT * 2,
        "the client's timeout, not the node's 15 s: {elapsed:?}"
    );
}

#[tokio::test]
async fn a_failed_fresh_read_is_not_covered_by_an_older_projection() {
    let Setup { fixture, node, .. } = setup().await;
    let input = json!({"operation_type": "project_kv_state"});
    assert_eq!(call(&node, input.clone()).await["success"], true);
    fixture.inject(Failure::Status500);
    let out = call(&node, json!({"operation_type": "project_kv_state", "cache_ttl_seconds": 0})).await;
    assert_eq!(error_code(&out), "INTEGRATION_SERVICE_ERROR");
    // The failed read dropped the older projection: the next request reads again, and fails.
    let out = call(&node, input).await;
    assert_eq!(error_code(&out), "INTEGRATION_SERVICE_ERROR", "{out}");
}

#[tokio::test]
async fn concurrent_identical_requests_share_one_read() {
    let Setup { fixture, node, bus } = setup().await;
    // Slow answers, so that the requests overlap the read.
    fixture.inject(Failure::Delay(Duration::from_millis(200)));
    let node = Arc::new(node);
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let node = Arc::clone(&node);
            tokio::spawn(async move { call(&node, json!({"operation_type": "project_topology"})).await })
        })
        .collect();
    for answer in calls {
        assert_eq!(answer.await.unwrap()["success"], true);
    }
    assert_eq!(reads(&fixture, "/v1/catalog/services"), 1, "20 requests, one read");
    assert_eq!(reads(&fixture, "/v1/health/service/"), 4);
    assert_eq!(bus.len(), 1, "one read, one event");
}

#[tokio::test]
async fn the_correlation_id_is_echoed_or_generated() {
    let Setup { node, fixture: _fixture, .. } = setup().await;
    let id = Uuid::new_v4();
    let out = call(&node, json!({"operation_type": "project_kv_state", "correlation_id": id})).await;
    assert_eq!(out["correlation_id"], json!(id));
    let a = call(&node, json!({"operation_type": "project_kv_state"})).await;
    let b = call(&node, json!({"operation_type": "project_kv_state"})).await;
    assert_ne!(a["correlation_id"], b["correlation_id"]);
    assert_ne!(a["correlation_id"], json!(Uuid::nil()));
}

#[tokio::test]
async fn a_projection_read_from_consul_is_announced_without_its_content() {
    let Setup { node, bus, fixture: _fixture } = setup().await;
    let id = Uuid::new_v4();
    let input = json!({"operation_type": "project_kv_state", "include_values": true, "correlation_id": id});
    call(&node, input.clone()).await;
    call(&node, input).await;
    let events = bus.events();
    assert_eq!(events.len(), 1, "only the read from Consul is announced, not the cache hit");
    let event = &events[0];
    assert_eq!(event.event_type, PROJECTION_EVENT);
    assert_eq!(event.correlation_id, id);
    assert_eq!(event.payload["operation"], "project_kv_state");
    assert_eq!(event.payload["size"]["total_keys"], 4);
    let text = event.payload.to_string();
    assert!(!text.contains("10.0.0.5") && !text.contains("config/"), "no keys or values in the event: {text}");
}

#[tokio::test]
async fn a_request_that_selects_nothing_is_a_validation_error() {
    let Setup { fixture, node, .. } = setup().await;
    for input in [
        json!({"operation_type": "project_service_state", "target_services": []}),
        json!({"operation_type": "project_health_state", "target_services": ["  "]}),
        json!({"operation_type": "project_health_state", "health_states": []}),
        json!({"operation_type": "project_kv_state", "key_prefixes": []}),
        json!({"operation_type": "project_topology", "depth": 0}),
    ] {
        let out = call(&node, input.clone()).await;
        assert_no_data(&out);
        assert_eq!(error_code(&out), "VALIDATION_ERROR", "{input}: {out}");
    }
    assert_eq!(fixture.request_log().len(), 0, "an invalid request does not reach Consul");
}

#[tokio::test]
async fn the_generated_registry_builds_the_node_and_requires_the_client() {
    let fixture = ConsulFixture::start().await;
    let err = onex_generated::registry().build(NODE, None, &Container::new()).err().expect("no client, no node");
    assert!(err.message().contains("consul_client"), "{}", err.message());
    let mut container = Container::new();
    container.register::<ConsulClient>(Arc::new(fixture.client()));
    let node = onex_generated::registry().build(NODE, None, &container).expect("the registry builds the node");
    let out = node.process_json(json!({"operation_type": "project_service_state"}), Context::new()).await.unwrap();
    assert_eq!(out["services"], json!([]), "an empty Consul projects no service: {out}");
}
