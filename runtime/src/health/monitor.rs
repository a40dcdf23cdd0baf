//! The health monitor: checks the infrastructure on demand or periodically, judges each
//! result by [`super::assess`], keeps the last [`HISTORY_LIMIT`] results for trends, and
//! exposes the seven `omnibase_*` series.
//!
//! # One check
//!
//! Every probe runs concurrently under its own timeout (the container's
//! [`HealthChecker`]), while the circuit breaker's outbox depth is read (also under a
//! timeout). Then the figures ([`HealthFigures`]) are taken: operations and failures of every
//! service since the monitor's previous check, the breaker's failure rate over the same
//! span, the pool's utilization when the check started, the PostgreSQL probe's round trip.
//! Checks are serialized, so each span of counts belongs to exactly one result.
//!
//! Counted as operations / failures:
//! - PostgreSQL: statements that succeeded / statements that failed plus checkouts that timed
//!   out waiting for a connection. Failed connection attempts are not operations (the pool
//!   retries them in the background); a server that cannot be reached shows as the
//!   `postgres` probe being unhealthy instead.
//! - Kafka: deliveries acknowledged / deliveries failed.
//! - Event bus: events published / events that failed for good after the bus's retries.
//! - Circuit breaker: calls that succeeded / calls that failed (rejections are neither: an
//!   open breaker shows as its probe being unhealthy).
//!
//! # Monitoring
//!
//! [`HealthMonitor::start_monitoring`] spawns one task that checks at once and then every
//! interval. A check **fails** when its result is unhealthy or the check itself panicked;
//! after a failed check the next one runs [`RETRY_AFTER_FAILURE`] (5 s) later instead of a
//! whole interval (never later than the interval), so a recovery shows up within 5 s, and a
//! failing infrastructure is still checked at most every 5 s. The node refuses intervals
//! below [`MIN_MONITORING_INTERVAL`]; this API takes any non-zero interval (tests).
//!
//! # Series
//!
//! Registered once, in the registry given to [`HealthMonitor::register_metrics`], as one
//! collector that reads at scrape time (one sample each, labelled by the registry's
//! environment):
//! - from the latest result: `omnibase_infrastructure_health` (1 healthy, 0.5 degraded,
//!   0 unhealthy), `omnibase_error_rate_percent`, `omnibase_events_queued`,
//!   `omnibase_response_time_ms` (absent until the first check);
//! - from the services' live counters: `omnibase_postgres_connections` (open connections),
//!   `omnibase_kafka_producers` (live producers), `omnibase_messages_processed_total` (a
//!   counter: Kafka deliveries acknowledged); 0 when the service is absent.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::HealthChecker;
use super::assess;
use super::probes::{SERVICE_PROBE_TIMEOUT, Services, utilization_percent};
use crate::Container;
use crate::environment::Environment;
use crate::error::OnexError;
use crate::event::OnexEvent;
use crate::event_bus::EventPublisher;
use crate::metrics::{
    Collector, ConstCounter, ConstGauge, DescriptorEncoder, EncodeMetric, MetricType, MetricsRegistry,
};
use crate::models::health::{
    HealthAssessment, HealthFigures, HealthSample, HealthStatus, HealthThresholds, HealthTotals, HealthTrends,
};

/// Results kept for trends.
pub const HISTORY_LIMIT: usize = 100;

/// The shortest interval the node accepts for periodic monitoring.
pub const MIN_MONITORING_INTERVAL: Duration = Duration::from_secs(10);

/// The interval when a request names none.
pub const DEFAULT_MONITORING_INTERVAL: Duration = Duration::from_secs(30);

/// The wait before the next check after a failed one.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// The type of the event published when the overall status changes.
pub const HEALTH_CHANGED_EVENT: &str = "infrastructure.health.changed";

/// The families of the monitor's series, as registered (a counter without `_total`).
pub const SERIES: [&str; 7] = [
    "omnibase_infrastructure_health",
    "omnibase_postgres_connections",
    "omnibase_kafka_producers",
    "omnibase_error_rate_percent",
    "omnibase_messages_processed",
    "omnibase_events_queued",
    "omnibase_response_time_ms",
];

/// Checks the infrastructure, keeps results, monitors periodically. Dropping it stops the
/// periodic task.
pub struct HealthMonitor {
    inner: Arc<Inner>,
    monitoring: Mutex<Option<Monitoring>>,
}

struct Inner {
    checker: Arc<HealthChecker>,
    services: Services,
    environment: Environment,
    thresholds: HealthThresholds,
    /// Counts at the end of the previous check; held for the whole check, which serializes
    /// checks.
    baseline: tokio::sync::Mutex<Counts>,
    history: Mutex<VecDeque<Arc<HealthAssessment>>>,
    latest: watch::Sender<Option<Arc<HealthAssessment>>>,
    publisher: Mutex<Option<Arc<dyn EventPublisher>>>,
    /// The environment label of the registry the series are registered in.
    label: Mutex<Option<String>>,
}

struct Monitoring {
    interval: Duration,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Cumulative (succeeded, failed) counts of each service.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    postgres: (u64, u64),
    kafka: (u64, u64),
    event_bus: (u64, u64),
    breaker: (u64, u64),
}

impl HealthMonitor {
    /// A monitor of the services registered in `container` and its own probes, judged by the
    /// thresholds of `environment`. When the container holds a [`MetricsRegistry`], the
    /// series are registered in it; a registry that already holds them (another monitor
    /// made from the same container) is a `CONFIGURATION_ERROR`: share one monitor instead,
    /// by registering it in the container.
    pub fn from_container(container: &Container, environment: Environment) -> Result<Self, OnexError> {
        let services = Services::from_container(container);
        let checker = HealthChecker::from_services(&services, container);
        let monitor = Self::new(Arc::new(checker), services, environment);
        if let Some(registry) = container.try_resolve::<MetricsRegistry>() {
            monitor.register_metrics(&registry)?;
        }
        Ok(monitor)
    }

    /// A monitor running `checker`'s probes and reading the counters of `services`.
    pub fn new(checker: Arc<HealthChecker>, services: Services, environment: Environment) -> Self {
        let inner = Inner {
            checker,
            services,
            environment,
            thresholds: HealthThresholds::for_environment(environment),
            baseline: tokio::sync::Mutex::new(Counts::default()),
            history: Mutex::new(VecDeque::with_capacity(HISTORY_LIMIT)),
            latest: watch::Sender::new(None),
            publisher: Mutex::new(None),
            label: Mutex::new(None),
        };
        Self { inner: Arc::new(inner), monitoring: Mutex::new(None) }
    }

    /// Publishes a [`HEALTH_CHANGED_EVENT`] through `publisher` whenever the overall status
    /// differs from the previous result's (in the background: a slow broker never holds a
    /// check up; a failed publish is logged).
    pub fn set_publisher(&self, publisher: Arc<dyn EventPublisher>) {
        *lock(&self.inner.publisher) = Some(publisher);
    }

    /// Registers the seven series in `registry`. Fails when a family of theirs is already
    /// registered there.
    pub fn register_metrics(&self, registry: &MetricsRegistry) -> Result<(), OnexError> {
        registry.register_collector(&SERIES, OmnibaseSeries { inner: Arc::downgrade(&self.inner) })?;
        *lock(&self.inner.label) = Some(registry.environment().to_owned());
        Ok(())
    }

    /// The seven series alone, as OpenMetrics text ending with `# EOF`, labelled like the
    /// registry they are registered in (or with the environment's name).
    pub fn prometheus_text(&self) -> Result<String, OnexError> {
        let label = lock(&self.inner.label).clone().unwrap_or_else(|| self.inner.environment.as_str().to_owned());
        // An encoder of its own over the same collector: the figures are read, not copied.
        let registry = MetricsRegistry::new(label);
        registry.register_collector(&SERIES, OmnibaseSeries { inner: Arc::downgrade(&self.inner) })?;
        registry.encode()
    }

    /// The checker whose probes the monitor runs (for `/health/ready`).
    pub fn checker(&self) -> Arc<HealthChecker> {
        Arc::clone(&self.inner.checker)
    }

    /// The environment whose thresholds apply.
    pub fn environment(&self) -> Environment {
        self.inner.environment
    }

    /// The thresholds that apply.
    pub fn thresholds(&self) -> HealthThresholds {
        self.inner.thresholds
    }

    /// Checks now, keeps the result and returns it.
    pub async fn check(&self) -> Arc<HealthAssessment> {
        self.inner.check().await
    }

    /// The latest result, if any.
    pub fn latest(&self) -> Option<Arc<HealthAssessment>> {
        self.inner.latest.borrow().clone()
    }

    /// A receiver that sees every new result.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<HealthAssessment>>> {
        self.inner.latest.subscribe()
    }

    /// The kept results, oldest first.
    pub fn history(&self) -> Vec<Arc<HealthAssessment>> {
        lock(&self.inner.history).iter().cloned().collect()
    }

    /// A summary of the kept results that started within `period` before now.
    pub fn trends(&self, period: Duration) -> HealthTrends {
        let since = chrono::Duration::from_std(period)
            .ok()
            .and_then(|period| Utc::now().checked_sub_signed(period))
            .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC);
        let history: Vec<HealthSample> = lock(&self.inner.history)
            .iter()
            .filter(|result| result.checked_at >= since)
            .map(|result| HealthSample {
                checked_at: result.checked_at,
                overall_status: result.overall_status,
                error_rate_percent: result.figures.error_rate_percent,
            })
            .collect();
        let samples = history.len();
        let share = |status: HealthStatus| {
            (samples > 0)
                .then(|| history.iter().filter(|s| s.overall_status == status).count() as f64 / samples as f64 * 100.0)
        };
        HealthTrends {
            period_seconds: period.as_secs(),
            samples: samples as u64,
            healthy_percent: share(HealthStatus::Healthy),
            degraded_percent: share(HealthStatus::Degraded),
            unhealthy_percent: share(HealthStatus::Unhealthy),
            average_error_rate_percent: (samples > 0)
                .then(|| history.iter().map(|s| s.error_rate_percent).sum::<f64>() / samples as f64),
            history,
        }
    }

    /// Starts checking every `interval` (at once, then after each interval; see the module
    /// documentation for failed checks). Already monitoring at another interval: restarts
    /// at this one; at the same interval: nothing changes. A zero interval is a
    /// `VALIDATION_ERROR`; outside a tokio runtime, a `CONFIGURATION_ERROR`.
    pub fn start_monitoring(&self, interval: Duration) -> Result<(), OnexError> {
        if interval.is_zero() {
            return Err(OnexError::validation("the monitoring interval must be longer than zero")
                .with_detail("field", "monitoring_interval_seconds"));
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| OnexError::configuration("start_monitoring needs a tokio runtime to run its task in"))?;
        let mut slot = lock(&self.monitoring);
        if let Some(running) = slot.as_ref()
            && running.interval == interval
            && !running.task.is_finished()
        {
            return Ok(());
        }
        if let Some(previous) = slot.take() {
            previous.halt();
        }
        let (stop, stopped) = watch::channel(false);
        let task = runtime.spawn(monitor_loop(Arc::clone(&self.inner), interval, stopped));
        *slot = Some(Monitoring { interval, stop, task });
        Ok(())
    }

    /// Stops periodic monitoring and waits for its task to end (a check in progress is
    /// abandoned). Returns whether it was running.
    pub async fn stop_monitoring(&self) -> bool {
        let Some(running) = lock(&self.monitoring).take() else { return false };
        let _ = running.stop.send(true);
        let _ = running.task.await;
        true
    }

    /// The interval of periodic monitoring, when it runs.
    pub fn monitoring_interval(&self) -> Option<Duration> {
        lock(&self.monitoring).as_ref().filter(|running| !running.task.is_finished()).map(|running| running.interval)
    }

    /// Whether periodic monitoring runs.
    pub fn is_monitoring(&self) -> bool {
        self.monitoring_interval().is_some()
    }
}

impl Drop for HealthMonitor {
    fn drop(&mut self) {
        if let Some(running) = lock(&self.monitoring).take() {
            running.halt();
        }
    }
}

impl fmt::Debug for HealthMonitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthMonitor")
            .field("environment", &self.inner.environment)
            .field("checker", &self.inner.checker)
            .field("services", &self.inner.services)
            .field("monitoring_interval", &self.monitoring_interval())
            .finish_non_exhaustive()
    }
}

impl Monitoring {
    /// Tells the task to stop, and cancels it (at its next await) without waiting.
    fn halt(self) {
        let _ = self.stop.send(true);
        self.task.abort();
    }
}

async fn monitor_loop(inner: Arc<Inner>, interval: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        // Its own task, so a probe that panics fails one check instead of ending monitoring.
        let check = tokio::spawn({
            let inner = Arc::clone(&inner);
            async move { inner.check().await }
        });
        let abort = check.abort_handle();
        let outcome = tokio::select! {
            _ = stop.changed() => {
                abort.abort();
                return;
            }
            outcome = check => outcome,
        };
        let failed = match outcome {
            Ok(result) => result.overall_status == HealthStatus::Unhealthy,
            Err(error) => {
                tracing::warn!(target: "onex::health", %error, "a health check panicked");
                true
            }
        };
        let wait = if failed { RETRY_AFTER_FAILURE.min(interval) } else { interval };
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

impl Inner {
    async fn check(&self) -> Arc<HealthAssessment> {
        let mut baseline = self.baseline.lock().await;
        let checked_at = Utc::now();
        let started = Instant::now();
        let pool_before = self.services.postgres.as_ref().map(|postgres| postgres.connection_stats());
        let (report, queued) = futures::join!(self.checker.readiness(), self.queued_events());
        let kafka = self.services.kafka.as_ref().map(|kafka| kafka.stats());
        let breaker = self.services.breaker.as_ref().map(|breaker| breaker.metrics());
        let pool_after = self.services.postgres.as_ref().map(|postgres| postgres.connection_stats());

        let counts = Counts {
            postgres: pool_after.as_ref().map_or((0, 0), |s| {
                (s.total_queries.saturating_sub(s.failed_queries), s.failed_queries.saturating_add(s.wait_timeouts))
            }),
            kafka: kafka.as_ref().map_or((0, 0), |s| (s.total_messages_sent, s.total_messages_failed)),
            event_bus: self.services.event_bus.as_ref().map_or((0, 0), |bus| {
                let stats = bus.stats();
                (stats.published, stats.failed)
            }),
            breaker: breaker.as_ref().map_or((0, 0), |m| (m.successful_calls, m.failed_calls)),
        };
        let since = std::mem::replace(&mut *baseline, counts);
        // A counter below its baseline was reset (a breaker reset): count from zero.
        let delta = |now: (u64, u64), before: (u64, u64)| {
            if now.0 < before.0 || now.1 < before.1 { now } else { (now.0 - before.0, now.1 - before.1) }
        };
        let spans = [
            delta(counts.postgres, since.postgres),
            delta(counts.kafka, since.kafka),
            delta(counts.event_bus, since.event_bus),
            delta(counts.breaker, since.breaker),
        ];
        let operations = spans.iter().map(|s| s.0).fold(0u64, u64::saturating_add);
        let failures = spans.iter().map(|s| s.1).fold(0u64, u64::saturating_add);
        let (breaker_ok, breaker_failed) = spans[3];
        let postgres_component = report.components.iter().find(|c| c.component == "postgres" && self.has_postgres());
        let response_time_ms = match postgres_component {
            Some(postgres) => postgres.response_time_ms,
            None => report.components.iter().map(|c| c.response_time_ms).fold(0.0, f64::max),
        };
        let (queued_events, queued_error) = match queued {
            Ok(depth) => (depth, None),
            Err(reason) => (0, Some(reason)),
        };
        let figures = HealthFigures {
            operations,
            failures,
            error_rate_percent: assess::error_rate_percent(operations, failures),
            response_time_ms,
            pool_utilization_percent: pool_before.as_ref().map_or(0.0, utilization_percent),
            breaker_failure_rate_percent: assess::error_rate_percent(breaker_ok, breaker_failed),
            queued_events,
        };
        let mut thresholds = assess::thresholds_component(&figures, &self.thresholds, self.environment, checked_at);
        if let Some(reason) = queued_error {
            thresholds.metrics.insert("queued_events_error".into(), reason.into());
        }
        let overall_status =
            assess::overall_status(self.checker.criticalities().into_iter().zip(&report.components), &thresholds);
        let totals = HealthTotals {
            postgres_connections: pool_after.as_ref().map_or(0, |s| u64::from(s.size)),
            kafka_producers: kafka.as_ref().map_or(0, |s| u64::from(s.total_producers)),
            messages_processed: kafka.as_ref().map_or(0, |s| s.total_messages_sent),
            events_queued: queued_events,
            database_response_time_ms: postgres_component.map(|c| c.response_time_ms),
            kafka_messages_per_second: kafka.as_ref().map(|s| s.messages_per_second),
            circuit_breaker_success_rate: breaker.as_ref().map(|m| m.success_rate),
        };
        let mut components = report.components;
        components.push(thresholds);
        let result = Arc::new(HealthAssessment {
            overall_status,
            environment: self.environment,
            checked_at,
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
            components,
            figures,
            thresholds: self.thresholds,
            totals,
        });
        {
            let mut history = lock(&self.history);
            if history.len() == HISTORY_LIMIT {
                history.pop_front();
            }
            history.push_back(Arc::clone(&result));
        }
        let previous = self.latest.send_replace(Some(Arc::clone(&result)));
        drop(baseline);
        if let Some(previous) = previous
            && previous.overall_status != result.overall_status
        {
            self.announce(&previous, &result);
        }
        result
    }

    fn has_postgres(&self) -> bool {
        self.services.postgres.is_some()
    }

    /// Events waiting in the guarded publisher's outbox (0 without one), or why they could
    /// not be counted in time.
    async fn queued_events(&self) -> Result<u64, String> {
        let Some(outbox) = self.services.publisher.as_ref().and_then(|publisher| publisher.outbox()) else {
            return Ok(0);
        };
        match tokio::time::timeout(SERVICE_PROBE_TIMEOUT, outbox.depth()).await {
            Ok(Ok(depth)) => Ok(depth),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("the outbox depth was not read: {}", super::timeout_reason(SERVICE_PROBE_TIMEOUT))),
        }
    }

    /// Publishes the change from `previous` to `current` in the background.
    fn announce(&self, previous: &HealthAssessment, current: &HealthAssessment) {
        let Some(publisher) = lock(&self.publisher).clone() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let unwell: Vec<_> = current
            .components
            .iter()
            .filter(|c| c.status != HealthStatus::Healthy)
            .map(|c| json!({"component": c.component, "status": c.status, "errors": c.errors}))
            .collect();
        let payload = json!({
            "previous_status": previous.overall_status,
            "overall_status": current.overall_status,
            "environment": current.environment,
            "checked_at": current.checked_at,
            "error_rate_percent": current.figures.error_rate_percent,
            "components": unwell,
        });
        let event = OnexEvent::new(HEALTH_CHANGED_EVENT, "onex_runtime::health", uuid::Uuid::new_v4(), payload);
        runtime.spawn(async move {
            if let Err(error) = publisher.publish(event).await {
                tracing::warn!(target: "onex::health", %error, "publishing the health change failed");
            }
        });
    }
}

/// The seven series, read at scrape time from the monitor (while it lives).
struct OmnibaseSeries {
    inner: Weak<Inner>,
}

impl fmt::Debug for OmnibaseSeries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OmnibaseSeries").field("monitor_alive", &(self.inner.strong_count() > 0)).finish()
    }
}

impl Collector for OmnibaseSeries {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let Some(inner) = self.inner.upgrade() else { return Ok(()) };
        let latest = inner.latest.borrow().clone();
        let connections = inner.services.postgres.as_ref().map_or(0, |postgres| postgres.connection_stats().size);
        let (producers, delivered) = inner.services.kafka.as_ref().map_or((0, 0), |kafka| {
            let stats = kafka.stats();
            (stats.total_producers, stats.total_messages_sent)
        });
        if let Some(latest) = &latest {
            gauge(
                &mut encoder,
                SERIES[0],
                "Overall infrastructure health: 1 healthy, 0.5 degraded, 0 unhealthy (latest check).",
                latest.overall_status.gauge(),
            )?;
        }
        gauge(&mut encoder, SERIES[1], "Open PostgreSQL connections.", f64::from(connections))?;
        gauge(&mut encoder, SERIES[2], "Live Kafka producers.", f64::from(producers))?;
        if let Some(latest) = &latest {
            gauge(
                &mut encoder,
                SERIES[3],
                "Failed operations, percent of all operations since the check before (latest check).",
                latest.figures.error_rate_percent,
            )?;
        }
        let metric =
            encoder.encode_descriptor(SERIES[4], "Messages acknowledged by Kafka.", None, MetricType::Counter)?;
        ConstCounter::new(delivered).encode(metric)?;
        if let Some(latest) = &latest {
            gauge(
                &mut encoder,
                SERIES[5],
                "Events waiting in the circuit breaker's outbox (latest check).",
                latest.figures.queued_events as f64,
            )?;
            gauge(
                &mut encoder,
                SERIES[6],
                "PostgreSQL probe round trip in milliseconds (latest check).",
                latest.figures.response_time_ms,
            )?;
        }
        Ok(())
    }
}

fn gauge(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: f64) -> Result<(), fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every value behind these locks is replaced whole: a panic elsewhere cannot leave one
    // half-written.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use futures::future::BoxFuture;

    use super::*;
    use crate::health::{Criticality, HealthProbe, Probed};

    /// A probe whose answer the test sets.
    struct Switch {
        name: &'static str,
        criticality: Criticality,
        status: Mutex<HealthStatus>,
        panics: AtomicBool,
    }

    impl Switch {
        fn new(name: &'static str, criticality: Criticality) -> Arc<Self> {
            Arc::new(Self {
                name,
                criticality,
                status: Mutex::new(HealthStatus::Healthy),
                panics: AtomicBool::new(false),
            })
        }
        fn set(&self, status: HealthStatus) {
            *lock(&self.status) = status;
        }
    }

    impl HealthProbe for Switch {
        fn name(&self) -> &str {
            self.name
        }
        fn criticality(&self) -> Criticality {
            self.criticality
        }
        fn check(&self) -> BoxFuture<'_, Probed> {
            assert!(!self.panics.load(Ordering::Relaxed), "the probe was told to panic");
            let status = *lock(&self.status);
            Box::pin(std::future::ready(if status == HealthStatus::Healthy {
                Probed::healthy()
            } else {
                Probed::failing(status, "switched off")
            }))
        }
    }

    fn monitor_of(probes: &[Arc<Switch>], environment: Environment) -> HealthMonitor {
        let mut container = Container::new();
        for probe in probes {
            container.register_probe(Arc::clone(probe) as Arc<dyn HealthProbe>);
        }
        HealthMonitor::from_container(&container, environment).unwrap()
    }

    #[tokio::test]
    async fn a_critical_probe_down_is_unhealthy_another_degraded_and_the_thresholds_are_reported() {
        let database = Switch::new("database", Criticality::Critical);
        let cache = Switch::new("cache", Criticality::Degrades);
        let monitor = monitor_of(&[Arc::clone(&database), Arc::clone(&cache)], Environment::Staging);
        let result = monitor.check().await;
        assert_eq!(result.overall_status, HealthStatus::Healthy);
        let names: Vec<&str> = result.components.iter().map(|c| c.component.as_str()).collect();
        assert_eq!(names, ["database", "cache", "thresholds"]);
        let thresholds = &result.components[2];
        assert_eq!(thresholds.metrics["error_rate_threshold_percent"], 2.0);
        assert_eq!(thresholds.metrics["queued_events_threshold"], 200);
        cache.set(HealthStatus::Unhealthy);
        assert_eq!(monitor.check().await.overall_status, HealthStatus::Degraded);
        database.set(HealthStatus::Unhealthy);
        assert_eq!(monitor.check().await.overall_status, HealthStatus::Unhealthy);
        assert_eq!(monitor.history().len(), 3);
        assert_eq!(monitor.latest().unwrap().overall_status, HealthStatus::Unhealthy);
    }

    #[tokio::test]
    async fn the_monitor_keeps_the_last_hundred_results_and_summarizes_them() {
        let probe = Switch::new("database", Criticality::Critical);
        let monitor = monitor_of(&[Arc::clone(&probe)], Environment::Development);
        assert_eq!(monitor.trends(Duration::from_secs(3600)).samples, 0);
        assert_eq!(monitor.trends(Duration::from_secs(3600)).healthy_percent, None);
        for i in 0..(HISTORY_LIMIT + 20) {
            probe.set(match i % 4 {
                0 => HealthStatus::Unhealthy,
                1 => HealthStatus::Degraded,
                _ => HealthStatus::Healthy,
            });
            monitor.check().await;
        }
        let history = monitor.history();
        assert_eq!(history.len(), HISTORY_LIMIT);
        assert!(history.windows(2).all(|w| w[0].checked_at <= w[1].checked_at), "oldest first");
        let trends = monitor.trends(Duration::from_secs(3600));
        assert_eq!(trends.samples, HISTORY_LIMIT as u64);
        assert_eq!(trends.period_seconds, 3600);
        assert_eq!(trends.unhealthy_percent, Some(25.0));
        assert_eq!(trends.degraded_percent, Some(25.0));
        assert_eq!(trends.healthy_percent, Some(50.0));
        assert_eq!(trends.average_error_rate_percent, Some(0.0));
        assert_eq!(trends.history.len(), HISTORY_LIMIT);
        // A period that ended before the results: none of them.
        assert_eq!(monitor.trends(Duration::ZERO).samples, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn monitoring_checks_every_interval_and_five_seconds_after_a_failed_check() {
        let probe = Switch::new("database", Criticality::Critical);
        let monitor = monitor_of(&[Arc::clone(&probe)], Environment::Development);
        let mut results = monitor.subscribe();
        probe.set(HealthStatus::Unhealthy);
        let started = tokio::time::Instant::now();
        monitor.start_monitoring(Duration::from_secs(30)).unwrap();
        assert_eq!(monitor.monitoring_interval(), Some(Duration::from_secs(30)));
        let mut at = Vec::new();
        for _ in 0..3 {
            results.changed().await.unwrap();
            at.push(started.elapsed());
        }
        // At once, then 5 s after each unhealthy result.
        assert_eq!(at, [Duration::ZERO, Duration::from_secs(5), Duration::from_secs(10)]);
        probe.set(HealthStatus::Healthy);
        results.changed().await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(15));
        results.changed().await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(45), "a healthy result waits a whole interval");
        // A check that panics counts as failed: monitoring goes on, 5 s later.
        probe.panics.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(40)).await;
        assert!(monitor.is_monitoring());
        probe.panics.store(false, Ordering::Relaxed);
        let before = started.elapsed();
        results.changed().await.unwrap();
        let gap = started.elapsed() - before;
        assert!(gap <= Duration::from_secs(5), "after a panicked check the next runs within 5 s, took {gap:?}");
        assert!(monitor.stop_monitoring().await);
        assert!(!monitor.is_monitoring());
        assert!(!monitor.stop_monitoring().await);
        let count = monitor.history().len();
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert_eq!(monitor.history().len(), count, "no check after stop");
    }

    #[tokio::test]
    async fn a_zero_interval_is_refused_and_restarting_changes_the_interval() {
        let monitor = monitor_of(&[], Environment::Development);
        let err = monitor.start_monitoring(Duration::ZERO).unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::ValidationError);
        assert_eq!(err.details()["field"], "monitoring_interval_seconds");
        monitor.start_monitoring(Duration::from_secs(60)).unwrap();
        monitor.start_monitoring(Duration::from_secs(20)).unwrap();
        assert_eq!(monitor.monitoring_interval(), Some(Duration::from_secs(20)));
        drop(monitor);
    }

    #[test]
    fn start_monitoring_outside_a_runtime_is_a_configuration_error() {
        let monitor = monitor_of(&[], Environment::Development);
        let err = monitor.start_monitoring(Duration::from_secs(10)).unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::ConfigurationError);
    }

    #[tokio::test]
    async fn the_seven_series_have_one_sample_each_labelled_by_environment() {
        let probe = Switch::new("database", Criticality::Critical);
        let registry = Arc::new(MetricsRegistry::new("staging"));
        let mut container = Container::new();
        container.register(Arc::clone(&registry));
        container.register_probe(Arc::clone(&probe) as Arc<dyn HealthProbe>);
        let monitor = HealthMonitor::from_container(&container, Environment::Staging).unwrap();
        let text = registry.encode().unwrap();
        assert!(!text.contains("omnibase_infrastructure_health"), "no result, no health sample: {text}");
        assert!(text.contains("omnibase_messages_processed_total{environment=\"staging\"} 0\n"), "{text}");
        probe.set(HealthStatus::Degraded);
        monitor.check().await;
        let text = registry.encode().unwrap();
        for (series, value) in [
            ("omnibase_infrastructure_health", "0.5"),
            ("omnibase_postgres_connections", "0.0"),
            ("omnibase_kafka_producers", "0.0"),
            ("omnibase_error_rate_percent", "0.0"),
            ("omnibase_messages_processed_total", "0"),
            ("omnibase_events_queued", "0.0"),
        ] {
            let sample = format!("{series}{{environment=\"staging\"}} {value}\n");
            assert_eq!(text.matches(&sample).count(), 1, "{sample} in {text}");
        }
        assert!(text.contains("# TYPE omnibase_messages_processed counter"), "{text}");
        let samples = text.lines().filter(|l| l.starts_with("omnibase_")).count();
        assert_eq!(samples, 7, "{text}");
        assert_eq!(monitor.prometheus_text().unwrap().lines().filter(|l| l.starts_with("omnibase_")).count(), 7);
        // A second monitor cannot register the same series in the same registry.
        let err = HealthMonitor::from_container(&container, Environment::Staging).unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::ConfigurationError);
        assert!(err.message().contains("omnibase_"), "{err}");
        // A dropped monitor leaves no stale figures behind.
        drop(monitor);
        assert!(!registry.encode().unwrap().contains("omnibase_"));
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<OnexEvent>>);

    impl EventPublisher for Recorder {
        fn publish(&self, event: OnexEvent) -> crate::node::BoxFuture<'_, Result<(), OnexError>> {
            lock(&self.0).push(event);
            Box::pin(std::future::ready(Ok(())))
        }
    }

    #[tokio::test]
    async fn a_change_of_overall_status_is_published_once() {
        let probe = Switch::new("database", Criticality::Critical);
        let monitor = monitor_of(&[Arc::clone(&probe)], Environment::Development);
        let recorder = Arc::new(Recorder::default());
        monitor.set_publisher(Arc::clone(&recorder) as Arc<dyn EventPublisher>);
        monitor.check().await;
        monitor.check().await;
        probe.set(HealthStatus::Unhealthy);
        monitor.check().await;
        monitor.check().await;
        for _ in 0..100 {
            if !lock(&recorder.0).is_empty() {
                break;
            }
            tokio::task::yield_now().await;
        }
        let events = lock(&recorder.0).clone();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].event_type, HEALTH_CHANGED_EVENT);
        assert_eq!(events[0].payload["previous_status"], "healthy");
        assert_eq!(events[0].payload["overall_status"], "unhealthy");
        assert_eq!(events[0].payload["components"][0]["component"], "database");
    }
}
