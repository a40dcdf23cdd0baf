//! The services the served nodes depend on, built once from the environment and shared: the
//! Kafka producer pool and event bus (always: the host publishes through them), the metrics
//! registry, and PostgreSQL and Consul when a served node's contract requires them, or
//! depends on them optionally and the environment configures them (`POSTGRES_HOST`,
//! `CONSUL_HOST`).

use std::sync::Arc;

use onex_runtime::consul::ConsulClient;
use onex_runtime::environment::{EnvSource, Environment};
use onex_runtime::event_bus::{EventPublisher, KafkaEventBus, TopicNamer};
use onex_runtime::health::HealthChecker;
use onex_runtime::health::monitor::HealthMonitor;
use onex_runtime::kafka::config::producer_config_from_env;
use onex_runtime::kafka::{KafkaPoolSettings, KafkaProducerPool};
use onex_runtime::metrics::MetricsRegistry;
use onex_runtime::models::kafka::KafkaProducerConfig;
use onex_runtime::models::tracing::TraceConfiguration;
use onex_runtime::postgres::PostgresConnectionManager;
use onex_runtime::telemetry::Tracing;
use onex_runtime::{Container, NodeContract, OnexError};

use crate::config::HostConfig;

/// What the host built for its nodes.
pub struct Services {
    /// Every service, for the nodes' constructors.
    pub container: Container,
    /// The broker settings (the consumer uses the same cluster and credentials).
    pub kafka: KafkaProducerConfig,
    /// Publishes answers and dead letters.
    pub pool: Arc<KafkaProducerPool>,
    /// Names the topics.
    pub namer: TopicNamer,
    /// Served at `/metrics`.
    pub metrics: Arc<MetricsRegistry>,
    /// Served at `/health/ready`.
    pub health: Arc<HealthChecker>,
    /// Spans of the nodes, the pool and PostgreSQL; disabled unless
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` names a collector (the `OTEL_*` variables configure it).
    pub tracing: Tracing,
}

/// How the served nodes depend on a service whose Rust type ends with `type_name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    None,
    /// Only optionally: built when the environment configures it.
    Optional,
    Required,
}

fn need(contracts: &[&'static NodeContract], type_name: &str) -> Need {
    let deps =
        contracts.iter().flat_map(|c| c.dependencies).filter(|d| d.rust_type.is_some_and(|t| t.ends_with(type_name)));
    deps.fold(Need::None, |need, d| {
        if d.required {
            Need::Required
        } else if need == Need::None {
            Need::Optional
        } else {
            need
        }
    })
}

/// Whether to build a service `need`ed so, configured by `variable` in `env`.
fn wanted(need: Need, env: &dyn EnvSource, variable: &str) -> bool {
    match need {
        Need::None => false,
        Need::Optional => env.var(variable).is_some_and(|v| !v.trim().is_empty()),
        Need::Required => true,
    }
}

/// Builds the services `contracts` depend on from `env`; PostgreSQL also when the host keeps
/// its answer store there (`config.idempotency`). The event bus applies the host's
/// `publish_rate_limit`, not the bus's default.
pub async fn build(
    contracts: &[&'static NodeContract],
    env: &dyn EnvSource,
    config: &HostConfig,
) -> Result<Services, OnexError> {
    let environment = Environment::detect(env);
    let kafka = producer_config_from_env(env)?;
    let metrics = Arc::new(MetricsRegistry::new(environment.as_str()));
    // Spans only where a collector is named: without one, exporting would only fill a queue.
    let tracing = match env.var("OTEL_EXPORTER_OTLP_ENDPOINT").filter(|v| !v.trim().is_empty()) {
        Some(_) => Tracing::install(&TraceConfiguration::from_env(env, environment)?)?,
        None => Tracing::disabled(),
    };
    let pool = Arc::new(
        KafkaProducerPool::new(KafkaPoolSettings::from_env(env)?, kafka.clone())?.with_tracing(tracing.clone()),
    );
    let namer = TopicNamer::from_env(env)?;
    let bus = Arc::new(KafkaEventBus::from_env(Arc::clone(&pool), env)?.with_rate_limit(config.publish_rate_limit));
    let mut container = Container::new();
    container.register(Arc::clone(&pool));
    container.register(Arc::clone(&bus));
    let publisher: Arc<dyn EventPublisher> = bus;
    container.register::<dyn EventPublisher>(Arc::clone(&publisher));
    container.register(Arc::clone(&metrics));
    container.register(Arc::new(tracing.clone()));
    if config.idempotency || wanted(need(contracts, "PostgresConnectionManager"), env, "POSTGRES_HOST") {
        container.register(Arc::new(PostgresConnectionManager::from_env(env).await?.with_tracing(tracing.clone())));
    }
    if wanted(need(contracts, "ConsulClient"), env, "CONSUL_HOST") {
        container.register(Arc::new(ConsulClient::from_env(env)?));
    }
    // One monitor per process, registered: its series are in the metrics registry, which
    // holds them once, so the health monitor node must use this one rather than build its own.
    // It announces status changes on the bus, as the node's own monitor would.
    let monitor = Arc::new(HealthMonitor::from_container(&container, environment)?);
    monitor.set_publisher(publisher);
    container.register(Arc::clone(&monitor));
    let health = monitor.checker();
    Ok(Services { container, kafka, pool, namer, metrics, health, tracing })
}
