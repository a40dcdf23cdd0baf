//! [`Operation`]: the span of a node operation while its work runs.
//!
//! The work runs with an OpenTelemetry context whose active span is the operation's (attached
//! on every poll, as [`super::in_span`] does): spans started outside the runtime's own code
//! (the Kafka producer, the event bus, the outbox, `tracing` spans through
//! [`super::Tracing::layer`], libraries on OpenTelemetry's global API) find their parent
//! there, so parent-based sampling holds for them too, sampled or not.
//!
//! That context holds only the span's ids (one allocation). The record of a sampled span stays
//! with the operation rather than in the context, where it cost two more allocations and a
//! lock per request; and the request's correlation id, which the spans below show, is not a
//! context entry (three allocations per request) but kept in a [`Frame`] on the operation,
//! made current for the poll through a thread-local pointer. An operation the sampler dropped
//! has no frame: nothing below it records a span that would show the id.
//!
//! Invariants:
//! - the frame is current only while the operation's work is polled, and the previous one is
//!   current again when the poll returns or unwinds;
//! - a frame names the correlation id only of work in its own trace: code that runs another
//!   trace's context inside the operation sees that context's `CorrelationId` entry, as before.

use std::borrow::Cow;
use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use opentelemetry::trace::{SpanContext, SpanKind, TraceContextExt as _, TraceId};
use opentelemetry::{Context as OtelContext, KeyValue, StringValue};
use uuid::Uuid;

use super::Tracing;
use super::recorded::Leaf;
use super::span::Decision;
use crate::context::TraceContext;
use crate::error::OnexError;

/// What the spans below an operation read of it, beside the context's active span.
pub(crate) struct Frame {
    /// The operation's trace: the frame speaks only for work in it.
    trace_id: TraceId,
    correlation_id: Uuid,
    /// `correlation_id` as an attribute value, formatted once for the operation's span and
    /// shared by the recorded spans below it (a clone is a reference count).
    correlation_value: StringValue,
}

thread_local! {
    /// The frame of the innermost operation being polled on this thread (null: none).
    static CURRENT: Cell<*const Frame> = const { Cell::new(std::ptr::null()) };
}

/// Makes a frame current until dropped, then the one before it.
struct Entered(*const Frame);

impl Entered {
    fn new(frame: &Frame) -> Self {
        Self(CURRENT.with(|current| current.replace(frame)))
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        CURRENT.with(|current| current.set(self.0));
    }
}

/// Applies `f` to the current frame, when one is current and speaks for the trace of the
/// current OpenTelemetry context, or else to that context.
fn map_current<T>(f: impl FnOnce(Result<&Frame, &OtelContext>) -> T) -> T {
    let frame = CURRENT.with(Cell::get);
    OtelContext::map_current(|cx| {
        // SAFETY: a non-null pointer is the frame of an operation whose poll is running on this
        // thread (set by `Entered` inside `InOperation::poll`, reset before the poll returns or
        // unwinds); the operation is borrowed for that poll, so the frame is alive and unmoved.
        match unsafe { frame.as_ref() } {
            Some(frame) if cx.span().span_context().trace_id() == frame.trace_id => f(Ok(frame)),
            _ => f(Err(cx)),
        }
    })
}

/// The correlation id of the work running on this thread: its node operation's, else the
/// current context's [`super::CorrelationId`] entry.
pub(crate) fn correlation_id() -> Option<Uuid> {
    map_current(|current| match current {
        Ok(frame) => Some(frame.correlation_id),
        Err(cx) => cx.get::<super::CorrelationId>().map(|id| id.0),
    })
}

/// [`correlation_id`] as a span attribute value.
pub(crate) fn correlation_value() -> Option<StringValue> {
    map_current(|current| match current {
        Ok(frame) => Some(frame.correlation_value.clone()),
        Err(cx) => cx.get::<super::CorrelationId>().map(|id| super::correlation_value(id.0)),
    })
}

/// The span of one node operation (see the module documentation); it ends when dropped.
pub(crate) struct Operation {
    /// The context the work runs in: its parent's, with this span active.
    cx: OtelContext,
    /// The span's record; empty when it is not recorded.
    span: Leaf,
    /// Only for a recorded span: below an unsampled one no span is recorded that would show
    /// the correlation id, and a frame costs two thread-local writes a poll.
    frame: Option<Frame>,
}

impl Tracing {
    /// Starts the span of a node operation: `name()` (called only when the span is recorded)
    /// with room for `attributes` attributes, of the request `correlation_id`, a child of the
    /// OpenTelemetry context current on this thread or, when that has no active span, of the
    /// request's `remote` trace context. Also gives the span as a trace context (`None` when it
    /// is not valid). With tracing disabled, the operation has no span and its work runs in the
    /// current context.
    ///
    /// The current context is read in place, not copied: the new one is derived from it.
    pub(crate) fn operation(
        &self,
        name: impl FnOnce() -> Cow<'static, str>,
        remote: Option<&TraceContext>,
        correlation_id: Uuid,
        attributes: usize,
    ) -> (Operation, Option<TraceContext>) {
        OtelContext::map_current(|current| {
            let active = current.has_active_span().then(|| current.span());
            let remote = match (&active, remote) {
                (None, Some(trace)) => Some(super::carrier::remote_span_context(trace)),
                _ => None,
            };
            // A remote parent starts from an empty context, as one extracted from a carrier.
            let (base, parent, suppressed) = match &remote {
                Some(remote) => (None, Some(remote), false),
                None => {
                    (Some(current), active.as_ref().map(|span| span.span_context()), current.is_telemetry_suppressed())
                }
            };
            let (span, context) = match self.decide(parent, suppressed) {
                Decision::Disabled => {
                    return (Operation { cx: current.clone(), span: Leaf::default(), frame: None }, None);
                }
                Decision::Unsampled(context) => (Leaf::default(), context),
                Decision::Record(record) => {
                    let parent = parent.unwrap_or(&SpanContext::NONE);
                    let data = record.start(name(), SpanKind::Internal, parent, attributes);
                    (Leaf::from_data(data), record.context)
                }
            };
            let trace = context.is_valid().then(|| super::carrier::trace_context_of(&context));
            let frame = span.is_recording().then(|| Frame {
                trace_id: context.trace_id(),
                correlation_id,
                correlation_value: super::correlation_value(correlation_id),
            });
            // Only the ids go into the context: the record stays here (see the module
            // documentation). Children take their parent's ids and flags from it alike.
            let cx = match base {
                Some(base) => base.with_remote_span_context(context),
                None => OtelContext::new().with_remote_span_context(context),
            };
            (Operation { cx, span, frame }, trace)
        })
    }
}

impl Operation {
    /// The request's correlation id as this span shows it: `Some` exactly when the span is
    /// recorded.
    pub(crate) fn correlation_value(&self) -> Option<StringValue> {
        self.frame.as_ref().map(|frame| frame.correlation_value.clone())
    }

    /// Sets attributes (ignored when not recording).
    pub(crate) fn set_attributes(&mut self, attributes: impl IntoIterator<Item = KeyValue>) {
        self.span.set_attributes(attributes);
    }

    /// Records `error` on the span (see [`super::span::record_error_on`]).
    pub(crate) fn record_error(&mut self, error: &OnexError) {
        self.span.record_error(error);
    }

    /// `work` run in this span: on every poll, the operation's context is current and so is
    /// its frame, if it has one.
    pub(crate) fn run<F: Future>(&self, work: F) -> InOperation<'_, F> {
        InOperation { work, operation: self }
    }
}

pin_project_lite::pin_project! {
    /// Work running in an [`Operation`] (see [`Operation::run`]).
    pub(crate) struct InOperation<'a, F> {
        #[pin]
        work: F,
        operation: &'a Operation,
    }
}

impl<F: Future> Future for InOperation<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, task: &mut std::task::Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _attached = this.operation.cx.clone().attach();
        let _entered = this.operation.frame.as_ref().map(Entered::new);
        this.work.poll(task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::capture::SpanCapture;
    use crate::telemetry::{CorrelationId, in_span};

    fn operation(tracing: &Tracing, correlation_id: Uuid) -> Operation {
        tracing.operation(|| "op".into(), None, correlation_id, 0).0
    }

    #[tokio::test]
    async fn the_frame_names_the_correlation_id_of_its_own_trace_only_and_only_while_polled() {
        let capture = SpanCapture::new();
        let tracing = capture.tracing("operation-test").unwrap();
        let (outer, inner) = (Uuid::new_v4(), Uuid::new_v4());
        let outer_cx = OtelContext::new().with_value(CorrelationId(outer));
        let op = in_span(outer_cx.clone(), async { operation(&tracing, inner) }).await;
        assert!(op.correlation_value().is_some(), "recorded at rate 1");
        let other_trace =
            tracing.span_in("other", SpanKind::Internal, &OtelContext::new()).into_context(&OtelContext::new());
        let seen = op
            .run(async {
                let own = CorrelationId::current();
                let child = tracing.span_in("child", SpanKind::Internal, &OtelContext::current());
                let in_child = in_span(child.into_context(&OtelContext::current()), async { CorrelationId::current() });
                let elsewhere = in_span(other_trace.clone(), async { CorrelationId::current() });
                let nested = in_span(outer_cx.clone(), async { CorrelationId::current() });
                (own, in_child.await, elsewhere.await, nested.await)
            })
            .await;
        assert_eq!(seen, (Some(inner), Some(inner), None, Some(outer)));
        assert_eq!(CorrelationId::current(), None, "the frame outlived the poll");
        assert_eq!(in_span(outer_cx, async { CorrelationId::current() }).await, Some(outer));
        tracing.shutdown().unwrap();
    }

    #[tokio::test]
    async fn the_work_of_an_unsampled_operation_starts_only_unsampled_spans_of_its_trace() {
        let capture = SpanCapture::new();
        let config = crate::models::tracing::TraceConfiguration {
            otlp_endpoint: "http://127.0.0.1:4317".into(),
            otlp_protocol: crate::models::tracing::OtlpProtocol::Grpc,
            otlp_headers: Default::default(),
            sample_rate: 0.0,
            service_name: "operation-test".into(),
            service_version: "0".into(),
            environment: "test".into(),
            instrument_database: true,
            instrument_kafka: true,
        };
        let made = capture.clone();
        let tracing =
            Tracing::with_exporter(&config, move || Ok(made), crate::telemetry::QueueLimits::default()).unwrap();
        let (op, trace) = tracing.operation(|| unreachable!("an unsampled span has no name"), None, Uuid::new_v4(), 4);
        let trace = trace.expect("an unsampled span still has ids");
        assert_eq!(trace.flags & 1, 0, "not sampled");
        assert!(op.correlation_value().is_none());
        let (child, leaf, correlation) = op
            .run(async {
                let child = tracing.span("child", SpanKind::Client);
                let leaf = tracing.recorded_leaf("leaf", SpanKind::Client, 0);
                (child, leaf, CorrelationId::current())
            })
            .await;
        let child_cx = child.span_context().expect("enabled");
        assert!(!child.is_recording() && !leaf.is_recording(), "a child decided apart from its parent");
        assert_eq!(child_cx.trace_id().to_bytes(), trace.trace_id, "the child left its parent's trace");
        assert_eq!(correlation, None, "no span below shows it");
        drop((child, leaf, op));
        tracing.flush().unwrap();
        assert!(capture.spans().is_empty(), "{:?}", capture.spans());
        tracing.shutdown().unwrap();
    }

    #[test]
    fn a_disabled_tracing_starts_no_span() {
        let (op, trace) = Tracing::disabled().operation(|| unreachable!(), None, Uuid::new_v4(), 0);
        assert!(trace.is_none() && op.correlation_value().is_none());
    }
}
