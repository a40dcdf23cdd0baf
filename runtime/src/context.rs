//! The per-request context every node receives: correlation id, deadline, trace context.

use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{ErrorCode, OnexError};
use crate::event::OnexEvent;

/// Carried through one request. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Context {
    correlation_id: Uuid,
    deadline: Option<Instant>,
    trace: Option<TraceContext>,
    topic: Option<std::sync::Arc<str>>,
}

impl Context {
    /// A fresh context with a generated correlation id, no deadline and no trace.
    pub fn new() -> Self {
        Self { correlation_id: Uuid::new_v4(), deadline: None, trace: None, topic: None }
    }

    /// A context for a request that carried `correlation_id`; generates one when absent.
    /// A nil id is rejected: it would correlate unrelated requests.
    pub fn for_request(correlation_id: Option<Uuid>) -> Result<Self, OnexError> {
        match correlation_id {
            Some(id) if id.is_nil() => {
                Err(OnexError::new(ErrorCode::ValidationError, "correlation_id must not be the nil UUID"))
            }
            // Not `..Self::new()`: that would draw a random id only to drop it.
            Some(id) => Ok(Self { correlation_id: id, deadline: None, trace: None, topic: None }),
            None => Ok(Self::new()),
        }
    }

    /// Sets the deadline to `timeout` from now.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.deadline = Some(Instant::now() + timeout);
        self
    }

    /// Sets an absolute deadline.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Narrows the deadline to `limit` from now, keeping an earlier one. Generated nodes do
    /// this before running an operation whose handler bounds it by the deadline itself
    /// (`times_itself`), in place of a timer of their own.
    pub fn narrowed(self, limit: Duration) -> Self {
        self.narrowed_from(limit, Instant::now())
    }

    /// [`Context::narrowed`] from `now`, for a caller that has read the clock already.
    pub fn narrowed_from(mut self, limit: Duration, now: Instant) -> Self {
        let until = now + limit;
        self.deadline = Some(self.deadline.map_or(until, |d| d.min(until)));
        self
    }

    /// Attaches a trace context.
    pub fn with_trace(mut self, trace: TraceContext) -> Self {
        self.set_trace(trace);
        self
    }

    /// [`Context::with_trace`] in place.
    pub(crate) fn set_trace(&mut self, trace: TraceContext) {
        self.trace = Some(trace);
    }

    /// The correlation id, echoed back in outputs and used as the Kafka key.
    pub fn correlation_id(&self) -> Uuid {
        self.correlation_id
    }

    /// The absolute deadline, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time left before the deadline (zero when past it); `None` without a deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline.map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Whether the deadline has passed (never, without one).
    pub fn expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// [`Self::expired`] at `now`, for a caller that has just read the clock.
    pub fn expired_at(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| now >= d)
    }

    /// The smaller of `limit` and the time left before the deadline.
    pub fn budget(&self, limit: Duration) -> Duration {
        self.remaining().map_or(limit, |left| left.min(limit))
    }

    /// The trace context, if the request carried one.
    pub fn trace(&self) -> Option<&TraceContext> {
        self.trace.as_ref()
    }

    /// Writes the request's trace context, if it has one, into the metadata of an event a node
    /// publishes while serving it (the W3C `traceparent` and `tracestate`, when and by which
    /// `service` it was stamped), so whoever consumes the event continues the request's trace.
    pub fn stamp_event(&self, event: &mut OnexEvent, service: &str) {
        let Some(trace) = &self.trace else { return };
        let metadata = &mut event.metadata;
        metadata.trace_context.insert("traceparent".into(), trace.traceparent());
        if let Some(state) = &trace.trace_state {
            metadata.trace_context.insert("tracestate".into(), state.clone());
        }
        metadata.trace_timestamp = Some(chrono::Utc::now());
        metadata.trace_service = Some(service.into());
    }

    /// Records the topic the request was consumed from; nodes routed by `topic_match` dispatch on it.
    pub fn with_topic(mut self, topic: impl Into<std::sync::Arc<str>>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// The topic the request was consumed from, when it came from the event bus.
    pub fn topic(&self) -> Option<&str> {
        self.topic.as_deref()
    }
}

impl Default for Context {
    fn default() -> Self {
        Self::new()
    }
}

/// A W3C trace context (`traceparent` plus optional `tracestate`).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TraceContext {
    /// 16 bytes, shown as 32 lower-case hex characters.
    pub trace_id: [u8; 16],
    /// 8 bytes, shown as 16 lower-case hex characters.
    pub span_id: [u8; 8],
    /// Trace flags; bit 0 is "sampled".
    pub flags: u8,
    /// Vendor state, passed through untouched.
    pub trace_state: Option<String>,
}

impl TraceContext {
    /// Renders the `traceparent` header: `00-<trace id>-<span id>-<flags>`.
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-{:02x}", hex(&self.trace_id), hex(&self.span_id), self.flags)
    }

    /// Parses a `traceparent` header (version 00). All-zero ids are invalid per W3C.
    pub fn parse_traceparent(header: &str) -> Result<Self, OnexError> {
        let bad = || OnexError::validation(format!("invalid traceparent header '{header}'"));
        let mut parts = header.trim().split('-');
        let (Some(version), Some(trace), Some(span), Some(flags), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        if version != "00" || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
            return Err(bad());
        }
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        unhex(trace, &mut trace_id).ok_or_else(bad)?;
        unhex(span, &mut span_id).ok_or_else(bad)?;
        let mut flag = [0u8; 1];
        unhex(flags, &mut flag).ok_or_else(bad)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return Err(bad());
        }
        Ok(Self { trace_id, span_id, flags: flag[0], trace_state: None })
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceContext")
            .field("traceparent", &self.traceparent())
            .field("trace_state", &self.trace_state)
            .finish()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str, out: &mut [u8]) -> Option<()> {
    if !text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_published_in_a_traced_request_carries_its_trace_and_others_carry_none() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut trace = TraceContext::parse_traceparent(header).unwrap();
        trace.trace_state = Some("vendor=1".into());
        let mut event = OnexEvent::new("node.done", "node_x", Uuid::new_v4(), serde_json::json!({}));
        Context::new().with_trace(trace).stamp_event(&mut event, "node_x");
        let metadata = &event.metadata;
        assert_eq!(metadata.trace_context.get("traceparent").map(String::as_str), Some(header));
        assert_eq!(metadata.trace_context.get("tracestate").map(String::as_str), Some("vendor=1"));
        assert_eq!(metadata.trace_service.as_deref(), Some("node_x"));
        assert!(metadata.trace_timestamp.is_some());

        let mut untraced = OnexEvent::new("node.done", "node_x", Uuid::new_v4(), serde_json::json!({}));
        Context::new().stamp_event(&mut untraced, "node_x");
        assert!(untraced.metadata.trace_context.is_empty() && untraced.metadata.trace_timestamp.is_none());
    }

    #[test]
    fn narrowing_keeps_the_earlier_deadline() {
        let soon = Instant::now() + Duration::from_millis(50);
        let kept = Context::new().with_deadline(soon).narrowed(Duration::from_secs(60));
        assert_eq!(kept.deadline(), Some(soon));
        let narrowed = Context::new().with_timeout(Duration::from_secs(60)).narrowed(Duration::from_millis(50));
        assert!(narrowed.remaining().unwrap() <= Duration::from_millis(50));
        assert!(Context::new().narrowed(Duration::from_secs(1)).deadline().is_some());
    }

    #[test]
    fn a_context_expires_at_its_deadline_only() {
        assert!(!Context::new().expired());
        assert!(!Context::new().with_timeout(Duration::from_secs(60)).expired());
        assert!(Context::new().with_deadline(Instant::now() - Duration::from_millis(1)).expired());
    }

    #[test]
    fn correlation_id_is_echoed_or_generated() {
        let id = Uuid::new_v4();
        assert_eq!(Context::for_request(Some(id)).unwrap().correlation_id(), id);
        assert!(!Context::for_request(None).unwrap().correlation_id().is_nil());
        assert!(Context::for_request(Some(Uuid::nil())).is_err());
    }

    #[test]
    fn traceparent_round_trips() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let tc = TraceContext::parse_traceparent(header).unwrap();
        assert_eq!(tc.traceparent(), header);
        assert!(TraceContext::parse_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_err());
        assert!(TraceContext::parse_traceparent("zz").is_err());
        assert!(TraceContext::parse_traceparent("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01").is_err());
    }

    #[test]
    fn budget_is_capped_by_deadline() {
        let ctx = Context::new().with_timeout(Duration::from_millis(10));
        assert!(ctx.budget(Duration::from_secs(60)) <= Duration::from_millis(10));
        assert_eq!(Context::new().budget(Duration::from_secs(3)), Duration::from_secs(3));
    }
}
