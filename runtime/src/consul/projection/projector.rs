//! The projector: reads Consul through a [`ConsulClient`], builds the projection a
//! [`Selection`] asks for, and keeps it in a [`ProjectionCache`] whose watchers hold blocking
//! queries on what it read.
//!
//! Reads per selection (every read is a plain one; each answer's `X-Consul-Index` is kept for
//! the watchers):
//!
//! - services and health of named services: `/v1/health/service/:name` for each;
//! - of every service, and any topology: `/v1/catalog/services`, then
//!   `/v1/health/service/:name` for each service of the catalog (a topology needs them all:
//!   a service's Connect proxy is a service of its own);
//! - KV: `/v1/kv/:prefix?recurse` for each prefix, none nested in another.
//!
//! Health reads run `read_concurrency` at a time. The watchers have a client of their own,
//! built from the same configuration with one slot per watched source: a blocking query holds
//! its connection for minutes and must not take a slot the reads need.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::{StreamExt as _, TryStreamExt as _, stream};

use super::cache::{Built, CacheLimits, Projected, ProjectionCache, Source, Watcher};
use super::{
    HealthProjection, KvProjection, Selection, ServiceSnapshot, Topology, health_state, kv_state, service_state,
    topology,
};
use crate::consul::client::{ConsulClient, QueryOptions};
use crate::consul::types::KvPair;
use crate::error::OnexError;
use crate::models::consul::ConsulServiceHealth;

/// A built projection, one variant per [`Selection`] variant.
#[derive(Debug, Clone, PartialEq)]
pub enum Projection {
    /// Every selected service with its health.
    Services(Vec<ConsulServiceHealth>),
    /// Check counts and service health.
    Health(HealthProjection),
    /// The keys under the selected prefixes.
    Kv(KvProjection),
    /// The dependency graph.
    Topology(Topology),
}

/// How the projector reads and caches.
#[derive(Debug, Clone, Copy)]
pub struct ProjectorOptions {
    /// The cache's bounds.
    pub cache: CacheLimits,
    /// How long a watcher's blocking query waits for a change before asking again.
    pub watch_wait: Duration,
    /// Most health reads in flight for one projection.
    pub read_concurrency: usize,
}

impl Default for ProjectorOptions {
    /// The default cache bounds, blocking queries of 5 minutes (Consul's own default), 8 reads
    /// at a time.
    fn default() -> Self {
        Self { cache: CacheLimits::default(), watch_wait: Duration::from_secs(300), read_concurrency: 8 }
    }
}

/// Projections of live Consul state, cached while Consul's data does not change.
pub struct Projector {
    client: ConsulClient,
    cache: ProjectionCache<Selection, Projection>,
    read_concurrency: usize,
}

impl std::fmt::Debug for Projector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projector")
            .field("client", &self.client)
            .field("cache", &self.cache)
            .field("read_concurrency", &self.read_concurrency)
            .finish()
    }
}

impl Projector {
    /// A projector on `client` with the default options.
    pub fn new(client: ConsulClient) -> Result<Self, OnexError> {
        Self::with_options(client, ProjectorOptions::default())
    }

    /// A projector on `client`. Fails when the watchers' client cannot be built from its
    /// configuration.
    pub fn with_options(client: ConsulClient, options: ProjectorOptions) -> Result<Self, OnexError> {
        let watch_slots = options.cache.max_watched.max(1);
        let watch_client = ConsulClient::new(client.config().clone().with_pool_size(watch_slots))?;
        let watcher = Arc::new(ClientWatcher { client: watch_client, wait: options.watch_wait });
        Ok(Self {
            client,
            cache: ProjectionCache::new(watcher, options.cache),
            read_concurrency: options.read_concurrency.max(1),
        })
    }

    /// The projection `selection` asks for: from the cache when one no older than `max_age`
    /// is there (zero: a read that starts after `arrival`, when the request arrived), else
    /// read from Consul. Consul's errors are returned as the client reports them
    /// (`INTEGRATION_SERVICE_UNAVAILABLE` when it cannot be reached); nothing stands in for
    /// an answer Consul did not give.
    pub async fn project(
        &self,
        selection: Selection,
        max_age: Duration,
        arrival: Instant,
    ) -> Result<Projected<Projection>, OnexError> {
        let read = self.read(selection.clone());
        self.cache.get(selection, max_age, arrival, read).await
    }

    /// The cache (sizes, watched sources).
    pub fn cache(&self) -> &ProjectionCache<Selection, Projection> {
        &self.cache
    }

    async fn read(&self, selection: Selection) -> Result<Built<Projection>, OnexError> {
        match selection {
            Selection::Services { targets } => {
                let (snapshot, sources) = self.read_services(targets.as_ref()).await?;
                Ok(Built { value: Projection::Services(service_state(&snapshot)), sources })
            }
            Selection::Health { targets, states } => {
                let (snapshot, sources) = self.read_services(targets.as_ref()).await?;
                Ok(Built { value: Projection::Health(health_state(&snapshot, states.as_ref())), sources })
            }
            Selection::Kv { prefixes, include_values } => {
                let prefixes: Vec<String> = match prefixes {
                    Some(prefixes) => prefixes.into_iter().collect(),
                    None => vec![String::new()],
                };
                let mut pairs = Vec::new();
                let mut sources = Vec::with_capacity(prefixes.len());
                for prefix in prefixes {
                    let answer = self.client.kv_list(&prefix, QueryOptions::default()).await?;
                    pairs.extend(answer.value);
                    sources.push((Source::Kv(prefix), answer.index));
                }
                let projection = kv_state(pairs, include_values, KvPair::decoded_value)?;
                Ok(Built { value: Projection::Kv(projection), sources })
            }
            Selection::Topology { targets, depth } => {
                let (snapshot, sources) = self.read_services(None).await?;
                Ok(Built { value: Projection::Topology(topology(&snapshot, targets.as_ref(), depth)), sources })
            }
        }
    }

    /// The instances of `targets`, or of every service of the catalog.
    async fn read_services(
        &self,
        targets: Option<&BTreeSet<String>>,
    ) -> Result<(ServiceSnapshot, Vec<(Source, u64)>), OnexError> {
        let mut sources = Vec::new();
        let names: Vec<String> = match targets {
            Some(targets) => targets.iter().cloned().collect(),
            None => {
                let catalog = self.client.catalog_services(QueryOptions::default()).await?;
                sources.push((Source::Catalog, catalog.index));
                catalog.value.into_keys().collect()
            }
        };
        let answers: Vec<_> = stream::iter(names)
            .map(|name| async move {
                let answer = self.client.health_service(&name, QueryOptions::default()).await?;
                Ok::<_, OnexError>((name, answer))
            })
            .buffered(self.read_concurrency)
            .try_collect()
            .await?;
        let mut snapshot = ServiceSnapshot::default();
        for (name, answer) in answers {
            sources.push((Source::Health(name.clone()), answer.index));
            snapshot.services.insert(name, answer.value);
        }
        Ok((snapshot, sources))
    }
}

/// Blocking queries through the watchers' own client.
struct ClientWatcher {
    client: ConsulClient,
    wait: Duration,
}

impl Watcher for ClientWatcher {
    fn watch(&self, source: &Source, index: u64) -> BoxFuture<'static, Result<u64, OnexError>> {
        let client = self.client.clone();
        let source = source.clone();
        // Consul answers a blocking query on index 0 at once; its documentation asks clients
        // to block on at least 1.
        let query = QueryOptions::blocking(index.max(1), self.wait);
        Box::pin(async move {
            match &source {
                Source::Catalog => client.catalog_services(query).await.map(|answer| answer.index),
                Source::Health(service) => client.health_service(service, query).await.map(|answer| answer.index),
                Source::Kv(prefix) => client.kv_list(prefix, query).await.map(|answer| answer.index),
            }
        })
    }
}
