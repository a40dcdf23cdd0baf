//! The node host: serves the nodes of a generated registry behind Kafka.
//!
//! Each served node consumes its request topics in one consumer group; every host process of a
//! deployment joins the same group, so Kafka spreads the partitions over them and moves a dead
//! host's partitions to the living ones. Requests are answered at least once, in order per key
//! (the correlation id), concurrently across keys. See the README for running it and
//! [`config`] for its configuration; [`routes`] names the topics, [`request`] the wire form.
//!
//! - [`config`]: the YAML file and the environment;
//! - [`services`]: what the nodes depend on, built from the environment;
//! - [`consume`]: the consume loop, offsets and per-key order ([`progress`]);
//! - [`answer`]: one request, from decoding to an acknowledged answer or dead letter;
//! - [`idempotency`]: the optional answer store of EFFECT nodes.

pub mod answer;
pub mod config;
pub mod consume;
pub mod counters;
pub mod idempotency;
pub mod progress;
pub mod request;
pub mod routes;
pub mod services;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use onex_runtime::environment::EnvSource;
use onex_runtime::http::{ObservabilityServer, ObservabilityServerConfig};
use onex_runtime::kafka::KafkaProducerPool;
use onex_runtime::kafka::config::consumer_properties;
use onex_runtime::postgres::PostgresConnectionManager;
use onex_runtime::{ErrorCode, NodeRegistry, OnexError};
use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::answer::{Answering, RecentIds, ServedNode};
use crate::config::HostConfig;
use crate::consume::HostContext;
pub use crate::counters::HostCounters;
use crate::idempotency::AnswerStore;
use crate::routes::Routes;

/// How long a host may go without a heartbeat before the group gives its partitions to
/// another host: what a killed host costs before its requests are served again.
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// A running host.
pub struct Host {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<usize, OnexError>>,
    http: Option<ObservabilityServer>,
    counters: HostCounters,
    pool: Arc<KafkaProducerPool>,
    routes: Vec<(String, Routes)>,
    pruning: Option<JoinHandle<()>>,
    tracing: onex_runtime::telemetry::Tracing,
}

/// What a host did, reported when it stops.
#[derive(Debug, Clone)]
pub struct HostReport {
    /// Its counters.
    pub counters: HostCounters,
    /// Fetched requests left unanswered at shutdown (uncommitted: the group redelivers them).
    pub unanswered: usize,
}

impl Host {
    /// Builds the served nodes and their services, joins the consumer group and starts
    /// answering. Must be called inside a tokio runtime.
    pub async fn start(config: HostConfig, registry: &NodeRegistry, env: &dyn EnvSource) -> Result<Self, OnexError> {
        let registrations = config
            .nodes
            .iter()
            .map(|n| {
                registry
                    .find(&n.name, n.version)
                    .ok_or_else(|| OnexError::configuration(format!("no node '{}' in the registry", n.name)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let contracts: Vec<_> = registrations.iter().map(|r| r.contract).collect();
        let services = services::build(&contracts, env, &config).await?;
        let store = if config.idempotency {
            let db = services.container.resolve::<PostgresConnectionManager>()?;
            Some(Arc::new(AnswerStore::open(db, config.idempotency_retention).await?))
        } else {
            None
        };
        let pruning = store.clone().map(|store| tokio::spawn(prune_hourly(store)));
        let mut nodes = Vec::new();
        let mut topics: Vec<String> = Vec::new();
        let mut topic_node = Vec::new();
        let mut routes_of = Vec::new();
        for (i, registration) in registrations.iter().enumerate() {
            let contract = registration.contract;
            let node = (registration.construct)(&services.container)?;
            let routes = Routes::of(contract, &services.namer);
            for topic in &routes.requests {
                if topics.contains(topic) {
                    return Err(OnexError::configuration(format!(
                        "two served nodes consume {topic}; a request topic belongs to one node"
                    )));
                }
                topics.push(topic.clone());
                topic_node.push(i);
            }
            routes_of.push((contract.name.to_owned(), routes.clone()));
            nodes.push(Arc::new(ServedNode { contract, node, routes }));
        }
        let mut client = consumer_properties(&services.kafka, &config.group_id)?.to_client_config();
        client.set("session.timeout.ms", SESSION_TIMEOUT.as_millis().to_string());
        client.set("heartbeat.interval.ms", (SESSION_TIMEOUT / 5).as_millis().to_string());
        let consumer: StreamConsumer<HostContext> =
            client.create_with_context(HostContext::default()).map_err(|e| {
                OnexError::new(ErrorCode::ConfigurationError, "cannot create the Kafka consumer").with_source(e)
            })?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names).map_err(|e| {
            OnexError::new(ErrorCode::IntegrationServiceError, format!("cannot subscribe to {names:?}")).with_source(e)
        })?;
        let counters = HostCounters::default();
        counters.register(&services.metrics)?;
        let http = match config.http {
            Some(address) => Some(
                ObservabilityServer::start(
                    ObservabilityServerConfig { address },
                    Arc::clone(&services.metrics),
                    Arc::clone(&services.health),
                )
                .await?,
            ),
            None => None,
        };
        let (abandon, abandoned) = watch::channel(false);
        let answering = Arc::new(Answering {
            pool: Arc::clone(&services.pool),
            counters: counters.clone(),
            max_attempts: config.max_attempts,
            retry_backoff: config.retry_backoff,
            source: format!("onex-host/{}", std::process::id()),
            recent: Mutex::new(RecentIds::default()),
            store,
            abandon: abandoned,
        });
        let (stop, stopped) = watch::channel(false);
        let looping = consume::Loop {
            consumer,
            topics: topics.iter().map(|topic| Arc::from(topic.as_str())).collect(),
            topic_node,
            nodes,
            answering,
            max_in_flight: config.max_in_flight,
            shutdown_timeout: config.shutdown_timeout,
            abandon,
        };
        let task = tokio::spawn(consume::run(looping, stopped));
        Ok(Self {
            stop,
            task,
            http,
            counters,
            pool: services.pool,
            routes: routes_of,
            pruning,
            tracing: services.tracing,
        })
    }

    /// Where `/metrics` and `/health/*` are served, if anywhere.
    pub fn http_address(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(ObservabilityServer::local_addr)
    }

    /// The counters so far.
    pub fn counters(&self) -> &HostCounters {
        &self.counters
    }

    /// Each served node's topics, by node name.
    pub fn routes(&self) -> &[(String, Routes)] {
        &self.routes
    }

    /// Whether the consume loop ended on its own (an error).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops fetching, finishes and publishes what runs, commits, leaves the group and stops
    /// serving HTTP, within the configured shutdown timeout (plus the producer flush).
    pub async fn shutdown(self) -> Result<HostReport, OnexError> {
        let _ = self.stop.send(true);
        let unanswered = self
            .task
            .await
            .map_err(|e| OnexError::new(ErrorCode::InternalError, format!("the consume loop failed: {e}")))??;
        if let Some(pruning) = self.pruning {
            pruning.abort();
        }
        self.pool.shutdown().await?;
        if let Some(http) = self.http {
            http.shutdown().await;
        }
        // Flushes the spans recorded so far (within its own 5 s limit).
        self.tracing.shutdown()?;
        Ok(HostReport { counters: self.counters, unanswered })
    }
}

/// Deletes expired stored answers every hour (the store pruned once when it opened).
async fn prune_hourly(store: Arc<AnswerStore>) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    every.tick().await;
    loop {
        every.tick().await;
        if let Err(e) = store.prune().await {
            tracing::warn!("cannot prune stored answers: {e}");
        }
    }
}
