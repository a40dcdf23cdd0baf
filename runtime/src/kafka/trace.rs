//! Spans of messages the pool sends.
//!
//! A message sent through the pool is one PRODUCER span, `kafka.send`, a child of the caller's
//! current OpenTelemetry context, with the messaging conventions' attributes:
//! `messaging.system` = `kafka`, `messaging.operation.type` = `send`,
//! `messaging.operation.name`, `messaging.destination.name` (the topic),
//! `messaging.destination.partition.id` (the explicit partition, else the one the broker
//! acknowledged), `messaging.kafka.message.key` (when it is UTF-8),
//! `messaging.kafka.offset` (after the acknowledgement) and `messaging.message.body.size`.
//! The span's context goes into the message's headers as W3C `traceparent`/`tracestate`,
//! unless the caller's headers already carry a `traceparent` (the caller then propagates a
//! context of its own, and it wins). A failed delivery records its error on the span.
//!
//! Where the span ends: with a [`crate::kafka::DeliveryFuture`] (`send`, `send_with`,
//! `publish`), at the broker's answer; for `enqueue` (fire and forget: no answer reaches the
//! caller) at the hand-off to librdkafka; for a [`crate::kafka::SendBatch`], which is one
//! span `kafka.send_batch` for all its messages (every message carries that span's context
//! in its headers), when `wait` returns or the batch is dropped.
//!
//! Invariant: with tracing disabled nothing here runs (one branch in the pool); a span that
//! is not recorded (sampled out) still propagates its context, so that downstream services
//! make the same sampling decision, but sets no attribute and is not kept.

use opentelemetry::trace::{SpanContext, TraceContextExt as _};
use rdkafka::message::{Headers as _, OwnedHeaders};

use crate::error::OnexError;
use crate::kafka::{Delivered, ProduceRecord};
use crate::telemetry::recorded::Leaf;
use crate::telemetry::{KeyValue, OtelContext, Span, SpanKind, Tracing, carrier};

/// The attributes of a send span: the three fixed ones, the topic, partition, key, body size
/// and offset (a partition known before the send is set again at the acknowledgement), and
/// `error.type` on failure.
const ATTRIBUTES: usize = 10;

/// The attributes of a batch span: the three fixed ones, `onex.batch.capacity`,
/// `messaging.batch.message_count`, and on failure `error.type`.
pub(crate) const BATCH_ATTRIBUTES: usize = 6;

/// Starts a PRODUCER span named `name` for messages to `topic` (`None`: a batch that may name
/// several), a child of `parent`, with room for `attributes` attributes in all (its own four
/// included).
///
/// The room must cover every attribute the span will get: a span that outgrows it reallocates
/// its attribute vector, and at 20 attributes (over 1 KiB) glibc's malloc serves that by
/// consolidating its fast bins, about 9,000 instructions a span (callgrind, the bus's publish).
pub(crate) fn producer_span(
    tracing: &Tracing,
    name: &'static str,
    operation: &'static str,
    topic: Option<&str>,
    parent: &OtelContext,
    attributes: usize,
) -> Span {
    let mut span = tracing.span_in_with_capacity(name, SpanKind::Producer, parent, attributes);
    if span.is_recording() {
        span.set_attributes([
            KeyValue::new("messaging.system", "kafka"),
            KeyValue::new("messaging.operation.type", "send"),
            KeyValue::new("messaging.operation.name", operation),
        ]);
        if let Some(topic) = topic {
            span.set_attribute(KeyValue::new("messaging.destination.name", topic.to_owned()));
        }
    }
    span
}

/// Sets what `record` tells of the message on `span` (when recording).
pub(crate) fn describe(span: &mut Span, record: &ProduceRecord<'_>) {
    if !span.is_recording() {
        return;
    }
    if let Some(partition) = record.partition {
        span.set_attribute(KeyValue::new("messaging.destination.partition.id", partition.to_string()));
    }
    if let Some(key) = record.key.and_then(|key| std::str::from_utf8(key).ok()) {
        span.set_attribute(KeyValue::new("messaging.kafka.message.key", key.to_owned()));
    }
    let size = record.payload.map_or(0, <[u8]>::len);
    span.set_attribute(KeyValue::new("messaging.message.body.size", i64::try_from(size).unwrap_or(i64::MAX)));
}

/// Records where the message landed, or why it did not, on `span`.
pub(crate) fn record_delivery(span: &mut Leaf, outcome: &Result<Delivered, OnexError>) {
    match outcome {
        Ok(delivered) if span.is_recording() => span.set_attributes([
            KeyValue::new("messaging.destination.partition.id", delivered.partition.to_string()),
            KeyValue::new("messaging.kafka.offset", delivered.offset),
        ]),
        Ok(_) => {}
        Err(error) => span.record_error(error),
    }
}

/// The context that names `span` as the parent of whatever receives the message.
pub(crate) fn context_of(span: &Span) -> Option<OtelContext> {
    span.span_context().filter(|cx| cx.is_valid()).map(|cx| OtelContext::new().with_remote_span_context(cx.clone()))
}

/// Whether `headers` already carry a W3C `traceparent`.
pub(crate) fn has_traceparent(headers: Option<&OwnedHeaders>) -> bool {
    headers.is_some_and(|headers| headers.iter().any(|header| header.key == "traceparent"))
}

/// Writes `span` into `headers` (creating them) as W3C headers, unless they already carry a
/// `traceparent` (the caller then propagates a context of its own).
pub(crate) fn carry(span: &SpanContext, headers: &mut Option<OwnedHeaders>) {
    if !span.is_valid() || has_traceparent(headers.as_ref()) {
        return;
    }
    let built = headers.take().unwrap_or_else(|| OwnedHeaders::new_with_capacity(2));
    *headers = Some(carrier::inject_span_headers(span, built));
}

/// The span of one message the pool sends (see the module documentation), its context
/// carried in `headers`; empty when it is not recorded.
pub(crate) fn send_span(tracing: &Tracing, record: &ProduceRecord<'_>, headers: &mut Option<OwnedHeaders>) -> Leaf {
    let mut span = OtelContext::map_current(|parent| {
        producer_span(tracing, "kafka.send", "send", Some(record.topic), parent, ATTRIBUTES)
    });
    if let Some(cx) = span.span_context() {
        carry(cx, headers);
    }
    if !span.is_recording() {
        return Leaf::default();
    }
    describe(&mut span, record);
    span.into_leaf()
}
