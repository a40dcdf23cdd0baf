//! The Consul client (`onex_runtime::consul`) against the in-process Consul API fixture on
//! loopback, and the fixture against Consul's published examples (tests/fixtures/consul/).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use onex_runtime::consul::{
    AgentService, AgentServiceRegistration, CatalogNode, CheckStatus, ConsulClient, ConsulConfig, HealthCheck,
    QueryOptions, ServiceEntry, service_health,
};
use onex_runtime::environment::MapEnv;
use onex_runtime::models::health::HealthStatus;
use onex_runtime::{ErrorCode, OnexError};
use onex_tests::consul::{AGENT_NODE, ConsulFixture, DATACENTER, Failure, REQUEST_TIMEOUT};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "9f1c2e1a-acl-secret-7d3b";

fn example(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/consul").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn registration(id: &str, name: &str, tags: &[&str]) -> AgentServiceRegistration {
    AgentServiceRegistration {
        id: id.into(),
        name: name.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        address: "10.0.0.7".into(),
        port: Some(8080),
        meta: BTreeMap::from([("version".to_owned(), "1.2.3".to_owned())]),
    }
}

/// The health of every service the catalog lists, as the node computes it.
async fn all_health(client: &ConsulClient) -> BTreeMap<String, (HealthStatus, u32)> {
    let services = client.catalog_services(QueryOptions::default()).await.unwrap().value;
    let mut entries = Vec::new();
    for name in services.keys() {
        entries.extend(client.health_service(name, QueryOptions::default()).await.unwrap().value);
    }
    service_health(&entries).into_iter().map(|h| (h.service, (h.status, h.instances))).collect()
}

#[tokio::test]
async fn a_key_round_trips_and_a_recursive_delete_removes_the_prefix_in_one_request() {
    let fixture = ConsulFixture::start().await;
    let client = fixture.client();
    assert!(client.kv_put("app/config/db", b"postgres://db:5432").await.unwrap());
    assert!(client.kv_put("app/config/cache", b"redis").await.unwrap());
    assert!(client.kv_put("app/feature", b"on").await.unwrap());
    assert!(client.kv_put("other/key", b"kept").await.unwrap());

    let pair = client.kv_get("app/config/db").await.unwrap().expect("the key exists");
    assert_eq!(pair.key, "app/config/db");
    assert_eq!(pair.decoded_value().unwrap().as_deref(), Some(&b"postgres://db:5432"[..]));
    assert!(pair.modify_index >= pair.create_index && pair.create_index > 0, "{pair:?}");

    // An update keeps the creation index and moves the modification index.
    assert!(client.kv_put("app/config/db", b"postgres://db2:5432").await.unwrap());
    let updated = client.kv_get("app/config/db").await.unwrap().unwrap();
    assert_eq!(updated.create_index, pair.create_index);
    assert!(updated.modify_index > pair.modify_index);

    let listed = client.kv_list("app/", QueryOptions::default()).await.unwrap();
    let keys: Vec<&str> = listed.value.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["app/config/cache", "app/config/db", "app/feature"]);
    assert!(listed.index >= updated.modify_index, "{} < {}", listed.index, updated.modify_index);

    let before = fixture.requests("/v1/kv/");
    assert!(client.kv_delete("app/", true).await.unwrap());
    assert_eq!(fixture.requests("/v1/kv/") - before, 1, "a recursive delete is one request");
    assert!(client.kv_list("app/", QueryOptions::default()).await.unwrap().value.is_empty());
    assert_eq!(fixture.key("other/key").as_deref(), Some(&b"kept"[..]));

    // A plain delete removes one key only, and deleting a missing key is not an error.
    client.kv_put("a/b", b"1").await.unwrap();
    client.kv_put("a/bc", b"2").await.unwrap();
    assert!(client.kv_delete("a/b", false).await.unwrap());
    assert!(client.kv_get("a/b").await.unwrap().is_none());
    assert!(client.kv_get("a/bc").await.unwrap().is_some());
    assert!(client.kv_delete("a/b", false).await.unwrap());
}

#[tokio::test]
async fn a_missing_key_is_none_and_a_prefix_without_keys_is_an_empty_list() {
    let fixture = ConsulFixture::start().await;
    let client = fixture.client();
    assert_eq!(client.kv_get("no/such/key").await.unwrap(), None);
    let listed = client.kv_list("no/such/", QueryOptions::default()).await.unwrap();
    assert!(listed.value.is_empty());
    assert!(listed.index >= 1, "Consul's index is at least 1");
    // A key stored without a value exists, with no value.
    client.kv_put("flag", b"").await.unwrap();
    let pair = client.kv_get("flag").await.unwrap().expect("the key exists");
    assert_eq!(pair.decoded_value().unwrap(), None);
}

#[tokio::test]
async fn keys_and_service_ids_with_reserved_characters_are_encoded_in_paths() {
    let fixture = ConsulFixture::start().await;
    let client = fixture.client();
    let key = "app/with space/ünï?&=#%2F+";
    client.kv_put(key, b"odd").await.unwrap();
    assert_eq!(fixture.key(key).as_deref(), Some(&b"odd"[..]), "the fixture decoded the same key");
    assert_eq!(client.kv_get(key).await.unwrap().unwrap().key, key);

    let id = "web/1 ?x";
    client.service_register(&registration(id, "web", &[])).await.unwrap();
    assert_eq!(fixture.instance_ids("web"), [id]);
    client.service_deregister(id).await.unwrap();
    assert!(fixture.instance_ids("web").is_empty());
}

#[tokio::test]
async fn register_list_health_deregister_and_then_the_service_is_unknown() {
    let fixture = ConsulFixture::start().await;
    let client = fixture.client();
    client.service_register(&registration("web-1", "web", &["v1"])).await.unwrap();
    client.service_register(&registration("web-2", "web", &["v2", "canary"])).await.unwrap();
    client.service_register(&registration("db-1", "db", &[])).await.unwrap();

    let catalog = client.catalog_services(QueryOptions::default()).await.unwrap();
    assert_eq!(
        catalog.value,
        BTreeMap::from([
            ("db".to_owned(), vec![]),
            ("web".to_owned(), vec!["canary".to_owned(), "v1".to_owned(), "v2".to_owned()]),
        ])
    );

    // Without checks of their own, instances are as healthy as their node (passing).
    let web = client.health_service("web", QueryOptions::default()).await.unwrap().value;
    assert_eq!(web.len(), 2);
    assert_eq!(web[0].service.address, "10.0.0.7");
    assert_eq!(web[0].service.meta.get("version").map(String::as_str), Some("1.2.3"));
    assert!(web[0].checks.iter().any(|c| c.check_id == "serfHealth" && c.service_id.is_empty()), "{web:?}");

    fixture.set_check_status("web-1", CheckStatus::Passing);
    fixture.set_check_status("web-2", CheckStatus::Warning);
    // An instance on another node whose node check fails: unhealthy although its own passes.
    fixture.add_instance(ServiceEntry {
        node: CatalogNode::new("node-b", "10.0.0.9", "dc1"),
        service: AgentService::new("cache-1", "cache", 6379),
        checks: vec![
            HealthCheck {
                node: "node-b".into(),
                check_id: "serfHealth".into(),
                name: "Serf Health Status".into(),
                status: CheckStatus::Critical,
                output: "Agent not live or unreachable".into(),
                service_id: String::new(),
                service_name: String::new(),
            },
            HealthCheck {
                node: "node-b".into(),
                check_id: "service:cache-1".into(),
                name: "Service 'cache' check".into(),
                status: CheckStatus::Passing,
                output: String::new(),
                service_id: "cache-1".into(),
                service_name: "cache".into(),
            },
        ],
    });
    assert_eq!(
        all_health(&client).await,
        BTreeMap::from([
            ("cache".to_owned(), (HealthStatus::Unhealthy, 1)),
            ("db".to_owned(), (HealthStatus::Healthy, 1)),
            ("web".to_owned(), (HealthStatus::Degraded, 2)),
        ])
    );

    // The agent's node failing takes down every service on it.
    fixture.set_node_check_status(AGENT_NODE, CheckStatus::Critical);
    let health = all_health(&client).await;
    assert_eq!(health["db"].0, HealthStatus::Unhealthy);
    assert_eq!(health["web"].0, HealthStatus::Unhealthy);
    fixture.set_node_check_status(AGENT_NODE, CheckStatus::Passing);

    client.service_deregister("web-1").await.unwrap();
    assert_eq!(all_health(&client).await["web"], (HealthStatus::Degraded, 1));
    client.service_deregister("web-2").await.unwrap();
    assert!(client.health_service("web", QueryOptions::default()).await.unwrap().value.is_empty());
    assert!(!client.catalog_services(QueryOptions::default()).await.unwrap().value.contains_key("web"));

    let err = client.service_deregister("web-2").await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound, "{err}");
    assert!(err.message().contains("web-2"), "{err}");
    // The agent deregisters only its own services: cache-1 runs on another node.
    assert_eq!(client.service_deregister("cache-1").await.unwrap_err().code(), ErrorCode::NotFound);
}

#[tokio::test]
async fn a_registration_consul_rejects_is_a_validation_error_with_consuls_reason() {
    let fixture = ConsulFixture::start().await;
    let client = fixture.client();
    let err = client.service_register(&AgentServiceRegistration::default()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ValidationError);
    assert_eq!(fixture.requests("/v1/agent"), 0, "an empty name is refused before any request");

    fixture.answer_verbatim("PUT", "/v1/agent/service/register", 400, "Invalid Service Meta: key too long");
    let err = client.service_register(&registration("web-1", "web", &[])).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ValidationError);
    assert!(err.message().contains("Invalid Service Meta"), "{err}");
}

/// Runs `call` under `failure`: the error code and how long the client took to give up.
async fn under<T: std::fmt::Debug>(
    fixture: &ConsulFixture,
    failure: Failure,
    call: impl std::future::Future<Output = Result<T, OnexError>>,
) -> (OnexError, Duration) {
    fixture.inject(failure);
    let started = Instant::now();
    let err = call.await.expect_err("the call fails under the injected failure");
    let elapsed = started.elapsed();
    fixture.clear_failure();
    println!("{failure:?}: {} after {elapsed:?}: {err}", err.code());
    (err, elapsed)
}

#[tokio::test]
async fn each_injected_failure_gives_its_error_code_within_a_bounded_time() {
    let fixture = ConsulFixture::start().await;
    let client = ConsulClient::new(fixture.config().with_token(TOKEN)).unwrap();
    client.kv_put("app/key", b"v").await.unwrap();
    let ceiling = REQUEST_TIMEOUT + Duration::from_secs(3);

    let (err, elapsed) = under(&fixture, Failure::Refuse, client.kv_get("app/key")).await;
    assert_eq!(err.code(), ErrorCode::IntegrationServiceUnavailable, "{err}");
    assert!(err.message().contains(&fixture.addr().to_string()), "names Consul: {err}");
    assert!(elapsed < ceiling, "{elapsed:?}");
    let fresh = fixture.client(); // no pooled connection: the connect itself is refused
    let (err, _) = under(&fixture, Failure::Refuse, fresh.catalog_services(QueryOptions::default())).await;
    assert_eq!(err.code(), ErrorCode::IntegrationServiceUnavailable, "{err}");
    assert!(err.to_string().to_lowercase().contains("refused"), "{err}");

    let (err, elapsed) = under(&fixture, Failure::Delay(Duration::from_secs(30)), client.kv_get("app/key")).await;
    assert_eq!(err.code(), ErrorCode::IntegrationServiceUnavailable, "{err}");
    assert!(elapsed >= REQUEST_TIMEOUT && elapsed < ceiling, "{elapsed:?}");

    let (err, elapsed) = under(&fixture, Failure::Status500, client.kv_get("app/key")).await;
    assert_eq!(err.code(), ErrorCode::IntegrationServiceError, "{err}");
    assert!(err.message().contains("500") && err.message().contains("No cluster leader"), "{err}");
    assert!(elapsed < ceiling, "{elapsed:?}");
    let (err, _) = under(&fixture, Failure::Status500, client.kv_put("app/key", b"x")).await;
    assert_eq!(err.code(), ErrorCode::IntegrationServiceError, "{err}");

    let (err, elapsed) = under(&fixture, Failure::MalformedJson, client.kv_get("app/key")).await;
    assert_eq!(err.code(), ErrorCode::IntegrationServiceError, "{err}");
    assert!(elapsed < ceiling, "{elapsed:?}");
    let (err, _) = under(&fixture, Failure::MalformedJson, client.health_service("web", QueryOptions::default())).await;
    assert_eq!(err.code(), ErrorCode::IntegrationServiceError, "{err}");
    let (err, _) = under(&fixture, Failure::MalformedJson, client.catalog_services(QueryOptions::default())).await;
    assert_eq!(err.code(), ErrorCode::IntegrationServiceError, "{err}");

    // Back to normal: the same client works again (after Refuse, on a new connection).
    assert_eq!(client.kv_get("app/key").await.unwrap().unwrap().decoded_value().unwrap().unwrap(), b"v");
}

#[tokio::test]
async fn a_wrong_datacenter_is_an_error_and_every_request_names_the_configured_one() {
    let fixture = ConsulFixture::start().await;
    let client = fixture.client();
    client.kv_put("k", b"v").await.unwrap();
    client.kv_get("k").await.unwrap();
    client.kv_delete("k", false).await.unwrap();
    client.service_register(&registration("web-1", "web", &[])).await.unwrap();
    client.catalog_services(QueryOptions::default()).await.unwrap();
    client.health_service("web", QueryOptions::default()).await.unwrap();
    client.service_deregister("web-1").await.unwrap();
    let log = fixture.request_log();
    assert_eq!(log.len(), 7);
    for request in &log {
        assert!(request.query.split('&').any(|p| p == format!("dc={DATACENTER}")), "{request:?}");
    }
    let elsewhere = ConsulClient::new(ConsulConfig { datacenter: "dc2".into(), ..fixture.config() }).unwrap();
    let err = elsewhere.kv_get("k").await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::IntegrationServiceError);
    assert!(err.message().contains("No path to datacenter"), "{err}");
}

#[tokio::test]
async fn the_token_travels_only_in_its_header_and_never_shows_in_errors_or_debug() {
    let fixture = ConsulFixture::start().await;
    fixture.require_token(Some(TOKEN));

    let anonymous = fixture.client();
    let err = anonymous.kv_get("app/key").await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::IntegrationServiceError);
    assert!(err.message().contains("no token is configured") && err.message().contains("CONSUL_HTTP_TOKEN"), "{err}");

    let wrong = ConsulClient::new(fixture.config().with_token("wrong-token-4242")).unwrap();
    let err = wrong.kv_put("app/key", b"v").await.unwrap_err();
    assert!(err.message().contains("lacks permission"), "{err}");
    assert!(!format!("{err} {err:?}").contains("wrong-token-4242"), "{err:?}");

    let client = ConsulClient::new(fixture.config().with_token(TOKEN)).unwrap();
    client.kv_put("app/key", b"v").await.unwrap();
    client.service_register(&registration("web-1", "web", &[])).await.unwrap();
    client.health_service("web", QueryOptions::default()).await.unwrap();
    let shown = format!("{client:?} {:?}", client.config());
    assert!(!shown.contains(TOKEN), "{shown}");

    // A proxy that echoes the header into its error page: the client masks it.
    let echo = format!("bad gateway; request headers: X-Consul-Token: {TOKEN}");
    fixture.answer_verbatim("GET", "/v1/kv/echo", 502, &echo);
    let err = client.kv_get("echo").await.unwrap_err();
    assert!(err.message().contains("502") && err.message().contains("***"), "{err}");
    let mut errors = vec![err];
    for failure in
        [Failure::Refuse, Failure::Delay(Duration::from_secs(30)), Failure::Status500, Failure::MalformedJson]
    {
        errors.push(under(&fixture, failure, client.kv_get("app/key")).await.0);
    }
    for err in &errors {
        let shown = format!("{err} {err:?} {}", serde_json::to_string(err.details()).unwrap());
        assert!(!shown.contains(TOKEN), "{shown}");
    }

    let log = fixture.request_log();
    assert!(log.iter().any(|r| r.token.as_deref() == Some(TOKEN)));
    for request in &log {
        assert!(!request.path.contains(TOKEN) && !request.query.contains(TOKEN), "{request:?}");
    }
}

#[tokio::test]
async fn a_blocking_query_returns_when_the_data_changes() {
    let fixture = ConsulFixture::start().await;
    let client = fixture.client();
    client.kv_put("app/a", b"1").await.unwrap();
    let first = client.kv_list("app/", QueryOptions::default()).await.unwrap();

    let started = Instant::now();
    let waiter = tokio::spawn({
        let client = client.clone();
        async move { client.kv_list("app/", QueryOptions::blocking(first.index, Duration::from_secs(60))).await }
    });
    fixture.wait_for_held_queries(1).await;
    assert!(!waiter.is_finished(), "the query waits for a change");
    fixture.put_key("app/b", b"2");
    let changed = waiter.await.unwrap().unwrap();
    let elapsed = started.elapsed();
    println!(
        "the blocking KV query returned {elapsed:?} after it was sent, index {} -> {}",
        first.index, changed.index
    );
    assert!(changed.index > first.index);
    assert_eq!(changed.value.iter().map(|p| p.key.as_str()).collect::<Vec<_>>(), ["app/a", "app/b"]);
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}: woken by the change, not the 60 s wait");

    // A deletion under the prefix wakes it too.
    let waiter = tokio::spawn({
        let client = client.clone();
        async move { client.kv_list("app/", QueryOptions::blocking(changed.index, Duration::from_secs(60))).await }
    });
    fixture.wait_for_held_queries(1).await;
    client.kv_delete("app/a", false).await.unwrap();
    let after_delete = waiter.await.unwrap().unwrap();
    assert!(after_delete.index > changed.index);
    assert_eq!(after_delete.value.len(), 1);

    // Health: a check turning critical wakes a blocking health query.
    client.service_register(&registration("web-1", "web", &[])).await.unwrap();
    let health = client.health_service("web", QueryOptions::default()).await.unwrap();
    let waiter = tokio::spawn({
        let client = client.clone();
        async move { client.health_service("web", QueryOptions::blocking(health.index, Duration::from_secs(60))).await }
    });
    fixture.wait_for_held_queries(1).await;
    fixture.set_check_status("web-1", CheckStatus::Critical);
    let woken = waiter.await.unwrap().unwrap();
    assert!(woken.index > health.index);
    assert_eq!(service_health(&woken.value)[0].status, HealthStatus::Unhealthy);
}

#[tokio::test]
async fn a_blocking_query_without_a_change_under_its_prefix_returns_after_its_wait() {
    let fixture = ConsulFixture::start().await;
    let client = fixture.client();
    client.kv_put("app/a", b"1").await.unwrap();
    let first = client.kv_list("app/", QueryOptions::default()).await.unwrap();
    let wait = Duration::from_millis(500);
    let started = Instant::now();
    let waiter = tokio::spawn({
        let client = client.clone();
        async move { client.kv_list("app/", QueryOptions::blocking(first.index, wait)).await }
    });
    fixture.wait_for_held_queries(1).await;
    fixture.put_key("other/b", b"2"); // outside the prefix
    let same = waiter.await.unwrap().unwrap();
    let elapsed = started.elapsed();
    println!("the unchanged blocking query returned after {elapsed:?} (wait {wait:?})");
    assert_eq!(same.index, first.index);
    assert!(elapsed >= wait, "{elapsed:?}");
    assert!(elapsed < wait + REQUEST_TIMEOUT + Duration::from_secs(3), "{elapsed:?}");
}

#[test]
fn missing_consul_variables_are_configuration_errors_naming_them() {
    let all = [("CONSUL_HOST", "127.0.0.1"), ("CONSUL_PORT", "8500"), ("CONSUL_DATACENTER", "dc1")];
    assert!(ConsulClient::from_env(&MapEnv::from_pairs(all)).is_ok());
    for missing in ["CONSUL_HOST", "CONSUL_PORT", "CONSUL_DATACENTER"] {
        let env = MapEnv::from_pairs(all.iter().copied().filter(|(k, _)| *k != missing));
        let err = ConsulClient::from_env(&env).unwrap_err();
        assert_eq!(err.code(), ErrorCode::ConfigurationError);
        assert!(err.message().contains(missing), "{err}");
        assert_eq!(err.details().get("variable"), Some(&Value::from(missing)));
    }
    let env = MapEnv::from_pairs(all.iter().copied().chain([("CONSUL_SCHEME", "https")]));
    let err = ConsulClient::from_env(&env).unwrap_err();
    assert!(err.message().contains("CONSUL_SCHEME=https is not supported"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_concurrent_requests_than_the_pool_size_never_exceed_it_in_flight() {
    let fixture = ConsulFixture::start().await;
    let client = fixture.client();
    let pool_size = client.config().pool_size;
    let delay = Duration::from_millis(300);
    fixture.inject(Failure::Delay(delay));
    fixture.reset_max_in_flight();
    let requests = pool_size * 3;
    let started = Instant::now();
    let calls = (0..requests).map(|i| {
        let client = client.clone();
        async move { client.kv_get(&format!("k/{i}")).await }
    });
    let results = futures::future::join_all(calls).await;
    let elapsed = started.elapsed();
    fixture.clear_failure();
    let max = fixture.max_in_flight();
    println!("{requests} requests, pool {pool_size}: at most {max} in flight at the fixture, {elapsed:?} in all");
    for result in results {
        assert_eq!(result.unwrap(), None);
    }
    assert!(max <= pool_size, "{max} requests in flight, pool size {pool_size}");
    assert_eq!(max, pool_size, "the pool is used in full");
    // Each answer takes `delay` at the fixture and at most `pool_size` run at once.
    let rounds = u32::try_from(requests.div_ceil(pool_size)).unwrap();
    assert!(elapsed >= delay * rounds, "{elapsed:?}");
    assert_eq!(fixture.requests("/v1/kv/k/"), requests);
}

/// JSON type names by path, `$` the root, `[]` an array element, `*` a key of a map whose keys
/// are data (service names, metadata keys).
fn shape(value: &Value, maps: &[&str]) -> BTreeMap<String, BTreeSet<&'static str>> {
    fn walk(value: &Value, path: String, maps: &[&str], out: &mut BTreeMap<String, BTreeSet<&'static str>>) {
        let kind = match value {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(items) => {
                for item in items {
                    walk(item, format!("{path}[]"), maps, out);
                }
                "array"
            }
            Value::Object(fields) => {
                let is_map = maps.iter().any(|m| *m == path);
                for (name, field) in fields {
                    let child = if is_map { format!("{path}.*") } else { format!("{path}.{name}") };
                    walk(field, child, maps, out);
                }
                "object"
            }
        };
        out.entry(path).or_default().insert(kind);
    }
    let mut out = BTreeMap::new();
    walk(value, "$".into(), maps, &mut out);
    out
}

/// The fixture's `answer` has the fields of the `documented` examples: each of its fields is
/// in one of them with the same JSON types, and each field of the first (Consul's
/// documentation) is in the answer unless `optional` names it or a field it is part of.
fn assert_same_fields(what: &str, answer: &Value, documented: &[Value], maps: &[&str], optional: &[&str]) {
    let ours = shape(answer, maps);
    let mut known: BTreeMap<String, BTreeSet<&'static str>> = BTreeMap::new();
    for example in documented {
        for (path, kinds) in shape(example, maps) {
            known.entry(path).or_default().extend(kinds);
        }
    }
    for (path, kinds) in &ours {
        let documented_kinds = known.get(path).unwrap_or_else(|| panic!("{what}: {path} is in no documented example"));
        assert!(kinds.is_subset(documented_kinds), "{what}: {path} is {kinds:?}, documented {documented_kinds:?}");
    }
    for path in shape(&documented[0], maps).keys() {
        // Map keys are data, and Consul Enterprise's namespace is not in this Consul.
        let is_optional = optional.iter().any(|o| {
            path == o || path.strip_prefix(o).is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        });
        if path.contains(".*") || path.ends_with(".Namespace") || is_optional {
            continue;
        }
        assert!(ours.contains_key(path), "{what}: the documented {path} is missing from the fixture's answer");
    }
}

/// One raw HTTP/1.0 exchange: status, `X-Consul-Index` and body.
async fn raw(addr: SocketAddr, method: &str, path_and_query: &str, body: &str) -> (u16, Option<u64>, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request =
        format!("{method} {path_and_query} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer)).await.unwrap().unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let index = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("x-consul-index:").map(|v| v.trim().parse().unwrap()));
    (status, index, body.to_owned())
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test]
async fn the_fixture_answers_with_the_fields_and_types_of_the_documented_examples() {
    let fixture = ConsulFixture::start().await;
    let addr = fixture.addr();

    let (status, _, body) = raw(addr, "PUT", "/v1/kv/zip?dc=dc1", "test").await;
    assert_eq!((status, json(&body)), (200, json(&example("docs/kv-create-update.json"))));
    let (status, index, body) = raw(addr, "GET", "/v1/kv/zip?dc=dc1", "").await;
    assert_eq!(status, 200);
    assert!(index.is_some_and(|i| i > 0), "reads carry X-Consul-Index");
    assert_same_fields(
        "GET /v1/kv/:key",
        &json(&body),
        &[json(&example("docs/kv-read-key.json")), json(&example("api-double-6.1.5/kv-read-key.json"))],
        &[],
        // Present while a session holds a lock on the key only.
        &["$[].Session"],
    );
    assert_eq!(json(&body)[0]["Value"], "dGVzdA==", "the documented value of `test`");
    let (status, index, body) = raw(addr, "GET", "/v1/kv/missing?dc=dc1", "").await;
    assert_eq!((status, body.as_str()), (404, ""), "a missing key is a 404 with no body");
    assert!(index.is_some());
    let (status, _, body) = raw(addr, "DELETE", "/v1/kv/zip?dc=dc1", "").await;
    assert_eq!((status, json(&body)), (200, json(&example("docs/kv-delete.json"))));

    // The documented registration payload is accepted as it stands.
    let (status, _, _) =
        raw(addr, "PUT", "/v1/agent/service/register?dc=dc1", &example("docs/agent-register-service-payload.json"))
            .await;
    assert_eq!(status, 200);
    fixture.set_check_status("redis1", CheckStatus::Passing);
    let (status, _, body) = raw(addr, "GET", "/v1/catalog/services?dc=dc1", "").await;
    assert_eq!(status, 200);
    assert_same_fields(
        "GET /v1/catalog/services",
        &json(&body),
        &[json(&example("docs/catalog-list-services.json"))],
        &["$"],
        &[],
    );
    assert_eq!(json(&body), serde_json::json!({"redis": ["primary", "v1"]}));
    let (status, _, body) = raw(addr, "GET", "/v1/health/service/redis?dc=dc1", "").await;
    assert_eq!(status, 200);
    let maps = ["$[].Node.TaggedAddresses", "$[].Node.Meta", "$[].Service.TaggedAddresses", "$[].Service.Meta"];
    assert_same_fields(
        "GET /v1/health/service/:service",
        &json(&body),
        &[
            json(&example("docs/health-list-service-instances.json")),
            json(&example("api-double-6.1.5/health-service.json")),
        ],
        &maps,
        &[],
    );
    let (status, _, body) = raw(addr, "GET", "/v1/health/service/nothing?dc=dc1", "").await;
    assert_eq!((status, json(&body)), (200, serde_json::json!([])), "an unknown service has no instances");
    let (status, _, body) = raw(addr, "PUT", "/v1/agent/service/deregister/nothing?dc=dc1", "").await;
    assert_eq!((status, body.as_str()), (404, "Unknown service \"nothing\""));

    // The client's registration carries only fields of the documented payload, with their types.
    let ours = serde_json::to_value(registration("web-1", "web", &["v1"])).unwrap();
    assert_same_fields(
        "the client's registration",
        &ours,
        &[json(&example("docs/agent-register-service-payload.json"))],
        &["$.Meta"],
        // Checks, weights and tag override are settings the node does not expose.
        &["$.EnableTagOverride", "$.Check", "$.Weights"],
    );
}

#[tokio::test]
async fn the_client_parses_the_documented_examples_verbatim() {
    let fixture = ConsulFixture::start().await;
    let client = fixture.client();

    fixture.answer_verbatim("GET", "/v1/kv/zip", 200, &example("docs/kv-read-key.json"));
    let pair = client.kv_get("zip").await.unwrap().unwrap();
    assert_eq!((pair.key.as_str(), pair.create_index, pair.modify_index, pair.lock_index), ("zip", 100, 200, 200));
    assert_eq!(pair.decoded_value().unwrap().as_deref(), Some(&b"test"[..]));
    assert_eq!(pair.session.as_deref(), Some("adf4238a-882b-9ddc-4a9d-5b6758e4159e"));

    fixture.answer_verbatim("GET", "/v1/kv/app/config", 200, &example("api-double-6.1.5/kv-read-key.json"));
    let pair = client.kv_get("app/config").await.unwrap().unwrap();
    assert_eq!(pair.decoded_value().unwrap().as_deref(), Some(&b"Tue Feb  6 13:19:22 UTC 2018"[..]));

    fixture.answer_verbatim("PUT", "/v1/kv/zip", 200, &example("docs/kv-create-update.json"));
    assert!(client.kv_put("zip", b"test").await.unwrap());
    fixture.answer_verbatim("DELETE", "/v1/kv/zip", 200, &example("docs/kv-delete.json"));
    assert!(client.kv_delete("zip", false).await.unwrap());

    fixture.answer_verbatim("GET", "/v1/catalog/services", 200, &example("docs/catalog-list-services.json"));
    let services = client.catalog_services(QueryOptions::default()).await.unwrap();
    assert_eq!(services.value.len(), 3);
    assert_eq!(services.value["postgresql"], ["primary", "secondary"]);
    assert!(services.value["consul"].is_empty());

    fixture.answer_verbatim(
        "GET",
        "/v1/health/service/redis",
        200,
        &example("docs/health-list-service-instances.json"),
    );
    let redis = client.health_service("redis", QueryOptions::default()).await.unwrap().value;
    assert_eq!(redis.len(), 1);
    assert_eq!((redis[0].node.node.as_str(), redis[0].service.port, redis[0].checks.len()), ("foobar", 8000, 2));
    assert_eq!(service_health(&redis)[0].status, HealthStatus::Healthy);

    fixture.answer_verbatim("GET", "/v1/health/service/web", 200, &example("api-double-6.1.5/health-service.json"));
    let web = client.health_service("web", QueryOptions::default()).await.unwrap().value;
    assert_eq!(web[0].service.id, "web-with-id");
    assert_eq!(service_health(&web)[0].status, HealthStatus::Unhealthy, "the double's first checks are critical");

    // An instance with Go's nil slices and maps (`null`) and a proxy's upstreams.
    let proxy: AgentService = serde_json::from_str(&example("docs/agent-service-configuration.json")).unwrap();
    assert!(proxy.tags.is_empty() && proxy.meta.is_empty());
    assert_eq!(proxy.kind, "connect-proxy");
    let upstreams = proxy.proxy.unwrap().upstreams;
    assert_eq!((upstreams[0].destination_name.as_str(), upstreams[0].local_bind_port), ("db", 9191));
}
