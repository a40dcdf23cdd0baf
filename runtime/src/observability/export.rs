//! Recorded series in the process's metrics registry: one family per recorded metric name,
//! written at every scrape by a collector of this module.
//!
//! Rules:
//! - A family holds one series per label set, and a series exposes ONE sample: the latest
//!   value of a counter or gauge; a histogram series exposes its buckets, sum and count of
//!   every observation recorded into it (buckets [`LATENCY_SECONDS`](crate::metrics::LATENCY_SECONDS)).
//! - A counter family is named without `_total` and exposes `{name}_total`, as prometheus-client
//!   writes counters; a recorded counter `jobs_total` and a recorded counter `jobs` are one
//!   family, `jobs`.
//! - A family's name must not be one a service registered, nor repeat a sample name of one
//!   (`x_total` beside a counter `x`, `x_count` beside a histogram `x`, and the reverse): each
//!   is a `VALIDATION_ERROR` naming `metric_name`. The registry does not know the type of the
//!   families of others, so a name that could repeat one of their samples is refused too.
//! - One family has one type: recording another type under its name is a `VALIDATION_ERROR`
//!   naming `metric_type`.
//! - A series whose latest sample is older than its family's retention is dropped, on the next
//!   record into the family and at the next scrape; a family without series writes nothing.
//! - The registry cannot forget a family, so its name stays claimed after the store that
//!   recorded it is gone; families are therefore kept per registry (in a value shared through
//!   [`MetricsRegistry::shared`]): a later store on the same registry takes a dead family's
//!   name over, and stores alive together share a family (its retention and clock are those
//!   of the store that made it).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use chrono::{DateTime, TimeDelta, Utc};
use prometheus_client::encoding::NoLabelSet;

use super::clock::Clock;
use super::names::invalid;
use crate::error::OnexError;
use crate::metrics::{Collector, DescriptorEncoder, Histogram, MetricsRegistry};
use crate::models::observability::{MetricPoint, MetricType};

/// Help text of every recorded family.
const HELP: &str = "Recorded through the observability store (latest sample per series).";

/// Suffixes of the sample names the exposition derives from a family name.
const SAMPLE_SUFFIXES: [&str; 6] = ["_total", "_created", "_bucket", "_count", "_sum", "_info"];

/// A label set.
pub(crate) type Labels = BTreeMap<String, String>;

/// The family name and the sample name of a recorded `name` of type `kind`: a counter's
/// family drops `_total` and its sample has it; other types use `name` for both.
pub(crate) fn family_and_sample(name: &str, kind: MetricType) -> (String, String) {
    match kind {
        MetricType::Counter => {
            let family = name.strip_suffix("_total").filter(|base| !base.is_empty()).unwrap_or(name);
            (family.to_owned(), format!("{family}_total"))
        }
        MetricType::Gauge | MetricType::Histogram => (name.to_owned(), name.to_owned()),
    }
}

/// One recorded family.
pub(crate) struct Family {
    name: String,
    kind: MetricType,
    retention: TimeDelta,
    clock: Arc<dyn Clock>,
    series: Mutex<Table>,
}

struct Table {
    series: BTreeMap<Labels, Series>,
    /// When the oldest series may pass the retention (its latest sample's time plus the
    /// retention, or earlier); `None` without series. Pruning scans only once this is due,
    /// so a record is not a scan of every series.
    prune_due: Option<DateTime<Utc>>,
}

impl Table {
    fn prune(&mut self, now: DateTime<Utc>, retention: TimeDelta) {
        if self.prune_due.is_none_or(|due| due > now) {
            return;
        }
        let cutoff = now - retention;
        self.series.retain(|_, s| s.latest.timestamp >= cutoff);
        self.prune_due = self.series.values().map(|s| s.latest.timestamp + retention).min();
    }
}

struct Series {
    latest: MetricPoint,
    /// The observations of a histogram series.
    histogram: Option<Histogram>,
}

/// The series limit was reached and the sample would have started a new series.
pub(crate) struct Full;

impl Family {
    fn new(name: &str, kind: MetricType, clock: Arc<dyn Clock>, retention: TimeDelta) -> Self {
        let table = Table { series: BTreeMap::new(), prune_due: None };
        Self { name: name.to_owned(), kind, retention, clock, series: Mutex::new(table) }
    }

    /// The family's type.
    pub(crate) fn kind(&self) -> MetricType {
        self.kind
    }

    /// Stores `point` as the latest sample of its series (and observes it, for a histogram).
    /// A new series is started only when `room`.
    pub(crate) fn record(&self, point: MetricPoint, room: bool) -> Result<(), Full> {
        let mut table = self.lock(point.timestamp);
        if let Some(existing) = table.series.get_mut(&point.labels) {
            if let Some(histogram) = &existing.histogram {
                histogram.observe(point.value);
            }
            existing.latest = point;
            return Ok(());
        }
        if !room {
            return Err(Full);
        }
        let histogram = (self.kind == MetricType::Histogram).then(|| {
            let histogram = Histogram::latency();
            histogram.observe(point.value);
            histogram
        });
        let due = point.timestamp + self.retention;
        table.prune_due = Some(table.prune_due.map_or(due, |current| current.min(due)));
        table.series.insert(point.labels.clone(), Series { latest: point, histogram });
        Ok(())
    }

    /// Whether the family has a series of `labels`.
    pub(crate) fn has_series(&self, labels: &Labels, now: DateTime<Utc>) -> bool {
        self.lock(now).series.contains_key(labels)
    }

    /// The latest sample of every series, at `now`.
    pub(crate) fn latest(&self, now: DateTime<Utc>) -> Vec<MetricPoint> {
        self.lock(now).series.values().map(|s| s.latest.clone()).collect()
    }

    /// Series held at `now`.
    pub(crate) fn len(&self, now: DateTime<Utc>) -> usize {
        self.lock(now).series.len()
    }

    /// The series, with those past the retention at `now` dropped.
    fn lock(&self, now: DateTime<Utc>) -> MutexGuard<'_, Table> {
        // Series are inserted and replaced whole: a panic elsewhere cannot leave one torn.
        let mut table = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        table.prune(now, self.retention);
        table
    }

    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let table = self.lock(self.clock.now());
        if table.series.is_empty() {
            return Ok(());
        }
        let kind = match self.kind {
            MetricType::Counter => crate::metrics::MetricType::Counter,
            MetricType::Gauge => crate::metrics::MetricType::Gauge,
            MetricType::Histogram => crate::metrics::MetricType::Histogram,
        };
        let mut metric = encoder.encode_descriptor(&self.name, HELP, None, kind)?;
        for (labels, one) in &table.series {
            let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let mut sample = metric.encode_family(&labels)?;
            match &one.histogram {
                Some(histogram) => {
                    let (buckets, count) = histogram.buckets();
                    sample.encode_histogram::<NoLabelSet>(histogram.sum(), count, &buckets, None)?;
                }
                None if self.kind == MetricType::Counter => {
                    sample.encode_counter::<NoLabelSet, f64, f64>(&one.latest.value, None)?;
                }
                None => sample.encode_gauge(&one.latest.value)?,
            }
        }
        Ok(())
    }
}

/// The recorded families of one registry, by family name.
#[derive(Default)]
struct Exported {
    families: Mutex<HashMap<String, Arc<Slot>>>,
}

/// Where the collector of a family name finds the family alive now, if any.
#[derive(Default)]
struct Slot {
    family: Mutex<Weak<Family>>,
}

impl Slot {
    fn current(&self) -> MutexGuard<'_, Weak<Family>> {
        self.family.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The registry's collector of one family name.
struct SlotCollector(Arc<Slot>);

impl fmt::Debug for SlotCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let family = self.0.current().upgrade();
        f.debug_struct("RecordedFamily").field("name", &family.as_ref().map(|f| f.name.clone())).finish()
    }
}

impl Collector for SlotCollector {
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let family = self.0.current().upgrade();
        match family {
            Some(family) => family.encode(encoder),
            None => Ok(()),
        }
    }
}

/// The family `name` of type `kind` in `registry`: the live one of that name, or a new one
/// (with `clock` and `retention`) registered for export.
pub(crate) fn family(
    registry: &MetricsRegistry,
    name: &str,
    kind: MetricType,
    clock: &Arc<dyn Clock>,
    retention: TimeDelta,
) -> Result<Arc<Family>, OnexError> {
    let exported = registry.shared(|_| Ok(Exported::default()))?;
    let mut families = exported.families.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(slot) = families.get(name) {
        // The slot's lock is let go before the registry is asked (a scrape holds the registry
        // and then takes slots); no one else changes the slot meanwhile, since that takes
        // `families`, held here.
        let live = slot.current().upgrade();
        if let Some(live) = live {
            if live.kind != kind {
                return Err(invalid(
                    "metric_type",
                    format!(
                        "metric_type {kind} does not match: metric '{name}' is recorded as a {} (a family has one type)",
                        live.kind
                    ),
                ));
            }
            return Ok(live);
        }
        check_clashes(registry, name, kind, true)?;
        let fresh = Arc::new(Family::new(name, kind, Arc::clone(clock), retention));
        *slot.current() = Arc::downgrade(&fresh);
        return Ok(fresh);
    }
    check_clashes(registry, name, kind, false)?;
    let fresh = Arc::new(Family::new(name, kind, Arc::clone(clock), retention));
    let slot = Arc::new(Slot { family: Mutex::new(Arc::downgrade(&fresh)) });
    registry
        .register_collector(&[name], SlotCollector(Arc::clone(&slot)))
        .map_err(|_| registered_by_a_service(name))?;
    families.insert(name.to_owned(), slot);
    Ok(fresh)
}

/// Refuses a family `name` of type `kind` whose name or samples would repeat those of a family
/// registered in `registry` (other than `name` itself when `own` is set: a name this module
/// already claimed).
fn check_clashes(registry: &MetricsRegistry, name: &str, kind: MetricType, own: bool) -> Result<(), OnexError> {
    if !own && registry.is_registered(name) {
        return Err(registered_by_a_service(name));
    }
    let samples: &[&str] = match kind {
        MetricType::Counter => &["_total", "_created"],
        MetricType::Gauge => &[],
        MetricType::Histogram => &["_bucket", "_count", "_sum", "_created"],
    };
    for suffix in samples {
        let sample = format!("{name}{suffix}");
        if registry.is_registered(&sample) {
            return Err(invalid(
                "metric_name",
                format!(
                    "metric_name '{name}' would write the sample '{sample}', which repeats the registered family \
                     '{sample}'"
                ),
            ));
        }
    }
    for suffix in SAMPLE_SUFFIXES {
        if let Some(base) = name.strip_suffix(suffix).filter(|base| !base.is_empty())
            && registry.is_registered(base)
        {
            return Err(invalid(
                "metric_name",
                format!(
                    "metric_name '{name}' could repeat a sample of the registered family '{base}' (which writes \
                     '{base}{suffix}' when it is a {}); record under another name",
                    if matches!(suffix, "_total" | "_created") { "counter" } else { "histogram" }
                ),
            ));
        }
    }
    Ok(())
}

fn registered_by_a_service(name: &str) -> OnexError {
    invalid(
        "metric_name",
        format!(
            "metric_name '{name}' is a family a service registered in the metrics registry; its series are \
             that service's own: record under another name"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::metrics::Gauge;
    use crate::observability::clock::ManualClock;

    fn point(name: &str, value: f64, labels: &[(&str, &str)], kind: MetricType, at: DateTime<Utc>) -> MetricPoint {
        MetricPoint {
            name: name.to_owned(),
            value,
            timestamp: at,
            labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            metric_type: kind,
        }
    }

    fn setup() -> (MetricsRegistry, Arc<ManualClock>, Arc<dyn Clock>) {
        let clock = Arc::new(ManualClock::new(DateTime::from_timestamp(1_700_000_000, 0).unwrap()));
        let dyn_clock: Arc<dyn Clock> = clock.clone();
        (MetricsRegistry::new("test"), clock, dyn_clock)
    }

    fn field(error: &OnexError) -> &str {
        error.details().get("field").and_then(|v| v.as_str()).unwrap_or_default()
    }

    #[test]
    fn a_series_recorded_many_times_is_written_once_with_its_latest_value() {
        let (registry, clock, dyn_clock) = setup();
        let family = family(&registry, "queue_depth", MetricType::Gauge, &dyn_clock, TimeDelta::hours(24)).unwrap();
        for i in 0..50 {
            family
                .record(point("queue_depth", f64::from(i), &[("queue", "a")], MetricType::Gauge, clock.now()), true)
                .ok();
        }
        family.record(point("queue_depth", 7.0, &[("queue", "b")], MetricType::Gauge, clock.now()), true).ok();
        let text = registry.encode().unwrap();
        assert_eq!(text.matches("# TYPE queue_depth gauge").count(), 1, "{text}");
        assert_eq!(text.lines().filter(|l| l.starts_with("queue_depth{")).count(), 2, "{text}");
        assert!(text.contains("queue_depth{environment=\"test\",queue=\"a\"} 49.0\n"), "{text}");
    }

    #[test]
    fn counters_and_histograms_are_typed_and_named_as_prometheus_writes_them() {
        let (registry, clock, dyn_clock) = setup();
        let (name, sample) = family_and_sample("jobs_total", MetricType::Counter);
        assert_eq!((name.as_str(), sample.as_str()), ("jobs", "jobs_total"));
        let jobs = family(&registry, &name, MetricType::Counter, &dyn_clock, TimeDelta::hours(1)).unwrap();
        jobs.record(point(&sample, 3.0, &[], MetricType::Counter, clock.now()), true).ok();
        let latency = family(&registry, "op_seconds", MetricType::Histogram, &dyn_clock, TimeDelta::hours(1)).unwrap();
        for v in [0.002, 0.2, 20.0] {
            latency.record(point("op_seconds", v, &[], MetricType::Histogram, clock.now()), true).ok();
        }
        let text = registry.encode().unwrap();
        assert!(text.contains("# TYPE jobs counter\n"), "{text}");
        assert!(text.contains("jobs_total{environment=\"test\"} 3.0\n"), "{text}");
        assert!(text.contains("# TYPE op_seconds histogram\n"), "{text}");
        assert!(text.contains("op_seconds_count{environment=\"test\"} 3\n"), "{text}");
        assert!(text.contains("op_seconds_bucket{environment=\"test\",le=\"0.0025\"} 1\n"), "{text}");
        assert!(text.contains("op_seconds_bucket{environment=\"test\",le=\"0.25\"} 2\n"), "{text}");
        assert!(text.contains("op_seconds_bucket{environment=\"test\",le=\"10.0\"} 2\n"), "{text}");
        assert!(text.contains("op_seconds_bucket{environment=\"test\",le=\"+Inf\"} 3\n"), "{text}");
        assert_eq!(latency.latest(clock.now())[0].value, 20.0);
    }

    #[test]
    fn names_of_services_and_their_samples_are_refused() {
        let (registry, _clock, dyn_clock) = setup();
        registry.register("onex_outbox_depth", "Depth.", Gauge::<i64>::default()).unwrap();
        registry.register("onex_calls", "Calls.", crate::metrics::Counter::<u64>::default()).unwrap();
        let hours = TimeDelta::hours(1);
        for (name, kind) in [
            ("onex_outbox_depth", MetricType::Gauge),
            ("onex_calls_total", MetricType::Gauge),
            ("onex_calls_count", MetricType::Gauge),
            ("onex_outbox", MetricType::Counter),
        ] {
            let refused = ["onex_outbox_depth", "onex_calls_total", "onex_calls_count"].contains(&name);
            let result = family(&registry, name, kind, &dyn_clock, hours);
            if refused {
                let error = result.err().unwrap();
                assert_eq!(error.code(), ErrorCode::ValidationError, "{name}");
                assert_eq!(field(&error), "metric_name", "{name}: {error}");
            } else {
                result.unwrap();
            }
        }
        // `onex_outbox` is now a counter: its sample `onex_outbox_total` is taken.
        let error = family(&registry, "onex_outbox_total", MetricType::Gauge, &dyn_clock, hours).err().unwrap();
        assert_eq!(field(&error), "metric_name", "{error}");
    }

    #[test]
    fn a_family_keeps_its_type() {
        let (registry, _clock, dyn_clock) = setup();
        let _gauge = family(&registry, "x", MetricType::Gauge, &dyn_clock, TimeDelta::hours(1)).unwrap();
        let error = family(&registry, "x", MetricType::Histogram, &dyn_clock, TimeDelta::hours(1)).err().unwrap();
        assert_eq!(field(&error), "metric_type", "{error}");
    }

    #[test]
    fn a_dropped_family_gives_its_name_to_the_next_store() {
        let (registry, clock, dyn_clock) = setup();
        let first = family(&registry, "x", MetricType::Gauge, &dyn_clock, TimeDelta::hours(1)).unwrap();
        first.record(point("x", 1.0, &[], MetricType::Gauge, clock.now()), true).ok();
        let shared = family(&registry, "x", MetricType::Gauge, &dyn_clock, TimeDelta::hours(1)).unwrap();
        assert!(Arc::ptr_eq(&first, &shared), "stores alive together share a family");
        drop((first, shared));
        assert!(!registry.encode().unwrap().contains("# TYPE x "), "a dead family is still written");
        let second = family(&registry, "x", MetricType::Counter, &dyn_clock, TimeDelta::hours(1)).unwrap();
        second.record(point("x_total", 2.0, &[], MetricType::Counter, clock.now()), true).ok();
        let text = registry.encode().unwrap();
        assert!(text.contains("x_total{environment=\"test\"} 2.0\n"), "{text}");
    }

    #[test]
    fn series_past_the_retention_are_dropped_on_record_and_on_scrape() {
        let (registry, clock, dyn_clock) = setup();
        let family = family(&registry, "x", MetricType::Gauge, &dyn_clock, TimeDelta::hours(2)).unwrap();
        family.record(point("x", 1.0, &[("k", "old")], MetricType::Gauge, clock.now()), true).ok();
        clock.advance(TimeDelta::hours(1));
        family.record(point("x", 2.0, &[("k", "new")], MetricType::Gauge, clock.now()), true).ok();
        clock.advance(TimeDelta::minutes(61));
        let text = registry.encode().unwrap();
        assert!(!text.contains("k=\"old\""), "{text}");
        assert!(text.contains("k=\"new\""), "{text}");
        assert_eq!(family.len(clock.now()), 1);
        clock.advance(TimeDelta::hours(1));
        assert!(!registry.encode().unwrap().contains("# TYPE x "));
    }

    #[test]
    fn a_full_store_refuses_new_series_but_updates_existing_ones() {
        let (registry, clock, dyn_clock) = setup();
        let family = family(&registry, "x", MetricType::Gauge, &dyn_clock, TimeDelta::hours(2)).unwrap();
        assert!(family.record(point("x", 1.0, &[("k", "a")], MetricType::Gauge, clock.now()), true).is_ok());
        assert!(family.record(point("x", 2.0, &[("k", "a")], MetricType::Gauge, clock.now()), false).is_ok());
        assert!(family.record(point("x", 2.0, &[("k", "b")], MetricType::Gauge, clock.now()), false).is_err());
    }
}
