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
    #[serde(serialize_with = "rfc3339::serialize")]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

/// The envelope's timestamp, written as chrono's own `Serialize` writes it (RFC 3339, `Z`,
/// the fraction in 0, 3, 6 or 9 digits, whichever is shortest and exact) but formatted into a
/// stack buffer and handed to the serializer in one `serialize_str`: chrono's goes through
/// `collect_str`, which makes one escaped write per character, a large share of an event's
/// encoding.
pub(crate) mod rfc3339 {
    use chrono::{DateTime, Datelike, Timelike, Utc};
    use serde::{Serialize, Serializer};

    /// `YYYY-MM-DDTHH:MM:SS` + `.` + 9 digits + `Z`.
    pub(crate) const MAX_LEN: usize = 30;

    pub(crate) fn serialize<S: Serializer>(timestamp: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; MAX_LEN];
        match format(timestamp, &mut buf) {
            Some(text) => serializer.serialize_str(text),
            // Years outside 0..=9999 take a sign and more digits: chrono writes those.
            None => timestamp.serialize(serializer),
        }
    }

    /// The text chrono's `Serialize` produces, or `None` for a year outside 0..=9999.
    pub(crate) fn format<'b>(timestamp: &DateTime<Utc>, buf: &'b mut [u8; MAX_LEN]) -> Option<&'b str> {
        let naive = timestamp.naive_utc();
        let date = naive.date();
        let year = u32::try_from(date.year()).ok().filter(|y| *y <= 9999)?;
        let time = naive.time();
        let seconds = time.num_seconds_from_midnight();
        let (hour, minute, mut second) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
        let mut nano = time.nanosecond();
        // chrono keeps a leap second as nanoseconds past 1e9, and writes it as second 60.
        if nano >= 1_000_000_000 {
            second += 1;
            nano -= 1_000_000_000;
        }
        let two = |buf: &mut [u8; MAX_LEN], at: usize, value: u32| {
            buf[at] = b'0' + (value / 10) as u8;
            buf[at + 1] = b'0' + (value % 10) as u8;
        };
        two(buf, 0, year / 100);
        two(buf, 2, year % 100);
        buf[4] = b'-';
        two(buf, 5, date.month());
        buf[7] = b'-';
        two(buf, 8, date.day());
        buf[10] = b'T';
        two(buf, 11, hour);
        buf[13] = b':';
        two(buf, 14, minute);
        buf[16] = b':';
        two(buf, 17, second);
        let mut len = 19;
        let (digits, mut fraction) = if nano == 0 {
            (0, 0)
        } else if nano.is_multiple_of(1_000_000) {
            (3, nano / 1_000_000)
        } else if nano.is_multiple_of(1_000) {
            (6, nano / 1_000)
        } else {
            (9, nano)
        };
        if digits > 0 {
            buf[len] = b'.';
            for i in (0..digits).rev() {
                buf[len + 1 + i] = b'0' + (fraction % 10) as u8;
                fraction /= 10;
            }
            len += 1 + digits;
        }
        buf[len] = b'Z';
        len += 1;
        // Only ASCII digits and separators were written.
        std::str::from_utf8(&buf[..len]).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeZone};
    use proptest::prelude::*;

    /// chrono's own serde text of `timestamp`.
    fn chrono_text(timestamp: &DateTime<Utc>) -> String {
        serde_json::to_string(timestamp).unwrap()
    }

    fn our_text(timestamp: &DateTime<Utc>) -> String {
        let mut out = Vec::new();
        rfc3339::serialize(timestamp, &mut serde_json::Serializer::new(&mut out)).unwrap();
        String::from_utf8(out).unwrap()
    }

    proptest! {
        #[test]
        fn timestamps_serialize_exactly_as_chrono_does(
            seconds in -62_135_596_800i64..253_402_300_800i64,
            nanos in 0u32..1_000_000_000,
            precision in 0usize..4,
        ) {
            // Every precision chrono picks: whole seconds, millis, micros, nanos.
            let nanos = match precision {
                0 => 0,
                1 => nanos / 1_000_000 * 1_000_000,
                2 => nanos / 1_000 * 1_000,
                _ => nanos,
            };
            let timestamp = Utc.timestamp_opt(seconds, nanos).unwrap();
            prop_assert_eq!(our_text(&timestamp), chrono_text(&timestamp));
        }
    }

    #[test]
    fn edge_timestamps_serialize_exactly_as_chrono_does() {
        let leap = NaiveDate::from_ymd_opt(2016, 12, 31).unwrap().and_hms_nano_opt(23, 59, 59, 1_500_000_000).unwrap();
        let cases = [
            Utc.timestamp_opt(0, 0).unwrap(),
            Utc.timestamp_opt(0, 1).unwrap(),
            Utc.timestamp_opt(0, 100_000_000).unwrap(),
            Utc.timestamp_opt(0, 999_999_999).unwrap(),
            Utc.timestamp_opt(1_700_000_000, 123_456_000).unwrap(),
            Utc.from_utc_datetime(&leap),
            Utc.from_utc_datetime(&NaiveDate::from_ymd_opt(9999, 12, 31).unwrap().and_hms_opt(23, 59, 59).unwrap()),
            Utc.from_utc_datetime(&NaiveDate::from_ymd_opt(10_000, 1, 1).unwrap().and_hms_opt(0, 0, 0).unwrap()),
            Utc.from_utc_datetime(&NaiveDate::from_ymd_opt(-1, 1, 1).unwrap().and_hms_opt(0, 0, 0).unwrap()),
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
        ];
        for timestamp in cases {
            assert_eq!(our_text(&timestamp), chrono_text(&timestamp), "{timestamp:?}");
        }
    }

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
