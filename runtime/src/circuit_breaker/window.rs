//! The sliding window of the failure-rate and slow-call-rate policies.
//!
//! Recording never locks. The count-based window is a ring of one-byte outcomes: recording is
//! one increment of the cursor and one store, and its totals are a scan of the ring (at most
//! 1000 bytes, read only when a failure or slow call is judged or metrics are taken), so no
//! running total can drift from the slots when a clear races a recording. The time-based
//! window is a ring of one-second buckets whose counters carry the second they belong to, so
//! a stale bucket is recycled by the compare-exchange that claims it for the new second
//! rather than by a separate reset another thread could race with. Totals read while other
//! calls record may miss those calls, which a rate threshold tolerates; failures and slow
//! calls never exceed calls.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};

use crate::models::circuit_breaker::SlidingWindowType;

const CALL: u8 = 1;
const FAILURE: u8 = 2;
const SLOW: u8 = 4;

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
    /// `size` calls or seconds; validated by the configuration (at least 1).
    pub(super) fn new(kind: SlidingWindowType, size: u32) -> Self {
        let size = size.max(1) as usize;
        match kind {
            SlidingWindowType::CountBased => Self::Count(CountWindow {
                slots: (0..size).map(|_| AtomicU8::new(0)).collect(),
                cursor: AtomicU64::new(0),
            }),
            SlidingWindowType::TimeBased => {
                Self::Time(TimeWindow { buckets: (0..size).map(|_| Bucket::default()).collect() })
            }
        }
    }

    /// Records one call that finished at `now_secs` (seconds since the breaker was built).
    pub(super) fn record(&self, now_secs: u64, failure: bool, slow: bool) {
        match self {
            Self::Count(w) => w.record(failure, slow),
            Self::Time(w) => w.record(now_secs, failure, slow),
        }
    }

    pub(super) fn totals(&self, now_secs: u64) -> Totals {
        match self {
            Self::Count(w) => w.totals(),
            Self::Time(w) => w.totals(now_secs),
        }
    }

    /// Empties the window. Only called under the breaker's transition lock; a call finishing
    /// concurrently may still land in it.
    pub(super) fn clear(&self) {
        match self {
            Self::Count(w) => {
                for slot in &w.slots {
                    slot.store(0, Relaxed);
                }
                w.cursor.store(0, Relaxed);
            }
            Self::Time(w) => {
                for bucket in &w.buckets {
                    bucket.calls.store(0, Relaxed);
                    bucket.failures.store(0, Relaxed);
                    bucket.slow.store(0, Relaxed);
                }
            }
        }
    }
}

pub(super) struct CountWindow {
    slots: Box<[AtomicU8]>,
    cursor: AtomicU64,
}

impl CountWindow {
    fn record(&self, failure: bool, slow: bool) {
        let code = CALL | if failure { FAILURE } else { 0 } | if slow { SLOW } else { 0 };
        let index = (self.cursor.fetch_add(1, Relaxed) % self.slots.len() as u64) as usize;
        self.slots[index].store(code, Relaxed);
    }

    fn totals(&self) -> Totals {
        let mut totals = Totals::default();
        for slot in &self.slots {
            let code = slot.load(Relaxed);
            totals.calls += u64::from(code & CALL);
            totals.failures += u64::from(code & FAILURE != 0);
            totals.slow += u64::from(code & SLOW != 0);
        }
        totals
    }
}

pub(super) struct TimeWindow {
    buckets: Box<[Bucket]>,
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
        let tag = (now_secs + 1) & u64::from(u32::MAX);
        let bucket = &self.buckets[(now_secs % self.buckets.len() as u64) as usize];
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
        let len = self.buckets.len() as u64;
        let live = |word: u64| {
            let tag = word >> 32;
            if tag != 0 && tag <= now_tag && now_tag - tag < len { word & u64::from(u32::MAX) } else { 0 }
        };
        let mut totals = Totals::default();
        for bucket in &self.buckets {
            totals.calls += live(bucket.calls.load(Relaxed));
            totals.failures += live(bucket.failures.load(Relaxed));
            totals.slow += live(bucket.slow.load(Relaxed));
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

    #[test]
    fn count_window_keeps_only_the_last_calls() {
        let w = Window::new(SlidingWindowType::CountBased, 4);
        for failure in [true, true, false, false] {
            w.record(0, failure, false);
        }
        assert_eq!(w.totals(0), Totals { calls: 4, failures: 2, slow: 0 });
        w.record(0, false, true);
        w.record(0, false, true);
        assert_eq!(w.totals(0), Totals { calls: 4, failures: 0, slow: 2 });
        w.clear();
        assert_eq!(w.totals(0), Totals::default());
    }

    #[test]
    fn time_window_forgets_seconds_that_left_it() {
        let w = Window::new(SlidingWindowType::TimeBased, 3);
        w.record(10, true, false);
        w.record(11, false, true);
        w.record(12, false, false);
        assert_eq!(w.totals(12), Totals { calls: 3, failures: 1, slow: 1 });
        assert_eq!(w.totals(13), Totals { calls: 2, failures: 0, slow: 1 });
        // Second 13 reuses the bucket of second 10.
        w.record(13, false, false);
        assert_eq!(w.totals(13), Totals { calls: 3, failures: 0, slow: 1 });
        assert_eq!(w.totals(100), Totals::default());
    }
}
