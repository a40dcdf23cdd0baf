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

use std::time::{Duration, Instant};

use onex_runtime::event::OnexEvent;
use onex_runtime::{Context, OnexError, TraceContext};

use crate::routes::Routes;

/// A decoded request.
#[derive(Debug)]
pub struct Request {
    /// The envelope.
    pub event: OnexEvent,
    /// Where it came from in the trace.
    pub trace: Option<TraceContext>,
    /// The request's deadline, if it set one.
    pub deadline: Option<Instant>,
}

impl Request {
    /// Decodes a message value; `traceparent` is the header's, if any. The error says why the
    /// message is not a request (it cannot be answered: it has no usable correlation id).
    pub fn decode(value: Option<&[u8]>, traceparent: Option<&str>) -> Result<Self, String> {
        let value = value.ok_or("the message has no value")?;
        let event: OnexEvent =
            serde_json::from_slice(value).map_err(|e| format!("the value is not an ONEX event envelope: {e}"))?;
        if event.correlation_id.is_nil() {
            return Err("the envelope's correlation_id is the nil UUID".into());
        }
        let trace = traceparent
            .and_then(|header| TraceContext::parse_traceparent(header).ok())
            .or_else(|| TraceContext::parse_traceparent(event.metadata.trace_context.get("traceparent")?).ok());
        let deadline = match event.metadata.extra.get("deadline") {
            None => None,
            Some(value) => Some(deadline_of(value).ok_or_else(|| {
                format!("metadata.deadline must be an RFC 3339 time, e.g. 2026-01-01T00:00:00Z, not {value}")
            })?),
        };
        Ok(Self { event, trace, deadline })
    }

    /// The context the node runs in.
    pub fn context(&self) -> Context {
        let ctx = Context::for_request(Some(self.event.correlation_id)).unwrap_or_default();
        let ctx = match self.deadline {
            Some(deadline) => ctx.with_deadline(deadline),
            None => ctx,
        };
        match &self.trace {
            Some(trace) => ctx.with_trace(trace.clone()),
            None => ctx,
        }
    }

    /// The answer carrying `output`.
    pub fn completed(&self, node: &str, source: &str, output: serde_json::Value) -> OnexEvent {
        self.answer(Routes::completed_type(node), source, output)
    }

    /// The answer carrying `error`, after `attempts` runs.
    pub fn failed(&self, node: &str, source: &str, error: &OnexError, attempts: u32) -> OnexEvent {
        self.answer(Routes::failed_type(node), source, failure_payload(error, attempts))
    }

    /// The answer of type `event_type` carrying `payload`.
    pub fn answer(&self, event_type: String, source: &str, payload: serde_json::Value) -> OnexEvent {
        let mut answer = OnexEvent::new(event_type, source, self.event.correlation_id, payload);
        answer.metadata.trace_context = self.event.metadata.trace_context.clone();
        if let Some(trace) = &self.trace {
            answer.metadata.trace_context.insert("traceparent".into(), trace.traceparent());
        }
        answer.metadata.extra.insert("request_event_id".into(), self.event.event_id.to_string().into());
        answer
    }
}

/// The payload of a failure answer.
pub fn failure_payload(error: &OnexError, attempts: u32) -> serde_json::Value {
    serde_json::json!({
        "error_code": error.code().as_str(),
        "message": error.message(),
        "details": error.details(),
        "attempts": attempts,
    })
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
        let request = Request::decode(Some(&envelope("")), Some(header)).unwrap();
        let answer = request.completed("node_x", "host", serde_json::json!({"ok": true}));
        assert_eq!(answer.event_type, "node_x.completed");
        assert_eq!(answer.correlation_id, request.event.correlation_id);
        assert_eq!(answer.metadata.trace_context["traceparent"], header);
        assert_eq!(answer.metadata.extra["request_event_id"], request.event.event_id.to_string());
        let failed = request.failed("node_x", "host", &OnexError::validation("missing field `operation`"), 1);
        assert_eq!(failed.payload["error_code"], "VALIDATION_ERROR");
        assert_eq!(failed.payload["message"], "missing field `operation`");
    }

    #[test]
    fn what_is_not_a_request_says_why() {
        assert!(Request::decode(None, None).unwrap_err().contains("no value"));
        assert!(Request::decode(Some(b"{]"), None).unwrap_err().contains("not an ONEX event envelope"));
        let e = Request::decode(Some(&envelope(r#","deadline":"soon""#)), None).unwrap_err();
        assert!(e.contains("metadata.deadline"), "{e}");
    }

    #[test]
    fn a_past_deadline_is_already_over() {
        let request = Request::decode(Some(&envelope(r#","deadline":"2020-01-01T00:00:00Z""#)), None).unwrap();
        let ctx = request.context();
        assert!(ctx.deadline().unwrap() <= Instant::now());
    }
}
