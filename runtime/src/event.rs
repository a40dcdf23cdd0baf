//! The ONEX event envelope (`ModelOnexEvent`), as published on the event bus.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An event: what happened, to whom it correlates, and its payload.
///
/// The payload is a `serde_json::Value` unless named otherwise: a service that forwards JSON
/// it does not look into uses `OnexEvent<&RawValue>` (or `Box<RawValue>`) and keeps the
/// payload as the text it came as, with the same wire form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnexEvent<P = serde_json::Value> {
    /// Unique id of this event.
    pub event_id: Uuid,
    /// Dotted type, e.g. `postgres.query.completed`; picks the topic.
    pub event_type: String,
    /// The request this event belongs to; also the Kafka key.
    pub correlation_id: Uuid,
    /// When the event was created.
    #[serde(with = "crate::rfc3339")]
    pub timestamp: DateTime<Utc>,
    /// The node or service that emitted it.
    pub source: String,
    /// Event-specific data.
    #[serde(default)]
    pub payload: P,
    /// Tracing and routing metadata.
    #[serde(default)]
    pub metadata: EventMetadata,
}

/// Metadata carried beside the payload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// The W3C carrier (`traceparent`, `tracestate`) of the span that emitted the event.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub trace_context: BTreeMap<String, String>,
    /// When the trace context was attached.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::rfc3339::option")]
    pub trace_timestamp: Option<DateTime<Utc>>,
    /// Service that attached the trace context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_service: Option<String>,
    /// Environment of that service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_environment: Option<String>,
    /// Anything else, kept verbatim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl OnexEvent {
    /// A new event of `event_type` from `source`, correlated to `correlation_id`.
    pub fn new(
        event_type: impl Into<String>,
        source: impl Into<String>,
        correlation_id: Uuid,
        payload: serde_json::Value,
    ) -> Self {
        Self {
            event_id: Uuid::new_v4(),
            event_type: event_type.into(),
            correlation_id,
            timestamp: Utc::now(),
            source: source.into(),
            payload,
            metadata: EventMetadata::default(),
        }
    }
}

impl<P> OnexEvent<P> {
    /// The same event carrying `payload` instead.
    pub fn with_payload<Q>(self, payload: Q) -> OnexEvent<Q> {
        let Self { event_id, event_type, correlation_id, timestamp, source, payload: _, metadata } = self;
        OnexEvent { event_id, event_type, correlation_id, timestamp, source, payload, metadata }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_with_trace_context() {
        let mut event =
            OnexEvent::new("postgres.query.completed", "node_x", Uuid::new_v4(), serde_json::json!({"rows": 3}));
        event
            .metadata
            .trace_context
            .insert("traceparent".into(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
        event.metadata.extra.insert("tenant".into(), serde_json::json!("omnibase"));
        let json = serde_json::to_string(&event).unwrap();
        let back: OnexEvent = serde_json::from_str(&json).unwrap();
        assert_eq!(back, event);
        assert!(json.contains("\"trace_context\""));
    }
}
