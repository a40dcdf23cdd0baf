//! The wire form of requests and answers.
//!
//! A request is an ONEX event envelope whose `payload` is the node's input model. Its
//! `correlation_id` comes back on the answer (and is the Kafka key both ways, which keeps one
//! correlation's requests in order); its trace context is taken from the `traceparent` header,
//! or from the envelope's `metadata.trace_context` when the headers carry none; an optional
//! `metadata.deadline` (RFC 3339) bounds the run, measured against this host's clock.
//!
//! An answer is an envelope of type `{node}.completed` whose payload is the node's output, or
//! `{node}.failed` whose payload is `{"error_code", "message", "details", "attempts"}`. Both
//! carry the request's correlation id and trace context, and `metadata.request_event_id`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use onex_runtime::event::OnexEvent;
use onex_runtime::{Context, ErrorCode, OnexError, TraceContext};
use serde::Deserialize;
use serde_json::value::RawValue;
use uuid::Uuid;

/// An answer: the payload is JSON text, written by the node or by the host.
pub type Answer = OnexEvent<Box<RawValue>>;

/// A decoded request, borrowing its payload from the message it came in: the payload is read
/// once, by the node, straight into its input model.
#[derive(Debug)]
pub struct Request<'a> {
    /// The request's event id (`metadata.request_event_id` of the answer).
    pub event_id: Uuid,
    /// Its correlation id, never nil.
    pub correlation_id: Uuid,
    /// Its `metadata.trace_context`, passed on to the answer.
    pub trace_context: BTreeMap<String, String>,
    /// The payload; `None` when absent or `null`.
    pub payload: Option<&'a RawValue>,
    /// Where it came from in the trace.
    pub trace: Option<TraceContext>,
    /// The request's deadline, if it set one.
    pub deadline: Option<Instant>,
}

/// A request envelope as the host reads it: every field an ONEX envelope must have, checked
/// as `OnexEvent`'s decoding checks it, but the type, source and timestamp only checked, not
/// kept, and of the metadata only the trace context and the deadline (the other metadata is
/// not the host's to read, and reading it generically cost more than the rest together).
#[derive(Deserialize)]
struct Envelope<'a> {
    event_id: Uuid,
    #[serde(borrow, rename = "event_type")]
    _event_type: Cow<'a, str>,
    correlation_id: Uuid,
    #[serde(deserialize_with = "onex_runtime::rfc3339::deserialize", rename = "timestamp")]
    _timestamp: DateTime<Utc>,
    #[serde(borrow, rename = "source")]
    _source: Cow<'a, str>,
    #[serde(default, borrow)]
    payload: Option<&'a RawValue>,
    #[serde(default)]
    metadata: Metadata,
}

#[derive(Deserialize, Default)]
struct Metadata {
    #[serde(default)]
    trace_context: BTreeMap<String, String>,
    #[serde(default)]
    deadline: Option<serde_json::Value>,
}

impl<'a> Request<'a> {
    /// Decodes a message value; `traceparent` is the header's, if any. The error says why the
    /// message is not a request (it cannot be answered: it has no usable correlation id).
    pub fn decode(value: Option<&'a [u8]>, traceparent: Option<&str>) -> Result<Self, String> {
        let value = value.ok_or("the message has no value")?;
        let envelope: Envelope<'a> =
            serde_json::from_slice(value).map_err(|e| format!("the value is not an ONEX event envelope: {e}"))?;
        if envelope.correlation_id.is_nil() {
            return Err("the envelope's correlation_id is the nil UUID".into());
        }
        let Metadata { trace_context, deadline } = envelope.metadata;
        let trace = traceparent
            .and_then(|header| TraceContext::parse_traceparent(header).ok())
            .or_else(|| TraceContext::parse_traceparent(trace_context.get("traceparent")?).ok());
        let deadline = match deadline {
            None | Some(serde_json::Value::Null) => None,
            Some(value) => Some(deadline_of(&value).ok_or_else(|| {
                format!("metadata.deadline must be an RFC 3339 time, e.g. 2026-01-01T00:00:00Z, not {value}")
            })?),
        };
        Ok(Self {
            event_id: envelope.event_id,
            correlation_id: envelope.correlation_id,
            trace_context,
            payload: envelope.payload,
            trace,
            deadline,
        })
    }

    /// The payload, the node's input (`null` when there is none).
    pub fn payload(&self) -> &'a RawValue {
        self.payload.unwrap_or(RawValue::NULL)
    }

    /// The context the node runs in.
    pub fn context(&self) -> Context {
        let ctx = Context::for_request(Some(self.correlation_id)).unwrap_or_default();
        let ctx = match self.deadline {
            Some(deadline) => ctx.with_deadline(deadline),
            None => ctx,
        };
        match &self.trace {
            Some(trace) => ctx.with_trace(trace.clone()),
            None => ctx,
        }
    }

    /// The answer of event type `completed_type` carrying `output`.
    pub fn completed(&self, completed_type: &str, source: &str, output: Box<RawValue>) -> Answer {
        self.answer(completed_type.to_owned(), source, output)
    }

    /// The answer of event type `failed_type` carrying `error`, after `attempts` runs.
    pub fn failed(&self, failed_type: &str, source: &str, error: &OnexError, attempts: u32) -> Answer {
        self.answer(failed_type.to_owned(), source, failure_payload(error, attempts))
    }

    /// The answer of type `event_type` carrying `payload`.
    pub fn answer(&self, event_type: String, source: &str, payload: Box<RawValue>) -> Answer {
        let answer = OnexEvent::new(event_type, source, self.correlation_id, serde_json::Value::Null);
        let mut answer = answer.with_payload(payload);
        answer.metadata.trace_context = self.trace_context.clone();
        if let Some(trace) = &self.trace {
            answer.metadata.trace_context.insert("traceparent".into(), trace.traceparent());
        }
        answer.metadata.extra.insert("request_event_id".into(), self.event_id.to_string().into());
        answer
    }
}

/// The payload of a failure answer.
pub fn failure_payload(error: &OnexError, attempts: u32) -> Box<RawValue> {
    let payload = serde_json::json!({
        "error_code": error.code().as_str(),
        "message": error.message(),
        "details": error.details(),
        "attempts": attempts,
    });
    // A `Value` always encodes.
    serde_json::value::to_raw_value(&payload).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// The error a node reported in its output rather than returned: the infrastructure nodes
/// answer a failed operation with `success: false` and an `error_code` (as the original
/// system's nodes did), so an unreachable database comes back as an output.
pub fn reported_error(output: &RawValue) -> Option<ErrorCode> {
    #[derive(serde::Deserialize)]
    struct Reported<'a> {
        success: Option<bool>,
        #[serde(borrow)]
        error_code: Option<&'a RawValue>,
    }
    // An output is compact JSON written by serde_json, so a top-level `success: false` is
    // these bytes; most outputs are not failures and need no second parse.
    if !output.get().contains("\"success\":false") {
        return None;
    }
    let reported: Reported<'_> = serde_json::from_str(output.get()).ok()?;
    if reported.success? {
        return None;
    }
    serde_json::from_str(reported.error_code?.get()).ok()
}

fn deadline_of(value: &serde_json::Value) -> Option<Instant> {
    let at = chrono::DateTime::parse_from_rfc3339(value.as_str()?).ok()?.with_timezone(&chrono::Utc);
    let now = Instant::now();
    Some(match (at - chrono::Utc::now()).to_std() {
        Ok(left) => now + left,
        // Already past: a deadline of now, which the node answers with OPERATION_TIMEOUT.
        Err(_) => now.checked_sub(Duration::from_millis(1)).unwrap_or(now),
    })
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn envelope(extra: &str) -> Vec<u8> {
        format!(
            r#"{{"event_id":"{}","event_type":"t","correlation_id":"{}","timestamp":"2026-01-01T00:00:00Z",
               "source":"s","payload":{{"x":1}},"metadata":{{"trace_context":{{}}{extra}}}}}"#,
            Uuid::new_v4(),
            Uuid::new_v4()
        )
        .into_bytes()
    }

    #[test]
    fn a_request_answers_with_its_correlation_and_trace() {
        let header = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let value = envelope("");
        let request = Request::decode(Some(&value), Some(header)).unwrap();
        let output = serde_json::value::to_raw_value(&serde_json::json!({"ok": true})).unwrap();
        let answer = request.completed("node_x.completed", "host", output);
        assert_eq!(answer.event_type, "node_x.completed");
        assert_eq!(answer.correlation_id, request.correlation_id);
        assert_eq!(answer.metadata.trace_context["traceparent"], header);
        assert_eq!(answer.metadata.extra["request_event_id"], request.event_id.to_string());
        assert_eq!(request.payload().get(), r#"{"x":1}"#);
        let failed = request.failed("node_x.failed", "host", &OnexError::validation("missing field `operation`"), 1);
        let payload: serde_json::Value = serde_json::from_str(failed.payload.get()).unwrap();
        assert_eq!(payload["error_code"], "VALIDATION_ERROR");
        assert_eq!(payload["message"], "missing field `operation`");
    }

    #[test]
    fn an_answer_encodes_as_the_envelope_every_consumer_reads() {
        let value = envelope("");
        let request = Request::decode(Some(&value), None).unwrap();
        let output = serde_json::value::to_raw_value(&serde_json::json!({"rows": [1, 2], "note": "é\\n"})).unwrap();
        let answer = request.completed("node_x.completed", "host", output);
        let encoded = onex_runtime::event_bus::EncodedEvent::to_topic("t".into(), &answer).unwrap();
        let read: OnexEvent = serde_json::from_slice(&encoded.value).unwrap();
        assert_eq!(read.payload, serde_json::json!({"rows": [1, 2], "note": "é\\n"}));
        assert_eq!((read.event_id, read.correlation_id), (answer.event_id, request.correlation_id));
        assert_eq!(read.metadata, answer.metadata);
    }

    #[test]
    fn a_failure_reported_in_the_output_is_found_without_a_value() {
        let raw = |v: serde_json::Value| serde_json::value::to_raw_value(&v).unwrap();
        let reported =
            raw(serde_json::json!({"success": false, "error_code": "DATABASE_CONNECTION_FAILED", "error": "refused"}));
        assert_eq!(reported_error(&reported), Some(ErrorCode::DatabaseConnectionFailed));
        let fine = raw(serde_json::json!({"success": true, "error_code": "DATABASE_CONNECTION_FAILED"}));
        assert_eq!(reported_error(&fine), None);
        assert_eq!(reported_error(&raw(serde_json::json!({"state": "closed"}))), None);
        assert_eq!(reported_error(&raw(serde_json::json!({"success": false, "error_code": "NOT_A_CODE"}))), None);
        // Only the top level counts.
        let nested = raw(serde_json::json!({"inner": {"success": false, "error_code": "OPERATION_TIMEOUT"}}));
        assert_eq!(reported_error(&nested), None);
    }

    #[test]
    fn what_is_not_a_request_says_why() {
        assert!(Request::decode(None, None).unwrap_err().contains("no value"));
        assert!(Request::decode(Some(b"{]"), None).unwrap_err().contains("not an ONEX event envelope"));
        let e = Request::decode(Some(&envelope(r#","deadline":"soon""#)), None).unwrap_err();
        assert!(e.contains("metadata.deadline"), "{e}");
        // What the host does not keep is still checked as every envelope's decoding checks it.
        let good = String::from_utf8(envelope("")).unwrap();
        for (field, broken) in [
            ("timestamp", good.replace("2026-01-01T00:00:00Z", "yesterday")),
            ("source", good.replace(r#""source":"s","#, "")),
            ("event_type", good.replace(r#""event_type":"t","#, r#""event_type":7,"#)),
        ] {
            let e = Request::decode(Some(broken.as_bytes()), None).unwrap_err();
            assert!(e.contains("not an ONEX event envelope"), "{field}: {e}");
        }
    }

    #[test]
    fn a_past_deadline_is_already_over() {
        let value = envelope(r#","deadline":"2020-01-01T00:00:00Z""#);
        let request = Request::decode(Some(&value), None).unwrap();
        let ctx = request.context();
        assert!(ctx.deadline().unwrap() <= Instant::now());
    }
}
