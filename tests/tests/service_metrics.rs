//! Every runtime service's own Prometheus series, against the real services: PostgreSQL on
//! 127.0.0.1:5432 and the shared broker on 127.0.0.1:19092 (`scripts/broker.sh start`).
//!
//! Each test does known work through a service registered in a `MetricsRegistry` and reads
//! the exposition text back: the values must be exactly that work.

use std::sync::Arc;
use std::time::{Duration, Instant};

use onex_runtime::ErrorCode;
use onex_runtime::circuit_breaker::CircuitBreaker;
use onex_runtime::environment::Environment;
use onex_runtime::event::OnexEvent;
use onex_runtime::event_bus::{KafkaEventBus, RetryPolicy, TopicNamer};
use onex_runtime::kafka::{KafkaPoolSettings, KafkaProducerPool, ProduceRecord};
use onex_runtime::metrics::MetricsRegistry;
use onex_runtime::models::circuit_breaker::CircuitBreakerConfig;
use onex_runtime::models::kafka::KafkaProducerConfig;
use onex_runtime::outbox::{self, Enqueued, Outbox, OutboxConfig};
use onex_runtime::postgres::PostgresConnectionManager;
use onex_runtime::telemetry::capture::SpanCapture;
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

/// Development defaults, opening at the first counted failure.
fn breaker_config() -> CircuitBreakerConfig {
    let mut config = CircuitBreakerConfig::for_environment(Environment::Development);
    config.failure_threshold = 1;
    config
}

/// A bus on the dead broker that gives up on a message after 500 ms, without retries.
fn dead_bus() -> KafkaEventBus {
    let mut config = KafkaProducerConfig::new(DEAD_BROKER);
    config.delivery_timeout_ms = 500;
    config.request_timeout_ms = 400;
    let pool = KafkaProducerPool::new(KafkaPoolSettings::default(), config).unwrap();
    let retry = RetryPolicy { max_retries: 0, ..RetryPolicy::default() };
    KafkaEventBus::new(Arc::new(pool), TopicNamer::default()).with_rate_limit(None).with_retry_policy(retry)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_opened_once_by_a_dead_broker_shows_one_open_and_its_calls() {
    let registry = MetricsRegistry::new("test");
    let breaker = CircuitBreaker::new(breaker_config()).unwrap().with_metrics(&registry, "kafka").unwrap();
    let other = CircuitBreaker::new(breaker_config()).unwrap().with_metrics(&registry, "postgres").unwrap();
    let err = CircuitBreaker::new(breaker_config()).unwrap().with_metrics(&registry, "kafka").unwrap_err();
    assert_eq!(err.code(), ErrorCode::ConfigurationError);
    assert!(err.message().contains("'kafka'"), "{err}");
    let bus = dead_bus();
    let failed = breaker.call(bus.publish_event(&event("metrics.breaker", 1))).await.unwrap_err();
    println!("the call that opened the breaker: {failed}");
    // Open now: the next calls are refused without reaching the broker.
    for n in 0..3 {
        breaker.call(bus.publish_event(&event("metrics.breaker", n))).await.unwrap_err();
    }
    other.call(async { Ok(()) }).await.unwrap();
    let text = registry.encode().unwrap();
    let kafka = "environment=\"test\",breaker=\"kafka\"";
    assert_eq!(value(&text, &format!("onex_circuit_breaker_state{{{kafka}}}")), 1.0);
    assert_eq!(value(&text, &format!("onex_circuit_breaker_transitions_total{{{kafka},to=\"open\"}}")), 1.0);
    assert_eq!(value(&text, &format!("onex_circuit_breaker_transitions_total{{{kafka},to=\"half_open\"}}")), 0.0);
    assert_eq!(value(&text, &format!("onex_circuit_breaker_transitions_total{{{kafka},to=\"closed\"}}")), 0.0);
    assert_eq!(value(&text, &format!("onex_circuit_breaker_calls_total{{{kafka},outcome=\"failure\"}}")), 1.0);
    assert_eq!(value(&text, &format!("onex_circuit_breaker_calls_total{{{kafka},outcome=\"rejected\"}}")), 3.0);
    assert_eq!(value(&text, &format!("onex_circuit_breaker_calls_total{{{kafka},outcome=\"success\"}}")), 0.0);
    let postgres = "environment=\"test\",breaker=\"postgres\"";
    assert_eq!(value(&text, &format!("onex_circuit_breaker_state{{{postgres}}}")), 0.0);
    assert_eq!(value(&text, &format!("onex_circuit_breaker_calls_total{{{postgres},outcome=\"success\"}}")), 1.0);
    assert_eq!(text.matches("# TYPE onex_circuit_breaker_state gauge").count(), 1, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_depth_follows_enqueues_and_relay_passes() {
    let db = TestDatabase::create("metrics").await;
    let registry = MetricsRegistry::new("test");
    let pg = Arc::new(PostgresConnectionManager::connect(db.config()).await.unwrap());
    outbox::migrate(&pg).await.unwrap();
    let outbox = Outbox::new(Arc::clone(&pg), OutboxConfig::default()).unwrap().with_metrics(&registry).unwrap();
    let depth =
        |registry: &MetricsRegistry| value(&registry.encode().unwrap(), "onex_outbox_depth{environment=\"test\"}");
    assert_eq!(depth(&registry), 0.0);
    const QUEUED: u64 = 7;
    let queued: Vec<OnexEvent> = (0..QUEUED).map(|n| event("metrics.outbox", n)).collect();
    for e in &queued {
        assert!(matches!(outbox.enqueue(e, "open").await.unwrap(), Enqueued::Queued { .. }));
    }
    // A duplicate stores nothing and counts nothing.
    assert_eq!(outbox.enqueue(&queued[0], "open").await.unwrap(), Enqueued::Duplicate);
    assert_eq!(depth(&registry), QUEUED as f64);

    // A pass through a broker that is down publishes nothing: every row is left.
    let report = outbox.relay_once(&dead_bus(), 100).await.unwrap();
    assert_eq!(report.published, 0);
    assert_eq!(depth(&registry), QUEUED as f64);

    // Passes of 3 through the real broker: full passes subtract, the last short one sets.
    let bus = live_bus().await;
    let first = outbox.relay_once(&bus, 3).await.unwrap();
    assert_eq!((first.claimed, first.published), (3, 3), "{first:?}");
    assert_eq!(depth(&registry), (QUEUED - 3) as f64);
    let drained = outbox.drain(&bus, 3).await.unwrap();
    assert_eq!(drained.published as u64, QUEUED - 3, "{drained:?}");
    assert_eq!(depth(&registry), 0.0);

    // Rows written behind the outbox's back show at the next count.
    let mut tx = pg.begin(Default::default()).await.unwrap();
    outbox.enqueue_in(&mut tx, &event("metrics.outbox", 99), "closed").await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(depth(&registry), 0.0, "an enqueue inside a caller's transaction waits for a count");
    assert_eq!(outbox.stats().await.unwrap().depth, 1);
    assert_eq!(depth(&registry), 1.0);
    assert_eq!(outbox.known_depth(), 1);

    let err = Outbox::new(pg, OutboxConfig::default()).unwrap().with_metrics(&registry).unwrap_err();
    assert_eq!(err.code(), ErrorCode::ConfigurationError);
    assert!(err.message().contains("onex_outbox_depth"), "{err}");
}

/// A bus on the real broker whose topic for `metrics.outbox` exists.
async fn live_bus() -> KafkaEventBus {
    let pool = KafkaProducerPool::new(KafkaPoolSettings::default(), KafkaProducerConfig::new(bootstrap())).unwrap();
    let namer = TopicNamer::new("dev", &format!("t{}", Uuid::new_v4().simple()), "onex").unwrap();
    create_topic(&namer.topic_for("metrics.outbox").unwrap(), 1).await;
    KafkaEventBus::new(Arc::new(pool), namer).with_rate_limit(None)
}

/// The whole exposition of one process: every service on one registry, after known work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_on_one_registry_shows_exactly_the_work_done() {
    let db = TestDatabase::create("metrics").await;
    let registry = MetricsRegistry::new("test");
    let capture = SpanCapture::new();
    let tracing = capture.tracing("service-metrics").unwrap().with_metrics(&registry).unwrap();
    let pg = pool_with_metrics(&db, &registry, 4).await.with_tracing(tracing.clone());
    let pg = Arc::new(pg);
    let at_start = pg.connection_stats();
    outbox::migrate(&pg).await.unwrap();
    let migration = pg.connection_stats().total_queries - at_start.total_queries;
    let outbox = Outbox::new(Arc::clone(&pg), OutboxConfig::default()).unwrap().with_metrics(&registry).unwrap();
    let (pool, bus, topic) = kafka_with_metrics(&registry, KafkaProducerConfig::new(bootstrap()), "metrics.all").await;
    create_topic(&topic, 1).await;
    let breaker = CircuitBreaker::new(breaker_config()).unwrap().with_metrics(&registry, "kafka").unwrap();

    const STATEMENTS: u64 = 20;
    for i in 0..STATEMENTS {
        pg.fetch_value("SELECT $1::bigint + 1", &[json!(i)]).await.unwrap();
    }
    const MESSAGES: u64 = 30;
    for n in 0..MESSAGES {
        breaker.call(bus.publish_event(&event("metrics.all", n))).await.unwrap();
    }
    const QUEUED: u64 = 4;
    for n in 0..QUEUED {
        outbox.enqueue(&event("metrics.all", 100 + n), "closed").await.unwrap();
    }
    // Opened once, by one failure of a broker that is down.
    let dead = dead_bus();
    breaker.call(dead.publish_event(&event("metrics.all", 999))).await.unwrap_err();
    breaker.call(async { Ok(()) }).await.unwrap_err();
    tracing.flush().unwrap();

    let text = registry.encode().unwrap();
    println!("{text}");
    let env = "environment=\"test\"";
    // PostgreSQL: the statements, plus the outbox's on the same pool (the migration's, one per
    // enqueue), plus the schema check at connect (before the registration: not in the
    // duration histogram).
    let ran = migration + STATEMENTS + QUEUED;
    assert_eq!(
        value(&text, &format!("onex_postgres_queries_total{{{env},outcome=\"ok\"}}")),
        (at_start.total_queries + ran) as f64
    );
    assert_eq!(value(&text, &format!("onex_postgres_queries_total{{{env},outcome=\"error\"}}")), 0.0);
    assert_eq!(value(&text, &format!("onex_postgres_query_duration_seconds_count{{{env}}}")), ran as f64);
    assert_eq!(value(&text, &format!("onex_postgres_in_flight{{{env}}}")), 0.0);
    // Kafka and the bus: the messages, each acknowledged once.
    assert_eq!(value(&text, &format!("onex_kafka_messages_total{{{env},outcome=\"delivered\"}}")), MESSAGES as f64);
    assert_eq!(value(&text, &format!("onex_kafka_delivery_duration_seconds_count{{{env}}}")), MESSAGES as f64);
    assert_eq!(value(&text, &format!("onex_event_bus_events_total{{{env},outcome=\"published\"}}")), MESSAGES as f64);
    assert_eq!(value(&text, &format!("onex_event_bus_retries_total{{{env}}}")), 0.0);
    // The breaker: the messages succeeded, one failure opened it, one call was refused.
    let kafka = format!("{env},breaker=\"kafka\"");
    assert_eq!(value(&text, &format!("onex_circuit_breaker_state{{{kafka}}}")), 1.0);
    assert_eq!(value(&text, &format!("onex_circuit_breaker_transitions_total{{{kafka},to=\"open\"}}")), 1.0);
    assert_eq!(
        value(&text, &format!("onex_circuit_breaker_calls_total{{{kafka},outcome=\"success\"}}")),
        MESSAGES as f64
    );
    assert_eq!(value(&text, &format!("onex_circuit_breaker_calls_total{{{kafka},outcome=\"failure\"}}")), 1.0);
    assert_eq!(value(&text, &format!("onex_circuit_breaker_calls_total{{{kafka},outcome=\"rejected\"}}")), 1.0);
    // The outbox and the spans.
    assert_eq!(value(&text, &format!("onex_outbox_depth{{{env}}}")), QUEUED as f64);
    let exported = capture.spans().len();
    assert!(exported >= STATEMENTS as usize, "{exported}");
    assert_eq!(value(&text, &format!("onex_tracing_spans_exported_total{{{env}}}")), exported as f64);
    assert_eq!(value(&text, &format!("onex_tracing_spans_dropped_total{{{env}}}")), 0.0);
    assert!(text.ends_with("# EOF\n"));
    pool.shutdown().await.unwrap();
    tracing.shutdown().unwrap();
}
