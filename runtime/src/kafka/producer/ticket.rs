//! The delivery ticket: what travels through librdkafka with each message, and the future a
//! caller awaits for its outcome.
//!
//! Invariants:
//! - a [`Ticket`] crosses librdkafka as one pointer, tagged in its lowest bit with its kind
//!   (both targets are aligned to at least 2, asserted at compile time);
//! - every ticket is completed exactly once: by the delivery report of an accepted message
//!   (also for messages purged when a producer is dropped), or at once for a refused send;
//! - a [`DeliveryFuture`] registers its waker before it looks for the outcome, so a report
//!   stored in between still wakes it.

use std::future::Future;
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};

use rdkafka::util::IntoOpaque;

use crate::error::OnexError;
use crate::kafka::batch::{Slot, SlotRef};
use crate::kafka::metrics::TopicCounters;

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
/// Shares the message's pending record with librdkafka instead of a separate channel: one
/// allocation per message, not two, and it is usually freed by the caller's thread (the last
/// to let go), where glibc's malloc frees it without taking another thread's arena lock.
#[must_use = "a delivery future does nothing unless awaited; use `enqueue` to fire and forget"]
pub struct DeliveryFuture {
    pub(super) pending: Arc<Pending>,
    /// The message's span when it is recorded (see `crate::kafka::trace`): it takes the
    /// outcome and ends with it. One pointer wide, so that without tracing the future stays
    /// small.
    span: crate::telemetry::recorded::Leaf,
}

impl DeliveryFuture {
    pub(super) fn new(pending: Arc<Pending>) -> Self {
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
        f.debug_struct("DeliveryFuture").field("enqueued_us", &self.pending.sent.enqueued_us).finish_non_exhaustive()
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
        let reply = &self.pending.reply;
        // Registered before looking, so a report stored in between still wakes this task.
        reply.waker.register(cx.waker());
        match reply.outcome.lock().unwrap_or_else(|p| p.into_inner()).take() {
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

/// What the delivery report needs to know about a message's send.
pub(crate) struct Sent {
    /// On the pool clock ([`PoolMetrics::now_us`](crate::kafka::metrics::PoolMetrics::now_us)).
    pub(crate) enqueued_us: u64,
    pub(crate) topic: Arc<TopicCounters>,
    pub(crate) bytes: u64,
}

/// The record of a message sent alone; its [`DeliveryFuture`] (if anyone waits) holds the
/// other reference.
pub(crate) struct Pending {
    pub(super) sent: Sent,
    pub(super) reply: Reply,
}

/// Carried through librdkafka with each message and handed back in its delivery report.
///
/// librdkafka hands every accepted message's opaque back exactly once, through the delivery
/// report (also for messages purged when a producer is dropped), and a refused send returns it
/// at once; so every ticket is completed exactly once.
pub(crate) enum Ticket {
    /// A message sent alone.
    Alone(Arc<Pending>),
    /// A message of a [`SendBatch`](crate::kafka::SendBatch).
    InBatch(SlotRef),
}

// Tickets travel as one pointer, tagged in its lowest bit (free: both targets are aligned).
const _: () = assert!(std::mem::align_of::<Pending>() >= 2 && std::mem::align_of::<Slot>() >= 2);

impl IntoOpaque for Ticket {
    fn into_ptr(self) -> *mut std::ffi::c_void {
        match self {
            Ticket::Alone(pending) => Arc::into_raw(pending).cast_mut().cast(),
            Ticket::InBatch(slot) => slot.into_raw().as_ptr().map_addr(|a| a | 1).cast(),
        }
    }

    unsafe fn from_ptr(ptr: *mut std::ffi::c_void) -> Self {
        if ptr.addr() & 1 == 0 {
            // SAFETY: an untagged pointer came from `Arc::into_raw` above, taken back once.
            Ticket::Alone(unsafe { Arc::from_raw(ptr.cast::<Pending>()) })
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
            Ticket::Alone(pending) => Some(&pending.sent),
            Ticket::InBatch(slot) => slot.sent(),
        }
    }

    pub(super) fn complete(self, outcome: Result<Delivered, OnexError>) {
        match self {
            Ticket::Alone(pending) => pending.reply.send(outcome),
            Ticket::InBatch(slot) => slot.complete(outcome),
        }
    }
}

/// The outcome of one message, stored by the delivery report and taken by its future.
#[derive(Default)]
pub(super) struct Reply {
    outcome: Mutex<Option<Result<Delivered, OnexError>>>,
    waker: futures::task::AtomicWaker,
}

impl Reply {
    fn send(&self, outcome: Result<Delivered, OnexError>) {
        *self.outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
        self.waker.wake();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::error::ErrorCode;

    fn pending() -> Arc<Pending> {
        Arc::new(Pending { sent: Sent { enqueued_us: 0, topic: Arc::default(), bytes: 0 }, reply: Reply::default() })
    }

    #[test]
    fn a_ticket_of_a_message_sent_alone_crosses_librdkafka() {
        let pending = pending();
        let ptr = Ticket::Alone(Arc::clone(&pending)).into_ptr();
        assert_eq!(ptr.addr() & 1, 0, "untagged");
        // SAFETY: `ptr` came from `into_ptr` just above and is taken back once.
        let ticket = unsafe { Ticket::from_ptr(ptr) };
        assert!(matches!(&ticket, Ticket::Alone(p) if Arc::ptr_eq(p, &pending)));
        ticket.complete(Ok(Delivered { partition: 1, offset: 2 }));
        assert_eq!(Arc::strong_count(&pending), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_report_stored_while_the_future_waits_wakes_it() {
        // One deadline for all rounds: a future the report does not wake would sit until then.
        let rounds = async {
            for _ in 0..1_000 {
                let pending = pending();
                let mut future = DeliveryFuture::new(Arc::clone(&pending));
                assert!(futures::poll!(&mut future).is_pending());
                let report = tokio::spawn(async move { pending.reply.send(Ok(Delivered { partition: 2, offset: 7 })) });
                assert_eq!(future.await.unwrap(), Delivered { partition: 2, offset: 7 });
                report.await.unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(5), rounds).await.expect("every future woken by its report");
    }

    #[tokio::test]
    async fn a_report_stored_before_the_first_poll_is_ready_at_once() {
        let pending = pending();
        let future = DeliveryFuture::new(Arc::clone(&pending));
        pending.reply.send(Err(OnexError::new(ErrorCode::IntegrationServiceError, "refused")));
        drop(pending);
        let outcome = futures::poll!(future);
        assert!(matches!(outcome, Poll::Ready(Err(e)) if e.code() == ErrorCode::IntegrationServiceError));
    }
}
