//! OTLP/gRPC span export: the request encoded by `super::otlp`, sent with tonic's generic
//! client to the trace service's `Export` method.
//!
//! `opentelemetry-otlp`'s gRPC exporter deep-copies every batch before sending it, to be able
//! to retry; with the export queue in front (`super::export`), a failed batch is counted and
//! the next one is sent, so the copy buys nothing. Callgrind put it near a fifth of the
//! ~14,000 instructions an exported span cost, on a machine where the export thread shares a
//! core with the requests; most of the rest was `opentelemetry-proto`'s conversion into prost
//! structs, which `super::otlp` replaces. This exporter encodes the batch it owns and sends it
//! once, with the configured headers as metadata and the export timeout as the gRPC deadline.

use std::time::Duration;

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;

use super::otlp::{EncodedResource, encode_request};

/// The OTLP trace service's one method.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Sends spans to an OTLP/gRPC collector.
#[derive(Debug)]
pub(crate) struct GrpcExporter {
    client: tonic::client::Grpc<Channel>,
    metadata: MetadataMap,
    resource: EncodedResource,
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
            client: tonic::client::Grpc::new(channel),
            metadata,
            resource: EncodedResource::new(&Resource::builder_empty().build()),
            timeout,
        })
    }
}

impl SpanExporter for GrpcExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        // Encoded here, on the export thread, straight from the spans (see `super::otlp`).
        let body = encode_request(&batch, &self.resource);
        drop(batch);
        let mut request = tonic::Request::new(body);
        *request.metadata_mut() = self.metadata.clone();
        request.set_timeout(self.timeout);
        let mut client = self.client.clone();
        // The status message may echo request metadata (credentials): only its code is kept.
        let answered = |status: tonic::Status| {
            OTelSdkError::InternalFailure(format!("the collector answered {:?}", status.code()))
        };
        client.ready().await.map_err(|e| answered(tonic::Status::from_error(e.into())))?;
        client
            .unary(request, tonic::codegen::http::uri::PathAndQuery::from_static(EXPORT_PATH), Encoded)
            .await
            .map(drop)
            .map_err(answered)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = EncodedResource::new(resource);
    }
}

/// A codec for a request already encoded; the answer (`ExportTraceServiceResponse`, whose
/// partial-success details nothing here reads) is skipped.
#[derive(Debug, Clone, Copy, Default)]
struct Encoded;

impl Codec for Encoded {
    type Encode = Vec<u8>;
    type Decode = ();
    type Encoder = Encoded;
    type Decoder = Encoded;

    fn encoder(&mut self) -> Self::Encoder {
        Encoded
    }

    fn decoder(&mut self) -> Self::Decoder {
        Encoded
    }
}

impl Encoder for Encoded {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        use bytes::BufMut as _;
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Encoded {
    type Item = ();
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, Self::Error> {
        use bytes::Buf as _;
        src.advance(src.remaining());
        Ok(Some(()))
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
