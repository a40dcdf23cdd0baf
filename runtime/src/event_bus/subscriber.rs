//! Consuming events through a consumer group, at least once: a message's offset is stored
//! only after its handler succeeded, and stored offsets are committed in the background and
//! once more on [`Subscription::stop`].
//!
//! A message that keeps failing its handler, or that is not an ONEX event at all, goes to the
//! subscription's dead-letter topic ([`SubscriptionOptions::dead_letter`]; the bus always names
//! one) with the reason in its headers, and consumption moves on: one poison message never
//! stops a subscription. Its offset is stored only once the dead letter is acknowledged.
//! Without a dead-letter topic, such a handler stops the subscription *without* storing the
//! offset, so the group redelivers the message and nothing is lost.
//!
//! Tracing: with a [`Tracing`] in [`SubscriptionOptions::tracing`], each consumed event is one
//! CONSUMER span, `kafka.process`, whose parent is the producer's span named by the message's
//! `traceparent` header or, when the headers carry none, by the envelope's
//! `metadata.trace_context` (a message without either starts a new trace). It carries the
//! messaging conventions' attributes (`messaging.system`, `messaging.operation.type` =
//! `process`, `messaging.destination.name`, `messaging.destination.partition.id`,
//! `messaging.kafka.offset`, `messaging.consumer.group.name`) and covers every handler
//! attempt; the handler runs inside it, so spans the handler's work starts are its children,
//! and a handler that gives up records its error on it. A handler given a [`Context`]
//! ([`subscribe_with_context`]) finds the span as [`Context::trace`], so a node it calls
//! continues the trace. Without tracing the context's trace is the envelope's, if any.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::context::{Context, TraceContext};
use crate::error::{ErrorCode, OnexError};
use crate::event::OnexEvent;
use crate::event_bus::retry::RetryPolicy;
use crate::kafka::KafkaProducerPool;
use crate::kafka::config::consumer_properties;
use crate::models::kafka::KafkaProducerConfig;
use crate::node::BoxFuture;
use crate::sanitize::sanitize_message;
use crate::telemetry::{self, CorrelationId, KeyValue, OtelContext, SpanKind, Tracing, carrier};

/// Handles one event. An `Err` is retried (with backoff) before the subscription gives up.
pub type EventHandler = Arc<dyn Fn(OnexEvent) -> BoxFuture<'static, Result<(), OnexError>> + Send + Sync>;

/// Handles one event with the request context it arrived in: its correlation id, and as
/// [`Context::trace`] the consumer span (or, without tracing, the envelope's trace context).
pub type ContextEventHandler =
    Arc<dyn Fn(Context, OnexEvent) -> BoxFuture<'static, Result<(), OnexError>> + Send + Sync>;

/// How a subscription consumes.
#[derive(Debug, Clone)]
pub struct SubscriptionOptions {
    /// Consumer group.
    pub group_id: String,
    /// Handler attempts per message before the subscription stops (≥ 1).
    pub max_handler_attempts: u32,
    /// Backoff between handler attempts.
    pub handler_backoff: RetryPolicy,
    /// Spans of the consumed messages (see the module documentation); disabled by default.
    /// [`crate::event_bus::KafkaEventBus::subscribe`] fills in the bus's when this is disabled.
    pub tracing: Tracing,
    /// Where messages that cannot be handled go; `None` stops the subscription on the first
    /// such handler failure instead. [`crate::event_bus::KafkaEventBus::subscribe`] fills in
    /// `{env}.{tenant}.{context}.dlq.{group}.v1` on its own pool when this is `None`.
    pub dead_letter: Option<DeadLetter>,
}

/// A dead-letter destination: the topic, and the pool that publishes to it.
#[derive(Clone)]
pub struct DeadLetter {
    /// Publishes the dead letters.
    pub pool: Arc<KafkaProducerPool>,
    /// The topic.
    pub topic: String,
}

impl std::fmt::Debug for DeadLetter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetter").field("topic", &self.topic).finish_non_exhaustive()
    }
}

impl SubscriptionOptions {
    /// Group `group_id`, 5 handler attempts, 100 ms doubling backoff.
    pub fn new(group_id: impl Into<String>) -> Self {
        Self {
            group_id: group_id.into(),
            max_handler_attempts: 5,
            handler_backoff: RetryPolicy { max_retries: 4, ..RetryPolicy::default() },
            tracing: Tracing::disabled(),
            dead_letter: None,
        }
    }

    /// These options, sending messages that cannot be handled to `topic` through `pool`.
    pub fn with_dead_letter(mut self, pool: Arc<KafkaProducerPool>, topic: impl Into<String>) -> Self {
        self.dead_letter = Some(DeadLetter { pool, topic: topic.into() });
        self
    }

    /// These options, recording a CONSUMER span per message with `tracing` (unless it switched
    /// Kafka spans off).
    pub fn with_tracing(mut self, tracing: Tracing) -> Self {
        self.tracing = tracing.for_kafka();
        self
    }
}

/// Counters of a running subscription.
#[derive(Debug, Default)]
pub struct SubscriptionCounters {
    handled: AtomicU64,
    handler_failures: AtomicU64,
    invalid: AtomicU64,
    dead_lettered: AtomicU64,
}

impl SubscriptionCounters {
    /// Events whose handler succeeded (and whose offsets were stored).
    pub fn handled(&self) -> u64 {
        self.handled.load(Ordering::Relaxed)
    }

    /// Failed handler attempts.
    pub fn handler_failures(&self) -> u64 {
        self.handler_failures.load(Ordering::Relaxed)
    }

    /// Messages that were not an ONEX event envelope (they can never succeed).
    pub fn invalid(&self) -> u64 {
        self.invalid.load(Ordering::Relaxed)
    }

    /// Messages sent to the dead-letter topic.
    pub fn dead_lettered(&self) -> u64 {
        self.dead_lettered.load(Ordering::Relaxed)
    }
}

/// A running subscription. Dropping it stops consumption (without the final commit);
/// prefer [`Subscription::stop`].
#[derive(Debug)]
pub struct Subscription {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<Result<(), OnexError>>>,
    counters: Arc<SubscriptionCounters>,
}

impl Subscription {
    /// The subscription's counters.
    pub fn counters(&self) -> &SubscriptionCounters {
        &self.counters
    }

    /// Whether the consuming task ended (stopped, or gave up on a failing handler).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops consuming, commits the stored offsets and returns how the task ended: `Err` if a
    /// handler kept failing.
    pub async fn stop(mut self) -> Result<(), OnexError> {
        let _ = self.stop.send(true);
        match self.task.take() {
            Some(task) => task
                .await
                .map_err(|e| OnexError::new(ErrorCode::InternalError, format!("subscription task failed: {e}")))?,
            None => Ok(()),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

struct LoggingContext;

impl ClientContext for LoggingContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let message = sanitize_message(message);
        if (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
            tracing::warn!(facility, "librdkafka consumer: {message}");
        } else {
            tracing::debug!(facility, "librdkafka consumer: {message}");
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!("librdkafka consumer error {error}: {}", sanitize_message(reason));
    }
}

impl ConsumerContext for LoggingContext {}

/// Starts consuming `topics` in `options.group_id` on the cluster of `config`, calling
/// `handler` for each event. Must be called inside a tokio runtime.
pub fn subscribe(
    config: &KafkaProducerConfig,
    topics: &[&str],
    options: SubscriptionOptions,
    handler: EventHandler,
) -> Result<Subscription, OnexError> {
    subscribe_with_context(config, topics, options, Arc::new(move |_, event| handler(event)))
}

/// [`subscribe`] with a handler that receives each event's request [`Context`].
pub fn subscribe_with_context(
    config: &KafkaProducerConfig,
    topics: &[&str],
    options: SubscriptionOptions,
    handler: ContextEventHandler,
) -> Result<Subscription, OnexError> {
    if topics.is_empty() {
        return Err(OnexError::validation("subscribe needs at least one topic"));
    }
    if options.max_handler_attempts == 0 {
        return Err(OnexError::configuration("max_handler_attempts must be at least 1"));
    }
    let props = consumer_properties(config, &options.group_id)?;
    let consumer: StreamConsumer<LoggingContext> = props
        .to_client_config()
        .create_with_context(LoggingContext)
        .map_err(|e| OnexError::new(ErrorCode::ConfigurationError, "cannot create Kafka consumer").with_source(e))?;
    consumer.subscribe(topics).map_err(|e| {
        OnexError::new(ErrorCode::IntegrationServiceError, format!("cannot subscribe to {topics:?}")).with_source(e)
    })?;
    let (stop, stopped) = watch::channel(false);
    let counters = Arc::new(SubscriptionCounters::default());
    let task = tokio::spawn(consume(consumer, options, handler, stopped, Arc::clone(&counters)));
    Ok(Subscription { stop, task: Some(task), counters })
}

async fn consume(
    consumer: StreamConsumer<LoggingContext>,
    options: SubscriptionOptions,
    handler: ContextEventHandler,
    mut stopped: watch::Receiver<bool>,
    counters: Arc<SubscriptionCounters>,
) -> Result<(), OnexError> {
    let mut outcome = Ok(());
    let mut receive_errors = 0u32;
    loop {
        let message = tokio::select! {
            _ = stopped.changed() => break,
            message = consumer.recv() => message,
        };
        let message = match message {
            Ok(message) => {
                receive_errors = 0;
                message
            }
            Err(e) => {
                // Transient consumer errors (broker away, rebalance): librdkafka recovers by
                // itself; back off so a persistent error does not spin.
                tracing::warn!(group = %options.group_id, "consume error: {e}");
                let delay = options.handler_backoff.delay(receive_errors.min(6));
                receive_errors += 1;
                tokio::select! {
                    _ = stopped.changed() => break,
                    () = tokio::time::sleep(delay) => continue,
                }
            }
        };
        match decode(&message) {
            Ok(event) => {
                let handled = if options.tracing.is_enabled() {
                    let cx = consumer_span(&options, &message, &event);
                    let ctx = request_context(&event, trace_of(&cx));
                    let handled = telemetry::in_span(
                        cx.clone(),
                        handle_with_retries(&handler, ctx, event, &options, &counters, &mut stopped),
                    )
                    .await;
                    if let Err(e) = &handled {
                        telemetry::span::record_error_on(&cx, e);
                    }
                    handled
                } else {
                    let trace = envelope_trace(&event);
                    let ctx = request_context(&event, trace);
                    handle_with_retries(&handler, ctx, event, &options, &counters, &mut stopped).await
                };
                match handled {
                    Ok(()) => {
                        counters.handled.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => match &options.dead_letter {
                        Some(sink) if dead_letter(sink, &message, e.message()).await.is_ok() => {
                            counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            outcome = Err(e);
                            break;
                        }
                    },
                }
            }
            Err(e) => {
                counters.invalid.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    topic = message.topic(),
                    offset = message.offset(),
                    "a message that is not an ONEX event: {e}"
                );
                if let Some(sink) = &options.dead_letter {
                    match dead_letter(sink, &message, e.message()).await {
                        Ok(()) => {
                            counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            outcome = Err(e);
                            break;
                        }
                    }
                }
            }
        }
        if let Err(e) = consumer.store_offset_from_message(&message) {
            tracing::warn!("cannot store offset {} of {}: {e}", message.offset(), message.topic());
        }
    }
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => {}
        Err(KafkaError::ConsumerCommit(rdkafka::error::RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => tracing::warn!(group = %options.group_id, "final offset commit failed: {e}"),
    }
    consumer.unsubscribe();
    outcome
}

/// Sends `message` as it came (value and key) to the dead-letter topic, with `onex-dlq-reason`,
/// `-topic`, `-partition` and `-offset` headers, and waits for the broker's acknowledgement.
async fn dead_letter(sink: &DeadLetter, message: &BorrowedMessage<'_>, reason: &str) -> Result<(), OnexError> {
    let (partition, offset) = (message.partition().to_string(), message.offset().to_string());
    let headers = crate::kafka::headers([
        ("onex-dlq-reason", reason),
        ("onex-dlq-topic", message.topic()),
        ("onex-dlq-partition", partition.as_str()),
        ("onex-dlq-offset", offset.as_str()),
    ]);
    let mut record = crate::kafka::ProduceRecord::new(&sink.topic, message.payload().unwrap_or_default());
    if let Some(key) = message.key() {
        record = record.key(key);
    }
    tracing::warn!(topic = message.topic(), offset = message.offset(), dead_letter = %sink.topic, "dead-lettering: {reason}");
    sink.pool.publish(record, Some(headers)).await.map(|_| ()).map_err(|e| {
        OnexError::new(
            ErrorCode::IntegrationServiceError,
            format!("cannot dead-letter offset {offset} of {}; stopping without committing it: {e}", message.topic()),
        )
    })
}

/// The CONSUMER span of one message, as the context its handler runs in (see the module
/// documentation); the span ends when the last clone of the context is dropped.
fn consumer_span(options: &SubscriptionOptions, message: &BorrowedMessage<'_>, event: &OnexEvent) -> OtelContext {
    let parent = carrier::extract_parent(message.headers(), Some(&event.metadata.trace_context)).unwrap_or_default();
    let mut span = options.tracing.span_in("kafka.process", SpanKind::Consumer, &parent);
    if span.is_recording() {
        span.set_attributes([
            KeyValue::new("messaging.system", "kafka"),
            KeyValue::new("messaging.operation.type", "process"),
            KeyValue::new("messaging.operation.name", "process"),
            KeyValue::new("messaging.destination.name", message.topic().to_owned()),
            KeyValue::new("messaging.destination.partition.id", message.partition().to_string()),
            KeyValue::new("messaging.kafka.offset", message.offset()),
            KeyValue::new("messaging.consumer.group.name", options.group_id.clone()),
            KeyValue::new("messaging.message.body.size", message.payload_len() as i64),
            KeyValue::new("onex.event.type", event.event_type.clone()),
            KeyValue::new("onex.event.id", event.event_id.to_string()),
            KeyValue::new("correlation_id", event.correlation_id.to_string()),
        ]);
        if let Some(key) = message.key().and_then(|key| std::str::from_utf8(key).ok()) {
            span.set_attribute(KeyValue::new("messaging.kafka.message.key", key.to_owned()));
        }
    }
    span.into_context(&parent).with_value(CorrelationId(event.correlation_id))
}

/// The trace context of the active span of `cx`, if valid.
fn trace_of(cx: &OtelContext) -> Option<TraceContext> {
    use opentelemetry::trace::TraceContextExt as _;
    let span = cx.span();
    let span = span.span_context();
    span.is_valid().then(|| carrier::trace_context_of(span))
}

/// The envelope's own trace context (its `traceparent`), if it carries a valid one.
fn envelope_trace(event: &OnexEvent) -> Option<TraceContext> {
    let mut trace = TraceContext::parse_traceparent(event.metadata.trace_context.get("traceparent")?).ok()?;
    trace.trace_state = event.metadata.trace_context.get("tracestate").cloned();
    Some(trace)
}

/// The request context a handler receives for `event`.
fn request_context(event: &OnexEvent, trace: Option<TraceContext>) -> Context {
    // A nil correlation id would correlate unrelated requests: such an event gets a new one.
    let ctx = Context::for_request(Some(event.correlation_id)).unwrap_or_default();
    match trace {
        Some(trace) => ctx.with_trace(trace),
        None => ctx,
    }
}

async fn handle_with_retries(
    handler: &ContextEventHandler,
    ctx: Context,
    event: OnexEvent,
    options: &SubscriptionOptions,
    counters: &SubscriptionCounters,
    stopped: &mut watch::Receiver<bool>,
) -> Result<(), OnexError> {
    let mut attempt = 0;
    loop {
        match handler(ctx.clone(), event.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                counters.handler_failures.fetch_add(1, Ordering::Relaxed);
                attempt += 1;
                if attempt >= options.max_handler_attempts || *stopped.borrow() {
                    return Err(OnexError::new(
                        ErrorCode::IntegrationServiceError,
                        format!(
                            "event handler failed {attempt} times for event {} ({}): {e}",
                            event.event_id, event.event_type
                        ),
                    )
                    .with_detail("event_id", event.event_id.to_string()));
                }
                let delay: Duration = options.handler_backoff.delay(attempt - 1);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Parses the envelope; fills `metadata.trace_context` from the message headers when the
/// envelope carries none.
fn decode(message: &BorrowedMessage<'_>) -> Result<OnexEvent, OnexError> {
    let payload = message.payload().ok_or_else(|| OnexError::validation("message has no value"))?;
    let mut event: OnexEvent = serde_json::from_slice(payload)
        .map_err(|e| OnexError::validation(format!("value is not an ONEX event envelope: {e}")))?;
    if event.metadata.trace_context.is_empty()
        && let Some(headers) = message.headers()
    {
        for header in headers.iter() {
            if matches!(header.key, "traceparent" | "tracestate" | "baggage")
                && let Some(value) = header.value.and_then(|v| std::str::from_utf8(v).ok())
            {
                event.metadata.trace_context.insert(header.key.to_owned(), value.to_owned());
            }
        }
    }
    Ok(event)
}
