//! Answering one fetched message: decode, run the node (again, for retriable errors), publish
//! the answer and, when the request cannot be served, a dead letter. Returns only once what it
//! published is acknowledged by the broker, so its offset may then be committed.

use std::collections::{HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use onex_runtime::event_bus::EventMessage;
use onex_runtime::kafka::{KafkaProducerPool, ProduceRecord, headers};
use onex_runtime::{DynNode, ErrorCode, NodeContract, NodeKind, OnexError};
use rdkafka::message::OwnedHeaders;
use serde_json::value::RawValue;
use tokio::sync::watch;
use uuid::Uuid;

use crate::counters::HostCounters;
use crate::idempotency::{AnswerStore, StoredAnswer};
use crate::request::{Answer, Request, reported_error};
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
    pub(crate) counters: HostCounters,
    pub(crate) max_attempts: u32,
    pub(crate) retry_backoff: Duration,
    /// `source` of every answer.
    pub(crate) source: String,
    /// Event ids answered lately, to count redeliveries.
    pub(crate) recent: Mutex<RecentIds>,
    /// Answers of EFFECT nodes, replayed on redelivery (`idempotency: postgres`).
    pub(crate) store: Option<Arc<AnswerStore>>,
    /// Set when the shutdown deadline passed: publishing stops retrying, so the task ends
    /// and its offset stays uncommitted (the request is redelivered to another host).
    pub(crate) abandon: watch::Receiver<bool>,
}

/// One fetched message, detached from the consumer.
#[derive(Debug)]
pub struct Fetched {
    /// The request topic (shared: one per topic, not one per message).
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub traceparent: Option<String>,
}

/// Errors worth running the request again for: the node could not reach what it needs, or ran
/// out of time on its own limit (not the request's deadline, which a second run cannot meet).
fn retriable(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::IntegrationServiceUnavailable | ErrorCode::DatabaseConnectionFailed | ErrorCode::OperationTimeout
    )
}

/// The failure of one run, returned or reported in the output (see [`reported_error`]), if
/// any. The host retries a reported failure as it retries a returned one, and publishes the
/// last output as the node's answer.
fn failure_of(outcome: &Result<Box<RawValue>, OnexError>) -> Option<ErrorCode> {
    match outcome {
        Ok(output) => reported_error(output),
        Err(error) => Some(error.code()),
    }
}

/// Answers `message` for `served`. Returns whether everything it published was acknowledged.
///
/// The future of this function is allocated for every request and moved as a whole, so the
/// rare paths (a message that is not a request, the answer store, dead letters, back-offs) are
/// boxed: their state would otherwise make every request's future as large as the largest.
pub async fn answer(shared: &Answering, served: &ServedNode, message: &Fetched) -> bool {
    let request = match Request::decode(message.value.as_deref(), message.traceparent.as_deref()) {
        Ok(request) => request,
        Err(reason) => {
            shared.counters.invalid.inc();
            tracing::warn!(topic = %message.topic, offset = message.offset, "dead-lettering a message that is not a request: {reason}");
            return Box::pin(dead_letter(shared, served, message, &reason, 0)).await;
        }
    };
    if shared.recent.lock().unwrap_or_else(|p| p.into_inner()).seen(request.event_id) {
        shared.counters.duplicates.inc();
    }
    let store = shared.store.as_deref().filter(|_| served.contract.kind == NodeKind::Effect);
    if let Some(store) = store {
        return Box::pin(answer_with_store(shared, served, message, &request, store)).await;
    }
    let (answer, poison) = answer_of(shared, served, &request).await;
    finish(shared, served, message, &answer, poison).await
}

/// [`answer`] for an EFFECT node with an answer store: a stored answer is replayed, and a new
/// one is stored before it is published.
async fn answer_with_store(
    shared: &Answering,
    served: &ServedNode,
    message: &Fetched,
    request: &Request<'_>,
    store: &AnswerStore,
) -> bool {
    let (name, id) = (served.contract.name, request.event_id);
    match retrying(shared, "look up a stored answer", || store.find(name, id)).await {
        None => return false,
        Some(Some(stored)) => {
            shared.counters.replayed.inc();
            let answer = request.answer(stored.event_type, &shared.source, raw(&stored.payload));
            return publish(shared, route(served, &answer), &answer).await;
        }
        Some(None) => {}
    }
    let (mut answer, poison) = answer_of(shared, served, request).await;
    let payload = serde_json::from_str(answer.payload.get()).unwrap_or_default();
    let ours = StoredAnswer { event_type: answer.event_type.clone(), payload };
    match retrying(shared, "store the answer", || store.keep(name, id, ours.clone())).await {
        None => return false,
        // Another host stored first: everyone publishes that one answer.
        Some(kept) if kept != ours => answer = request.answer(kept.event_type, &shared.source, raw(&kept.payload)),
        Some(_) => {}
    }
    finish(shared, served, message, &answer, poison).await
}

/// Runs the node for `request`: its answer, and why to dead-letter the request too, if so.
async fn answer_of(shared: &Answering, served: &ServedNode, request: &Request<'_>) -> (Answer, Option<(String, u32)>) {
    let (outcome, attempts) = run(shared, served, request).await;
    // Dead-lettered too: a request that failed every attempt, or that broke the node.
    let poison = failure_of(&outcome)
        .filter(|&code| (retriable(code) && attempts >= shared.max_attempts) || code == ErrorCode::InternalError)
        .map(|code| match &outcome {
            Err(error) => error.to_string(),
            Ok(_) => format!("[{code}] the node reported this failure on all {attempts} attempts"),
        });
    // The output moves into the answer: copying a JSON object per request was a tenth of the
    // host's CPU for a small compute node.
    let answer = match outcome {
        Ok(output) => {
            shared.counters.completed.inc();
            request.completed(&served.routes.completed_type, &shared.source, output)
        }
        Err(error) => {
            shared.counters.failed.inc();
            request.failed(&served.routes.failed_type, &shared.source, &error, attempts)
        }
    };
    (answer, poison.map(|reason| (reason, attempts)))
}

/// Publishes `answer` and, for a request that could not be served, its dead letter.
async fn finish(
    shared: &Answering,
    served: &ServedNode,
    message: &Fetched,
    answer: &Answer,
    poison: Option<(String, u32)>,
) -> bool {
    let mut acknowledged = publish(shared, route(served, answer), answer).await;
    if let Some((reason, attempts)) = poison {
        acknowledged &= Box::pin(dead_letter(shared, served, message, &reason, attempts)).await;
    }
    acknowledged
}

/// `value` as JSON text (a `Value` always encodes).
fn raw(value: &serde_json::Value) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// The topic of `answer`: results and failures may have topics of their own.
fn route<'a>(served: &'a ServedNode, answer: &Answer) -> &'a str {
    if answer.event_type.ends_with(".completed") { &served.routes.completed } else { &served.routes.failed }
}

/// Calls `attempt` until it succeeds (`Some`) or the shutdown deadline passes (`None`),
/// backing off between calls: a dependency that is down delays the request, it never drops it.
async fn retrying<T, F, Fut>(shared: &Answering, what: &str, mut attempt: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, OnexError>>,
{
    let mut delay = Duration::from_millis(100);
    loop {
        match attempt().await {
            Ok(value) => return Some(value),
            Err(e) => {
                tracing::warn!("cannot {what}, retrying in {delay:?}: {e}");
                if !back_off(shared, &mut delay).await {
                    return None;
                }
            }
        }
    }
}

/// Waits `delay` (then doubles it, up to 5 s); `false` when the shutdown deadline passed.
async fn back_off(shared: &Answering, delay: &mut Duration) -> bool {
    let mut abandon = shared.abandon.clone();
    if *abandon.borrow() {
        return false;
    }
    tokio::select! {
        () = tokio::time::sleep(*delay) => {}
        _ = abandon.changed() => return false,
    }
    *delay = (*delay * 2).min(Duration::from_secs(5));
    true
}

/// Runs the node until it answers, a non-retriable error, the last attempt or the deadline.
async fn run(
    shared: &Answering,
    served: &ServedNode,
    request: &Request<'_>,
) -> (Result<Box<RawValue>, OnexError>, u32) {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let call = served.node.process_json_text(request.payload(), request.context());
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
        let again = failure_of(&outcome).is_some_and(retriable)
            && attempt < shared.max_attempts
            && request.deadline.is_none_or(|d| d > Instant::now());
        if !again {
            return (outcome, attempt);
        }
        shared.counters.retried.inc();
        let backoff = shared.retry_backoff.saturating_mul(1 << (attempt - 1).min(10));
        Box::pin(tokio::time::sleep(backoff)).await;
    }
}

/// Publishes `event` to `topic` until the broker acknowledges it or the shutdown deadline
/// passes (then `false`).
async fn publish(shared: &Answering, topic: &str, event: &Answer) -> bool {
    let message = match EventMessage::encode(event) {
        Ok(message) => message,
        Err(e) => {
            tracing::error!("cannot encode the answer {}: {e}", event.event_id);
            return false;
        }
    };
    send(shared, message.record(topic), || message.headers()).await
}

/// Sends the request as it came, to the node's dead-letter topic, with why and how often it
/// was tried in its headers.
async fn dead_letter(shared: &Answering, served: &ServedNode, message: &Fetched, reason: &str, attempts: u32) -> bool {
    let value = message.value.as_deref().unwrap_or_default();
    let (attempts, partition, offset) =
        (attempts.to_string(), message.partition.to_string(), message.offset.to_string());
    let header_pairs = || {
        headers([
            ("onex-dlq-reason", reason),
            ("onex-dlq-node", served.contract.name),
            ("onex-dlq-attempts", attempts.as_str()),
            ("onex-dlq-topic", &*message.topic),
            ("onex-dlq-partition", partition.as_str()),
            ("onex-dlq-offset", offset.as_str()),
        ])
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

async fn send(shared: &Answering, record: ProduceRecord<'_>, headers: impl Fn() -> OwnedHeaders) -> bool {
    let mut delay = Duration::from_millis(100);
    loop {
        match shared.pool.publish(record, Some(headers())).await {
            Ok(_) => return true,
            Err(e) => {
                tracing::warn!(topic = record.topic, "publishing an answer failed, retrying in {delay:?}: {e}");
                if !Box::pin(back_off(shared, &mut delay)).await {
                    return false;
                }
            }
        }
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_failure_counts_whether_returned_or_reported() {
        let reported =
            Ok(raw(&json!({"success": false, "error_code": "DATABASE_CONNECTION_FAILED", "error": "refused"})));
        assert_eq!(failure_of(&reported), Some(ErrorCode::DatabaseConnectionFailed));
        assert!(failure_of(&reported).is_some_and(retriable));
        assert_eq!(failure_of(&Ok(raw(&json!({"state": "closed"})))), None);
        let returned = Err(OnexError::validation("missing field"));
        assert_eq!(failure_of(&returned), Some(ErrorCode::ValidationError));
        assert!(!failure_of(&returned).is_some_and(retriable));
    }
}
