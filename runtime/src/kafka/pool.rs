//! The producer pool: producers keyed by configuration, created lazily, replaced after a
//! fatal error, evicted when idle, flushed on shutdown.
//!
//! librdkafka's producer is thread-safe and batches internally, so the pool shares **one**
//! producer per configuration by default; `producers_per_config` > 1 only buys isolation
//! (see the benchmark in `tests/benches/kafka.rs` for what it costs or gains).

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use chrono::Utc;
use rdkafka::message::OwnedHeaders;

use crate::environment::{self, EnvSource, Environment};
use crate::error::{ErrorCode, OnexError};
use crate::kafka::batch::SendBatch;
use crate::kafka::config::{LibrdkafkaProperties, producer_config_from_env, producer_properties};
use crate::kafka::metrics::{PoolMetrics, pool_health};
use crate::kafka::producer::{Delivered, DeliveryFuture, ManagedProducer, ProduceRecord};
use crate::kafka::{series, trace};
use crate::metrics::MetricsRegistry;
use crate::models::health::{ComponentHealth, HealthStatus, HealthThresholds};
use crate::models::kafka::{KafkaProducerConfig, KafkaProducerPoolStats};
use crate::telemetry::Tracing;
use crate::telemetry::recorded::Leaf;

/// Pool-level settings (the per-producer ones live in [`KafkaProducerConfig`]).
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaPoolSettings {
    /// Name shown in stats, health and producer ids.
    pub pool_name: String,
    /// Producers per configuration; 1 (shared) unless isolation is wanted.
    pub producers_per_config: usize,
    /// Distinct configurations held at once; a new one beyond this evicts the least
    /// recently used idle one, or is refused.
    pub max_configs: usize,
    /// A configuration unused this long, with nothing in flight, is evicted.
    pub idle_timeout: Duration,
    /// Deadline of the flush in [`KafkaProducerPool::shutdown`] and of the metadata probe.
    pub shutdown_timeout: Duration,
    /// Health judges the error rate over this recent window, not since start.
    pub health_window: Duration,
    /// The deployment environment whose error-rate threshold health applies (see
    /// [`crate::kafka::metrics::pool_health`]).
    pub environment: Environment,
    /// An idempotent producer that waits this long for a producer id from a broker it can
    /// reach is replaced: librdkafka would wait forever when the broker never grants one.
    pub identity_stall_limit: Duration,
}

impl Default for KafkaPoolSettings {
    fn default() -> Self {
        Self {
            pool_name: "default".to_owned(),
            producers_per_config: 1,
            max_configs: 10,
            idle_timeout: Duration::from_secs(300),
            shutdown_timeout: Duration::from_secs(30),
            health_window: Duration::from_secs(60),
            environment: Environment::Development,
            identity_stall_limit: Duration::from_secs(30),
        }
    }
}

impl KafkaPoolSettings {
    /// Reads `KAFKA_POOL_NAME`, `KAFKA_POOL_PRODUCERS_PER_CONFIG`, `KAFKA_POOL_MAX_CONFIGS`,
    /// `KAFKA_POOL_IDLE_TIMEOUT_SECONDS`, `KAFKA_POOL_SHUTDOWN_TIMEOUT_SECONDS`,
    /// `KAFKA_POOL_HEALTH_WINDOW_SECONDS`, `KAFKA_POOL_IDENTITY_STALL_SECONDS`; the environment
    /// from [`Environment::detect`].
    pub fn from_env(env: &dyn EnvSource) -> Result<Self, OnexError> {
        let d = Self::default();
        let settings = Self {
            pool_name: env.var("KAFKA_POOL_NAME").filter(|v| !v.trim().is_empty()).unwrap_or(d.pool_name),
            producers_per_config: environment::parse_or(
                env,
                "KAFKA_POOL_PRODUCERS_PER_CONFIG",
                d.producers_per_config,
            )?,
            max_configs: environment::parse_or(env, "KAFKA_POOL_MAX_CONFIGS", d.max_configs)?,
            idle_timeout: Duration::from_secs(environment::parse_or(
                env,
                "KAFKA_POOL_IDLE_TIMEOUT_SECONDS",
                d.idle_timeout.as_secs(),
            )?),
            shutdown_timeout: Duration::from_secs(environment::parse_or(
                env,
                "KAFKA_POOL_SHUTDOWN_TIMEOUT_SECONDS",
                d.shutdown_timeout.as_secs(),
            )?),
            health_window: Duration::from_secs(environment::parse_or(
                env,
                "KAFKA_POOL_HEALTH_WINDOW_SECONDS",
                d.health_window.as_secs(),
            )?),
            environment: Environment::detect(env),
            identity_stall_limit: Duration::from_secs(environment::parse_or(
                env,
                "KAFKA_POOL_IDENTITY_STALL_SECONDS",
                d.identity_stall_limit.as_secs(),
            )?),
        };
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), OnexError> {
        if !(1..=64).contains(&self.producers_per_config) {
            return Err(OnexError::configuration(format!(
                "producers_per_config must be between 1 and 64, got {}",
                self.producers_per_config
            )));
        }
        if self.max_configs == 0 {
            return Err(OnexError::configuration("max_configs must be at least 1"));
        }
        if self.identity_stall_limit < Duration::from_secs(1) {
            return Err(OnexError::configuration("identity_stall_limit must be at least 1 s"));
        }
        Ok(())
    }
}

/// The producers of one configuration.
struct Group {
    config: KafkaProducerConfig,
    client: rdkafka::ClientConfig,
    slots: Vec<RwLock<Option<Arc<ManagedProducer>>>>,
    next: AtomicUsize,
    /// (messages admitted by the group's producers, milliseconds since pool start) as of the
    /// last look that saw that count change. Sends leave no timestamp (that would be a clock
    /// read per message); see [`KafkaProducerPool::last_used_ms`].
    last_use: Mutex<(u64, u64)>,
}

pub(crate) struct Inner {
    settings: KafkaPoolSettings,
    default_config: KafkaProducerConfig,
    metrics: Arc<PoolMetrics>,
    started: Instant,
    groups: Mutex<HashMap<u64, Vec<Arc<Group>>>>,
    default_group: RwLock<Option<Arc<Group>>>,
    /// Producers replaced after a fatal error, kept for stats until shutdown.
    quarantined: Mutex<Vec<Arc<ManagedProducer>>>,
    produced_ids: AtomicU64,
    closed: std::sync::atomic::AtomicBool,
}

impl Inner {
    /// The pool's counters.
    pub(crate) fn metrics(&self) -> &PoolMetrics {
        &self.metrics
    }

    /// The producers held now (their count is [`KafkaProducerPool::stats`]'s `total_producers`).
    pub(crate) fn live_producers(&self) -> Vec<Arc<ManagedProducer>> {
        let groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        groups
            .values()
            .flatten()
            .flat_map(|g| g.slots.iter().filter_map(|s| s.read().unwrap_or_else(|p| p.into_inner()).clone()))
            .collect()
    }
}

/// The Kafka producer pool service that `node_kafka_producer_pool_effect` resolves from the
/// container. Cheap to clone (shared state); there is no global instance.
#[derive(Clone)]
pub struct KafkaProducerPool {
    inner: Arc<Inner>,
    /// Spans of the messages sent through this handle (see `crate::kafka::trace`).
    tracing: Tracing,
}

/// What [`KafkaProducerPool::shutdown`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Producers closed.
    pub producers: usize,
    /// Messages still unreported when the deadline passed (0 means nothing was lost).
    pub undelivered: u64,
}

impl KafkaProducerPool {
    /// A pool whose default configuration is `config`. Validates the configuration; creates
    /// no producer until the first send.
    pub fn new(settings: KafkaPoolSettings, config: KafkaProducerConfig) -> Result<Self, OnexError> {
        settings.validate()?;
        producer_properties(&config)?;
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                default_config: config,
                metrics: Arc::new(PoolMetrics::default()),
                started: Instant::now(),
                groups: Mutex::default(),
                default_group: RwLock::default(),
                quarantined: Mutex::default(),
                produced_ids: AtomicU64::new(0),
                closed: std::sync::atomic::AtomicBool::new(false),
            }),
            tracing: Tracing::disabled(),
        })
    }

    /// Records a PRODUCER span per message with `tracing`, its context carried in the
    /// message's headers (see the module documentation of `crate::kafka::trace`); the default
    /// is [`Tracing::disabled`], and so is a `tracing` that switched Kafka spans off. Applies to
    /// this handle and the clones made from it after.
    pub fn with_tracing(mut self, tracing: Tracing) -> Self {
        self.tracing = tracing.for_kafka();
        self
    }

    /// The tracing the pool records its spans with.
    pub fn tracing(&self) -> &Tracing {
        &self.tracing
    }

    /// Registers the pool's series (see [`crate::kafka::series`]) in `registry`: its own
    /// counters, read at scrape time, so sending costs nothing more. Applies to the pool
    /// (every clone of this handle). A registry holds one pool's series: a second pool (or a
    /// second call) on the same registry is a `CONFIGURATION_ERROR` naming the family
    /// already there.
    pub fn with_metrics(self, registry: &MetricsRegistry) -> Result<Self, OnexError> {
        series::register(registry, Arc::downgrade(&self.inner))?;
        Ok(self)
    }

    /// A pool configured from the environment.
    pub fn from_env(env: &dyn EnvSource) -> Result<Self, OnexError> {
        Self::new(KafkaPoolSettings::from_env(env)?, producer_config_from_env(env)?)
    }

    /// The default producer configuration.
    pub fn default_config(&self) -> &KafkaProducerConfig {
        &self.inner.default_config
    }

    /// The pool settings.
    pub fn settings(&self) -> &KafkaPoolSettings {
        &self.inner.settings
    }

    /// Enqueues a message on the default configuration and returns the future of its
    /// delivery report. Awaiting this call only waits for backpressure (too many messages in
    /// flight), never for the broker; enqueue many, then await their futures.
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn would store its arguments twice in the future (see onex_runtime::node::dispatch)"
    )]
    pub fn send(
        &self,
        record: ProduceRecord<'_>,
        mut headers: Option<OwnedHeaders>,
    ) -> impl Future<Output = Result<DeliveryFuture, OnexError>> + Send {
        async move {
            if self.tracing.is_enabled() {
                // A sampled-out message only carries its trace context in `headers` and takes
                // the untraced path below; a recorded one goes the boxed way, so that the
                // untraced send's future keeps its size (a recorded message allocates its span
                // anyway).
                let span = trace::send_span(&self.tracing, &record, &mut headers);
                if span.is_recording() {
                    return Box::pin(self.send_traced(record, headers, span)).await;
                }
            }
            // The body of `send_untraced`, inline: awaiting it would move its future once more.
            let producer = self.default_producer()?;
            let report = producer.enqueue(record, headers, true).await?;
            report.ok_or_else(|| OnexError::new(ErrorCode::InternalError, "delivery report receiver missing"))
        }
    }

    async fn send_traced(
        &self,
        record: ProduceRecord<'_>,
        headers: Option<OwnedHeaders>,
        span: Leaf,
    ) -> Result<DeliveryFuture, OnexError> {
        finish_send(span, self.send_untraced(record, headers).await)
    }

    /// [`KafkaProducerPool::send`] without a span of its own (the caller's span covers the
    /// message and its headers carry that span's context).
    pub(crate) async fn send_untraced(
        &self,
        record: ProduceRecord<'_>,
        headers: Option<OwnedHeaders>,
    ) -> Result<DeliveryFuture, OnexError> {
        let producer = self.default_producer()?;
        let report = producer.enqueue(record, headers, true).await?;
        report.ok_or_else(|| OnexError::new(ErrorCode::InternalError, "delivery report receiver missing"))
    }

    /// Enqueues a message without a delivery future (fire and forget: the outcome lands in
    /// the stats; [`KafkaProducerPool::flush`] waits for it).
    pub async fn enqueue(&self, record: ProduceRecord<'_>, mut headers: Option<OwnedHeaders>) -> Result<(), OnexError> {
        // The span (when traced) covers the hand-off only: no delivery report reaches here.
        let mut span = if self.tracing.is_enabled() {
            trace::send_span(&self.tracing, &record, &mut headers)
        } else {
            Leaf::default()
        };
        let producer = self.default_producer();
        let enqueued = match producer {
            Ok(producer) => producer.enqueue(record, headers, false).await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = &enqueued {
            span.record_error(e);
        }
        enqueued
    }

    /// A batch of up to `len` messages for the default configuration, sent on one producer and
    /// awaited together: cheaper per message than [`KafkaProducerPool::send`] (no allocation
    /// and no wake-up per message), for callers that wait for a whole batch anyway.
    pub fn batch(&self, len: usize) -> Result<SendBatch, OnexError> {
        let batch = SendBatch::new(self.default_producer()?, len);
        Ok(if self.tracing.is_enabled() { batch.traced(&self.tracing) } else { batch })
    }

    /// Sends one message and waits for the broker's acknowledgement.
    pub async fn publish(
        &self,
        record: ProduceRecord<'_>,
        headers: Option<OwnedHeaders>,
    ) -> Result<Delivered, OnexError> {
        self.send(record, headers).await?.await
    }

    /// [`KafkaProducerPool::send`] on another configuration (another cluster, other
    /// credentials); its producers are created on first use.
    pub async fn send_with(
        &self,
        config: &KafkaProducerConfig,
        record: ProduceRecord<'_>,
        mut headers: Option<OwnedHeaders>,
    ) -> Result<DeliveryFuture, OnexError> {
        let span = if self.tracing.is_enabled() {
            trace::send_span(&self.tracing, &record, &mut headers)
        } else {
            Leaf::default()
        };
        let sent = async {
            let producer = self.producer_for(config)?;
            let report = producer.enqueue(record, headers, true).await?;
            report.ok_or_else(|| OnexError::new(ErrorCode::InternalError, "delivery report receiver missing"))
        };
        finish_send(span, sent.await)
    }

    fn default_producer(&self) -> Result<Arc<ManagedProducer>, OnexError> {
        // Picked under the read guard: no reference count traffic on the hot path.
        if let Some(group) = self.inner.default_group.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
            return self.pick(group);
        }
        let group = self.group_for(&self.inner.default_config)?;
        *self.inner.default_group.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&group));
        self.pick(&group)
    }

    fn producer_for(&self, config: &KafkaProducerConfig) -> Result<Arc<ManagedProducer>, OnexError> {
        if *config == self.inner.default_config {
            return self.default_producer();
        }
        let group = self.group_for(config)?;
        self.pick(&group)
    }

    fn check_open(&self) -> Result<(), OnexError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(OnexError::new(
                ErrorCode::IntegrationServiceUnavailable,
                format!("Kafka producer pool '{}' is shut down", self.inner.settings.pool_name),
            ));
        }
        Ok(())
    }

    fn group_for(&self, config: &KafkaProducerConfig) -> Result<Arc<Group>, OnexError> {
        self.check_open()?;
        let key = config_key(config);
        let mut groups = self.inner.groups.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(group) = groups.get(&key).and_then(|list| list.iter().find(|g| g.config == *config)) {
            return Ok(Arc::clone(group));
        }
        let held: usize = groups.values().map(Vec::len).sum();
        if held >= self.inner.settings.max_configs && !self.evict_lru_idle(&mut groups) {
            return Err(OnexError::new(
                ErrorCode::IntegrationServiceUnavailable,
                format!(
                    "Kafka producer pool '{}' already holds {} configurations, all busy",
                    self.inner.settings.pool_name, held
                ),
            ));
        }
        let props: LibrdkafkaProperties = producer_properties(config)?;
        let group = Arc::new(Group {
            config: config.clone(),
            client: props.to_client_config(),
            slots: (0..self.inner.settings.producers_per_config).map(|_| RwLock::new(None)).collect(),
            next: AtomicUsize::new(0),
            last_use: Mutex::new((0, self.now_ms())),
        });
        groups.entry(key).or_default().push(Arc::clone(&group));
        Ok(group)
    }

    /// Picks the next producer of `group` round-robin, creating it lazily and replacing a
    /// quarantined one.
    fn pick(&self, group: &Group) -> Result<Arc<ManagedProducer>, OnexError> {
        let index =
            if group.slots.len() == 1 { 0 } else { group.next.fetch_add(1, Ordering::Relaxed) % group.slots.len() };
        let slot = &group.slots[index];
        if let Some(producer) = slot.read().unwrap_or_else(|p| p.into_inner()).as_ref()
            && !producer.is_quarantined()
        {
            return Ok(Arc::clone(producer));
        }
        self.check_open()?;
        let mut slot = slot.write().unwrap_or_else(|p| p.into_inner());
        match slot.as_ref() {
            Some(producer) if !producer.is_quarantined() => return Ok(Arc::clone(producer)),
            Some(producer) => {
                tracing::warn!(producer = %producer.state.id, "replacing quarantined Kafka producer");
                producer.close();
                self.inner.quarantined.lock().unwrap_or_else(|p| p.into_inner()).push(Arc::clone(producer));
            }
            None => {}
        }
        let n = self.inner.produced_ids.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}_producer_{n}_{:08x}", self.inner.settings.pool_name, rand_suffix());
        let producer = Arc::new(ManagedProducer::create(
            id,
            &group.client,
            group.config.max_in_flight_messages,
            Duration::from_millis(u64::from(group.config.delivery_timeout_ms)),
            self.inner.settings.identity_stall_limit,
            Arc::clone(&self.inner.metrics),
        )?);
        ManagedProducer::spawn_watchdog(&producer);
        *slot = Some(Arc::clone(&producer));
        Ok(producer)
    }

    fn evict_lru_idle(&self, groups: &mut HashMap<u64, Vec<Arc<Group>>>) -> bool {
        let victim = groups
            .iter()
            .flat_map(|(key, list)| list.iter().map(move |g| (*key, g)))
            .filter(|(_, g)| group_in_flight(g) == 0)
            .min_by_key(|(_, g)| self.last_used_ms(g))
            .map(|(key, g)| (key, Arc::clone(g)));
        match victim {
            Some((key, group)) => {
                self.remove_group(groups, key, &group);
                true
            }
            None => false,
        }
    }

    fn remove_group(&self, groups: &mut HashMap<u64, Vec<Arc<Group>>>, key: u64, group: &Arc<Group>) {
        if let Some(list) = groups.get_mut(&key) {
            list.retain(|g| !Arc::ptr_eq(g, group));
            if list.is_empty() {
                groups.remove(&key);
            }
        }
        let mut default = self.inner.default_group.write().unwrap_or_else(|p| p.into_inner());
        if default.as_ref().is_some_and(|d| Arc::ptr_eq(d, group)) {
            *default = None;
        }
        for slot in &group.slots {
            if let Some(producer) = slot.write().unwrap_or_else(|p| p.into_inner()).take() {
                tracing::info!(producer = %producer.state.id, "evicting idle Kafka producer");
                producer.close();
            }
        }
    }

    /// Evicts configurations unused for `idle_timeout` with nothing in flight. Returns how many
    /// were evicted. [`KafkaProducerPool::spawn_reaper`] calls this periodically.
    pub fn evict_idle(&self) -> usize {
        let now = self.now_ms();
        let idle_ms = self.inner.settings.idle_timeout.as_millis() as u64;
        let mut groups = self.inner.groups.lock().unwrap_or_else(|p| p.into_inner());
        let idle: Vec<(u64, Arc<Group>)> = groups
            .iter()
            .flat_map(|(key, list)| list.iter().map(move |g| (*key, Arc::clone(g))))
            .filter(|(_, g)| now.saturating_sub(self.last_used_ms(g)) >= idle_ms && group_in_flight(g) == 0)
            .collect();
        for (key, group) in &idle {
            self.remove_group(&mut groups, *key, group);
        }
        idle.len()
    }

    /// Runs [`KafkaProducerPool::evict_idle`] every `interval` on the current tokio runtime
    /// until the pool is dropped or shut down.
    pub fn spawn_reaper(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let pool = KafkaProducerPool { inner, tracing: Tracing::disabled() };
                if pool.inner.closed.load(Ordering::Acquire) {
                    return;
                }
                let evicted = pool.evict_idle();
                if evicted > 0 {
                    tracing::info!(pool = %pool.inner.settings.pool_name, evicted, "evicted idle Kafka producers");
                }
            }
        })
    }

    fn live_producers(&self) -> Vec<Arc<ManagedProducer>> {
        self.inner.live_producers()
    }

    /// Waits until every message enqueued so far is reported, or `timeout` passes. Returns
    /// `OPERATION_TIMEOUT` with the count still unreported.
    pub async fn flush(&self, timeout: Duration) -> Result<(), OnexError> {
        let producers = self.live_producers();
        let left = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + timeout;
            producers
                .iter()
                .map(|p| u64::from(p.flush_blocking(deadline.saturating_duration_since(Instant::now()))))
                .sum::<u64>()
        })
        .await
        .map_err(|e| OnexError::new(ErrorCode::InternalError, format!("flush task failed: {e}")))?;
        if left > 0 {
            return Err(OnexError::new(
                ErrorCode::OperationTimeout,
                format!("{left} Kafka messages were still unreported after {timeout:?}"),
            )
            .with_detail("undelivered", left));
        }
        Ok(())
    }

    /// Refuses new messages, flushes everything enqueued within `shutdown_timeout`, then
    /// closes the producers. `undelivered` is non-zero only if the deadline passed.
    pub async fn shutdown(&self) -> Result<ShutdownReport, OnexError> {
        self.inner.closed.store(true, Ordering::Release);
        let producers = self.live_producers();
        for producer in &producers {
            producer.close();
        }
        let count = producers.len();
        let timeout = self.inner.settings.shutdown_timeout;
        let flushed = self.flush(timeout).await;
        let undelivered = match &flushed {
            Ok(()) => 0,
            Err(e) => e.details().get("undelivered").and_then(serde_json::Value::as_u64).unwrap_or(0),
        };
        let mut groups = self.inner.groups.lock().unwrap_or_else(|p| p.into_inner());
        let all: Vec<(u64, Arc<Group>)> =
            groups.iter().flat_map(|(k, list)| list.iter().map(move |g| (*k, Arc::clone(g)))).collect();
        for (key, group) in &all {
            self.remove_group(&mut groups, *key, group);
        }
        drop(groups);
        self.inner.quarantined.lock().unwrap_or_else(|p| p.into_inner()).clear();
        Ok(ShutdownReport { producers: count, undelivered })
    }

    /// Statistics from the real counters.
    pub fn stats(&self) -> KafkaProducerPoolStats {
        self.stats_and_recent_error_rate().0
    }

    /// The error rate (percent) above which health turns unhealthy: the environment's.
    fn error_rate_threshold_percent(&self) -> f64 {
        HealthThresholds::for_environment(self.inner.settings.environment).error_rate_percent
    }

    /// [`KafkaProducerPool::stats`] and the error rate over the health window it was judged on.
    fn stats_and_recent_error_rate(&self) -> (KafkaProducerPoolStats, f64) {
        let producers = self.live_producers();
        let traffic = self.inner.metrics.traffic(self.inner.settings.health_window);
        let quarantined_live = producers.iter().filter(|p| p.is_quarantined()).count() as u32;
        let replaced = self.inner.quarantined.lock().unwrap_or_else(|p| p.into_inner()).len() as u32;
        let total = producers.len() as u32;
        let active = producers.iter().filter(|p| p.in_flight() > 0).count() as u32;
        let failed = quarantined_live + replaced;
        // Replaced producers no longer serve, so they weigh on health only while live.
        let health = pool_health(
            total,
            quarantined_live,
            traffic.recent_success_rate,
            traffic.brokers_down,
            self.error_rate_threshold_percent(),
        );
        let stats = KafkaProducerPoolStats {
            pool_name: self.inner.settings.pool_name.clone(),
            total_producers: total,
            active_producers: active,
            idle_producers: total - active,
            failed_producers: failed,
            total_messages_sent: traffic.sent,
            total_messages_failed: traffic.failed,
            total_bytes_sent: traffic.bytes,
            queue_depth: traffic.queue_depth,
            queue_full_events: traffic.queue_full_events,
            messages_per_second: traffic.messages_per_second,
            average_delivery_ms: traffic.average_delivery_ms,
            p50_delivery_ms: traffic.p50_delivery_ms,
            p99_delivery_ms: traffic.p99_delivery_ms,
            success_rate: traffic.success_rate,
            error_rate: 100.0 - traffic.success_rate,
            pool_health: health,
            uptime_seconds: traffic.uptime_seconds,
            topics: traffic.topics,
        };
        (stats, 100.0 - traffic.recent_success_rate)
    }

    /// Health from the counters alone (no I/O): see [`crate::kafka::metrics::pool_health`].
    pub fn health(&self) -> ComponentHealth {
        let started = Instant::now();
        let (stats, recent_error_rate) = self.stats_and_recent_error_rate();
        self.component_health(stats, recent_error_rate, Vec::new(), started)
    }

    /// Health from the counters plus a metadata round trip to the brokers (bounded by
    /// `shutdown_timeout`, at most 5 s): unreachable brokers make the pool unhealthy.
    pub async fn health_check(&self) -> ComponentHealth {
        self.health_check_within(self.inner.settings.shutdown_timeout.min(Duration::from_secs(5))).await
    }

    /// [`KafkaProducerPool::health_check`] with the metadata round trip bounded by `limit`, so
    /// a caller with a deadline of its own (a health probe) does not leave a blocking thread
    /// waiting on the brokers after it has given up.
    pub async fn health_check_within(&self, limit: Duration) -> ComponentHealth {
        let started = Instant::now();
        let mut errors = Vec::new();
        let probe_timeout = limit;
        match self.default_producer() {
            Ok(producer) => {
                let probe = tokio::task::spawn_blocking(move || producer.probe_blocking(probe_timeout)).await;
                match probe {
                    Ok(Ok(_brokers)) => {}
                    Ok(Err(e)) => errors.push(e.to_string()),
                    Err(e) => errors.push(format!("metadata probe task failed: {e}")),
                }
            }
            Err(e) => errors.push(e.to_string()),
        }
        let (mut stats, recent_error_rate) = self.stats_and_recent_error_rate();
        if !errors.is_empty() {
            stats.pool_health = HealthStatus::Unhealthy;
        }
        self.component_health(stats, recent_error_rate, errors, started)
    }

    fn component_health(
        &self,
        stats: KafkaProducerPoolStats,
        recent_error_rate: f64,
        mut errors: Vec<String>,
        started: Instant,
    ) -> ComponentHealth {
        let threshold = self.error_rate_threshold_percent();
        let environment = self.inner.settings.environment;
        if recent_error_rate > threshold {
            errors.push(format!(
                "error rate {recent_error_rate:.2} % over the last {}s is above the {environment} threshold of \
                 {threshold} %",
                self.inner.settings.health_window.as_secs()
            ));
        }
        for producer in self.inner.quarantined.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            errors.push(format!(
                "producer {} quarantined: {}",
                producer.state.id,
                producer.state.fatal_reason().unwrap_or_default()
            ));
        }
        if stats.total_messages_failed > 0 {
            errors.push(format!(
                "{} deliveries failed ({:.2} % error rate)",
                stats.total_messages_failed, stats.error_rate
            ));
        }
        let mut metrics = serde_json::Map::new();
        if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(&stats) {
            metrics = map;
        }
        let errors_per_producer: u64 = self.live_producers().iter().map(|p| p.state.error_count()).sum();
        metrics.insert("librdkafka_errors".into(), errors_per_producer.into());
        metrics.insert("recent_error_rate_percent".into(), recent_error_rate.into());
        metrics.insert("error_rate_threshold_percent".into(), threshold.into());
        ComponentHealth {
            component: "kafka".into(),
            status: stats.pool_health,
            checked_at: Utc::now(),
            response_time_ms: started.elapsed().as_secs_f64() * 1000.0,
            errors,
            metrics,
        }
    }

    /// When `group` last sent, in milliseconds since pool start: the time of the first look
    /// after its producers' admitted count changed. So it lags by at most the interval between
    /// looks (the reaper's), which idle eviction tolerates.
    fn last_used_ms(&self, group: &Group) -> u64 {
        let activity: u64 = group
            .slots
            .iter()
            .filter_map(|s| s.read().unwrap_or_else(|p| p.into_inner()).clone())
            .map(|p| p.admitted())
            .sum();
        let mut last_use = group.last_use.lock().unwrap_or_else(|p| p.into_inner());
        if last_use.0 != activity {
            *last_use = (activity, self.now_ms());
        }
        last_use.1
    }

    fn now_ms(&self) -> u64 {
        self.inner.started.elapsed().as_millis() as u64
    }

    #[cfg(test)]
    pub(crate) fn default_producer_for_test(&self) -> Arc<ManagedProducer> {
        self.default_producer().expect("default producer")
    }
}

impl std::fmt::Debug for KafkaProducerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaProducerPool")
            .field("pool_name", &self.inner.settings.pool_name)
            .field("bootstrap_servers", &self.inner.default_config.bootstrap_servers)
            .field("producers", &self.live_producers().len())
            .finish()
    }
}

/// Hands the message's span (if recorded) to its delivery future, or records the refusal.
fn finish_send(mut span: Leaf, sent: Result<DeliveryFuture, OnexError>) -> Result<DeliveryFuture, OnexError> {
    match sent {
        _ if !span.is_recording() => sent,
        Ok(delivery) => Ok(delivery.with_span(span)),
        Err(e) => {
            span.record_error(&e);
            Err(e)
        }
    }
}

fn group_in_flight(group: &Group) -> u32 {
    group.slots.iter().filter_map(|s| s.read().unwrap_or_else(|p| p.into_inner()).clone()).map(|p| p.in_flight()).sum()
}

/// A stable key for a configuration, secrets included (two credentials must not share a
/// producer). Only the hash is kept as a key; equality is checked on the full config.
fn config_key(config: &KafkaProducerConfig) -> u64 {
    let mut hasher = DefaultHasher::new();
    serde_json::to_string(config).unwrap_or_default().hash(&mut hasher);
    hasher.finish()
}

fn rand_suffix() -> u32 {
    uuid::Uuid::new_v4().as_u128() as u32
}
