//! Telemetry: what the runtime shows of its work in traces.
//!
//! - [`Tracing`] ([`pipeline`]): the process's tracer, built once from a
//!   [`TraceConfiguration`](crate::models::tracing::TraceConfiguration): OTLP export over gRPC
//!   or HTTP/protobuf, parent-based sampling, a bounded export queue that drops and counts
//!   rather than blocks ([`export`]), shutdown that flushes within 5 s.
//! - [`Span`] ([`span`]): a span of the runtime's own work (a node operation, a statement, a
//!   message sent or consumed), recorded only when sampled.
//!   The sampler decides before anything is built: a span it drops is only ids (`ids`); a
//!   span it keeps is the runtime's own record of what is exported (`recorded`), not an SDK
//!   span, handed to the export queue when it ends. Exported spans are encoded to
//!   OTLP/protobuf on the export thread without intermediate structs (`otlp`) and sent over
//!   gRPC (`grpc`).
//! - [`carrier`]: trace context in Kafka headers and in the event envelope.
//! - [`sql`]: SQL statements as a span shows them, literals replaced by `?`.
//! - [`capture`]: an in-memory exporter for tests.
//! - [`series`]: the export queue's counters as Prometheus series
//!   ([`Tracing::with_metrics`]).
//!
//! Work runs "in" a span by carrying an OpenTelemetry context with it ([`in_span`]); spans
//! started inside (by the PostgreSQL pool, the producer, `tracing` macros in a handler)
//! become its children.

pub mod capture;
pub mod carrier;
pub mod export;
mod grpc;
mod ids;
pub(crate) mod operation;
mod otlp;
pub mod pipeline;
pub(crate) mod recorded;
pub mod series;
pub mod span;
pub mod sql;

pub use export::{ExportStats, QueueLimits};
pub use opentelemetry::Context as OtelContext;
pub use opentelemetry::KeyValue;
pub use opentelemetry::trace::SpanKind;
pub use pipeline::{SHUTDOWN_TIMEOUT, Tracing};
pub use span::Span;

/// The correlation id of the request an OpenTelemetry context belongs to, kept in the context
/// (`cx.with_value(CorrelationId(id))`) so that spans started deeper down (a statement, a
/// message) can name the request without every API taking it as a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CorrelationId(pub uuid::Uuid);

impl CorrelationId {
    /// The correlation id of the work running on this thread: that of the node operation it
    /// belongs to (see [`crate::node::dispatch`]), else the one in the current OpenTelemetry
    /// context, if any.
    pub fn current() -> Option<uuid::Uuid> {
        operation::correlation_id()
    }
}

/// A correlation id as a span attribute value, as `to_string` writes it (lowercase,
/// hyphenated) but without the formatting machinery, which cost a few hundred instructions a
/// span (callgrind). Its clones share the text (a reference count), so the spans of one
/// operation can all show it for one allocation.
pub fn correlation_value(id: uuid::Uuid) -> opentelemetry::StringValue {
    let mut text = uuid::Uuid::encode_buffer();
    let text: &str = id.hyphenated().encode_lower(&mut text);
    std::sync::Arc::<str>::from(text).into()
}

/// Runs `work` with `cx` as the current OpenTelemetry context on every poll, so spans it
/// starts are children of the span in `cx`.
pub fn in_span<F: std::future::Future>(cx: OtelContext, work: F) -> opentelemetry::context::WithContext<F> {
    use opentelemetry::context::FutureExt as _;
    work.with_context(cx)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_correlation_value_is_the_ids_text() {
        let id = uuid::Uuid::new_v4();
        assert_eq!(super::correlation_value(id).as_str(), id.to_string());
    }
}
