//! The producer pool against the real broker (`scripts/broker.sh start` first).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use onex_runtime::kafka::{KafkaPoolSettings, KafkaProducerPool, ProduceRecord};
use onex_runtime::models::health::HealthStatus;
use onex_runtime::models::kafka::KafkaProducerConfig;
use onex_tests::kafka::{TestTopic, bootstrap};
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

const MESSAGES: u32 = 100_000;

fn pool(name: &str) -> KafkaProducerPool {
    let config = KafkaProducerConfig::new(bootstrap());
    assert!(config.enable_idempotence && config.acks == "all", "defaults must be the safe ones");
    KafkaProducerPool::new(KafkaPoolSettings { pool_name: name.into(), ..Default::default() }, config).unwrap()
}

/// A consumer of every partition of `topic` (`partitions` of them) from the beginning.
fn reader(topic: &str, partitions: i32) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", format!("reader-{topic}"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&assignment).unwrap();
    consumer
}

/// Reads every message of `topic` (all `partitions`) from the beginning until `expected`
/// arrived or 120 s passed, and returns the payloads' sequence numbers.
fn read_back(topic: &str, partitions: i32, expected: usize) -> Vec<u32> {
    let consumer = reader(topic, partitions);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::with_capacity(expected);
    while seen.len() < expected && Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message.unwrap();
            let payload = message.payload().unwrap();
            seen.push(u32::from_be_bytes(payload[..4].try_into().unwrap()));
        }
    }
    // Anything extra would show up within a short grace period.
    let grace = Instant::now() + Duration::from_secs(1);
    while Instant::now() < grace {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let payload = message.unwrap().payload().unwrap().to_vec();
            seen.push(u32::from_be_bytes(payload[..4].try_into().unwrap()));
        }
    }
    seen
}

fn payload(i: u32) -> [u8; 100] {
    let mut bytes = [b'x'; 100];
    bytes[..4].copy_from_slice(&i.to_be_bytes());
    bytes
}

fn assert_exactly_once(seen: &[u32], n: u32) {
    let unique: HashSet<u32> = seen.iter().copied().collect();
    assert_eq!(unique.len(), n as usize, "distinct messages read back");
    assert_eq!(seen.len(), n as usize, "duplicates read back");
    assert!(unique.iter().all(|i| *i < n));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_messages_arrive_exactly_once() {
    let topic = TestTopic::create("exactly-once", 3).await;
    let pool = pool("exactly-once");
    let mut deliveries = Vec::with_capacity(MESSAGES as usize);
    for i in 0..MESSAGES {
        let bytes = payload(i);
        let key = i.to_be_bytes();
        deliveries.push(pool.send(ProduceRecord::new(&topic.name, &bytes).key(&key), None).await.unwrap());
    }
    let mut offsets = HashSet::new();
    for delivery in deliveries {
        let delivered = delivery.await.unwrap();
        assert!(offsets.insert((delivered.partition, delivered.offset)), "two messages share {delivered:?}");
    }
    let stats = pool.stats();
    assert_eq!(stats.total_messages_sent, u64::from(MESSAGES));
    assert_eq!(stats.total_messages_failed, 0);
    assert_eq!(stats.topics[&topic.name].bytes, u64::from(MESSAGES) * 100);
    assert_eq!(stats.queue_depth, 0);
    assert!(stats.p99_delivery_ms >= stats.p50_delivery_ms && stats.p50_delivery_ms > 0.0, "{stats:?}");
    assert_eq!(stats.pool_health, HealthStatus::Healthy);
    assert_eq!(stats.total_producers, 1, "one shared producer per configuration");
    let seen = tokio::task::spawn_blocking({
        let name = topic.name.clone();
        move || read_back(&name, 3, MESSAGES as usize)
    })
    .await
    .unwrap();
    assert_exactly_once(&seen, MESSAGES);
    pool.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_right_after_enqueueing_delivers_everything() {
    let topic = TestTopic::create("shutdown", 3).await;
    let pool = pool("shutdown");
    for i in 0..MESSAGES {
        pool.enqueue(ProduceRecord::new(&topic.name, &payload(i)), None).await.unwrap();
    }
    assert!(pool.stats().queue_depth > 0, "shutdown must find messages still in flight");
    let report = pool.shutdown().await.unwrap();
    assert_eq!(report.undelivered, 0);
    let stats = pool.stats();
    assert_eq!(stats.total_messages_sent, u64::from(MESSAGES), "{stats:?}");
    let seen = tokio::task::spawn_blocking({
        let name = topic.name.clone();
        move || read_back(&name, 3, MESSAGES as usize)
    })
    .await
    .unwrap();
    assert_exactly_once(&seen, MESSAGES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_probes_the_broker() {
    let topic = TestTopic::create("health", 1).await;
    let pool = pool("health");
    pool.publish(ProduceRecord::new(&topic.name, b"ping"), None).await.unwrap();
    let health = pool.health_check().await;
    assert_eq!(health.status, HealthStatus::Healthy, "{:?}", health.errors);
    assert_eq!(health.component, "kafka");
    assert_eq!(health.metrics["total_messages_sent"], 1);

    let unreachable = KafkaProducerConfig { delivery_timeout_ms: 2_000, ..KafkaProducerConfig::new("127.0.0.1:1") };
    let settings = KafkaPoolSettings { shutdown_timeout: Duration::from_secs(1), ..Default::default() };
    let dead = KafkaProducerPool::new(settings, unreachable).unwrap();
    let health = dead.health_check().await;
    assert_eq!(health.status, HealthStatus::Unhealthy);
    assert!(!health.errors.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_keeps_its_key_value_partition_and_headers() {
    use rdkafka::message::Headers;
    let topic = TestTopic::create("fields", 3).await;
    let pool = pool("fields");
    let headers = onex_runtime::kafka::headers([("traceparent", "00-abc-01"), ("tenant", "t1"), ("tenant", "t2")]);
    let with_all = pool.publish(ProduceRecord::new(&topic.name, b"value").key(b"key").partition(2), Some(headers));
    let delivered = with_all.await.unwrap();
    assert_eq!(delivered.partition, 2);
    let tombstone = pool.publish(ProduceRecord::tombstone(&topic.name).key(b"gone").partition(1), None).await.unwrap();
    assert_eq!(tombstone.partition, 1);
    // Two topics on one producer: each send names its own.
    let other = TestTopic::create("fields-other", 1).await;
    pool.publish(ProduceRecord::new(&other.name, b"elsewhere"), None).await.unwrap();
    assert_eq!(pool.stats().topics[&other.name].sent, 1);
    assert_eq!(pool.stats().topics[&topic.name].sent, 2);

    let name = topic.name.clone();
    let messages = tokio::task::spawn_blocking(move || {
        let consumer = reader(&name, 3);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut messages = Vec::new();
        while messages.len() < 2 && Instant::now() < deadline {
            if let Some(message) = consumer.poll(Duration::from_millis(200)) {
                messages.push(message.unwrap().detach());
            }
        }
        messages
    })
    .await
    .unwrap();
    assert_eq!(messages.len(), 2);
    let full = messages.iter().find(|m| m.partition() == 2).expect("the message sent to partition 2");
    assert_eq!((full.key(), full.payload()), (Some(&b"key"[..]), Some(&b"value"[..])));
    let read: Vec<(String, Vec<u8>)> = full
        .headers()
        .expect("headers")
        .iter()
        .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
        .collect();
    let expected = [("traceparent", &b"00-abc-01"[..]), ("tenant", b"t1"), ("tenant", b"t2")];
    assert_eq!(read, expected.map(|(k, v)| (k.to_owned(), v.to_vec())));
    let gone = messages.iter().find(|m| m.partition() == 1).expect("the tombstone");
    assert_eq!((gone.key(), gone.payload()), (Some(&b"gone"[..]), None));
    pool.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_name_librdkafka_cannot_take_is_refused_without_losing_the_slot() {
    let pool = pool("bad-topic");
    let err = pool.publish(ProduceRecord::new("nul\0inside", b"x"), None).await.unwrap_err();
    assert_eq!(err.code(), onex_runtime::ErrorCode::ValidationError, "{err}");
    assert!(err.message().contains("NUL"), "{err}");
    assert_eq!(pool.stats().queue_depth, 0);
    pool.shutdown().await.unwrap();
}
