//! Span ids, and the sampling decision of a root span, made before any span is started.
//!
//! Invariant: the decision for a root span is the SDK's `TraceIdRatioBased` decision on the
//! trace id drawn for it ([`root_is_sampled`] is the same formula, and the provider's sampler,
//! which decides the spans of [`crate::telemetry::Tracing::layer`], is that sampler), so a
//! trace is sampled or not by its id whichever path started it.

use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{IdGenerator as _, RandomIdGenerator};

/// A random trace id (never the invalid all-zero one).
pub(crate) fn new_trace_id() -> TraceId {
    RandomIdGenerator::default().new_trace_id()
}

/// A random span id.
pub(crate) fn new_span_id() -> SpanId {
    RandomIdGenerator::default().new_span_id()
}

/// Whether a root span of `trace_id` is sampled at `rate`: the SDK's `TraceIdRatioBased`
/// rule (the trace id's low 63 bits below `rate` × 2^63).
pub(crate) fn root_is_sampled(rate: f64, trace_id: TraceId) -> bool {
    if rate >= 1.0 {
        return true;
    }
    let bound = (rate.max(0.0) * (1u64 << 63) as f64) as u64;
    let bytes = trace_id.to_bytes();
    let mut low = [0u8; 8];
    low.copy_from_slice(&bytes[8..]);
    (u64::from_be_bytes(low) >> 1) < bound
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_decision_samples_about_the_rate_and_all_at_one() {
        let sampled = (0..20_000).filter(|_| root_is_sampled(0.1, new_trace_id())).count();
        assert!((1_500..2_500).contains(&sampled), "{sampled} of 20,000 sampled at 0.1");
        assert!((0..1_000).all(|_| root_is_sampled(1.0, new_trace_id())));
        assert!((0..1_000).all(|_| !root_is_sampled(0.0, new_trace_id())));
    }
}
