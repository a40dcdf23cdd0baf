//! The span export queue's Prometheus series, registered by
//! [`Tracing::with_metrics`](super::Tracing::with_metrics).
//!
//! - `onex_tracing_spans_exported_total`: spans the exporter accepted.
//! - `onex_tracing_spans_dropped_total`: recorded spans that will never reach the collector:
//!   the queue was full, or their export failed or timed out
//!   ([`ExportStats::dropped`](super::ExportStats::dropped)).
//!
//! Invariants: both are the queue's own counters read at scrape time; ending a span costs
//! nothing more. A disabled [`Tracing`](super::Tracing) exports and drops nothing: both
//! stay 0. The counters outlive the queue, so after shutdown the last figures remain.

use std::fmt;
use std::sync::Arc;

use super::export::Counters;
use crate::error::OnexError;
use crate::metrics::{Collector, ConstCounter, DescriptorEncoder, EncodeMetric, MetricType, MetricsRegistry};

/// Spans exported (a counter: the exposition adds `_total`).
pub const SPANS_EXPORTED: &str = "onex_tracing_spans_exported";
/// Spans dropped.
pub const SPANS_DROPPED: &str = "onex_tracing_spans_dropped";

/// Every family of the export queue.
pub const FAMILIES: [&str; 2] = [SPANS_EXPORTED, SPANS_DROPPED];

/// Registers the families in `registry`, reading `counters` (`None`: tracing is disabled);
/// fails (registering none) when the registry already has them.
pub(crate) fn register(registry: &MetricsRegistry, counters: Option<Arc<Counters>>) -> Result<(), OnexError> {
    registry
        .register_collector(&FAMILIES, ExportCollector { counters })
        .map_err(|e| crate::metrics::refused("the span export queue", "tracing", &e))
}

struct ExportCollector {
    counters: Option<Arc<Counters>>,
}

impl fmt::Debug for ExportCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExportCollector").field("enabled", &self.counters.is_some()).finish()
    }
}

impl Collector for ExportCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let (exported, dropped) = self.counters.as_ref().map_or((0, 0), |c| (c.exported(), c.dropped()));
        ConstCounter::new(exported).encode(encoder.encode_descriptor(
            SPANS_EXPORTED,
            "Spans the trace exporter accepted.",
            None,
            MetricType::Counter,
        )?)?;
        ConstCounter::new(dropped).encode(encoder.encode_descriptor(
            SPANS_DROPPED,
            "Recorded spans that will never reach the collector (export queue full, export failed or timed out).",
            None,
            MetricType::Counter,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::Context;
    use opentelemetry::trace::SpanKind;
    use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
    use opentelemetry_sdk::trace::{SpanData, SpanExporter};

    use super::*;
    use crate::error::ErrorCode;
    use crate::telemetry::capture::SpanCapture;
    use crate::telemetry::{QueueLimits, Tracing};

    /// Refuses every batch, as a collector that answers with an error does.
    #[derive(Debug)]
    struct Refuses;

    impl SpanExporter for Refuses {
        async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
            Err(OTelSdkError::InternalFailure("collector said no".into()))
        }
    }

    fn end_spans(tracing: &Tracing, n: usize) {
        for _ in 0..n {
            tracing.span_in("work", SpanKind::Internal, &Context::new()).end();
        }
    }

    fn counts(registry: &MetricsRegistry) -> (String, String) {
        let text = registry.encode().unwrap();
        let find = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}_total{{environment=\"test\"}} ")).map(str::to_owned))
                .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        };
        (find(SPANS_EXPORTED), find(SPANS_DROPPED))
    }

    #[test]
    fn exported_spans_are_counted_at_the_scrape() {
        let registry = MetricsRegistry::new("test");
        let tracing = SpanCapture::new().tracing("series-test").unwrap().with_metrics(&registry).unwrap();
        end_spans(&tracing, 5);
        tracing.flush().unwrap();
        assert_eq!(counts(&registry), ("5".to_owned(), "0".to_owned()));
        let text = registry.encode().unwrap();
        assert!(text.contains("# TYPE onex_tracing_spans_dropped counter"), "{text}");
        tracing.shutdown().unwrap();
        end_spans(&tracing, 2);
        assert_eq!(counts(&registry), ("5".to_owned(), "0".to_owned()), "figures stay after shutdown");
    }

    #[test]
    fn spans_whose_export_failed_are_counted_as_dropped() {
        let registry = MetricsRegistry::new("test");
        let config = crate::models::tracing::TraceConfiguration {
            otlp_endpoint: "http://127.0.0.1:4317".into(),
            otlp_protocol: crate::models::tracing::OtlpProtocol::Grpc,
            otlp_headers: Default::default(),
            sample_rate: 1.0,
            service_name: "series-test".into(),
            service_version: "0".into(),
            environment: "test".into(),
            instrument_database: true,
            instrument_kafka: true,
        };
        let tracing = Tracing::with_exporter(&config, || Ok(Refuses), QueueLimits::default())
            .unwrap()
            .with_metrics(&registry)
            .unwrap();
        end_spans(&tracing, 3);
        assert!(tracing.flush().is_err());
        assert_eq!(counts(&registry), ("0".to_owned(), "3".to_owned()));
        assert_eq!(tracing.stats().dropped(), 3);
        tracing.shutdown().unwrap();
    }

    #[test]
    fn disabled_tracing_shows_zeros_and_registers_once() {
        let registry = MetricsRegistry::new("test");
        let tracing = Tracing::disabled().with_metrics(&registry).unwrap();
        assert_eq!(counts(&registry), ("0".to_owned(), "0".to_owned()));
        let err = tracing.with_metrics(&registry).unwrap_err();
        assert_eq!(err.code(), ErrorCode::ConfigurationError);
        assert!(err.message().contains("'onex_tracing_spans_exported'"), "{err}");
    }
}
