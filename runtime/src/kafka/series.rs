//! The producer pool's Prometheus series, registered by
//! [`KafkaProducerPool::with_metrics`](super::KafkaProducerPool::with_metrics).
//!
//! - `onex_kafka_messages_total{outcome="delivered"|"failed"}`: delivery reports since the
//!   pool started.
//! - `onex_kafka_delivery_duration_seconds`: histogram of the time from handing a message to
//!   librdkafka to its successful delivery report, delivered messages only, over the doubling
//!   bounds 50 µs × 2^k (see [`LatencyHistogram::prometheus_buckets`]).
//! - `onex_kafka_in_flight`: messages handed to librdkafka and not yet reported.
//! - `onex_kafka_producers`: producers the pool holds now (a quarantined one is still held
//!   until it is replaced).
//!
//! Invariants: every figure is the pool's own counters ([`PoolMetrics`]) read at scrape
//! time; registering adds nothing to the send path. The collector holds the pool weakly, so
//! a registry does not keep producers alive; once the pool is gone its series are no longer
//! written.
//!
//! [`LatencyHistogram::prometheus_buckets`]: super::metrics::LatencyHistogram::prometheus_buckets
//! [`PoolMetrics`]: super::metrics::PoolMetrics

use std::fmt;
use std::sync::Weak;

use prometheus_client::encoding::NoLabelSet;

use super::pool::Inner;
use crate::error::OnexError;
use crate::metrics::{
    Collector, ConstCounter, ConstGauge, DescriptorEncoder, EncodeMetric, MetricType, MetricsRegistry,
};

/// Delivery reports, by outcome (a counter: the exposition adds `_total`).
pub const MESSAGES: &str = "onex_kafka_messages";
/// Time from enqueue to a successful delivery report.
pub const DELIVERY_DURATION: &str = "onex_kafka_delivery_duration_seconds";
/// Messages enqueued and not yet reported.
pub const IN_FLIGHT: &str = "onex_kafka_in_flight";
/// Producers held.
pub const PRODUCERS: &str = "onex_kafka_producers";

/// Every family of the pool.
pub const FAMILIES: [&str; 4] = [MESSAGES, DELIVERY_DURATION, IN_FLIGHT, PRODUCERS];

/// Registers the pool's families in `registry`; fails (registering none) when the registry
/// already has them.
pub(crate) fn register(registry: &MetricsRegistry, pool: Weak<Inner>) -> Result<(), OnexError> {
    registry
        .register_collector(&FAMILIES, PoolCollector { pool })
        .map_err(|e| crate::metrics::refused("a Kafka producer pool", "pool", &e))
}

struct PoolCollector {
    pool: Weak<Inner>,
}

impl fmt::Debug for PoolCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaPoolCollector").field("open", &(self.pool.strong_count() > 0)).finish()
    }
}

impl Collector for PoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let Some(pool) = self.pool.upgrade() else { return Ok(()) };
        let metrics = pool.metrics();
        {
            let mut family = encoder.encode_descriptor(
                MESSAGES,
                "Kafka delivery reports since the pool started, by outcome.",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(metrics.sent()).encode(family.encode_family(&[("outcome", "delivered")])?)?;
            ConstCounter::new(metrics.failed_total()).encode(family.encode_family(&[("outcome", "failed")])?)?;
        }
        {
            let (buckets, count, sum) = metrics.latency().prometheus_buckets();
            let mut metric = encoder.encode_descriptor(
                DELIVERY_DURATION,
                "Time from handing a Kafka message to librdkafka to its successful delivery report, in seconds.",
                None,
                MetricType::Histogram,
            )?;
            metric.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        ConstGauge::new(i64::try_from(metrics.queue_depth()).unwrap_or(i64::MAX)).encode(
            encoder.encode_descriptor(
                IN_FLIGHT,
                "Kafka messages handed to librdkafka and not yet reported.",
                None,
                MetricType::Gauge,
            )?,
        )?;
        ConstGauge::new(i64::try_from(pool.live_producers().len()).unwrap_or(i64::MAX))
            .encode(encoder.encode_descriptor(PRODUCERS, "Kafka producers the pool holds.", None, MetricType::Gauge)?)
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::mocking::MockCluster;

    use super::*;
    use crate::error::ErrorCode;
    use crate::kafka::{KafkaPoolSettings, KafkaProducerPool, ProduceRecord};
    use crate::models::kafka::KafkaProducerConfig;

    fn pool(bootstrap: String) -> KafkaProducerPool {
        KafkaProducerPool::new(KafkaPoolSettings::default(), KafkaProducerConfig::new(bootstrap)).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pool_series_show_its_delivery_reports_and_producers() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("metrics", 1, 1).unwrap();
        let registry = MetricsRegistry::new("test");
        let pool = pool(mock.bootstrap_servers()).with_metrics(&registry).unwrap();
        let text = registry.encode().unwrap();
        assert!(text.contains("onex_kafka_producers{environment=\"test\"} 0\n"), "{text}");
        for i in 0..7u32 {
            pool.publish(ProduceRecord::new("metrics", &i.to_be_bytes()), None).await.unwrap();
        }
        let text = registry.encode().unwrap();
        for line in [
            "# TYPE onex_kafka_messages counter",
            "onex_kafka_messages_total{environment=\"test\",outcome=\"delivered\"} 7",
            "onex_kafka_messages_total{environment=\"test\",outcome=\"failed\"} 0",
            "# TYPE onex_kafka_delivery_duration_seconds histogram",
            "onex_kafka_delivery_duration_seconds_count{environment=\"test\"} 7",
            "onex_kafka_delivery_duration_seconds_bucket{environment=\"test\",le=\"52.4288\"} 7",
            "onex_kafka_delivery_duration_seconds_bucket{environment=\"test\",le=\"+Inf\"} 7",
            "onex_kafka_in_flight{environment=\"test\"} 0",
            "onex_kafka_producers{environment=\"test\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing `{line}` in\n{text}");
        }
        let stats = pool.stats();
        let sum = text
            .lines()
            .find_map(|l| l.strip_prefix("onex_kafka_delivery_duration_seconds_sum{environment=\"test\"} "))
            .and_then(|v| v.parse::<f64>().ok())
            .expect("a sum");
        assert!((sum / 7.0 * 1000.0 - stats.average_delivery_ms).abs() < 1e-6, "{sum} against {stats:?}");
        pool.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn a_second_pool_on_one_registry_is_refused_and_a_dropped_one_leaves_no_series() {
        let registry = MetricsRegistry::new("test");
        let first = pool("127.0.0.1:1".into()).with_metrics(&registry).unwrap();
        let err = pool("127.0.0.1:1".into()).with_metrics(&registry).unwrap_err();
        assert_eq!(err.code(), ErrorCode::ConfigurationError);
        assert!(err.message().contains("'onex_kafka_messages'") && err.message().contains("one pool"), "{err}");
        // A clone is the same pool: its series stay while any handle lives.
        let clone = first.clone();
        drop(first);
        assert!(registry.encode().unwrap().contains("onex_kafka_in_flight"));
        drop(clone);
        let text = registry.encode().unwrap();
        assert!(!text.contains("onex_kafka"), "{text}");
    }
}
