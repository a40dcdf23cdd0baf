//! Prometheus metrics: one registry per process, series registered by the services that own
//! them, exposed as OpenMetrics text.
//!
//! There is no global registry. A process builds one [`MetricsRegistry`], registers it in its
//! [`Container`](crate::Container), and every service that has series registers them when it
//! is given the registry (`with_metrics`). A series is either
//! - a live metric the service records into on its hot path: prometheus-client's `Counter` and
//!   `Gauge` (one atomic each) or this module's lock-free [`Histogram`]; or
//! - a [`Collector`] that reads the service's own counters at scrape time, so figures the
//!   service already keeps are never copied into a second store.
//!
//! Invariants:
//! - Every series of the registry carries the label `environment` (the deployment environment
//!   the process runs in); series add their own labels after it.
//! - A family name is registered once: a second registration of the same name is refused with
//!   a `CONFIGURATION_ERROR` naming it, so an exposition never repeats a family.
//! - The hot path never takes the registry's lock: it is held only while registering and while
//!   encoding a scrape.
//! - Series that several instances of one service share (every circuit breaker, every node)
//!   live in one value per registry, made on first use by [`MetricsRegistry::shared`]; each
//!   instance then adds its own label values to those families.

mod histogram;

use std::any::{Any, TypeId};
use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub use histogram::{Histogram, LATENCY_SECONDS, MAX_BOUNDS, WAIT_SECONDS};
pub use prometheus_client::collector::Collector;
pub use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
pub use prometheus_client::metrics::MetricType;
pub use prometheus_client::metrics::counter::{ConstCounter, Counter};
pub use prometheus_client::metrics::family::Family;
pub use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::{Metric, Registry};

use crate::error::{ErrorCode, OnexError};

/// The content type of [`MetricsRegistry::encode`]'s output.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The metrics registry of one process.
pub struct MetricsRegistry {
    environment: String,
    state: Mutex<State>,
    shared: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
    /// The length of the last exposition: the next one starts with room for it, instead of
    /// growing (and copying) its string from empty several times.
    last_len: AtomicUsize,
}

struct State {
    registry: Registry,
    names: BTreeSet<String>,
}

impl MetricsRegistry {
    /// An empty registry whose series are all labelled `environment="{environment}"`.
    pub fn new(environment: impl Into<String>) -> Self {
        let environment = environment.into();
        let registry =
            Registry::with_labels([(Cow::Borrowed("environment"), Cow::Owned(environment.clone()))].into_iter());
        Self {
            environment,
            state: Mutex::new(State { registry, names: BTreeSet::new() }),
            shared: Mutex::new(HashMap::new()),
            last_len: AtomicUsize::new(0),
        }
    }

    /// The environment label of every series.
    pub fn environment(&self) -> &str {
        &self.environment
    }

    /// Registers `metric` as the family `name` (a counter's name without `_total`, which the
    /// exposition adds). Fails when `name` is already registered. `help` is a sentence; its
    /// closing full stop is optional (prometheus-client adds one).
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) -> Result<(), OnexError> {
        let mut state = self.lock();
        state.claim(&[name])?;
        state.registry.register(name, help.strip_suffix('.').unwrap_or(help), metric);
        Ok(())
    }

    /// Registers `collector`, which writes the families `names` at every scrape. Fails when any
    /// of them is already registered (and then registers none).
    pub fn register_collector(&self, names: &[&str], collector: impl Collector) -> Result<(), OnexError> {
        let mut state = self.lock();
        state.claim(names)?;
        state.registry.register_collector(Box::new(collector));
        Ok(())
    }

    /// The registry's one `T`, made by `init` (which registers its families) on first use.
    /// Services of which a process may have several (circuit breakers, nodes) keep their
    /// shared families this way and add their own label values to them.
    pub fn shared<T: Any + Send + Sync>(
        &self,
        init: impl FnOnce(&Self) -> Result<T, OnexError>,
    ) -> Result<Arc<T>, OnexError> {
        let mut shared = self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(existing) = shared.get(&TypeId::of::<T>()) {
            return Ok(Arc::clone(existing).downcast::<T>().expect("the map is keyed by the value's type"));
        }
        let value = Arc::new(init(self)?);
        shared.insert(TypeId::of::<T>(), Arc::clone(&value) as Arc<dyn Any + Send + Sync>);
        Ok(value)
    }

    /// Whether the family `name` is registered.
    pub fn is_registered(&self, name: &str) -> bool {
        self.lock().names.contains(name)
    }

    /// Appends the OpenMetrics text of every series, ending with `# EOF`, to `out`.
    pub fn encode_into(&self, out: &mut String) -> Result<(), OnexError> {
        let state = self.lock();
        prometheus_client::encoding::text::encode(out, &state.registry)
            .map_err(|_| OnexError::new(ErrorCode::InternalError, "a metric could not be written as OpenMetrics text"))
    }

    /// The OpenMetrics text of every series, ending with `# EOF`.
    pub fn encode(&self) -> Result<String, OnexError> {
        let hint = self.last_len.load(Ordering::Relaxed);
        let mut out = String::with_capacity(if hint == 0 { 16 * 1024 } else { hint + hint / 8 });
        self.encode_into(&mut out)?;
        self.last_len.store(out.len(), Ordering::Relaxed);
        Ok(out)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while encoding leaves the registry as it was: keep serving it.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What a service answers when `registry` refused its series (`error`, from
/// [`MetricsRegistry::register`] or [`MetricsRegistry::register_collector`]): a
/// `CONFIGURATION_ERROR` naming the service (`owner`, "a Kafka producer pool"), the family
/// already taken, and that a registry holds one `kind` ("pool").
pub(crate) fn refused(owner: &str, kind: &str, error: &OnexError) -> OnexError {
    OnexError::new(
        ErrorCode::ConfigurationError,
        format!("{owner}'s series cannot be registered: {} (one {kind} per registry)", error.message()),
    )
    .with_detail("metric", error.details().get("metric").cloned().unwrap_or_default())
}

impl State {
    fn claim(&mut self, names: &[&str]) -> Result<(), OnexError> {
        if let Some(taken) = names.iter().find(|name| self.names.contains(**name)) {
            return Err(OnexError::new(
                ErrorCode::ConfigurationError,
                format!(
                    "the metric family '{taken}' is already registered: give each service its own registry \
                     or register it once"
                ),
            )
            .with_detail("metric", *taken));
        }
        self.names.extend(names.iter().map(|name| (*name).to_owned()));
        Ok(())
    }
}

impl std::fmt::Debug for MetricsRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsRegistry")
            .field("environment", &self.environment)
            .field("families", &self.lock().names)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_carries_the_environment_and_the_text_ends_with_eof() {
        let registry = MetricsRegistry::new("staging");
        let counter = Counter::<u64>::default();
        registry.register("onex_things", "Things done.", counter.clone()).unwrap();
        let histogram = Histogram::new(&[0.1]).unwrap();
        registry.register("onex_thing_seconds", "How long a thing took.", histogram.clone()).unwrap();
        counter.inc_by(3);
        histogram.observe(0.05);
        histogram.observe(0.07);
        histogram.observe(0.5);
        let text = registry.encode().unwrap();
        assert!(text.contains("onex_things_total{environment=\"staging\"} 3\n"), "{text}");
        assert!(text.contains("onex_thing_seconds_bucket{environment=\"staging\",le=\"0.1\"} 2\n"), "{text}");
        assert!(text.contains("onex_thing_seconds_bucket{environment=\"staging\",le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("onex_thing_seconds_count{environment=\"staging\"} 3\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(text.contains("# HELP onex_things Things done.\n"), "{text}");
    }

    #[test]
    fn a_family_name_registers_once() {
        let registry = MetricsRegistry::new("dev");
        registry.register("onex_x", "x", Gauge::<i64>::default()).unwrap();
        let err = registry.register("onex_x", "x", Gauge::<i64>::default()).unwrap_err();
        assert_eq!(err.code(), ErrorCode::ConfigurationError);
        assert!(err.message().contains("'onex_x'"), "{err}");
        #[derive(Debug)]
        struct Nothing;
        impl Collector for Nothing {
            fn encode(&self, _: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
                Ok(())
            }
        }
        assert!(registry.register_collector(&["onex_y", "onex_x"], Nothing).is_err());
        assert!(!registry.is_registered("onex_y"), "a refused collector claimed a name");
    }

    #[test]
    fn a_shared_value_is_made_once_per_registry() {
        let registry = MetricsRegistry::new("dev");
        let make = |r: &MetricsRegistry| {
            let family = Family::<Vec<(String, String)>, Counter>::default();
            r.register("onex_calls", "Calls.", family.clone())?;
            Ok(family)
        };
        let first = registry.shared(make).unwrap();
        let second = registry.shared(make).unwrap();
        first.get_or_create(&vec![("node".to_owned(), "a".to_owned())]).inc();
        second.get_or_create(&vec![("node".to_owned(), "b".to_owned())]).inc();
        let text = registry.encode().unwrap();
        assert_eq!(text.matches("# TYPE onex_calls counter").count(), 1, "{text}");
        assert!(text.contains("onex_calls_total{environment=\"dev\",node=\"b\"} 1"), "{text}");
    }
}
