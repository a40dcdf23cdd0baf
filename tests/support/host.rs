//! Driving a node host from a test: topics of its own (a unique `OMNINODE_CONTEXT`), requests
//! sent as a requester would, and the answers read back from the result topics.

use std::collections::BTreeMap;
use std::time::Duration;

use onex_host::routes::Routes;
use onex_runtime::event::OnexEvent;
use onex_runtime::event_bus::{EncodedEvent, TopicNamer};
use onex_runtime::{NodeContract, NodeRegistry};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use uuid::Uuid;

use crate::kafka::{bootstrap, ensure_topic, read_events};

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
    let namer = TopicNamer::from_env(&onex_runtime::environment::MapEnv(env.clone())).expect("topic namer");
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
