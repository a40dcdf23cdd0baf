//! Which offsets of a partition are safe to commit, and which requests wait behind an earlier
//! one with the same key. Pure bookkeeping, owned by the consume loop alone.
//!
//! Invariants:
//! - an offset is committable only when it and every offset fetched before it in its
//!   partition have finished (their results acknowledged by the broker): committing skips
//!   nothing that was not answered;
//! - at most one request per (partition, key) runs; the others wait in fetch order, so a key's
//!   requests are answered in the order they were produced;
//! - a partition taken away by a rebalance starts a new epoch: what finishes from the old one
//!   moves no offset of the new one.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

/// A partition of a topic, by the topic's index in the host's topic list.
pub type Partition = (usize, i32);

/// A map keyed by [`Partition`], hashed with [`PartitionHasher`].
type PartitionMap<V> = HashMap<Partition, V, BuildHasherDefault<PartitionHasher>>;

/// Hashes a [`Partition`] with a multiplication per number (FxHash's step). Partitions are
/// this host's own small numbers, not input from outside, so a keyed hash's resistance to
/// crafted keys buys nothing here, and SipHash was a visible share of the loop's work.
#[derive(Default)]
struct PartitionHasher(u64);

impl PartitionHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for PartitionHasher {
    fn write(&mut self, bytes: &[u8]) {
        bytes.iter().for_each(|&b| self.add(u64::from(b)));
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn write_i32(&mut self, n: i32) {
        self.add(u64::from(n.cast_unsigned()));
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[derive(Debug, Default)]
struct PartitionProgress {
    epoch: u64,
    /// Offsets fetched and not yet committable, in fetch (= offset) order, with whether each
    /// has finished.
    open: VecDeque<(i64, bool)>,
}

/// The offsets of every partition this host holds.
#[derive(Debug, Default)]
pub struct Offsets {
    partitions: PartitionMap<PartitionProgress>,
    next_epoch: u64,
}

impl Offsets {
    /// A fetched offset. Returns the partition's epoch, which its completion must bring back.
    pub fn fetched(&mut self, partition: Partition, offset: i64) -> u64 {
        let next_epoch = &mut self.next_epoch;
        let progress = self.partitions.entry(partition).or_insert_with(|| {
            *next_epoch += 1;
            PartitionProgress { epoch: *next_epoch, open: VecDeque::new() }
        });
        progress.open.push_back((offset, false));
        progress.epoch
    }

    /// `offset` finished. Returns the highest offset now committable (every offset up to it
    /// finished), if that moved.
    pub fn finished(&mut self, partition: Partition, epoch: u64, offset: i64) -> Option<i64> {
        let progress = self.partitions.get_mut(&partition).filter(|p| p.epoch == epoch)?;
        let index = progress.open.binary_search_by_key(&offset, |(o, _)| *o).ok()?;
        progress.open[index].1 = true;
        let mut committable = None;
        while let Some(&(offset, true)) = progress.open.front() {
            committable = Some(offset);
            progress.open.pop_front();
        }
        committable
    }

    /// Whether `epoch` is the partition's current one (it was not revoked since).
    pub fn is_current(&self, partition: Partition, epoch: u64) -> bool {
        self.partitions.get(&partition).is_some_and(|p| p.epoch == epoch)
    }

    /// The partition was revoked: forget it; its unfinished offsets are redelivered to the
    /// next owner.
    pub fn revoked(&mut self, partition: Partition) {
        self.partitions.remove(&partition);
    }

    /// Offsets fetched and not yet committable, over all partitions.
    pub fn open(&self) -> usize {
        self.partitions.values().map(|p| p.open.len()).sum()
    }
}

/// Requests waiting behind a running request with the same key.
///
/// Keyed per partition, then by the key's bytes: a lookup borrows the key (no copy per request);
/// only a key that starts running is copied, once, and freed when its last request finishes.
#[derive(Debug)]
pub struct KeyQueues<T> {
    /// Per partition, the keys running, with the requests waiting behind each (often none).
    waiting: PartitionMap<HashMap<Box<[u8]>, VecDeque<T>>>,
}

impl<T> Default for KeyQueues<T> {
    fn default() -> Self {
        Self { waiting: PartitionMap::default() }
    }
}

impl<T> KeyQueues<T> {
    /// A request arrived; `key_of` reads its key (`None`: it has none and never waits).
    /// `Some(request)` when it may run now, `None` when it was queued behind the running one.
    pub fn arrive(&mut self, partition: Partition, request: T, key_of: impl Fn(&T) -> Option<&[u8]>) -> Option<T> {
        let Some(key) = key_of(&request) else { return Some(request) };
        // The key is copied before the lookup: most keys are not running, and then the copy
        // is kept, which saves hashing the key twice.
        match self.waiting.entry(partition).or_default().entry(key.into()) {
            Entry::Occupied(mut running) => {
                running.get_mut().push_back(request);
                None
            }
            Entry::Vacant(free) => {
                free.insert(VecDeque::new());
                Some(request)
            }
        }
    }

    /// The running request with `key` finished: the next one to run, if any.
    pub fn finish(&mut self, partition: Partition, key: &[u8]) -> Option<T> {
        let queues = self.waiting.get_mut(&partition)?;
        // Taken out and put back only when a request waits (the key keeps running): one hash
        // of the key in the common case.
        let (key, mut queue) = queues.remove_entry(key)?;
        let next = queue.pop_front()?;
        queues.insert(key, queue);
        Some(next)
    }

    /// The partition was revoked: drops its waiting requests (the next owner gets them).
    pub fn revoked(&mut self, partition: Partition) -> usize {
        self.waiting.remove(&partition).map_or(0, |queues| queues.values().map(VecDeque::len).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offset_is_committable_only_when_everything_before_it_finished() {
        let mut offsets = Offsets::default();
        let p = (0, 3);
        let epoch = offsets.fetched(p, 10);
        offsets.fetched(p, 11);
        offsets.fetched(p, 12);
        assert_eq!(offsets.finished(p, epoch, 12), None);
        assert_eq!(offsets.finished(p, epoch, 11), None);
        assert_eq!(offsets.finished(p, epoch, 10), Some(12));
        assert_eq!(offsets.open(), 0);
    }

    #[test]
    fn a_revoked_partition_ignores_late_completions() {
        let mut offsets = Offsets::default();
        let p = (1, 0);
        let old = offsets.fetched(p, 5);
        offsets.revoked(p);
        let new = offsets.fetched(p, 5);
        assert_ne!(old, new);
        assert_eq!(offsets.finished(p, old, 5), None);
        assert_eq!(offsets.finished(p, new, 5), Some(5));
    }

    #[test]
    fn a_key_runs_one_request_at_a_time_in_arrival_order() {
        let mut keys = KeyQueues::default();
        let p = (0, 0);
        // A request here is (key, number).
        fn key_of<'a>(r: &'a (&'static [u8], u32)) -> Option<&'a [u8]> {
            Some(r.0)
        }
        assert_eq!(keys.arrive(p, (&b"a"[..], 1), key_of).map(|r| r.1), Some(1));
        assert_eq!(keys.arrive(p, (&b"a"[..], 2), key_of).map(|r| r.1), None);
        assert_eq!(keys.arrive(p, (&b"b"[..], 3), key_of).map(|r| r.1), Some(3));
        assert_eq!(keys.arrive(p, (&b"a"[..], 4), key_of).map(|r| r.1), None);
        assert_eq!(keys.finish(p, b"a").map(|r| r.1), Some(2));
        assert_eq!(keys.finish(p, b"a").map(|r| r.1), Some(4));
        assert_eq!(keys.finish(p, b"a").map(|r| r.1), None);
        assert_eq!(keys.arrive(p, (&b"a"[..], 5), key_of).map(|r| r.1), Some(5));
        assert_eq!(keys.arrive(p, (&b"a"[..], 6), key_of).map(|r| r.1), None);
        assert_eq!(keys.revoked(p), 1);
        assert_eq!(keys.arrive(p, (&b"a"[..], 7), key_of).map(|r| r.1), Some(7));
    }
}
