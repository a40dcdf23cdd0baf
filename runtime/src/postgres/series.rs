//! The pool's Prometheus series, registered by
//! [`PostgresConnectionManager::with_metrics`](super::PostgresConnectionManager::with_metrics).
//!
//! - `onex_postgres_queries_total{outcome="ok"|"error"}`: statements run since the pool
//!   started (the schema check at connect and health probes included).
//! - `onex_postgres_query_duration_seconds`: histogram (buckets
//!   [`LATENCY_SECONDS`](crate::metrics::LATENCY_SECONDS)) of how
//!   long each statement ran on its connection, the wait for the connection excluded; counts
//!   the statements run since `with_metrics`.
//! - `onex_postgres_acquire_wait_seconds`: histogram of the wait for a connection, every
//!   checkout since the pool started, in the pool's own wait buckets ([`WAIT_BUCKETS_MS`] in
//!   seconds). A checkout that found a free slot waited nothing: it is in the first bucket.
//! - `onex_postgres_connections{state="idle"|"in_use"}`: open connections, idle and checked
//!   out (a connection being opened or rolled back counts in neither).
//! - `onex_postgres_waiting`: callers waiting for a connection now.
//! - `onex_postgres_in_flight`: statements running now (started after `with_metrics`).
//!
//! Invariants:
//! - What the pool counts anyway (statements, the wait histogram, connections, waiters) is
//!   read from its counters at scrape time, never copied. Only the statement duration and
//!   the statements in flight, which nothing else counts, are recorded, through handles the
//!   manager holds: without metrics a statement pays one branch for them.
//! - The collector holds the pool weakly, so a registry that outlives its manager does not
//!   keep connections open; once the pool is gone its series are no longer written.
//!
//! [`WAIT_BUCKETS_MS`]: super::WAIT_BUCKETS_MS

use std::fmt;
use std::sync::Weak;

use prometheus_client::encoding::NoLabelSet;

use super::pool::{Pool, Shared};
use crate::error::OnexError;
use crate::metrics::{
    Collector, ConstCounter, ConstGauge, DescriptorEncoder, EncodeMetric, Gauge, Histogram, MetricType, MetricsRegistry,
};

/// Statements run, by outcome (a counter: the exposition adds `_total`).
pub const QUERIES: &str = "onex_postgres_queries";
/// How long statements ran.
pub const QUERY_DURATION: &str = "onex_postgres_query_duration_seconds";
/// How long checkouts waited for a connection.
pub const ACQUIRE_WAIT: &str = "onex_postgres_acquire_wait_seconds";
/// Open connections, by state.
pub const CONNECTIONS: &str = "onex_postgres_connections";
/// Callers waiting for a connection.
pub const WAITING: &str = "onex_postgres_waiting";
/// Statements running.
pub const IN_FLIGHT: &str = "onex_postgres_in_flight";

/// Every family of the pool.
pub const FAMILIES: [&str; 6] = [QUERIES, QUERY_DURATION, ACQUIRE_WAIT, CONNECTIONS, WAITING, IN_FLIGHT];

/// What the manager records per statement once it has metrics.
#[derive(Clone)]
pub(crate) struct Live {
    duration: Histogram,
    in_flight: Gauge,
}

impl Live {
    /// Counts a statement as running until the returned guard drops (the statement returned,
    /// or its caller was cancelled).
    #[inline]
    pub(crate) fn start(&self) -> Running<'_> {
        self.in_flight.inc();
        Running(&self.in_flight)
    }

    /// Records how long a statement ran.
    #[inline]
    pub(crate) fn ran(&self, elapsed: std::time::Duration) {
        self.duration.observe_duration(elapsed);
    }
}

/// A statement counted in `onex_postgres_in_flight`.
pub(crate) struct Running<'a>(&'a Gauge);

impl Drop for Running<'_> {
    #[inline]
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Registers the pool's families in `registry`; fails (registering none) when the registry
/// already has them.
pub(crate) fn register(registry: &MetricsRegistry, pool: &Pool) -> Result<Live, OnexError> {
    let live = Live { duration: Histogram::latency(), in_flight: Gauge::default() };
    let collector = PoolCollector { pool: pool.downgrade(), live: live.clone() };
    registry
        .register_collector(&FAMILIES, collector)
        .map_err(|e| crate::metrics::refused("a PostgreSQL connection manager", "manager", &e))?;
    Ok(live)
}

struct PoolCollector {
    pool: Weak<Shared>,
    live: Live,
}

impl fmt::Debug for PoolCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolCollector").field("open", &(self.pool.strong_count() > 0)).finish_non_exhaustive()
    }
}

impl Collector for PoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let Some(pool) = self.pool.upgrade() else { return Ok(()) };
        let counters = &pool.counters;
        {
            let (all, failed) = counters.queries();
            let mut family = encoder.encode_descriptor(
                QUERIES,
                "PostgreSQL statements run since the pool started, by outcome.",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(all.saturating_sub(failed)).encode(family.encode_family(&[("outcome", "ok")])?)?;
            ConstCounter::new(failed).encode(family.encode_family(&[("outcome", "error")])?)?;
        }
        self.live.duration.encode(encoder.encode_descriptor(
            QUERY_DURATION,
            "How long PostgreSQL statements ran on their connection, in seconds.",
            None,
            MetricType::Histogram,
        )?)?;
        {
            let (buckets, count, sum) = counters.wait_histogram();
            let mut metric = encoder.encode_descriptor(
                ACQUIRE_WAIT,
                "How long checkouts waited for a PostgreSQL connection, in seconds.",
                None,
                MetricType::Histogram,
            )?;
            metric.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        {
            let in_use = counters.in_use.load(std::sync::atomic::Ordering::Relaxed);
            let mut family = encoder.encode_descriptor(
                CONNECTIONS,
                "Open PostgreSQL connections, idle and checked out.",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(i64::from(pool.idle_count())).encode(family.encode_family(&[("state", "idle")])?)?;
            ConstGauge::new(i64::from(in_use)).encode(family.encode_family(&[("state", "in_use")])?)?;
        }
        ConstGauge::new(i64::from(counters.waiting.load(std::sync::atomic::Ordering::Relaxed))).encode(
            encoder.encode_descriptor(
                WAITING,
                "Callers waiting for a PostgreSQL connection.",
                None,
                MetricType::Gauge,
            )?,
        )?;
        self.live.in_flight.encode(encoder.encode_descriptor(
            IN_FLIGHT,
            "PostgreSQL statements running now.",
            None,
            MetricType::Gauge,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::Duration;

    use super::*;
    use crate::error::ErrorCode;
    use crate::models::postgres::{PostgresConnectionConfig, SslMode};
    use crate::postgres::connect::Connector;
    use crate::postgres::pool::Limits;

    /// A pool that opens nothing until asked (no server needed).
    async fn idle_pool() -> Pool {
        let mut config = PostgresConnectionConfig::new("127.0.0.1", 1, "none", "nobody", "public");
        config.ssl_mode = SslMode::Disable;
        config.min_connections = 0;
        Pool::start(Limits::from_config(&config), Connector::new(&config).unwrap()).await.unwrap()
    }

    #[tokio::test]
    async fn the_pool_series_show_its_counters_as_they_are_at_the_scrape() {
        let pool = idle_pool().await;
        let registry = MetricsRegistry::new("test");
        let live = register(&registry, &pool).unwrap();
        let counters = &pool.shared().counters;
        for ok in [true, true, true, false] {
            counters.record_query(Duration::from_millis(1), ok);
        }
        counters.record_immediate_checkout();
        counters.record_waited_checkout(Duration::from_millis(3));
        counters.in_use.store(2, Relaxed);
        counters.waiting.store(1, Relaxed);
        let running = live.start();
        live.ran(Duration::from_millis(2));
        let text = registry.encode().unwrap();
        for line in [
            "# TYPE onex_postgres_queries counter",
            "onex_postgres_queries_total{environment=\"test\",outcome=\"ok\"} 3",
            "onex_postgres_queries_total{environment=\"test\",outcome=\"error\"} 1",
            "onex_postgres_query_duration_seconds_bucket{environment=\"test\",le=\"0.001\"} 0",
            "onex_postgres_query_duration_seconds_bucket{environment=\"test\",le=\"0.0025\"} 1",
            "onex_postgres_query_duration_seconds_bucket{environment=\"test\",le=\"+Inf\"} 1",
            "onex_postgres_query_duration_seconds_count{environment=\"test\"} 1",
            "onex_postgres_acquire_wait_seconds_bucket{environment=\"test\",le=\"0.00001\"} 1",
            "onex_postgres_acquire_wait_seconds_bucket{environment=\"test\",le=\"0.001\"} 1",
            "onex_postgres_acquire_wait_seconds_bucket{environment=\"test\",le=\"0.005\"} 2",
            "onex_postgres_acquire_wait_seconds_bucket{environment=\"test\",le=\"+Inf\"} 2",
            "onex_postgres_acquire_wait_seconds_sum{environment=\"test\"} 0.003",
            "onex_postgres_acquire_wait_seconds_count{environment=\"test\"} 2",
            "onex_postgres_connections{environment=\"test\",state=\"idle\"} 0",
            "onex_postgres_connections{environment=\"test\",state=\"in_use\"} 2",
            "onex_postgres_waiting{environment=\"test\"} 1",
            "onex_postgres_in_flight{environment=\"test\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing `{line}` in\n{text}");
        }
        drop(running);
        counters.record_query(Duration::from_millis(1), true);
        let text = registry.encode().unwrap();
        assert!(text.contains("onex_postgres_in_flight{environment=\"test\"} 0\n"), "{text}");
        assert!(text.contains("onex_postgres_queries_total{environment=\"test\",outcome=\"ok\"} 4\n"), "{text}");
        pool.close();
    }

    #[tokio::test]
    async fn a_second_pool_on_one_registry_is_refused_and_names_the_family() {
        let registry = MetricsRegistry::new("test");
        let (first, second) = (idle_pool().await, idle_pool().await);
        register(&registry, &first).unwrap();
        let err = register(&registry, &second).err().expect("a second registration");
        assert_eq!(err.code(), ErrorCode::ConfigurationError);
        assert!(err.message().contains("'onex_postgres_queries'"), "{err}");
        assert!(err.message().contains("one manager per registry"), "{err}");
        let text = registry.encode().unwrap();
        assert_eq!(text.matches("# TYPE onex_postgres_queries counter").count(), 1, "{text}");
    }

    #[tokio::test]
    async fn a_dropped_pool_leaves_no_series_behind() {
        let registry = MetricsRegistry::new("test");
        let pool = idle_pool().await;
        register(&registry, &pool).unwrap();
        assert!(registry.encode().unwrap().contains("onex_postgres_waiting"));
        drop(pool);
        let text = registry.encode().unwrap();
        assert!(!text.contains("onex_postgres"), "{text}");
    }
}
