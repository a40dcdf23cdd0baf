//! Delivery guarantees under faults, with and without idempotence: messages in flight when the
//! broker goes away and comes back, and requests that time out so that librdkafka retries
//! them. Each run reads its topic back and counts the copies of every message id: with
//! idempotence (the pool's default) every message arrives exactly once; without it, none is
//! lost and the duplicates the retries made are counted and reported.
//!
//! The faults are injected by a proxy in front of a tansu broker of the test's own
//! (`onex_tests::fault_proxy`): the broker keeps what it stored while its answers are withheld
//! or its connections cut. Two faults are real brokers' that the test cannot use here:
//! - a broker restart: the tansu build the tests install stores in memory only (its
//!   `postgres://` engine is not compiled in), so a restarted broker has forgotten both the
//!   messages and the producer ids; cutting every connection and refusing new ones is what
//!   the producer sees of a restart of a broker that keeps its data;
//! - rdkafka's MockCluster: it deduplicates retried batches only for transactional producers
//!   (`rd_kafka_mock_validate_records` returns before its sequence check without a
//!   transactional id), so it stores an idempotent producer's retries twice where a broker
//!   would not.
//!
//! Every wait is for an event the proxy counts (a produce request forwarded, an answer
//! withheld, a connection closed or refused) or for the delivery reports, under a generous
//! ceiling; the times measured are printed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use onex_runtime::kafka::{DeliveryFuture, KafkaPoolSettings, KafkaProducerPool, ProduceRecord};
use onex_runtime::models::kafka::KafkaProducerConfig;
use onex_tests::fault_proxy::{Fault, FaultProxy, ProxyCounters};
use onex_tests::kafka::{OwnBroker, create_topic_at, read_messages_at, unique_topic};
use rdkafka::Message;

/// Messages sent before the fault, during it (in flight when it strikes) and after it.
const PER_PHASE: u32 = 200;
const TOTAL: u32 = 3 * PER_PHASE;
/// Ceiling of every wait: only an event that never comes fails the test.
const CEILING: Duration = Duration::from_secs(90);
/// Short, so a withheld answer makes librdkafka time the request out and retry it soon.
const REQUEST_TIMEOUT_MS: u32 = 2_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outage {
    /// Answers withheld, then every connection cut and new ones refused, then back.
    BrokerGoneAndBack,
    /// Answers withheld until librdkafka times the requests out (and closes the connection).
    RequestsTimeOut,
}

/// What one run read back.
#[derive(Debug)]
struct Outcome {
    /// Copies of each message id on the topic.
    copies: BTreeMap<u32, usize>,
    /// From the fault to the last delivery report.
    recovered_in: Duration,
}

impl Outcome {
    fn missing(&self) -> Vec<u32> {
        (0..TOTAL).filter(|id| !self.copies.contains_key(id)).collect()
    }

    fn duplicates(&self) -> usize {
        self.copies.values().map(|n| n - 1).sum()
    }
}

/// A loopback port nothing listens on now.
fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address")
}

/// Waits until `done` holds, for at most [`CEILING`]; returns the wait.
async fn wait_for(what: &str, done: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < CEILING, "{what}: not within {CEILING:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

fn counter(counters: &ProxyCounters, pick: fn(&ProxyCounters) -> &std::sync::atomic::AtomicU64) -> u64 {
    pick(counters).load(Relaxed)
}

/// Enqueues message `id` (its payload) and returns the future of its delivery report.
async fn enqueue(pool: &KafkaProducerPool, topic: &str, id: u32) -> DeliveryFuture {
    pool.send(ProduceRecord::new(topic, &id.to_be_bytes()), None).await.expect("enqueued")
}

/// Sends [`TOTAL`] messages through `proxy` (ids in the payload), injects `outage` while the
/// second third is in flight, awaits every delivery report and reads the topic back.
async fn deliver_through(proxy: &FaultProxy, outage: Outage, idempotent: bool) -> Outcome {
    let address = proxy.address().to_string();
    let topic = unique_topic(if idempotent { "idempotent" } else { "at-least-once" });
    create_topic_at(&address, &topic).await;
    let config = KafkaProducerConfig {
        enable_idempotence: idempotent,
        request_timeout_ms: REQUEST_TIMEOUT_MS,
        delivery_timeout_ms: 60_000,
        ..KafkaProducerConfig::new(&address)
    };
    let pool = KafkaProducerPool::new(KafkaPoolSettings::default(), config).unwrap();
    let send = |id: u32| enqueue(&pool, &topic, id);
    // Before: acknowledged.
    for id in 0..PER_PHASE {
        send(id).await.await.expect("delivered before the fault");
    }

    // During: the broker stores the messages, its answers are withheld.
    let counters = proxy.counters();
    let (produce_before, held_before) =
        (counter(counters, |c| &c.produce_requests_held), counter(counters, |c| &c.answers_held));
    proxy.set(Fault::HoldAnswers);
    let fault = Instant::now();
    let mut deliveries = Vec::new();
    for id in PER_PHASE..2 * PER_PHASE {
        deliveries.push(send(id).await);
    }
    wait_for("a produce request reached the broker and its answer was withheld", || {
        counter(counters, |c| &c.produce_requests_held) > produce_before
            && counter(counters, |c| &c.answers_held) > held_before
    })
    .await;
    match outage {
        Outage::BrokerGoneAndBack => {
            let refused_before = counter(counters, |c| &c.refused);
            proxy.set(Fault::Down);
            let waited = wait_for("librdkafka tried to reconnect to the broker gone", || {
                counter(counters, |c| &c.refused) > refused_before
            })
            .await;
            eprintln!("broker gone: a reconnection was refused after {waited:?}");
        }
        Outage::RequestsTimeOut => {
            let closed_before = counter(counters, |c| &c.closed_by_client);
            let waited = wait_for("librdkafka timed a request out and closed its connection", || {
                counter(counters, |c| &c.closed_by_client) > closed_before
            })
            .await;
            eprintln!("requests timed out: librdkafka closed a connection after {waited:?} of withheld answers");
        }
    }
    proxy.set(Fault::None);

    // After: everything is acknowledged, the messages caught by the fault included.
    for id in 2 * PER_PHASE..TOTAL {
        deliveries.push(send(id).await);
    }
    for (n, delivery) in deliveries.into_iter().enumerate() {
        let delivered = tokio::time::timeout(CEILING, delivery).await.expect("a delivery report within the ceiling");
        delivered.unwrap_or_else(|e| panic!("message {} lost: {e}", n as u32 + PER_PHASE));
    }
    let recovered_in = fault.elapsed();
    let stats = pool.stats();
    assert_eq!((stats.total_messages_sent, stats.total_messages_failed), (u64::from(TOTAL), 0), "{stats:?}");
    pool.shutdown().await.unwrap();

    let ids = tokio::task::spawn_blocking(move || {
        read_messages_at(&address, &topic, TOTAL as usize, CEILING, |message| {
            let payload = message.payload().expect("a payload");
            u32::from_be_bytes(payload.try_into().expect("a 4-byte id"))
        })
    })
    .await
    .unwrap();
    let mut copies = BTreeMap::new();
    for id in ids {
        *copies.entry(id).or_insert(0) += 1;
    }
    Outcome { copies, recovered_in }
}

/// Runs `outage` with and without idempotence on a broker of its own behind a fault proxy.
async fn with_and_without_idempotence(outage: Outage) -> (Outcome, Outcome) {
    let listen = free_port();
    let proxy = FaultProxy::start(listen).await;
    let _broker = OwnBroker::start(listen, proxy.address());
    let idempotent = deliver_through(&proxy, outage, true).await;
    let plain = deliver_through(&proxy, outage, false).await;
    for (name, outcome) in [("idempotent", &idempotent), ("not idempotent", &plain)] {
        eprintln!(
            "{outage:?}, {name}: {} of {TOTAL} ids read back, {} missing, {} duplicates; every report {:?} after \
             the fault struck",
            outcome.copies.len(),
            outcome.missing().len(),
            outcome.duplicates(),
            outcome.recovered_in
        );
    }
    (idempotent, plain)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_in_flight_when_the_broker_goes_away_arrive_once_with_idempotence() {
    let (idempotent, plain) = with_and_without_idempotence(Outage::BrokerGoneAndBack).await;
    assert_eq!(idempotent.missing(), Vec::<u32>::new(), "lost with idempotence");
    assert_eq!(idempotent.duplicates(), 0, "duplicated with idempotence: {:?}", idempotent.copies);
    assert_eq!(plain.missing(), Vec::<u32>::new(), "lost without idempotence");
    assert!(plain.duplicates() > 0, "without idempotence the stored, unanswered batch is stored again on retry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_timed_out_and_retried_by_librdkafka_arrive_once_with_idempotence() {
    let (idempotent, plain) = with_and_without_idempotence(Outage::RequestsTimeOut).await;
    assert_eq!(idempotent.missing(), Vec::<u32>::new(), "lost with idempotence");
    assert_eq!(idempotent.duplicates(), 0, "duplicated with idempotence: {:?}", idempotent.copies);
    assert_eq!(plain.missing(), Vec::<u32>::new(), "lost without idempotence");
    assert!(plain.duplicates() > 0, "without idempotence the timed-out batch is stored again on retry");
}
