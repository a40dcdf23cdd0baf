//! Answering one fetched message: decode, run the node (again, for retriable errors), publish
//! the answer and, when the request cannot be served, a dead letter. Returns only once what it
//! published is acknowledged by the broker, so its offset may then be committed.

use std::collections::{HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use onex_runtime::event_bus::{EncodedEvent, TopicNamer};
use onex_runtime::kafka::{KafkaProducerPool, ProduceRecord, headers};
use onex_runtime::{DynNode, ErrorCode, NodeContract, OnexError};
use tokio::sync::watch;
use uuid::Uuid;

use crate::counters::HostCounters;
use crate::request::Request;
use crate::routes::Routes;

/// A node as the host serves it.
pub struct ServedNode {
    /// Its contract.
    pub contract: &'static NodeContract,
    /// The node.
    pub node: Box<dyn DynNode>,
    /// Its topics.
    pub routes: Routes,
}

/// What every answering task shares.
pub struct Answering {
    pub(crate) pool: Arc<KafkaProducerPool>,
    pub(crate) namer: TopicNamer,
    pub(crate) counters: HostCounters,
    pub(crate) max_attempts: u32,
    pub(crate) retry_backoff: Duration,
    /// `source` of every answer.
    pub(crate) source: String,
    /// Event ids answered lately, to count redeliveries.
    pub(crate) recent: Mutex<RecentIds>,
    /// Set when the shutdown deadline passed: publishing stops retrying, so the task ends
    /// and its offset stays uncommitted (the request is redelivered to another host).
    pub(crate) abandon: watch::Receiver<bool>,
}

/// One fetched message, detached from the consumer.
#[derive(Debug)]
pub struct Fetched {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub traceparent: Option<String>,
}

/// Errors worth running the request again for: the node could not reach what it needs, or ran
/// out of time on its own limit (not the request's deadline, which a second run cannot meet).
fn retriable(error: &OnexError) -> bool {
    matches!(
        error.code(),
        ErrorCode::IntegrationServiceUnavailable | ErrorCode::DatabaseConnectionFailed | ErrorCode::OperationTimeout
    )
}

/// Answers `message` for `served`. Returns whether everything it published was acknowledged.
pub async fn answer(shared: &Answering, served: &ServedNode, message: &Fetched) -> bool {
    let (Reply { encoded, topic, poison }, attempts) = match run_to_reply(shared, served, message).await {
        Ok(replied) => replied,
        Err(reason) => {
            shared.counters.invalid.inc();
            tracing::warn!(topic = %message.topic, offset = message.offset, "dead-lettering a message that is not a request: {reason}");
            // Boxed, like every path taken rarely: the task's future, allocated for every
            // request, is only as large as its common path needs.
            return Box::pin(dead_letter(shared, served, message, &reason, 0)).await;
        }
    };
    let mut acknowledged = match &encoded {
        Some(encoded) => publish(shared, topic, encoded).await,
        None => false,
    };
    if let Some(reason) = poison {
        acknowledged &= Box::pin(dead_letter(shared, served, message, &reason, attempts)).await;
    }
    acknowledged
}

/// Decodes the request, runs the node and makes the reply, with the node's runs; the error says
/// why the message is not a request.
async fn run_to_reply<'a>(
    shared: &Answering,
    served: &'a ServedNode,
    message: &Fetched,
) -> Result<(Reply<'a>, u32), String> {
    let request = Request::decode(message.value.as_deref(), message.traceparent.as_deref())?;
    if shared.recent.lock().unwrap_or_else(|p| p.into_inner()).seen(request.event.event_id) {
        shared.counters.duplicates.inc();
    }
    let (outcome, attempts) = run(shared, served, &request).await;
    Ok((reply(shared, served, request, outcome, attempts), attempts))
}

/// What answers a request.
struct Reply<'a> {
    /// The answer, ready to send; `None` when it cannot be encoded (logged).
    encoded: Option<EncodedEvent>,
    topic: &'a str,
    /// Why the request goes to the dead-letter topic as well, if it does.
    poison: Option<String>,
}

/// The reply to `request`. Takes the request and the node's output by value: the output becomes
/// the answer's payload without a copy, and neither the request nor the answer's envelope is
/// kept while the encoded answer is published.
fn reply<'a>(
    shared: &Answering,
    served: &'a ServedNode,
    request: Request,
    outcome: Result<serde_json::Value, OnexError>,
    attempts: u32,
) -> Reply<'a> {
    let name = served.contract.name;
    let (answer, topic, poison) = match outcome {
        Ok(output) => {
            shared.counters.completed.inc();
            (request.completed(name, &shared.source, output), &served.routes.completed, None)
        }
        Err(error) => {
            shared.counters.failed.inc();
            let poison =
                (retriable(&error) && attempts >= shared.max_attempts) || error.code() == ErrorCode::InternalError;
            let answer = request.failed(name, &shared.source, &error, attempts);
            (answer, &served.routes.failed, poison.then(|| error.to_string()))
        }
    };
    let encoded = EncodedEvent::new(&shared.namer, &answer)
        .inspect_err(|e| tracing::error!("cannot encode the answer {}: {e}", answer.event_id))
        .ok();
    Reply { encoded, topic, poison }
}

/// Runs the node until it answers, a non-retriable error, the last attempt or the deadline.
async fn run(
    shared: &Answering,
    served: &ServedNode,
    request: &Request,
) -> (Result<serde_json::Value, OnexError>, u32) {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let call = served.node.process_json(request.event.payload.clone(), request.context());
        let outcome = match AssertUnwindSafe(call).catch_unwind().await {
            Ok(outcome) => outcome,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(OnexError::new(ErrorCode::InternalError, format!("{} panicked: {what}", served.contract.name)))
            }
        };
        let again = match &outcome {
            Err(e) => {
                retriable(e) && attempt < shared.max_attempts && request.deadline.is_none_or(|d| d > Instant::now())
            }
            Ok(_) => false,
        };
        if !again {
            return (outcome, attempt);
        }
        shared.counters.retried.inc();
        let backoff = shared.retry_backoff.saturating_mul(1 << (attempt - 1).min(10));
        Box::pin(tokio::time::sleep(backoff)).await;
    }
}

/// Publishes `encoded` to `topic` until the broker acknowledges it or the shutdown deadline
/// passes (then `false`).
async fn publish(shared: &Answering, topic: &str, encoded: &EncodedEvent) -> bool {
    let header_pairs = || encoded.headers.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    send(shared, ProduceRecord::new(topic, &encoded.value).key(encoded.key.as_bytes()), header_pairs).await
}

/// Sends the request as it came, to the node's dead-letter topic, with why and how often it
/// was tried in its headers.
async fn dead_letter(shared: &Answering, served: &ServedNode, message: &Fetched, reason: &str, attempts: u32) -> bool {
    let value = message.value.as_deref().unwrap_or_default();
    let (attempts, partition, offset) =
        (attempts.to_string(), message.partition.to_string(), message.offset.to_string());
    let header_pairs = || {
        [
            ("onex-dlq-reason", reason),
            ("onex-dlq-node", served.contract.name),
            ("onex-dlq-attempts", attempts.as_str()),
            ("onex-dlq-topic", message.topic.as_str()),
            ("onex-dlq-partition", partition.as_str()),
            ("onex-dlq-offset", offset.as_str()),
        ]
        .into_iter()
    };
    let mut record = ProduceRecord::new(&served.routes.dead_letter, value);
    if let Some(key) = &message.key {
        record = record.key(key);
    }
    let sent = send(shared, record, header_pairs).await;
    if sent {
        shared.counters.dead_lettered.inc();
    }
    sent
}

async fn send<'a, H>(shared: &Answering, record: ProduceRecord<'_>, header_pairs: impl Fn() -> H) -> bool
where
    H: Iterator<Item = (&'a str, &'a str)>,
{
    let mut delay = Duration::from_millis(100);
    loop {
        match shared.pool.publish(record, Some(headers(header_pairs()))).await {
            Ok(_) => return true,
            Err(e) => {
                tracing::warn!(topic = record.topic, "publishing an answer failed, retrying in {delay:?}: {e}");
                if !Box::pin(back_off(shared, delay)).await {
                    return false;
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Waits `delay` before another try; `false` when the shutdown deadline passed (or passes
/// meanwhile): no more tries then.
async fn back_off(shared: &Answering, delay: Duration) -> bool {
    let mut abandon = shared.abandon.clone();
    if *abandon.borrow() {
        return false;
    }
    tokio::select! {
        () = tokio::time::sleep(delay) => true,
        _ = abandon.changed() => false,
    }
}

/// The last event ids answered, to recognise a redelivery.
#[derive(Debug, Default)]
pub struct RecentIds {
    set: HashSet<Uuid>,
    order: VecDeque<Uuid>,
}

impl RecentIds {
    const CAPACITY: usize = 200_000;

    /// Records `id`; whether it was seen before.
    pub fn seen(&mut self, id: Uuid) -> bool {
        if !self.set.insert(id) {
            return true;
        }
        self.order.push_back(id);
        if self.order.len() > Self::CAPACITY
            && let Some(oldest) = self.order.pop_front()
        {
            self.set.remove(&oldest);
        }
        false
    }
}
