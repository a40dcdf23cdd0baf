//! The Kafka-backed event bus: envelope encoding, topic naming, per-caller rate limits and
//! retries on top of the [`KafkaProducerPool`].
//!
//! Tracing: with a [`Tracing`] (the pool's by default, or [`KafkaEventBus::with_tracing`]),
//! each event is sent under exactly one PRODUCER span, `kafka.publish` (retries are attempts
//! inside it; a batch of events is one span per event), with the messaging conventions'
//! attributes. Its parent is the caller's current OpenTelemetry context, or, when the caller
//! has none (the outbox relay, say), the context the envelope already carries, so a relayed
//! event continues the trace it was first published in. The span's context is written into
//! the envelope's `metadata.trace_context` (with `trace_timestamp`, `trace_service` and
//! `trace_environment`) unless the envelope carries one already, and always into the
//! message's `traceparent`/`tracestate` headers, so a consumer's span is its child. The bus
//! sends through the pool without the pool's own `kafka.send` span: one message, one
//! PRODUCER span. Without tracing, nothing of this runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use opentelemetry::trace::SpanContext;
use rdkafka::message::OwnedHeaders;
use serde::Serialize;

use crate::telemetry::recorded::Leaf;
use crate::telemetry::{KeyValue, OtelContext, Tracing, carrier};

use crate::environment::EnvSource;
use crate::error::{ErrorCode, OnexError};
use crate::event::{EventMetadata, OnexEvent};
use crate::event_bus::EventPublisher;
use crate::event_bus::rate_limit::{RateLimitRule, RateLimiter};
use crate::event_bus::retry::{RetryPolicy, Sleeper, TokioSleeper, retry};
use crate::event_bus::subscriber::{self, ContextEventHandler, EventHandler, Subscription, SubscriptionOptions};
use crate::event_bus::topic::TopicNamer;
use crate::kafka::error::onex_error_is_retriable;
use crate::kafka::trace;
use crate::kafka::{Delivered, KafkaProducerPool, ProduceRecord, headers};
use crate::metrics::MetricsRegistry;
use crate::node::BoxFuture;
use crate::rfc3339;

/// One event, encoded for Kafka.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedEvent {
    /// Topic.
    pub topic: String,
    /// Key: the correlation id, hyphenated.
    pub key: String,
    /// Value: the JSON envelope.
    pub value: Vec<u8>,
    /// Headers: the W3C trace carrier plus `onex-event-type` and `onex-event-id`.
    pub headers: Vec<(String, String)>,
}

/// Writes `event` as `serde_json::to_vec` does (a test holds them equal), but the parts that
/// never need escaping — the field names, both UUIDs and the timestamp — are copied as they
/// are: serde_json checks every byte of every string for escapes, which was most of the
/// envelope's cost. The strings that may need it (type, source, the metadata's) are checked
/// in one pass ([`write_str`]); the payload goes through serde_json. The destructuring fails
/// to compile when a field is added, so the envelope cannot silently lose one. `event_id` and
/// `correlation_id` are the event's UUIDs, hyphenated and lower-case, as its `Serialize`
/// writes them.
fn write_envelope<P: Serialize>(
    out: &mut Vec<u8>,
    event: &OnexEvent<P>,
    event_id: &str,
    correlation_id: &str,
    stamp: Option<&SpanStamp<'_>>,
) -> serde_json::Result<()> {
    let OnexEvent { event_id: _, event_type, correlation_id: _, timestamp, source, payload, metadata } = event;
    out.extend_from_slice(b"{\"event_id\":\"");
    out.extend_from_slice(event_id.as_bytes());
    out.extend_from_slice(b"\",\"event_type\":");
    write_str(out, event_type)?;
    out.extend_from_slice(b",\"correlation_id\":\"");
    out.extend_from_slice(correlation_id.as_bytes());
    out.extend_from_slice(b"\",\"timestamp\":");
    write_timestamp(out, timestamp)?;
    out.extend_from_slice(b",\"source\":");
    write_str(out, source)?;
    out.extend_from_slice(b",\"payload\":");
    serde_json::to_writer(&mut *out, payload)?;
    out.extend_from_slice(b",\"metadata\":");
    match stamp.and_then(|stamp| Some((stamp, stamp.envelope.as_ref()?))) {
        Some((stamp, envelope)) => write_stamped_metadata(out, metadata, stamp, envelope)?,
        None => write_metadata(out, metadata)?,
    }
    out.push(b'}');
    Ok(())
}

/// Writes `text` as a JSON string as serde_json does: copied as it is when no byte of it needs
/// escaping (a control character, `"` or `\\`; one pass, where serde_json branches on every
/// byte), else through serde_json.
fn write_str(out: &mut Vec<u8>, text: &str) -> serde_json::Result<()> {
    // A fold, not `all`: without the early exit the check is branch-free and vectorized
    // (callgrind: ~10 instructions a byte with `all`).
    let escapes = text.bytes().fold(false, |escapes, b| escapes | (b < 0x20) | (b == b'"') | (b == b'\\'));
    if escapes {
        return serde_json::to_writer(&mut *out, text);
    }
    out.push(b'"');
    out.extend_from_slice(text.as_bytes());
    out.push(b'"');
    Ok(())
}

/// Writes `timestamp` as `rfc3339::serialize` does.
fn write_timestamp(out: &mut Vec<u8>, timestamp: &chrono::DateTime<chrono::Utc>) -> serde_json::Result<()> {
    let mut text = [0u8; rfc3339::MAX_LEN];
    match rfc3339::format(timestamp, &mut text) {
        Some(text) => {
            out.push(b'"');
            out.extend_from_slice(text.as_bytes());
            out.push(b'"');
            Ok(())
        }
        None => rfc3339::serialize(timestamp, &mut serde_json::Serializer::new(&mut *out)),
    }
}

/// Writes `metadata` as serde_json does. Its `extra` fields are flattened into it, which sends
/// serde_json through a generic map writer (the traced envelope's costliest part); without
/// extra fields the known ones are written here, in their order, skipped when empty as their
/// attributes say. The destructuring fails to compile when a field is added.
fn write_metadata(out: &mut Vec<u8>, metadata: &EventMetadata) -> serde_json::Result<()> {
    let EventMetadata { trace_context, trace_timestamp, trace_service, trace_environment, extra } = metadata;
    if !extra.is_empty() {
        return serde_json::to_writer(&mut *out, metadata);
    }
    let mut fields = 0;
    let mut field = |out: &mut Vec<u8>, name: &str| {
        out.push(if fields == 0 { b'{' } else { b',' });
        fields += 1;
        out.push(b'"');
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
    };
    if !trace_context.is_empty() {
        field(out, "trace_context");
        for (i, (key, value)) in trace_context.iter().enumerate() {
            out.push(if i == 0 { b'{' } else { b',' });
            write_str(out, key)?;
            out.push(b':');
            write_str(out, value)?;
        }
        out.push(b'}');
    }
    if let Some(timestamp) = trace_timestamp {
        field(out, "trace_timestamp");
        write_timestamp(out, timestamp)?;
    }
    if let Some(service) = trace_service {
        field(out, "trace_service");
        write_str(out, service)?;
    }
    if let Some(environment) = trace_environment {
        field(out, "trace_environment");
        write_str(out, environment)?;
    }
    if fields == 0 {
        out.push(b'{');
    }
    out.push(b'}');
    Ok(())
}

/// The trace context of the span that publishes an event, as its message carries it: the
/// headers name the span (`traceparent`, and `tracestate` when it has one, in place of the
/// envelope's); when the event brought no context of its own, its envelope is stamped with it
/// as well, as [`carrier::stamp_envelope_with`] stamps an event's metadata. Written straight
/// into the message: stamping a copy of the event cost it a clone and a dozen allocations.
#[derive(Debug)]
struct SpanStamp<'a> {
    traceparent: [u8; 55],
    /// Empty when the span has none.
    tracestate: String,
    envelope: Option<EnvelopeStamp<'a>>,
}

/// What a stamped envelope's metadata says besides the span's carrier.
#[derive(Debug)]
struct EnvelopeStamp<'a> {
    timestamp: chrono::DateTime<chrono::Utc>,
    service: Option<&'a str>,
    environment: Option<&'a str>,
}

impl<'a> SpanStamp<'a> {
    /// `span`'s stamp; the envelope's too when `metadata` carries no context.
    fn new(span: &SpanContext, metadata: &EventMetadata, tracing: &'a Tracing) -> Self {
        let envelope = metadata.trace_context.is_empty().then(|| EnvelopeStamp {
            timestamp: chrono::Utc::now(),
            service: tracing.service_name(),
            environment: tracing.environment(),
        });
        Self { traceparent: carrier::traceparent_bytes(span), tracestate: span.trace_state().header(), envelope }
    }

    fn traceparent(&self) -> &str {
        // Hex digits and dashes only.
        std::str::from_utf8(&self.traceparent).unwrap_or_default()
    }

    /// The W3C carrier, `traceparent` first.
    fn carrier(&self) -> impl Iterator<Item = (&str, &str)> {
        std::iter::once(("traceparent", self.traceparent()))
            .chain((!self.tracestate.is_empty()).then_some(("tracestate", self.tracestate.as_str())))
    }
}

/// Writes `metadata` with `stamp`'s envelope stamp, as [`write_metadata`] writes the metadata
/// [`carrier::stamp_envelope_with`] makes of it (a test holds them equal).
fn write_stamped_metadata(
    out: &mut Vec<u8>,
    metadata: &EventMetadata,
    stamp: &SpanStamp<'_>,
    envelope: &EnvelopeStamp<'_>,
) -> serde_json::Result<()> {
    // An envelope stamp exists only for metadata without a trace context (`SpanStamp::new`).
    if !metadata.extra.is_empty() {
        let mut stamped = metadata.clone();
        stamped.trace_context.extend(stamp.carrier().map(|(key, value)| (key.to_owned(), value.to_owned())));
        stamped.trace_timestamp = Some(envelope.timestamp);
        stamped.trace_service = envelope.service.map(str::to_owned);
        stamped.trace_environment = envelope.environment.map(str::to_owned);
        return write_metadata(out, &stamped);
    }
    out.extend_from_slice(b"{\"trace_context\":{\"traceparent\":\"");
    out.extend_from_slice(&stamp.traceparent);
    out.push(b'"');
    if !stamp.tracestate.is_empty() {
        out.extend_from_slice(b",\"tracestate\":");
        write_str(out, &stamp.tracestate)?;
    }
    out.extend_from_slice(b"},\"trace_timestamp\":");
    write_timestamp(out, &envelope.timestamp)?;
    if let Some(service) = envelope.service {
        out.extend_from_slice(b",\"trace_service\":");
        write_str(out, service)?;
    }
    if let Some(environment) = envelope.environment {
        out.extend_from_slice(b",\"trace_environment\":");
        write_str(out, environment)?;
    }
    out.push(b'}');
    Ok(())
}

/// Room for a typical envelope (two UUIDs, a timestamp, the type, the source and a small
/// payload come to about 300 bytes), so the JSON buffer is allocated once instead of grown
/// from empty four or five times; larger events grow it as before.
const ENVELOPE_CAPACITY: usize = 512;

/// One event encoded for Kafka that borrows what the event already holds: the envelope is
/// written, the key kept as text in place, and the headers read from the event when the
/// message is sent. [`EncodedEvent`] owns copies of all of it; a caller that sends each event
/// once, to a topic it already has (the node host answering a request), saves those copies.
#[derive(Debug)]
pub struct EventMessage<'e, P> {
    event: &'e OnexEvent<P>,
    /// The publishing span's context, when the bus traces.
    stamp: Option<SpanStamp<'e>>,
    /// The JSON envelope.
    value: Vec<u8>,
    /// The correlation id, hyphenated: the message key.
    key: [u8; UUID_TEXT_LEN],
}

/// Length of a hyphenated UUID.
const UUID_TEXT_LEN: usize = 36;

impl<'e, P: Serialize> EventMessage<'e, P> {
    /// Writes `event`'s envelope (as [`EncodedEvent::new`] does).
    pub fn encode(event: &'e OnexEvent<P>) -> Result<Self, OnexError> {
        Self::encode_stamped(event, None)
    }

    /// [`EventMessage::encode`] carrying the publishing span's context.
    fn encode_stamped(event: &'e OnexEvent<P>, stamp: Option<SpanStamp<'e>>) -> Result<Self, OnexError> {
        // The correlation id is written once, for the envelope and the key; the event id is
        // written again for its header when the message is sent.
        let (mut event_id, mut key) = (uuid::Uuid::encode_buffer(), [0u8; UUID_TEXT_LEN]);
        let event_id = &*event.event_id.hyphenated().encode_lower(&mut event_id);
        event.correlation_id.hyphenated().encode_lower(&mut key);
        let mut value = Vec::with_capacity(ENVELOPE_CAPACITY);
        write_envelope(&mut value, event, event_id, text(&key), stamp.as_ref()).map_err(|e| {
            OnexError::new(ErrorCode::InternalError, format!("cannot encode event {}: {e}", event.event_id))
        })?;
        Ok(Self { event, stamp, value, key })
    }
}

impl<'e, P> EventMessage<'e, P> {
    /// The key: the correlation id, hyphenated.
    pub fn key(&self) -> &str {
        text(&self.key)
    }

    /// The message to `topic`.
    pub fn record<'a>(&'a self, topic: &'a str) -> ProduceRecord<'a> {
        ProduceRecord::new(topic, &self.value).key(&self.key)
    }

    /// The message's headers: the event's W3C trace carrier (`traceparent`, `tracestate`,
    /// `baggage` of `metadata.trace_context`), `onex-event-type` and `onex-event-id`.
    pub fn headers(&self) -> OwnedHeaders {
        headers(self.header_pairs(&mut uuid::Uuid::encode_buffer()))
    }

    /// With a stamp, the span's carrier comes first and stands in for the envelope's.
    fn header_pairs<'a>(&'a self, id_buffer: &'a mut [u8]) -> impl Iterator<Item = (&'a str, &'a str)> {
        let event_id = &*self.event.event_id.hyphenated().encode_lower(id_buffer);
        let stamped = self.stamp.is_some();
        let carrier = self
            .event
            .metadata
            .trace_context
            .iter()
            .filter(move |(k, _)| match k.as_str() {
                "traceparent" | "tracestate" => !stamped,
                "baggage" => true,
                _ => false,
            })
            .map(|(k, v)| (k.as_str(), v.as_str()));
        let span = self.stamp.iter().flat_map(SpanStamp::carrier);
        span.chain(carrier).chain([("onex-event-type", self.event.event_type.as_str()), ("onex-event-id", event_id)])
    }
}

/// A hyphenated UUID's bytes as text (always ASCII).
fn text(uuid: &[u8; UUID_TEXT_LEN]) -> &str {
    std::str::from_utf8(uuid).unwrap_or_default()
}

impl EncodedEvent {
    /// Encodes `event` for Kafka as the bus publishes it: topic from its type (`namer`), key =
    /// correlation id, value = JSON envelope, headers = its trace carrier, `onex-event-type`
    /// and `onex-event-id`. Public so an in-process publisher can encode exactly as the bus does.
    pub fn new<P: Serialize>(namer: &TopicNamer, event: &OnexEvent<P>) -> Result<Self, OnexError> {
        Self::to_topic(namer.topic_for(&event.event_type)?, event)
    }

    /// [`EncodedEvent::new`] for a topic chosen by the caller rather than by the event type.
    pub fn to_topic<P: Serialize>(topic: String, event: &OnexEvent<P>) -> Result<Self, OnexError> {
        let message = EventMessage::encode(event)?;
        let headers =
            message.header_pairs(&mut uuid::Uuid::encode_buffer()).map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        let key = message.key().to_owned();
        Ok(Self { topic, key, value: message.value, headers })
    }
}

/// An event on its way: its topic and its message.
struct Outgoing<'a> {
    topic: String,
    message: EventMessage<'a, serde_json::Value>,
}

impl Outgoing<'_> {
    fn record(&self) -> ProduceRecord<'_> {
        self.message.record(&self.topic)
    }
}

/// Bus counters.
#[derive(Debug, Default)]
pub(crate) struct BusCounters {
    pub(crate) published: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) retries: AtomicU64,
    rate_limited: AtomicU64,
}

/// Figures of the bus (the producer side is in the pool's stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventBusStats {
    /// Events acknowledged by the broker.
    pub published: u64,
    /// Events that failed for good.
    pub failed: u64,
    /// Publish attempts repeated after a retriable error.
    pub retries: u64,
    /// Events refused by the rate limiter.
    pub rate_limited: u64,
}

/// Publishes [`OnexEvent`]s to Kafka and subscribes handlers to topics.
pub struct KafkaEventBus {
    pool: Arc<KafkaProducerPool>,
    namer: TopicNamer,
    retry: RetryPolicy,
    sleeper: Arc<dyn Sleeper>,
    limiter: Option<RateLimiter>,
    /// Shared with the metrics collector, which reads them at scrape time.
    pub(in crate::event_bus) counters: Arc<BusCounters>,
    tracing: Tracing,
}

impl std::fmt::Debug for KafkaEventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaEventBus")
            .field("pool", &self.pool)
            .field("namer", &self.namer)
            .field("retry", &self.retry)
            .field("rate_limit", &self.limiter.as_ref().map(RateLimiter::rule))
            .finish()
    }
}

impl KafkaEventBus {
    /// A bus on `pool` with the default retry policy and the `event_publish` rate limit.
    pub fn new(pool: Arc<KafkaProducerPool>, namer: TopicNamer) -> Self {
        Self {
            namer,
            retry: RetryPolicy::default(),
            sleeper: Arc::new(TokioSleeper),
            limiter: Some(RateLimiter::new(RateLimitRule::EVENT_PUBLISH)),
            counters: Arc::default(),
            tracing: pool.tracing().clone(),
            pool,
        }
    }

    /// Records a PRODUCER span per event (and gives subscriptions that name no tracing of
    /// their own a CONSUMER span per message) with `tracing`; see the module documentation.
    /// The default is the pool's.
    pub fn with_tracing(mut self, tracing: Tracing) -> Self {
        self.tracing = tracing.for_kafka();
        self
    }

    /// The tracing the bus records its spans with.
    pub fn tracing(&self) -> &Tracing {
        &self.tracing
    }

    /// Registers the bus's series (see [`crate::event_bus::series`]) in `registry`: its own
    /// counters ([`KafkaEventBus::stats`]), read at scrape time, so publishing costs nothing
    /// more. The pool's series are the pool's to register
    /// ([`KafkaProducerPool::with_metrics`]). A registry holds one bus's series: a second bus
    /// (or a second call) on the same registry is a `CONFIGURATION_ERROR` naming the family
    /// already there.
    pub fn with_metrics(self, registry: &MetricsRegistry) -> Result<Self, OnexError> {
        crate::event_bus::series::register(registry, Arc::downgrade(&self.counters))?;
        Ok(self)
    }

    /// Topic naming and retry policy from the environment.
    pub fn from_env(pool: Arc<KafkaProducerPool>, env: &dyn EnvSource) -> Result<Self, OnexError> {
        Ok(Self { retry: RetryPolicy::from_env(env)?, ..Self::new(pool, TopicNamer::from_env(env)?) })
    }

    /// Replaces the retry policy.
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Replaces how the bus waits between retries (tests record instead of sleeping).
    pub fn with_sleeper(mut self, sleeper: Arc<dyn Sleeper>) -> Self {
        self.sleeper = sleeper;
        self
    }

    /// Replaces the per-caller rate limit; `None` disables it.
    pub fn with_rate_limit(mut self, rule: Option<RateLimitRule>) -> Self {
        self.limiter = rule.map(RateLimiter::new);
        self
    }

    /// The producer pool.
    pub fn pool(&self) -> &Arc<KafkaProducerPool> {
        &self.pool
    }

    /// The topic namer.
    pub fn namer(&self) -> &TopicNamer {
        &self.namer
    }

    /// Counters.
    pub fn stats(&self) -> EventBusStats {
        EventBusStats {
            published: self.counters.published.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
            retries: self.counters.retries.load(Ordering::Relaxed),
            rate_limited: self.counters.rate_limited.load(Ordering::Relaxed),
        }
    }

    /// Encodes `event`: topic from its type, key = correlation id, value = JSON envelope,
    /// headers = its trace carrier ([`EncodedEvent::new`] with this bus's topic namer).
    pub fn encode(&self, event: &OnexEvent) -> Result<EncodedEvent, OnexError> {
        EncodedEvent::new(&self.namer, event)
    }

    /// The attributes of a `kafka.publish` span: the producer span's four, the five
    /// [`Self::prepare`] sets, `onex.publish.attempts`, and the partition and offset of the
    /// delivery (on failure `error.type` in their place).
    const PUBLISH_ATTRIBUTES: usize = 12;

    /// Encodes `event` for sending; with tracing, under its `kafka.publish` span (returned
    /// when recorded), whose context the envelope (unless it has one) and the headers carry.
    /// The span is one box (`Leaf`), so that without tracing publish futures keep their size.
    fn prepare<'a>(&'a self, event: &'a OnexEvent) -> Result<(Leaf, Outgoing<'a>), OnexError> {
        let topic = self.namer.topic_for(&event.event_type)?;
        if !self.tracing.is_enabled() {
            return Ok((Leaf::default(), Outgoing { topic, message: EventMessage::encode(event)? }));
        }
        let parent = OtelContext::map_current(|current| {
            use opentelemetry::trace::TraceContextExt as _;
            if current.has_active_span() || event.metadata.trace_context.is_empty() {
                return current.clone();
            }
            carrier::extract_parent(None, Some(&event.metadata.trace_context)).unwrap_or_else(|| current.clone())
        });
        let mut span = trace::producer_span(
            &self.tracing,
            "kafka.publish",
            "publish",
            Some(&topic),
            &parent,
            Self::PUBLISH_ATTRIBUTES,
        );
        // The headers name this span even when the envelope keeps an older context.
        let stamp = span
            .span_context()
            .filter(|context| context.is_valid())
            .map(|context| SpanStamp::new(context, &event.metadata, &self.tracing));
        let message = EventMessage::encode_stamped(event, stamp)?;
        if !span.is_recording() {
            return Ok((Leaf::default(), Outgoing { topic, message }));
        }
        span.set_attributes([
            KeyValue::new("messaging.kafka.message.key", message.key().to_owned()),
            KeyValue::new("messaging.message.body.size", i64::try_from(message.value.len()).unwrap_or(i64::MAX)),
            KeyValue::new("onex.event.type", event.event_type.clone()),
            KeyValue::new("onex.event.id", event.event_id.to_string()),
            KeyValue::new("correlation_id", event.correlation_id.to_string()),
        ]);
        Ok((span.into_leaf(), Outgoing { topic, message }))
    }

    fn take_tokens(&self, caller: &str, cost: u32) -> Result<(), OnexError> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        limiter.check(caller, cost, Instant::now()).inspect_err(|_| {
            self.counters.rate_limited.fetch_add(u64::from(cost), Ordering::Relaxed);
        })
    }

    /// Publishes one event and waits for the broker's acknowledgement, retrying retriable
    /// failures with exponential backoff. The caller for the rate limit is `event.source`.
    pub async fn publish_event(&self, event: &OnexEvent) -> Result<Delivered, OnexError> {
        self.take_tokens(&event.source, 1)?;
        self.deliver_event(event).await
    }

    /// [`KafkaEventBus::publish_event`] without the rate limit (the event was admitted).
    async fn deliver_event(&self, event: &OnexEvent) -> Result<Delivered, OnexError> {
        let (mut span, outgoing) = self.prepare(event)?;
        let outcome = retry(&self.retry, self.sleeper.as_ref(), |_| async {
            self.pool.send_untraced(outgoing.record(), Some(outgoing.message.headers())).await?.await
        })
        .await;
        if span.is_recording() {
            span.set_attribute(KeyValue::new("onex.publish.attempts", i64::from(outcome.attempts)));
            trace::record_delivery(&mut span, &outcome.result);
        }
        self.counters.retries.fetch_add(u64::from(outcome.attempts - 1), Ordering::Relaxed);
        match &outcome.result {
            Ok(_) => self.counters.published.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.counters.failed.fetch_add(1, Ordering::Relaxed),
        };
        outcome.result.map_err(|e| {
            e.with_detail("attempts", outcome.attempts).with_detail("event_id", event.event_id.to_string())
        })
    }

    /// Publishes `events` concurrently (all enqueued, then awaited), retrying the retriable
    /// failures together with backoff. Returns where each landed, in input order, or an
    /// error naming how many failed (`failed_event_ids` in the details).
    ///
    /// The rate limit admits the batch as a whole: every event's source pays one token, all
    /// of them or none (see [`crate::event_bus::rate_limit`]); a batch larger than a source's
    /// burst goes out when that source's bucket is full and is paid back at its rate, and one
    /// no wait would admit is a `VALIDATION_ERROR` saying how to split it.
    pub async fn publish_events(&self, events: &[OnexEvent]) -> Result<Vec<Delivered>, OnexError> {
        // All callers' tokens or none: a refusal leaves every caller's bucket as it was.
        if let Some(limiter) = &self.limiter {
            limiter.check_all(events.iter().map(|e| (e.source.as_str(), 1)), Instant::now()).inspect_err(|_| {
                self.counters.rate_limited.fetch_add(events.len() as u64, Ordering::Relaxed);
            })?;
        }
        let mut spans = Vec::new();
        let mut encoded = Vec::with_capacity(events.len());
        for event in events {
            let (span, event) = self.prepare(event)?;
            if self.tracing.is_enabled() {
                spans.push(span);
            }
            encoded.push(event);
        }
        let mut results: Vec<Option<Result<Delivered, OnexError>>> = vec![None; encoded.len()];
        let mut pending: Vec<usize> = (0..encoded.len()).collect();
        let mut round = 0;
        loop {
            let mut futures = Vec::with_capacity(pending.len());
            for &i in &pending {
                let e = &encoded[i];
                futures.push(async move {
                    match self.pool.send_untraced(e.record(), Some(e.message.headers())).await {
                        Ok(delivery) => delivery.await,
                        Err(err) => Err(err),
                    }
                });
            }
            let outcomes = futures::future::join_all(futures).await;
            let mut again = Vec::new();
            for (&i, outcome) in pending.iter().zip(outcomes) {
                if let Err(e) = &outcome
                    && round < self.retry.max_retries
                    && onex_error_is_retriable(e)
                {
                    again.push(i);
                }
                results[i] = Some(outcome);
            }
            if again.is_empty() {
                break;
            }
            self.counters.retries.fetch_add(again.len() as u64, Ordering::Relaxed);
            self.sleeper.sleep(self.retry.delay(round)).await;
            round += 1;
            pending = again;
        }
        let mut delivered = Vec::with_capacity(results.len());
        let mut failed_ids = Vec::new();
        let mut first_error = None;
        for (i, result) in results.into_iter().enumerate() {
            if let (Some(span), Some(outcome)) = (spans.get_mut(i), &result)
                && span.is_recording()
            {
                trace::record_delivery(span, outcome);
            }
            match result {
                Some(Ok(d)) => delivered.push(d),
                Some(Err(e)) => {
                    failed_ids.push(serde_json::Value::from(events[i].event_id.to_string()));
                    first_error.get_or_insert(e);
                }
                None => unreachable!("every event has an outcome after the last round"),
            }
        }
        self.counters.published.fetch_add(delivered.len() as u64, Ordering::Relaxed);
        self.counters.failed.fetch_add(failed_ids.len() as u64, Ordering::Relaxed);
        match first_error {
            None => Ok(delivered),
            Some(first) => Err(OnexError::new(
                first.code(),
                format!("{} of {} events failed to publish; first: {first}", failed_ids.len(), events.len()),
            )
            .with_detail("failed_event_ids", failed_ids)
            .with_detail("attempt_rounds", round + 1)),
        }
    }

    /// Consumes `topics` in consumer group `options.group_id` on the pool's default cluster,
    /// calling `handler` for each event; offsets are committed only after it succeeds.
    /// Subscriptions whose options name no tracing record their spans with the bus's.
    pub fn subscribe(
        &self,
        topics: &[&str],
        options: SubscriptionOptions,
        handler: EventHandler,
    ) -> Result<Subscription, OnexError> {
        subscriber::subscribe(self.pool.default_config(), topics, self.traced(options), handler)
    }

    /// [`KafkaEventBus::subscribe`] with a handler that receives each event's request
    /// [`crate::Context`], whose trace is the consumer span.
    pub fn subscribe_with_context(
        &self,
        topics: &[&str],
        options: SubscriptionOptions,
        handler: ContextEventHandler,
    ) -> Result<Subscription, OnexError> {
        subscriber::subscribe_with_context(self.pool.default_config(), topics, self.traced(options), handler)
    }

    /// Fills in what `options` leave to the bus: its tracing, and a dead-letter topic on its
    /// pool named after the group (`…dlq.{group}.v1`, characters a topic cannot hold as `-`).
    fn traced(&self, options: SubscriptionOptions) -> SubscriptionOptions {
        let mut options =
            if options.tracing.is_enabled() { options } else { options.with_tracing(self.tracing.clone()) };
        if options.dead_letter.is_none() {
            let group: String = options
                .group_id
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' })
                .collect();
            let topic = self.namer.topic("dlq", group.trim_start_matches('-'));
            options = options.with_dead_letter(Arc::clone(&self.pool), topic);
        }
        options
    }

    /// [`KafkaEventBus::subscribe`] to the topic of `event_type`.
    pub fn subscribe_event_type(
        &self,
        event_type: &str,
        options: SubscriptionOptions,
        handler: EventHandler,
    ) -> Result<Subscription, OnexError> {
        let topic = self.namer.topic_for(event_type)?;
        self.subscribe(&[topic.as_str()], options, handler)
    }
}

impl EventPublisher for KafkaEventBus {
    fn publish(&self, event: OnexEvent) -> BoxFuture<'_, Result<(), OnexError>> {
        Box::pin(async move { self.publish_event(&event).await.map(|_| ()) })
    }

    /// Takes one token of the rate limit of `event.source`.
    fn admit(&self, event: &OnexEvent) -> Result<(), OnexError> {
        self.take_tokens(&event.source, 1)
    }

    fn publish_admitted(&self, event: OnexEvent) -> BoxFuture<'_, Result<(), OnexError>> {
        Box::pin(async move { self.deliver_event(&event).await.map(|_| ()) })
    }

    fn publish_batch(&self, events: Vec<OnexEvent>) -> BoxFuture<'_, Result<(), OnexError>> {
        Box::pin(async move { self.publish_events(&events).await.map(|_| ()) })
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use uuid::Uuid;

    use super::*;
    use crate::event::EventMetadata;
    use proptest::prelude::*;

    proptest! {
        /// The hand-written envelope is serde_json's, byte for byte, whatever the event holds.
        #[test]
        fn the_envelope_is_written_as_serde_json_writes_it(
            ids in (any::<u128>(), any::<u128>()),
            event_type in "[a-z.]{1,30}|.{0,12}",
            source in ".{0,20}",
            seconds in -62_135_596_800i64..253_402_300_800i64,
            nanos in prop_oneof![Just(0u32), 0u32..1_000_000_000],
            text in ".{0,16}",
            number in any::<f64>(),
            traced in any::<bool>(),
            state in proptest::option::of(".{0,8}"),
            environment in proptest::option::of("[a-z]{0,6}|.{0,6}"),
            extra in any::<bool>(),
        ) {
            let mut metadata = EventMetadata::default();
            if traced {
                metadata.trace_context.insert("traceparent".into(), text.clone());
                if let Some(state) = state {
                    metadata.trace_context.insert("tracestate".into(), state);
                }
                metadata.trace_timestamp = Some(Utc.timestamp_opt(seconds, nanos).unwrap());
                metadata.trace_service = Some(source.clone());
                metadata.trace_environment = environment;
            }
            if extra {
                metadata.extra.insert(text.clone(), serde_json::json!([number, text]));
            }
            let event = OnexEvent {
                event_id: Uuid::from_u128(ids.0),
                event_type,
                correlation_id: Uuid::from_u128(ids.1),
                timestamp: Utc.timestamp_opt(seconds, nanos).unwrap(),
                source,
                payload: serde_json::json!({"text": text, "number": number, "list": [1, null, true]}),
                metadata,
            };
            let mut written = Vec::new();
            let (event_id, correlation_id) = (event.event_id.to_string(), event.correlation_id.to_string());
            write_envelope(&mut written, &event, &event_id, &correlation_id, None).unwrap();
            prop_assert_eq!(String::from_utf8(written).unwrap(), serde_json::to_string(&event).unwrap());
        }
    }

    proptest! {
        /// A message stamped with the publishing span is what stamping a copy of the event and
        /// encoding it gave: the envelope stamped unless it had a context, and the headers
        /// naming the span first, in place of the envelope's carrier.
        #[test]
        fn a_stamped_message_is_the_stamped_copy_encoded(
            ids in (any::<u128>(), any::<u128>(), 1u128.., 1u64..),
            flags in 0u8..2,
            state in proptest::option::of("[a-z]{1,4}=[a-z0-9]{1,6}"),
            carried in proptest::option::of(("[0-9a-f-]{0,55}", proptest::option::of(".{0,8}"))),
            baggage in proptest::option::of(".{0,10}"),
            service in proptest::option::of("[a-z_]{0,12}|.{0,6}"),
            environment in proptest::option::of("[a-z]{0,6}|.{0,6}"),
            extra in any::<bool>(),
            seconds in 0i64..4_102_444_800i64,
            nanos in 0u32..1_000_000_000,
        ) {
            use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};
            let trace_state = match &state {
                Some(entry) => TraceState::from_key_value([entry.split_once('=').unwrap()]).unwrap(),
                None => TraceState::default(),
            };
            let span = SpanContext::new(
                TraceId::from(ids.2),
                SpanId::from(ids.3),
                TraceFlags::new(flags),
                false,
                trace_state,
            );
            let mut metadata = EventMetadata::default();
            if let Some((traceparent, tracestate)) = carried {
                metadata.trace_context.insert("traceparent".into(), traceparent);
                if let Some(tracestate) = tracestate {
                    metadata.trace_context.insert("tracestate".into(), tracestate);
                }
            }
            if let Some(baggage) = baggage {
                metadata.trace_context.insert("baggage".into(), baggage);
            }
            if extra {
                metadata.extra.insert("x".into(), serde_json::json!([1, "two"]));
            }
            let event = OnexEvent {
                event_id: Uuid::from_u128(ids.0),
                event_type: "node.answered".into(),
                correlation_id: Uuid::from_u128(ids.1),
                timestamp: Utc.timestamp_opt(seconds, nanos).unwrap(),
                source: "node".into(),
                payload: serde_json::Value::Null,
                metadata,
            };
            let at = Utc.timestamp_opt(seconds, nanos).unwrap();

            // Before: a copy of the event stamped, encoded, its headers' carrier replaced.
            let mut copy = event.clone();
            if copy.metadata.trace_context.is_empty() {
                copy.metadata.trace_context.extend(carrier::span_carrier(&span).map(|(k, v)| (k.to_owned(), v)));
                copy.metadata.trace_timestamp = Some(at);
                copy.metadata.trace_service = service.clone();
                copy.metadata.trace_environment = environment.clone();
            }
            let before = EncodedEvent::to_topic("t".into(), &copy).unwrap();
            let mut before_headers = before.headers.clone();
            before_headers.retain(|(key, _)| key != "traceparent" && key != "tracestate");
            before_headers.splice(0..0, carrier::span_carrier(&span).map(|(key, value)| (key.to_owned(), value)));

            let envelope = event.metadata.trace_context.is_empty().then_some(EnvelopeStamp {
                timestamp: at,
                service: service.as_deref(),
                environment: environment.as_deref(),
            });
            let stamp = SpanStamp {
                traceparent: carrier::traceparent_bytes(&span),
                tracestate: span.trace_state().header(),
                envelope,
            };
            let message = EventMessage::encode_stamped(&event, Some(stamp)).unwrap();
            let headers: Vec<(String, String)> = message
                .header_pairs(&mut uuid::Uuid::encode_buffer())
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            prop_assert_eq!(String::from_utf8(message.value.clone()).unwrap(), String::from_utf8(before.value).unwrap());
            prop_assert_eq!(headers, before_headers);
            prop_assert_eq!(message.key(), before.key.as_str());
        }
    }

    /// The bytes a consumer receives must not change when the encoding gets faster.
    #[test]
    fn an_event_encodes_to_the_same_bytes_as_before() {
        let mut metadata = EventMetadata::default();
        metadata
            .trace_context
            .insert("traceparent".into(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
        metadata.trace_context.insert("not-a-header".into(), "kept in the envelope only".into());
        let event = OnexEvent {
            event_id: Uuid::parse_str("6F1C2A9E-0B3D-4E5F-8A7B-1C2D3E4F5A6B").unwrap(),
            event_type: "postgres.query.completed".into(),
            correlation_id: Uuid::parse_str("00000000-0000-4000-8000-00000000000a").unwrap(),
            timestamp: Utc.timestamp_opt(1_764_770_000, 123_456_000).unwrap(),
            source: "node_postgres_adapter_effect".into(),
            payload: serde_json::json!({"database_type": "postgresql", "row_count": 1, "query_hash": "0f"}),
            metadata,
        };
        let encoded = EncodedEvent::new(&TopicNamer::default(), &event).unwrap();
        assert_eq!(encoded.topic, "dev.omnibase.onex.evt.postgres-query-completed.v1");
        assert_eq!(encoded.key, "00000000-0000-4000-8000-00000000000a");
        assert_eq!(
            String::from_utf8(encoded.value).unwrap(),
            concat!(
                r#"{"event_id":"6f1c2a9e-0b3d-4e5f-8a7b-1c2d3e4f5a6b","event_type":"postgres.query.completed","#,
                r#""correlation_id":"00000000-0000-4000-8000-00000000000a","timestamp":"2025-12-03T13:53:20.123456Z","#,
                r#""source":"node_postgres_adapter_effect","#,
                r#""payload":{"database_type":"postgresql","query_hash":"0f","row_count":1},"#,
                r#""metadata":{"trace_context":{"not-a-header":"kept in the envelope only","#,
                r#""traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}}"#,
            )
        );
        let headers: Vec<(&str, &str)> = encoded.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            headers,
            [
                ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
                ("onex-event-type", "postgres.query.completed"),
                ("onex-event-id", "6f1c2a9e-0b3d-4e5f-8a7b-1c2d3e4f5a6b"),
            ]
        );
    }
}
