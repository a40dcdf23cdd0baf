//! Real counters behind the pool's stats and health: per-topic traffic, a delivery-latency
//! histogram, queue depth and recent failures.
//!
//! Everything on the delivery path is a relaxed atomic: the counters are read for reporting
//! only, so they need no ordering with each other. The sending side writes only
//! [`PoolMetrics::enqueued`]'s counter, which sits on a cache line of its own; everything else
//! is written by the delivery-report thread, so the two sides never fight over a line.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use crossbeam_utils::CachePadded;
use rustc_hash::FxBuildHasher;

use crate::models::health::HealthStatus;
use crate::models::kafka::KafkaTopicStats;

/// A topic's counters as a message's record names them: a pointer, not a counted reference.
///
/// A counted one cost a cache line per message in flight between the two sides: the sending
/// side added to the counters' reference count for each message and the delivery thread took
/// it off again, on the line it writes the counters themselves on.
///
/// Invariant: it was made by [`PoolMetrics::topic_ref`], whose metrics never drop a topic's
/// counters (they are kept in `topics` until the metrics go), so it is valid as long as those
/// metrics are; it is read only through them ([`PoolMetrics::counters`]).
#[derive(Clone, Copy)]
pub(crate) struct TopicRef(NonNull<TopicCounters>);

// SAFETY: a shared reference to atomics, valid while its metrics live (see the invariant); the
// counters are `Sync`.
unsafe impl Send for TopicRef {}
// SAFETY: as above.
unsafe impl Sync for TopicRef {}

impl TopicRef {
    /// A reference no metrics made, for records that are never reported to any (tests).
    #[cfg(test)]
    pub(crate) fn dangling() -> Self {
        Self(NonNull::dangling())
    }
}

/// Counters of one topic.
#[derive(Debug, Default)]
pub struct TopicCounters {
    sent: AtomicU64,
    failed: AtomicU64,
    bytes: AtomicU64,
    /// Milliseconds since the metrics' start, plus one (0 = never).
    last_activity_ms: AtomicU64,
}

impl TopicCounters {
    pub(crate) fn snapshot(&self, started_utc: DateTime<Utc>) -> KafkaTopicStats {
        let last = self.last_activity_ms.load(Ordering::Relaxed);
        KafkaTopicStats {
            sent: self.sent.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            last_activity: (last > 0).then(|| started_utc + chrono::Duration::milliseconds(last as i64 - 1)),
        }
    }
}

/// Log-spaced latency buckets from 50 µs to about 100 s: each bucket's upper bound is
/// 2^(1/4) times the previous one, so a percentile read from them is within 19 %. Every
/// fourth bound is exactly 50 µs × 2^k, so the buckets add up to a Prometheus histogram with
/// doubling bounds ([`LatencyHistogram::prometheus_buckets`]).
const BUCKETS: usize = 84;
const FIRST_BOUND_US: f64 = 50.0;
/// 2^(i/4) for i in 0..4.
const QUARTER_STEPS: [f64; 4] = [1.0, 1.189_207_115_002_721, std::f64::consts::SQRT_2, 1.681_792_830_507_429];
/// Buckets of one doubling.
const STEPS_PER_DOUBLING: usize = QUARTER_STEPS.len();

/// The upper bound of bucket `index`, in microseconds.
fn bound_us(index: usize) -> f64 {
    FIRST_BOUND_US * 2f64.powi((index / STEPS_PER_DOUBLING) as i32) * QUARTER_STEPS[index % STEPS_PER_DOUBLING]
}

/// A lock-free delivery-latency histogram.
#[derive(Debug)]
pub struct LatencyHistogram {
    counts: [AtomicU64; BUCKETS],
    total_us: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self { counts: std::array::from_fn(|_| AtomicU64::new(0)), total_us: AtomicU64::new(0) }
    }
}

impl LatencyHistogram {
    /// Records one latency.
    pub fn record(&self, latency: Duration) {
        self.record_us(latency.as_micros().min(u128::from(u64::MAX)) as u64);
    }

    /// Records one latency given in microseconds.
    pub fn record_us(&self, us: u64) {
        self.counts[Self::bucket(us)].fetch_add(1, Ordering::Relaxed);
        self.total_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The first bucket whose upper bound is at least `us`. This runs once per delivery report,
    /// so it finds the doubling holding `us` from its leading zeros and then looks at most four
    /// bounds, instead of a binary search over all of them.
    fn bucket(us: u64) -> usize {
        // Whole microseconds: `us` ≤ a bound exactly when `us` ≤ the bound's floor.
        static UPPER_BOUNDS_US: LazyLock<[u64; BUCKETS]> =
            LazyLock::new(|| std::array::from_fn(|index| bound_us(index).floor() as u64));
        let first = FIRST_BOUND_US as u64;
        if us <= first {
            return 0;
        }
        // 50 × 2^k < us ≤ 50 × 2^(k+1) exactly when 2^k ≤ (us − 1) / 50 < 2^(k+1); the bounds
        // of that doubling are 4k + 1 ..= 4k + 4, the last one exactly 50 × 2^(k+1).
        let doubling = ((us - 1) / first).ilog2() as usize;
        let bounds = &*UPPER_BOUNDS_US;
        let mut index = doubling * STEPS_PER_DOUBLING + 1;
        while index < BUCKETS - 1 && bounds[index] < us {
            index += 1;
        }
        index.min(BUCKETS - 1)
    }

    fn upper_bound_ms(index: usize) -> f64 {
        bound_us(index) / 1000.0
    }

    /// The latencies as a Prometheus histogram over the doubling bounds 50 µs × 2^k, in
    /// seconds (50 µs to about 52 s, then `+Inf`): `(upper bound, count of that bucket alone)`
    /// per bucket (the form the OpenMetrics encoder adds up), the count, and the sum in
    /// seconds. Each bucket is the sum of the recording buckets below its bound, so it is
    /// exact: nothing is re-bucketed.
    pub fn prometheus_buckets(&self) -> (Vec<(f64, u64)>, u64, f64) {
        // The last bound that is a whole doubling; the recording buckets above it, including
        // the last one that holds everything larger, make up `+Inf`.
        let last = (BUCKETS - 1) / STEPS_PER_DOUBLING * STEPS_PER_DOUBLING;
        let mut buckets = Vec::with_capacity(last / STEPS_PER_DOUBLING + 2);
        let mut own = 0;
        let mut count = 0;
        for (index, slot) in self.counts.iter().enumerate() {
            let n = slot.load(Ordering::Relaxed);
            own += n;
            count += n;
            if index <= last && index % STEPS_PER_DOUBLING == 0 {
                buckets.push((bound_us(index) / 1e6, own));
                own = 0;
            }
        }
        buckets.push((f64::INFINITY, own));
        (buckets, count, self.total_us.load(Ordering::Relaxed) as f64 / 1e6)
    }

    /// Number of recorded latencies.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Mean latency in milliseconds (0 when empty).
    pub fn mean_ms(&self) -> f64 {
        let n = self.count();
        if n == 0 { 0.0 } else { self.total_us.load(Ordering::Relaxed) as f64 / n as f64 / 1000.0 }
    }

    /// The `q` quantile (0–1) in milliseconds: the upper bound of the bucket holding it
    /// (0 when empty).
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let counts: Vec<u64> = self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Self::upper_bound_ms(index);
            }
        }
        Self::upper_bound_ms(BUCKETS - 1)
    }
}

/// The pool-wide counters. Shared (`Arc`) by every producer of the pool.
#[derive(Debug)]
pub struct PoolMetrics {
    started: Instant,
    started_utc: DateTime<Utc>,
    /// Messages handed to librdkafka: the one counter the sending side writes.
    /// Alone on its cache line(s), so the delivery-report thread's writes to the counters
    /// below never evict it.
    enqueued: CachePadded<AtomicU64>,
    /// Never loses an entry while the metrics live: records of messages in flight point at
    /// the counters ([`TopicRef`]). Looked up once per message. FxHash is several times
    /// cheaper than SipHash on short keys and gives up only resistance to keys crafted to
    /// collide, which topic names (chosen by the deployment, not by callers' input) cannot be.
    topics: RwLock<HashMap<Box<str>, Arc<TopicCounters>, FxBuildHasher>>,
    latency: LatencyHistogram,
    sent: AtomicU64,
    failed: AtomicU64,
    bytes: AtomicU64,
    queue_full_events: AtomicU64,
    /// librdkafka said all brokers are down and no delivery has succeeded since.
    brokers_down: AtomicBool,
    /// (when, sent, failed) samples taken by [`PoolMetrics::traffic`], for the recent rate.
    samples: Mutex<VecDeque<(Instant, u64, u64)>>,
}

impl Default for PoolMetrics {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            started_utc: Utc::now(),
            enqueued: CachePadded::default(),
            topics: RwLock::default(),
            latency: LatencyHistogram::default(),
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            queue_full_events: AtomicU64::new(0),
            brokers_down: AtomicBool::new(false),
            samples: Mutex::default(),
        }
    }
}

impl PoolMetrics {
    /// The counters of `topic`, created on first use.
    pub fn topic(&self, topic: &str) -> Arc<TopicCounters> {
        if let Some(counters) = self.topics.read().unwrap_or_else(|p| p.into_inner()).get(topic) {
            return Arc::clone(counters);
        }
        let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        Arc::clone(topics.entry(topic.into()).or_default())
    }

    /// [`Self::topic`] as a [`TopicRef`], for the records of messages in flight.
    pub(crate) fn topic_ref(&self, topic: &str) -> TopicRef {
        TopicRef(NonNull::from(&*self.topic(topic)))
    }

    /// The counters `topic` names.
    ///
    /// # Safety
    /// `topic` was made by [`Self::topic_ref`] of these metrics.
    pub(crate) unsafe fn counters(&self, topic: TopicRef) -> &TopicCounters {
        // SAFETY: made by these metrics, which keep the counters while they live (see
        // `TopicRef`), and borrowed no longer than they are.
        unsafe { topic.0.as_ref() }
    }

    /// Microseconds since these metrics started: the pool clock that enqueue times are kept
    /// on, so each side of a message reads the system clock once.
    pub fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// A message was handed to librdkafka.
    pub fn enqueued(&self) {
        self.enqueued.fetch_add(1, Ordering::Relaxed);
    }

    /// A send found the queue full.
    pub fn queue_full(&self) {
        self.queue_full_events.fetch_add(1, Ordering::Relaxed);
    }

    /// A delivery succeeded; `enqueued_us` is on the pool clock ([`PoolMetrics::now_us`]).
    pub fn delivered(&self, topic: &TopicCounters, bytes: u64, enqueued_us: u64) {
        // One clock read serves the latency and the activity stamp.
        self.delivered_after(topic, bytes, enqueued_us, self.now_us().saturating_sub(enqueued_us));
    }

    /// A delivery succeeded `latency_us` after its enqueue at `enqueued_us` (pool clock): for a
    /// latency measured already (librdkafka's own, in a delivery report), which spares a clock
    /// read per report. The activity stamp is the enqueue plus the latency.
    pub fn delivered_after(&self, topic: &TopicCounters, bytes: u64, enqueued_us: u64, latency_us: u64) {
        let now_us = enqueued_us.saturating_add(latency_us);
        self.sent.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        topic.sent.fetch_add(1, Ordering::Relaxed);
        topic.bytes.fetch_add(bytes, Ordering::Relaxed);
        topic.last_activity_ms.store(now_us / 1000 + 1, Ordering::Relaxed);
        self.latency.record_us(latency_us);
        // A plain load first: on the hot path the flag is almost always already clear.
        if self.brokers_down.load(Ordering::Relaxed) {
            self.brokers_down.store(false, Ordering::Relaxed);
        }
    }

    /// A message failed (after it was counted by [`PoolMetrics::enqueued`]).
    pub fn failed(&self, topic: &TopicCounters) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        topic.failed.fetch_add(1, Ordering::Relaxed);
        topic.last_activity_ms.store(self.now_us() / 1000 + 1, Ordering::Relaxed);
    }

    /// librdkafka reported that no broker is reachable (or that one came back).
    pub fn set_brokers_down(&self, down: bool) {
        self.brokers_down.store(down, Ordering::Relaxed);
    }

    /// Messages acknowledged.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Messages failed.
    pub fn failed_total(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// The delivery latencies.
    pub fn latency(&self) -> &LatencyHistogram {
        &self.latency
    }

    /// Messages enqueued and not yet reported.
    pub fn queue_depth(&self) -> u64 {
        // Reports are read first: a report is always counted after its enqueue, so the
        // difference cannot go below zero except through reads racing new traffic.
        let reported = self.sent() + self.failed_total();
        self.enqueued.load(Ordering::Relaxed).saturating_sub(reported)
    }

    /// Success rate over roughly the last `window`: the counters now against the latest sample
    /// taken before the window began (or pool start). Reading it records a sample.
    fn recent_success_rate(&self, sent: u64, failed: u64, window: Duration) -> f64 {
        let now = Instant::now();
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        // Keep exactly one sample from before the window as the baseline.
        while samples.get(1).is_some_and(|(at, _, _)| now.duration_since(*at) > window) {
            samples.pop_front();
        }
        let (base_sent, base_failed) = samples.front().map_or((0, 0), |&(_, s, f)| (s, f));
        if samples.back().is_none_or(|(at, _, _)| now.duration_since(*at) >= window / 20) {
            samples.push_back((now, sent, failed));
        }
        success_rate(sent - base_sent, failed - base_failed)
    }

    /// Snapshot of the traffic figures; `window` bounds the recent success rate used for
    /// health.
    pub fn traffic(&self, window: Duration) -> Traffic {
        let sent = self.sent();
        let failed = self.failed_total();
        let uptime = self.started.elapsed().as_secs_f64();
        let recent_success_rate = self.recent_success_rate(sent, failed, window);
        Traffic {
            sent,
            failed,
            bytes: self.bytes.load(Ordering::Relaxed),
            queue_depth: self.queue_depth(),
            queue_full_events: self.queue_full_events.load(Ordering::Relaxed),
            messages_per_second: if uptime > 0.0 { sent as f64 / uptime } else { 0.0 },
            average_delivery_ms: self.latency.mean_ms(),
            p50_delivery_ms: self.latency.quantile_ms(0.50),
            p99_delivery_ms: self.latency.quantile_ms(0.99),
            success_rate: success_rate(sent, failed),
            recent_success_rate,
            uptime_seconds: uptime,
            brokers_down: self.brokers_down.load(Ordering::Relaxed),
            topics: self
                .topics
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(name, counters)| (name.to_string(), counters.snapshot(self.started_utc)))
                .collect(),
        }
    }
}

/// A snapshot of [`PoolMetrics`].
#[derive(Debug, Clone, PartialEq)]
pub struct Traffic {
    /// Messages acknowledged.
    pub sent: u64,
    /// Messages failed.
    pub failed: u64,
    /// Payload bytes acknowledged.
    pub bytes: u64,
    /// Messages enqueued and not yet reported.
    pub queue_depth: u64,
    /// Sends that found the queue full.
    pub queue_full_events: u64,
    /// Acknowledged messages per second since start.
    pub messages_per_second: f64,
    /// Mean delivery latency.
    pub average_delivery_ms: f64,
    /// p50 delivery latency.
    pub p50_delivery_ms: f64,
    /// p99 delivery latency.
    pub p99_delivery_ms: f64,
    /// `sent / (sent + failed) × 100`, 100 when idle.
    pub success_rate: f64,
    /// The same over the recent window only (what health is judged on).
    pub recent_success_rate: f64,
    /// Seconds since the pool started.
    pub uptime_seconds: f64,
    /// librdkafka reports every broker down and nothing was delivered since.
    pub brokers_down: bool,
    /// Per-topic traffic.
    pub topics: BTreeMap<String, KafkaTopicStats>,
}

/// `sent / (sent + failed) × 100`, or 100 when nothing was reported.
pub fn success_rate(sent: u64, failed: u64) -> f64 {
    let total = sent + failed;
    if total == 0 { 100.0 } else { sent as f64 / total as f64 * 100.0 }
}

/// Pool health, judged on the error rate over *recent* deliveries (the pool's health window)
/// against one threshold: the error-rate threshold of the deployment environment that the
/// health monitor applies too ([`crate::models::health::HealthThresholds::for_environment`]:
/// production 1 %, staging 2 %, development 5 %). So one failed delivery among many (a single
/// oversized message from one caller) leaves the pool healthy, an outage shows within the
/// window, and a recovered pool becomes healthy again once its failures age out. Brokers that
/// librdkafka reports all down make the pool unhealthy at once, whatever the rate.
///
/// - unhealthy: every broker down, half or more of the producers failed, or the recent error
///   rate above the threshold;
/// - degraded: some producer failed (fewer than half);
/// - healthy: otherwise.
pub fn pool_health(
    total_producers: u32,
    failed_producers: u32,
    recent_success_rate: f64,
    brokers_down: bool,
    error_rate_threshold_percent: f64,
) -> HealthStatus {
    let error_rate = 100.0 - recent_success_rate;
    let most_failed = failed_producers > 0 && failed_producers * 2 >= total_producers;
    if brokers_down || most_failed || error_rate > error_rate_threshold_percent {
        HealthStatus::Unhealthy
    } else if failed_producers > 0 {
        HealthStatus::Degraded
    } else {
        HealthStatus::Healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_latencies_up_to_their_bound() {
        assert_eq!(LatencyHistogram::bucket(0), 0);
        assert_eq!(LatencyHistogram::bucket(50), 0);
        assert_eq!(LatencyHistogram::bucket(51), 1);
        assert_eq!(LatencyHistogram::bucket(u64::MAX), BUCKETS - 1);
        for us in [1, 60, 999, 12_345, 2_000_000] {
            let index = LatencyHistogram::bucket(us);
            assert!(LatencyHistogram::upper_bound_ms(index) * 1000.0 >= us as f64 * 0.999_999, "{us}");
            assert!(index == 0 || LatencyHistogram::upper_bound_ms(index - 1) * 1000.0 < us as f64, "{us}");
        }
    }

    #[test]
    fn the_bucket_is_the_first_whose_bound_holds_the_latency() {
        // Against a plain search over the bounds as floats: every microsecond to 2 s, then
        // every bound's neighbourhood to the last and beyond.
        let search = |us: u64| (0..BUCKETS).find(|&i| bound_us(i) >= us as f64).unwrap_or(BUCKETS - 1);
        for us in 0..2_000_000 {
            assert_eq!(LatencyHistogram::bucket(us), search(us), "{us}");
        }
        for index in 0..BUCKETS {
            let bound = bound_us(index) as u64;
            for us in bound.saturating_sub(2)..=bound + 2 {
                assert_eq!(LatencyHistogram::bucket(us), search(us), "{us}");
            }
        }
        assert_eq!(LatencyHistogram::bucket(u64::MAX - 1), BUCKETS - 1);
    }

    #[test]
    fn a_latency_measured_already_is_recorded_as_given() {
        let m = PoolMetrics::default();
        let t = m.topic("a");
        m.enqueued();
        m.delivered_after(&t, 10, 5_000_000, 1_500);
        assert_eq!(m.latency().count(), 1);
        assert!((m.latency().mean_ms() - 1.5).abs() < 1e-9);
        let traffic = m.traffic(Duration::from_secs(60));
        assert_eq!((traffic.sent, traffic.bytes, traffic.queue_depth), (1, 10, 0));
        // Stamped at the enqueue plus the latency: 5,001.5 ms after the metrics started.
        let expected = m.started_utc + chrono::Duration::milliseconds(5_001);
        assert_eq!(traffic.topics["a"].last_activity, Some(expected));
    }

    #[test]
    fn every_fourth_bound_is_an_exact_doubling() {
        for k in 0..BUCKETS / STEPS_PER_DOUBLING {
            assert_eq!(bound_us(k * STEPS_PER_DOUBLING), 50.0 * f64::from(1u32 << k));
        }
        for index in 1..BUCKETS {
            let ratio = bound_us(index) / bound_us(index - 1);
            assert!((ratio - 2f64.powf(0.25)).abs() < 1e-12, "{index}: {ratio}");
        }
    }

    #[test]
    fn prometheus_buckets_add_the_recording_buckets_up_exactly() {
        let h = LatencyHistogram::default();
        // 50 µs is the first bound, 51 µs the next bucket; 100 µs is the second doubling
        // bound; 200 s is past the last one.
        for us in [10, 50, 51, 100, 101, 200_000_000] {
            h.record_us(us);
        }
        let (buckets, count, sum) = h.prometheus_buckets();
        assert_eq!(count, 6);
        assert!((sum - 200.000_312).abs() < 1e-9, "{sum}");
        assert_eq!(buckets.len(), 22, "21 doubling bounds and +Inf");
        assert_eq!(buckets[0], (0.00005, 2));
        assert_eq!(buckets[1], (0.0001, 2));
        assert_eq!(buckets[2], (0.0002, 1));
        assert_eq!(buckets[20].0, 52.4288);
        assert_eq!(buckets[21], (f64::INFINITY, 1));
        assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), count);
    }

    #[test]
    fn histogram_quantiles_follow_the_samples() {
        let h = LatencyHistogram::default();
        assert_eq!(h.quantile_ms(0.5), 0.0);
        for _ in 0..98 {
            h.record(Duration::from_millis(2));
        }
        h.record(Duration::from_millis(40));
        h.record(Duration::from_millis(900));
        let p50 = h.quantile_ms(0.5);
        assert!((2.0..2.4).contains(&p50), "p50 {p50}");
        let p99 = h.quantile_ms(0.99);
        assert!((40.0..48.0).contains(&p99), "p99 {p99}");
        assert!((h.mean_ms() - (98.0 * 2.0 + 940.0) / 100.0).abs() < 0.01);
        h.record(Duration::from_secs(10_000));
        assert!(h.quantile_ms(1.0) > 60_000.0);
    }

    #[test]
    fn counters_track_topics_depth_and_brokers_down() {
        let m = PoolMetrics::default();
        m.enqueued();
        m.enqueued();
        assert_eq!(m.queue_depth(), 2);
        let t = m.topic("a");
        m.delivered(&t, 100, m.now_us().saturating_sub(1000));
        m.failed(&t);
        let traffic = m.traffic(Duration::from_secs(60));
        assert_eq!((traffic.sent, traffic.failed, traffic.bytes, traffic.queue_depth), (1, 1, 100, 0));
        assert_eq!(traffic.success_rate, 50.0);
        assert!(!traffic.brokers_down, "a failed delivery is not an outage");
        assert_eq!(traffic.topics["a"].sent, 1);
        assert_eq!(traffic.topics["a"].failed, 1);
        assert!(traffic.topics["a"].last_activity.is_some());
        m.set_brokers_down(true);
        assert!(m.traffic(Duration::from_secs(60)).brokers_down);
        m.enqueued();
        m.delivered(&t, 100, m.now_us().saturating_sub(1000));
        assert!(!m.traffic(Duration::from_secs(60)).brokers_down, "a delivery proves a broker is back");
        assert_eq!(m.queue_depth(), 0);
    }

    #[test]
    fn a_topic_ref_names_the_counters_its_metrics_report_and_outlives_new_topics() {
        let m = PoolMetrics::default();
        let a = m.topic_ref("a");
        // New topics grow the map: counters already named stay where they are.
        let others: Vec<TopicRef> = (0..1_000).map(|i| m.topic_ref(&format!("t{i}"))).collect();
        // SAFETY: every reference was made by `m`.
        let (counters, again) = unsafe { (m.counters(a), m.counters(m.topic_ref("a"))) };
        assert!(std::ptr::eq(counters, again), "one topic, one set of counters");
        m.enqueued();
        m.delivered(counters, 100, m.now_us());
        // SAFETY: as above.
        m.failed(unsafe { m.counters(others[999]) });
        let traffic = m.traffic(Duration::from_secs(60));
        assert_eq!((traffic.topics["a"].sent, traffic.topics["a"].bytes), (1, 100));
        assert_eq!(traffic.topics["t999"].failed, 1);
    }

    #[test]
    fn recent_rate_forgets_old_failures() {
        let m = PoolMetrics::default();
        let t = m.topic("a");
        m.enqueued();
        m.failed(&t);
        let window = Duration::from_millis(50);
        assert_eq!(m.traffic(window).recent_success_rate, 0.0);
        std::thread::sleep(Duration::from_millis(60));
        let _ = m.traffic(window);
        for _ in 0..3 {
            m.enqueued();
            m.delivered(&t, 1, m.now_us().saturating_sub(1000));
        }
        let traffic = m.traffic(window);
        assert_eq!(traffic.recent_success_rate, 100.0);
        assert_eq!(traffic.success_rate, 75.0);
    }

    #[test]
    fn health_is_judged_on_the_recent_error_rate_against_the_environments_threshold() {
        let production = 1.0;
        assert_eq!(pool_health(1, 0, 100.0, false, production), HealthStatus::Healthy);
        assert_eq!(pool_health(1, 0, 99.9, false, production), HealthStatus::Healthy, "0.1 % is healthy");
        assert_eq!(pool_health(1, 0, 99.0, false, production), HealthStatus::Healthy, "at the threshold");
        assert_eq!(pool_health(1, 0, 98.0, false, production), HealthStatus::Unhealthy);
        assert_eq!(pool_health(1, 0, 98.0, false, 5.0), HealthStatus::Healthy, "development allows 5 %");
        assert_eq!(pool_health(4, 1, 100.0, false, production), HealthStatus::Degraded);
        assert_eq!(pool_health(2, 1, 100.0, false, production), HealthStatus::Unhealthy);
        assert_eq!(pool_health(1, 0, 100.0, true, production), HealthStatus::Unhealthy, "brokers down at once");
        assert_eq!(success_rate(0, 0), 100.0);
    }

    #[test]
    fn one_failed_delivery_among_a_thousand_leaves_the_pool_healthy() {
        let m = PoolMetrics::default();
        let t = m.topic("a");
        for _ in 0..999 {
            m.enqueued();
            m.delivered(&t, 1, m.now_us());
        }
        m.enqueued();
        m.failed(&t);
        let traffic = m.traffic(Duration::from_secs(60));
        let rate = traffic.recent_success_rate;
        assert!((rate - 99.9).abs() < 1e-9, "{rate}");
        assert_eq!(pool_health(1, 0, rate, traffic.brokers_down, 1.0), HealthStatus::Healthy);
        // Ten more failures take it past production's 1 %.
        for _ in 0..10 {
            m.enqueued();
            m.failed(&t);
        }
        let traffic = m.traffic(Duration::from_secs(60));
        assert_eq!(pool_health(1, 0, traffic.recent_success_rate, traffic.brokers_down, 1.0), HealthStatus::Unhealthy);
    }
}
