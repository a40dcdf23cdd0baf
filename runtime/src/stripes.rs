//! Per-thread copies of what every call writes, so concurrent calls through one breaker or into
//! one histogram do not fight over the same cache lines (the technique of Java's `LongAdder`).
//!
//! A thread is given a number the first time it writes any striped value and writes the stripe of
//! that number (modulo the stripe count); readers combine every stripe. There are twice as
//! many stripes as cores (rounded up to a power of two, at most [`MAX_STRIPES`]), so a few
//! threads of a runtime rarely share one; when more threads than stripes call, some share
//! a stripe, which costs speed, never correctness: stripes hold atomics.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

/// Upper bound of the stripe count (memory per striped value grows with it).
pub(crate) const MAX_STRIPES: usize = 64;

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static THREAD: usize = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
}

/// One `T` per stripe, each on its own cache line. Clones share the stripes (a reader such as
/// the metrics collector keeps one); reaching a stripe costs what it would in a `Box`.
pub(crate) struct Striped<T> {
    stripes: Arc<[CachePadded<T>]>,
    /// `stripes.len() - 1` (the length is a power of two).
    mask: usize,
}

impl<T> Striped<T> {
    /// Stripes made by `make`, as many as [`stripe_count`] says.
    pub(crate) fn new(make: impl FnMut() -> T) -> Self {
        Self::with_count(stripe_count(), make)
    }

    /// `count` stripes (rounded up to a power of two, at least 1).
    pub(crate) fn with_count(count: usize, mut make: impl FnMut() -> T) -> Self {
        let count = count.clamp(1, MAX_STRIPES).next_power_of_two();
        let stripes: Arc<[CachePadded<T>]> = (0..count).map(|_| CachePadded::new(make())).collect();
        Self { stripes, mask: count - 1 }
    }

    /// The calling thread's stripe.
    pub(crate) fn local(&self) -> &T {
        // A thread being destroyed has no thread-locals left: it shares stripe 0.
        let thread = THREAD.try_with(|t| *t).unwrap_or(0);
        &self.stripes[thread & self.mask]
    }

    /// Every stripe.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.stripes.iter().map(|s| &**s)
    }
}

impl<T> Clone for Striped<T> {
    fn clone(&self) -> Self {
        Self { stripes: Arc::clone(&self.stripes), mask: self.mask }
    }
}

/// Twice the available cores, as a power of two, within `1..=MAX_STRIPES`.
fn stripe_count() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    (cores * 2).clamp(1, MAX_STRIPES).next_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_powers_of_two_within_bounds() {
        assert_eq!(Striped::with_count(0, || 0u8).iter().count(), 1);
        assert_eq!(Striped::with_count(3, || 0u8).iter().count(), 4);
        assert_eq!(Striped::with_count(1000, || 0u8).iter().count(), MAX_STRIPES);
    }

    #[test]
    fn threads_spread_over_the_stripes() {
        let striped = Striped::with_count(2, || AtomicUsize::new(0));
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| striped.local().fetch_add(1, Ordering::Relaxed));
            }
        });
        // Two threads numbered one after the other land on different stripes (other tests'
        // threads may take numbers in between, so only the total is certain).
        assert_eq!(striped.iter().map(|s| s.load(Ordering::Relaxed)).sum::<usize>(), 2);
    }
}
