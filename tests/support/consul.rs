//! An in-process, stateful Consul HTTP API server on loopback, for tests of the Consul client
//! and of everything built on it.
//!
//! It answers the endpoints the client uses, in the shapes of Consul's API documentation and
//! of HashiCorp's API double (the examples are stored under `tests/fixtures/consul/`, and
//! `tests/tests/consul_client.rs` checks that this server's answers carry the same fields
//! with the same JSON types):
//!
//! - `GET|PUT|DELETE /v1/kv/:key` (`recurse` on GET and DELETE; PUT and DELETE answer
//!   `true`; a missing key or empty prefix is a 404 with an empty body);
//! - `PUT /v1/agent/service/register`, `PUT /v1/agent/service/deregister/:id` (404
//!   `Unknown service "…"` for an id the agent does not know, as Consul's agent answers);
//! - `GET /v1/catalog/services`, `GET /v1/health/service/:service` (200 `[]` for an unknown
//!   service).
//!
//! Reads carry `X-Consul-Index` and serve blocking queries: with `index=N` the answer is held
//! until the data's index passes N or `wait` (Go duration syntax, 5 minutes by default,
//! capped to 10) elapses. A `dc` other than [`DATACENTER`] is a 500 `No path to datacenter`.
//! With [`ConsulFixture::require_token`], a request without that `X-Consul-Token` is a 403.
//!
//! Failures are switched at run time ([`ConsulFixture::inject`]): refused connections (the
//! listener is closed and open connections dropped), answers delayed, 500s, malformed JSON.
//!
//! The state starts empty: no `consul` service, no keys. Services registered through the agent
//! endpoint run on the agent's node, [`AGENT_NODE`], whose `serfHealth` check passes.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use onex_runtime::consul::{
    AgentService, CatalogNode, CheckStatus, ConsulClient, ConsulConfig, HealthCheck, ServiceEntry, ServiceProxy,
};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The fixture's datacenter.
pub const DATACENTER: &str = "dc1";
/// The node of the agent the client talks to (services registered through it run there).
pub const AGENT_NODE: &str = "fixture-agent";
/// The agent node's id.
pub const AGENT_NODE_ID: &str = "7037e928-d9e8-3b58-4712-6f5ded209002";
/// The request timeout of [`ConsulFixture::config`].
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Consul's text for a leaderless cluster, the body of an injected 500.
pub const NO_LEADER: &str = "No cluster leader";
/// The body of an injected malformed answer: JSON cut short.
pub const MALFORMED_BODY: &str = r#"[{"LockIndex":0,"Key":"app/con"#;

const DEFAULT_WAIT: Duration = Duration::from_secs(300);
const MAX_WAIT: Duration = Duration::from_secs(600);

/// A failure the fixture shows until [`ConsulFixture::clear_failure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Connections are refused: the listener is closed and open connections are dropped.
    Refuse,
    /// Every answer waits this long first.
    Delay(Duration),
    /// Every request is answered 500 `No cluster leader`.
    Status500,
    /// Every request is answered 200 with JSON cut short.
    MalformedJson,
}

/// One request as the fixture received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// `GET`, `PUT`, …
    pub method: String,
    /// The path, percent-decoded.
    pub path: String,
    /// The raw query string.
    pub query: String,
    /// The `X-Consul-Token` header, if sent.
    pub token: Option<String>,
}

/// The server; stops when dropped.
pub struct ConsulFixture {
    addr: SocketAddr,
    shared: Arc<Shared>,
    runtime: tokio::runtime::Handle,
}

struct Shared {
    state: Mutex<State>,
    /// The raft index after each write: blocking queries wake on it.
    changed: watch::Sender<u64>,
    /// Bumped to end the accept loop and drop every open connection.
    generation: watch::Sender<u64>,
    listener: Mutex<Option<TcpListener>>,
    failure: Mutex<Option<Failure>>,
    token: Mutex<Option<String>>,
    log: Mutex<Vec<RecordedRequest>>,
    verbatim: Mutex<BTreeMap<(String, String), (u16, String)>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// Blocking queries being held right now.
    held: watch::Sender<usize>,
}

struct State {
    index: u64,
    kv: BTreeMap<String, Entry>,
    tombstones: BTreeMap<String, u64>,
    kv_index: u64,
    nodes: BTreeMap<String, Node>,
    /// By (node, service id).
    instances: BTreeMap<(String, String), Instance>,
    service_index: BTreeMap<String, u64>,
    catalog_index: u64,
}

struct Entry {
    value: Option<Vec<u8>>,
    flags: u64,
    create_index: u64,
    modify_index: u64,
    lock_index: u64,
    session: Option<String>,
}

struct Node {
    id: String,
    address: String,
    datacenter: String,
    checks: Vec<Check>,
    create_index: u64,
    modify_index: u64,
}

struct Instance {
    id: String,
    service: String,
    tags: Vec<String>,
    meta: BTreeMap<String, String>,
    address: String,
    port: u16,
    kind: String,
    proxy: Option<ServiceProxy>,
    checks: Vec<Check>,
    create_index: u64,
    modify_index: u64,
}

#[derive(Clone)]
struct Check {
    check_id: String,
    name: String,
    status: CheckStatus,
    output: String,
    kind: String,
    create_index: u64,
    modify_index: u64,
}

impl State {
    fn new() -> Self {
        let mut state = Self {
            index: 1,
            kv: BTreeMap::new(),
            tombstones: BTreeMap::new(),
            kv_index: 0,
            nodes: BTreeMap::new(),
            instances: BTreeMap::new(),
            service_index: BTreeMap::new(),
            catalog_index: 1,
        };
        let serf = Check {
            check_id: "serfHealth".into(),
            name: "Serf Health Status".into(),
            status: CheckStatus::Passing,
            output: "Agent alive and reachable".into(),
            kind: String::new(),
            create_index: 1,
            modify_index: 1,
        };
        state.nodes.insert(
            AGENT_NODE.into(),
            Node {
                id: AGENT_NODE_ID.into(),
                address: "127.0.0.1".into(),
                datacenter: DATACENTER.into(),
                checks: vec![serf],
                create_index: 1,
                modify_index: 1,
            },
        );
        state
    }

    fn bump(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    fn put(&mut self, key: &str, value: &[u8], flags: u64) -> u64 {
        let index = self.bump();
        let value = if value.is_empty() { None } else { Some(value.to_vec()) };
        self.tombstones.remove(key);
        match self.kv.get_mut(key) {
            Some(entry) => {
                entry.value = value;
                entry.flags = flags;
                entry.modify_index = index;
            }
            None => {
                self.kv.insert(
                    key.to_owned(),
                    Entry { value, flags, create_index: index, modify_index: index, lock_index: 0, session: None },
                );
            }
        }
        self.kv_index = index;
        index
    }

    /// Deletes `key` (or every key under it); the new index when anything went.
    fn delete(&mut self, key: &str, recurse: bool) -> Option<u64> {
        let doomed: Vec<String> = if recurse {
            self.kv.range(key.to_owned()..).map(|(k, _)| k).take_while(|k| k.starts_with(key)).cloned().collect()
        } else {
            self.kv.contains_key(key).then(|| key.to_owned()).into_iter().collect()
        };
        if doomed.is_empty() {
            return None;
        }
        let index = self.bump();
        for k in doomed {
            self.kv.remove(&k);
            self.tombstones.insert(k, index);
        }
        self.kv_index = index;
        Some(index)
    }

    /// The index of a KV read: the latest change (write or delete) of the keys it covers,
    /// else the KV store's, never below 1.
    fn kv_read_index(&self, key: &str, recurse: bool) -> u64 {
        let covers = |k: &String| if recurse { k.starts_with(key) } else { k == key };
        let live = self.kv.iter().filter(|(k, _)| covers(k)).map(|(_, e)| e.modify_index).max();
        let dead = self.tombstones.iter().filter(|(k, _)| covers(k)).map(|(_, i)| *i).max();
        live.max(dead).unwrap_or(self.kv_index).max(1)
    }

    fn touch_service(&mut self, service: &str, index: u64) {
        self.service_index.insert(service.to_owned(), index);
        self.catalog_index = index;
    }

    fn render_kv(&self, key: &str, entry: &Entry) -> Value {
        let mut object = Map::new();
        object.insert("LockIndex".into(), json!(entry.lock_index));
        object.insert("Key".into(), json!(key));
        object.insert("Flags".into(), json!(entry.flags));
        object.insert(
            "Value".into(),
            entry.value.as_ref().map_or(Value::Null, |v| json!(base64::engine::general_purpose::STANDARD.encode(v))),
        );
        if let Some(session) = &entry.session {
            object.insert("Session".into(), json!(session));
        }
        object.insert("CreateIndex".into(), json!(entry.create_index));
        object.insert("ModifyIndex".into(), json!(entry.modify_index));
        Value::Object(object)
    }

    fn render_check(node: &str, check: &Check, instance: Option<&Instance>) -> Value {
        json!({
            "Node": node,
            "CheckID": check.check_id,
            "Name": check.name,
            "Status": check.status,
            "Notes": "",
            "Output": check.output,
            "ServiceID": instance.map_or("", |i| i.id.as_str()),
            "ServiceName": instance.map_or("", |i| i.service.as_str()),
            "ServiceTags": instance.map_or(&[][..], |i| i.tags.as_slice()),
            "Type": check.kind,
            "Definition": {},
            "CreateIndex": check.create_index,
            "ModifyIndex": check.modify_index,
        })
    }

    fn render_entry(&self, node_name: &str, instance: &Instance) -> Value {
        let node = &self.nodes[node_name];
        let mut service = Map::new();
        service.insert("ID".into(), json!(instance.id));
        service.insert("Service".into(), json!(instance.service));
        service.insert("Tags".into(), json!(instance.tags));
        service.insert("Address".into(), json!(instance.address));
        if !instance.address.is_empty() {
            let tagged = json!({"address": instance.address, "port": instance.port});
            service.insert("TaggedAddresses".into(), json!({"lan": tagged, "wan": tagged}));
        }
        service.insert("Meta".into(), json!(instance.meta));
        service.insert("Port".into(), json!(instance.port));
        service.insert("Weights".into(), json!({"Passing": 1, "Warning": 1}));
        service.insert("EnableTagOverride".into(), json!(false));
        if !instance.kind.is_empty() {
            service.insert("Kind".into(), json!(instance.kind));
        }
        let proxy = match &instance.proxy {
            None => json!({}),
            Some(proxy) => json!({
                "DestinationServiceName": proxy.destination_service_name,
                "Upstreams": proxy.upstreams.iter().map(|u| json!({
                    "DestinationType": if u.destination_type.is_empty() { "service" } else { u.destination_type.as_str() },
                    "DestinationName": u.destination_name,
                    "LocalBindPort": u.local_bind_port,
                })).collect::<Vec<_>>(),
            }),
        };
        service.insert("Proxy".into(), proxy);
        service.insert("CreateIndex".into(), json!(instance.create_index));
        service.insert("ModifyIndex".into(), json!(instance.modify_index));
        let checks: Vec<Value> = instance
            .checks
            .iter()
            .map(|c| Self::render_check(node_name, c, Some(instance)))
            .chain(node.checks.iter().map(|c| Self::render_check(node_name, c, None)))
            .collect();
        json!({
            "Node": {
                "ID": node.id,
                "Node": node_name,
                "Address": node.address,
                "Datacenter": node.datacenter,
                "TaggedAddresses": {"lan": node.address, "wan": node.address},
                "Meta": {},
                "CreateIndex": node.create_index,
                "ModifyIndex": node.modify_index,
            },
            "Service": service,
            "Checks": checks,
        })
    }
}

impl ConsulFixture {
    /// Starts the server on an ephemeral loopback port.
    pub async fn start() -> ConsulFixture {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port for the Consul fixture");
        let addr = listener.local_addr().expect("the fixture's address");
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new()),
            changed: watch::Sender::new(1),
            generation: watch::Sender::new(0),
            listener: Mutex::new(Some(listener)),
            failure: Mutex::new(None),
            token: Mutex::new(None),
            log: Mutex::new(Vec::new()),
            verbatim: Mutex::new(BTreeMap::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            held: watch::Sender::new(0),
        });
        tokio::spawn(accept_loop(Arc::clone(&shared), shared.generation.subscribe()));
        ConsulFixture { addr, shared, runtime: tokio::runtime::Handle::current() }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A client configuration pointing at the fixture: datacenter [`DATACENTER`], request
    /// timeout [`REQUEST_TIMEOUT`], no token.
    pub fn config(&self) -> ConsulConfig {
        ConsulConfig::new(self.addr.ip().to_string(), self.addr.port(), DATACENTER)
            .with_request_timeout(REQUEST_TIMEOUT)
    }

    /// A client for [`Self::config`].
    pub fn client(&self) -> ConsulClient {
        ConsulClient::new(self.config()).expect("the fixture's configuration is valid")
    }

    /// Seeds a service instance with its checks, as another agent would have registered it.
    /// Checks without a service id are the node's (they replace the node's checks when given).
    pub fn add_instance(&self, entry: ServiceEntry) {
        let ServiceEntry { node, service, checks } = entry;
        let mut state = self.state();
        let index = state.bump();
        let (node_checks, own_checks): (Vec<HealthCheck>, Vec<HealthCheck>) =
            checks.into_iter().partition(|c| c.service_id.is_empty());
        let to_check = |c: HealthCheck| Check {
            check_id: c.check_id,
            name: c.name,
            status: c.status,
            output: c.output,
            kind: String::new(),
            create_index: index,
            modify_index: index,
        };
        let CatalogNode { id, node: node_name, address, datacenter } = node;
        let entry = state.nodes.entry(node_name.clone()).or_insert_with(|| Node {
            id,
            address,
            datacenter: if datacenter.is_empty() { DATACENTER.into() } else { datacenter },
            checks: Vec::new(),
            create_index: index,
            modify_index: index,
        });
        if !node_checks.is_empty() {
            entry.checks = node_checks.into_iter().map(to_check).collect();
            entry.modify_index = index;
        }
        let AgentService { id, service: name, tags, meta, address, port, kind, proxy } = service;
        let instance = Instance {
            id: id.clone(),
            service: name.clone(),
            tags,
            meta,
            address,
            port,
            kind,
            proxy,
            checks: own_checks.into_iter().map(to_check).collect(),
            create_index: index,
            modify_index: index,
        };
        state.instances.insert((node_name, id), instance);
        state.touch_service(&name, index);
        self.publish(state, index);
    }

    /// Sets every check of the instance `service_id` (on any node) to `status`; an instance
    /// without checks gets one, `service:<id>`, as Consul names a registration's check.
    pub fn set_check_status(&self, service_id: &str, status: CheckStatus) {
        let mut state = self.state();
        let index = state.bump();
        let mut services = Vec::new();
        for ((_, id), instance) in state.instances.iter_mut() {
            if id != service_id {
                continue;
            }
            if instance.checks.is_empty() {
                instance.checks.push(Check {
                    check_id: format!("service:{service_id}"),
                    name: format!("Service '{}' check", instance.service),
                    status,
                    output: String::new(),
                    kind: "ttl".into(),
                    create_index: index,
                    modify_index: index,
                });
            }
            for check in &mut instance.checks {
                check.status = status;
                check.modify_index = index;
            }
            services.push(instance.service.clone());
        }
        assert!(!services.is_empty(), "the Consul fixture has no instance with id '{service_id}'");
        for service in services {
            state.touch_service(&service, index);
        }
        self.publish(state, index);
    }

    /// Sets every check of `node` to `status` (adds `serfHealth` when it has none): every
    /// instance on the node is as healthy as its node at most.
    pub fn set_node_check_status(&self, node: &str, status: CheckStatus) {
        let mut state = self.state();
        let index = state.bump();
        let Some(entry) = state.nodes.get_mut(node) else { panic!("the Consul fixture has no node '{node}'") };
        if entry.checks.is_empty() {
            entry.checks.push(Check {
                check_id: "serfHealth".into(),
                name: "Serf Health Status".into(),
                status,
                output: String::new(),
                kind: String::new(),
                create_index: index,
                modify_index: index,
            });
        }
        for check in &mut entry.checks {
            check.status = status;
            check.modify_index = index;
        }
        let services: Vec<String> =
            state.instances.iter().filter(|((n, _), _)| n == node).map(|(_, i)| i.service.clone()).collect();
        for service in services {
            state.touch_service(&service, index);
        }
        self.publish(state, index);
    }

    /// Stores `value` under `key`, as another client would have.
    pub fn put_key(&self, key: &str, value: &[u8]) {
        let mut state = self.state();
        let index = state.put(key, value, 0);
        self.publish(state, index);
    }

    /// The value stored under `key` (`Some(empty)` for a key without a value).
    pub fn key(&self, key: &str) -> Option<Vec<u8>> {
        self.state().kv.get(key).map(|e| e.value.clone().unwrap_or_default())
    }

    /// The ids of the instances of `service`, on any node.
    pub fn instance_ids(&self, service: &str) -> Vec<String> {
        self.state().instances.values().filter(|i| i.service == service).map(|i| i.id.clone()).collect()
    }

    /// The raft index now.
    pub fn index(&self) -> u64 {
        self.state().index
    }

    /// Shows `failure` until [`Self::clear_failure`]; `Refuse` takes effect before this
    /// returns (the listener is closed, open connections dropped).
    pub fn inject(&self, failure: Failure) {
        let previous = self.shared.failure.lock().expect("failure lock").replace(failure);
        if failure == Failure::Refuse {
            self.stop_listening();
        } else if previous == Some(Failure::Refuse) {
            self.listen_again();
        }
    }

    /// Back to normal service (listening again after `Refuse`, on the same port).
    pub fn clear_failure(&self) {
        let previous = self.shared.failure.lock().expect("failure lock").take();
        if previous == Some(Failure::Refuse) {
            self.listen_again();
        }
    }

    /// Requests received so far whose path starts with `path_prefix`.
    pub fn requests(&self, path_prefix: &str) -> usize {
        self.shared.log.lock().expect("log lock").iter().filter(|r| r.path.starts_with(path_prefix)).count()
    }

    /// Every request received so far.
    pub fn request_log(&self) -> Vec<RecordedRequest> {
        self.shared.log.lock().expect("log lock").clone()
    }

    /// The most requests handled at once so far.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Starts counting [`Self::max_in_flight`] afresh.
    pub fn reset_max_in_flight(&self) {
        self.shared.max_in_flight.store(self.shared.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// Turns ACLs on with `token` as the only token allowed (`None`: off again). A request
    /// without a token is answered 403 `Permission denied`, one with another token 403
    /// `ACL not found`, as Consul answers.
    pub fn require_token(&self, token: Option<&str>) {
        *self.shared.token.lock().expect("token lock") = token.map(str::to_owned);
    }

    /// Answers `method path` with `status` and `body` as given (a documented example, a
    /// misbehaving proxy), whatever the state, until [`Self::clear_verbatim`].
    pub fn answer_verbatim(&self, method: &str, path: &str, status: u16, body: &str) {
        self.shared
            .verbatim
            .lock()
            .expect("verbatim lock")
            .insert((method.to_owned(), path.to_owned()), (status, body.to_owned()));
    }

    /// Forgets every verbatim answer.
    pub fn clear_verbatim(&self) {
        self.shared.verbatim.lock().expect("verbatim lock").clear();
    }

    /// Waits until `count` blocking queries are being held (the event a test waits for before
    /// changing the data), at most 10 s.
    pub async fn wait_for_held_queries(&self, count: usize) {
        let mut held = self.shared.held.subscribe();
        tokio::time::timeout(Duration::from_secs(10), held.wait_for(|held| *held >= count))
            .await
            .unwrap_or_else(|_| panic!("{count} blocking queries were not held within 10 s"))
            .expect("the fixture is alive");
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().expect("state lock")
    }

    /// Releases the state and wakes blocking queries.
    fn publish(&self, state: MutexGuard<'_, State>, index: u64) {
        drop(state);
        self.shared.changed.send_replace(index);
    }

    fn stop_listening(&self) {
        self.shared.listener.lock().expect("listener lock").take();
        self.shared.generation.send_modify(|g| *g += 1);
    }

    fn listen_again(&self) {
        let mut slot = self.shared.listener.lock().expect("listener lock");
        if slot.is_some() {
            return;
        }
        let _runtime = self.runtime.enter();
        let std_listener = std::net::TcpListener::bind(self.addr)
            .unwrap_or_else(|e| panic!("the Consul fixture cannot listen on {} again: {e}", self.addr));
        std_listener.set_nonblocking(true).expect("a non-blocking listener");
        *slot = Some(TcpListener::from_std(std_listener).expect("register the listener with tokio"));
        drop(slot);
        self.runtime.spawn(accept_loop(Arc::clone(&self.shared), self.shared.generation.subscribe()));
    }
}

impl Drop for ConsulFixture {
    fn drop(&mut self) {
        self.stop_listening();
    }
}

async fn accept_loop(shared: Arc<Shared>, mut generation: watch::Receiver<u64>) {
    loop {
        let accepted = tokio::select! {
            _ = generation.changed() => return,
            accepted = poll_fn(|cx| match shared.listener.lock().expect("listener lock").as_ref() {
                Some(listener) => listener.poll_accept(cx).map(Some),
                None => Poll::Ready(None),
            }) => accepted,
        };
        let stream = match accepted {
            None => return,
            Some(Ok((stream, _))) => stream,
            Some(Err(_)) => continue,
        };
        let mut kill = shared.generation.subscribe();
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, Infallible>(handle(&shared, request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                // Dropping the connection closes the socket: the client sees it go.
                _ = kill.changed() => {}
            }
        });
    }
}

/// Counts a request in flight for as long as it lives.
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> Self {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts a blocking query held for as long as it waits.
struct Held<'a>(&'a Shared);

impl<'a> Held<'a> {
    fn enter(shared: &'a Shared) -> Self {
        shared.held.send_modify(|held| *held += 1);
        Self(shared)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.held.send_modify(|held| *held -= 1);
    }
}

async fn handle(shared: &Shared, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let _in_flight = InFlight::enter(shared);
    let method = request.method().clone();
    let path = percent_decode(request.uri().path());
    let raw_query = request.uri().query().unwrap_or("").to_owned();
    let query = parse_query(&raw_query);
    let token = request.headers().get("X-Consul-Token").and_then(|v| v.to_str().ok()).map(str::to_owned);
    shared.log.lock().expect("log lock").push(RecordedRequest {
        method: method.to_string(),
        path: path.clone(),
        query: raw_query,
        token: token.clone(),
    });

    let failure = *shared.failure.lock().expect("failure lock");
    match failure {
        Some(Failure::Delay(delay)) => tokio::time::sleep(delay).await,
        Some(Failure::Status500) => return text(StatusCode::INTERNAL_SERVER_ERROR, NO_LEADER),
        Some(Failure::MalformedJson) => return json_text(StatusCode::OK, MALFORMED_BODY.to_owned(), Some(1)),
        Some(Failure::Refuse) | None => {}
    }
    let verbatim = shared.verbatim.lock().expect("verbatim lock").get(&(method.to_string(), path.clone())).cloned();
    if let Some((status, body)) = verbatim {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return json_text(status, body, Some(1));
    }
    let required = shared.token.lock().expect("token lock").clone();
    if let Some(required) = required {
        match token {
            None => return text(StatusCode::FORBIDDEN, "Permission denied"),
            Some(token) if token != required => return text(StatusCode::FORBIDDEN, "ACL not found"),
            Some(_) => {}
        }
    }
    if query.get("dc").is_some_and(|dc| dc != DATACENTER) {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "No path to datacenter");
    }
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return text(StatusCode::BAD_REQUEST, "Request decode failed: the body ended early"),
    };
    route(shared, &method, &path, &query, &body).await
}

async fn route(
    shared: &Shared,
    method: &Method,
    path: &str,
    query: &BTreeMap<String, String>,
    body: &[u8],
) -> Response<Full<Bytes>> {
    if let Some(key) = path.strip_prefix("/v1/kv/") {
        let recurse = query.contains_key("recurse");
        return match *method {
            Method::GET => {
                let key = key.to_owned();
                blocking_read(shared, query, move |state| {
                    let index = state.kv_read_index(&key, recurse);
                    let entries: Vec<Value> = state
                        .kv
                        .iter()
                        .filter(|(k, _)| if recurse { k.starts_with(&key) } else { **k == key })
                        .map(|(k, e)| state.render_kv(k, e))
                        .collect();
                    if entries.is_empty() {
                        (StatusCode::NOT_FOUND, index, String::new())
                    } else {
                        (StatusCode::OK, index, Value::Array(entries).to_string())
                    }
                })
                .await
            }
            Method::PUT => {
                if key.is_empty() {
                    return text(StatusCode::BAD_REQUEST, "Missing key name");
                }
                let flags = query.get("flags").and_then(|f| f.parse().ok()).unwrap_or(0);
                let mut state = shared.state.lock().expect("state lock");
                let index = state.put(key, body, flags);
                drop(state);
                shared.changed.send_replace(index);
                json_text(StatusCode::OK, "true".into(), None)
            }
            Method::DELETE => {
                let mut state = shared.state.lock().expect("state lock");
                let deleted = state.delete(key, recurse);
                drop(state);
                if let Some(index) = deleted {
                    shared.changed.send_replace(index);
                }
                json_text(StatusCode::OK, "true".into(), None)
            }
            _ => method_not_allowed(method),
        };
    }
    if path == "/v1/agent/service/register" {
        if *method != Method::PUT {
            return method_not_allowed(method);
        }
        return register(shared, body);
    }
    if let Some(id) = path.strip_prefix("/v1/agent/service/deregister/") {
        if *method != Method::PUT {
            return method_not_allowed(method);
        }
        let mut state = shared.state.lock().expect("state lock");
        let Some(instance) = state.instances.remove(&(AGENT_NODE.to_owned(), id.to_owned())) else {
            return text(StatusCode::NOT_FOUND, &format!("Unknown service {id:?}"));
        };
        let index = state.bump();
        state.touch_service(&instance.service, index);
        drop(state);
        shared.changed.send_replace(index);
        return json_text(StatusCode::OK, String::new(), None);
    }
    if path == "/v1/catalog/services" {
        if *method != Method::GET {
            return method_not_allowed(method);
        }
        return blocking_read(shared, query, |state| {
            let mut services: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
            for instance in state.instances.values() {
                services.entry(&instance.service).or_default().extend(instance.tags.iter().map(String::as_str));
            }
            (StatusCode::OK, state.catalog_index.max(1), json!(services).to_string())
        })
        .await;
    }
    if let Some(service) = path.strip_prefix("/v1/health/service/") {
        if *method != Method::GET {
            return method_not_allowed(method);
        }
        let service = service.to_owned();
        return blocking_read(shared, query, move |state| {
            let entries: Vec<Value> = state
                .instances
                .iter()
                .filter(|(_, i)| i.service == service)
                .map(|((node, _), instance)| state.render_entry(node, instance))
                .collect();
            let index = state.service_index.get(&service).copied().unwrap_or(state.catalog_index).max(1);
            (StatusCode::OK, index, Value::Array(entries).to_string())
        })
        .await;
    }
    text(StatusCode::NOT_FOUND, "404 page not found")
}

/// `PUT /v1/agent/service/register`: the service runs on the agent's node; a registration
/// with the id of an existing one replaces it (keeping its checks unless new ones are given).
fn register(shared: &Shared, body: &[u8]) -> Response<Full<Bytes>> {
    let registration: Value = match serde_json::from_slice(body) {
        Ok(Value::Object(object)) => Value::Object(object),
        Ok(_) => return text(StatusCode::BAD_REQUEST, "Request decode failed: not a JSON object"),
        Err(e) => return text(StatusCode::BAD_REQUEST, &format!("Request decode failed: {e}")),
    };
    let string = |field: &str| registration.get(field).and_then(Value::as_str).unwrap_or("").to_owned();
    let name = string("Name");
    if name.is_empty() {
        return text(StatusCode::BAD_REQUEST, "Missing service name");
    }
    let id = Some(string("ID")).filter(|id| !id.is_empty()).unwrap_or_else(|| name.clone());
    let tags: Vec<String> = registration
        .get("Tags")
        .and_then(Value::as_array)
        .map(|tags| tags.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    let meta: BTreeMap<String, String> = registration
        .get("Meta")
        .and_then(Value::as_object)
        .map(|meta| meta.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned()))).collect())
        .unwrap_or_default();
    let port = match registration.get("Port").map(Value::as_u64) {
        None => 0,
        Some(Some(port)) if port <= u64::from(u16::MAX) => port as u16,
        Some(_) => return text(StatusCode::BAD_REQUEST, "Request decode failed: Port is not a port number"),
    };
    let proxy = registration.get("Proxy").and_then(|p| serde_json::from_value::<ServiceProxy>(p.clone()).ok());

    let mut state = shared.state.lock().expect("state lock");
    let index = state.bump();
    let definitions: Vec<&Value> = match (registration.get("Check"), registration.get("Checks")) {
        (_, Some(Value::Array(checks))) => checks.iter().collect(),
        (Some(check @ Value::Object(_)), _) => vec![check],
        _ => Vec::new(),
    };
    let numbered = definitions.len() > 1 || registration.get("Checks").is_some();
    let checks: Vec<Check> = definitions
        .iter()
        .enumerate()
        .map(|(i, definition)| {
            let field = |f: &str| definition.get(f).and_then(Value::as_str).unwrap_or("").to_owned();
            let kind = ["TTL", "HTTP", "TCP", "GRPC", "Args"]
                .iter()
                .find(|f| definition.get(**f).is_some())
                .map_or("", |f| match *f {
                    "Args" => "script",
                    other => other,
                })
                .to_ascii_lowercase();
            Check {
                check_id: Some(field("CheckID")).filter(|c| !c.is_empty()).unwrap_or_else(|| {
                    if numbered { format!("service:{id}:{}", i + 1) } else { format!("service:{id}") }
                }),
                name: Some(field("Name"))
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| format!("Service '{name}' check")),
                // Consul starts a check critical unless its definition says otherwise.
                status: serde_json::from_value(json!(field("Status")))
                    .ok()
                    .filter(|_| !field("Status").is_empty())
                    .unwrap_or(CheckStatus::Critical),
                output: String::new(),
                kind,
                create_index: index,
                modify_index: index,
            }
        })
        .collect();
    let key = (AGENT_NODE.to_owned(), id.clone());
    let (create_index, kept_checks) = match state.instances.remove(&key) {
        Some(previous) => (previous.create_index, previous.checks),
        None => (index, Vec::new()),
    };
    let instance = Instance {
        id,
        service: name.clone(),
        tags,
        meta,
        address: string("Address"),
        port,
        kind: string("Kind"),
        proxy,
        checks: if definitions.is_empty() { kept_checks } else { checks },
        create_index,
        modify_index: index,
    };
    state.instances.insert(key, instance);
    state.touch_service(&name, index);
    drop(state);
    shared.changed.send_replace(index);
    json_text(StatusCode::OK, String::new(), None)
}

/// Serves a read, blocking when the query names an `index`: the answer is held until `read`
/// reports an index past it or the wait elapses.
async fn blocking_read(
    shared: &Shared,
    query: &BTreeMap<String, String>,
    read: impl Fn(&State) -> (StatusCode, u64, String),
) -> Response<Full<Bytes>> {
    let min_index: u64 = query.get("index").and_then(|i| i.parse().ok()).unwrap_or(0);
    let wait = query.get("wait").and_then(|w| parse_go_duration(w)).unwrap_or(DEFAULT_WAIT).min(MAX_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // Subscribed before reading, so a write between the read and the wait is not missed.
        let mut changed = shared.changed.subscribe();
        let (status, index, body) = read(&shared.state.lock().expect("state lock"));
        if min_index == 0 || index > min_index || tokio::time::Instant::now() >= deadline {
            return json_text(status, body, Some(index));
        }
        let _held = Held::enter(shared);
        tokio::select! {
            _ = changed.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

fn method_not_allowed(method: &Method) -> Response<Full<Bytes>> {
    text(StatusCode::METHOD_NOT_ALLOWED, &format!("method {method} not allowed"))
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    respond(status, "text/plain; charset=utf-8", body.to_owned(), None)
}

fn json_text(status: StatusCode, body: String, index: Option<u64>) -> Response<Full<Bytes>> {
    respond(status, "application/json", body, index)
}

fn respond(status: StatusCode, content_type: &'static str, body: String, index: Option<u64>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(index) = index {
        headers.insert("X-Consul-Index", HeaderValue::from(index));
        headers.insert("X-Consul-Knownleader", HeaderValue::from_static("true"));
        headers.insert("X-Consul-Lastcontact", HeaderValue::from_static("0"));
    }
    response
}

/// Decodes `%XX` escapes, as Go's `URL.Path` does.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| char::from(b).to_digit(16);
            if let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(u8::try_from(high * 16 + low).unwrap_or(b'?'));
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(&value.replace('+', " ")))
        })
        .collect()
}

/// Go's `time.ParseDuration` for the units a wait uses (`ns`, `us`, `ms`, `s`, `m`, `h`,
/// combined as in `1m30s`).
fn parse_go_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += Duration::from_secs_f64(number * seconds);
        rest = &rest[unit_len..];
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_as_consul_reads_wait() {
        assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("10"), None);
    }

    #[test]
    fn paths_are_percent_decoded() {
        assert_eq!(percent_decode("/v1/kv/a%20b/c%2Fd"), "/v1/kv/a b/c/d");
        assert_eq!(percent_decode("/bad%zz%4"), "/bad%zz%4");
    }
}
