//! The delivery ticket: what travels through librdkafka with each message, and the future a
//! caller awaits for its outcome.
//!
//! The record of a message sent alone is one slot of a [`Chunk`] of [`SLOTS`], handed out in
//! turn by the producer's [`Tickets`]: one allocation per chunk instead of one per message,
//! which glibc's malloc makes dear when thousands of records are allocated before the first
//! is freed (a caller enqueueing ahead and awaiting later). A chunk is freed with the last
//! reference to any of its slots; a slot is never reused, so no slot outlives its chunk and
//! none is handed out twice.
//!
//! Invariants:
//! - a [`Ticket`] crosses librdkafka as one pointer, tagged in its lowest bit with its kind
//!   (both targets are aligned to at least 2, asserted at compile time); a message sent alone
//!   carries its chunk's pointer with the slot index in the bits below the chunk's alignment
//!   (`2 × SLOTS`, asserted at compile time);
//! - every [`PendingRef`] (the ticket's or the future's) holds one strong count of its chunk;
//! - a slot holds its send's [`Sent`] from [`Tickets::claim`] (written before the first
//!   reference leaves it) until its completion, which writes the outcome in its place; the
//!   `Sent` is read only through the [`Ticket`], which the completion consumes, and the outcome
//!   only once it is written (see [`Pending`]'s `Sync` impl);
//! - every ticket is completed exactly once: by the delivery report of an accepted message
//!   (also for messages purged when a producer is dropped), or at once for a refused send;
//! - a [`DeliveryFuture`] registers its waker before it looks for the outcome a last time, so
//!   a report stored in between still wakes it.

use std::cell::UnsafeCell;
use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};

use rdkafka::util::IntoOpaque;

use crate::error::OnexError;
use crate::kafka::batch::{Slot, SlotRef};
use crate::kafka::metrics::TopicRef;

/// Where a message landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Partition.
    pub partition: i32,
    /// Offset in the partition.
    pub offset: i64,
}

/// Resolves once the broker acknowledged (or definitely failed) one message.
///
/// Shares the message's pending record with librdkafka instead of a separate channel (see
/// the module documentation for where the records live).
#[must_use = "a delivery future does nothing unless awaited; use `enqueue` to fire and forget"]
pub struct DeliveryFuture {
    pending: PendingRef,
    /// The message's span when it is recorded (see `crate::kafka::trace`): it takes the
    /// outcome and ends with it. One pointer wide, so that without tracing the future stays
    /// small.
    span: crate::telemetry::recorded::Leaf,
}

impl DeliveryFuture {
    pub(super) fn new(pending: PendingRef) -> Self {
        Self { pending, span: Default::default() }
    }

    /// This future, recording its outcome on `span` (which then ends).
    pub(crate) fn with_span(mut self, span: crate::telemetry::recorded::Leaf) -> Self {
        self.span = span;
        self
    }
}

impl std::fmt::Debug for DeliveryFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the send's record: the delivery report may be overwriting it meanwhile.
        let reported = self.pending.slot().state.load(Ordering::Acquire) == DONE;
        f.debug_struct("DeliveryFuture").field("reported", &reported).finish_non_exhaustive()
    }
}

impl Future for DeliveryFuture {
    type Output = Result<Delivered, OnexError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        // Without a span, exactly the untraced poll: one branch more.
        if this.span.is_recording() { this.poll_traced(cx) } else { this.poll_outcome(cx) }
    }
}

impl DeliveryFuture {
    #[inline]
    fn poll_outcome(&self, cx: &mut TaskContext<'_>) -> Poll<Result<Delivered, OnexError>> {
        let slot = self.pending.slot();
        // A caller that awaits after enqueueing ahead usually finds the report already in:
        // then no waker is cloned, stored and dropped again.
        if let Some(outcome) = slot.outcome() {
            return Poll::Ready(outcome);
        }
        // Registered before looking again, so a report stored in between still wakes this task.
        slot.waker.register(cx.waker());
        match slot.outcome() {
            Some(outcome) => Poll::Ready(outcome),
            None => Poll::Pending,
        }
    }

    /// [`Self::poll_outcome`], recording the outcome on the span, which then ends.
    #[inline(never)]
    fn poll_traced(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<Delivered, OnexError>> {
        let outcome = self.poll_outcome(cx);
        if let Poll::Ready(outcome) = &outcome {
            // Taken: the span ends here, with the outcome.
            let mut span = std::mem::take(&mut self.span);
            crate::kafka::trace::record_delivery(&mut span, outcome);
        }
        outcome
    }
}

/// What the delivery report needs to know about a message's send. Plain data, nothing to drop:
/// the delivery thread only overwrites it.
#[derive(Clone, Copy)]
pub(crate) struct Sent {
    /// On the pool clock ([`PoolMetrics::now_us`](crate::kafka::metrics::PoolMetrics::now_us)).
    pub(crate) enqueued_us: u64,
    pub(crate) topic: TopicRef,
    pub(crate) bytes: u64,
}

/// Slots per chunk. A chunk lives until every slot's future and report let go, so this is
/// also how many records one forgotten future can keep alive (14 KiB).
pub(super) const SLOTS: usize = 256;

/// The record of a message sent alone: what its report needs, then the outcome its
/// [`DeliveryFuture`] (if anyone waits) takes, in the same place. Hand-rolled rather than two
/// `OnceLock`s, whose `set` runs `Once`'s general machinery: about 170 instructions per
/// message (callgrind). Small, because a caller that enqueues ahead keeps a slot per message
/// in flight (tens of thousands), each touched by the sending thread and the delivery thread
/// in turn: making it 64 bytes larger cost ~10 % of the throughput against the anchor of
/// `scripts/bench-kafka.sh`.
pub(super) struct Pending {
    /// What `state` says: nothing, the send's record or the outcome.
    record: UnsafeCell<Record>,
    /// [`VACANT`], [`SENT`] (by [`Tickets::claim`]), [`WRITING`] (by the one completion that
    /// won the exchange) or [`DONE`].
    state: AtomicU8,
    waker: futures::task::AtomicWaker,
}

// 56 bytes: the record and the outcome share 24, the waker takes 24. Pinned, as it is what
// every message in flight costs (see above).
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Pending>() == 56);

/// A slot's contents: the send's record until the report, the outcome after. The error is
/// boxed: failures are rare.
union Record {
    vacant: (),
    sent: Sent,
    outcome: ManuallyDrop<Result<Delivered, Box<OnexError>>>,
}

const VACANT: u8 = 0;
const SENT: u8 = 1;
const WRITING: u8 = 2;
const DONE: u8 = 3;

// SAFETY: the record is written by `Tickets::claim` before the slot is shared; then only the
// holder of the slot's `Ticket` reads the `Sent` (`Ticket::sent`) and, consuming the ticket,
// replaces it (`complete`, the only writer, the winner of `state`'s exchange); the outcome
// is read only after `DONE`, which is stored (Release) after the write and loaded (Acquire)
// before the read. The rest is atomic.
unsafe impl Sync for Pending {}

impl Default for Pending {
    fn default() -> Self {
        Self { record: UnsafeCell::new(Record { vacant: () }), state: AtomicU8::new(VACANT), waker: Default::default() }
    }
}

impl Pending {
    /// The send's record, for the holder of the slot's ticket (see the `Sync` impl).
    fn sent(&self) -> Option<&Sent> {
        if self.state.load(Ordering::Acquire) != SENT {
            return None;
        }
        // SAFETY: `SENT`: the record holds the `Sent`, and only the ticket's completion, which
        // cannot run while the ticket is borrowed, replaces it.
        Some(unsafe { &(*self.record.get()).sent })
    }

    #[inline]
    fn outcome(&self) -> Option<Result<Delivered, OnexError>> {
        if self.state.load(Ordering::Acquire) != DONE {
            return None;
        }
        // SAFETY: `DONE` was stored after the only write, which this Acquire load sees.
        let outcome: &Result<Delivered, Box<OnexError>> = unsafe { &(*self.record.get()).outcome };
        // A copy: the future has only a shared reference, and an error is rare.
        Some(outcome.as_ref().copied().map_err(|e| OnexError::clone(e)))
    }

    fn complete(&self, outcome: Result<Delivered, OnexError>) {
        // One ticket per slot completes it once; a second completion would be a bug, so it
        // is ignored rather than allowed to race the reader.
        let first = self.state.compare_exchange(SENT, WRITING, Ordering::Acquire, Ordering::Relaxed).is_ok();
        debug_assert!(first, "a ticket was completed twice");
        if !first {
            return;
        }
        // SAFETY: winning the exchange makes this the only writer; the `Sent` it overwrites
        // (plain data) is no longer borrowed (the ticket is being consumed), and readers of the
        // outcome wait for `DONE`.
        unsafe { (*self.record.get()).outcome = ManuallyDrop::new(outcome.map_err(Box::new)) };
        self.state.store(DONE, Ordering::Release);
        self.waker.wake();
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let record = self.record.get_mut();
        // SAFETY: `DONE` says the outcome is there (a `Sent` holds nothing to drop); `&mut self`
        // excludes every other access.
        if *self.state.get_mut() == DONE {
            unsafe { ManuallyDrop::drop(&mut record.outcome) }
        }
    }
}

/// [`SLOTS`] records allocated together. Aligned so that a slot's index fits in the low bits
/// of the chunk's address (see [`Ticket`]'s `IntoOpaque`).
#[repr(align(512))]
pub(super) struct Chunk {
    /// Boxed: built in place, where an array inside the `Arc` would be built on the stack and
    /// copied (22 KiB, twice).
    slots: Box<[Pending]>,
}

// The index (shifted past the tag bit) fits below the alignment.
const _: () = assert!(std::mem::align_of::<Chunk>() >= 2 * SLOTS);

impl Chunk {
    fn new() -> Arc<Self> {
        Arc::new(Self { slots: (0..SLOTS).map(|_| Pending::default()).collect() })
    }
}

/// One counted reference to one slot: the chunk's strong count and the slot's index.
pub(crate) struct PendingRef {
    chunk: Arc<Chunk>,
    index: usize,
}

impl PendingRef {
    #[inline]
    fn slot(&self) -> &Pending {
        &self.chunk.slots[self.index]
    }

    /// Another reference to the same slot (for its future).
    pub(super) fn share(&self) -> Self {
        Self { chunk: Arc::clone(&self.chunk), index: self.index }
    }
}

/// Hands out the slots of one producer's messages sent alone, a chunk at a time.
#[derive(Default)]
pub(super) struct Tickets {
    /// The chunk being handed out and its next free slot; `None` before the first message.
    current: Mutex<Option<(Arc<Chunk>, usize)>>,
}

impl Tickets {
    /// A fresh slot holding `sent`.
    pub(super) fn claim(&self, sent: Sent) -> PendingRef {
        let pending = {
            let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
            match current.as_mut() {
                Some((chunk, next)) if *next < SLOTS => {
                    *next += 1;
                    PendingRef { chunk: Arc::clone(chunk), index: *next - 1 }
                }
                _ => {
                    let chunk = Chunk::new();
                    let pending = PendingRef { chunk: Arc::clone(&chunk), index: 0 };
                    *current = Some((chunk, 1));
                    pending
                }
            }
        };
        let slot = pending.slot();
        // SAFETY: the slot was just handed out, once, so this is its only reference yet, and
        // it is vacant: nothing to drop.
        unsafe { (*slot.record.get()).sent = sent };
        slot.state.store(SENT, Ordering::Release);
        pending
    }
}

/// Carried through librdkafka with each message and handed back in its delivery report.
///
/// librdkafka hands every accepted message's opaque back exactly once, through the delivery
/// report (also for messages purged when a producer is dropped), and a refused send returns it
/// at once; so every ticket is completed exactly once.
pub(crate) enum Ticket {
    /// A message sent alone.
    Alone(PendingRef),
    /// A message of a [`SendBatch`](crate::kafka::SendBatch).
    InBatch(SlotRef),
}

// Tickets travel as one pointer, tagged in its lowest bit (free: both targets are aligned).
const _: () = assert!(std::mem::align_of::<Chunk>() >= 2 && std::mem::align_of::<Slot>() >= 2);

/// The bits of an untagged ticket that hold the slot's index (tag bit excluded).
const INDEX_BITS: usize = std::mem::align_of::<Chunk>() - 2;

impl IntoOpaque for Ticket {
    fn into_ptr(self) -> *mut std::ffi::c_void {
        match self {
            Ticket::Alone(PendingRef { chunk, index }) => {
                Arc::into_raw(chunk).cast_mut().map_addr(|a| a | (index << 1)).cast()
            }
            Ticket::InBatch(slot) => slot.into_raw().as_ptr().map_addr(|a| a | 1).cast(),
        }
    }

    unsafe fn from_ptr(ptr: *mut std::ffi::c_void) -> Self {
        if ptr.addr() & 1 == 0 {
            let index = (ptr.addr() & INDEX_BITS) >> 1;
            let chunk = ptr.map_addr(|a| a & !INDEX_BITS).cast::<Chunk>();
            // SAFETY: an untagged pointer is a chunk's `Arc::into_raw` (above) with the index
            // in bits the chunk's alignment leaves zero, taken back once.
            Ticket::Alone(PendingRef { chunk: unsafe { Arc::from_raw(chunk) }, index })
        } else {
            let slot = ptr.map_addr(|a| a & !1).cast::<Slot>();
            // SAFETY: a tagged pointer came from `SlotRef::into_raw` above (never null), taken
            // back once.
            Ticket::InBatch(unsafe { SlotRef::from_raw(NonNull::new_unchecked(slot)) })
        }
    }
}

impl Ticket {
    pub(super) fn sent(&self) -> Option<&Sent> {
        match self {
            Ticket::Alone(pending) => pending.slot().sent(),
            Ticket::InBatch(slot) => slot.sent(),
        }
    }

    pub(super) fn complete(self, outcome: Result<Delivered, OnexError>) {
        match self {
            Ticket::Alone(pending) => pending.slot().complete(outcome),
            Ticket::InBatch(slot) => slot.complete(outcome),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::error::ErrorCode;

    fn sent(enqueued_us: u64) -> Sent {
        Sent { enqueued_us, topic: TopicRef::dangling(), bytes: 0 }
    }

    #[test]
    fn every_slot_of_a_chunk_crosses_librdkafka_as_one_pointer() {
        let tickets = Tickets::default();
        // A chunk's every slot and the next chunk's first: each index survives the round trip.
        for i in 0..=SLOTS {
            let pending = tickets.claim(sent(i as u64));
            let future = pending.share();
            let ptr = Ticket::Alone(pending).into_ptr();
            assert_eq!(ptr.addr() & 1, 0, "untagged");
            // SAFETY: `ptr` came from `into_ptr` just above and is taken back once.
            let ticket = unsafe { Ticket::from_ptr(ptr) };
            let Ticket::Alone(back) = &ticket else { panic!("tag lost") };
            assert!(Arc::ptr_eq(&back.chunk, &future.chunk), "slot {i}");
            assert_eq!(back.index, i % SLOTS);
            assert_eq!(ticket.sent().map(|s| s.enqueued_us), Some(i as u64));
            ticket.complete(Ok(Delivered { partition: 1, offset: i as i64 }));
            assert_eq!(future.slot().outcome().unwrap().unwrap(), Delivered { partition: 1, offset: i as i64 });
            // The future and `tickets`' current chunk: the ticket gave its count back.
            assert_eq!(Arc::strong_count(&future.chunk), 2, "slot {i}");
        }
    }

    #[test]
    fn each_slot_is_handed_out_once_and_keeps_its_own_record() {
        let tickets = Tickets::default();
        let claimed: Vec<PendingRef> = (0..2 * SLOTS as u64).map(|i| tickets.claim(sent(i))).collect();
        for (i, pending) in claimed.iter().enumerate() {
            assert_eq!(pending.index, i % SLOTS);
            assert_eq!(pending.slot().sent().map(|s| s.enqueued_us), Some(i as u64));
            assert!(pending.slot().outcome().is_none(), "no outcome before the report");
        }
        assert!(!Arc::ptr_eq(&claimed[0].chunk, &claimed[SLOTS].chunk), "a full chunk is not reused");
    }

    #[test]
    fn a_chunk_lives_until_its_last_slot_lets_go() {
        let tickets = Tickets::default();
        let first = tickets.claim(sent(0));
        let chunk = Arc::downgrade(&first.chunk);
        let late: Vec<PendingRef> = (1..SLOTS).map(|i| tickets.claim(sent(i as u64))).collect();
        // The next claim starts a new chunk: the first is held by its slots alone now.
        let next = tickets.claim(sent(0));
        assert!(!Arc::ptr_eq(&next.chunk, &first.chunk));
        drop(first);
        assert!(chunk.upgrade().is_some(), "later slots still hold the chunk");
        drop(late);
        assert!(chunk.upgrade().is_none(), "freed with the last reference");
    }

    /// An error source that holds its probe while it lives.
    #[derive(Debug)]
    struct Held(#[allow(dead_code)] Arc<()>);

    impl std::fmt::Display for Held {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("held")
        }
    }

    impl std::error::Error for Held {}

    #[test]
    fn a_slot_keeps_its_outcome_until_its_chunk_goes() {
        let probe = Arc::new(());
        let tickets = Tickets::default();
        let failed = tickets.claim(sent(0));
        let never_reported = tickets.claim(sent(1));
        let error = OnexError::new(ErrorCode::IntegrationServiceError, "refused").with_source(Held(Arc::clone(&probe)));
        Ticket::Alone(failed.share()).complete(Err(error));
        assert_eq!(Arc::strong_count(&probe), 2, "the outcome holds the error");
        assert!(matches!(failed.slot().outcome(), Some(Err(e)) if e.message() == "refused"));
        assert!(never_reported.slot().outcome().is_none());
        let chunk = Arc::downgrade(&failed.chunk);
        drop((failed, never_reported, tickets));
        assert!(chunk.upgrade().is_none());
        assert_eq!(Arc::strong_count(&probe), 1, "the outcome went with its chunk");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_report_stored_while_the_future_waits_wakes_it() {
        let tickets = Tickets::default();
        // One deadline for all rounds: a future the report does not wake would sit until then.
        let rounds = async {
            for _ in 0..1_000 {
                let pending = tickets.claim(sent(0));
                let mut future = DeliveryFuture::new(pending.share());
                assert!(futures::poll!(&mut future).is_pending());
                let report = tokio::spawn(async move {
                    Ticket::Alone(pending).complete(Ok(Delivered { partition: 2, offset: 7 }));
                });
                assert_eq!(future.await.unwrap(), Delivered { partition: 2, offset: 7 });
                report.await.unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(5), rounds).await.expect("every future woken by its report");
    }

    #[tokio::test]
    async fn a_report_stored_before_the_first_poll_is_ready_at_once() {
        let pending = Tickets::default().claim(sent(0));
        let future = DeliveryFuture::new(pending.share());
        Ticket::Alone(pending).complete(Err(OnexError::new(ErrorCode::IntegrationServiceError, "refused")));
        let outcome = futures::poll!(future);
        assert!(matches!(outcome, Poll::Ready(Err(e)) if e.code() == ErrorCode::IntegrationServiceError));
    }
}
