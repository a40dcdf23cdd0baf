//! Consuming events through a consumer group, at least once: a message's offset is stored
//! only after its handler succeeded, and stored offsets are committed in the background and
//! once more on [`Subscription::stop`]. A handler that keeps failing stops the subscription
//! *without* storing the offset, so the group redelivers that message.

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

use crate::error::{ErrorCode, OnexError};
use crate::event::OnexEvent;
use crate::event_bus::retry::RetryPolicy;
use crate::kafka::config::consumer_properties;
use crate::models::kafka::KafkaProducerConfig;
use crate::node::BoxFuture;
use crate::sanitize::sanitize_message;

/// Handles one event. An `Err` is retried (with backoff) before the subscription gives up.
pub type EventHandler = Arc<dyn Fn(OnexEvent) -> BoxFuture<'static, Result<(), OnexError>> + Send + Sync>;

/// How a subscription consumes.
#[derive(Debug, Clone)]
pub struct SubscriptionOptions {
    /// Consumer group.
    pub group_id: String,
    /// Handler attempts per message before the subscription stops (≥ 1).
    pub max_handler_attempts: u32,
    /// Backoff between handler attempts.
    pub handler_backoff: RetryPolicy,
}

impl SubscriptionOptions {
    /// Group `group_id`, 5 handler attempts, 100 ms doubling backoff.
    pub fn new(group_id: impl Into<String>) -> Self {
        Self {
            group_id: group_id.into(),
            max_handler_attempts: 5,
            handler_backoff: RetryPolicy { max_retries: 4, ..RetryPolicy::default() },
        }
    }
}

/// Counters of a running subscription.
#[derive(Debug, Default)]
pub struct SubscriptionCounters {
    handled: AtomicU64,
    handler_failures: AtomicU64,
    invalid: AtomicU64,
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

    /// Messages that were not an ONEX event envelope (skipped: they can never succeed).
    pub fn invalid(&self) -> u64 {
        self.invalid.load(Ordering::Relaxed)
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
    handler: EventHandler,
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
                if let Err(e) = handle_with_retries(&handler, event, &options, &counters, &mut stopped).await {
                    outcome = Err(e);
                    break;
                }
                counters.handled.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                counters.invalid.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    topic = message.topic(),
                    offset = message.offset(),
                    "skipping a message that is not an ONEX event: {e}"
                );
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

async fn handle_with_retries(
    handler: &EventHandler,
    event: OnexEvent,
    options: &SubscriptionOptions,
    counters: &SubscriptionCounters,
    stopped: &mut watch::Receiver<bool>,
) -> Result<(), OnexError> {
    let mut attempt = 0;
    loop {
        match handler(event.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                counters.handler_failures.fetch_add(1, Ordering::Relaxed);
                attempt += 1;
                if attempt >= options.max_handler_attempts || *stopped.borrow() {
                    return Err(OnexError::new(
                        ErrorCode::IntegrationServiceError,
                        format!(
                            "event handler failed {attempt} times for event {} ({}); stopping without committing it: {e}",
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
