//! Driving a node host from a test: topics of its own (a unique `OMNINODE_CONTEXT`), requests
//! sent as a requester would, and the answers read back from the result topics.

use std::collections::BTreeMap;
use std::time::Duration;

use onex_host::config::{HostConfig, NodeSelection};
use onex_host::routes::Routes;
use onex_host::{Host, HostReport};
use onex_runtime::environment::MapEnv;
use onex_runtime::event::OnexEvent;
use onex_runtime::event_bus::{EncodedEvent, TopicNamer};
use onex_runtime::{NodeContract, NodeRegistry};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use uuid::Uuid;

use crate::kafka::{bootstrap, ensure_topic, read_events, read_messages};

/// The environment of one test's hosts: the test broker, and a topic context no other test uses.
pub fn host_env(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let context = format!("t{}", &Uuid::new_v4().simple().to_string()[..12]);
    let mut env: BTreeMap<String, String> = [
        ("REDPANDA_BOOTSTRAP_SERVERS".to_owned(), bootstrap()),
        ("OMNINODE_CONTEXT".to_owned(), context),
        ("KAFKA_DELIVERY_TIMEOUT_MS".to_owned(), "10000".to_owned()),
    ]
    .into_iter()
    .collect();
    env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    env
}

/// The topics `node` is served on under `env`.
pub fn routes_in(env: &BTreeMap<String, String>, registry: &NodeRegistry, node: &str) -> Routes {
    let namer = TopicNamer::from_env(&MapEnv(env.clone())).expect("topic namer");
    let contract: &NodeContract = registry.find(node, None).expect("node registered").contract;
    Routes::of(contract, &namer)
}

/// Creates the request topics (`partitions` each) and the answer and dead-letter topics.
pub async fn create_topics(routes: &Routes, partitions: i32) {
    for topic in &routes.requests {
        ensure_topic(topic, partitions).await;
    }
    for topic in [&routes.completed, &routes.failed, &routes.dead_letter] {
        ensure_topic(topic, 1).await;
    }
}

/// A request for a node: `payload` as the envelope's payload, a fresh correlation id.
pub fn request(payload: serde_json::Value) -> OnexEvent {
    OnexEvent::new("host.request", "onex-tests", Uuid::new_v4(), payload)
}

/// Sends requests as a requester does: key = correlation id, value = the envelope.
pub struct Requester {
    producer: FutureProducer,
}

impl Default for Requester {
    fn default() -> Self {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .set("linger.ms", "5")
            .create()
            .expect("requester producer");
        Self { producer }
    }
}

impl Requester {
    /// Sends `event` to `topic` and waits for the broker's acknowledgement.
    pub async fn send(&self, topic: &str, event: &OnexEvent) {
        let encoded = EncodedEvent::new(&TopicNamer::default(), event).expect("encode request");
        self.send_raw(topic, Some(encoded.key.as_bytes()), &encoded.value).await;
    }

    /// Sends arbitrary bytes to `topic`.
    pub async fn send_raw(&self, topic: &str, key: Option<&[u8]>, value: &[u8]) {
        let mut record = FutureRecord::to(topic).payload(value);
        if let Some(key) = key {
            record = record.key(key);
        }
        self.producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).expect("request sent");
    }
}

/// Reads the answers on `topic` until `expected` arrived or `within` passed.
pub async fn answers(topic: &str, expected: usize, within: Duration) -> Vec<OnexEvent> {
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || read_events(&topic, expected, within)).await.expect("reader")
}

/// A host configuration serving `node` alone, in a consumer group no other test joins, with
/// `/metrics` on an ephemeral loopback port.
pub fn serving(node: &str) -> HostConfig {
    let mut config = HostConfig::serving(vec![NodeSelection { name: node.to_owned(), version: None }]);
    config.group_id = format!("host-test-{}", Uuid::new_v4().simple());
    config.http = Some("127.0.0.1:0".parse().expect("a loopback address"));
    config
}

/// An in-process host serving one node of the generated registry on topics of its own.
pub struct TestHost {
    /// The running host.
    pub host: Host,
    /// The node's topics.
    pub routes: Routes,
    /// The environment it runs in (its topic context included).
    pub env: BTreeMap<String, String>,
    requester: Requester,
}

impl TestHost {
    /// Creates the topics of `node` (requests on `partitions` partitions) and of the events
    /// `event_types` its services publish, then starts a host serving it under `env`.
    pub async fn start(node: &str, env: BTreeMap<String, String>, partitions: i32, event_types: &[&str]) -> Self {
        let registry = onex_generated::registry();
        let routes = routes_in(&env, &registry, node);
        create_topics(&routes, partitions).await;
        for event_type in event_types {
            ensure_topic(&event_topic(&env, event_type), 1).await;
        }
        let started = std::time::Instant::now();
        let host = Host::start(serving(node), &registry, &MapEnv(env.clone()))
            .await
            .unwrap_or_else(|e| panic!("the host cannot serve {node}: {e}"));
        eprintln!("host serving {node} started in {:?}", started.elapsed());
        Self { host, routes, env, requester: Requester::default() }
    }

    /// Sends `request` to the node's request topic.
    pub async fn send(&self, request: &OnexEvent) {
        self.requester.send(&self.routes.requests[0], request).await;
    }

    /// The answer to `request` on `topic`, which then holds `count` answers; panics with
    /// what arrived when it is not among them within 60 s.
    pub async fn answer(&self, topic: &str, request: &OnexEvent, count: usize) -> OnexEvent {
        let started = std::time::Instant::now();
        let arrived = answers(topic, count, Duration::from_secs(60)).await;
        let id = request.event_id.to_string();
        let answer = arrived
            .iter()
            .find(|a| a.metadata.extra.get("request_event_id").and_then(|v| v.as_str()) == Some(id.as_str()))
            .cloned()
            .unwrap_or_else(|| panic!("no answer to {id} on {topic} within 60 s; arrived: {arrived:?}"));
        eprintln!("answer to {} read after {:?}", request.payload, started.elapsed());
        answer
    }

    /// The answer with the node's output to `request`, the `count`th output so far.
    pub async fn completed(&self, request: &OnexEvent, count: usize) -> OnexEvent {
        self.answer(&self.routes.completed, request, count).await
    }

    /// The failure answered to `request`, the `count`th failure so far.
    pub async fn failed(&self, request: &OnexEvent, count: usize) -> OnexEvent {
        self.answer(&self.routes.failed, request, count).await
    }

    /// The topic the node's event bus publishes `event_type` on.
    pub fn event_topic(&self, event_type: &str) -> String {
        event_topic(&self.env, event_type)
    }

    /// Stops the host and returns its report.
    pub async fn stop(self) -> HostReport {
        self.host.shutdown().await.expect("the host stops")
    }
}

/// The topic of `event_type` under `env`, as the host's event bus names it.
pub fn event_topic(env: &BTreeMap<String, String>, event_type: &str) -> String {
    let namer = TopicNamer::from_env(&MapEnv(env.clone())).expect("topic namer");
    namer.topic_for(event_type).expect("an event type with a topic")
}

/// One Kafka record as a consumer sees it.
#[derive(Debug, Clone)]
pub struct Record {
    /// Its partition.
    pub partition: i32,
    /// Its offset there.
    pub offset: i64,
    /// Its key, if any.
    pub key: Option<Vec<u8>>,
    /// Its value (empty for a tombstone).
    pub value: Vec<u8>,
    /// Its headers, in order, values as text.
    pub headers: Vec<(String, String)>,
}

/// The records of every partition of `topic`, from the beginning, until `expected` arrived or
/// `within` passed, then one more second for extras.
pub async fn records(topic: &str, expected: usize, within: Duration) -> Vec<Record> {
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || read_records(&topic, expected, within)).await.expect("reader")
}

fn read_records(topic: &str, expected: usize, within: Duration) -> Vec<Record> {
    use rdkafka::Message;
    use rdkafka::message::Headers;

    read_messages(topic, expected, within, |message| Record {
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        headers: message.headers().map_or_else(Vec::new, |headers| {
            headers
                .iter()
                .map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
                .collect()
        }),
    })
}
