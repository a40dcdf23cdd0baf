//! The metric store: recorded samples, the latest per series, and the latency and error-rate
//! history the health score, the alert rules and the trends read.
//!
//! Rules:
//! - A sample is validated first (module `names`); a refused sample changes nothing.
//! - A series is a metric name plus a label set; the store keeps its latest sample (module
//!   `export` writes it to the registry). At most [`MAX_SERIES`] series: a sample that would
//!   start one more is a `VALIDATION_ERROR` naming `metric_labels`.
//! - Two names carry meaning beyond their series:
//!   - [`EVENT_LATENCY_METRIC`] (a histogram, seconds): each sample is also one of the last
//!     [`MAX_LATENCIES`] event latencies;
//!   - [`ERROR_RATE_METRIC`] (a gauge with the label `service`, a fraction in [0, 1]): each
//!     sample is also one of the last [`MAX_ERROR_RATES`] error rates of its service.
//!
//!   Recording either with another type, without `service`, or with a rate outside [0, 1] is a
//!   `VALIDATION_ERROR` naming the field.
//! - Retention (default 24 h): samples, latencies and error rates older than the retention are
//!   dropped on every record and every read.
//! - The current event latency is the mean of the latest [`RECENT_LATENCIES`] latencies; p95
//!   and p99 are nearest-rank percentiles of all retained ones (at most 1000). The current error
//!   rate of a service is its latest rate.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::clock::Clock;
use super::export::{self, Family, Labels};
use super::names::{self, invalid};
use super::stats;
use crate::error::OnexError;
use crate::metrics::MetricsRegistry;
use crate::models::observability::{MetricPoint, MetricType};

/// Event latencies kept.
pub const MAX_LATENCIES: usize = 1000;
/// Error rates kept per service.
pub const MAX_ERROR_RATES: usize = 100;
/// Latest latencies whose mean is the current event latency.
pub const RECENT_LATENCIES: usize = 100;
/// Series a store holds at most.
pub const MAX_SERIES: usize = 10_000;
/// The histogram of event publishing latencies, in seconds.
pub const EVENT_LATENCY_METRIC: &str = "event_publishing_latency_seconds";
/// The gauge of a service's error rate (label `service`, a fraction).
pub const ERROR_RATE_METRIC: &str = "service_error_rate";

/// Latency figures.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LatencyFigures {
    /// Retained latencies.
    pub samples: usize,
    /// The current event latency (mean of the latest [`RECENT_LATENCIES`]), seconds.
    pub current_seconds: Option<f64>,
    /// 95th percentile of the retained latencies, seconds.
    pub p95_seconds: Option<f64>,
    /// 99th percentile of the retained latencies, seconds.
    pub p99_seconds: Option<f64>,
}

/// Latency and error-rate figures of a period.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PerformanceTrends {
    /// The period summarized, hours (the request, capped at the retention).
    pub period_hours: u64,
    /// Latencies inside the period.
    pub latency_samples: u64,
    /// Their mean, milliseconds.
    pub average_latency_ms: Option<f64>,
    /// Their 95th percentile, milliseconds.
    pub p95_latency_ms: Option<f64>,
    /// Their 99th percentile, milliseconds.
    pub p99_latency_ms: Option<f64>,
    /// The mean error rate (a fraction) of each service inside the period.
    pub error_rates: BTreeMap<String, f64>,
}

/// Recorded samples and their history.
pub struct MetricStore {
    registry: Arc<MetricsRegistry>,
    clock: Arc<dyn Clock>,
    retention: TimeDelta,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// By family name.
    families: BTreeMap<String, Arc<Family>>,
    /// `(when, seconds)`, oldest first.
    latencies: VecDeque<(DateTime<Utc>, f64)>,
    /// `(when, rate)` per service, oldest first.
    error_rates: BTreeMap<String, VecDeque<(DateTime<Utc>, f64)>>,
}

impl MetricStore {
    /// An empty store exporting through `registry`, keeping samples for `retention`.
    pub fn new(registry: Arc<MetricsRegistry>, clock: Arc<dyn Clock>, retention: TimeDelta) -> Self {
        Self { registry, clock, retention, state: Mutex::new(State::default()) }
    }

    /// The registry the store's series are written to.
    pub fn registry(&self) -> &Arc<MetricsRegistry> {
        &self.registry
    }

    /// The store's retention.
    pub fn retention(&self) -> TimeDelta {
        self.retention
    }

    /// Records one sample of `name` (type `kind`, labels `labels`) and returns it as stored: a
    /// counter's name ends with `_total`, as the exposition writes it.
    pub fn record_metric(
        &self,
        name: &str,
        value: f64,
        kind: MetricType,
        labels: BTreeMap<String, String>,
    ) -> Result<MetricPoint, OnexError> {
        names::check_metric_name(name)?;
        names::check_labels(&labels)?;
        names::check_value(value, kind)?;
        let (family_name, sample_name) = export::family_and_sample(name, kind);
        let service = check_meaning(&family_name, value, kind, &labels)?;
        let now = self.clock.now();
        let mut state = self.lock(now);
        let family = match state.families.get(&family_name) {
            Some(family) if family.kind() == kind => Arc::clone(family),
            Some(family) => {
                return Err(invalid(
                    "metric_type",
                    format!(
                        "metric_type {kind} does not match: metric '{family_name}' is recorded as a {} (a family has \
                         one type)",
                        family.kind()
                    ),
                ));
            }
            None => export::family(&self.registry, &family_name, kind, &self.clock, self.retention)?,
        };
        let room = family.has_series(&labels, now) || series_count(&state, now) < MAX_SERIES;
        let point = MetricPoint { name: sample_name, value, timestamp: now, labels, metric_type: kind };
        family.record(point.clone(), room).map_err(|export::Full| {
            invalid(
                "metric_labels",
                format!(
                    "metric_labels: the store holds {MAX_SERIES} series, its limit; a new label set of \
                     '{family_name}' is refused"
                ),
            )
        })?;
        state.families.entry(family_name.clone()).or_insert(family);
        if family_name == EVENT_LATENCY_METRIC {
            push_capped(&mut state.latencies, (now, value), MAX_LATENCIES);
        }
        if let Some(service) = service {
            push_capped(state.error_rates.entry(service).or_default(), (now, value), MAX_ERROR_RATES);
        }
        Ok(point)
    }

    /// Records the latency of one event publish (a sample of [`EVENT_LATENCY_METRIC`]).
    pub fn record_event_latency(&self, latency: Duration) -> Result<MetricPoint, OnexError> {
        self.record_metric(EVENT_LATENCY_METRIC, latency.as_secs_f64(), MetricType::Histogram, Labels::new())
    }

    /// Records the error rate (a fraction) of `service` (a sample of [`ERROR_RATE_METRIC`]).
    pub fn record_error_rate(&self, service: &str, rate: f64) -> Result<MetricPoint, OnexError> {
        let labels = Labels::from([("service".to_owned(), service.to_owned())]);
        self.record_metric(ERROR_RATE_METRIC, rate, MetricType::Gauge, labels)
    }

    /// The latest sample of every series, by name and then labels.
    pub fn current_metrics(&self) -> Vec<MetricPoint> {
        let now = self.clock.now();
        let state = self.lock(now);
        let mut points: Vec<MetricPoint> = state.families.values().flat_map(|f| f.latest(now)).collect();
        points.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.labels.cmp(&b.labels)));
        points
    }

    /// Series held.
    pub fn series_count(&self) -> usize {
        let now = self.clock.now();
        series_count(&self.lock(now), now)
    }

    /// The event latency figures.
    pub fn latency(&self) -> LatencyFigures {
        let state = self.lock(self.clock.now());
        let all: Vec<f64> = state.latencies.iter().map(|(_, s)| *s).collect();
        let recent = &all[all.len().saturating_sub(RECENT_LATENCIES)..];
        let mut sorted = all.clone();
        sorted.sort_by(f64::total_cmp);
        LatencyFigures {
            samples: all.len(),
            current_seconds: stats::mean(recent.iter().copied()),
            p95_seconds: stats::percentile_of_sorted(&sorted, 95.0),
            p99_seconds: stats::percentile_of_sorted(&sorted, 99.0),
        }
    }

    /// The latest error rate of every service that has one, by service.
    pub fn latest_error_rates(&self) -> Vec<(String, f64)> {
        let state = self.lock(self.clock.now());
        state.error_rates.iter().filter_map(|(service, rates)| Some((service.clone(), rates.back()?.1))).collect()
    }

    /// The figures of the last `hours` hours (at most the retention).
    pub fn performance_trends(&self, hours: u64) -> PerformanceTrends {
        let retention_hours = u64::try_from(self.retention.num_hours()).unwrap_or(0).max(1);
        let period_hours = hours.min(retention_hours);
        let period = i64::try_from(period_hours).ok().and_then(TimeDelta::try_hours).unwrap_or(self.retention);
        let now = self.clock.now();
        let cutoff = now - period;
        let state = self.lock(now);
        let mut latencies: Vec<f64> =
            state.latencies.iter().filter(|(at, _)| *at >= cutoff).map(|(_, seconds)| seconds * 1000.0).collect();
        latencies.sort_by(f64::total_cmp);
        let error_rates = state
            .error_rates
            .iter()
            .filter_map(|(service, rates)| {
                let mean = stats::mean(rates.iter().filter(|(at, _)| *at >= cutoff).map(|(_, rate)| *rate))?;
                Some((service.clone(), mean))
            })
            .collect();
        PerformanceTrends {
            period_hours,
            latency_samples: latencies.len() as u64,
            average_latency_ms: stats::mean(latencies.iter().copied()),
            p95_latency_ms: stats::percentile_of_sorted(&latencies, 95.0),
            p99_latency_ms: stats::percentile_of_sorted(&latencies, 99.0),
            error_rates,
        }
    }

    /// The state, with the history past the retention at `now` dropped.
    fn lock(&self, now: DateTime<Utc>) -> MutexGuard<'_, State> {
        // Every change is made whole under the lock: a panic elsewhere cannot leave it torn.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let cutoff = now - self.retention;
        while state.latencies.front().is_some_and(|(at, _)| *at < cutoff) {
            state.latencies.pop_front();
        }
        state.error_rates.retain(|_, rates| {
            while rates.front().is_some_and(|(at, _)| *at < cutoff) {
                rates.pop_front();
            }
            !rates.is_empty()
        });
        state
    }
}

impl std::fmt::Debug for MetricStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("MetricStore")
            .field("retention", &self.retention)
            .field("families", &state.families.keys().collect::<Vec<_>>())
            .field("latencies", &state.latencies.len())
            .finish_non_exhaustive()
    }
}

fn series_count(state: &State, now: DateTime<Utc>) -> usize {
    state.families.values().map(|f| f.len(now)).sum()
}

fn push_capped<T>(queue: &mut VecDeque<T>, item: T, cap: usize) {
    if queue.len() == cap {
        queue.pop_front();
    }
    queue.push_back(item);
}

/// Checks the rules of the names with a meaning; returns the service of an error rate.
fn check_meaning(family: &str, value: f64, kind: MetricType, labels: &Labels) -> Result<Option<String>, OnexError> {
    match family {
        EVENT_LATENCY_METRIC if kind != MetricType::Histogram => Err(invalid(
            "metric_type",
            format!("metric_type must be histogram: {EVENT_LATENCY_METRIC} is the histogram of event latencies"),
        )),
        ERROR_RATE_METRIC if kind != MetricType::Gauge => Err(invalid(
            "metric_type",
            format!("metric_type must be gauge: {ERROR_RATE_METRIC} is the gauge of a service's error rate"),
        )),
        ERROR_RATE_METRIC => {
            let service = labels.get("service").map(|s| s.trim()).filter(|s| !s.is_empty()).ok_or_else(|| {
                invalid(
                    "metric_labels.service",
                    format!("metric_labels.service is required: {ERROR_RATE_METRIC} rates one service"),
                )
            })?;
            if !(0.0..=1.0).contains(&value) {
                return Err(invalid(
                    "metric_value",
                    format!("metric_value {value} is outside [0, 1]: {ERROR_RATE_METRIC} is a fraction"),
                ));
            }
            Ok(Some(service.to_owned()))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::observability::clock::ManualClock;

    fn store(retention_hours: i64) -> (Arc<ManualClock>, MetricStore) {
        let clock = Arc::new(ManualClock::new(DateTime::from_timestamp(1_700_000_000, 0).unwrap()));
        let store =
            MetricStore::new(Arc::new(MetricsRegistry::new("test")), clock.clone(), TimeDelta::hours(retention_hours));
        (clock, store)
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn field(error: &OnexError) -> String {
        error.details().get("field").and_then(|v| v.as_str()).unwrap_or_default().to_owned()
    }

    #[test]
    fn the_current_value_is_the_latest_sample_of_each_series() {
        let (clock, store) = store(24);
        for i in 0..10 {
            store.record_metric("depth", f64::from(i), MetricType::Gauge, labels(&[("q", "a")])).unwrap();
            clock.advance(TimeDelta::seconds(1));
        }
        store.record_metric("depth", 5.0, MetricType::Gauge, labels(&[("q", "b")])).unwrap();
        let counted = store.record_metric("jobs", 3.0, MetricType::Counter, Labels::new()).unwrap();
        assert_eq!(counted.name, "jobs_total");
        let current = store.current_metrics();
        let summary: Vec<_> = current.iter().map(|p| (p.name.as_str(), p.labels.get("q").cloned(), p.value)).collect();
        assert_eq!(
            summary,
            [("depth", Some("a".to_owned()), 9.0), ("depth", Some("b".to_owned()), 5.0), ("jobs_total", None, 3.0)]
        );
        assert_eq!(store.series_count(), 3);
    }

    #[test]
    fn refused_samples_name_the_field_and_change_nothing() {
        let (_clock, store) = store(24);
        store.record_metric("x", 1.0, MetricType::Gauge, Labels::new()).unwrap();
        let cases: [(&str, f64, MetricType, Labels, &str); 7] = [
            ("bad-name", 1.0, MetricType::Gauge, Labels::new(), "metric_name"),
            ("x", f64::NAN, MetricType::Gauge, Labels::new(), "metric_value"),
            ("x", 1.0, MetricType::Counter, Labels::new(), "metric_type"),
            ("y", 1.0, MetricType::Gauge, labels(&[("bad-label", "v")]), "metric_labels.bad-label"),
            (ERROR_RATE_METRIC, 0.5, MetricType::Gauge, Labels::new(), "metric_labels.service"),
            (ERROR_RATE_METRIC, 1.5, MetricType::Gauge, labels(&[("service", "db")]), "metric_value"),
            (EVENT_LATENCY_METRIC, 0.5, MetricType::Gauge, Labels::new(), "metric_type"),
        ];
        for (name, value, kind, labels, expected) in cases {
            let error = store.record_metric(name, value, kind, labels).unwrap_err();
            assert_eq!(error.code(), ErrorCode::ValidationError);
            assert_eq!(field(&error), expected, "{name}: {error}");
        }
        assert_eq!(store.series_count(), 1);
        assert!(store.latest_error_rates().is_empty());
    }

    #[test]
    fn a_name_a_service_registered_is_refused() {
        let (_clock, store) = store(24);
        store
            .registry()
            .register("onex_postgres_waiting", "Waiting.", crate::metrics::Gauge::<i64>::default())
            .unwrap();
        let error = store.record_metric("onex_postgres_waiting", 1.0, MetricType::Gauge, Labels::new()).unwrap_err();
        assert_eq!(field(&error), "metric_name", "{error}");
        assert!(error.message().contains("onex_postgres_waiting"), "{error}");
    }

    #[test]
    fn only_the_last_thousand_latencies_count_for_the_percentiles() {
        let (_clock, store) = store(24);
        // 500 slow ones first, then 1000 of 1..=1000 ms: the slow ones fall out.
        for _ in 0..500 {
            store.record_event_latency(Duration::from_secs(30)).unwrap();
        }
        for ms in 1..=1000 {
            store.record_event_latency(Duration::from_millis(ms)).unwrap();
        }
        let figures = store.latency();
        assert_eq!(figures.samples, MAX_LATENCIES);
        assert!((figures.p95_seconds.unwrap() - 0.95).abs() < 1e-9, "{figures:?}");
        assert!((figures.p99_seconds.unwrap() - 0.99).abs() < 1e-9, "{figures:?}");
        // Mean of the latest 100: 901..=1000 ms.
        assert!((figures.current_seconds.unwrap() - 0.9505).abs() < 1e-9, "{figures:?}");
    }

    #[test]
    fn only_the_last_hundred_error_rates_of_a_service_are_kept() {
        let (_clock, store) = store(24);
        for i in 0..150 {
            store.record_error_rate("db", if i < 50 { 1.0 } else { 0.02 }).unwrap();
        }
        store.record_error_rate("kafka", 0.5).unwrap();
        assert_eq!(store.latest_error_rates(), [("db".to_owned(), 0.02), ("kafka".to_owned(), 0.5)]);
        let trends = store.performance_trends(1);
        assert!((trends.error_rates["db"] - 0.02).abs() < 1e-12, "{trends:?}");
    }

    #[test]
    fn samples_past_the_retention_are_dropped() {
        let (clock, store) = store(24);
        store.record_metric("old", 1.0, MetricType::Gauge, Labels::new()).unwrap();
        store.record_event_latency(Duration::from_secs(2)).unwrap();
        store.record_error_rate("db", 0.3).unwrap();
        clock.advance(TimeDelta::hours(23));
        store.record_metric("new", 1.0, MetricType::Gauge, Labels::new()).unwrap();
        store.record_event_latency(Duration::from_millis(100)).unwrap();
        clock.advance(TimeDelta::hours(2));
        let names: Vec<_> = store.current_metrics().into_iter().map(|p| p.name).collect();
        assert_eq!(names, [EVENT_LATENCY_METRIC, "new"]);
        assert_eq!(store.latency().samples, 1);
        assert!(store.latest_error_rates().is_empty());
        assert!(!store.registry().encode().unwrap().contains("old{"), "an expired series is still exported");
    }

    #[test]
    fn trends_summarize_only_the_period_asked_for() {
        let (clock, store) = store(24);
        store.record_event_latency(Duration::from_millis(900)).unwrap();
        store.record_error_rate("db", 0.4).unwrap();
        clock.advance(TimeDelta::hours(3));
        for ms in [100, 200, 300] {
            store.record_event_latency(Duration::from_millis(ms)).unwrap();
        }
        store.record_error_rate("db", 0.1).unwrap();
        let last_hour = store.performance_trends(1);
        assert_eq!(last_hour.period_hours, 1);
        assert_eq!(last_hour.latency_samples, 3);
        assert!((last_hour.average_latency_ms.unwrap() - 200.0).abs() < 1e-9, "{last_hour:?}");
        assert!((last_hour.p99_latency_ms.unwrap() - 300.0).abs() < 1e-9, "{last_hour:?}");
        assert!((last_hour.error_rates["db"] - 0.1).abs() < 1e-12);
        let day = store.performance_trends(1000);
        assert_eq!(day.period_hours, 24, "a period longer than the retention is the retention");
        assert_eq!(day.latency_samples, 4);
        assert!((day.error_rates["db"] - 0.25).abs() < 1e-12);
    }

    #[test]
    fn the_series_limit_refuses_new_label_sets_only() {
        let (_clock, store) = store(24);
        for i in 0..MAX_SERIES {
            store.record_metric("s", 1.0, MetricType::Gauge, labels(&[("i", &i.to_string())])).unwrap();
        }
        let error = store.record_metric("s", 1.0, MetricType::Gauge, labels(&[("i", "new")])).unwrap_err();
        assert_eq!(field(&error), "metric_labels");
        store.record_metric("s", 2.0, MetricType::Gauge, labels(&[("i", "0")])).unwrap();
    }
}
