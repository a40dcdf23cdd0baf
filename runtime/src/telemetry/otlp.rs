//! OTLP/protobuf encoding of a batch of spans, straight from the SDK's [`SpanData`] into the
//! bytes of one `ExportTraceServiceRequest`.
//!
//! `opentelemetry-proto`'s conversion builds the request as prost structs first: a `String`
//! for every attribute key and string value, a `Vec` for every id, a hash map to group spans
//! by scope, then encodes them and frees it all, on the export thread that shares a core with
//! the requests on a small machine. This writes the same message with no allocation per span
//! (one buffer per batch, one list of span sizes).
//!
//! Invariants:
//! - The bytes decode to what `group_spans_by_resource_and_scope` builds from the same batch
//!   and resource (the tests compare them through prost): one `ResourceSpans`, one
//!   `ScopeSpans` per distinct instrumentation scope in order of first appearance, spans in
//!   batch order within their scope.
//! - Proto3 rules as prost applies them: scalar fields equal to their default are left out,
//!   message fields that the conversion sets (`status`, `scope`, `resource`, an attribute's
//!   value) are always written, oneof members always.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status};
use opentelemetry::{Array, InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanData;

const LEN: u32 = 2;
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const FIXED32: u32 = 5;

/// The resource part of every request, encoded once.
#[derive(Debug, Clone, Default)]
pub(crate) struct EncodedResource {
    /// The `Resource` message's body (its attributes).
    resource: Vec<u8>,
    schema_url: String,
}

impl EncodedResource {
    pub(crate) fn new(resource: &Resource) -> Self {
        let attributes: Vec<KeyValue> = resource.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())).collect();
        let mut out = Vec::new();
        for kv in &attributes {
            message(&mut out, 1, key_value_len(kv), |out| put_key_value(out, kv));
        }
        Self { resource: out, schema_url: resource.schema_url().unwrap_or_default().to_owned() }
    }
}

/// `ExportTraceServiceRequest { resource_spans: [one ResourceSpans] }` for `spans`.
pub(crate) fn encode_request(spans: &[SpanData], resource: &EncodedResource) -> Vec<u8> {
    // Scopes in order of first appearance, and each span's scope.
    let mut scopes: Vec<&InstrumentationScope> = Vec::new();
    let mut scope_of: Vec<usize> = Vec::with_capacity(spans.len());
    let mut sizes: Vec<usize> = Vec::with_capacity(spans.len());
    for span in spans {
        let scope = &span.instrumentation_scope;
        let index = match scopes.last() {
            Some(last) if *last == scope => scopes.len() - 1,
            _ => scopes.iter().position(|known| *known == scope).unwrap_or_else(|| {
                scopes.push(scope);
                scopes.len() - 1
            }),
        };
        scope_of.push(index);
        sizes.push(span_len(span));
    }
    let scope_len = |index: usize| {
        let spans_len: usize =
            sizes.iter().zip(&scope_of).filter(|(_, s)| **s == index).map(|(size, _)| field_len(2, *size)).sum();
        let scope = scopes[index];
        field_len(1, scope_message_len(scope)) + spans_len + string_len(3, scope.schema_url().unwrap_or_default())
    };
    let scope_lens: Vec<usize> = (0..scopes.len()).map(scope_len).collect();
    let resource_spans_len = field_len(1, resource.resource.len())
        + scope_lens.iter().map(|len| field_len(2, *len)).sum::<usize>()
        + string_len(3, &resource.schema_url);
    let mut out = Vec::with_capacity(field_len(1, resource_spans_len));
    message(&mut out, 1, resource_spans_len, |out| {
        message(out, 1, resource.resource.len(), |out| out.extend_from_slice(&resource.resource));
        for (index, scope) in scopes.iter().enumerate() {
            message(out, 2, scope_lens[index], |out| {
                message(out, 1, scope_message_len(scope), |out| put_scope(out, scope));
                for ((span, size), _) in spans.iter().zip(&sizes).zip(&scope_of).filter(|(_, s)| **s == index) {
                    message(out, 2, *size, |out| put_span(out, span));
                }
                put_string(out, 3, scope.schema_url().unwrap_or_default());
            });
        }
        put_string(out, 3, &resource.schema_url);
    });
    out
}

// --- sizes -------------------------------------------------------------------------------

fn varint_len(value: u64) -> usize {
    // 7 bits per byte, at least one byte.
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

fn tag_len(field: u32) -> usize {
    varint_len(u64::from(field << 3))
}

/// A length-delimited field of `len` bytes.
fn field_len(field: u32, len: usize) -> usize {
    tag_len(field) + varint_len(len as u64) + len
}

/// A string (or bytes) field, left out when empty.
fn string_len(field: u32, value: &str) -> usize {
    if value.is_empty() { 0 } else { field_len(field, value.len()) }
}

fn varint_field_len(field: u32, value: u64) -> usize {
    if value == 0 { 0 } else { tag_len(field) + varint_len(value) }
}

fn any_value_len(value: &Value) -> usize {
    match value {
        Value::Bool(_) => 2,
        Value::I64(v) => 1 + varint_len(*v as u64),
        Value::F64(_) => 9,
        Value::String(s) => field_len(1, s.as_str().len()),
        Value::Array(array) => field_len(5, array_len(array)),
        // A kind of value this encoder does not know (the enum is non-exhaustive): written as
        // its string form, as the SDK's Display of it.
        other => field_len(1, other.to_string().len()),
    }
}

fn array_len(array: &Array) -> usize {
    fn items<T>(values: &[T], len: impl Fn(&T) -> usize) -> usize {
        values.iter().map(|v| field_len(1, len(v))).sum()
    }
    match array {
        Array::Bool(values) => items(values, |_| 2),
        Array::I64(values) => items(values, |v| 1 + varint_len(*v as u64)),
        Array::F64(values) => items(values, |_| 9),
        Array::String(values) => items(values, |v| field_len(1, v.as_str().len())),
        other => items(&[other.to_string()], |v| field_len(1, v.len())),
    }
}

fn key_value_len(kv: &KeyValue) -> usize {
    string_len(1, kv.key.as_str()) + field_len(2, any_value_len(&kv.value))
}

fn attributes_len(field: u32, attributes: &[KeyValue]) -> usize {
    attributes.iter().map(|kv| field_len(field, key_value_len(kv))).sum()
}

fn scope_message_len(scope: &InstrumentationScope) -> usize {
    let attributes: usize = scope.attributes().map(|kv| field_len(3, key_value_len(kv))).sum();
    string_len(1, scope.name()) + string_len(2, scope.version().unwrap_or_default()) + attributes
}

fn span_flags(context: &SpanContext, remote: bool) -> u32 {
    // OTLP's SpanFlags: the W3C flags, "has is_remote" (0x100) and "is remote" (0x200).
    u32::from(context.trace_flags().to_u8()) | 0x100 | if remote { 0x200 } else { 0 }
}

fn status_len(status: &Status) -> usize {
    match status {
        Status::Unset => 0,
        Status::Ok => 2,
        Status::Error { description } => string_len(2, description) + 2,
    }
}

fn span_len(span: &SpanData) -> usize {
    let cx = &span.span_context;
    let state = cx.trace_state().header();
    let parent = if span.parent_span_id == SpanId::INVALID { 0 } else { field_len(4, 8) };
    let events: usize = span
        .events
        .iter()
        .map(|event| {
            field_len(
                11,
                fixed64_len(nanos(event.timestamp))
                    + string_len(2, &event.name)
                    + attributes_len(3, &event.attributes)
                    + varint_field_len(4, u64::from(event.dropped_attributes_count)),
            )
        })
        .sum();
    let links: usize = span.links.iter().map(|link| field_len(13, link_len(link))).sum();
    field_len(1, 16)
        + field_len(2, 8)
        + string_len(3, &state)
        + parent
        + tag_len(16)
        + 4
        + string_len(5, &span.name)
        + varint_field_len(6, kind(&span.span_kind))
        + fixed64_len(nanos(span.start_time))
        + fixed64_len(nanos(span.end_time))
        + attributes_len(9, &span.attributes)
        + varint_field_len(10, u64::from(span.dropped_attributes_count))
        + events
        + varint_field_len(12, u64::from(span.events.dropped_count))
        + links
        + varint_field_len(14, u64::from(span.links.dropped_count))
        + field_len(15, status_len(&span.status))
}

fn link_len(link: &opentelemetry::trace::Link) -> usize {
    let cx = &link.span_context;
    field_len(1, 16)
        + field_len(2, 8)
        + string_len(3, &cx.trace_state().header())
        + attributes_len(4, &link.attributes)
        + varint_field_len(5, u64::from(link.dropped_attributes_count))
        + tag_len(6)
        + 4
}

fn fixed64_len(value: u64) -> usize {
    if value == 0 { 0 } else { 9 }
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn kind(kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

// --- writing -----------------------------------------------------------------------------

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_tag(out: &mut Vec<u8>, field: u32, wire: u32) {
    put_varint(out, u64::from((field << 3) | wire));
}

/// A length-delimited field whose body, `len` bytes, `body` writes.
fn message(out: &mut Vec<u8>, field: u32, len: usize, body: impl FnOnce(&mut Vec<u8>)) {
    put_tag(out, field, LEN);
    put_varint(out, len as u64);
    let start = out.len();
    body(out);
    debug_assert_eq!(out.len() - start, len, "field {field}: the size computed differs from the bytes written");
}

fn put_bytes(out: &mut Vec<u8>, field: u32, value: &[u8]) {
    if !value.is_empty() {
        put_tag(out, field, LEN);
        put_varint(out, value.len() as u64);
        out.extend_from_slice(value);
    }
}

fn put_string(out: &mut Vec<u8>, field: u32, value: &str) {
    put_bytes(out, field, value.as_bytes());
}

fn put_varint_field(out: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        put_tag(out, field, VARINT);
        put_varint(out, value);
    }
}

fn put_fixed64(out: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        put_tag(out, field, FIXED64);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

fn put_fixed32(out: &mut Vec<u8>, field: u32, value: u32) {
    put_tag(out, field, FIXED32);
    out.extend_from_slice(&value.to_le_bytes());
}

/// The members of an `AnyValue` (the oneof: always written, whatever the value).
fn put_any_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Bool(v) => {
            put_tag(out, 2, VARINT);
            put_varint(out, u64::from(*v));
        }
        Value::I64(v) => {
            put_tag(out, 3, VARINT);
            put_varint(out, *v as u64);
        }
        Value::F64(v) => {
            put_tag(out, 4, FIXED64);
            out.extend_from_slice(&v.to_bits().to_le_bytes());
        }
        Value::String(s) => message(out, 1, s.as_str().len(), |out| out.extend_from_slice(s.as_str().as_bytes())),
        Value::Array(array) => message(out, 5, array_len(array), |out| put_array(out, array)),
        other => {
            let text = other.to_string();
            message(out, 1, text.len(), |out| out.extend_from_slice(text.as_bytes()));
        }
    }
}

fn put_array(out: &mut Vec<u8>, array: &Array) {
    fn items<T>(out: &mut Vec<u8>, values: &[T], to_value: impl Fn(&T) -> Value) {
        for v in values {
            let value = to_value(v);
            message(out, 1, any_value_len(&value), |out| put_any_value(out, &value));
        }
    }
    match array {
        Array::Bool(values) => items(out, values, |v| Value::Bool(*v)),
        Array::I64(values) => items(out, values, |v| Value::I64(*v)),
        Array::F64(values) => items(out, values, |v| Value::F64(*v)),
        Array::String(values) => items(out, values, |v| Value::String(v.clone())),
        other => items(out, &[other.to_string()], |v| Value::String(v.clone().into())),
    }
}

fn put_key_value(out: &mut Vec<u8>, kv: &KeyValue) {
    put_string(out, 1, kv.key.as_str());
    message(out, 2, any_value_len(&kv.value), |out| put_any_value(out, &kv.value));
}

fn put_attributes(out: &mut Vec<u8>, field: u32, attributes: &[KeyValue]) {
    for kv in attributes {
        message(out, field, key_value_len(kv), |out| put_key_value(out, kv));
    }
}

fn put_scope(out: &mut Vec<u8>, scope: &InstrumentationScope) {
    put_string(out, 1, scope.name());
    put_string(out, 2, scope.version().unwrap_or_default());
    for kv in scope.attributes() {
        message(out, 3, key_value_len(kv), |out| put_key_value(out, kv));
    }
}

fn put_span(out: &mut Vec<u8>, span: &SpanData) {
    let cx = &span.span_context;
    put_bytes(out, 1, &cx.trace_id().to_bytes());
    put_bytes(out, 2, &cx.span_id().to_bytes());
    put_string(out, 3, &cx.trace_state().header());
    if span.parent_span_id != SpanId::INVALID {
        put_bytes(out, 4, &span.parent_span_id.to_bytes());
    }
    put_string(out, 5, &span.name);
    put_varint_field(out, 6, kind(&span.span_kind));
    put_fixed64(out, 7, nanos(span.start_time));
    put_fixed64(out, 8, nanos(span.end_time));
    put_attributes(out, 9, &span.attributes);
    put_varint_field(out, 10, u64::from(span.dropped_attributes_count));
    for event in span.events.iter() {
        let len = fixed64_len(nanos(event.timestamp))
            + string_len(2, &event.name)
            + attributes_len(3, &event.attributes)
            + varint_field_len(4, u64::from(event.dropped_attributes_count));
        message(out, 11, len, |out| {
            put_fixed64(out, 1, nanos(event.timestamp));
            put_string(out, 2, &event.name);
            put_attributes(out, 3, &event.attributes);
            put_varint_field(out, 4, u64::from(event.dropped_attributes_count));
        });
    }
    put_varint_field(out, 12, u64::from(span.events.dropped_count));
    for link in span.links.iter() {
        message(out, 13, link_len(link), |out| {
            let cx = &link.span_context;
            put_bytes(out, 1, &cx.trace_id().to_bytes());
            put_bytes(out, 2, &cx.span_id().to_bytes());
            put_string(out, 3, &cx.trace_state().header());
            put_attributes(out, 4, &link.attributes);
            put_varint_field(out, 5, u64::from(link.dropped_attributes_count));
            put_fixed32(out, 6, span_flags(cx, cx.is_remote()));
        });
    }
    put_varint_field(out, 14, u64::from(span.links.dropped_count));
    message(out, 15, status_len(&span.status), |out| match &span.status {
        Status::Unset => {}
        Status::Ok => put_varint_field(out, 3, 1),
        Status::Error { description } => {
            put_string(out, 2, description);
            put_varint_field(out, 3, 2);
        }
    });
    put_fixed32(out, 16, span_flags(cx, span.parent_span_is_remote));
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::time::Duration;

    use opentelemetry::trace::{Event, Link, SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use prost::Message as _;

    use super::*;

    fn context(trace: u128, span: u64, sampled: bool, remote: bool, state: &str) -> SpanContext {
        let flags = if sampled { TraceFlags::SAMPLED } else { TraceFlags::default() };
        SpanContext::new(
            TraceId::from(trace),
            SpanId::from(span),
            flags,
            remote,
            state.parse::<TraceState>().unwrap_or_default(),
        )
    }

    fn span(name: &'static str, scope: &InstrumentationScope, parent: u64, remote: bool) -> SpanData {
        let start = UNIX_EPOCH + Duration::from_nanos(1_733_300_000_123_456_789);
        let mut events = SpanEvents::default();
        events.events.push(Event::new(
            "exception",
            start + Duration::from_micros(3),
            vec![KeyValue::new("exception.type", "DATABASE_ERROR"), KeyValue::new("exception.message", "")],
            2,
        ));
        events.dropped_count = 1;
        let mut links = SpanLinks::default();
        links.links.push(Link::new(context(9, 8, true, true, "a=b"), vec![KeyValue::new("link.n", 3_i64)], 0));
        SpanData {
            span_context: context(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736, 0x00f0_67aa_0ba9_02b7, true, false, ""),
            parent_span_id: SpanId::from(parent),
            parent_span_is_remote: remote,
            span_kind: SpanKind::Producer,
            name: Cow::Borrowed(name),
            start_time: start,
            end_time: start + Duration::from_micros(250),
            attributes: vec![
                KeyValue::new("messaging.system", "kafka"),
                KeyValue::new("messaging.kafka.offset", -1_i64),
                KeyValue::new("big", i64::MAX),
                KeyValue::new("ratio", 0.25),
                KeyValue::new("flag", false),
                KeyValue::new("empty", ""),
                KeyValue::new("long", "x".repeat(300)),
                KeyValue::new("list", Value::Array(Array::String(vec!["a".into(), "".into()]))),
                KeyValue::new("numbers", Value::Array(Array::I64(vec![0, -7, 1 << 40]))),
                KeyValue::new("bools", Value::Array(Array::Bool(vec![true, false]))),
                KeyValue::new("floats", Value::Array(Array::F64(vec![1.5]))),
            ],
            dropped_attributes_count: 4,
            events,
            links,
            status: if parent == 0 { Status::Unset } else { Status::error("cannot send: queue full") },
            instrumentation_scope: scope.clone(),
        }
    }

    #[test]
    fn a_batch_decodes_to_what_the_official_conversion_builds() {
        let runtime = InstrumentationScope::builder("onex-runtime").build();
        let other = InstrumentationScope::builder("handler")
            .with_version("1.2.3")
            .with_schema_url("https://opentelemetry.io/schemas/1.30.0")
            .with_attributes([KeyValue::new("scope.attr", 5_i64)])
            .build();
        let resource = Resource::builder_empty()
            .with_attributes([KeyValue::new("service.name", "otlp-test"), KeyValue::new("service.version", "0")])
            .with_schema_url([], "https://opentelemetry.io/schemas/1.29.0")
            .build();
        let mut plain = span("plain", &runtime, 0, false);
        plain.events = SpanEvents::default();
        plain.links = SpanLinks::default();
        plain.attributes.clear();
        plain.span_kind = SpanKind::Internal;
        plain.span_context = context(1, 2, false, false, "vendor=value,other=x");
        let batch = vec![
            span("kafka.send", &runtime, 0x1122_3344_5566_7788, true),
            span("handler.work", &other, 0, false),
            plain,
            span("kafka.send", &runtime, 7, false),
        ];
        let ours = ExportTraceServiceRequest::decode(&encode_request(&batch, &EncodedResource::new(&resource))[..])
            .expect("our bytes decode");
        let official = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(batch, &ResourceAttributesWithSchema::from(&resource)),
        };
        assert_eq!(ours, official);
        assert_eq!(ours.resource_spans[0].scope_spans.len(), 2, "one ScopeSpans per scope");
    }

    #[test]
    fn an_empty_batch_is_an_empty_resource_spans() {
        let resource = Resource::builder_empty().build();
        let ours = ExportTraceServiceRequest::decode(&encode_request(&[], &EncodedResource::new(&resource))[..])
            .expect("our bytes decode");
        let official = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(vec![], &ResourceAttributesWithSchema::from(&resource)),
        };
        assert_eq!(ours, official);
    }

    #[test]
    fn varint_lengths_match_the_bytes_written() {
        for value in [0, 1, 127, 128, 16_383, 16_384, u64::from(u32::MAX), u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(out.len(), varint_len(value), "{value}");
        }
    }
}
