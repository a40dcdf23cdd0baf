//! The sliding window of the failure-rate and slow-call-rate policies.
//!
//! Recording never locks and touches only the calling thread's stripe ([`crate::stripes`]),
//! so concurrent calls do not contend for the window. Totals combine the stripes; they are
//! read only when a failure or slow call is judged or metrics are taken.
//!
//! - Count based: each stripe is a ring of the last `size` outcomes recorded on it, each
//!   slot holding the outcome and its time. The union of the rings holds the last `size`
//!   calls overall (no stripe can hold more of them than its ring keeps), so the totals are
//!   those of the `size` most recent slots of the union: the window is exact. Each total is
//!   a scan of the rings, so no running count can drift from the slots when a clear races a
//!   recording.
//! - Time based: each stripe is a ring of one-second buckets whose counters carry the second
//!   they belong to, so a stale bucket is recycled by the compare-exchange that claims it for
//!   the new second rather than by a separate reset another thread could race with; totals
//!   add up the live buckets of every stripe.
//!
//! Totals read while other calls record may miss those calls, which a rate threshold
//! tolerates; failures and slow calls never exceed calls.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use crate::models::circuit_breaker::SlidingWindowType;
use crate::stripes::Striped;

const FAILURE: u64 = 1;
const SLOW: u64 = 2;
/// Bits of a count-window slot below the time.
const TIME_SHIFT: u32 = 2;
const NANOS_PER_SEC: u64 = 1_000_000_000;

/// What the window holds right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Totals {
    pub calls: u64,
    pub failures: u64,
    pub slow: u64,
}

pub(super) enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

impl Window {
    /// `size` calls or seconds (validated by the configuration: at least 1), striped per
    /// thread.
    pub(super) fn new(kind: SlidingWindowType, size: u32) -> Self {
        Self::with_stripes(kind, size, None)
    }

    /// [`Window::new`] with `stripes` stripes instead of the default count.
    fn with_stripes(kind: SlidingWindowType, size: u32, stripes: Option<usize>) -> Self {
        fn striped<T>(stripes: Option<usize>, make: impl FnMut() -> T) -> Striped<T> {
            match stripes {
                Some(count) => Striped::with_count(count, make),
                None => Striped::new(make),
            }
        }
        let size = size.max(1) as usize;
        match kind {
            SlidingWindowType::CountBased => Self::Count(CountWindow {
                size,
                rings: striped(stripes, || Ring {
                    slots: (0..size).map(|_| AtomicU64::new(0)).collect(),
                    cursor: AtomicUsize::new(0),
                }),
            }),
            SlidingWindowType::TimeBased => {
                Self::Time(TimeWindow { stripes: striped(stripes, || (0..size).map(|_| Bucket::default()).collect()) })
            }
        }
    }

    /// Records one call that finished `now_nanos` after the breaker was built.
    pub(super) fn record(&self, now_nanos: u64, failure: bool, slow: bool) {
        match self {
            Self::Count(w) => w.record(now_nanos, failure, slow),
            Self::Time(w) => w.record(now_nanos / NANOS_PER_SEC, failure, slow),
        }
    }

    pub(super) fn totals(&self, now_nanos: u64) -> Totals {
        match self {
            Self::Count(w) => w.totals(),
            Self::Time(w) => w.totals(now_nanos / NANOS_PER_SEC),
        }
    }

    /// Empties the window. Only called under the breaker's transition lock; a call finishing
    /// concurrently may still land in it.
    pub(super) fn clear(&self) {
        match self {
            Self::Count(w) => {
                for ring in w.rings.iter() {
                    for slot in &ring.slots {
                        slot.store(0, Relaxed);
                    }
                    ring.cursor.store(0, Relaxed);
                }
            }
            Self::Time(w) => {
                for buckets in w.stripes.iter() {
                    for bucket in buckets.iter() {
                        bucket.calls.store(0, Relaxed);
                        bucket.failures.store(0, Relaxed);
                        bucket.slow.store(0, Relaxed);
                    }
                }
            }
        }
    }
}

pub(super) struct CountWindow {
    size: usize,
    rings: Striped<Ring>,
}

/// One stripe's last outcomes: `(time + 1) << TIME_SHIFT | SLOW? | FAILURE?`, 0 = empty.
struct Ring {
    slots: Box<[AtomicU64]>,
    cursor: AtomicUsize,
}

impl CountWindow {
    fn record(&self, now_nanos: u64, failure: bool, slow: bool) {
        let ring = self.rings.local();
        let time = now_nanos.min((u64::MAX >> TIME_SHIFT) - 1) + 1;
        let code = (time << TIME_SHIFT) | if failure { FAILURE } else { 0 } | if slow { SLOW } else { 0 };
        let index = ring.cursor.fetch_add(1, Relaxed) % ring.slots.len();
        ring.slots[index].store(code, Relaxed);
    }

    fn totals(&self) -> Totals {
        let mut slots: Vec<u64> = self
            .rings
            .iter()
            .flat_map(|ring| ring.slots.iter().map(|slot| slot.load(Relaxed)))
            .filter(|&code| code != 0)
            .collect();
        if slots.len() > self.size {
            // The `size` most recent; ties in time are equally recent.
            let older = slots.len() - self.size;
            slots.select_nth_unstable_by_key(older, |code| code >> TIME_SHIFT);
            slots.drain(..older);
        }
        let mut totals = Totals { calls: slots.len() as u64, ..Totals::default() };
        for code in slots {
            totals.failures += u64::from(code & FAILURE != 0);
            totals.slow += u64::from(code & SLOW != 0);
        }
        totals
    }
}

pub(super) struct TimeWindow {
    stripes: Striped<Box<[Bucket]>>,
}

/// One second of calls. Each counter is `(second + 1) << 32 | count`; 0 means empty.
#[derive(Default)]
struct Bucket {
    calls: AtomicU64,
    failures: AtomicU64,
    slow: AtomicU64,
}

impl TimeWindow {
    fn record(&self, now_secs: u64, failure: bool, slow: bool) {
        let buckets = self.stripes.local();
        let tag = (now_secs + 1) & u64::from(u32::MAX);
        let bucket = &buckets[(now_secs % buckets.len() as u64) as usize];
        bump(&bucket.calls, tag);
        if failure {
            bump(&bucket.failures, tag);
        }
        if slow {
            bump(&bucket.slow, tag);
        }
    }

    fn totals(&self, now_secs: u64) -> Totals {
        let now_tag = (now_secs + 1) & u64::from(u32::MAX);
        let mut totals = Totals::default();
        for buckets in self.stripes.iter() {
            let len = buckets.len() as u64;
            let live = |word: u64| {
                let tag = word >> 32;
                if tag != 0 && tag <= now_tag && now_tag - tag < len { word & u64::from(u32::MAX) } else { 0 }
            };
            for bucket in buckets.iter() {
                totals.calls += live(bucket.calls.load(Relaxed));
                totals.failures += live(bucket.failures.load(Relaxed));
                totals.slow += live(bucket.slow.load(Relaxed));
            }
        }
        totals.failures = totals.failures.min(totals.calls);
        totals.slow = totals.slow.min(totals.calls);
        totals
    }
}

/// Counts one event of second `tag` in `word`: increments it when it already belongs to that
/// second, claims it (count 1) when it belongs to an older one, and leaves it alone when a
/// newer second owns it (this call finished late; its second is already past the window).
fn bump(word: &AtomicU64, tag: u64) {
    let mut current = word.load(Relaxed);
    loop {
        let next = match current >> 32 {
            t if t == tag && current & u64::from(u32::MAX) == u64::from(u32::MAX) => return,
            t if t == tag => current + 1,
            t if t < tag => (tag << 32) | 1,
            _ => return,
        };
        match word.compare_exchange_weak(current, next, Relaxed, Relaxed) {
            Ok(_) => return,
            Err(actual) => current = actual,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = NANOS_PER_SEC;

    #[test]
    fn count_window_keeps_only_the_last_calls() {
        let w = Window::new(SlidingWindowType::CountBased, 4);
        for (n, failure) in [true, true, false, false].into_iter().enumerate() {
            w.record(n as u64, failure, false);
        }
        assert_eq!(w.totals(0), Totals { calls: 4, failures: 2, slow: 0 });
        w.record(4, false, true);
        w.record(5, false, true);
        assert_eq!(w.totals(0), Totals { calls: 4, failures: 0, slow: 2 });
        w.clear();
        assert_eq!(w.totals(0), Totals::default());
    }

    #[test]
    fn count_window_over_several_stripes_is_the_last_calls_overall() {
        let w = Window::with_stripes(SlidingWindowType::CountBased, 4, Some(2));
        // Alternate threads (so, stripes): old failures on one, newer successes on both.
        let record = |at: u64, failure: bool| std::thread::scope(|s| s.spawn(|| w.record(at, failure, false)).join());
        for at in 0..3 {
            record(at, true).unwrap();
        }
        for at in 3..7 {
            record(at, false).unwrap();
        }
        assert_eq!(w.totals(0), Totals { calls: 4, failures: 0, slow: 0 }, "only the last 4 calls");
        record(7, true).unwrap();
        assert_eq!(w.totals(0), Totals { calls: 4, failures: 1, slow: 0 });
    }

    #[test]
    fn time_window_forgets_seconds_that_left_it() {
        let w = Window::new(SlidingWindowType::TimeBased, 3);
        w.record(10 * S, true, false);
        w.record(11 * S, false, true);
        w.record(12 * S, false, false);
        assert_eq!(w.totals(12 * S), Totals { calls: 3, failures: 1, slow: 1 });
        assert_eq!(w.totals(13 * S), Totals { calls: 2, failures: 0, slow: 1 });
        // Second 13 reuses the bucket of second 10.
        w.record(13 * S, false, false);
        assert_eq!(w.totals(13 * S), Totals { calls: 3, failures: 0, slow: 1 });
        assert_eq!(w.totals(100 * S), Totals::default());
    }

    #[test]
    fn time_window_adds_up_every_stripe() {
        let w = Window::with_stripes(SlidingWindowType::TimeBased, 3, Some(4));
        std::thread::scope(|s| {
            for failure in [true, false, false, true, false] {
                let w = &w;
                s.spawn(move || w.record(5 * S, failure, false));
            }
        });
        assert_eq!(w.totals(5 * S), Totals { calls: 5, failures: 2, slow: 0 });
    }
}
