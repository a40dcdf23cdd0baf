//! `node_kafka_producer_pool_effect` on the pool from the container, against the real broker.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use onex_generated::nodes::node_kafka_producer_pool_effect::v1_0_0::NodeKafkaProducerPoolEffect;
use onex_generated::nodes::node_kafka_producer_pool_effect::v1_0_0::models::{
    EnumKafkaProducerPoolOperation as Op, ModelKafkaMessage, ModelKafkaProducerPoolInput,
};
use onex_runtime::event_bus::EventPublisher;
use onex_runtime::kafka::{KafkaPoolSettings, KafkaProducerPool};
use onex_runtime::models::health::HealthStatus;
use onex_runtime::models::kafka::KafkaProducerConfig;
use onex_runtime::{Container, Context, ErrorCode, Node};
use onex_tests::events::RecordingBus;
use onex_tests::kafka::{TestTopic, bootstrap};

fn input(operation: Op) -> ModelKafkaProducerPoolInput {
    ModelKafkaProducerPoolInput::new(operation)
}

fn node(config: KafkaProducerConfig, bus: Option<Arc<RecordingBus>>) -> NodeKafkaProducerPoolEffect {
    let mut container = Container::new();
    container.register(Arc::new(KafkaProducerPool::new(KafkaPoolSettings::default(), config).unwrap()));
    if let Some(bus) = bus {
        container.register::<dyn EventPublisher>(bus);
    }
    NodeKafkaProducerPoolEffect::new(&container).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_sends_batches_reports_stats_and_closes() {
    let topic = TestTopic::create("node", 2).await;
    let node = node(KafkaProducerConfig::new(bootstrap()), None);

    let mut one = input(Op::SendMessage);
    one.topic = Some(topic.name.clone());
    one.key = Some("k".into());
    one.value = Some(serde_json::json!({"hello": "world"}));
    one.headers = Some(BTreeMap::from([(
        "traceparent".into(),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
    )]));
    let id = uuid::Uuid::new_v4();
    let out = node.process(one, Context::for_request(Some(id)).unwrap()).await.unwrap();
    assert!(out.success, "{out:?}");
    assert_eq!(out.correlation_id, id);
    assert_eq!((out.delivered, out.failed), (Some(1), Some(0)));
    assert!(out.offset.is_some() && out.partition.is_some());

    let mut batch = input(Op::SendBatch);
    batch.messages = Some(
        (0..500)
            .map(|i| ModelKafkaMessage {
                key: Some(format!("key-{i}")),
                ..ModelKafkaMessage::new(topic.name.clone(), serde_json::json!({ "i": i }))
            })
            .collect(),
    );
    let out = node.process(batch, Context::new()).await.unwrap();
    assert!(out.success, "{:?}", out.errors);
    let deliveries = out.deliveries.unwrap();
    assert_eq!(deliveries.len(), 500);
    assert!(deliveries.iter().enumerate().all(|(i, d)| d.index == i as u64 && d.topic == topic.name));
    let positions: HashSet<(u64, u64)> = deliveries.iter().map(|d| (d.partition, d.offset)).collect();
    assert_eq!(positions.len(), 500, "every message has its own offset");

    let stats = node.process(input(Op::GetPoolStats), Context::new()).await.unwrap().pool_stats.unwrap();
    assert_eq!(stats.total_messages_sent, 501);
    assert_eq!(stats.topics[&topic.name].sent, 501);

    let health = node.process(input(Op::HealthCheck), Context::new()).await.unwrap();
    assert_eq!(health.health_status, Some(HealthStatus::Healthy), "{:?}", health.errors);

    let flushed = node.process(input(Op::Flush), Context::new()).await.unwrap();
    assert!(flushed.success);
    let closed = node.process(input(Op::Close), Context::new()).await.unwrap();
    assert!(closed.success);
    assert_eq!(closed.failed, Some(0));

    let mut late = input(Op::SendMessage);
    late.topic = Some(topic.name.clone());
    late.value = Some(serde_json::json!(1));
    let out = node.process(late, Context::new()).await.unwrap();
    assert!(!out.success, "sends after close must fail");
    assert_eq!(out.errors.unwrap()[0].code, ErrorCode::IntegrationServiceUnavailable);
    let mut late_batch = input(Op::SendBatch);
    late_batch.messages = Some(vec![ModelKafkaMessage::new(topic.name.clone(), serde_json::json!(2)); 3]);
    let out = node.process(late_batch, Context::new()).await.unwrap();
    assert!(!out.success, "a batch after close fails in its output");
    assert_eq!((out.delivered, out.failed), (Some(0), Some(3)));
    let errors = out.errors.unwrap();
    assert!(errors.iter().enumerate().all(|(i, e)| e.index == Some(i as u64)
        && e.code == ErrorCode::IntegrationServiceUnavailable
        && e.topic.as_deref() == Some(topic.name.as_str())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_validation_error_and_failures_are_reported() {
    let node = node(KafkaProducerConfig::new(bootstrap()), None);
    let err = node.process(input(Op::SendMessage), Context::new()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ValidationError);
    let err = node.process(input(Op::SendBatch), Context::new()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ValidationError);
    let mut bad = input(Op::SendMessage);
    bad.topic = Some("t".into());
    bad.partition = Some(u64::MAX);
    assert_eq!(node.process(bad, Context::new()).await.unwrap_err().code(), ErrorCode::ValidationError);
    let mut bad = input(Op::Flush);
    bad.timeout_seconds = Some(0.0);
    assert_eq!(node.process(bad, Context::new()).await.unwrap_err().code(), ErrorCode::ValidationError);

    // A message the producer refuses (over message.max.bytes): reported in the output, not raised.
    let mut too_big = input(Op::SendMessage);
    too_big.topic = Some(onex_tests::kafka::unique_topic("too-big"));
    too_big.value = Some(serde_json::json!("x".repeat(2_000_000)));
    let out = node.process(too_big, Context::new()).await.unwrap();
    assert!(!out.success);
    assert_eq!(out.failed, Some(1));
    assert_eq!(out.errors.unwrap()[0].code, ErrorCode::ValidationError);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_changes_are_published_on_the_registered_bus() {
    let topic = TestTopic::create("node-health", 1).await;
    let bus = Arc::new(RecordingBus::default());
    let node = node(KafkaProducerConfig::new(bootstrap()), Some(bus.clone()));
    let mut ok = input(Op::SendMessage);
    ok.topic = Some(topic.name.clone());
    ok.value = Some(serde_json::json!(1));
    assert!(node.process(ok.clone(), Context::new()).await.unwrap().success);
    let first = node.process(input(Op::HealthCheck), Context::new()).await.unwrap();
    assert_eq!(first.health_status, Some(HealthStatus::Healthy));
    assert!(bus.is_empty(), "the first check has nothing to compare with");

    let mut too_big = ok.clone();
    too_big.value = Some(serde_json::json!("x".repeat(2_000_000)));
    assert!(!node.process(too_big, Context::new()).await.unwrap().success);
    let failing = node.process(input(Op::HealthCheck), Context::new()).await.unwrap();
    assert_eq!(failing.health_status, Some(HealthStatus::Unhealthy), "1 of 2 deliveries failed: above 5 %");
    assert!(!failing.errors.unwrap_or_default().is_empty());
    let _ = node.process(input(Op::HealthCheck), Context::new()).await.unwrap();
    {
        let events = bus.events();
        assert_eq!(events.len(), 1, "one change, one event: {events:?}");
        assert_eq!(events[0].event_type, "kafka.pool.health_changed");
        assert_eq!(events[0].payload["status"], "unhealthy");
    }

    let unreachable = KafkaProducerConfig { delivery_timeout_ms: 1_000, ..KafkaProducerConfig::new("127.0.0.1:1") };
    let dead = self::node(unreachable, None);
    let mut send = input(Op::SendMessage);
    send.topic = Some("x".into());
    send.value = Some(serde_json::json!(1));
    let out = dead.process(send, Context::new()).await.unwrap();
    assert!(!out.success);
    assert_eq!(out.errors.unwrap()[0].code, ErrorCode::OperationTimeout);
    let health = dead.process(input(Op::HealthCheck), Context::new()).await.unwrap();
    assert_eq!(health.health_status, Some(HealthStatus::Unhealthy));
}

/// A producer whose broker never answers (nothing listens on port 1): its messages wait for a
/// report until librdkafka's delivery timeout, 15 × these tests' limits (dropping the node
/// waits for that timeout too).
fn unanswered(max_in_flight_messages: u32) -> NodeKafkaProducerPoolEffect {
    let config = KafkaProducerConfig {
        delivery_timeout_ms: 3_000,
        max_in_flight_messages,
        ..KafkaProducerConfig::new("127.0.0.1:1")
    };
    node(config, None)
}

fn message(timeout_seconds: Option<f64>) -> ModelKafkaProducerPoolInput {
    let mut send = input(Op::SendMessage);
    send.topic = Some("unanswered".into());
    send.value = Some(serde_json::json!(1));
    send.timeout_seconds = timeout_seconds;
    send
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_timeout_shorter_than_the_operation_is_a_failed_delivery_in_the_output() {
    let node = unanswered(16);
    let started = std::time::Instant::now();
    let out = node.process(message(Some(0.2)), Context::new()).await.unwrap();
    println!("answered after {:?}", started.elapsed());
    assert!(!out.success);
    assert_eq!(out.failed, Some(1));
    let error = &out.errors.unwrap()[0];
    assert_eq!(error.code, ErrorCode::OperationTimeout);
    assert!(error.message.contains("no delivery report within 200 ms"), "{}", error.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_finds_no_room_within_the_request_timeout_is_reported_as_not_sent() {
    // One message in flight at most: the first takes the only slot and is never reported.
    let node = Arc::new(unanswered(1));
    let first = tokio::spawn({
        let node = Arc::clone(&node);
        async move { node.process(message(Some(60.0)), Context::new()).await }
    });
    // Wait for the event (the first message holds the slot), not for the clock.
    let pool = node.handler().dependencies.kafka_producer_pool.clone();
    while pool.stats().active_producers == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let out = node.process(message(Some(0.2)), Context::new()).await.unwrap();
    assert!(!out.success);
    let error = &out.errors.unwrap()[0];
    assert_eq!(error.code, ErrorCode::OperationTimeout);
    assert!(error.message.contains("had no room within 200 ms; the message was not sent"), "{}", error.message);
    first.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_before_the_request_timeout_ends_the_operation_with_operation_timeout() {
    let node = unanswered(16);
    let ctx = Context::new().with_timeout(std::time::Duration::from_millis(200));
    let err = node.process(message(None), ctx).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::OperationTimeout);
    assert!(err.message().starts_with("node_kafka_producer_pool_effect.send_message did not finish within"), "{err}");
}

/// Every message in flight holds its node future until its report comes, tens of thousands
/// at once under load, so the future's size is memory per message, allocated and copied with
/// it. Each layer that hands the request on keeps a place for it (192 bytes): `async fn`s kept
/// their arguments twice, and an `async` block choosing the handler's method kept one more.
/// Now the request has two places (where `dispatch` receives it, and `send_message`'s future)
/// and the context (104) one. The future was 2,384 bytes in a release build with `async fn`s,
/// 1,888 with the choosing block; a path that adds a layer again fails here.
#[tokio::test]
async fn a_message_in_flight_keeps_no_needless_copy_of_its_request() {
    let node = unanswered(16);
    let pending = node.process(message(None), Context::new());
    let size = std::mem::size_of_val(&pending);
    // 1,680 bytes now: the ceiling leaves room for compiler versions, not for another copy.
    assert!(size <= 1_820, "a send_message future is {size} bytes; does the request path store its request again?");
}
