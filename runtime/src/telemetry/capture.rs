//! [`SpanCapture`]: an exporter that keeps finished spans in memory, so tests (the runtime's
//! and a service's) can read what was recorded without a collector.
//!
//! Spans arrive through the same export queue as with OTLP, so read them after
//! [`Tracing::flush`].

use std::sync::{Arc, Mutex};

use opentelemetry::trace::{SpanId, SpanKind};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

use super::{QueueLimits, Tracing};
use crate::error::OnexError;
use crate::models::tracing::{OtlpProtocol, TraceConfiguration};

/// Finished spans, shared between the exporter and the test that reads them.
#[derive(Debug, Clone, Default)]
pub struct SpanCapture {
    spans: Arc<Mutex<Vec<SpanData>>>,
}

impl SpanExporter for SpanCapture {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.spans.lock().unwrap_or_else(|p| p.into_inner()).extend(batch);
        Ok(())
    }
}

impl SpanCapture {
    /// An empty capture.
    pub fn new() -> Self {
        Self::default()
    }

    /// Tracing of service `service_name` (environment `test`) that samples every trace and
    /// exports into this capture.
    pub fn tracing(&self, service_name: &str) -> Result<Tracing, OnexError> {
        let config = TraceConfiguration {
            otlp_endpoint: "http://127.0.0.1:4317".into(),
            otlp_protocol: OtlpProtocol::Grpc,
            otlp_headers: Default::default(),
            sample_rate: 1.0,
            service_name: service_name.into(),
            service_version: "0.0.0-test".into(),
            environment: "test".into(),
            instrument_database: true,
            instrument_kafka: true,
        };
        let exporter = self.clone();
        Tracing::with_exporter(&config, move || Ok(exporter), QueueLimits::default())
    }

    /// Every span exported so far, in the order they ended.
    pub fn spans(&self) -> Vec<SpanData> {
        self.spans.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The spans named `name`.
    pub fn named(&self, name: &str) -> Vec<SpanData> {
        self.spans().into_iter().filter(|span| span.name == name).collect()
    }

    /// The spans of kind `kind`.
    pub fn of_kind(&self, kind: SpanKind) -> Vec<SpanData> {
        self.spans().into_iter().filter(|span| span.span_kind == kind).collect()
    }

    /// The span whose id is `id`, if exported.
    pub fn by_id(&self, id: SpanId) -> Option<SpanData> {
        self.spans().into_iter().find(|span| span.span_context.span_id() == id)
    }

    /// For each span named `name`: how many attributes it has, and how many its attribute
    /// vector has room for. The spans are exported as they were recorded, so room beyond the
    /// attributes a span was started with shows that the vector grew while it was recorded.
    pub fn attribute_room(&self, name: &str) -> Vec<(usize, usize)> {
        let spans = self.spans.lock().unwrap_or_else(|p| p.into_inner());
        spans
            .iter()
            .filter(|span| span.name == name)
            .map(|span| (span.attributes.len(), span.attributes.capacity()))
            .collect()
    }

    /// Forgets what was captured.
    pub fn clear(&self) {
        self.spans.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// The value of attribute `key` of `span`, as text (`None` when absent).
pub fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.as_str().into_owned())
}
