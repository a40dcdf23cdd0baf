// The handler of `node_kafka_producer_pool_effect` v1.0.0: Publishes messages to Kafka through a bounded pool of 2 to 10 producers, waiting for broker acknowledgement, and reports pool statistics and health.
//
// Created once by `cargo run -p codegen` from contracts/nodes/node_kafka_producer_pool_effect/v1_0_0/contract.yaml.
// From then on this file is owned by people: regeneration never overwrites it.
//
// The handler is a thin adapter over `onex_runtime::kafka::KafkaProducerPool`, resolved from
// the container (no global pool). Invalid input is an `Err` (VALIDATION_ERROR); a delivery the
// broker refused is reported in the output (`success: false`, `errors`), since the operation
// itself ran.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::Poll;
use std::time::Duration;

use chrono::Utc;
use onex_runtime::event::OnexEvent;
use onex_runtime::kafka::{self, Delivered, OwnedHeaders, ProduceRecord};
use onex_runtime::models::health::HealthStatus;
use onex_runtime::{Container, Context, ErrorCode, OnexError, OperationSpec};

use super::contract::OPERATION_SEND_MESSAGE;

use super::handler::{Dependencies, Input, KafkaProducerPoolHandler, Output};
use super::models::{
    EnumKafkaProducerPoolOperation, ModelKafkaDeliveryReport, ModelKafkaMessage, ModelKafkaProducerError,
};

const NODE: &str = "node_kafka_producer_pool_effect";

/// Implements the operations of `node_kafka_producer_pool_effect`.
pub struct KafkaProducerPool {
    /// The contract's dependencies, resolved from the container.
    pub dependencies: Dependencies,
    /// The health reported last, to publish changes only.
    last_health: Mutex<Option<HealthStatus>>,
}

/// A message of the request, encoded and validated; borrows the request's strings.
struct Outgoing<'a> {
    topic: &'a str,
    key: Option<&'a str>,
    /// The encoded value; `None` is a tombstone.
    value: Option<&'a [u8]>,
    headers: Option<OwnedHeaders>,
    partition: Option<i32>,
}

impl Outgoing<'_> {
    fn record(&self) -> ProduceRecord<'_> {
        let mut record = match self.value {
            Some(value) => ProduceRecord::new(self.topic, value),
            None => ProduceRecord::tombstone(self.topic),
        };
        if let Some(key) = self.key {
            record = record.key(key.as_bytes());
        }
        if let Some(partition) = self.partition {
            record = record.partition(partition);
        }
        record
    }
}

/// Checks what would make a message unsendable (an empty topic, a partition out of range);
/// returns the partition as librdkafka takes it.
fn check(topic: &str, partition: Option<u64>) -> Result<Option<i32>, OnexError> {
    if topic.trim().is_empty() {
        return Err(OnexError::validation("topic must not be empty"));
    }
    partition
        .map(|p| {
            i32::try_from(p)
                .map_err(|_| OnexError::validation(format!("partition {p} is out of range (max {})", i32::MAX)))
        })
        .transpose()
}

/// Encodes a checked message, its JSON value into `buffer` (librdkafka copies the bytes on
/// send, so a batch reuses one buffer from message to message).
fn encode<'a>(
    topic: &'a str,
    key: Option<&'a String>,
    value: Option<&serde_json::Value>,
    headers: Option<&std::collections::BTreeMap<String, String>>,
    partition: Option<i32>,
    buffer: &'a mut Vec<u8>,
) -> Result<Outgoing<'a>, OnexError> {
    buffer.clear();
    let value = match value {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => {
            onex_runtime::json::append_json(buffer, v).map_err(|e| {
                OnexError::new(ErrorCode::InternalError, format!("cannot encode the message value: {e}"))
            })?;
            Some(buffer.as_slice())
        }
    };
    let headers = headers.map(|map| kafka::headers(map.iter().map(|(k, v)| (k.as_str(), v.as_str()))));
    Ok(Outgoing { topic, key: key.map(String::as_str), value, headers, partition })
}

/// The wait for delivery reports: the request's `timeout_seconds` (> 0), capped by the
/// operation's budget.
fn wait_limit(input: &Input, ctx: &Context, default: Duration) -> Result<Duration, OnexError> {
    let requested = match input.timeout_seconds {
        None => default,
        Some(s) if s.is_finite() && s > 0.0 => Duration::from_secs_f64(s.min(86_400.0)),
        Some(s) => return Err(OnexError::validation(format!("timeout_seconds must be greater than zero, got {s}"))),
    };
    Ok(ctx.budget(requested))
}

fn output(operation: EnumKafkaProducerPoolOperation, ctx: &Context) -> Output {
    Output::new(true, operation, ctx.correlation_id(), Utc::now())
}

fn failure(error: &OnexError, index: Option<u64>, topic: Option<&str>) -> ModelKafkaProducerError {
    ModelKafkaProducerError { code: error.code(), message: error.to_string(), index, topic: topic.map(str::to_owned) }
}

fn no_report(limit: Duration) -> OnexError {
    OnexError::new(
        ErrorCode::OperationTimeout,
        format!("no delivery report within {} ms; the message may still be delivered", limit.as_millis()),
    )
}

fn no_room(limit: Duration) -> OnexError {
    OnexError::new(
        ErrorCode::OperationTimeout,
        format!("the producer's queue had no room within {} ms; the message was not sent", limit.as_millis()),
    )
}

/// Sends one message and waits for its report under one timer, which ends at whichever comes
/// first: `limit` from now (the request's wait, answered in the output like any failed
/// delivery: [`no_room`] while the message waits for room in the producer's queue,
/// [`no_report`] after) or the operation's deadline (the node narrowed the context to the
/// contract timeout: answered as the node's timer answers, an `OPERATION_TIMEOUT` error).
/// One timer instead of the node's and the report's: each costs a request a registration in
/// tokio's timer wheel.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn would store its arguments twice in the future (see onex_runtime::node::dispatch)"
)]
fn deliver<'a>(
    pool: &'a kafka::KafkaProducerPool,
    record: ProduceRecord<'a>,
    headers: Option<OwnedHeaders>,
    ctx: &'a Context,
    limit: Duration,
) -> impl Future<Output = Result<Result<Delivered, OnexError>, OnexError>> + Send + 'a {
    async move {
        let started = std::time::Instant::now();
        let wait_ends = started + limit;
        let operation_ends = ctx.deadline().unwrap_or(wait_ends);
        let elapsed = |enqueued: bool| {
            if wait_ends < operation_ends {
                Ok(Err(if enqueued { no_report(limit) } else { no_room(limit) }))
            } else {
                let left = operation_ends.saturating_duration_since(started);
                Err(onex_runtime::node::timed_out(NODE, &OPERATION_SEND_MESSAGE, left))
            }
        };
        // Polled by hand, each future pinned where it is: `tokio::time::timeout` would move the
        // send's future into its own. The timer registers on its first poll, so a message that
        // finds room at once registers it only while waiting for the report.
        let mut timer = std::pin::pin!(tokio::time::sleep_until(wait_ends.min(operation_ends).into()));
        // The send's future ends in this block, so the wait for the report below reuses its
        // place: every request in flight holds this future while it waits.
        let sent = {
            let mut send = std::pin::pin!(pool.send(record, headers));
            std::future::poll_fn(|cx| match send.as_mut().poll(cx) {
                Poll::Ready(sent) => Poll::Ready(Some(sent)),
                Poll::Pending => timer.as_mut().poll(cx).map(|()| None),
            })
            .await
        };
        let mut delivery = match sent {
            Some(Ok(delivery)) => delivery,
            Some(Err(refused)) => return Ok(Err(refused)),
            None => return elapsed(false),
        };
        std::future::poll_fn(|cx| match Pin::new(&mut delivery).poll(cx) {
            Poll::Ready(delivered) => Poll::Ready(Ok(delivered)),
            Poll::Pending => timer.as_mut().poll(cx).map(|()| elapsed(true)),
        })
        .await
    }
}

impl KafkaProducerPool {
    /// `send_batch`: every message checked, then all sent, then all reports awaited.
    async fn send_all(&self, mut input: Input, ctx: &Context) -> Result<Output, OnexError> {
        let limit = wait_limit(&input, ctx, Duration::from_secs(60))?;
        // Taken by value: each message's topic string moves into its delivery report instead
        // of being copied (one allocation less per message).
        let messages: Vec<ModelKafkaMessage> = input.messages.take().unwrap_or_default();
        if messages.is_empty() {
            return Err(OnexError::validation("send_batch needs at least one message"));
        }
        // Every message is checked before the first is sent: a bad one fails the whole request.
        let mut partitions = Vec::with_capacity(messages.len());
        for (i, m) in messages.iter().enumerate() {
            let partition = check(&m.topic, m.partition).map_err(|e| {
                OnexError::validation(format!("messages[{i}]: {}", e.message())).with_detail("index", i)
            })?;
            partitions.push(partition);
        }
        // Enqueue everything first (in order), then wait for all reports under one deadline:
        // one timer and one wake-up for the batch, and no allocation per message (the pool's
        // `SendBatch`). Values are encoded one at a time into one small buffer: no per-batch
        // copy of every payload. Each message's key, value and headers are freed as soon as
        // librdkafka has copied them; only its topic is kept, for its report, so a large batch
        // does not hold its payloads until the last report.
        // A pool that cannot take the batch (shut down, say) fails each message in the output,
        // as a refused send does.
        let batch = self.dependencies.kafka_producer_pool.batch(messages.len());
        let mut topics: Vec<String> = Vec::with_capacity(messages.len());
        let mut refused: Vec<(usize, OnexError)> = Vec::new();
        let mut buffer = Vec::new();
        for (i, (m, partition)) in messages.into_iter().zip(partitions).enumerate() {
            let encoded = encode(&m.topic, m.key.as_ref(), Some(&m.value), m.headers.as_ref(), partition, &mut buffer);
            let sent = match encoded {
                Ok(mut message) => {
                    let headers = message.headers.take();
                    match &batch {
                        Ok(batch) => batch.send(i, message.record(), headers).await,
                        Err(e) => Err(e.clone()),
                    }
                }
                Err(e) => Err(e),
            };
            if let Err(e) = sent {
                refused.push((i, e));
            }
            topics.push(m.topic);
        }
        let reported = match &batch {
            Ok(batch) => batch.wait(limit).await,
            Err(_) => true,
        };
        if !reported {
            tracing::warn!("{NODE}.send_batch: delivery reports missing after {} ms", limit.as_millis());
        }
        let mut deliveries = Vec::with_capacity(topics.len() - refused.len());
        let mut errors = Vec::new();
        let mut refused = refused.into_iter().peekable();
        for (i, topic) in topics.into_iter().enumerate() {
            let outcome = match refused.next_if(|(r, _)| *r == i) {
                Some((_, e)) => Err(e),
                None => batch.as_ref().ok().and_then(|b| b.outcome(i)).unwrap_or_else(|| Err(no_report(limit))),
            };
            match outcome {
                Ok(d) => deliveries.push(ModelKafkaDeliveryReport {
                    index: i as u64,
                    topic,
                    partition: u64::try_from(d.partition).unwrap_or_default(),
                    offset: u64::try_from(d.offset).unwrap_or_default(),
                }),
                Err(e) => errors.push(failure(&e, Some(i as u64), Some(&topic))),
            }
        }
        let mut out = output(EnumKafkaProducerPoolOperation::SendBatch, ctx);
        out.success = errors.is_empty();
        out.delivered = Some(deliveries.len() as u64);
        out.failed = Some(errors.len() as u64);
        out.deliveries = Some(deliveries);
        out.errors = (!errors.is_empty()).then_some(errors);
        Ok(out)
    }

    async fn report_health_change(&self, status: HealthStatus, ctx: &Context) {
        let changed = {
            let mut last = self.last_health.lock().unwrap_or_else(|p| p.into_inner());
            let changed = last.is_some_and(|previous| previous != status);
            *last = Some(status);
            changed
        };
        let Some(bus) = &self.dependencies.protocol_event_bus else { return };
        if changed {
            let event = OnexEvent::new(
                "kafka.pool.health_changed",
                NODE,
                ctx.correlation_id(),
                serde_json::json!({ "pool": self.dependencies.kafka_producer_pool.settings().pool_name, "status": status }),
            );
            // The health answer stands even if the notification cannot be published.
            if let Err(e) = bus.publish(event).await {
                tracing::warn!("cannot publish the Kafka pool health change: {e}");
            }
        }
    }
}

impl KafkaProducerPoolHandler for KafkaProducerPool {
    fn new(container: &Container) -> Result<Self, OnexError> {
        Ok(Self { dependencies: Dependencies::resolve(container)?, last_health: Mutex::new(None) })
    }

    /// `send_message` bounds its send and its report by the deadline itself (see `deliver`).
    fn times_itself(operation: &OperationSpec) -> bool {
        operation.name == OPERATION_SEND_MESSAGE.name
    }

    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn would store its arguments twice in the future (see onex_runtime::node::dispatch)"
    )]
    fn send_message(&self, input: Input, ctx: &Context) -> impl Future<Output = Result<Output, OnexError>> + Send {
        async move {
            let topic = input.topic.as_deref().ok_or_else(|| OnexError::validation("send_message needs a topic"))?;
            let limit = wait_limit(&input, ctx, Duration::from_secs(30))?;
            let partition = check(topic, input.partition)?;
            let mut buffer = Vec::new();
            let mut message = encode(
                topic,
                input.key.as_ref(),
                input.value.as_ref(),
                input.headers.as_ref(),
                partition,
                &mut buffer,
            )?;
            let pool = &self.dependencies.kafka_producer_pool;
            let headers = message.headers.take();
            let sent = deliver(pool, message.record(), headers, ctx, limit).await?;
            // Built once the message is answered: held across the wait, the output would enlarge
            // every in-flight request's future by its size.
            let mut out = output(EnumKafkaProducerPoolOperation::SendMessage, ctx);
            match sent {
                Ok(delivered) => {
                    out.delivered = Some(1);
                    out.failed = Some(0);
                    out.partition = u64::try_from(delivered.partition).ok();
                    out.offset = u64::try_from(delivered.offset).ok();
                }
                Err(e) => {
                    out.success = false;
                    out.delivered = Some(0);
                    out.failed = Some(1);
                    out.errors = Some(vec![failure(&e, None, Some(topic))]);
                }
            }
            Ok(out)
        }
    }

    async fn send_batch(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        // Boxed: a node's future is as large as its largest operation, and every in-flight
        // `send_message` would carry the batch's state. One allocation per batch.
        Box::pin(self.send_all(input, ctx)).await
    }

    async fn flush(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        let limit = wait_limit(&input, ctx, Duration::from_secs(30))?;
        let mut out = output(EnumKafkaProducerPoolOperation::Flush, ctx);
        if let Err(e) = self.dependencies.kafka_producer_pool.flush(limit).await {
            out.success = false;
            out.errors = Some(vec![failure(&e, None, None)]);
        }
        Ok(out)
    }

    async fn get_pool_stats(&self, _input: Input, ctx: &Context) -> Result<Output, OnexError> {
        let mut out = output(EnumKafkaProducerPoolOperation::GetPoolStats, ctx);
        out.pool_stats = Some(self.dependencies.kafka_producer_pool.stats());
        Ok(out)
    }

    async fn health_check(&self, _input: Input, ctx: &Context) -> Result<Output, OnexError> {
        let pool = &self.dependencies.kafka_producer_pool;
        let health = pool.health_check().await;
        self.report_health_change(health.status, ctx).await;
        let mut out = output(EnumKafkaProducerPoolOperation::HealthCheck, ctx);
        out.health_status = Some(health.status);
        out.pool_stats = Some(pool.stats());
        if !health.errors.is_empty() {
            out.errors = Some(
                health
                    .errors
                    .iter()
                    .map(|message| ModelKafkaProducerError {
                        code: ErrorCode::IntegrationServiceError,
                        message: message.clone(),
                        index: None,
                        topic: None,
                    })
                    .collect(),
            );
        }
        Ok(out)
    }

    async fn close(&self, _input: Input, ctx: &Context) -> Result<Output, OnexError> {
        let pool = &self.dependencies.kafka_producer_pool;
        let report = pool.shutdown().await?;
        let mut out = output(EnumKafkaProducerPoolOperation::Close, ctx);
        out.success = report.undelivered == 0;
        out.failed = Some(report.undelivered);
        out.pool_stats = Some(pool.stats());
        if report.undelivered > 0 {
            out.errors = Some(vec![ModelKafkaProducerError {
                code: ErrorCode::OperationTimeout,
                message: format!("{} messages were still unreported at the shutdown deadline", report.undelivered),
                index: None,
                topic: None,
            }]);
        }
        Ok(out)
    }
}
