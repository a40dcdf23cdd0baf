//! The event bus's Prometheus series, registered by
//! [`KafkaEventBus::with_metrics`](super::KafkaEventBus::with_metrics).
//!
//! - `onex_event_bus_events_total{outcome="published"|"failed"}`: events the broker
//!   acknowledged, and events that failed for good (after their retries), since the bus was
//!   built. Events the rate limit refused were never attempted and are in neither.
//! - `onex_event_bus_retries_total`: publish attempts repeated after a retriable error.
//!
//! Invariants: the figures are the bus's own counters ([`super::EventBusStats`]) read at
//! scrape time; registering adds nothing to the publish path. The collector holds the
//! counters weakly: once the bus is gone its series are no longer written.

use std::fmt;
use std::sync::Weak;
use std::sync::atomic::Ordering;

use super::kafka_bus::BusCounters;
use crate::error::OnexError;
use crate::metrics::{Collector, ConstCounter, DescriptorEncoder, EncodeMetric, MetricType, MetricsRegistry};

/// Events, by outcome (a counter: the exposition adds `_total`).
pub const EVENTS: &str = "onex_event_bus_events";
/// Repeated publish attempts.
pub const RETRIES: &str = "onex_event_bus_retries";

/// Every family of the bus.
pub const FAMILIES: [&str; 2] = [EVENTS, RETRIES];

/// Registers the bus's families in `registry`; fails (registering none) when the registry
/// already has them.
pub(crate) fn register(registry: &MetricsRegistry, counters: Weak<BusCounters>) -> Result<(), OnexError> {
    registry
        .register_collector(&FAMILIES, BusCollector { counters })
        .map_err(|e| crate::metrics::refused("an event bus", "bus", &e))
}

#[derive(Debug)]
struct BusCollector {
    counters: Weak<BusCounters>,
}

impl Collector for BusCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let Some(counters) = self.counters.upgrade() else { return Ok(()) };
        {
            let mut family = encoder.encode_descriptor(
                EVENTS,
                "Events published through the event bus, by outcome (failed: for good, after retries).",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(counters.published.load(Ordering::Relaxed))
                .encode(family.encode_family(&[("outcome", "published")])?)?;
            ConstCounter::new(counters.failed.load(Ordering::Relaxed))
                .encode(family.encode_family(&[("outcome", "failed")])?)?;
        }
        ConstCounter::new(counters.retries.load(Ordering::Relaxed)).encode(encoder.encode_descriptor(
            RETRIES,
            "Event publish attempts repeated after a retriable error.",
            None,
            MetricType::Counter,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::error::ErrorCode;
    use crate::event_bus::{KafkaEventBus, TopicNamer};
    use crate::kafka::{KafkaPoolSettings, KafkaProducerPool};
    use crate::models::kafka::KafkaProducerConfig;

    fn bus() -> KafkaEventBus {
        let config = KafkaProducerConfig::new("127.0.0.1:1");
        let pool = KafkaProducerPool::new(KafkaPoolSettings::default(), config).unwrap();
        KafkaEventBus::new(Arc::new(pool), TopicNamer::default())
    }

    #[test]
    fn the_bus_series_show_its_counters_as_they_are_at_the_scrape() {
        let registry = MetricsRegistry::new("test");
        let bus = bus().with_metrics(&registry).unwrap();
        bus.counters.published.fetch_add(5, Ordering::Relaxed);
        bus.counters.failed.fetch_add(2, Ordering::Relaxed);
        bus.counters.retries.fetch_add(3, Ordering::Relaxed);
        let text = registry.encode().unwrap();
        for line in [
            "# TYPE onex_event_bus_events counter",
            "onex_event_bus_events_total{environment=\"test\",outcome=\"published\"} 5",
            "onex_event_bus_events_total{environment=\"test\",outcome=\"failed\"} 2",
            "# TYPE onex_event_bus_retries counter",
            "onex_event_bus_retries_total{environment=\"test\"} 3",
        ] {
            assert!(text.lines().any(|l| l == line), "missing `{line}` in\n{text}");
        }
        let stats = bus.stats();
        assert_eq!((stats.published, stats.failed, stats.retries), (5, 2, 3));
        drop(bus);
        assert!(!registry.encode().unwrap().contains("onex_event_bus"));
    }

    #[test]
    fn a_second_bus_on_one_registry_is_refused() {
        let registry = MetricsRegistry::new("test");
        let _first = bus().with_metrics(&registry).unwrap();
        let err = bus().with_metrics(&registry).unwrap_err();
        assert_eq!(err.code(), ErrorCode::ConfigurationError);
        assert!(err.message().contains("'onex_event_bus_events'") && err.message().contains("one bus"), "{err}");
    }
}
