//! OTLP/gRPC span export over the tonic client generated from the official protobuf
//! definitions (`opentelemetry-proto`).
//!
//! `opentelemetry-otlp`'s gRPC exporter deep-copies every batch before sending it, to be able
//! to retry; with the export queue in front (`super::export`), a failed batch is counted and
//! the next one is sent, so the copy buys nothing. Callgrind put it near a fifth of the
//! ~14,000 instructions an exported span cost, on a machine where the export thread shares a
//! core with the requests. This exporter converts the batch it owns and sends it once, with
//! the configured headers as metadata and the export timeout as the gRPC deadline.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;

/// Sends spans to an OTLP/gRPC collector.
#[derive(Debug)]
pub(crate) struct GrpcExporter {
    client: TraceServiceClient<Channel>,
    metadata: MetadataMap,
    resource: ResourceAttributesWithSchema,
    timeout: Duration,
}

impl GrpcExporter {
    /// An exporter to `endpoint` (`http://host:port`); connects on the first export. Must be
    /// called inside a tokio runtime (the channel's connector is spawned there).
    pub(crate) fn new(endpoint: &str, metadata: MetadataMap, timeout: Duration) -> Result<Self, String> {
        let channel = Channel::from_shared(endpoint.to_owned())
            .map_err(|e| format!("is not a gRPC endpoint: {e}"))?
            .timeout(timeout)
            .connect_timeout(timeout)
            .connect_lazy();
        Ok(Self {
            client: TraceServiceClient::new(channel),
            metadata,
            resource: ResourceAttributesWithSchema::from(&Resource::builder_empty().build()),
            timeout,
        })
    }
}

impl SpanExporter for GrpcExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let resource_spans = group_spans_by_resource_and_scope(batch, &self.resource);
        let mut request = tonic::Request::new(ExportTraceServiceRequest { resource_spans });
        *request.metadata_mut() = self.metadata.clone();
        request.set_timeout(self.timeout);
        // The status message may echo request metadata (credentials): only its code is kept.
        self.client
            .clone()
            .export(request)
            .await
            .map(drop)
            .map_err(|status| OTelSdkError::InternalFailure(format!("the collector answered {:?}", status.code())))
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = resource.into();
    }
}

/// The exporter a configuration names: ours for gRPC, `opentelemetry-otlp`'s for HTTP.
#[derive(Debug)]
pub(crate) enum OtlpExporter {
    Grpc(GrpcExporter),
    Http(opentelemetry_otlp::SpanExporter),
}

impl SpanExporter for OtlpExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        match self {
            Self::Grpc(exporter) => exporter.export(batch).await,
            Self::Http(exporter) => exporter.export(batch).await,
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        match self {
            Self::Grpc(_) => Ok(()),
            Self::Http(exporter) => exporter.shutdown_with_timeout(timeout),
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        match self {
            Self::Grpc(exporter) => exporter.set_resource(resource),
            Self::Http(exporter) => exporter.set_resource(resource),
        }
    }
}
