//! Span ids, and the sampling decision of a root span made before the SDK sees it.
//!
//! Invariants:
//! - The decision for a root span is the SDK's `TraceIdRatioBased` decision on the trace id
//!   drawn for it ([`root_is_sampled`] is the same formula), so a trace is sampled or not by
//!   its id whichever path started it.
//! - When [`crate::telemetry::Tracing`] has drawn a root trace id and decided to record the
//!   span, the SDK must build the span with that very id (it draws its own otherwise, and would
//!   sample again, at the square of the rate): [`PresetIds`] hands the SDK the id parked on
//!   this thread by [`with_preset_trace_id`], once, and random ids otherwise. The slot is
//!   emptied after every build, so a parked id never reaches another span.

use std::cell::Cell;

use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};

thread_local! {
    /// The trace id the next root span built on this thread must carry.
    static PRESET: Cell<Option<TraceId>> = const { Cell::new(None) };
}

/// The SDK's random ids, except a trace id parked by [`with_preset_trace_id`].
#[derive(Debug, Default)]
pub(crate) struct PresetIds(RandomIdGenerator);

impl IdGenerator for PresetIds {
    fn new_trace_id(&self) -> TraceId {
        PRESET.with(Cell::take).unwrap_or_else(|| self.0.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        self.0.new_span_id()
    }
}

/// A random trace id (never the invalid all-zero one).
pub(crate) fn new_trace_id() -> TraceId {
    RandomIdGenerator::default().new_trace_id()
}

/// A random span id.
pub(crate) fn new_span_id() -> SpanId {
    RandomIdGenerator::default().new_span_id()
}

/// Runs `build` with `trace_id` as the trace id the SDK's next root span on this thread takes.
pub(crate) fn with_preset_trace_id<T>(trace_id: TraceId, build: impl FnOnce() -> T) -> T {
    PRESET.with(|slot| slot.set(Some(trace_id)));
    let built = build();
    // The SDK did not take it when it started no span (a provider that is shut down).
    PRESET.with(|slot| slot.set(None));
    built
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
    fn a_parked_trace_id_goes_to_one_span_only() {
        let ids = PresetIds::default();
        let parked = TraceId::from(0x1234_u128);
        let taken = with_preset_trace_id(parked, || ids.new_trace_id());
        assert_eq!(taken, parked);
        assert_ne!(ids.new_trace_id(), parked, "the parked id was handed out twice");
        // Not taken inside: gone afterwards all the same.
        with_preset_trace_id(parked, || ());
        assert_ne!(ids.new_trace_id(), parked, "an id parked for a span never built leaked to the next");
    }

    #[test]
    fn the_root_decision_samples_about_the_rate_and_all_at_one() {
        let sampled = (0..20_000).filter(|_| root_is_sampled(0.1, new_trace_id())).count();
        assert!((1_500..2_500).contains(&sampled), "{sampled} of 20,000 sampled at 0.1");
        assert!((0..1_000).all(|_| root_is_sampled(1.0, new_trace_id())));
        assert!((0..1_000).all(|_| !root_is_sampled(0.0, new_trace_id())));
    }
}
