//! The requests: pre-loaded all at once before a contender starts (for its rate), or sent at a
//! steady pace while it runs (for its latency). Each is an ONEX envelope keyed by its
//! correlation id, as `onex_tests::host::Requester` sends them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use onex_runtime::event_bus::{EncodedEvent, TopicNamer};
use onex_tests::host::request;
use onex_tests::kafka::bootstrap;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

/// The payload of request number `i`.
pub type Payload = fn(u64) -> serde_json::Value;

/// Enqueued at most at once while pre-loading.
const WINDOW: usize = 20_000;

/// A requester's producer. `linger_ms` 0 for paced requests, whose latency should not include
/// the requester's own batching.
pub fn producer(linger_ms: u32) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("linger.ms", linger_ms.to_string())
        .set("message.timeout.ms", "30000")
        .create()
        .expect("requester producer")
}

fn encode(i: u64, payload: Payload) -> EncodedEvent {
    EncodedEvent::new(&TopicNamer::default(), &request(payload(i))).expect("encode request")
}

/// Sends `count` requests to `topic` and waits until the broker acknowledged them all.
pub async fn preload(producer: &FutureProducer, topic: &str, count: u64, payload: Payload) {
    let mut pending = FuturesUnordered::new();
    for i in 0..count {
        let encoded = encode(i, payload);
        let record = FutureRecord::to(topic).key(encoded.key.as_bytes()).payload(&encoded.value);
        let delivery = producer.send_result(record).map_err(|(e, _)| e).expect("enqueue a request");
        pending.push(delivery);
        if pending.len() >= WINDOW {
            pending.next().await.expect("pending").expect("delivery channel").expect("request delivered");
        }
    }
    while let Some(delivery) = pending.next().await {
        delivery.expect("delivery channel").expect("request delivered");
    }
}

/// Sends `count` requests to `topic`, `rate` a second, and returns when each was handed to the
/// producer, by key. Numbered from `first` (the payload of a number is the same everywhere).
pub async fn paced(
    producer: &FutureProducer,
    topic: &str,
    first: u64,
    count: u64,
    rate: f64,
    payload: Payload,
) -> HashMap<Vec<u8>, Instant> {
    let mut sent = HashMap::with_capacity(count as usize);
    let mut pending = FuturesUnordered::new();
    let start = tokio::time::Instant::now();
    for n in 0..count {
        let due = start + Duration::from_secs_f64(n as f64 / rate);
        // Acknowledgements are collected while waiting for the next slot.
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(due) => break,
                Some(delivery) = pending.next(), if !pending.is_empty() => {
                    acknowledged(delivery);
                }
            }
        }
        let encoded = encode(first + n, payload);
        let record = FutureRecord::to(topic).key(encoded.key.as_bytes()).payload(&encoded.value);
        sent.insert(encoded.key.clone().into_bytes(), Instant::now());
        pending.push(producer.send_result(record).map_err(|(e, _)| e).expect("enqueue a request"));
    }
    while let Some(delivery) = pending.next().await {
        acknowledged(delivery);
    }
    sent
}

fn acknowledged(
    delivery: Result<rdkafka::producer::future_producer::OwnedDeliveryResult, futures::channel::oneshot::Canceled>,
) {
    delivery.expect("delivery channel").map_err(|(e, _)| e).expect("request delivered");
}
