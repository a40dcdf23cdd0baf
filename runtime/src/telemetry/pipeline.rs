//! [`Tracing`]: the process's tracer, its sampler and its export queue, built once from a
//! [`TraceConfiguration`] and handed to every service that records spans.
//!
//! There is no global tracer: a service records spans through the `Tracing` it was given
//! (`Tracing::disabled()` records nothing and costs a branch). [`Tracing::install`] also
//! registers the W3C propagator and the tracer provider with OpenTelemetry's globals, so
//! libraries that only know the globals join the same traces.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider, SpanExporter};

use super::export::{ExportStats, MakeExporter, QueueLimits, QueueProcessor};
use super::grpc::OtlpExporter;
use crate::error::OnexError;
use crate::models::tracing::{OtlpProtocol, TraceConfiguration, endpoint_problem, header_problem};

/// How long [`Tracing::shutdown`] may take to flush what was recorded.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The instrumentation scope every runtime span carries.
const SCOPE: &str = "onex-runtime";

/// The process's tracing: cheap to clone, shared by every service that records spans.
///
/// Dropping the last clone shuts it down as [`Tracing::shutdown`] does, which may block for
/// up to [`SHUTDOWN_TIMEOUT`] when the collector hangs; call `shutdown` where blocking is
/// acceptable (outside async code, or in `spawn_blocking`).
#[derive(Clone, Default)]
pub struct Tracing {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    /// The export queue, which the provider's processor feeds too: spans the runtime records
    /// itself (`super::recorded`) go straight to it.
    queue: Arc<QueueProcessor>,
    /// The scope of those spans, the tracer's.
    scope: InstrumentationScope,
    service_name: String,
    service_version: String,
    environment: String,
    /// `environment` as a span attribute value: shared, so each span's copy is a reference.
    environment_value: opentelemetry::StringValue,
    sample_rate: f64,
    /// Where spans go and the names (never the values) of the headers sent there, for status
    /// reports.
    otlp_endpoint: String,
    otlp_header_names: Vec<String>,
    /// Whether the PostgreSQL pool and the Kafka services record spans (see
    /// [`Tracing::for_database`], [`Tracing::for_kafka`]).
    instrument_database: bool,
    instrument_kafka: bool,
}

impl fmt::Debug for Tracing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            None => f.write_str("Tracing(disabled)"),
            Some(inner) => f
                .debug_struct("Tracing")
                .field("service_name", &inner.service_name)
                .field("environment", &inner.environment)
                .field("sample_rate", &inner.sample_rate)
                .field("export", &self.stats())
                .finish(),
        }
    }
}

impl Tracing {
    /// Records nothing.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Tracing as `config` says: OTLP export over gRPC or HTTP/protobuf to its endpoint with its
    /// headers, the service's resource attributes, parent-based sampling at its rate, and the
    /// default [`QueueLimits`]. Registers the W3C trace-context propagator and the provider
    /// with OpenTelemetry's globals. The exporter is built before this returns: a malformed
    /// endpoint or header is a `CONFIGURATION_ERROR` here (an unreachable collector is not:
    /// spans then wait in the queue, and are dropped and counted when it is full).
    pub fn install(config: &TraceConfiguration) -> Result<Self, OnexError> {
        let tracing = Self::with_limits(config, QueueLimits::default())?;
        if let Some(inner) = &tracing.inner {
            opentelemetry::global::set_text_map_propagator(
                opentelemetry_sdk::propagation::TraceContextPropagator::new(),
            );
            opentelemetry::global::set_tracer_provider(inner.provider.clone());
        }
        Ok(tracing)
    }

    /// Tracing as `config` says with explicit queue limits, without touching the globals.
    pub fn with_limits(config: &TraceConfiguration, limits: QueueLimits) -> Result<Self, OnexError> {
        // A configuration built in code (not through `TraceConfiguration::from_env`) is checked
        // as strictly, and the error names the variable the setting stands for.
        check_settings(config)?;
        let exporter = otlp_exporter(config, limits.export_timeout);
        Self::with_exporter(config, exporter, limits)
    }

    /// Tracing that hands finished spans to `make_exporter`'s exporter, which is built on the
    /// export thread; `config` gives the resource and the sample rate.
    pub fn with_exporter<E: SpanExporter + 'static>(
        config: &TraceConfiguration,
        make_exporter: impl FnOnce() -> Result<E, String> + Send + 'static,
        limits: QueueLimits,
    ) -> Result<Self, OnexError> {
        let make: MakeExporter<E> = Box::new(make_exporter);
        let processor = QueueProcessor::start(make, resource(config), limits)
            .map_err(|problem| OnexError::configuration(format!("cannot export spans: {problem}")))?;
        let processor = Arc::new(processor);
        let rate = config.sample_rate.clamp(0.0, 1.0);
        let provider = SdkTracerProvider::builder()
            .with_span_processor(SharedProcessor(Arc::clone(&processor)))
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(rate))))
            .with_resource(resource(config))
            .build();
        let tracer = provider.tracer(SCOPE);
        Ok(Self {
            inner: Some(Arc::new(Inner {
                provider,
                tracer,
                queue: processor,
                scope: InstrumentationScope::builder(SCOPE).build(),
                service_name: config.service_name.clone(),
                service_version: config.service_version.clone(),
                environment: config.environment.clone(),
                environment_value: Arc::<str>::from(config.environment.as_str()).into(),
                sample_rate: rate,
                otlp_endpoint: config.otlp_endpoint.clone(),
                otlp_header_names: config.otlp_headers.keys().cloned().collect(),
                instrument_database: config.instrument_database,
                instrument_kafka: config.instrument_kafka,
            })),
        })
    }

    /// The `Tracing` registered in `container`, or [`Tracing::disabled`].
    pub fn from_container(container: &crate::Container) -> Self {
        container.try_resolve::<Tracing>().map_or_else(Self::disabled, |tracing| (*tracing).clone())
    }

    /// This tracing for the PostgreSQL pool: disabled when the configuration switched database
    /// spans off (`OTEL_ENABLE_DB_INSTRUMENTATION=false`).
    pub fn for_database(&self) -> Self {
        match &self.inner {
            Some(inner) if inner.instrument_database => self.clone(),
            _ => Self::disabled(),
        }
    }

    /// This tracing for the producer pool, the event bus and subscriptions: disabled when the
    /// configuration switched Kafka spans off (`OTEL_ENABLE_KAFKA_INSTRUMENTATION=false`); then
    /// no trace context travels through Kafka either.
    pub fn for_kafka(&self) -> Self {
        match &self.inner {
            Some(inner) if inner.instrument_kafka => self.clone(),
            _ => Self::disabled(),
        }
    }

    /// Whether spans are recorded at all.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The export queue and the scope of the spans the runtime records itself, when enabled.
    pub(crate) fn recorder(&self) -> Option<(&Arc<QueueProcessor>, &InstrumentationScope)> {
        self.inner.as_ref().map(|inner| (&inner.queue, &inner.scope))
    }

    /// The tracer, when enabled.
    pub fn tracer(&self) -> Option<&SdkTracer> {
        self.inner.as_ref().map(|inner| &inner.tracer)
    }

    /// `service.name` of the resource, when enabled.
    pub fn service_name(&self) -> Option<&str> {
        self.inner.as_ref().map(|inner| inner.service_name.as_str())
    }

    /// `service.version` of the resource, when enabled.
    pub fn service_version(&self) -> Option<&str> {
        self.inner.as_ref().map(|inner| inner.service_version.as_str())
    }

    /// The OTLP endpoint of the configuration, when enabled (a tracing built
    /// [`with_exporter`](Self::with_exporter) reports it without sending there).
    pub fn otlp_endpoint(&self) -> Option<&str> {
        self.inner.as_ref().map(|inner| inner.otlp_endpoint.as_str())
    }

    /// The names of the OTLP headers of the configuration; their values are secrets and are not
    /// kept here. Empty when disabled.
    pub fn otlp_header_names(&self) -> &[String] {
        self.inner.as_ref().map_or(&[], |inner| inner.otlp_header_names.as_slice())
    }

    /// `deployment.environment` of the resource, when enabled.
    pub fn environment(&self) -> Option<&str> {
        self.inner.as_ref().map(|inner| inner.environment.as_str())
    }

    /// `deployment.environment` as a span attribute value (empty when disabled): cloning it
    /// shares the text rather than copying it.
    pub fn environment_value(&self) -> opentelemetry::StringValue {
        self.inner.as_ref().map_or_else(|| "".into(), |inner| inner.environment_value.clone())
    }

    /// The sampling ratio applied to root spans, when enabled.
    pub fn sample_rate(&self) -> Option<f64> {
        self.inner.as_ref().map(|inner| inner.sample_rate)
    }

    /// Registers the export queue's series (see [`super::series`]) in `registry`: spans
    /// exported and dropped, the counters of [`Tracing::stats`] read at scrape time. A
    /// disabled tracing registers them too, at 0. A registry holds one tracing's series: a
    /// second call on the same registry is a `CONFIGURATION_ERROR`.
    pub fn with_metrics(self, registry: &crate::metrics::MetricsRegistry) -> Result<Self, OnexError> {
        let counters = self.inner.as_ref().map(|inner| inner.queue.counters());
        super::series::register(registry, counters)?;
        Ok(self)
    }

    /// What the export queue has done; all zero when disabled.
    pub fn stats(&self) -> ExportStats {
        self.inner.as_ref().map(|inner| inner.queue.stats()).unwrap_or_default()
    }

    /// A `tracing` layer that records `tracing` spans as OpenTelemetry spans of this tracer, so
    /// that spans a handler opens with `tracing::info_span!` join the runtime's traces.
    pub fn layer<S>(&self) -> Option<tracing_opentelemetry::OpenTelemetryLayer<S, SdkTracer>>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        self.tracer().map(|tracer| tracing_opentelemetry::layer().with_tracer(tracer.clone()))
    }

    /// Exports everything recorded so far and waits for the collector's answer; an error when any span
    /// ended since the previous flush was dropped (queue full, or its export failed).
    pub fn flush(&self) -> Result<(), OnexError> {
        match &self.inner {
            None => Ok(()),
            Some(inner) => inner.provider.force_flush().map_err(|e| {
                OnexError::new(crate::ErrorCode::IntegrationServiceUnavailable, format!("span flush failed: {e}"))
            }),
        }
    }

    /// Exports what was recorded, within [`SHUTDOWN_TIMEOUT`], and stops: spans ended after
    /// this are not exported. A second call is a no-op.
    pub fn shutdown(&self) -> Result<(), OnexError> {
        self.shutdown_within(SHUTDOWN_TIMEOUT)
    }

    /// [`Tracing::shutdown`] with another bound (tests use short ones).
    pub(crate) fn shutdown_within(&self, timeout: Duration) -> Result<(), OnexError> {
        let Some(inner) = &self.inner else { return Ok(()) };
        match inner.provider.shutdown_with_timeout(timeout) {
            Ok(()) | Err(opentelemetry_sdk::error::OTelSdkError::AlreadyShutdown) => Ok(()),
            Err(e) => Err(OnexError::new(
                crate::ErrorCode::IntegrationServiceUnavailable,
                format!("span export did not finish within {timeout:?}: {e}"),
            )),
        }
    }
}

/// Lets the provider own the processor while [`Tracing::stats`] reads its counters.
#[derive(Debug)]
struct SharedProcessor(Arc<QueueProcessor>);

impl opentelemetry_sdk::trace::SpanProcessor for SharedProcessor {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &opentelemetry::Context) {
        self.0.on_start(span, cx);
    }
    fn on_end(&self, span: opentelemetry_sdk::trace::SpanData) {
        self.0.on_end(span);
    }
    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    // `set_resource` is left as the no-op default: the exporter got the same resource when the
    // queue started (see `QueueProcessor::start`).
}

/// The resource of every span: `service.name`, `service.version`, `deployment.environment`
/// (and its current name, `deployment.environment.name`).
fn resource(config: &TraceConfiguration) -> Resource {
    Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", config.service_name.clone()),
            KeyValue::new("service.version", config.service_version.clone()),
            KeyValue::new("deployment.environment", config.environment.clone()),
            KeyValue::new("deployment.environment.name", config.environment.clone()),
        ])
        .build()
}

/// The OTLP exporter `config` names, built later on the export thread.
fn otlp_exporter(
    config: &TraceConfiguration,
    timeout: Duration,
) -> impl FnOnce() -> Result<OtlpExporter, String> + Send + 'static {
    let endpoint = config.otlp_endpoint.clone();
    let protocol = config.otlp_protocol;
    let headers: Vec<(String, String)> =
        config.otlp_headers.iter().map(|(k, v)| (k.clone(), v.expose().clone())).collect();
    move || {
        let built = match protocol {
            OtlpProtocol::Grpc => {
                let mut metadata = tonic::metadata::MetadataMap::new();
                for (key, value) in &headers {
                    let key = tonic::metadata::MetadataKey::from_bytes(key.to_ascii_lowercase().as_bytes())
                        .map_err(|_| format!("OTEL_EXPORTER_OTLP_HEADERS: '{key}' is not a valid header name"))?;
                    let value = value.parse().map_err(|_| {
                        format!("OTEL_EXPORTER_OTLP_HEADERS: the value of '{key}' is not a valid header value")
                    })?;
                    metadata.insert(key, value);
                }
                return super::grpc::GrpcExporter::new(&endpoint, metadata, timeout)
                    .map(OtlpExporter::Grpc)
                    .map_err(|problem| format!("OTEL_EXPORTER_OTLP_ENDPOINT {problem}"));
            }
            OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(http_traces_url(&endpoint))
                .with_timeout(timeout)
                .with_headers(headers.iter().cloned().collect())
                .build()
                .map(OtlpExporter::Http),
        };
        // The exporter's error may repeat the endpoint, never a header value.
        built.map_err(|e| format!("OTEL_EXPORTER_OTLP_ENDPOINT: the OTLP exporter cannot be built: {e}"))
    }
}

fn setting_error(variable: &str, problem: impl fmt::Display) -> OnexError {
    OnexError::configuration(format!("environment variable {variable} {problem}")).with_detail("variable", variable)
}

/// The endpoint and headers by the rules every tracing setting follows (see
/// `TraceConfiguration::validate`), with errors naming the variables they stand for, plus
/// what this build cannot do: export over TLS (no TLS feature is compiled into the gRPC
/// client or the HTTP exporter, so every export to https would fail; refused here, saying why).
fn check_settings(config: &TraceConfiguration) -> Result<(), OnexError> {
    const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
    if let Some(problem) = endpoint_problem(&config.otlp_endpoint) {
        return Err(setting_error(ENDPOINT, problem));
    }
    if config.otlp_endpoint.starts_with("https://") {
        return Err(setting_error(
            ENDPOINT,
            "uses https, but this build exports spans without TLS; use http:// (a collector on this host \
             or its network), or build the OTLP exporter with a TLS feature",
        ));
    }
    for (name, value) in &config.otlp_headers {
        if let Some(problem) = header_problem(name, value.expose()) {
            return Err(setting_error("OTEL_EXPORTER_OTLP_HEADERS", problem));
        }
    }
    Ok(())
}

/// OTLP/HTTP sends traces to `<endpoint>/v1/traces` when the endpoint names no signal path.
fn http_traces_url(endpoint: &str) -> String {
    if endpoint.trim_end_matches('/').ends_with("/v1/traces") {
        endpoint.to_owned()
    } else {
        format!("{}/v1/traces", endpoint.trim_end_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::capture::SpanCapture;

    fn tracing(instrument_database: bool, instrument_kafka: bool) -> Tracing {
        let config = TraceConfiguration {
            otlp_endpoint: "http://127.0.0.1:4317".into(),
            otlp_protocol: OtlpProtocol::Grpc,
            otlp_headers: Default::default(),
            sample_rate: 1.0,
            service_name: "switch-test".into(),
            service_version: "0".into(),
            environment: "test".into(),
            instrument_database,
            instrument_kafka,
        };
        let capture = SpanCapture::new();
        Tracing::with_exporter(&config, move || Ok(capture), QueueLimits::default()).unwrap()
    }

    #[test]
    fn database_and_kafka_services_get_no_tracing_when_their_spans_are_switched_off() {
        let on = tracing(true, true);
        assert!(on.for_database().is_enabled() && on.for_kafka().is_enabled());
        let no_database = tracing(false, true);
        assert!(!no_database.for_database().is_enabled() && no_database.for_kafka().is_enabled());
        let no_kafka = tracing(true, false);
        assert!(no_kafka.for_database().is_enabled() && !no_kafka.for_kafka().is_enabled());
        assert!(!Tracing::disabled().for_database().is_enabled());
        // The node spans stay on either way.
        assert!(no_database.is_enabled() && no_kafka.is_enabled());
    }
}
