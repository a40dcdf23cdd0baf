//! Pool lifecycle tests on rdkafka's in-process mock cluster (no external broker).

use std::time::Duration;

use rdkafka::mocking::MockCluster;

use super::*;
use crate::models::health::HealthStatus;
use crate::models::kafka::KafkaProducerConfig;

fn pool_on(
    mock: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    settings: KafkaPoolSettings,
) -> KafkaProducerPool {
    let mut config = KafkaProducerConfig::new(mock.bootstrap_servers());
    config.delivery_timeout_ms = 10_000;
    config.max_in_flight_messages = 16;
    KafkaProducerPool::new(settings, config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_messages_stay_bounded_and_all_arrive() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("bounded", 2, 1).unwrap();
    mock.broker_round_trip_time(1, Duration::from_millis(20)).unwrap();
    let pool = pool_on(&mock, KafkaPoolSettings::default());
    let producer = pool.default_producer_for_test();
    let mut futures = Vec::new();
    let mut peak = 0;
    for i in 0..200u32 {
        let payload = i.to_be_bytes();
        futures.push(pool.send(ProduceRecord::new("bounded", &payload), None).await.unwrap());
        peak = peak.max(producer.in_flight());
    }
    assert!(peak <= 16, "in flight peaked at {peak}");
    assert!(peak >= 8, "backpressure test never filled the window (peak {peak})");
    for f in futures {
        f.await.unwrap();
    }
    let stats = pool.stats();
    assert_eq!(stats.total_messages_sent, 200);
    assert_eq!(stats.queue_depth, 0);
    assert_eq!(stats.topics["bounded"].bytes, 800);
    assert_eq!(stats.pool_health, HealthStatus::Healthy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_error_quarantines_and_replaces_the_producer() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("fatal", 1, 1).unwrap();
    let pool = pool_on(&mock, KafkaPoolSettings::default());
    pool.publish(ProduceRecord::new("fatal", b"before"), None).await.unwrap();
    let first = pool.default_producer_for_test();
    first.inject_fatal_error();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !first.is_quarantined() {
        assert!(std::time::Instant::now() < deadline, "fatal error never reported");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    pool.publish(ProduceRecord::new("fatal", b"after"), None).await.unwrap();
    let second = pool.default_producer_for_test();
    assert_ne!(first.state.id, second.state.id);
    let stats = pool.stats();
    assert_eq!(stats.failed_producers, 1);
    assert_eq!(stats.total_producers, 1);
    let health = pool.health();
    assert!(health.errors.iter().any(|e| e.contains("quarantined")), "{:?}", health.errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_producer_is_quarantined_and_replaced() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("fenced", 1, 1).unwrap();
    let pool = pool_on(&mock, KafkaPoolSettings::default());
    pool.publish(ProduceRecord::new("fenced", b"before"), None).await.unwrap();
    let first = pool.default_producer_for_test();
    mock.request_errors(RDKafkaApiKey::Produce, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED]);
    let err = pool.publish(ProduceRecord::new("fenced", b"refused"), None).await.unwrap_err();
    assert!(err.message().contains("ProducerFenced"), "{err}");
    assert!(first.is_quarantined(), "a fenced producer is not used again");
    pool.publish(ProduceRecord::new("fenced", b"after"), None).await.unwrap();
    let second = pool.default_producer_for_test();
    assert_ne!(first.state.id, second.state.id);
    assert_eq!(pool.stats().failed_producers, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_producers_are_evicted_and_recreated_lazily() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("idle", 1, 1).unwrap();
    let settings = KafkaPoolSettings { idle_timeout: Duration::ZERO, ..Default::default() };
    let pool = pool_on(&mock, settings);
    assert_eq!(pool.stats().total_producers, 0, "creation is lazy");
    pool.publish(ProduceRecord::new("idle", b"x"), None).await.unwrap();
    assert_eq!(pool.stats().total_producers, 1);
    assert_eq!(pool.evict_idle(), 1);
    assert_eq!(pool.stats().total_producers, 0);
    pool.publish(ProduceRecord::new("idle", b"y"), None).await.unwrap();
    assert_eq!(pool.stats().total_producers, 1);
    assert_eq!(pool.stats().total_messages_sent, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_delivers_everything_enqueued_then_refuses() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("drain", 3, 1).unwrap();
    let mut config = KafkaProducerConfig::new(mock.bootstrap_servers());
    config.linger_ms = 50;
    let pool = KafkaProducerPool::new(KafkaPoolSettings::default(), config).unwrap();
    for i in 0..5_000u32 {
        pool.enqueue(ProduceRecord::new("drain", &i.to_be_bytes()), None).await.unwrap();
    }
    let report = pool.shutdown().await.unwrap();
    assert_eq!(report.undelivered, 0);
    assert_eq!(pool.stats().total_messages_sent, 5_000);
    let err = pool.enqueue(ProduceRecord::new("drain", b"late"), None).await.unwrap_err();
    assert_eq!(err.code(), crate::ErrorCode::IntegrationServiceUnavailable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_producers_per_config_share_the_load() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("spread", 1, 1).unwrap();
    let settings = KafkaPoolSettings { producers_per_config: 3, ..Default::default() };
    let pool = pool_on(&mock, settings);
    for _ in 0..6 {
        pool.publish(ProduceRecord::new("spread", b"x"), None).await.unwrap();
    }
    assert_eq!(pool.stats().total_producers, 3);
    let other = KafkaProducerConfig { client_id: Some("other".into()), ..pool.default_config().clone() };
    pool.send_with(&other, ProduceRecord::new("spread", b"y"), None).await.unwrap().await.unwrap();
    assert_eq!(pool.stats().total_producers, 4, "a second configuration gets its own producer, created lazily");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_reported_whole_and_bounded_like_single_sends() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("batch", 2, 1).unwrap();
    mock.broker_round_trip_time(1, Duration::from_millis(20)).unwrap();
    let pool = pool_on(&mock, KafkaPoolSettings::default());
    let batch = pool.batch(200).unwrap();
    let producer = pool.default_producer_for_test();
    let mut peak = 0;
    for i in 0..200u32 {
        let payload = i.to_be_bytes();
        batch.send(i as usize, ProduceRecord::new("batch", &payload), None).await.unwrap();
        peak = peak.max(producer.in_flight());
    }
    assert!(peak <= 16, "in flight peaked at {peak}");
    assert!(batch.wait(Duration::from_secs(10)).await, "every report within the limit");
    let offsets: std::collections::HashSet<(i32, i64)> =
        (0..200).map(|i| batch.outcome(i).expect("reported").map(|d| (d.partition, d.offset)).unwrap()).collect();
    assert_eq!(offsets.len(), 200, "each message has its own offset");
    assert!(batch.outcome(200).is_none(), "out of range");
    let stats = pool.stats();
    assert_eq!((stats.total_messages_sent, stats.queue_depth), (200, 0));
    assert_eq!(stats.topics["batch"].bytes, 800);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_refuses_a_reused_or_missing_index_without_losing_a_slot() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("reuse", 1, 1).unwrap();
    let pool = pool_on(&mock, KafkaPoolSettings::default());
    let batch = pool.batch(1).unwrap();
    batch.send(0, ProduceRecord::new("reuse", b"a"), None).await.unwrap();
    let again = batch.send(0, ProduceRecord::new("reuse", b"b"), None).await.unwrap_err();
    assert!(again.message().contains("already sent"), "{again}");
    let beyond = batch.send(1, ProduceRecord::new("reuse", b"c"), None).await.unwrap_err();
    assert!(beyond.message().contains("out of range"), "{beyond}");
    assert!(batch.wait(Duration::from_secs(10)).await);
    assert!(batch.outcome(0).unwrap().is_ok());
    let producer = pool.default_producer_for_test();
    assert_eq!(producer.in_flight(), 0, "refused sends gave their slots back");
    assert_eq!(pool.stats().total_messages_sent, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_dropped_before_its_reports_still_counts_them() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("dropped", 1, 1).unwrap();
    mock.broker_round_trip_time(1, Duration::from_millis(100)).unwrap();
    let pool = pool_on(&mock, KafkaPoolSettings::default());
    let batch = pool.batch(10).unwrap();
    for i in 0..10 {
        batch.send(i, ProduceRecord::new("dropped", b"x"), None).await.unwrap();
    }
    assert!(!batch.wait(Duration::from_millis(1)).await, "reports cannot be back within 1 ms");
    drop(batch);
    pool.flush(Duration::from_secs(10)).await.unwrap();
    let stats = pool.stats();
    assert_eq!((stats.total_messages_sent, stats.queue_depth), (10, 0));
}

#[test]
fn the_request_timeout_bounds_the_clients_wait_for_an_answer_too() {
    let config = KafkaProducerConfig { request_timeout_ms: 2_000, ..KafkaProducerConfig::new("127.0.0.1:9092") };
    let props = crate::kafka::config::producer_properties(&config).unwrap();
    assert_eq!(props.get("request.timeout.ms"), Some("2000"));
    assert_eq!(props.get("socket.timeout.ms"), Some("2000"), "librdkafka would wait 60 s for a lost answer");
    let long = KafkaProducerConfig { request_timeout_ms: 900_000, ..KafkaProducerConfig::new("127.0.0.1:9092") };
    let props = crate::kafka::config::producer_properties(&long).unwrap();
    assert_eq!(props.get("socket.timeout.ms"), Some("300000"), "librdkafka's largest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_librdkafka_refuses_at_once_fails_with_its_code_with_or_without_headers() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("refused", 1, 1).unwrap();
    let pool = pool_on(&mock, KafkaPoolSettings::default());
    // Once the topic's metadata is known, a partition it does not have is refused by the
    // send itself (`rd_kafka_produce` without headers, `rd_kafka_producev` with them).
    pool.publish(ProduceRecord::new("refused", b"known"), None).await.unwrap();
    let producer = pool.default_producer_for_test();
    for headers in [None, Some(crate::kafka::headers([("h", "v")]))] {
        let with_headers = headers.is_some();
        let err = pool.send(ProduceRecord::new("refused", b"x").partition(7), headers).await.unwrap_err();
        assert_eq!(err.details()["kafka_error"], "UnknownPartition", "headers: {with_headers}");
        assert_eq!(producer.in_flight(), 0, "the refused message gave its slot back");
    }
    pool.publish(ProduceRecord::new("refused", b"after"), None).await.unwrap();
    let stats = pool.stats();
    assert_eq!((stats.total_messages_sent, stats.total_messages_failed, stats.queue_depth), (2, 2, 0));
}
