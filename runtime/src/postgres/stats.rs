//! Live pool counters (lock-free) and the wait-time histogram.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::models::postgres::{ConnectionStats, HistogramBucket};

/// Upper bounds of the wait-time histogram buckets, in milliseconds (+∞ follows).
pub const WAIT_BUCKETS_MS: [f64; 10] = [0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 50.0, 100.0, 1000.0, 5000.0];

/// [`WAIT_BUCKETS_MS`] in seconds, as the Prometheus histogram names them (written out: the
/// quotients computed in floating point would print as `1.0000000000000001e-5`).
pub(crate) const WAIT_BUCKETS_SECONDS: [f64; 10] = [0.00001, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 1.0, 5.0];

/// [`WAIT_BUCKETS_MS`] in nanoseconds: a waited checkout finds its bucket by integer
/// comparisons (at 128 clients on 50 connections most checkouts wait).
const WAIT_BUCKETS_NANOS: [u64; 10] =
    [10_000, 100_000, 500_000, 1_000_000, 5_000_000, 10_000_000, 50_000_000, 100_000_000, 1_000_000_000, 5_000_000_000];

/// Why a connection was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// Idle longer than `max_inactive_connection_lifetime`.
    Idle,
    /// Served `max_queries` statements.
    MaxQueries,
    /// The socket or session failed.
    Broken,
    /// A statement ran past its timeout and was cancelled.
    Timeout,
    /// The rollback of an abandoned transaction failed or timed out.
    RecycleFailed,
    /// The caller was cancelled (dropped) while its statement was in flight.
    Cancelled,
    /// The pool was closed.
    Shutdown,
}

impl CloseReason {
    const ALL: [Self; 7] = [
        Self::Idle,
        Self::MaxQueries,
        Self::Broken,
        Self::Timeout,
        Self::RecycleFailed,
        Self::Cancelled,
        Self::Shutdown,
    ];

    /// The position in [`Self::ALL`] (and in the counters); exhaustive, so a new reason
    /// cannot be miscounted.
    const fn index(self) -> usize {
        match self {
            Self::Idle => 0,
            Self::MaxQueries => 1,
            Self::Broken => 2,
            Self::Timeout => 3,
            Self::RecycleFailed => 4,
            Self::Cancelled => 5,
            Self::Shutdown => 6,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::MaxQueries => "max_queries",
            Self::Broken => "broken",
            Self::Timeout => "timeout",
            Self::RecycleFailed => "recycle_failed",
            Self::Cancelled => "cancelled",
            Self::Shutdown => "shutdown",
        }
    }
}

/// Counters updated by the pool as things happen; `snapshot` turns them into figures.
#[derive(Debug, Default)]
pub(crate) struct PoolCounters {
    pub size: AtomicU32,
    pub in_use: AtomicU32,
    pub waiting: AtomicU32,
    pub checkouts: AtomicU64,
    pub waited_checkouts: AtomicU64,
    pub wait_timeouts: AtomicU64,
    wait_buckets: [AtomicU64; WAIT_BUCKETS_MS.len() + 1],
    /// Nanoseconds waited by the checkouts that waited: the sum of the wait histogram (an
    /// immediate checkout waits nothing and adds nothing).
    wait_nanos: AtomicU64,
    pub created: AtomicU64,
    closed: [AtomicU64; CloseReason::ALL.len()],
    pub failed_connections: AtomicU64,
    pub total_queries: AtomicU64,
    pub failed_queries: AtomicU64,
    pub total_query_nanos: AtomicU64,
}

impl PoolCounters {
    /// A checkout that did not wait.
    pub(crate) fn record_immediate_checkout(&self) {
        self.checkouts.fetch_add(1, Relaxed);
        self.wait_buckets[0].fetch_add(1, Relaxed);
    }

    /// A checkout that waited `wait`.
    pub(crate) fn record_waited_checkout(&self, wait: Duration) {
        self.checkouts.fetch_add(1, Relaxed);
        self.waited_checkouts.fetch_add(1, Relaxed);
        let nanos = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX);
        self.wait_nanos.fetch_add(nanos, Relaxed);
        let bucket = WAIT_BUCKETS_NANOS.iter().position(|le| nanos <= *le).unwrap_or(WAIT_BUCKETS_NANOS.len());
        self.wait_buckets[bucket].fetch_add(1, Relaxed);
    }

    pub(crate) fn record_closed(&self, reason: CloseReason) {
        self.closed[reason.index()].fetch_add(1, Relaxed);
        self.size.fetch_sub(1, Relaxed);
    }

    pub(crate) fn record_query(&self, elapsed: Duration, success: bool) {
        self.total_queries.fetch_add(1, Relaxed);
        if !success {
            self.failed_queries.fetch_add(1, Relaxed);
        }
        self.total_query_nanos.fetch_add(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    /// The wait histogram: `(upper bound in seconds, count of that bucket alone)` per bucket
    /// ending with `+Inf` (the form the OpenMetrics encoder adds up), the count, and the sum
    /// of the waits in seconds.
    pub(crate) fn wait_histogram(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let buckets: Vec<(f64, u64)> = self
            .wait_buckets
            .iter()
            .enumerate()
            .map(|(i, count)| (WAIT_BUCKETS_SECONDS.get(i).copied().unwrap_or(f64::INFINITY), count.load(Relaxed)))
            .collect();
        let count = buckets.iter().map(|b| b.1).sum();
        let sum = Duration::from_nanos(self.wait_nanos.load(Relaxed)).as_secs_f64();
        (buckets, count, sum)
    }

    /// Statements run: `(all, failed)`. `failed` is read first: it is raised after `all`, so
    /// it never exceeds the `all` read after it.
    pub(crate) fn queries(&self) -> (u64, u64) {
        let failed = self.failed_queries.load(Relaxed);
        (self.total_queries.load(Relaxed), failed)
    }

    /// The current figures; each counter is read once, so the set is consistent per field
    /// but not across fields while the pool is busy.
    pub(crate) fn snapshot(&self, idle: u32, min_size: u32, max_size: u32) -> ConnectionStats {
        let mut cumulative = 0;
        let wait_time_histogram = self
            .wait_buckets
            .iter()
            .enumerate()
            .map(|(i, count)| {
                cumulative += count.load(Relaxed);
                HistogramBucket { le_ms: WAIT_BUCKETS_MS.get(i).copied(), count: cumulative }
            })
            .collect();
        let connections_closed: BTreeMap<String, u64> =
            CloseReason::ALL.iter().zip(&self.closed).map(|(r, c)| (r.as_str().to_owned(), c.load(Relaxed))).collect();
        let total_queries = self.total_queries.load(Relaxed);
        let nanos = self.total_query_nanos.load(Relaxed);
        ConnectionStats {
            size: self.size.load(Relaxed),
            idle,
            in_use: self.in_use.load(Relaxed),
            waiting: self.waiting.load(Relaxed),
            min_size,
            max_size,
            checkouts: self.checkouts.load(Relaxed),
            waited_checkouts: self.waited_checkouts.load(Relaxed),
            wait_timeouts: self.wait_timeouts.load(Relaxed),
            wait_time_histogram,
            connections_created: self.created.load(Relaxed),
            connections_closed,
            failed_connections: self.failed_connections.load(Relaxed),
            total_queries,
            failed_queries: self.failed_queries.load(Relaxed),
            average_query_time_ms: if total_queries == 0 {
                0.0
            } else {
                nanos as f64 / total_queries as f64 / 1_000_000.0
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_reasons_are_named() {
        let counters = PoolCounters::default();
        counters.size.store(3, Relaxed);
        counters.record_immediate_checkout();
        counters.record_waited_checkout(Duration::from_millis(3));
        counters.record_waited_checkout(Duration::from_secs(10));
        counters.record_closed(CloseReason::MaxQueries);
        let stats = counters.snapshot(1, 1, 4);
        let counts: Vec<u64> = stats.wait_time_histogram.iter().map(|b| b.count).collect();
        assert_eq!(counts, vec![1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 3]);
        assert_eq!(stats.wait_time_histogram.last().unwrap().le_ms, None);
        assert_eq!(stats.connections_closed["max_queries"], 1);
        assert!(CloseReason::ALL.iter().enumerate().all(|(i, r)| r.index() == i));
        assert_eq!((stats.size, stats.checkouts, stats.waited_checkouts), (2, 3, 2));
        let (buckets, count, sum) = counters.wait_histogram();
        assert_eq!(count, 3);
        assert_eq!(buckets.iter().map(|b| b.1).collect::<Vec<_>>(), vec![1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1]);
        assert_eq!(buckets[4].0, 0.005);
        assert!((sum - 10.003).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn bucket_bounds_in_seconds_are_the_milliseconds_ones() {
        for (s, ms) in WAIT_BUCKETS_SECONDS.iter().zip(WAIT_BUCKETS_MS) {
            assert!((s * 1000.0 - ms).abs() < 1e-12, "{s} s against {ms} ms");
        }
        for (nanos, ms) in WAIT_BUCKETS_NANOS.iter().zip(WAIT_BUCKETS_MS) {
            assert!((*nanos as f64 / 1e6 - ms).abs() < 1e-12, "{nanos} ns against {ms} ms");
        }
    }

    #[test]
    fn a_wait_on_a_bound_counts_in_that_bucket_and_one_past_it_in_the_next() {
        let counters = PoolCounters::default();
        counters.record_waited_checkout(Duration::from_micros(500));
        counters.record_waited_checkout(Duration::from_nanos(500_001));
        let (buckets, count, _) = counters.wait_histogram();
        assert_eq!(count, 2);
        assert_eq!((buckets[2].1, buckets[3].1), (1, 1));
    }
}
