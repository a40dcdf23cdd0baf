//! The guarded publisher in front of the real broker, which the test stops and starts: the
//! circuit goes closed → open → half open → closed, every event published during the outage
//! is kept in the PostgreSQL outbox and reaches the topic after the close, with its event id.
//!
//! The producer runs without idempotence: the test broker restarts empty and hands out
//! producer ids from the start again, which a Kafka broker never does (see the config below).
//!
//! Its own test binary because it stops the shared broker; a drop guard restarts it even if
//! an assertion fails.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use onex_runtime::circuit_breaker::{CircuitBreaker, GuardedPublisher, Transition};
use onex_runtime::environment::Environment;
use onex_runtime::event::OnexEvent;
use onex_runtime::event_bus::{KafkaEventBus, RetryPolicy, TopicNamer};
use onex_runtime::kafka::{KafkaPoolSettings, KafkaProducerPool};
use onex_runtime::models::circuit_breaker::{CircuitAction, CircuitBreakerConfig, CircuitBreakerState};
use onex_runtime::models::kafka::KafkaProducerConfig;
use onex_runtime::outbox::{Outbox, OutboxConfig};
use onex_runtime::postgres::PostgresConnectionManager;
use onex_tests::kafka::{BrokerOutage, bootstrap, create_topic, read_events};
use onex_tests::postgres::TestDatabase;
use serde_json::json;
use tokio::sync::broadcast;
use uuid::Uuid;

const EVENT_TYPE: &str = "test.breaker.restart";
/// Generous ceiling for each awaited transition.
const CEILING: Duration = Duration::from_secs(90);

/// Waits for the next transition into `to`, skipping others; returns it and the wait.
async fn transition_to(
    events: &mut broadcast::Receiver<Transition>,
    to: CircuitBreakerState,
    seen: &mut Vec<Transition>,
) -> Duration {
    let start = Instant::now();
    loop {
        let next = tokio::time::timeout(CEILING.saturating_sub(start.elapsed()), events.recv())
            .await
            .unwrap_or_else(|_| panic!("no transition to {to} within {CEILING:?}; seen {seen:?}"))
            .expect("transition stream");
        seen.push(next.clone());
        if next.to == to {
            return start.elapsed();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_cycles_the_circuit_and_loses_no_event() {
    let tenant = format!("t{}", Uuid::new_v4().simple());
    let namer = TopicNamer::new("dev", &tenant, "onex").unwrap();
    let topic = namer.topic_for(EVENT_TYPE).unwrap();
    create_topic(&topic, 1).await;
    // Short producer timeouts, no bus retries: the breaker's timeout (5 s) and the relay decide.
    // No idempotence: the test broker restarts without the producer ids it handed out, which a
    // Kafka broker keeps, and librdkafka's idempotent producer then sometimes never recovers
    // its identity (the pool replaces a fenced one, but not every such state surfaces). This
    // test is about the breaker's cycle, not about a broker that forgets producers.
    let producer = KafkaProducerConfig {
        delivery_timeout_ms: 3_000,
        enable_idempotence: false,
        ..KafkaProducerConfig::new(bootstrap())
    };
    let pool = Arc::new(KafkaProducerPool::new(KafkaPoolSettings::default(), producer).unwrap());
    let retry = RetryPolicy { max_retries: 0, ..RetryPolicy::default() };
    // No rate limit: it is keyed by the event source, one for all these events.
    let bus = Arc::new(KafkaEventBus::new(pool, namer).with_retry_policy(retry).with_rate_limit(None));

    let db = TestDatabase::create("cbk").await;
    let pg = Arc::new(PostgresConnectionManager::connect(db.config()).await.unwrap());
    let config = CircuitBreakerConfig {
        failure_threshold: 2,
        recovery_timeout_secs: 5,
        success_threshold: 1,
        timeout_secs: 5,
        max_queue_size: 10_000,
        ..CircuitBreakerConfig::for_environment(Environment::Production)
    };
    let breaker = Arc::new(CircuitBreaker::new(config).unwrap());
    let mut transitions = breaker.subscribe();
    let outbox = Outbox::new(pg.clone(), OutboxConfig { max_depth: 10_000, ..OutboxConfig::default() }).unwrap();
    let guarded = GuardedPublisher::new(bus.clone(), breaker.clone(), Some(outbox.clone()));
    guarded.start().unwrap();

    let key = Uuid::new_v4();
    let event = |n: u32| OnexEvent::new(EVENT_TYPE, "cb-restart-test", key, json!({ "n": n }));
    assert_eq!(guarded.publish_with_action(event(0)).await.unwrap(), CircuitAction::Published);

    // Outage: the first failures open the circuit; every event is accepted into the outbox.
    let mut outage = BrokerOutage::begin();
    let outage_start = Instant::now();
    let mut accepted: Vec<Uuid> = Vec::new();
    let mut seen = Vec::new();
    let opening = {
        let (a, b) = (event(1), event(2));
        accepted.extend([a.event_id, b.event_id]);
        let (ra, rb) = tokio::join!(guarded.publish_with_action(a), guarded.publish_with_action(b));
        assert_eq!((ra.unwrap(), rb.unwrap()), (CircuitAction::Queued, CircuitAction::Queued));
        transition_to(&mut transitions, CircuitBreakerState::Open, &mut seen).await
    };
    eprintln!(
        "circuit open {:?} after the broker stopped ({opening:?} waiting for the transition)",
        outage_start.elapsed()
    );
    let queue_start = Instant::now();
    for n in 3..53 {
        let e = event(n);
        accepted.push(e.event_id);
        assert_eq!(guarded.publish_with_action(e).await.unwrap(), CircuitAction::Queued);
    }
    eprintln!("50 events queued while open in {:?}", queue_start.elapsed());
    assert_eq!(outbox.depth().await.unwrap(), 52);

    // Broker back (empty: it keeps data in memory). Probes after the open wait take the
    // circuit through half open to closed; each probe is accepted, published or queued.
    outage.end();
    let restarted = Instant::now();
    create_topic(&topic, 1).await;
    let mut n = 1_000;
    let closed = loop {
        let e = event(n);
        n += 1;
        accepted.push(e.event_id);
        let action = guarded.publish_with_action(e).await.unwrap();
        assert!(matches!(action, CircuitAction::Published | CircuitAction::Queued), "{action:?}");
        if breaker.state() == CircuitBreakerState::Closed {
            break restarted.elapsed();
        }
        assert!(
            restarted.elapsed() < CEILING,
            "circuit not closed within {CEILING:?}; seen {seen:?}; bus {:?}; pool {:?}; health {:?}",
            bus.stats(),
            bus.pool().stats(),
            bus.pool().health()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    transition_to(&mut transitions, CircuitBreakerState::Closed, &mut seen).await;
    eprintln!("circuit closed {closed:?} after the broker restarted");
    let path: Vec<(CircuitBreakerState, CircuitBreakerState)> = seen.iter().map(|t| (t.from, t.to)).collect();
    assert_eq!(path.first(), Some(&(CircuitBreakerState::Closed, CircuitBreakerState::Open)), "{path:?}");
    assert!(path.contains(&(CircuitBreakerState::Open, CircuitBreakerState::HalfOpen)), "{path:?}");
    assert_eq!(path.last(), Some(&(CircuitBreakerState::HalfOpen, CircuitBreakerState::Closed)), "{path:?}");

    // The relay empties the outbox after the close.
    let drain_start = Instant::now();
    while outbox.depth().await.unwrap() > 0 {
        assert!(drain_start.elapsed() < CEILING, "outbox not drained within {CEILING:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("outbox drained {:?} after the close", drain_start.elapsed());

    // Every event accepted since the outage is on the topic, with its id, queued ones in order.
    let expected = accepted.len();
    let topic_name = topic.clone();
    let read =
        tokio::task::spawn_blocking(move || read_events(&topic_name, expected, Duration::from_secs(60))).await.unwrap();
    let mut counts: HashMap<Uuid, usize> = HashMap::new();
    for e in &read {
        *counts.entry(e.event_id).or_default() += 1;
    }
    let missing: Vec<&Uuid> = accepted.iter().filter(|id| !counts.contains_key(id)).collect();
    assert!(missing.is_empty(), "{} of {} accepted events missing", missing.len(), accepted.len());
    let duplicates: usize = counts.values().map(|c| c - 1).sum();
    eprintln!("{} accepted events read back, {duplicates} duplicates", accepted.len());
    let accepted_set: HashSet<&Uuid> = accepted.iter().collect();
    let queued_order: Vec<u64> = read
        .iter()
        .filter(|e| accepted_set.contains(&e.event_id))
        .filter_map(|e| e.payload["n"].as_u64())
        .filter(|n| *n < 1_000)
        .collect();
    let mut sorted = queued_order.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted, (1..53).collect::<Vec<u64>>());
    // Events 3.. were queued one after the other: the relay sends them in that order (1 and
    // 2 were queued concurrently).
    let mut first_seen = Vec::new();
    for n in queued_order.iter().copied().filter(|n| *n >= 3) {
        if !first_seen.contains(&n) {
            first_seen.push(n);
        }
    }
    assert_eq!(first_seen, (3..53).collect::<Vec<u64>>(), "queued events out of order");
    let metrics = guarded.metrics().await;
    eprintln!("metrics: {:?}", metrics.to_model());
    assert!(metrics.breaker.circuit_opens >= 1 && metrics.breaker.circuit_closes == 1);
    guarded.close().await;
}
