//! Where a trace context travels between processes: Kafka message headers and the event
//! envelope's `metadata.trace_context`, both as W3C `traceparent` / `tracestate`.
//!
//! A consumer prefers the headers (the producer's span wrote them when it sent the message)
//! and falls back to the envelope (an event built by a process that sent no headers, or
//! relayed from an outbox).

use std::collections::BTreeMap;

use chrono::Utc;
use opentelemetry::Context as OtelContext;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use rdkafka::message::{BorrowedHeaders, Header, Headers as _, OwnedHeaders};

use super::Tracing;
use crate::context::TraceContext;
use crate::event::EventMetadata;

/// Writes W3C headers into Kafka headers being built (rdkafka's headers only grow).
pub struct KafkaHeaderInjector<'a>(pub &'a mut OwnedHeaders);

impl Injector for KafkaHeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        let headers = std::mem::replace(self.0, OwnedHeaders::new_with_capacity(0));
        *self.0 = headers.insert(Header { key, value: Some(value.as_bytes()) });
    }
}

/// Reads W3C headers from a consumed message. With several headers of one name, the first
/// wins, as W3C asks of `traceparent`.
pub struct KafkaHeaderExtractor<'a>(pub &'a BorrowedHeaders);

impl Extractor for KafkaHeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|header| header.key == key).and_then(|header| std::str::from_utf8(header.value?).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|header| header.key).collect()
    }
}

/// Reads the envelope's `metadata.trace_context` map.
pub struct EnvelopeExtractor<'a>(pub &'a BTreeMap<String, String>);

impl Extractor for EnvelopeExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// Writes W3C headers into the envelope's `metadata.trace_context` map.
pub struct EnvelopeInjector<'a>(pub &'a mut BTreeMap<String, String>);

impl Injector for EnvelopeInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

/// Writes the span context of `cx` into Kafka headers (see [`inject_span_headers`]).
pub fn inject_kafka_headers(cx: &OtelContext, headers: &mut OwnedHeaders) {
    let span = cx.span();
    if span.span_context().is_valid() {
        let built = std::mem::replace(headers, OwnedHeaders::new_with_capacity(0));
        *headers = inject_span_headers(span.span_context(), built);
    }
}

/// `span`'s W3C `traceparent` as the propagator writes it (the sampled flag only), formatted
/// in place: the generic propagator goes through `fmt` and a context, about 3,500 instructions
/// a call, which every message of a traced producer or bus paid.
pub fn traceparent_bytes(span: &SpanContext) -> [u8; 55] {
    let mut value = [0u8; 55];
    value[..3].copy_from_slice(b"00-");
    hex_into(&span.trace_id().to_bytes(), &mut value[3..35]);
    value[35] = b'-';
    hex_into(&span.span_id().to_bytes(), &mut value[36..52]);
    value[52] = b'-';
    value[53] = b'0';
    value[54] = b'0' + (span.trace_flags().to_u8() & 1);
    value
}

/// `bytes` (a multiple of four long) as lowercase hex into `out` (twice as long), a word at a
/// time.
fn hex_into(bytes: &[u8], out: &mut [u8]) {
    for (word, digits) in bytes.chunks_exact(4).zip(out.chunks_exact_mut(8)) {
        digits.copy_from_slice(&hex_word(word));
    }
}

/// Four bytes (`word`, exactly 4) as eight lowercase hex digits, all at once in a `u64`: a
/// table lookup per digit cost ~240 instructions per `traceparent`, paid by every message a
/// traced producer sends (callgrind).
fn hex_word(word: &[u8]) -> [u8; 8] {
    let mut x = u64::from(u32::from_be_bytes([word[0], word[1], word[2], word[3]]));
    // Spread the eight nibbles over eight bytes, most significant first in big-endian order.
    x = ((x & 0xffff_0000) << 16) | (x & 0xffff);
    x = ((x & 0x0000_ff00_0000_ff00) << 8) | (x & 0x0000_00ff_0000_00ff);
    x = ((x & 0x00f0_00f0_00f0_00f0) << 4) | (x & 0x000f_000f_000f_000f);
    // 1 in each byte whose nibble is 10 or more: those get 'a' - '0' - 10 = 0x27 more.
    let letters = ((x + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    (x + 0x3030_3030_3030_3030 + letters * 0x27).to_be_bytes()
}

/// [`traceparent_bytes`] as text.
pub fn traceparent(span: &SpanContext) -> String {
    // Hex digits and dashes only, so never empty.
    String::from_utf8(traceparent_bytes(span).to_vec()).unwrap_or_default()
}

/// `span`'s W3C carrier as the propagator writes it: `traceparent`, then `tracestate` when the
/// span has one (the propagator's empty `tracestate` means the same as none).
pub fn span_carrier(span: &SpanContext) -> impl Iterator<Item = (&'static str, String)> {
    let state = span.trace_state().header();
    std::iter::once(("traceparent", traceparent(span))).chain((!state.is_empty()).then_some(("tracestate", state)))
}

/// Writes `span` as W3C headers (`traceparent`, and `tracestate` when it has one) into Kafka
/// headers being built. The per-message path of the producer: `traceparent` is formatted in
/// place ([`traceparent_bytes`]).
pub fn inject_span_headers(span: &SpanContext, headers: OwnedHeaders) -> OwnedHeaders {
    let value = traceparent_bytes(span);
    let headers = headers.insert(Header { key: "traceparent", value: Some(&value[..]) });
    let state = span.trace_state().header();
    if state.is_empty() { headers } else { headers.insert(Header { key: "tracestate", value: Some(state.as_bytes()) }) }
}

/// The remote parent a consumed message names: its headers' `traceparent` when valid,
/// otherwise the envelope's. `None` when neither carries one.
pub fn extract_parent(
    headers: Option<&BorrowedHeaders>,
    envelope: Option<&BTreeMap<String, String>>,
) -> Option<OtelContext> {
    // Extracted into an empty context, not the current one: `extract` falls back to the
    // current context when the carrier holds no valid traceparent, and a span active on this
    // thread would then pass for the message's remote parent.
    let propagator = TraceContextPropagator::new();
    let empty = OtelContext::new();
    let from_headers = headers.map(|headers| propagator.extract_with_context(&empty, &KafkaHeaderExtractor(headers)));
    if let Some(cx) = from_headers.filter(has_remote_span) {
        return Some(cx);
    }
    envelope.map(|map| propagator.extract_with_context(&empty, &EnvelopeExtractor(map))).filter(has_remote_span)
}

fn has_remote_span(cx: &OtelContext) -> bool {
    let span = cx.span();
    let span = span.span_context();
    span.is_valid() && span.is_remote()
}

/// Stamps `metadata` with the trace context of `cx` (when it has a valid span): the W3C
/// carrier in `trace_context`, plus `trace_timestamp`, `trace_service` and
/// `trace_environment` from `tracing`. An event that already carries a context keeps it.
pub fn stamp_envelope(metadata: &mut EventMetadata, cx: &OtelContext, tracing: &Tracing) {
    stamp_envelope_with(metadata, cx.span().span_context(), tracing);
}

/// [`stamp_envelope`] with the span context itself; `traceparent` is formatted in place
/// ([`traceparent_bytes`]) and `tracestate` written when the span has one, as the W3C
/// propagator writes them.
pub fn stamp_envelope_with(metadata: &mut EventMetadata, span: &SpanContext, tracing: &Tracing) {
    if !metadata.trace_context.is_empty() || !span.is_valid() {
        return;
    }
    metadata.trace_context.extend(span_carrier(span).map(|(key, value)| (key.to_owned(), value)));
    metadata.trace_timestamp = Some(Utc::now());
    metadata.trace_service = tracing.service_name().map(str::to_owned);
    metadata.trace_environment = tracing.environment().map(str::to_owned);
}

/// An OpenTelemetry context whose active span is the remote span `trace` names.
pub fn remote_context(trace: &TraceContext) -> OtelContext {
    OtelContext::new().with_remote_span_context(remote_span_context(trace))
}

/// The remote span `trace` names.
pub(crate) fn remote_span_context(trace: &TraceContext) -> SpanContext {
    let state = trace.trace_state.as_deref().and_then(|s| s.parse::<TraceState>().ok()).unwrap_or_default();
    SpanContext::new(
        TraceId::from_bytes(trace.trace_id),
        SpanId::from_bytes(trace.span_id),
        TraceFlags::new(trace.flags),
        true,
        state,
    )
}

/// A span context as this crate's [`TraceContext`].
pub fn trace_context_of(span: &SpanContext) -> TraceContext {
    let state = span.trace_state().header();
    TraceContext {
        trace_id: span.trace_id().to_bytes(),
        span_id: span.span_id().to_bytes(),
        flags: span.trace_flags().to_u8(),
        trace_state: (!state.is_empty()).then_some(state),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn a_traceparent_is_the_ids_in_lowercase_hex(trace in 1..=u128::MAX, span in 1..=u64::MAX, sampled: bool) {
            let flags = if sampled { TraceFlags::SAMPLED } else { TraceFlags::default() };
            let context = SpanContext::new(
                TraceId::from_bytes(trace.to_be_bytes()),
                SpanId::from_bytes(span.to_be_bytes()),
                flags,
                false,
                TraceState::default(),
            );
            let expected = format!("00-{trace:032x}-{span:016x}-{:02x}", u8::from(sampled));
            proptest::prop_assert_eq!(traceparent(&context), expected);
        }
    }

    #[test]
    fn a_carrier_without_a_valid_traceparent_names_no_parent_even_inside_a_span() {
        let active = remote_context(&TraceContext { trace_id: [7; 16], span_id: [9; 8], flags: 1, trace_state: None });
        let _current = active.attach();
        let bad: BTreeMap<String, String> = [("traceparent".to_owned(), "00-zz-zz-01".to_owned())].into();
        assert!(extract_parent(None, Some(&bad)).is_none());
        assert!(extract_parent(None, Some(&BTreeMap::new())).is_none());
        let good: BTreeMap<String, String> =
            [("traceparent".to_owned(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned())].into();
        let parent = extract_parent(None, Some(&good)).unwrap();
        assert_eq!(parent.span().span_context().trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn span_headers_are_what_the_w3c_propagator_writes() {
        for (flags, state) in [(1, None), (0, None), (1, Some("vendor=value,other=x"))] {
            let trace = TraceContext {
                trace_id: [
                    0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36,
                ],
                span_id: [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7],
                flags,
                trace_state: state.map(str::to_owned),
            };
            let cx = remote_context(&trace);
            let mut by_propagator = OwnedHeaders::new();
            TraceContextPropagator::new().inject_context(&cx, &mut KafkaHeaderInjector(&mut by_propagator));
            let direct = inject_span_headers(&cx.span().span_context().clone(), OwnedHeaders::new());
            let pairs = |headers: &OwnedHeaders| {
                headers.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec))).collect::<Vec<_>>()
            };
            // The propagator also writes an empty `tracestate`; a missing one means the same.
            let mut expected = pairs(&by_propagator);
            expected.retain(|(key, value)| key != "tracestate" || value.as_ref().is_some_and(|v| !v.is_empty()));
            assert_eq!(pairs(&direct), expected);
            assert_eq!(direct.get(0).value, Some(trace.traceparent().as_bytes()));

            // The envelope's carrier likewise.
            let mut by_propagator = BTreeMap::new();
            TraceContextPropagator::new().inject_context(&cx, &mut EnvelopeInjector(&mut by_propagator));
            by_propagator.retain(|key, value| key != "tracestate" || !value.is_empty());
            let mut stamped = EventMetadata::default();
            stamp_envelope_with(&mut stamped, cx.span().span_context(), &Tracing::disabled());
            assert_eq!(stamped.trace_context, by_propagator);
            assert!(stamped.trace_timestamp.is_some());
        }
    }
}
