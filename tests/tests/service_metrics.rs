//! Every runtime service's own Prometheus series, against the real services: PostgreSQL on
//! 127.0.0.1:5432 and the shared broker on 127.0.0.1:19092 (`scripts/broker.sh start`).
//!
//! Each test does known work through a service registered in a `MetricsRegistry` and reads
//! the exposition text back: the values must be exactly that work.

use std::sync::Arc;
use std::time::{Duration, Instant};

use onex_runtime::ErrorCode;
use onex_runtime::event::OnexEvent;
use onex_runtime::event_bus::{KafkaEventBus, RetryPolicy, TopicNamer};
use onex_runtime::kafka::{KafkaPoolSettings, KafkaProducerPool, ProduceRecord};
use onex_runtime::metrics::MetricsRegistry;
use onex_runtime::models::kafka::KafkaProducerConfig;
use onex_runtime::postgres::PostgresConnectionManager;
use onex_tests::kafka::{bootstrap, create_topic};
use onex_tests::postgres::TestDatabase;
use serde_json::json;
use uuid::Uuid;

/// A port in this test's range with nothing listening: a broker that is down.
const DEAD_BROKER: &str = "127.0.0.1:19119";

/// The value of the sample `series` (name and labels exactly as exposed) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.split(' ').next()?.parse().ok())
}

/// [`sample`], failing the test with the whole exposition when the series is missing.
fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no sample `{series}` in\n{text}"))
}

/// Scrapes `registry` until `check` accepts the text, or fails after `limit`.
async fn scrape_until(registry: &MetricsRegistry, what: &str, limit: Duration, check: impl Fn(&str) -> bool) -> String {
    let started = Instant::now();
    loop {
        let text = registry.encode().expect("encode");
        if check(&text) {
            println!("{what}: after {:?}", started.elapsed());
            return text;
        }
        assert!(started.elapsed() < limit, "timed out waiting for {what}; last scrape:\n{text}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn event(event_type: &str, n: u64) -> OnexEvent {
    OnexEvent::new(event_type, "service_metrics_test", Uuid::new_v4(), json!({ "n": n }))
}

/// A producer pool and an event bus on it, both registered in `registry`, with a topic of its
/// own for `event_type`.
async fn kafka_with_metrics(
    registry: &MetricsRegistry,
    config: KafkaProducerConfig,
    event_type: &str,
) -> (Arc<KafkaProducerPool>, KafkaEventBus, String) {
    let pool = KafkaProducerPool::new(KafkaPoolSettings::default(), config).unwrap().with_metrics(registry).unwrap();
    let pool = Arc::new(pool);
    let namer = TopicNamer::new("dev", &format!("t{}", Uuid::new_v4().simple()), "onex").unwrap();
    let topic = namer.topic_for(event_type).unwrap();
    let bus = KafkaEventBus::new(Arc::clone(&pool), namer).with_rate_limit(None).with_metrics(registry).unwrap();
    (pool, bus, topic)
}

async fn pool_with_metrics(db: &TestDatabase, registry: &MetricsRegistry, max: u32) -> PostgresConnectionManager {
    let mut config = db.config();
    config.min_connections = 1;
    config.max_connections = max;
    PostgresConnectionManager::connect(config).await.expect("connect").with_metrics(registry).expect("metrics")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_series_count_exactly_the_statements_run() {
    let db = TestDatabase::create("metrics").await;
    let registry = MetricsRegistry::new("test");
    let pg = pool_with_metrics(&db, &registry, 4).await;
    // The schema check at connect ran before the registration; the counters include it.
    let at_start = pg.connection_stats();
    const OK: u64 = 25;
    const FAILED: u64 = 3;
    for i in 0..OK {
        assert_eq!(pg.fetch_value("SELECT $1::bigint", &[json!(i)]).await.unwrap(), Some(json!(i)));
    }
    for _ in 0..FAILED {
        let err = pg.execute_query("SELECT * FROM no_such_table", &[]).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::DatabaseQueryError);
    }
    let text = registry.encode().unwrap();
    let env = "environment=\"test\"";
    let ok_before = at_start.total_queries - at_start.failed_queries;
    assert_eq!(value(&text, &format!("onex_postgres_queries_total{{{env},outcome=\"ok\"}}")), (ok_before + OK) as f64);
    assert_eq!(
        value(&text, &format!("onex_postgres_queries_total{{{env},outcome=\"error\"}}")),
        (at_start.failed_queries + FAILED) as f64
    );
    // The duration histogram counts from `with_metrics` on: exactly this test's statements.
    assert_eq!(value(&text, &format!("onex_postgres_query_duration_seconds_count{{{env}}}")), (OK + FAILED) as f64);
    assert_eq!(
        value(&text, &format!("onex_postgres_query_duration_seconds_bucket{{{env},le=\"+Inf\"}}")),
        (OK + FAILED) as f64
    );
    let stats = pg.connection_stats();
    assert_eq!(value(&text, &format!("onex_postgres_acquire_wait_seconds_count{{{env}}}")), stats.checkouts as f64);
    assert_eq!(stats.checkouts, at_start.checkouts + OK + FAILED, "one checkout per statement");
    assert_eq!(value(&text, &format!("onex_postgres_connections{{{env},state=\"in_use\"}}")), 0.0);
    assert_eq!(value(&text, &format!("onex_postgres_connections{{{env},state=\"idle\"}}")), f64::from(stats.idle));
    assert_eq!(value(&text, &format!("onex_postgres_waiting{{{env}}}")), 0.0);
    assert_eq!(value(&text, &format!("onex_postgres_in_flight{{{env}}}")), 0.0);
    pg.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_statement_shows_in_flight_and_its_waiter_in_waiting() {
    let db = TestDatabase::create("metrics").await;
    let registry = MetricsRegistry::new("test");
    let pg = std::sync::Arc::new(pool_with_metrics(&db, &registry, 1).await);
    // The test's own session holds an advisory lock the pool's statement then waits for.
    let admin = db.client().await;
    admin.batch_execute("SELECT pg_advisory_lock(7)").await.unwrap();
    let blocked = tokio::spawn({
        let pg = pg.clone();
        async move { pg.execute_query("SELECT pg_advisory_lock(7), pg_advisory_unlock(7)", &[]).await }
    });
    scrape_until(&registry, "one statement in flight", Duration::from_secs(10), |text| {
        sample(text, "onex_postgres_in_flight{environment=\"test\"}") == Some(1.0)
            && sample(text, "onex_postgres_connections{environment=\"test\",state=\"in_use\"}") == Some(1.0)
    })
    .await;
    // The pool's one connection is taken: the next caller waits for it.
    let waiter = tokio::spawn({
        let pg = pg.clone();
        async move { pg.fetch_value("SELECT 1", &[]).await }
    });
    scrape_until(&registry, "one caller waiting", Duration::from_secs(10), |text| {
        sample(text, "onex_postgres_waiting{environment=\"test\"}") == Some(1.0)
    })
    .await;
    admin.batch_execute("SELECT pg_advisory_unlock(7)").await.unwrap();
    blocked.await.unwrap().expect("the blocked statement ran once the lock was free");
    waiter.await.unwrap().expect("the waiter got the connection");
    let text = registry.encode().unwrap();
    assert_eq!(value(&text, "onex_postgres_in_flight{environment=\"test\"}"), 0.0);
    assert_eq!(value(&text, "onex_postgres_waiting{environment=\"test\"}"), 0.0);
    // The waiter's wait is in the histogram's sum, and outside its zero-wait bucket.
    let waited = value(&text, "onex_postgres_acquire_wait_seconds_sum{environment=\"test\"}");
    assert!(waited > 0.0, "no wait recorded:\n{text}");
    let checkouts = value(&text, "onex_postgres_acquire_wait_seconds_count{environment=\"test\"}");
    let immediate = value(&text, "onex_postgres_acquire_wait_seconds_bucket{environment=\"test\",le=\"0.00001\"}");
    assert_eq!(checkouts - immediate, 1.0, "exactly one checkout waited:\n{text}");
    pg.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_pool_on_one_registry_is_a_configuration_error() {
    let db = TestDatabase::create("metrics").await;
    let registry = MetricsRegistry::new("test");
    let first = pool_with_metrics(&db, &registry, 2).await;
    let second = PostgresConnectionManager::connect(db.config()).await.unwrap();
    let err = second.with_metrics(&registry).unwrap_err();
    assert_eq!(err.code(), ErrorCode::ConfigurationError);
    assert!(err.message().contains("onex_postgres_"), "{err}");
    println!("second registration: {err}");
    first.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_producer_and_bus_series_count_exactly_the_messages_sent() {
    let registry = MetricsRegistry::new("test");
    let (pool, bus, topic) = kafka_with_metrics(&registry, KafkaProducerConfig::new(bootstrap()), "metrics.sent").await;
    create_topic(&topic, 2).await;
    const DIRECT: u64 = 40;
    const EVENTS: u64 = 12;
    let mut deliveries = Vec::new();
    for i in 0..DIRECT {
        deliveries.push(pool.send(ProduceRecord::new(&topic, &i.to_be_bytes()), None).await.unwrap());
    }
    for delivery in deliveries {
        delivery.await.unwrap();
    }
    for n in 0..EVENTS {
        bus.publish_event(&event("metrics.sent", n)).await.unwrap();
    }
    let text = registry.encode().unwrap();
    let env = "environment=\"test\"";
    assert_eq!(
        value(&text, &format!("onex_kafka_messages_total{{{env},outcome=\"delivered\"}}")),
        (DIRECT + EVENTS) as f64
    );
    assert_eq!(value(&text, &format!("onex_kafka_messages_total{{{env},outcome=\"failed\"}}")), 0.0);
    assert_eq!(value(&text, &format!("onex_kafka_delivery_duration_seconds_count{{{env}}}")), (DIRECT + EVENTS) as f64);
    assert_eq!(
        value(&text, &format!("onex_kafka_delivery_duration_seconds_bucket{{{env},le=\"+Inf\"}}")),
        (DIRECT + EVENTS) as f64
    );
    assert_eq!(value(&text, &format!("onex_kafka_in_flight{{{env}}}")), 0.0);
    assert_eq!(value(&text, &format!("onex_kafka_producers{{{env}}}")), 1.0);
    assert_eq!(value(&text, &format!("onex_event_bus_events_total{{{env},outcome=\"published\"}}")), EVENTS as f64);
    assert_eq!(value(&text, &format!("onex_event_bus_events_total{{{env},outcome=\"failed\"}}")), 0.0);
    assert_eq!(value(&text, &format!("onex_event_bus_retries_total{{{env}}}")), 0.0);
    // The histogram's sum is the pool's own mean latency times the count.
    let sum = value(&text, &format!("onex_kafka_delivery_duration_seconds_sum{{{env}}}"));
    let mean_ms = pool.stats().average_delivery_ms;
    assert!((sum * 1000.0 / (DIRECT + EVENTS) as f64 - mean_ms).abs() < 1e-6, "sum {sum} s, mean {mean_ms} ms");
    pool.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_broker_never_acknowledges_counts_as_failed_and_its_retries_too() {
    let registry = MetricsRegistry::new("test");
    let mut config = KafkaProducerConfig::new(DEAD_BROKER);
    config.delivery_timeout_ms = 500;
    config.request_timeout_ms = 400;
    let (pool, bus, _topic) = kafka_with_metrics(&registry, config, "metrics.lost").await;
    let retry =
        RetryPolicy { max_retries: 2, base_delay: Duration::from_millis(1), max_delay: Duration::from_millis(1) };
    let bus = bus.with_retry_policy(retry);
    let started = Instant::now();
    let err = bus.publish_event(&event("metrics.lost", 1)).await.unwrap_err();
    println!("publish to a dead broker failed after {:?}: {err}", started.elapsed());
    let text = registry.encode().unwrap();
    let env = "environment=\"test\"";
    assert_eq!(value(&text, &format!("onex_kafka_messages_total{{{env},outcome=\"failed\"}}")), 3.0, "{err}");
    assert_eq!(value(&text, &format!("onex_kafka_messages_total{{{env},outcome=\"delivered\"}}")), 0.0);
    assert_eq!(value(&text, &format!("onex_kafka_delivery_duration_seconds_count{{{env}}}")), 0.0);
    assert_eq!(value(&text, &format!("onex_event_bus_events_total{{{env},outcome=\"failed\"}}")), 1.0);
    assert_eq!(value(&text, &format!("onex_event_bus_events_total{{{env},outcome=\"published\"}}")), 0.0);
    assert_eq!(value(&text, &format!("onex_event_bus_retries_total{{{env}}}")), 2.0);
    assert_eq!(value(&text, &format!("onex_kafka_in_flight{{{env}}}")), 0.0);
    let _ = pool.shutdown().await;
}

#[tokio::test]
async fn a_second_producer_pool_or_bus_on_one_registry_is_a_configuration_error() {
    let registry = MetricsRegistry::new("test");
    let (_pool, _bus, _topic) = kafka_with_metrics(&registry, KafkaProducerConfig::new(bootstrap()), "metrics.x").await;
    let pool = KafkaProducerPool::new(KafkaPoolSettings::default(), KafkaProducerConfig::new(bootstrap())).unwrap();
    let err = pool.clone().with_metrics(&registry).unwrap_err();
    assert_eq!(err.code(), ErrorCode::ConfigurationError);
    assert!(err.message().contains("onex_kafka_"), "{err}");
    let err = KafkaEventBus::new(Arc::new(pool), TopicNamer::default()).with_metrics(&registry).unwrap_err();
    assert_eq!(err.code(), ErrorCode::ConfigurationError);
    assert!(err.message().contains("onex_event_bus_"), "{err}");
}
