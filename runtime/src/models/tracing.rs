//! Distributed-tracing shared models.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Span kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpanKind {
    /// In-process work.
    Internal,
    /// A call to a server (database).
    Client,
    /// Serving a call.
    Server,
    /// Sending a message.
    Producer,
    /// Receiving a message.
    Consumer,
}

/// Tracing settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceConfiguration {
    /// OTLP endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub otlp_endpoint: String,
    /// Headers sent to it (`OTEL_EXPORTER_OTLP_HEADERS`, "k=v,…"); values may be secrets.
    #[serde(default)]
    pub otlp_headers: BTreeMap<String, crate::sensitive::Sensitive<String>>,
    /// Sampling ratio in [0, 1].
    pub sample_rate: f64,
    /// `service.name`.
    pub service_name: String,
    /// `service.version`.
    pub service_version: String,
    /// `deployment.environment`.
    pub environment: String,
}
