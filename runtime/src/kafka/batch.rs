//! Messages sent together and awaited together: one allocation and one wake-up per batch.
//!
//! A message sent alone carries a record of its own through librdkafka (one allocation per
//! message, and a lock and a wake-up per report). A batch instead owns one slot per message,
//! allocated together; librdkafka carries a pointer to the message's slot, and the batch's
//! waiter is woken once, by the last report.
//!
//! Invariants:
//! - a slot is used by one send at most ([`BatchState::ticket`] refuses a second);
//! - every [`SlotRef`] holds one strong count of its batch, so a slot outlives every pointer
//!   librdkafka holds to it, even when the waiter gave up and dropped the batch;
//! - `unreported` counts tickets issued and not yet completed; a report or a refused send
//!   completes each ticket exactly once.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll;
use std::time::Duration;

use futures::task::AtomicWaker;

use crate::error::{ErrorCode, OnexError};
use crate::kafka::OwnedHeaders;
use crate::kafka::producer::{Delivered, ManagedProducer, ProduceRecord, Sent};
use crate::kafka::trace;
use crate::telemetry::{KeyValue, OtelContext, Span, Tracing};

/// One message's place in a batch.
pub(crate) struct Slot {
    /// The batch this slot lives in (the allocation that owns it).
    batch: *const BatchState,
    sent: OnceLock<Sent>,
    /// Errors boxed: slots are allocated a batch at a time and errors are rare.
    outcome: OnceLock<Result<Delivered, Box<OnexError>>>,
}

// SAFETY: `batch` is only dereferenced to reach the `BatchState` that owns this slot, which is
// `Sync` (atomics, `OnceLock`s and an `AtomicWaker`) and kept alive by the caller's strong count.
unsafe impl Send for Slot {}
// SAFETY: as above.
unsafe impl Sync for Slot {}

/// The shared state of a batch: its slots, how many sends are still unreported, and the waiter.
pub(crate) struct BatchState {
    slots: Box<[Slot]>,
    unreported: AtomicUsize,
    waker: AtomicWaker,
}

impl BatchState {
    fn new(len: usize) -> Arc<Self> {
        // The weak reference's pointer is where the state is being built: the address every
        // `SlotRef` later turns back into its strong count.
        let state = Arc::new_cyclic(|batch| Self {
            slots: (0..len)
                .map(|_| Slot { batch: batch.as_ptr(), sent: OnceLock::new(), outcome: OnceLock::new() })
                .collect(),
            unreported: AtomicUsize::new(0),
            waker: AtomicWaker::new(),
        });
        debug_assert!(state.slots.iter().all(|slot| std::ptr::eq(slot.batch, Arc::as_ptr(&state))));
        state
    }

    /// Claims slot `index` for a send described by `sent`; the returned reference travels
    /// through librdkafka with the message.
    pub(crate) fn ticket(self: &Arc<Self>, index: usize, sent: Sent) -> Result<SlotRef, OnexError> {
        let slot = self.slots.get(index).ok_or_else(|| {
            OnexError::new(
                ErrorCode::InternalError,
                format!("batch message index {index} is out of range (batch of {})", self.slots.len()),
            )
        })?;
        slot.sent
            .set(sent)
            .map_err(|_| OnexError::new(ErrorCode::InternalError, format!("batch message {index} was already sent")))?;
        self.unreported.fetch_add(1, Ordering::AcqRel);
        // The strong count this reference owns; released by `SlotRef`'s `Drop`.
        std::mem::forget(Arc::clone(self));
        Ok(SlotRef(NonNull::from(slot)))
    }
}

/// A counted reference to one slot of a batch (see the module's invariants).
pub(crate) struct SlotRef(NonNull<Slot>);

// SAFETY: a `SlotRef` only reads and completes its slot through `Sync` fields, and its strong
// count keeps the slot alive on whichever thread it is dropped.
unsafe impl Send for SlotRef {}
// SAFETY: as above.
unsafe impl Sync for SlotRef {}

impl SlotRef {
    fn slot(&self) -> &Slot {
        // SAFETY: this reference holds a strong count of the batch that owns the slot.
        unsafe { self.0.as_ref() }
    }

    /// What the send recorded (set before the ticket was issued).
    pub(crate) fn sent(&self) -> Option<&Sent> {
        self.slot().sent.get()
    }

    /// Stores the message's outcome and wakes the batch's waiter if it was the last.
    pub(crate) fn complete(self, outcome: Result<Delivered, OnexError>) {
        let slot = self.slot();
        // A slot is completed once (one ticket per slot, one completion per ticket).
        let _ = slot.outcome.set(outcome.map_err(Box::new));
        // SAFETY: as in `slot`.
        let batch = unsafe { &*slot.batch };
        if batch.unreported.fetch_sub(1, Ordering::AcqRel) == 1 {
            batch.waker.wake();
        }
    }

    /// The pointer librdkafka carries; [`SlotRef::from_raw`] takes it back.
    pub(crate) fn into_raw(self) -> NonNull<Slot> {
        let ptr = self.0;
        std::mem::forget(self);
        ptr
    }

    /// # Safety
    /// `ptr` must come from [`SlotRef::into_raw`] and be taken back once.
    pub(crate) unsafe fn from_raw(ptr: NonNull<Slot>) -> Self {
        Self(ptr)
    }
}

impl Drop for SlotRef {
    fn drop(&mut self) {
        let batch = self.slot().batch;
        // SAFETY: releases the strong count `BatchState::ticket` took for this reference.
        unsafe { Arc::decrement_strong_count(batch) }
    }
}

/// Messages sent on one producer and awaited together. Made by
/// [`KafkaProducerPool::batch`](crate::kafka::KafkaProducerPool::batch).
pub struct SendBatch {
    producer: Arc<ManagedProducer>,
    state: Arc<BatchState>,
    /// The batch's span, when traced (boxed: batches without tracing stay small).
    trace: Option<Box<BatchTrace>>,
}

/// One PRODUCER span for a whole batch: every message's headers carry its context, and it
/// ends when [`SendBatch::wait`] returns (or the batch is dropped) with how many were sent and
/// how many failed.
struct BatchTrace {
    cx: OtelContext,
    span: Mutex<Option<Span>>,
}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch")
            .field("len", &self.state.slots.len())
            .field("unreported", &self.state.unreported.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl SendBatch {
    pub(crate) fn new(producer: Arc<ManagedProducer>, len: usize) -> Self {
        Self { producer, state: BatchState::new(len), trace: None }
    }

    /// This batch under a `kafka.send_batch` span, a child of the current context.
    pub(crate) fn traced(mut self, tracing: &Tracing) -> Self {
        let mut span = OtelContext::map_current(|parent| {
            trace::producer_span(tracing, "kafka.send_batch", "send_batch", None, parent, trace::BATCH_ATTRIBUTES)
        });
        let Some(cx) = trace::context_of(&span) else { return self };
        if span.is_recording() {
            span.set_attribute(KeyValue::new("onex.batch.capacity", i64::try_from(self.len()).unwrap_or(i64::MAX)));
        }
        let span = span.is_recording().then_some(span);
        self.trace = Some(Box::new(BatchTrace { cx, span: Mutex::new(span) }));
        self
    }

    /// Ends the batch's span with what became of the messages sent.
    fn end_span(&self, all_reported: bool) {
        let Some(trace) = &self.trace else { return };
        let Some(mut span) = trace.span.lock().unwrap_or_else(|p| p.into_inner()).take() else { return };
        let sent = self.state.slots.iter().filter(|slot| slot.sent.get().is_some()).count();
        let failures = || self.state.slots.iter().filter_map(|slot| slot.outcome.get()?.as_ref().err());
        let failed = failures().count();
        span.set_attribute(KeyValue::new("messaging.batch.message_count", i64::try_from(sent).unwrap_or(i64::MAX)));
        if !all_reported {
            let missing = self.state.unreported.load(Ordering::Acquire);
            span.record_error(&OnexError::new(
                ErrorCode::OperationTimeout,
                format!("{missing} of {sent} delivery reports were missing when the batch stopped waiting"),
            ));
        } else if let Some(first) = failures().next() {
            span.record_error(&OnexError::new(
                first.code(),
                format!("{failed} of {sent} messages failed; first: {}", first.message()),
            ));
        }
    }

    /// Messages the batch has room for.
    pub fn len(&self) -> usize {
        self.state.slots.len()
    }

    /// Whether the batch has room for no message.
    pub fn is_empty(&self) -> bool {
        self.state.slots.is_empty()
    }

    /// Enqueues message `index` (below [`SendBatch::len`], each index once). Waits only for
    /// backpressure, as [`KafkaProducerPool::send`](crate::kafka::KafkaProducerPool::send) does.
    /// An error means librdkafka did not take the message; it then has no outcome.
    pub async fn send(
        &self,
        index: usize,
        record: ProduceRecord<'_>,
        mut headers: Option<OwnedHeaders>,
    ) -> Result<(), OnexError> {
        if let Some(trace) = &self.trace {
            use opentelemetry::trace::TraceContextExt as _;
            trace::carry(trace.cx.span().span_context(), &mut headers);
        }
        self.producer.enqueue_in(&self.state, index, record, headers).await
    }

    /// Waits until every message sent so far is reported, or `limit` passes. Returns whether
    /// all were reported; messages reported later still land in [`SendBatch::outcome`].
    pub async fn wait(&self, limit: Duration) -> bool {
        let state = &self.state;
        let all_reported = std::future::poll_fn(|cx| {
            // Registered before looking, so a last report in between still wakes this task.
            state.waker.register(cx.waker());
            if state.unreported.load(Ordering::Acquire) == 0 { Poll::Ready(()) } else { Poll::Pending }
        });
        let reported = tokio::time::timeout(limit, all_reported).await.is_ok();
        self.end_span(reported);
        reported
    }

    /// The outcome of message `index`: `None` while unreported (or never sent).
    pub fn outcome(&self, index: usize) -> Option<Result<Delivered, OnexError>> {
        let outcome = self.state.slots.get(index)?.outcome.get()?;
        Some(outcome.as_ref().copied().map_err(|e| OnexError::clone(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::producer::Ticket;
    use rdkafka::util::IntoOpaque;

    fn sent() -> Sent {
        Sent { enqueued_us: 7, topic: crate::kafka::metrics::TopicRef::dangling(), bytes: 3 }
    }

    #[test]
    fn a_slot_reference_crosses_librdkafka_and_keeps_its_batch_alive() {
        let state = BatchState::new(3);
        let ticket = Ticket::InBatch(state.ticket(1, sent()).unwrap());
        assert_eq!(Arc::strong_count(&state), 2, "the ticket holds the batch");
        let ptr = ticket.into_ptr();
        // SAFETY: `ptr` came from `into_ptr` just above and is taken back once.
        let Ticket::InBatch(slot) = (unsafe { Ticket::from_ptr(ptr) }) else { panic!("tag lost") };
        assert_eq!(slot.sent().map(|s| (s.enqueued_us, s.bytes)), Some((7, 3)));
        assert_eq!(state.unreported.load(Ordering::Relaxed), 1);
        slot.complete(Ok(Delivered { partition: 2, offset: 9 }));
        assert_eq!(state.unreported.load(Ordering::Relaxed), 0);
        assert_eq!(Arc::strong_count(&state), 1, "completing released the batch");
        let outcome = state.slots[1].outcome.get().unwrap().as_ref().copied();
        assert_eq!(outcome.ok(), Some(Delivered { partition: 2, offset: 9 }));
        assert!(state.slots[0].outcome.get().is_none());
    }

    #[test]
    fn a_slot_is_claimed_once() {
        let state = BatchState::new(1);
        let first = state.ticket(0, sent()).unwrap();
        assert!(state.ticket(0, sent()).is_err());
        assert!(state.ticket(1, sent()).is_err());
        first.complete(Err(OnexError::new(ErrorCode::OperationTimeout, "late")));
        let outcome = state.slots[0].outcome.get().unwrap();
        assert_eq!(outcome.as_ref().unwrap_err().code(), ErrorCode::OperationTimeout);
    }

    #[test]
    fn a_batch_outlives_its_owner_while_a_report_is_due() {
        let state = BatchState::new(2);
        let slot = state.ticket(0, sent()).unwrap();
        let weak = Arc::downgrade(&state);
        drop(state);
        assert!(weak.upgrade().is_some(), "the outstanding reference keeps the batch");
        slot.complete(Ok(Delivered { partition: 0, offset: 0 }));
        assert!(weak.upgrade().is_none(), "freed with the last reference");
    }
}
