//! [`Span`]: one span of the runtime's own work, and how services start one.
//!
//! Spans are started through the OpenTelemetry API rather than `tracing` macros: the sampler
//! decides before anything else happens, and a span that is not recorded (tracing disabled,
//! or a trace the sampler dropped) costs no attribute, no allocation and no SQL sanitizing.
//! Callers build expensive attributes only when [`Span::is_recording`]. Spans that `tracing`
//! macros open inside handlers join the same traces through [`Tracing::layer`].
//!
//! The sampler's decision is made here, without the SDK, and is the SDK's own rule
//! (parent-based, trace-id ratio at the root; see `telemetry::ids`). A span the sampler drops
//! is only its ids and its unsampled flag (what travels downstream, so that the next service
//! drops the trace too). A span it keeps is not an SDK span either, whose start and end cost
//! about as much as a whole Kafka message, but the runtime's own record of what is exported
//! (`telemetry::recorded`), handed to the same export queue.

use std::borrow::Cow;
use std::sync::Arc;

use opentelemetry::trace::{SpanContext, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId, TraceState};
use opentelemetry::{Context as OtelContext, KeyValue};

use super::Tracing;
use super::recorded::{Leaf, Recorded};
use crate::context::TraceContext;
use crate::error::OnexError;

/// A span of the runtime's work; it ends when dropped (or at [`Span::end`]).
#[derive(Debug, Default)]
pub struct Span {
    inner: Inner,
}

// A recorded span is as large as `Span` always was; boxing it would cost each recorded span an
// allocation to save an unsampled one a few bytes of stack.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Default)]
enum Inner {
    /// Tracing is disabled (or the span was not started at all).
    #[default]
    None,
    /// Sampled out: the ids and flags that go downstream, nothing recorded.
    Unsampled(SpanContext),
    /// A span recorded and exported (see `super::recorded`).
    Recorded(Recorded),
}

impl Tracing {
    /// Starts a span named `name` as a child of the OpenTelemetry context current on this
    /// thread (the span of the operation that is running, see [`super::in_span`]).
    pub fn span(&self, name: impl Into<Cow<'static, str>>, kind: SpanKind) -> Span {
        match self.tracer() {
            None => Span::default(),
            Some(_) => OtelContext::map_current(|parent| self.span_in(name, kind, parent)),
        }
    }

    /// Starts a span that starts none of its own and carries no context further (a statement),
    /// as a child of the current context; when the current span is valid and not sampled it
    /// starts nothing at all, since the parent-based sampler would drop it anyway. That saves
    /// the unsampled majority of a traced workload a span's ids and bookkeeping.
    pub fn leaf_span(&self, name: impl Into<Cow<'static, str>>, kind: SpanKind) -> Span {
        self.leaf_span_with_capacity(name, kind, 0)
    }

    /// [`Tracing::leaf_span`] as a [`Leaf`] (one pointer wide, with room for `attributes`
    /// attributes), empty when it is not recorded.
    pub(crate) fn recorded_leaf(&self, name: impl Into<Cow<'static, str>>, kind: SpanKind, attributes: usize) -> Leaf {
        if !self.is_enabled() {
            return Leaf::default();
        }
        OtelContext::map_current(|parent| {
            let active = parent.has_active_span().then(|| parent.span());
            let current = active.as_ref().map(|span| span.span_context());
            if current.is_some_and(|current| current.is_valid() && !current.is_sampled()) {
                return Leaf::default();
            }
            match self.decide(current, parent.is_telemetry_suppressed()) {
                // Built straight into the leaf: no span context kept beside it.
                Decision::Record(record) => {
                    Leaf::from_data(record.start(name.into(), kind, current.unwrap_or(&SpanContext::NONE), attributes))
                }
                Decision::Disabled | Decision::Unsampled(_) => Leaf::default(),
            }
        })
    }

    /// [`Tracing::leaf_span`] with room for `attributes` attributes, when it is recorded.
    pub(crate) fn leaf_span_with_capacity(
        &self,
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        attributes: usize,
    ) -> Span {
        match self.tracer() {
            None => Span::default(),
            Some(_) => OtelContext::map_current(|parent| {
                let span = parent.span();
                let current = span.span_context();
                if current.is_valid() && !current.is_sampled() {
                    return Span::default();
                }
                self.start(name.into(), kind, parent, attributes)
            }),
        }
    }

    /// Starts a span named `name` as a child of `parent`.
    ///
    /// The sampler's decision comes first, here (see the module documentation): a span under
    /// an unsampled parent, or a root whose trace id falls outside the rate, is only ids.
    pub fn span_in(&self, name: impl Into<Cow<'static, str>>, kind: SpanKind, parent: &OtelContext) -> Span {
        self.start(name.into(), kind, parent, 0)
    }

    /// [`Tracing::span_in`] with room for `attributes` attributes, when it is recorded: the
    /// list then grows no more for a span whose attributes are known.
    pub(crate) fn span_in_with_capacity(
        &self,
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        parent: &OtelContext,
        attributes: usize,
    ) -> Span {
        self.start(name.into(), kind, parent, attributes)
    }

    fn start(&self, name: Cow<'static, str>, kind: SpanKind, parent: &OtelContext, attributes: usize) -> Span {
        let active = parent.has_active_span().then(|| parent.span());
        let decision = self.decide(active.as_ref().map(|span| span.span_context()), parent.is_telemetry_suppressed());
        match decision {
            Decision::Disabled => Span::default(),
            Decision::Unsampled(context) => Span { inner: Inner::Unsampled(context) },
            Decision::Record(record) => {
                let parent = active.as_ref().map_or(&SpanContext::NONE, |span| span.span_context());
                let context = record.context.clone();
                let data = record.start(name, kind, parent, attributes);
                Span { inner: Inner::Recorded(Recorded::from_data(data, context)) }
            }
        }
    }

    /// The sampler's decision for a span whose parent is `parent` (the active span of its
    /// parent context, `None` when that context has none), made before anything is built.
    /// Parent-based, as the SDK's sampler: an active parent decides, valid or not; a root is
    /// sampled by its trace id at the rate.
    pub(crate) fn decide(&self, parent: Option<&SpanContext>, suppressed: bool) -> Decision<'_> {
        let (Some((queue, scope)), Some(rate)) = (self.recorder(), self.sample_rate()) else {
            return Decision::Disabled;
        };
        // What the SDK starts with telemetry suppressed, and for a sampled span once shut down:
        // a span of no trace, which records nothing.
        if suppressed {
            return Decision::Unsampled(SpanContext::empty_context());
        }
        let record = |trace_id: TraceId, parent: &SpanContext, state: TraceState| {
            if !Recorded::accepts(queue) {
                return Decision::Unsampled(SpanContext::empty_context());
            }
            // As the SDK builds a sampled span: the parent's flags (none for a root or an
            // invalid parent) with `sampled` set.
            let flags = if parent.is_valid() { parent.trace_flags() } else { TraceFlags::default() };
            let context = SpanContext::new(trace_id, super::ids::new_span_id(), flags.with_sampled(true), false, state);
            Decision::Record(Record { queue, scope, context })
        };
        if let Some(parent) = parent {
            let trace_id = if parent.is_valid() { parent.trace_id() } else { super::ids::new_trace_id() };
            if parent.is_sampled() {
                return record(trace_id, parent, parent.trace_state().clone());
            }
            return Decision::Unsampled(unsampled(trace_id, parent.trace_state().clone()));
        }
        let trace_id = super::ids::new_trace_id();
        if super::ids::root_is_sampled(rate, trace_id) {
            record(trace_id, &SpanContext::NONE, TraceState::default())
        } else {
            Decision::Unsampled(unsampled(trace_id, TraceState::default()))
        }
    }
}

/// What the sampler decided for a span about to start (see [`Tracing::decide`]).
pub(crate) enum Decision<'a> {
    /// Tracing is disabled: no span at all.
    Disabled,
    /// Not recorded: only these ids and flags go downstream.
    Unsampled(SpanContext),
    /// Recorded, with this context.
    Record(Record<'a>),
}

/// A span the sampler keeps, before it is built.
pub(crate) struct Record<'a> {
    queue: &'a Arc<super::export::QueueProcessor>,
    scope: &'a opentelemetry::InstrumentationScope,
    /// The new span's ids, flags and trace state.
    pub(crate) context: SpanContext,
}

impl Record<'_> {
    /// The span's record, started now as a child of `parent` (valid or not), with room for
    /// `attributes` attributes; it holds a copy of the span's context.
    pub(crate) fn start(
        &self,
        name: Cow<'static, str>,
        kind: SpanKind,
        parent: &SpanContext,
        attributes: usize,
    ) -> Box<super::export::Finished> {
        super::recorded::start(Arc::clone(self.queue), self.scope, name, kind, self.context.clone(), parent, attributes)
    }
}

/// A span the sampler dropped, in trace `trace_id`: fresh span id, unsampled flag.
fn unsampled(trace_id: TraceId, state: TraceState) -> SpanContext {
    SpanContext::new(trace_id, super::ids::new_span_id(), TraceFlags::default(), false, state)
}

impl Span {
    fn recorded(&mut self) -> Option<&mut Recorded> {
        match &mut self.inner {
            Inner::Recorded(span) => Some(span),
            _ => None,
        }
    }

    /// Whether this span is recorded (tracing is enabled and the trace is sampled). Attributes
    /// set on a span that is not recorded are dropped, so compute costly ones only when true.
    pub fn is_recording(&self) -> bool {
        use opentelemetry::trace::Span as _;
        matches!(&self.inner, Inner::Recorded(span) if span.is_recording())
    }

    /// Sets one attribute (ignored when not recording).
    pub fn set_attribute(&mut self, attribute: KeyValue) {
        use opentelemetry::trace::Span as _;
        if let Some(span) = self.recorded() {
            span.set_attribute(attribute);
        }
    }

    /// Sets attributes (ignored when not recording).
    pub fn set_attributes(&mut self, attributes: impl IntoIterator<Item = KeyValue>) {
        use opentelemetry::trace::Span as _;
        if let Some(span) = self.recorded() {
            span.set_attributes(attributes);
        }
    }

    /// Records `error` (see [`record_error_on`]).
    pub fn record_error(&mut self, error: &OnexError) {
        use opentelemetry::trace::Span as _;
        let Some(span) = self.recorded() else { return };
        if span.is_recording() {
            let (attribute, event, status) = error_parts(error);
            span.set_attribute(attribute);
            span.add_event("exception", event);
            span.set_status(status);
        }
    }

    /// Records the outcome of the work this span covers.
    pub fn record_result<T>(&mut self, result: &Result<T, OnexError>) {
        if let Err(error) = result {
            self.record_error(error);
        }
    }

    /// The span's ids and sampled flag; `None` when tracing is disabled.
    pub fn span_context(&self) -> Option<&SpanContext> {
        use opentelemetry::trace::Span as _;
        match &self.inner {
            Inner::None => None,
            Inner::Unsampled(cx) => Some(cx),
            Inner::Recorded(span) => Some(span.span_context()),
        }
    }

    /// This span as a [`Leaf`], for spans whose context nothing reads any more: one pointer
    /// wide, empty when not recorded.
    pub(crate) fn into_leaf(self) -> Leaf {
        match self.inner {
            Inner::Recorded(span) => span.into_leaf(),
            _ => Leaf::default(),
        }
    }

    /// The span as a W3C trace context, to carry in a request's [`crate::Context`] or an event.
    pub fn trace_context(&self) -> Option<TraceContext> {
        self.span_context().filter(|cx| cx.is_valid()).map(super::carrier::trace_context_of)
    }

    /// `parent` with this span as its active span: work run in it (see [`super::in_span`])
    /// starts its spans as children of this one. The span ends when the last clone of the
    /// returned context is dropped.
    pub fn into_context(self, parent: &OtelContext) -> OtelContext {
        match self.inner {
            Inner::Recorded(span) => parent.with_span(span),
            // Only its ids go on: a non-recording span of that context.
            Inner::Unsampled(cx) => parent.with_remote_span_context(cx),
            Inner::None => parent.clone(),
        }
    }

    /// Ends the span now.
    pub fn end(self) {
        drop(self);
    }
}

impl Leaf {
    /// Records `error` as [`Span::record_error`] does.
    pub(crate) fn record_error(&mut self, error: &OnexError) {
        if !self.is_recording() {
            return;
        }
        let (attribute, event, status) = error_parts(error);
        self.set_attribute(attribute);
        self.add_event("exception", event);
        self.set_status(status);
    }
}

/// Records `error` on the active span of `cx`: ERROR status with its message, an `exception`
/// event with its code (`exception.type`) and message, and `error.type`. OnexError messages
/// are sanitized where they are made, so no secret reaches the span.
pub fn record_error_on(cx: &OtelContext, error: &OnexError) {
    let span = cx.span();
    if span.is_recording() {
        let (attribute, event, status) = error_parts(error);
        span.set_attribute(attribute);
        span.add_event("exception", event);
        span.set_status(status);
    }
}

fn error_parts(error: &OnexError) -> (KeyValue, Vec<KeyValue>, Status) {
    let code = error.code().as_str();
    (
        KeyValue::new("error.type", code),
        vec![KeyValue::new("exception.type", code), KeyValue::new("exception.message", error.message().to_owned())],
        Status::error(error.message().to_owned()),
    )
}
