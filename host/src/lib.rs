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
//! - [`answer`]: one request, from decoding to an acknowledged answer or dead letter.

pub mod answer;
pub mod config;
pub mod consume;
pub mod counters;
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
use onex_runtime::{ErrorCode, NodeRegistry, OnexError};
use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::answer::{Answering, RecentIds, ServedNode};
use crate::config::HostConfig;
use crate::consume::HostContext;
pub use crate::counters::HostCounters;
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
        let services = services::build(&contracts, env).await?;
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
            namer: services.namer.clone(),
            counters: counters.clone(),
            max_attempts: config.max_attempts,
            retry_backoff: config.retry_backoff,
            source: format!("onex-host/{}", std::process::id()),
            recent: Mutex::new(RecentIds::default()),
            abandon: abandoned,
        });
        let (stop, stopped) = watch::channel(false);
        let looping = consume::Loop {
            consumer,
            topics,
            topic_node,
            nodes,
            answering,
            max_in_flight: config.max_in_flight,
            shutdown_timeout: config.shutdown_timeout,
            abandon,
        };
        let task = tokio::spawn(consume::run(looping, stopped));
        Ok(Self { stop, task, http, counters, pool: services.pool, routes: routes_of })
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
        self.pool.shutdown().await?;
        if let Some(http) = self.http {
            http.shutdown().await;
        }
        Ok(HostReport { counters: self.counters, unanswered })
    }
}
