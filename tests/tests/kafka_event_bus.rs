//! The event bus against the real broker: publish, publish_batch and a consumer-group round
//! trip with at-least-once commits.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use onex_runtime::event::OnexEvent;
use onex_runtime::event_bus::{
    EventHandler, EventPublisher, KafkaEventBus, SubscriptionOptions, TopicNamer, subscriber,
};
use onex_runtime::kafka::{KafkaPoolSettings, KafkaProducerPool};
use onex_runtime::models::kafka::KafkaProducerConfig;
use onex_runtime::{Container, ErrorCode, OnexError};
use onex_tests::kafka::{bootstrap, create_topic, read_values, unique_topic};
use uuid::Uuid;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A bus whose tenant is unique to this test, so its topics are too.
async fn bus_with_topic(event_type: &str) -> (Arc<KafkaEventBus>, String) {
    let pool = KafkaProducerPool::new(KafkaPoolSettings::default(), KafkaProducerConfig::new(bootstrap())).unwrap();
    let tenant = format!("t{}", Uuid::new_v4().simple());
    let namer = TopicNamer::new("dev", &tenant, "onex").unwrap();
    let topic = namer.topic_for(event_type).unwrap();
    create_topic(&topic, 2).await;
    (Arc::new(KafkaEventBus::new(Arc::new(pool), namer)), topic)
}

fn event(event_type: &str, n: u32) -> OnexEvent {
    let mut event = OnexEvent::new(event_type, "node_test", Uuid::new_v4(), serde_json::json!({ "n": n }));
    event.metadata.trace_context.insert("traceparent".into(), TRACEPARENT.into());
    event
}

type Seen = Arc<Mutex<Vec<OnexEvent>>>;

/// A handler recording events; it fails the first attempt of any event whose `n` is in
/// `fail_once`.
fn recording_handler(seen: Seen, fail_once: BTreeSet<u32>) -> EventHandler {
    let attempts: Arc<Mutex<HashMap<Uuid, u32>>> = Arc::default();
    Arc::new(move |event: OnexEvent| {
        let seen = Arc::clone(&seen);
        let attempts = Arc::clone(&attempts);
        let fail_once = fail_once.clone();
        Box::pin(async move {
            let n = event.payload["n"].as_u64().unwrap() as u32;
            let tries = {
                let mut attempts = attempts.lock().unwrap();
                let count = attempts.entry(event.event_id).or_default();
                *count += 1;
                *count
            };
            if fail_once.contains(&n) && tries == 1 {
                return Err(OnexError::new(ErrorCode::IntegrationServiceError, "transient handler failure"));
            }
            seen.lock().unwrap().push(event);
            Ok(())
        })
    })
}

async fn wait_for(seen: &Seen, count: usize, within: Duration) {
    let deadline = Instant::now() + within;
    while seen.lock().unwrap().len() < count {
        assert!(Instant::now() < deadline, "only {} of {count} events consumed", seen.lock().unwrap().len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_group_round_trip_commits_after_the_handler() {
    let (bus, topic) = bus_with_topic("order.placed").await;
    let group = format!("group-{}", Uuid::new_v4().simple());

    let batch: Vec<OnexEvent> = (0..50).map(|n| event("order.placed", n)).collect();
    bus.publish_batch(batch.clone()).await.unwrap();

    let seen: Seen = Arc::default();
    let handler = recording_handler(Arc::clone(&seen), BTreeSet::from([7, 21]));
    let subscription = bus.subscribe(&[topic.as_str()], SubscriptionOptions::new(&group), handler).unwrap();
    wait_for(&seen, 50, Duration::from_secs(90)).await;
    assert_eq!(subscription.counters().handler_failures(), 2, "the two failing events were retried");
    subscription.stop().await.unwrap();

    let received = seen.lock().unwrap().clone();
    let sent: BTreeSet<Uuid> = batch.iter().map(|e| e.event_id).collect();
    let got: BTreeSet<Uuid> = received.iter().map(|e| e.event_id).collect();
    assert_eq!(got, sent);
    let first = received.iter().find(|e| e.event_id == batch[0].event_id).unwrap();
    assert_eq!(first, &batch[0], "the envelope round-trips unchanged");
    assert_eq!(first.metadata.trace_context["traceparent"], TRACEPARENT);

    // Offsets were committed: the same group now sees only what is published afterwards.
    let late = event("order.placed", 1_000);
    bus.publish(late.clone()).await.unwrap();
    let seen_again: Seen = Arc::default();
    let handler = recording_handler(Arc::clone(&seen_again), BTreeSet::new());
    let subscription = bus.subscribe(&[topic.as_str()], SubscriptionOptions::new(&group), handler).unwrap();
    wait_for(&seen_again, 1, Duration::from_secs(90)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    subscription.stop().await.unwrap();
    let again = seen_again.lock().unwrap().clone();
    assert_eq!(again.len(), 1, "committed events were redelivered: {again:?}");
    assert_eq!(again[0].event_id, late.event_id);
    assert_eq!(bus.stats().published, 51);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_dead_letter_topic_a_failing_handler_leaves_the_event_uncommitted() {
    let (bus, topic) = bus_with_topic("invoice.issued").await;
    let group = format!("group-{}", Uuid::new_v4().simple());
    let poison = event("invoice.issued", 1);
    bus.publish(poison.clone()).await.unwrap();

    let always_fails: EventHandler =
        Arc::new(|_event| Box::pin(async { Err(OnexError::new(ErrorCode::IntegrationServiceError, "handler down")) }));
    let mut options = SubscriptionOptions::new(&group);
    options.max_handler_attempts = 2;
    options.handler_backoff.base_delay = Duration::from_millis(10);
    // The subscriber on its own has no dead-letter topic unless given one.
    let subscription =
        subscriber::subscribe(bus.pool().default_config(), &[topic.as_str()], options, always_fails).unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !subscription.is_finished() {
        assert!(Instant::now() < deadline, "subscription never gave up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let err = subscription.stop().await.unwrap_err();
    assert!(err.message().contains(&poison.event_id.to_string()), "{err}");

    // The group gets the event again.
    let seen: Seen = Arc::default();
    let handler = recording_handler(Arc::clone(&seen), BTreeSet::new());
    let subscription = bus.subscribe(&[topic.as_str()], SubscriptionOptions::new(&group), handler).unwrap();
    wait_for(&seen, 1, Duration::from_secs(90)).await;
    subscription.stop().await.unwrap();
    assert_eq!(seen.lock().unwrap()[0].event_id, poison.event_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_dead_lettered_and_the_subscription_moves_on() {
    let (bus, topic) = bus_with_topic("invoice.paid").await;
    let group = format!("group-{}", Uuid::new_v4().simple());
    let dead_letters = unique_topic("dead-letters");
    create_topic(&dead_letters, 1).await;
    let poison = event("invoice.paid", 1);
    let healthy = event("invoice.paid", 2);
    bus.publish(poison.clone()).await.unwrap();
    onex_tests::host::Requester::default().send_raw(&topic, Some(b"k"), b"not an envelope").await;
    bus.publish(healthy.clone()).await.unwrap();

    let seen: Seen = Arc::default();
    let recorded = recording_handler(Arc::clone(&seen), BTreeSet::new());
    let poison_id = poison.event_id;
    let handler: EventHandler = Arc::new(move |event: OnexEvent| {
        if event.event_id == poison_id {
            return Box::pin(async { Err(OnexError::new(ErrorCode::IntegrationServiceError, "handler down")) });
        }
        recorded(event)
    });
    let mut options = SubscriptionOptions::new(&group).with_dead_letter(Arc::clone(bus.pool()), &dead_letters);
    options.max_handler_attempts = 2;
    options.handler_backoff.base_delay = Duration::from_millis(10);
    let subscription = bus.subscribe(&[topic.as_str()], options, handler).unwrap();
    wait_for(&seen, 1, Duration::from_secs(90)).await;
    assert_eq!(seen.lock().unwrap()[0].event_id, healthy.event_id);
    // The three messages may sit on different partitions: wait for both dead letters.
    let deadline = Instant::now() + Duration::from_secs(90);
    while subscription.counters().dead_lettered() < 2 {
        assert!(Instant::now() < deadline, "dead letters: {}", subscription.counters().dead_lettered());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!subscription.is_finished());
    assert_eq!(subscription.counters().invalid(), 1);
    subscription.stop().await.unwrap();

    let letters =
        tokio::task::spawn_blocking(move || read_values(&dead_letters, 2, Duration::from_secs(30))).await.unwrap();
    assert_eq!(letters.len(), 2);
    let raw = letters.iter().position(|l| l.as_deref() == Some(&b"not an envelope"[..])).expect("the invalid message");
    let event: OnexEvent = serde_json::from_slice(letters[1 - raw].as_deref().unwrap()).unwrap();
    assert_eq!(event.event_id, poison.event_id, "the dead letter is the event as it came");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bus_is_resolved_through_the_container_as_an_event_publisher() {
    let (bus, _topic) = bus_with_topic("user.created").await;
    let mut container = Container::new();
    container.register::<dyn EventPublisher>(bus.clone());
    let publisher = container.resolve::<dyn EventPublisher>().unwrap();
    publisher.publish(event("user.created", 1)).await.unwrap();
    let encoded = bus.encode(&event("user.created", 2)).unwrap();
    assert!(encoded.topic.ends_with(".evt.user-created.v1"), "{}", encoded.topic);
    assert!(encoded.headers.iter().any(|(k, v)| k == "traceparent" && v == TRACEPARENT));
    assert_eq!(bus.stats().published, 1);
    assert_eq!(bus.pool().stats().total_messages_sent, 1);
}

/// A guarded publisher on a bus of its own topic (`user.guarded`), its outbox on a database of
/// its own holding at most `max_depth` events.
struct Guarded {
    bus: Arc<KafkaEventBus>,
    topic: String,
    breaker: Arc<onex_runtime::circuit_breaker::CircuitBreaker>,
    outbox: onex_runtime::outbox::Outbox,
    guarded: onex_runtime::circuit_breaker::GuardedPublisher,
    _db: onex_tests::postgres::TestDatabase,
}

async fn guarded(rule: Option<onex_runtime::event_bus::RateLimitRule>, max_depth: u64) -> Guarded {
    use onex_runtime::circuit_breaker::{CircuitBreaker, GuardedPublisher};
    use onex_runtime::environment::Environment;
    use onex_runtime::models::circuit_breaker::CircuitBreakerConfig;
    use onex_runtime::outbox::{Outbox, OutboxConfig};
    use onex_runtime::postgres::PostgresConnectionManager;
    use onex_tests::postgres::TestDatabase;

    let pool = KafkaProducerPool::new(KafkaPoolSettings::default(), KafkaProducerConfig::new(bootstrap())).unwrap();
    let tenant = format!("t{}", Uuid::new_v4().simple());
    let namer = TopicNamer::new("dev", &tenant, "onex").unwrap();
    let topic = namer.topic_for("user.guarded").unwrap();
    create_topic(&topic, 1).await;
    let bus = Arc::new(KafkaEventBus::new(Arc::new(pool), namer).with_rate_limit(rule));
    let db = TestDatabase::create("gpb").await;
    let pg = Arc::new(PostgresConnectionManager::connect(db.config()).await.unwrap());
    let outbox = Outbox::new(pg, OutboxConfig { max_depth, ..OutboxConfig::default() }).unwrap();
    let breaker =
        Arc::new(CircuitBreaker::new(CircuitBreakerConfig::for_environment(Environment::Production)).unwrap());
    let guarded = GuardedPublisher::new(bus.clone(), breaker.clone(), Some(outbox.clone()));
    Guarded { bus, topic, breaker, outbox, guarded, _db: db }
}

/// The ids of the events read back from `topic` (at least `expected` of them, or all that
/// arrived within a minute).
async fn ids_on(topic: &str, expected: usize) -> BTreeSet<Uuid> {
    let topic = topic.to_owned();
    let read =
        tokio::task::spawn_blocking(move || onex_tests::kafka::read_events(&topic, expected, Duration::from_secs(60)))
            .await
            .unwrap();
    read.iter().map(|e| e.event_id).collect()
}

/// The rate limit admits an event once: while the circuit is open, events within the limit
/// go to the outbox and one beyond it is refused (not stored); after the close the relay
/// republishes the whole backlog through the same bus although the caller's tokens are spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_admits_an_event_once_and_does_not_throttle_the_relay() {
    use onex_runtime::event_bus::RateLimitRule;
    use onex_runtime::models::circuit_breaker::CircuitAction;

    const BURST: u32 = 5;
    let rule = RateLimitRule { per_minute: 1, burst: BURST, penalty: Duration::from_secs(600) };
    let g = guarded(Some(rule), 1_000).await;

    g.breaker.force_open();
    let events: Vec<OnexEvent> = (0..BURST).map(|n| event("user.guarded", n)).collect();
    for e in &events {
        assert_eq!(g.guarded.publish_with_action(e.clone()).await.unwrap(), CircuitAction::Queued);
    }
    let refused = g.guarded.publish_with_action(event("user.guarded", 99)).await.unwrap_err();
    assert_eq!(refused.code(), ErrorCode::IntegrationServiceUnavailable, "{refused}");
    assert_eq!(refused.details().get("reason").and_then(|v| v.as_str()), Some("rate_limited"), "{refused}");
    assert_eq!(g.outbox.depth().await.unwrap(), u64::from(BURST), "a refused event is not stored");

    g.breaker.reset();
    let report = g.guarded.drain_now().await.unwrap();
    assert_eq!((report.published, report.failed), (BURST as usize, 0), "{report:?}");
    assert_eq!(g.outbox.depth().await.unwrap(), 0);
    assert!(g.bus.publish(event("user.guarded", 100)).await.is_err(), "the caller is still limited");
    assert_eq!(ids_on(&g.topic, BURST as usize).await, events.iter().map(|e| e.event_id).collect());
    g.guarded.close().await;
}

/// The original integration test's overflow (150 events while open, a queue of 100): at most
/// 100 are kept, the rest are dead-lettered, and the kept ones reach the broker after the close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_150_events_keeps_100_and_dead_letters_the_rest() {
    use onex_runtime::models::circuit_breaker::CircuitAction;

    let g = guarded(None, 100).await;
    g.breaker.force_open();
    let mut queued = BTreeSet::new();
    let mut dropped = 0;
    for n in 0..150 {
        let e = event("user.guarded", n);
        match g.guarded.publish_with_action(e.clone()).await.unwrap() {
            CircuitAction::Queued => {
                queued.insert(e.event_id);
            }
            CircuitAction::Dropped => dropped += 1,
            other => panic!("{other:?} while the circuit is forced open"),
        }
    }
    assert_eq!((queued.len(), dropped), (100, 50));
    let stats = g.outbox.stats().await.unwrap();
    assert_eq!((stats.depth, stats.dead_letters), (100, 50));

    g.breaker.reset();
    let report = g.guarded.drain_now().await.unwrap();
    assert_eq!((report.published, report.failed), (100, 0), "{report:?}");
    assert_eq!(ids_on(&g.topic, 100).await, queued);
    g.guarded.close().await;
}

/// The original integration test's load: 100 concurrent publishes through the breaker to the
/// real broker all go out, within a generous ceiling of 30 s (the time is printed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_publishes_through_the_breaker_all_go_out() {
    use onex_runtime::models::circuit_breaker::CircuitAction;

    let g = guarded(None, 1_000).await;
    let events: Vec<OnexEvent> = (0..100).map(|n| event("user.guarded", n)).collect();
    let start = Instant::now();
    let actions = futures::future::join_all(events.iter().map(|e| g.guarded.publish_with_action(e.clone()))).await;
    let took = start.elapsed();
    eprintln!("100 concurrent publishes through the breaker took {took:?}");
    assert!(actions.iter().all(|a| matches!(a, Ok(CircuitAction::Published))), "{actions:?}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    let metrics = g.guarded.metrics().await;
    assert_eq!((metrics.breaker.total_calls, metrics.breaker.successful_calls), (100, 100));
    assert_eq!(ids_on(&g.topic, 100).await, events.iter().map(|e| e.event_id).collect());
    g.guarded.close().await;
}
