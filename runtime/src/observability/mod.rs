//! Infrastructure observability: recorded metrics, alerts and a health score, with a collector
//! task that watches the circuit breakers.
//!
//! [`Observability`] ties the parts together, each in a module of its own:
//! - [`store`]: recorded samples (the latest per series), the last 1000 event latencies and
//!   the last 100 error rates per service, with retention by hours;
//! - `export`: the recorded series in the process's [`MetricsRegistry`], one sample per series;
//! - [`alerts`]: alerts de-duplicated by name while unresolved, resolved by id;
//! - [`rules`]: which readings raise which alert;
//! - [`score`]: the weighted health score;
//! - `collector`: the task that reads the breakers every interval and on each transition;
//! - [`names`]: what a recorded sample may be; [`stats`]: percentiles; [`clock`]: the wall
//!   clock, replaceable in tests.
//!
//! The collector runs only between [`Observability::start`] and [`Observability::stop`] (or
//! the drop of the `Observability`). Figures the services keep themselves (pool counts,
//! breaker counters, node operations) are not copied here: they are series of their own in
//! the registry, and [`Observability::export`] writes the registry whole.

pub mod alerts;
pub mod clock;
mod collector;
mod export;
pub mod names;
pub mod rules;
pub mod score;
pub mod stats;
pub mod store;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::TimeDelta;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

pub use self::alerts::{AlertBook, AlertSpec, Raised};
pub use self::clock::{Clock, ManualClock, SystemClock};
pub use self::collector::QUEUE_READ_TIMEOUT;
pub use self::score::HealthScore;
pub use self::store::{LatencyFigures, MetricStore, PerformanceTrends};
use crate::circuit_breaker::{CircuitBreaker, GuardedPublisher, Transition};
use crate::error::OnexError;
use crate::metrics::MetricsRegistry;
use crate::models::observability::{Alert, AlertSeverity, MetricPoint, MetricType};

/// Longest retention accepted, hours (a year).
pub const MAX_RETENTION_HOURS: u32 = 24 * 366;

/// Settings of an [`Observability`].
#[derive(Debug, Clone, PartialEq)]
pub struct ObservabilityConfig {
    /// Hours samples and alerts are kept (1 to [`MAX_RETENTION_HOURS`]; default 24).
    pub retention_hours: u32,
    /// Time between collector passes (more than zero; default 30 s).
    pub collect_interval: Duration,
}

impl Default for ObservabilityConfig {
    fn default() -> Self {
        Self { retention_hours: 24, collect_interval: Duration::from_secs(30) }
    }
}

impl ObservabilityConfig {
    /// Checks the settings; a `CONFIGURATION_ERROR` names the one out of range.
    pub fn validate(&self) -> Result<(), OnexError> {
        if !(1..=MAX_RETENTION_HOURS).contains(&self.retention_hours) {
            return Err(OnexError::configuration(format!(
                "retention_hours is {}; it must be 1 to {MAX_RETENTION_HOURS}",
                self.retention_hours
            ))
            .with_detail("field", "retention_hours"));
        }
        if self.collect_interval.is_zero() {
            return Err(OnexError::configuration("collect_interval must be more than zero")
                .with_detail("field", "collect_interval"));
        }
        Ok(())
    }

    fn retention(&self) -> TimeDelta {
        TimeDelta::hours(i64::from(self.retention_hours))
    }
}

/// The health score with the figures behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthSummary {
    /// The score and its parts.
    pub score: HealthScore,
    /// The event latency figures (the score uses `current_seconds`, 0 without samples).
    pub latency: LatencyFigures,
    /// The error rate the score uses: the highest latest rate of any service (a fraction;
    /// 0 without rates).
    pub error_rate: f64,
    /// Unresolved alerts.
    pub active_alerts: usize,
}

/// Recorded metrics, alerts, the health score and the collector task of one process (or one
/// node).
pub struct Observability {
    inner: Arc<Inner>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// What the collector task shares with the handle.
pub(crate) struct Inner {
    store: MetricStore,
    alerts: AlertBook,
    watched: Mutex<Vec<Watched>>,
    /// Transitions subscribed at registration, not yet taken by the task.
    subscriptions: Mutex<Vec<Subscription>>,
    /// Collector passes completed.
    passes: watch::Sender<u64>,
}

/// A watched breaker (and the publisher whose queue it guards, if any).
#[derive(Clone)]
pub(crate) struct Watched {
    name: String,
    breaker: Arc<CircuitBreaker>,
    publisher: Option<Arc<GuardedPublisher>>,
}

/// A breaker's transitions, subscribed when it was registered.
pub(crate) struct Subscription {
    name: String,
    breaker: Arc<CircuitBreaker>,
    receiver: broadcast::Receiver<Transition>,
}

impl Inner {
    fn watched(&self) -> Vec<Watched> {
        lock(&self.watched).clone()
    }

    fn take_subscriptions(&self) -> Vec<Subscription> {
        std::mem::take(&mut *lock(&self.subscriptions))
    }
}

/// Locks `mutex`; the values behind these locks are replaced whole, so a panic elsewhere
/// cannot have left one torn.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Observability {
    /// An instance exporting through `registry`, on the system clock. The collector is not
    /// running until [`Observability::start`].
    pub fn new(registry: Arc<MetricsRegistry>, config: &ObservabilityConfig) -> Result<Self, OnexError> {
        Self::with_clock(registry, config, Arc::new(SystemClock))
    }

    /// An instance on `clock` (tests of retention).
    pub fn with_clock(
        registry: Arc<MetricsRegistry>,
        config: &ObservabilityConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, OnexError> {
        config.validate()?;
        let retention = config.retention();
        let inner = Inner {
            store: MetricStore::new(registry, Arc::clone(&clock), retention),
            alerts: AlertBook::new(clock, retention),
            watched: Mutex::new(Vec::new()),
            subscriptions: Mutex::new(Vec::new()),
            passes: watch::Sender::new(0),
        };
        Ok(Self { inner: Arc::new(inner), task: Mutex::new(None) })
    }

    /// Watches `breaker` under `name` (its alert is `circuit_breaker_open_{name}`). A breaker
    /// already watched (under any name) is left as it is.
    pub fn register_circuit_breaker(&self, name: &str, breaker: Arc<CircuitBreaker>) -> Result<(), OnexError> {
        self.watch(Watched { name: name.to_owned(), breaker, publisher: None })
    }

    /// Watches `publisher`'s breaker and its outbox queue under `name` (alerts
    /// `circuit_breaker_open_{name}`, `queue_utilization_high_{name}`,
    /// `dead_letter_queue_high_{name}`).
    pub fn register_guarded_publisher(&self, name: &str, publisher: Arc<GuardedPublisher>) -> Result<(), OnexError> {
        let breaker = Arc::clone(publisher.breaker());
        self.watch(Watched { name: name.to_owned(), breaker, publisher: Some(publisher) })
    }

    fn watch(&self, watched: Watched) -> Result<(), OnexError> {
        let name = &watched.name;
        if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(OnexError::configuration(format!(
                "a watched breaker's name is 1 to 64 letters, digits or `_` (it names its alerts); '{}' is not",
                names::shorten(name)
            )));
        }
        let mut all = lock(&self.inner.watched);
        if all.iter().any(|w| Arc::ptr_eq(&w.breaker, &watched.breaker)) {
            return Ok(());
        }
        if all.iter().any(|w| w.name == *name) {
            return Err(OnexError::configuration(format!("a breaker named '{name}' is already watched")));
        }
        lock(&self.inner.subscriptions).push(Subscription {
            name: name.clone(),
            breaker: Arc::clone(&watched.breaker),
            receiver: watched.breaker.subscribe(),
        });
        all.push(watched);
        Ok(())
    }

    /// The names of the watched breakers, in registration order.
    pub fn watched_breakers(&self) -> Vec<String> {
        self.inner.watched().into_iter().map(|w| w.name).collect()
    }

    /// The metric store.
    pub fn store(&self) -> &MetricStore {
        &self.inner.store
    }

    /// The alert book.
    pub fn alert_book(&self) -> &AlertBook {
        &self.inner.alerts
    }

    /// Records one sample ([`MetricStore::record_metric`]).
    pub fn record_metric(
        &self,
        name: &str,
        value: f64,
        kind: MetricType,
        labels: BTreeMap<String, String>,
    ) -> Result<MetricPoint, OnexError> {
        self.inner.store.record_metric(name, value, kind, labels)
    }

    /// Records the latency of one event publish.
    pub fn record_event_latency(&self, latency: Duration) -> Result<MetricPoint, OnexError> {
        self.inner.store.record_event_latency(latency)
    }

    /// Records the error rate (a fraction) of `service`.
    pub fn record_error_rate(&self, service: &str, rate: f64) -> Result<MetricPoint, OnexError> {
        self.inner.store.record_error_rate(service, rate)
    }

    /// The health score now, from the watched breakers' states, the current event latency and
    /// the highest latest error rate.
    pub fn health_summary(&self) -> HealthSummary {
        let states = self.inner.watched().into_iter().map(|w| w.breaker.state());
        let circuit = score::circuits_score(states);
        let latency = self.inner.store.latency();
        let error_rate = self.inner.store.latest_error_rates().into_iter().map(|(_, rate)| rate).fold(0.0, f64::max);
        HealthSummary {
            score: score::health_score(circuit, latency.current_seconds.unwrap_or(0.0), error_rate),
            latency,
            error_rate,
            active_alerts: self.inner.alerts.active_count(),
        }
    }

    /// Raises an alert of one's own (de-duplicated by name like the collector's).
    pub fn raise_alert(&self, spec: AlertSpec) -> Raised {
        self.inner.alerts.raise(spec)
    }

    /// The alerts of `severity` (all when `None`), only unresolved ones when `active_only`,
    /// newest first.
    pub fn alerts(&self, severity: Option<AlertSeverity>, active_only: bool) -> Vec<Alert> {
        self.inner.alerts.alerts(severity, active_only)
    }

    /// Resolves the alert `id` (`NOT_FOUND` for an unknown id).
    pub fn resolve_alert(&self, id: &str) -> Result<Alert, OnexError> {
        self.inner.alerts.resolve(id)
    }

    /// The registry's whole exposition (OpenMetrics text ending `# EOF`): the services' own
    /// series and the recorded ones.
    pub fn export(&self) -> Result<String, OnexError> {
        self.inner.store.registry().encode()
    }

    /// Starts the collector, one pass now and then one every `interval`. Idempotent: a running
    /// collector keeps its interval. Outside a tokio runtime it is a `CONFIGURATION_ERROR`.
    pub fn start(&self, interval: Duration) -> Result<(), OnexError> {
        if interval.is_zero() {
            return Err(OnexError::configuration("the collector interval must be more than zero")
                .with_detail("field", "collect_interval"));
        }
        let mut task = lock(&self.task);
        if task.as_ref().is_some_and(|t| !t.is_finished()) {
            return Ok(());
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            OnexError::configuration("the observability collector needs a tokio runtime: start it from inside one")
        })?;
        *task = Some(runtime.spawn(collector::run(Arc::clone(&self.inner), interval)));
        Ok(())
    }

    /// Stops the collector (a pass in progress is cut short; what it raised stays).
    pub fn stop(&self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }

    /// Whether the collector is running.
    pub fn is_running(&self) -> bool {
        lock(&self.task).as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Runs one collector pass now, whether or not the collector is running.
    pub async fn collect_now(&self) {
        collector::collect_pass(&self.inner).await;
    }

    /// The number of collector passes completed, as a channel that changes after each one;
    /// it closes once the collector has stopped and this instance is gone.
    pub fn passes(&self) -> watch::Receiver<u64> {
        self.inner.passes.subscribe()
    }
}

impl Drop for Observability {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for Observability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observability")
            .field("store", &self.inner.store)
            .field("alerts", &self.inner.alerts)
            .field("watched", &self.watched_breakers())
            .field("running", &self.is_running())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::environment::Environment;
    use crate::error::ErrorCode;
    use crate::models::circuit_breaker::CircuitBreakerConfig;
    use crate::models::health::HealthStatus;

    fn breaker() -> Arc<CircuitBreaker> {
        Arc::new(CircuitBreaker::new(CircuitBreakerConfig::for_environment(Environment::Development)).unwrap())
    }

    fn observability() -> Observability {
        Observability::new(Arc::new(MetricsRegistry::new("test")), &ObservabilityConfig::default()).unwrap()
    }

    async fn wait_for_passes(observability: &Observability, at_least: u64) {
        let mut passes = observability.passes();
        passes.wait_for(|n| *n >= at_least).await.expect("the collector is gone");
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_raises_one_critical_alert_across_passes() {
        let observability = observability();
        let breaker = breaker();
        observability.register_circuit_breaker("event_bus", Arc::clone(&breaker)).unwrap();
        observability.start(Duration::from_secs(30)).unwrap();
        breaker.force_open();
        wait_for_passes(&observability, 5).await;
        let alerts = observability.alerts(None, true);
        assert_eq!(alerts.len(), 1, "{alerts:#?}");
        assert_eq!(alerts[0].name, "circuit_breaker_open_event_bus");
        assert_eq!(alerts[0].severity, AlertSeverity::Critical);
        assert!(alerts[0].occurrences >= 5, "{alerts:#?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_opening_raises_its_alert_at_once_not_at_the_next_pass() {
        let observability = observability();
        let breaker = breaker();
        observability.register_circuit_breaker("db", Arc::clone(&breaker)).unwrap();
        observability.start(Duration::from_secs(3600)).unwrap();
        wait_for_passes(&observability, 1).await;
        breaker.force_open();
        let mut waited = 0;
        while observability.alerts(Some(AlertSeverity::Critical), true).is_empty() {
            assert!(waited < 1000, "no alert after {waited} ms of paused time");
            tokio::time::sleep(Duration::from_millis(1)).await;
            waited += 1;
        }
        assert_eq!(*observability.passes().borrow(), 1, "the alert waited for a pass");
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_or_dropping_ends_the_collector() {
        let observability = observability();
        observability.start(Duration::from_secs(1)).unwrap();
        assert!(observability.is_running());
        wait_for_passes(&observability, 2).await;
        observability.stop();
        assert!(!observability.is_running());
        let stopped_at = *observability.passes().borrow();
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(*observability.passes().borrow(), stopped_at, "passes ran after stop");

        observability.start(Duration::from_secs(1)).unwrap();
        let mut passes = observability.passes();
        drop(observability);
        // The channel closes once the aborted task has let go of everything.
        while passes.changed().await.is_ok() {}
    }

    #[test]
    fn starting_outside_a_runtime_is_a_configuration_error() {
        let error = observability().start(Duration::from_secs(1)).unwrap_err();
        assert_eq!(error.code(), ErrorCode::ConfigurationError);
    }

    #[test]
    fn settings_out_of_range_are_refused_with_the_field_named() {
        for (config, field) in [
            (ObservabilityConfig { retention_hours: 0, ..ObservabilityConfig::default() }, "retention_hours"),
            (
                ObservabilityConfig { collect_interval: Duration::ZERO, ..ObservabilityConfig::default() },
                "collect_interval",
            ),
        ] {
            let error = Observability::new(Arc::new(MetricsRegistry::new("t")), &config).unwrap_err();
            assert_eq!(error.code(), ErrorCode::ConfigurationError);
            assert_eq!(error.details()["field"], field);
        }
    }

    #[tokio::test]
    async fn the_health_summary_scores_the_watched_breakers_latency_and_worst_error_rate() {
        let observability = observability();
        let breaker = breaker();
        observability.register_circuit_breaker("event_bus", Arc::clone(&breaker)).unwrap();
        for _ in 0..10 {
            observability.record_event_latency(Duration::from_millis(200)).unwrap();
        }
        observability.record_error_rate("db", 0.02).unwrap();
        observability.record_error_rate("kafka", 0.01).unwrap();
        // 0.4·100 + 0.3·(100 − 0.2·100) + 0.3·(100 − 0.02·1000) = 88.
        let summary = observability.health_summary();
        assert!((summary.score.score - 88.0).abs() < 1e-9, "{summary:?}");
        assert_eq!(summary.score.status, HealthStatus::Degraded);
        assert_eq!(summary.error_rate, 0.02);
        breaker.force_open();
        // 0 + 24 + 24.
        let summary = observability.health_summary();
        assert!((summary.score.score - 48.0).abs() < 1e-9, "{summary:?}");
        assert_eq!(summary.score.status, HealthStatus::Unhealthy);
        assert_eq!(summary.active_alerts, 0, "no collector ran, so no alert yet");
        observability.collect_now().await;
        assert_eq!(observability.health_summary().active_alerts, 1);
    }

    #[tokio::test]
    async fn a_breaker_is_watched_once_and_names_stay_distinct() {
        let observability = observability();
        let breaker = breaker();
        observability.register_circuit_breaker("a", Arc::clone(&breaker)).unwrap();
        observability.register_circuit_breaker("b", Arc::clone(&breaker)).unwrap();
        assert_eq!(observability.watched_breakers(), ["a"]);
        assert!(observability.register_circuit_breaker("a", self::breaker()).is_err());
        assert!(observability.register_circuit_breaker("bad name", self::breaker()).is_err());
    }
}
