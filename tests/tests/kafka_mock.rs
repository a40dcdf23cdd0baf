//! Injected broker errors on rdkafka's in-process MockCluster: how the pool surfaces them and
//! how the bus retries (attempt counts and recorded backoff delays, no wall-clock asserts).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use onex_runtime::ErrorCode;
use onex_runtime::environment::Environment;
use onex_runtime::event::OnexEvent;
use onex_runtime::event_bus::{KafkaEventBus, RateLimitRule, Sleeper, TopicNamer};
use onex_runtime::kafka::error::kafka_error_name;
use onex_runtime::kafka::{KafkaPoolSettings, KafkaProducerPool, ProduceRecord};
use onex_runtime::models::health::HealthStatus;
use onex_runtime::models::kafka::KafkaProducerConfig;
use onex_runtime::node::BoxFuture;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use uuid::Uuid;

type Mock = MockCluster<'static, DefaultProducerContext>;

/// Records the delays the bus asks for instead of sleeping.
#[derive(Default)]
struct RecordingSleeper(Mutex<Vec<Duration>>);

impl Sleeper for RecordingSleeper {
    fn sleep(&self, delay: Duration) -> BoxFuture<'_, ()> {
        self.0.lock().unwrap().push(delay);
        Box::pin(async {})
    }
}

impl RecordingSleeper {
    fn clear(&self) {
        self.0.lock().unwrap().clear();
    }

    fn delays_ms(&self) -> Vec<u128> {
        self.0.lock().unwrap().iter().map(Duration::as_millis).collect()
    }
}

fn mock_with_topic(topic: &str) -> Mock {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic(topic, 1, 1).unwrap();
    mock
}

fn pool(mock: &Mock, delivery_timeout_ms: u32) -> KafkaProducerPool {
    let config = KafkaProducerConfig {
        delivery_timeout_ms,
        request_timeout_ms: delivery_timeout_ms.min(30_000),
        max_request_size: 10_000,
        ..KafkaProducerConfig::new(mock.bootstrap_servers())
    };
    KafkaProducerPool::new(KafkaPoolSettings { health_window: Duration::from_secs(3600), ..Default::default() }, config)
        .unwrap()
}

fn bus(pool: KafkaProducerPool) -> (KafkaEventBus, Arc<RecordingSleeper>) {
    let sleeper = Arc::new(RecordingSleeper::default());
    let bus = KafkaEventBus::new(Arc::new(pool), TopicNamer::default()).with_sleeper(sleeper.clone());
    (bus, sleeper)
}

const EVENT_TOPIC: &str = "dev.omnibase.onex.evt.mock-happened.v1";

fn event(source: &str) -> OnexEvent {
    OnexEvent::new("mock.happened", source, Uuid::new_v4(), serde_json::json!({"k": "v"}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_leader_and_request_timeouts_are_retried_inside_librdkafka() {
    let mock = mock_with_topic(EVENT_TOPIC);
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        ],
    );
    let (bus, sleeper) = bus(pool(&mock, 10_000));
    bus.publish_event(&event("svc")).await.unwrap();
    assert!(sleeper.delays_ms().is_empty(), "the idempotent producer retried by itself; the bus did not");
    assert_eq!(bus.stats().retries, 0);
    assert_eq!(bus.pool().stats().total_messages_sent, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_too_large_fails_once_without_retries() {
    let mock = mock_with_topic(EVENT_TOPIC);
    let (bus, sleeper) = bus(pool(&mock, 10_000));
    let mut big = event("svc");
    big.payload = serde_json::json!({ "blob": "x".repeat(20_000) });
    let err = bus.publish_event(&big).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ValidationError, "{err}");
    assert_eq!(kafka_error_name(&err), Some("MessageSizeTooLarge"));
    assert_eq!(err.details()["attempts"], 1);
    assert!(sleeper.delays_ms().is_empty());
    assert_eq!(bus.stats().failed, 1);

    // The broker's own refusal (injected) is just as final.
    mock.request_errors(RDKafkaApiKey::Produce, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE]);
    let err = bus.publish_event(&event("svc")).await.unwrap_err();
    assert_eq!(err.details()["attempts"], 1, "{err}");
    assert!(sleeper.delays_ms().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_are_retried_with_exponential_backoff_then_surface() {
    let mock = mock_with_topic(EVENT_TOPIC);
    let (bus, sleeper) = bus(pool(&mock, 1_000));
    bus.publish_event(&event("svc")).await.unwrap();
    sleeper.clear();
    let retries_before = bus.stats().retries;
    let failed_before = bus.pool().stats().total_messages_failed;
    mock.broker_down(1).unwrap();
    let err = bus.publish_event(&event("svc")).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::OperationTimeout, "{err}");
    // librdkafka's own expiry or the pool's watchdog purge, whichever comes first.
    let name = kafka_error_name(&err);
    assert!(matches!(name, Some("MessageTimedOut" | "PurgeQueue")), "{name:?}");
    assert_eq!(err.details()["attempts"], 4, "1 attempt + REDPANDA_MAX_RETRIES (3)");
    assert_eq!(sleeper.delays_ms(), [100, 200, 400]);
    assert_eq!(bus.stats().retries - retries_before, 3);
    let stats = bus.pool().stats();
    assert_eq!(stats.total_messages_failed - failed_before, 4);
    assert_eq!(stats.pool_health, HealthStatus::Unhealthy);

    mock.broker_up(1).unwrap();
    // librdkafka reconnects with backoff; the same pool delivers again once it has.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while let Err(e) = bus.publish_event(&event("svc")).await {
        assert!(std::time::Instant::now() < deadline, "no recovery within 30 s: {e}");
    }
    assert_eq!(bus.pool().stats().total_messages_sent, 2, "one before the outage, one after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_reports_exactly_the_events_that_failed() {
    let mock = mock_with_topic(EVENT_TOPIC);
    let denied_topic = "dev.omnibase.onex.evt.mock-denied.v1";
    mock.create_topic(denied_topic, 1, 1).unwrap();
    mock.topic_error(denied_topic, RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED).unwrap();
    let (bus, sleeper) = bus(pool(&mock, 2_000));
    let denied = OnexEvent::new("mock.denied", "svc", Uuid::new_v4(), serde_json::json!({}));
    let events = vec![event("svc"), denied.clone(), event("svc")];
    let err = bus.publish_events(&events).await.unwrap_err();
    let failed = err.details()["failed_event_ids"].as_array().unwrap().clone();
    assert_eq!(failed, [serde_json::json!(denied.event_id.to_string())], "{err}");
    assert_eq!(err.details()["attempt_rounds"], 1, "authorization failures are not retried");
    assert!(sleeper.delays_ms().is_empty());
    let stats = bus.stats();
    assert_eq!((stats.published, stats.failed), (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_apply_per_caller_and_the_first_request_passes() {
    let mock = mock_with_topic(EVENT_TOPIC);
    let (bus, _sleeper) = bus(pool(&mock, 10_000));
    let bus = bus.with_rate_limit(Some(RateLimitRule { per_minute: 1, burst: 2, penalty: Duration::from_secs(30) }));
    bus.publish_event(&event("caller-a")).await.unwrap();
    bus.publish_event(&event("caller-a")).await.unwrap();
    let err = bus.publish_event(&event("caller-a")).await.unwrap_err();
    assert_eq!(err.details()["reason"], "rate_limited");
    bus.publish_event(&event("caller-b")).await.expect("another caller's first request passes");
    assert_eq!(bus.stats().rate_limited, 1);
    assert_eq!(bus.pool().stats().total_messages_sent, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_pool_reports_injected_failures_in_stats() {
    let mock = mock_with_topic("raw");
    mock.topic_error("raw", RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED).unwrap();
    let pool = pool(&mock, 2_000);
    let err = pool.publish(ProduceRecord::new("raw", b"x"), None).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::IntegrationServiceError, "{err}");
    let stats = pool.stats();
    assert_eq!((stats.total_messages_sent, stats.total_messages_failed), (0, 1));
    assert_eq!(stats.topics["raw"].failed, 1);
    assert_eq!(stats.success_rate, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_producer_never_granted_a_producer_id_is_replaced() {
    let mock = mock_with_topic("stalled");
    // A broker that answers every producer-id request with a retriable error, as tansu does
    // for an epoch bump (UNKNOWN_SERVER_ERROR, code -1): librdkafka would ask again forever.
    let refusals = vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN; 10_000];
    mock.request_errors(RDKafkaApiKey::InitProducerId, &refusals);
    let config =
        KafkaProducerConfig { delivery_timeout_ms: 2_000, ..KafkaProducerConfig::new(mock.bootstrap_servers()) };
    let settings = KafkaPoolSettings { identity_stall_limit: Duration::from_secs(2), ..Default::default() };
    let pool = KafkaProducerPool::new(settings, config).unwrap();

    let err = pool.publish(ProduceRecord::new("stalled", b"x"), None).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::OperationTimeout, "{err}");
    let started = std::time::Instant::now();
    let reason = loop {
        let health = pool.health_check().await;
        if let Some(reason) = health.errors.iter().find(|e| e.contains("waited")) {
            break reason.clone();
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no stall reported: {health:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("stall reported {:?} after the first failure: {reason}", started.elapsed());
    assert!(reason.contains("producer id"), "{reason}");

    mock.clear_request_errors(RDKafkaApiKey::InitProducerId);
    let delivered = pool.publish(ProduceRecord::new("stalled", b"y"), None).await.expect("the replacement delivers");
    assert!(delivered.offset >= 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_oversized_message_among_a_thousand_leaves_the_pool_healthy_and_a_dead_broker_does_not() {
    let mock = mock_with_topic("health");
    let config = KafkaProducerConfig {
        delivery_timeout_ms: 5_000,
        max_request_size: 10_000,
        ..KafkaProducerConfig::new(mock.bootstrap_servers())
    };
    // Production: the strictest threshold (1 %).
    let settings = KafkaPoolSettings {
        environment: Environment::Production,
        health_window: Duration::from_secs(3600),
        ..Default::default()
    };
    let pool = KafkaProducerPool::new(settings, config).unwrap();
    let mut deliveries = Vec::new();
    for i in 0..999u32 {
        deliveries.push(pool.send(ProduceRecord::new("health", &i.to_be_bytes()), None).await.unwrap());
    }
    for delivery in deliveries {
        delivery.await.unwrap();
    }
    let oversized = vec![b'x'; 20_000];
    pool.publish(ProduceRecord::new("health", &oversized), None).await.expect_err("over message.max.bytes");
    let health = pool.health();
    let stats = pool.stats();
    assert_eq!((stats.total_messages_sent, stats.total_messages_failed), (999, 1));
    assert_eq!(health.status, HealthStatus::Healthy, "0.1 % is below production's 1 %: {:?}", health.errors);
    assert_eq!(health.metrics["error_rate_threshold_percent"], 1.0);

    // Eleven more refusals: 12 of 1011 (1.2 %) is above it, and the health says so.
    for _ in 0..11 {
        pool.publish(ProduceRecord::new("health", &oversized), None).await.expect_err("over message.max.bytes");
    }
    let health = pool.health();
    assert_eq!(health.status, HealthStatus::Unhealthy);
    assert!(health.errors.iter().any(|e| e.contains("above the production threshold of 1 %")), "{:?}", health.errors);

    // A broker gone is unhealthy at once, whatever the rate.
    let healthy_again = KafkaProducerPool::new(
        KafkaPoolSettings { environment: Environment::Production, ..Default::default() },
        KafkaProducerConfig { delivery_timeout_ms: 5_000, ..KafkaProducerConfig::new(mock.bootstrap_servers()) },
    )
    .unwrap();
    healthy_again.publish(ProduceRecord::new("health", b"up"), None).await.unwrap();
    assert_eq!(healthy_again.health().status, HealthStatus::Healthy);
    mock.broker_down(1).unwrap();
    let down = std::time::Instant::now();
    while healthy_again.health().status != HealthStatus::Unhealthy {
        assert!(
            down.elapsed() < Duration::from_secs(60),
            "the broker's loss never showed: {:?}",
            healthy_again.health()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("unhealthy {:?} after the broker went down, with no delivery failed", down.elapsed());
    assert_eq!(healthy_again.stats().total_messages_failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_admitted_for_all_its_callers_or_for_none() {
    let mock = mock_with_topic(EVENT_TOPIC);
    let (bus, _sleeper) = bus(pool(&mock, 10_000));
    let bus = bus.with_rate_limit(Some(RateLimitRule { per_minute: 1, burst: 2, penalty: Duration::from_secs(30) }));
    bus.publish_events(&[event("caller-b"), event("caller-b")]).await.expect("b's burst");
    let err = bus.publish_events(&[event("caller-a"), event("caller-b")]).await.unwrap_err();
    assert_eq!(
        (err.details()["reason"].as_str(), err.details()["caller"].as_str()),
        (Some("rate_limited"), Some("caller-b"))
    );
    assert_eq!(bus.stats().rate_limited, 2, "the whole batch was refused");
    bus.publish_events(&[event("caller-a"), event("caller-a")])
        .await
        .expect("a's tokens were not spent on the refused batch");
    assert_eq!(bus.pool().stats().total_messages_sent, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_beyond_the_burst_goes_out_within_the_rate_and_a_larger_one_says_how_to_split_it() {
    let mock = mock_with_topic(EVENT_TOPIC);
    // The default rule: 1,000 events a minute, bursts of 100.
    let (bus, _sleeper) = bus(pool(&mock, 10_000));
    let batch: Vec<OnexEvent> = (0..250).map(|_| event("bulk")).collect();
    let delivered = bus.publish_events(&batch).await.expect("250 events from a full bucket");
    assert_eq!(delivered.len(), 250);
    let err = bus.publish_event(&event("bulk")).await.unwrap_err();
    assert_eq!(err.details()["reason"], "rate_limited", "the batch used the caller's next 9 s: {err}");

    let too_many: Vec<OnexEvent> = (0..1_001).map(|_| event("bigger")).collect();
    let err = bus.publish_events(&too_many).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ValidationError);
    assert!(err.message().contains("split it into batches of at most 1000 events"), "{err}");
    bus.publish_events(&too_many[..1_000]).await.expect("nothing was taken by the refusal");
}
