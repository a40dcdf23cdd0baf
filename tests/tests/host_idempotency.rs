//! The node host's answer store (`idempotency: postgres`): a redelivered request to an EFFECT
//! node gets its stored answer again and the node does not run twice, across host restarts;
//! a new request (a new event id) runs.

use std::time::Duration;

use onex_generated::nodes::node_kafka_producer_pool_effect::v1_0_0::models::{
    EnumKafkaProducerPoolOperation as Op, ModelKafkaProducerPoolInput,
};
use onex_host::Host;
use onex_host::config::{HostConfig, NodeSelection};
use onex_runtime::environment::MapEnv;
use onex_tests::host::{Requester, answers, create_topics, host_env, request, routes_in};
use onex_tests::kafka::{TestTopic, count_messages};
use onex_tests::postgres::TestDatabase;

const NODE: &str = "node_kafka_producer_pool_effect";

/// One group for both hosts: the second resumes where the first committed.
fn config(group_id: &str) -> HostConfig {
    let mut config = HostConfig::serving(vec![NodeSelection { name: NODE.to_owned(), version: None }]);
    config.group_id = group_id.to_owned();
    config.http = None;
    config.idempotency = true;
    config
}

/// Messages the node has sent to `topic` (each run of a `send_message` adds one).
async fn sent_to(topic: &str, at_least: usize) -> usize {
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || count_messages(&topic, at_least, Duration::from_secs(20))).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_effect_request_gets_its_stored_answer_without_running_again() {
    let db = TestDatabase::create("host_answers").await;
    let mut env = host_env(&[]);
    env.extend(db.env().0);
    let registry = onex_generated::registry();
    let routes = routes_in(&env, &registry, NODE);
    create_topics(&routes, 1).await;
    let target = TestTopic::create("idempotent-target", 1).await;

    let mut send = ModelKafkaProducerPoolInput::new(Op::SendMessage);
    send.topic = Some(target.name.clone());
    send.key = Some("k".into());
    send.value = Some(serde_json::json!({"n": 1}));
    let first = request(serde_json::to_value(&send).unwrap());
    let requester = Requester::default();
    let group = format!("host-idempotency-{}", uuid::Uuid::new_v4().simple());

    let host = Host::start(config(&group), &registry, &MapEnv(env.clone())).await.expect("host starts");
    requester.send(&routes.requests[0], &first).await;
    requester.send(&routes.requests[0], &first).await;
    let done = answers(&routes.completed, 2, Duration::from_secs(60)).await;
    assert_eq!(done.len(), 2, "{done:?}");
    assert_eq!(done[0].payload, done[1].payload, "the replay is the stored answer");
    assert_eq!(sent_to(&target.name, 1).await, 1, "the node ran once");
    let report = host.shutdown().await.unwrap();
    assert_eq!(
        (report.counters.replayed.get(), report.counters.duplicates.get()),
        (1, 1),
        "{}",
        report.counters.summary()
    );

    // A new host finds the stored answer; a new request runs.
    let host = Host::start(config(&group), &registry, &MapEnv(env)).await.expect("host restarts");
    requester.send(&routes.requests[0], &first).await;
    let second = request(serde_json::to_value(&send).unwrap());
    requester.send(&routes.requests[0], &second).await;
    let done = answers(&routes.completed, 4, Duration::from_secs(60)).await;
    assert_eq!(done.len(), 4, "{done:?}");
    assert_eq!(done.iter().filter(|a| a.correlation_id == first.correlation_id).count(), 3);
    assert_eq!(sent_to(&target.name, 2).await, 2, "only the new request ran");
    let report = host.shutdown().await.unwrap();
    assert_eq!(report.counters.replayed.get(), 1, "{}", report.counters.summary());
}
