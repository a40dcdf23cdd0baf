//! [`Recorded`]: a span the runtime records itself, without the OpenTelemetry SDK's span.
//!
//! The SDK's span start (a span builder, the sampler called again, the provider looked up,
//! processors told of the start) and end (a second copy of the span's data into the export
//! form) cost more than the work a fast statement does. The sampler's decision is already
//! made before a span is started (see `super::span`), so a recorded span needs only what it
//! exports: this is that [`SpanData`], filled in as the SDK fills it, and handed to the export
//! queue (`super::export`) when the span ends, the same queue the SDK's spans (from
//! [`super::Tracing::layer`]) go to.
//!
//! Invariants (the SDK's, so exporters cannot tell the two apart):
//! - the span's context: a fresh span id, the parent's trace id (a fresh one for a root or an
//!   invalid parent), the parent's flags with `sampled` set, the parent's trace state;
//!   `parent_span_id` / `parent_span_is_remote` from a valid parent only;
//! - the default span limits: past 128 attributes, events or links, or 128 attributes on an
//!   event or a link, the extra ones are dropped and counted;
//! - status only rises (`Unset` < `Error` < `Ok`), as the SDK's `set_status`;
//! - it ends once (the first `end`, or the drop), then is no longer recording; a span ended
//!   after the queue shut down is not exported.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use opentelemetry::trace::{Event, Link, SpanContext, SpanKind, Status};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLimits, SpanLinks};

use super::export::{Finished, QueueProcessor};

/// A span being recorded; exported when it ends (at [`opentelemetry::trace::Span::end`] or
/// when dropped).
#[derive(Debug)]
pub(crate) struct Recorded {
    /// `None` once ended. Boxed as the export queue takes it: the span is built in place and
    /// every later move (into a context, into the queue) is a pointer's, not a few hundred
    /// bytes' (callgrind: the copies cost more than the allocation).
    data: Option<Box<Finished>>,
    /// The span's context, also inside `data` while recording: kept here so that it can still
    /// be read after the end.
    context: SpanContext,
}

/// The record of a sampled span named `name` with `context` (its ids, flags and trace state),
/// a child of `parent` (its span context, valid or not), started now, with room for
/// `attributes` attributes before the list grows. Built in its box: every later move (into a
/// span, into the queue) is a pointer's, not a few hundred bytes' (callgrind: the copies cost
/// more than the allocation).
pub(crate) fn start(
    queue: Arc<QueueProcessor>,
    scope: &InstrumentationScope,
    name: Cow<'static, str>,
    kind: SpanKind,
    context: SpanContext,
    parent: &SpanContext,
    attributes: usize,
) -> Box<Finished> {
    let start_time = opentelemetry::time::now();
    let valid_parent = parent.is_valid();
    let span = SpanData {
        span_context: context,
        parent_span_id: if valid_parent { parent.span_id() } else { opentelemetry::trace::SpanId::INVALID },
        parent_span_is_remote: valid_parent && parent.is_remote(),
        span_kind: kind,
        name,
        start_time,
        end_time: start_time,
        attributes: Vec::with_capacity(attributes),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: scope.clone(),
    };
    let finished = Finished { span, queue: Some(queue) };
    match finished.queue.as_ref().and_then(|queue| queue.spare()) {
        Some(mut spare) => {
            // SAFETY: `spare` points to a live, initialized `Finished`, overwritten in place
            // without being dropped: the export thread left only `export::vacant()` and no
            // queue in it, which own no memory, so skipping their drop (~200 instructions of
            // drop glue) leaks nothing.
            unsafe { std::ptr::write(&raw mut *spare, finished) };
            spare
        }
        None => Box::new(finished),
    }
}

impl Recorded {
    /// The span whose record [`start`] began, with its `context`.
    pub(crate) fn from_data(data: Box<Finished>, context: SpanContext) -> Self {
        Self { data: Some(data), context }
    }

    /// Whether the queue behind `queue` still takes spans: after shutdown the SDK starts
    /// no recording span, and neither does [`super::Tracing`].
    pub(crate) fn accepts(queue: &QueueProcessor) -> bool {
        !queue.is_closed()
    }

    /// This span as a [`Leaf`] (empty when it ended already).
    pub(crate) fn into_leaf(mut self) -> Leaf {
        Leaf(self.data.take())
    }

    fn end_at(&mut self, end: Option<SystemTime>) {
        if let Some(data) = self.data.take() {
            finish(data, end);
        }
    }
}

/// A recorded span that nothing reads the context of after it starts (a statement): only its
/// box, one pointer wide, where a [`super::Span`] keeps the context beside it; empty when not
/// recorded. It ends when dropped.
#[derive(Debug, Default)]
pub(crate) struct Leaf(Option<Box<Finished>>);

impl Leaf {
    /// The span whose record [`start`] began.
    pub(crate) fn from_data(data: Box<Finished>) -> Self {
        Self(Some(data))
    }

    /// Whether the span is recorded.
    pub(crate) fn is_recording(&self) -> bool {
        self.0.is_some()
    }

    /// Sets one attribute (past the limit, drops and counts it).
    pub(crate) fn set_attribute(&mut self, attribute: KeyValue) {
        if let Some(data) = &mut self.0 {
            add_attribute(&mut data.span, attribute);
        }
    }

    /// Sets attributes.
    pub(crate) fn set_attributes(&mut self, attributes: impl IntoIterator<Item = KeyValue>) {
        if let Some(data) = &mut self.0 {
            for attribute in attributes {
                add_attribute(&mut data.span, attribute);
            }
        }
    }

    /// Adds an event (within the limits).
    pub(crate) fn add_event(&mut self, name: impl Into<Cow<'static, str>>, attributes: Vec<KeyValue>) {
        if let Some(data) = &mut self.0 {
            add_event(&mut data.span, name.into(), opentelemetry::time::now(), attributes);
        }
    }

    /// Sets the status, if higher than the current one.
    pub(crate) fn set_status(&mut self, status: Status) {
        if let Some(data) = &mut self.0 {
            raise_status(&mut data.span, status);
        }
    }
}

impl Drop for Leaf {
    fn drop(&mut self) {
        if let Some(data) = self.0.take() {
            finish(data, None);
        }
    }
}

/// Ends `data` at `end` (now when `None` and no end was set) and queues it.
fn finish(mut data: Box<Finished>, end: Option<SystemTime>) {
    let span = &mut data.span;
    match end {
        Some(end) => span.end_time = end,
        None if span.end_time == span.start_time => span.end_time = opentelemetry::time::now(),
        None => {}
    }
    if let Some(queue) = data.queue.take() {
        queue.push(data);
    }
}

/// The SDK's default limits, which its provider applies (nothing here configures others).
/// A constant: building `SpanLimits::default()` per attribute showed in the profile.
const LIMITS: SpanLimits = SpanLimits {
    max_events_per_span: 128,
    max_attributes_per_span: 128,
    max_links_per_span: 128,
    max_attributes_per_event: 128,
    max_attributes_per_link: 128,
};

#[inline]
fn add_attribute(data: &mut SpanData, attribute: KeyValue) {
    if data.attributes.len() < LIMITS.max_attributes_per_span as usize {
        data.attributes.push(attribute);
    } else {
        data.dropped_attributes_count += 1;
    }
}

fn add_event(data: &mut SpanData, name: Cow<'static, str>, timestamp: SystemTime, mut attributes: Vec<KeyValue>) {
    if data.events.len() < LIMITS.max_events_per_span as usize {
        let dropped = attributes.len().saturating_sub(LIMITS.max_attributes_per_event as usize);
        attributes.truncate(LIMITS.max_attributes_per_event as usize);
        data.events.events.push(Event::new(name, timestamp, attributes, dropped as u32));
    } else {
        data.events.dropped_count += 1;
    }
}

fn raise_status(data: &mut SpanData, status: Status) {
    if status > data.status {
        data.status = status;
    }
}

impl opentelemetry::trace::Span for Recorded {
    fn add_event_with_timestamp<T>(&mut self, name: T, timestamp: SystemTime, attributes: Vec<KeyValue>)
    where
        T: Into<Cow<'static, str>>,
    {
        if let Some(data) = &mut self.data {
            add_event(&mut data.span, name.into(), timestamp, attributes);
        }
    }

    fn span_context(&self) -> &SpanContext {
        &self.context
    }

    fn is_recording(&self) -> bool {
        self.data.is_some()
    }

    #[inline]
    fn set_attribute(&mut self, attribute: KeyValue) {
        if let Some(data) = &mut self.data {
            add_attribute(&mut data.span, attribute);
        }
    }

    fn set_status(&mut self, status: Status) {
        if let Some(data) = &mut self.data {
            raise_status(&mut data.span, status);
        }
    }

    fn update_name<T>(&mut self, new_name: T)
    where
        T: Into<Cow<'static, str>>,
    {
        if let Some(data) = &mut self.data {
            data.span.name = new_name.into();
        }
    }

    fn add_link(&mut self, span_context: SpanContext, mut attributes: Vec<KeyValue>) {
        let Some(data) = &mut self.data else { return };
        let data = &mut data.span;
        if data.links.links.len() < LIMITS.max_links_per_span as usize {
            let dropped = attributes.len().saturating_sub(LIMITS.max_attributes_per_link as usize);
            attributes.truncate(LIMITS.max_attributes_per_link as usize);
            data.links.links.push(Link::new(span_context, attributes, dropped as u32));
        } else {
            data.links.dropped_count += 1;
        }
    }

    fn end_with_timestamp(&mut self, timestamp: SystemTime) {
        self.end_at(Some(timestamp));
    }
}

impl Drop for Recorded {
    fn drop(&mut self) {
        self.end_at(None);
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState, Tracer as _,
    };
    use opentelemetry::{Context as OtelContext, KeyValue};

    use super::*;
    use crate::error::OnexError;
    use crate::telemetry::Tracing;
    use crate::telemetry::capture::SpanCapture;
    use crate::telemetry::span::record_error_on;

    /// The same span recorded by the runtime and by the SDK (as `Tracing` started spans
    /// before), both under `parent`, with the same calls made on them: what each exported.
    fn ours_and_the_sdks(parent: &OtelContext) -> (SpanData, SpanData) {
        let capture = SpanCapture::new();
        let tracing = capture.tracing("recorded-test").unwrap();
        let tracer = tracing.tracer().unwrap();
        let ours = tracing.span_in("statement", SpanKind::Client, parent).into_context(parent);
        let sdk = parent
            .with_span(tracer.build_with_context(tracer.span_builder("statement").with_kind(SpanKind::Client), parent));
        let error = OnexError::configuration("no such table");
        for cx in [&ours, &sdk] {
            let span = cx.span();
            span.set_attribute(KeyValue::new("db.system.name", "postgresql"));
            for n in 0..130_i64 {
                span.set_attribute(KeyValue::new("n", n));
            }
            span.add_event("retry", (0..130_i64).map(|n| KeyValue::new("try", n)).collect());
            span.add_link(SpanContext::NONE, vec![KeyValue::new("link", true)]);
            record_error_on(cx, &error);
            span.set_status(Status::Unset);
            span.update_name("statement.renamed");
        }
        let (ours_id, sdk_id) = (ours.span().span_context().span_id(), sdk.span().span_context().span_id());
        drop((ours, sdk));
        tracing.flush().unwrap();
        let ours = capture.by_id(ours_id).expect("ours was exported");
        let sdk = capture.by_id(sdk_id).expect("the SDK's was exported");
        tracing.shutdown().unwrap();
        (ours, sdk)
    }

    /// `span` with the ids and times only one span has (and a root's trace id) of `like`.
    fn aligned(mut span: SpanData, like: &SpanData) -> SpanData {
        let cx = &span.span_context;
        span.span_context = SpanContext::new(
            like.span_context.trace_id(),
            like.span_context.span_id(),
            cx.trace_flags(),
            cx.is_remote(),
            cx.trace_state().clone(),
        );
        span.start_time = like.start_time;
        span.end_time = like.end_time;
        for (event, like) in span.events.events.iter_mut().zip(&like.events.events) {
            event.timestamp = like.timestamp;
        }
        span
    }

    fn remote(flags: TraceFlags, state: &str) -> OtelContext {
        OtelContext::new().with_remote_span_context(SpanContext::new(
            TraceId::from(0x1234_u128),
            SpanId::from(0x56_u64),
            flags,
            true,
            state.parse::<TraceState>().unwrap(),
        ))
    }

    #[test]
    fn a_recorded_span_exports_what_the_sdks_span_exported() {
        let parents = [
            ("root", OtelContext::new()),
            ("sampled remote parent", remote(TraceFlags::SAMPLED, "vendor=1")),
            (
                "invalid sampled parent",
                OtelContext::new().with_remote_span_context(SpanContext::new(
                    TraceId::INVALID,
                    SpanId::INVALID,
                    TraceFlags::SAMPLED,
                    true,
                    "vendor=2".parse::<TraceState>().unwrap(),
                )),
            ),
        ];
        for (what, parent) in parents {
            let (ours, sdk) = ours_and_the_sdks(&parent);
            assert!(ours.span_context.is_valid() && ours.span_context.is_sampled(), "{what}");
            assert_eq!(aligned(ours, &sdk), sdk, "{what}");
        }
    }

    #[test]
    fn the_limits_are_the_sdks_defaults() {
        assert_eq!(format!("{LIMITS:?}"), format!("{:?}", SpanLimits::default()));
    }

    #[test]
    fn a_child_of_a_recorded_span_names_it_as_its_parent_in_its_trace() {
        let capture = SpanCapture::new();
        let tracing = capture.tracing("recorded-test").unwrap();
        let parent =
            tracing.span_in("operation", SpanKind::Internal, &OtelContext::new()).into_context(&OtelContext::new());
        let child = tracing.span_in("statement", SpanKind::Client, &parent);
        let (parent_cx, child_cx) = (parent.span().span_context().clone(), child.span_context().unwrap().clone());
        assert_eq!(child_cx.trace_id(), parent_cx.trace_id());
        assert!(child_cx.is_sampled() && !child_cx.is_remote());
        drop((child, parent));
        tracing.flush().unwrap();
        let child = capture.by_id(child_cx.span_id()).unwrap();
        assert_eq!((child.parent_span_id, child.parent_span_is_remote), (parent_cx.span_id(), false));
        tracing.shutdown().unwrap();
    }

    #[test]
    fn a_leaf_exports_what_a_span_with_the_same_calls_exports() {
        let capture = SpanCapture::new();
        let tracing = capture.tracing("recorded-test").unwrap();
        let parent =
            tracing.span_in("operation", SpanKind::Internal, &OtelContext::new()).into_context(&OtelContext::new());
        let error = OnexError::configuration("no such table");
        let _entered = parent.clone().attach();
        let mut leaf = tracing.recorded_leaf("statement", SpanKind::Client, 2);
        let mut span = tracing.leaf_span("statement", SpanKind::Client);
        leaf.set_attributes([KeyValue::new("db.system.name", "postgresql")]);
        span.set_attributes([KeyValue::new("db.system.name", "postgresql")]);
        leaf.record_error(&error);
        span.record_error(&error);
        let span_id = span.span_context().unwrap().span_id();
        drop((leaf, span));
        tracing.flush().unwrap();
        let (leaves, spans): (Vec<_>, Vec<_>) =
            capture.named("statement").into_iter().partition(|s| s.span_context.span_id() != span_id);
        assert_eq!(leaves.len(), 1);
        assert_eq!(aligned(leaves[0].clone(), &spans[0]), spans[0]);
        assert_eq!(spans[0].parent_span_id, parent.span().span_context().span_id());
        assert!(!Tracing::disabled().recorded_leaf("statement", SpanKind::Client, 2).is_recording());
    }

    #[test]
    fn a_span_ends_once_and_not_after_shutdown() {
        let capture = SpanCapture::new();
        let tracing = capture.tracing("recorded-test").unwrap();
        let span = tracing.span_in("ended", SpanKind::Internal, &OtelContext::new()).into_context(&OtelContext::new());
        span.span().end();
        assert!(!span.span().is_recording(), "an ended span still records");
        drop(span);
        let late = tracing.span_in("late", SpanKind::Internal, &OtelContext::new());
        tracing.shutdown().unwrap();
        drop(late);
        let after = tracing.span_in("after", SpanKind::Internal, &OtelContext::new());
        assert!(!after.is_recording(), "a span started after shutdown records");
        assert!(after.span_context().is_some_and(|cx| !cx.is_valid()), "as the SDK's: a span of no trace");
        let names: Vec<_> = capture.spans().into_iter().map(|span| span.name).collect();
        assert_eq!(names, ["ended"]);
    }
}
