//! A real Prometheus server (Debian's, from `scripts/prometheus.sh install`) scrapes this test
//! process's `/metrics` every second; the tests ask its query API for the series after known
//! work and check the values, and `promtool check metrics` lints the exposition.
//!
//! Every test starts its own server (tests/support/prometheus.rs) on a loopback port of
//! 19130–19138 scraping its own `ObservabilityServer`. Values are waited for by polling the
//! query API with a generous deadline: Prometheus applies a new target about 5 s after it
//! starts, then scrapes every second.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use onex_runtime::circuit_breaker::{CallError, CircuitBreaker};
use onex_runtime::environment::Environment;
use onex_runtime::event::OnexEvent;
use onex_runtime::event_bus::{EventPublisher, KafkaEventBus, TopicNamer};
use onex_runtime::health::{HealthChecker, HealthMonitor, Services};
use onex_runtime::http::{ObservabilityServer, ObservabilityServerConfig};
use onex_runtime::kafka::{KafkaPoolSettings, KafkaProducerPool};
use onex_runtime::metrics::{Counter, Family, Gauge, Histogram, MetricsRegistry};
use onex_runtime::models::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerState};
use onex_runtime::models::kafka::KafkaProducerConfig;
use onex_runtime::models::observability::MetricType;
use onex_runtime::observability::{Observability, ObservabilityConfig};
use onex_runtime::outbox::{self, Outbox, OutboxConfig};
use onex_runtime::postgres::PostgresConnectionManager;
use onex_runtime::telemetry::capture::SpanCapture;
use onex_runtime::{Container, Context, ErrorCode};
use onex_tests::kafka::{bootstrap, broker_script, create_topic};
use onex_tests::postgres::TestDatabase;
use onex_tests::prometheus::{PrometheusServer, PromtoolCheck, promtool_check_metrics};
use serde_json::json;
use uuid::Uuid;

/// How long Prometheus may take to discover and first scrape the target.
const UP_WITHIN: Duration = Duration::from_secs(60);
/// How long a value may take to show after the work that makes it.
const VALUE_WITHIN: Duration = Duration::from_secs(30);

/// The process's HTTP server on an ephemeral loopback port, and a Prometheus scraping it.
async fn scraped(registry: &Arc<MetricsRegistry>) -> (ObservabilityServer, PrometheusServer) {
    scraped_with(registry, Arc::new(HealthChecker::new())).await
}

async fn scraped_with(
    registry: &Arc<MetricsRegistry>,
    health: Arc<HealthChecker>,
) -> (ObservabilityServer, PrometheusServer) {
    let config = ObservabilityServerConfig { address: "127.0.0.1:0".parse().unwrap() };
    let server = ObservabilityServer::start(config, Arc::clone(registry), health).await.expect("observability server");
    let started = Instant::now();
    let prometheus = PrometheusServer::start(server.local_addr()).await;
    let ready = started.elapsed();
    let up = prometheus.wait_until_up(UP_WITHIN).await;
    eprintln!(
        "Prometheus on {} ready after {ready:?}, scraping {} successfully {up:?} later",
        prometheus.address(),
        server.local_addr()
    );
    (server, prometheus)
}

/// promtool findings accepted on purpose: the health monitor's series keep the names of the
/// original project, which its dashboards and alerts query, and one of them is in milliseconds.
const ACCEPTED_FINDINGS: [(&str, &str); 1] =
    [("omnibase_response_time_ms", "metric names should not contain abbreviated units")];

/// Checks that promtool reads `exposition` and finds nothing wrong with it beyond
/// [`ACCEPTED_FINDINGS`] and what comes from its reading the classic text format: there a
/// counter family `x`, whose OpenMetrics sample is `x_total`, is an untyped `x_total` without
/// help. Each such finding must be a counter family of the exposition; any other finding fails.
fn assert_promtool_accepts(exposition: &str) -> PromtoolCheck {
    let check = promtool_check_metrics(exposition);
    assert_ne!(check.exit_code, 1, "promtool could not parse the exposition: {check:?}\n{exposition}");
    assert!(check.errors.is_empty(), "promtool: {:?}\n{exposition}", check.errors);
    let unexpected: Vec<_> = check
        .findings
        .iter()
        .filter(|(metric, problem)| {
            let counter_family = metric
                .strip_suffix("_total")
                .is_some_and(|family| exposition.contains(&format!("# TYPE {family} counter\n")));
            let accepted = ACCEPTED_FINDINGS.contains(&(metric.as_str(), problem.as_str()));
            !(accepted || (problem == "no help text" && counter_family))
        })
        .collect();
    assert!(unexpected.is_empty(), "promtool found problems: {unexpected:?}\n{exposition}");
    // prometheus-client ends the help of a registered metric with a period of its own; a
    // collector's help is written as given.
    let doubled: Vec<&str> = exposition.lines().filter(|l| l.starts_with("# HELP ") && l.ends_with("..")).collect();
    assert!(doubled.is_empty(), "help text ending in two periods: {doubled:?}");
    eprintln!("promtool check metrics: exit {}, accepted findings {:?}", check.exit_code, check.findings);
    check
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_reads_the_counters_gauges_and_histogram_buckets_the_process_recorded() {
    let registry = Arc::new(MetricsRegistry::new("test"));
    let requests = Family::<Vec<(String, String)>, Counter>::default();
    registry.register("onex_test_requests", "Requests handled, by outcome", requests.clone()).unwrap();
    let queued = Gauge::<i64>::default();
    registry.register("onex_test_queued", "Items waiting", queued.clone()).unwrap();
    let latency = Histogram::latency();
    registry.register("onex_test_latency_seconds", "How long a request took", latency.clone()).unwrap();

    let ok = requests.get_or_create(&vec![("outcome".to_owned(), "ok".to_owned())]).clone();
    let error = requests.get_or_create(&vec![("outcome".to_owned(), "error".to_owned())]).clone();
    ok.inc_by(41);
    error.inc_by(2);
    queued.set(7);
    // 30 samples at 2 ms (bucket le=0.0025), 10 at 40 ms (le=0.05), 1 at 20 s (+Inf only).
    for _ in 0..30 {
        latency.observe(0.002);
    }
    for _ in 0..10 {
        latency.observe(0.040);
    }
    latency.observe(20.0);

    let (server, prometheus) = scraped(&registry).await;
    let env = "environment=\"test\"";
    let (v, took) = prometheus
        .wait_for(&format!("onex_test_requests_total{{{env},outcome=\"ok\"}}"), VALUE_WITHIN, |v| v == 41.0)
        .await;
    eprintln!("ok requests = {v} after {took:?}");
    assert_eq!(prometheus.query(&format!("onex_test_requests_total{{{env},outcome=\"error\"}}")).await, Some(2.0));
    assert_eq!(prometheus.query(&format!("onex_test_queued{{{env}}}")).await, Some(7.0));
    let bucket = |le: &str| format!("onex_test_latency_seconds_bucket{{{env},le=\"{le}\"}}");
    assert_eq!(prometheus.query(&bucket("0.001")).await, Some(0.0));
    assert_eq!(prometheus.query(&bucket("0.0025")).await, Some(30.0));
    assert_eq!(prometheus.query(&bucket("0.05")).await, Some(40.0));
    assert_eq!(prometheus.query(&bucket("10.0")).await, Some(40.0));
    assert_eq!(prometheus.query(&bucket("+Inf")).await, Some(41.0));
    assert_eq!(prometheus.query(&format!("onex_test_latency_seconds_count{{{env}}}")).await, Some(41.0));
    let sum = prometheus.query(&format!("onex_test_latency_seconds_sum{{{env}}}")).await.expect("a sum");
    assert!((sum - (30.0 * 0.002 + 10.0 * 0.040 + 20.0)).abs() < 1e-9, "sum {sum}");
    // The median falls in the 1–2.5 ms bucket, which Prometheus interpolates within.
    let median = prometheus
        .query(&format!("histogram_quantile(0.5, onex_test_latency_seconds_bucket{{{env}}})"))
        .await
        .expect("a median");
    assert!((0.001..=0.0025).contains(&median), "median {median}");

    // Live values, not a snapshot: later work shows in later scrapes.
    ok.inc_by(9);
    queued.set(0);
    let (_, took) = prometheus
        .wait_for(&format!("onex_test_requests_total{{{env},outcome=\"ok\"}}"), VALUE_WITHIN, |v| v == 50.0)
        .await;
    eprintln!("the next increment showed after {took:?}");
    prometheus.wait_for(&format!("onex_test_queued{{{env}}}"), VALUE_WITHIN, |v| v == 0.0).await;
    assert_eq!(prometheus.target_state().await.map(|t| t.last_error), Some(String::new()));

    assert_promtool_accepts(&registry.encode().unwrap());
    server.shutdown().await;
}

/// The shared broker on 127.0.0.1:19092, started by `scripts/broker.sh start` when nothing
/// listens there (it is left running).
fn ensure_broker() {
    if std::net::TcpStream::connect(bootstrap()).is_err() {
        broker_script("start");
    }
}

/// A development breaker that opens at the third failure in a row.
fn breaker_config() -> CircuitBreakerConfig {
    let mut config = CircuitBreakerConfig::for_environment(Environment::Development);
    config.failure_threshold = FAILED as u32;
    config
}

/// Statements that succeed, statements that fail (through the breaker, which they open),
/// messages published (through the breaker), calls the open breaker refuses, events left in
/// the outbox, node operations answered. The observability store records a few samples too.
const OK: u64 = 20;
const FAILED: u64 = 3;
const MESSAGES: u64 = 30;
const REJECTED: u64 = 2;
const QUEUED: u64 = 4;
const CALLS: u64 = 4;
const NODE: &str = "node_event_bus_circuit_breaker_compute";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_reads_what_every_service_of_the_process_did() {
    ensure_broker();
    let registry = Arc::new(MetricsRegistry::new("test"));
    let capture = SpanCapture::new();
    let tracing = capture.tracing("metrics-prometheus").unwrap().with_metrics(&registry).expect("the span series");

    let db = TestDatabase::create("metrics").await;
    let pg = PostgresConnectionManager::connect(db.config()).await.expect("connect");
    let pg = Arc::new(pg.with_metrics(&registry).expect("the pool's series").with_tracing(tracing.clone()));
    // The schema check at connect is counted too: the totals start from it.
    let at_start = pg.connection_stats();
    outbox::migrate(&pg).await.expect("outbox tables");
    let migration = pg.connection_stats().total_queries - at_start.total_queries;
    let outbox = Outbox::new(Arc::clone(&pg), OutboxConfig::default())
        .unwrap()
        .with_metrics(&registry)
        .expect("the outbox's series");

    let pool = KafkaProducerPool::new(KafkaPoolSettings::default(), KafkaProducerConfig::new(bootstrap()))
        .expect("producer pool")
        .with_metrics(&registry)
        .expect("the producer pool's series");
    let pool = Arc::new(pool);
    let namer = TopicNamer::new("dev", &format!("t{}", Uuid::new_v4().simple()), "onex").unwrap();
    let event_type = "test.metrics.published";
    create_topic(&namer.topic_for(event_type).unwrap(), 1).await;
    let bus = KafkaEventBus::new(Arc::clone(&pool), namer)
        .with_rate_limit(None)
        .with_metrics(&registry)
        .expect("the bus's series");
    let bus = Arc::new(bus);
    let breaker = CircuitBreaker::new(breaker_config()).unwrap().with_metrics(&registry, "infra").expect("breaker");
    let breaker = Arc::new(breaker);
    let event = |n: u64| OnexEvent::new(event_type, "metrics-prometheus-test", Uuid::new_v4(), json!({ "n": n }));

    for i in 0..OK {
        assert_eq!(pg.fetch_value("SELECT $1::bigint", &[json!(i)]).await.unwrap(), Some(json!(i)));
    }
    for n in 0..MESSAGES {
        breaker.call(bus.publish(event(n))).await.expect("publish");
    }
    for n in 0..QUEUED {
        outbox.enqueue(&event(100 + n), "open").await.expect("enqueue");
    }
    for _ in 0..FAILED {
        match breaker.call(pg.execute_query("SELECT * FROM no_such_table", &[])).await {
            Err(CallError::Failed { error, counted: true, .. }) => {
                assert_eq!(error.code(), ErrorCode::DatabaseQueryError, "{error}");
            }
            other => panic!("expected a counted failure, got {other:?}"),
        }
    }
    assert_eq!(breaker.state(), CircuitBreakerState::Open, "the third failure opens the breaker");
    for _ in 0..REJECTED {
        let err = breaker.call(pg.fetch_value("SELECT 1", &[])).await.unwrap_err();
        assert!(matches!(err, CallError::Rejected(_)), "{err:?}");
    }

    let mut container = Container::new();
    container.register(Arc::clone(&registry));
    let node = onex_generated::registry().build(NODE, None, &container).expect("the node builds");
    for _ in 0..CALLS {
        node.process_json(json!({"operation_type": "get_state"}), Context::new()).await.expect("get_state");
    }

    // The observability store's recorded series: the latest value of a counter and a gauge,
    // every observation of a histogram.
    let observability = Observability::new(Arc::clone(&registry), &ObservabilityConfig::default()).unwrap();
    let region = BTreeMap::from([("region".to_owned(), "eu".to_owned())]);
    observability.record_metric("orders_processed", 12.0, MetricType::Counter, region.clone()).unwrap();
    observability.record_metric("orders_processed", 17.0, MetricType::Counter, region).unwrap();
    observability.record_metric("queue_length", 5.0, MetricType::Gauge, BTreeMap::new()).unwrap();
    observability.record_metric("queue_length", 9.0, MetricType::Gauge, BTreeMap::new()).unwrap();
    for seconds in [0.002, 0.04, 0.3] {
        observability.record_metric("job_duration_seconds", seconds, MetricType::Histogram, BTreeMap::new()).unwrap();
    }

    // The pool counted exactly that work (the monitor's probe adds statements of its own).
    let before_check = pg.connection_stats();
    assert_eq!(before_check.total_queries - at_start.total_queries, migration + OK + QUEUED + FAILED);
    assert_eq!(before_check.failed_queries - at_start.failed_queries, FAILED);
    let services = Services {
        postgres: Some(Arc::clone(&pg)),
        kafka: Some(Arc::clone(&pool)),
        event_bus: Some(Arc::clone(&bus)),
        breaker: Some(Arc::clone(&breaker)),
        publisher: None,
    };
    let checker = Arc::new(HealthChecker::from_services(&services, &Container::new()));
    let monitor = HealthMonitor::new(Arc::clone(&checker), services, Environment::Development);
    monitor.register_metrics(&registry).expect("the monitor's series");
    let assessment = monitor.check().await;
    eprintln!("health check: {:?}, figures {:?}", assessment.overall_status, assessment.figures);
    tracing.flush().expect("flush the spans");
    let exported = capture.spans().len();

    let (server, prometheus) = scraped_with(&registry, checker).await;
    let env = "environment=\"test\"";
    let expect = async |series: String, expected: f64| {
        let (_, took) = prometheus.wait_for(&series, VALUE_WITHIN, |v| v == expected).await;
        eprintln!("{series} = {expected} after {took:?}");
    };

    let stats = pg.connection_stats();
    let probe = stats.total_queries - before_check.total_queries;
    eprintln!("the monitor's PostgreSQL probe ran {probe} statements");
    let ok = (stats.total_queries - stats.failed_queries) as f64;
    expect(format!("onex_postgres_queries_total{{{env},outcome=\"ok\"}}"), ok).await;
    expect(format!("onex_postgres_queries_total{{{env},outcome=\"error\"}}"), stats.failed_queries as f64).await;
    // From `with_metrics` on: everything but the schema check at connect.
    let statements = (migration + OK + QUEUED + FAILED + probe) as f64;
    expect(format!("onex_postgres_query_duration_seconds_count{{{env}}}"), statements).await;
    expect(format!("onex_postgres_query_duration_seconds_bucket{{{env},le=\"+Inf\"}}"), statements).await;
    expect(format!("onex_postgres_in_flight{{{env}}}"), 0.0).await;
    expect(format!("onex_postgres_waiting{{{env}}}"), 0.0).await;
    expect(format!("onex_postgres_connections{{{env},state=\"in_use\"}}"), 0.0).await;
    expect(format!("onex_postgres_connections{{{env},state=\"idle\"}}"), f64::from(stats.idle)).await;
    expect(format!("onex_postgres_acquire_wait_seconds_count{{{env}}}"), stats.checkouts as f64).await;

    expect(format!("onex_kafka_messages_total{{{env},outcome=\"delivered\"}}"), MESSAGES as f64).await;
    expect(format!("onex_kafka_messages_total{{{env},outcome=\"failed\"}}"), 0.0).await;
    expect(format!("onex_kafka_delivery_duration_seconds_count{{{env}}}"), MESSAGES as f64).await;
    expect(format!("onex_kafka_in_flight{{{env}}}"), 0.0).await;
    expect(format!("onex_kafka_producers{{{env}}}"), f64::from(pool.stats().total_producers)).await;
    expect(format!("onex_event_bus_events_total{{{env},outcome=\"published\"}}"), MESSAGES as f64).await;
    expect(format!("onex_event_bus_events_total{{{env},outcome=\"failed\"}}"), 0.0).await;
    expect(format!("onex_event_bus_retries_total{{{env}}}"), 0.0).await;

    let infra = format!("{env},breaker=\"infra\"");
    expect(format!("onex_circuit_breaker_state{{{infra}}}"), 1.0).await;
    expect(format!("onex_circuit_breaker_transitions_total{{{infra},to=\"open\"}}"), 1.0).await;
    expect(format!("onex_circuit_breaker_transitions_total{{{infra},to=\"half_open\"}}"), 0.0).await;
    expect(format!("onex_circuit_breaker_transitions_total{{{infra},to=\"closed\"}}"), 0.0).await;
    expect(format!("onex_circuit_breaker_calls_total{{{infra},outcome=\"success\"}}"), MESSAGES as f64).await;
    expect(format!("onex_circuit_breaker_calls_total{{{infra},outcome=\"failure\"}}"), FAILED as f64).await;
    expect(format!("onex_circuit_breaker_calls_total{{{infra},outcome=\"rejected\"}}"), REJECTED as f64).await;
    expect(format!("onex_circuit_breaker_calls_total{{{infra},outcome=\"ignored\"}}"), 0.0).await;
    expect(format!("onex_outbox_depth{{{env}}}"), QUEUED as f64).await;
    assert!(exported as u64 >= OK + FAILED, "{exported} spans exported");
    expect(format!("onex_tracing_spans_exported_total{{{env}}}"), exported as f64).await;
    expect(format!("onex_tracing_spans_dropped_total{{{env}}}"), 0.0).await;

    let node_labels = format!("{env},node=\"{NODE}\",operation=\"get_state\"");
    expect(format!("onex_node_operations_total{{{node_labels},outcome=\"ok\"}}"), CALLS as f64).await;
    expect(format!("onex_node_operations_total{{{node_labels},outcome=\"error\"}}"), 0.0).await;
    expect(format!("onex_node_operations_in_flight{{{node_labels}}}"), 0.0).await;
    expect(format!("onex_node_operation_duration_seconds_count{{{node_labels}}}"), CALLS as f64).await;
    expect(format!("onex_node_operation_duration_seconds_bucket{{{node_labels},le=\"+Inf\"}}"), CALLS as f64).await;

    expect(format!("omnibase_infrastructure_health{{{env}}}"), assessment.overall_status.gauge()).await;
    expect(format!("omnibase_error_rate_percent{{{env}}}"), assessment.figures.error_rate_percent).await;
    expect(format!("omnibase_response_time_ms{{{env}}}"), assessment.figures.response_time_ms).await;
    expect(format!("omnibase_events_queued{{{env}}}"), assessment.figures.queued_events as f64).await;
    expect(format!("omnibase_messages_processed_total{{{env}}}"), MESSAGES as f64).await;
    expect(format!("omnibase_kafka_producers{{{env}}}"), f64::from(pool.stats().total_producers)).await;
    expect(format!("omnibase_postgres_connections{{{env}}}"), f64::from(stats.size)).await;

    expect(format!("orders_processed_total{{{env},region=\"eu\"}}"), 17.0).await;
    expect(format!("queue_length{{{env}}}"), 9.0).await;
    expect(format!("job_duration_seconds_count{{{env}}}"), 3.0).await;
    expect(format!("job_duration_seconds_bucket{{{env},le=\"0.05\"}}"), 2.0).await;
    expect(format!("job_duration_seconds_bucket{{{env},le=\"+Inf\"}}"), 3.0).await;

    // Every family once, every sample scraped without error.
    let text = registry.encode().unwrap();
    let families: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next()).collect();
    let mut unique = families.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), families.len(), "a family repeats: {families:?}");
    assert_eq!(prometheus.target_state().await.map(|t| t.last_error), Some(String::new()));
    let scraped = prometheus.query("scrape_samples_scraped").await.expect("Prometheus counts the samples it scraped");
    let samples = text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).count() as f64;
    assert_eq!(scraped, samples, "Prometheus took fewer samples than the exposition has");
    eprintln!("{} families, {samples} samples", families.len());
    assert_promtool_accepts(&text);

    server.shutdown().await;
    drop(monitor);
    drop(observability);
    pool.shutdown().await.expect("pool shutdown");
    tracing.shutdown().expect("tracing shutdown");
    pg.close();
}
