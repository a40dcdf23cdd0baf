//! `node_event_bus_circuit_breaker_compute` built through the container and the generated
//! registry, guarding an in-test publisher that records, fails or stalls on demand; the
//! outbox on the real PostgreSQL (each test its own database).
//!
//! Breaker settings: 3 failures, 6 s recovery (the smallest the rules allow with 3 failures:
//! at least 5 s and twice the failures), 2 successes, 5 s timeout (the smallest allowed),
//! queue 10.
//!
//! The original system's tests, assertion by assertion, and where each is kept:
//!
//! | original assertion | test |
//! |---|---|
//! | the default configuration is 5 / 60 / 3 / 30 / 1000 | `the_default_configuration_is_5_60_3_30_1000` |
//! | one failure returns false and queues the event | `a_failure_queues_the_event_and_three_open_the_circuit` |
//! | three failures open the breaker; then the publisher is not called | the same |
//! | a 10 s publish counts as a failure | `a_publish_past_the_timeout_counts_as_a_failure` |
//! | after the recovery timeout the breaker is half open and the call publishes | `half_open_admits_a_trial_and_one_failure_reopens` |
//! | two successes close it; one failure reopens it | the same, and `the_full_cycle_republishes_the_queue_in_order_on_close` |
//! | overflow goes to the dead-letter queue with event, timestamp, reason, circuit_state = open, retry_count | `overflow_goes_to_the_dead_letter_table` |
//! | fail-fast mode raises INTEGRATION_SERVICE_UNAVAILABLE | `without_degradation_a_refused_publish_is_integration_service_unavailable` |
//! | 50 concurrent publishes are all counted; the success rate is exact to 0.01 | `concurrent_publishes_are_all_counted_and_the_success_rate_is_exact` |
//! | integration: the full cycle closed → open → half open → closed | `circuit_breaker_broker_restart.rs` (real broker stopped and started) |
//! | integration: of 150 events while open at most 100 are queued, the rest dead-lettered | `kafka_event_bus.rs`: `an_outage_of_150_events_keeps_100_and_dead_letters_the_rest` |
//! | integration: 100 concurrent publishes finish within 30 s | `kafka_event_bus.rs`: `a_hundred_concurrent_publishes_through_the_breaker_all_go_out` |

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use onex_runtime::circuit_breaker::{CircuitBreaker, GuardedPublisher};
use onex_runtime::environment::Environment;
use onex_runtime::event::OnexEvent;
use onex_runtime::event_bus::EventPublisher;
use onex_runtime::models::circuit_breaker::{CircuitAction, CircuitBreakerConfig, CircuitBreakerState};
use onex_runtime::node::BoxFuture;
use onex_runtime::outbox::{self, Outbox, OutboxConfig};
use onex_runtime::postgres::PostgresConnectionManager;
use onex_runtime::{Container, Context, DynNode, ErrorCode, OnexError};
use onex_tests::postgres::TestDatabase;
use serde_json::{Value, json};
use uuid::Uuid;

const NODE: &str = "node_event_bus_circuit_breaker_compute";
const RECOVERY: Duration = Duration::from_secs(6);

const OK: u8 = 0;
const FAIL: u8 = 1;
const STALL: u8 = 2;

/// Records what it publishes; fails (`FAIL`) or takes 10 s (`STALL`) when told.
#[derive(Default)]
struct Switch {
    mode: AtomicU8,
    calls: AtomicUsize,
    attempted: Mutex<Vec<Uuid>>,
    published: Mutex<Vec<OnexEvent>>,
}

impl Switch {
    fn set(&self, mode: u8) {
        self.mode.store(mode, SeqCst);
    }

    fn published(&self) -> Vec<OnexEvent> {
        self.published.lock().unwrap().clone()
    }
}

impl EventPublisher for Switch {
    fn publish(&self, event: OnexEvent) -> BoxFuture<'_, Result<(), OnexError>> {
        self.calls.fetch_add(1, SeqCst);
        self.attempted.lock().unwrap().push(event.event_id);
        Box::pin(async move {
            match self.mode.load(SeqCst) {
                FAIL => Err(OnexError::new(ErrorCode::IntegrationServiceUnavailable, "broker unreachable")),
                STALL => {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    Ok(())
                }
                _ => {
                    self.published.lock().unwrap().push(event);
                    Ok(())
                }
            }
        })
    }
}

fn config() -> CircuitBreakerConfig {
    CircuitBreakerConfig {
        failure_threshold: 3,
        recovery_timeout_secs: RECOVERY.as_secs() as u32,
        success_threshold: 2,
        timeout_secs: 5,
        max_queue_size: 10,
        ..CircuitBreakerConfig::for_environment(Environment::Production)
    }
}

struct Setup {
    node: Box<dyn DynNode>,
    switch: Arc<Switch>,
    _db: Option<TestDatabase>,
    pool: Option<Arc<PostgresConnectionManager>>,
}

async fn setup(config: CircuitBreakerConfig, with_db: bool) -> Setup {
    let switch = Arc::new(Switch::default());
    let mut container = Container::new();
    container.register::<dyn EventPublisher>(switch.clone());
    container.register(Arc::new(config));
    let (db, pool) = if with_db {
        let db = TestDatabase::create("cb").await;
        let pool = Arc::new(PostgresConnectionManager::connect(db.config()).await.expect("connect"));
        container.register(pool.clone());
        (Some(db), Some(pool))
    } else {
        (None, None)
    };
    let node = onex_generated::registry().build(NODE, None, &container).expect("registry builds the node");
    Setup { node, switch, _db: db, pool }
}

fn event(key: Uuid, seq: usize) -> OnexEvent {
    OnexEvent::new("test.breaker.happened", "cb-test", key, json!({ "seq": seq }))
}

async fn call(node: &dyn DynNode, input: Value) -> Value {
    node.process_json(input, Context::new()).await.expect("the node answers")
}

async fn publish(node: &dyn DynNode, event: &OnexEvent) -> Value {
    call(node, json!({"operation_type": "publish_event", "event": event})).await
}

async fn metrics(node: &dyn DynNode) -> Value {
    call(node, json!({"operation_type": "get_metrics"})).await
}

async fn scalar(pool: &PostgresConnectionManager, sql: &str) -> Value {
    pool.fetch_value(sql, &[]).await.expect(sql).unwrap_or(Value::Null)
}

/// Waits until `done` holds, polling, for at most `limit`.
async fn eventually(limit: Duration, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

#[test]
fn the_default_configuration_is_5_60_3_30_1000() {
    let config = CircuitBreakerConfig::for_environment(Environment::Production);
    assert_eq!(
        (config.failure_threshold, config.recovery_timeout_secs, config.success_threshold, config.timeout_secs),
        (5, 60, 3, 30)
    );
    assert_eq!(config.max_queue_size, 1000);
    assert!(config.dead_letter_enabled && config.graceful_degradation);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_publisher_publish_event_is_a_configuration_error() {
    let node = onex_generated::registry().build(NODE, None, &Container::new()).expect("builds without a publisher");
    let err = node
        .process_json(json!({"operation_type": "publish_event", "event": event(Uuid::new_v4(), 0)}), Context::new())
        .await
        .expect_err("no publisher, no publish");
    assert_eq!(err.code(), ErrorCode::ConfigurationError, "{err}");
    // The idle breaker still reports.
    let out = call(node.as_ref(), json!({"operation_type": "get_state"})).await;
    assert_eq!((out["state"].clone(), out["result"]["is_healthy"].clone()), (json!("closed"), json!(true)));
    let out = call(node.as_ref(), json!({"operation_type": "get_health_status"})).await;
    assert_eq!(out["success"], true, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_event_needs_an_event() {
    let s = setup(config(), false).await;
    let err = s.node.process_json(json!({"operation_type": "publish_event"}), Context::new()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ValidationError);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_event_reaches_the_publisher_and_is_counted() {
    let s = setup(config(), false).await;
    let e = event(Uuid::new_v4(), 1);
    let correlation = Uuid::new_v4();
    let out =
        call(s.node.as_ref(), json!({"operation_type": "publish_event", "event": e, "correlation_id": correlation}))
            .await;
    assert_eq!(out["success"], true, "{out}");
    assert_eq!(out["correlation_id"], json!(correlation));
    assert_eq!(out["circuit_action_taken"], "published");
    assert_eq!(out["result"]["published"], true);
    assert_eq!(out["state"], "closed");
    assert_eq!(s.switch.published()[0].event_id, e.event_id);
    let m = metrics(s.node.as_ref()).await;
    assert_eq!((m["metrics"]["total_events"].clone(), m["metrics"]["successful_events"].clone()), (json!(1), json!(1)));
    assert!(m["metrics"]["last_success"].is_string(), "{m}");
    assert!(m["result"]["average_latency_ms"].as_f64().is_some(), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_queues_the_event_and_three_open_the_circuit() {
    let s = setup(config(), true).await;
    let pool = s.pool.as_deref().unwrap();
    s.switch.set(FAIL);
    let key = Uuid::new_v4();

    // One failure: published false, the event is in the outbox, the circuit still closed.
    let out = publish(s.node.as_ref(), &event(key, 0)).await;
    assert_eq!(out["success"], true, "{out}");
    assert_eq!(
        (out["circuit_action_taken"].clone(), out["result"]["published"].clone()),
        (json!("queued"), json!(false))
    );
    assert_eq!(out["state"], "closed");
    assert_eq!(scalar(pool, "SELECT count(*) FROM onex_outbox WHERE published_at IS NULL").await, json!(1));

    for seq in 1..3 {
        publish(s.node.as_ref(), &event(key, seq)).await;
    }
    let m = metrics(s.node.as_ref()).await;
    assert_eq!(m["state"], "open", "{m}");
    assert_eq!(m["metrics"]["circuit_opens"], 1);
    assert_eq!(m["metrics"]["failed_events"], 3);
    assert!(m["metrics"]["last_failure"].is_string());
    assert_eq!(m["metrics"]["queued_events"], 3);
    assert_eq!(m["result"]["is_healthy"], false);

    // Open: the publisher is not called, the event is queued. (The relay's start-up pass may
    // have tried the first queued events: count attempts of this event only.)
    let open = event(key, 3);
    let out = publish(s.node.as_ref(), &open).await;
    assert_eq!(out["circuit_action_taken"], "queued", "{out}");
    let attempted = s.switch.attempted.lock().unwrap().clone();
    assert!(
        !attempted.contains(&open.event_id),
        "an open circuit must not call the publisher: {attempted:?} {:?}",
        open.event_id
    );
    assert_eq!(metrics(s.node.as_ref()).await["metrics"]["queued_events"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overflow_goes_to_the_dead_letter_table() {
    let s = setup(config(), true).await;
    let pool = s.pool.as_deref().unwrap();
    s.switch.set(FAIL);
    let key = Uuid::new_v4();
    let mut actions = Vec::new();
    for seq in 0..15 {
        let out = publish(s.node.as_ref(), &event(key, seq)).await;
        assert_eq!(out["success"], true, "{out}");
        actions.push(out["circuit_action_taken"].as_str().unwrap().to_owned());
    }
    assert_eq!(actions.iter().filter(|a| *a == "queued").count(), 10, "{actions:?}");
    assert_eq!(actions[10..], ["dropped"; 5]);
    let m = metrics(s.node.as_ref()).await;
    assert_eq!(m["metrics"]["queued_events"], 10, "{m}");
    assert_eq!(m["metrics"]["dropped_events"], 5);
    assert_eq!(m["metrics"]["dead_letter_events"], 5);
    assert_eq!(m["result"]["dead_letter_size"], 5);
    let entry = pool
        .fetch_one("SELECT event, reason, circuit_state, retry_count FROM onex_dead_letter ORDER BY id LIMIT 1", &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry["reason"], outbox::CAPACITY_EXCEEDED);
    assert_eq!(entry["reason"], "Queue capacity exceeded");
    assert_eq!(entry["circuit_state"], "open");
    assert_eq!(entry["retry_count"], 0);
    assert_eq!(entry["event"]["payload"]["seq"], 10);
    let stamped = scalar(pool, "SELECT count(*) FROM onex_dead_letter WHERE created_at IS NOT NULL").await;
    assert_eq!(stamped, json!(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_degradation_a_refused_publish_is_integration_service_unavailable() {
    let s = setup(CircuitBreakerConfig { graceful_degradation: false, ..config() }, true).await;
    s.switch.set(FAIL);
    let key = Uuid::new_v4();
    let out = publish(s.node.as_ref(), &event(key, 0)).await;
    assert_eq!(out["success"], false, "{out}");
    assert_eq!(out["circuit_action_taken"], "rejected");
    assert_eq!(out["error"]["code"], "INTEGRATION_SERVICE_UNAVAILABLE");
    assert_eq!(out["error"]["queued_events"], 0);
    for seq in 1..3 {
        publish(s.node.as_ref(), &event(key, seq)).await;
    }
    let out = publish(s.node.as_ref(), &event(key, 3)).await;
    assert_eq!(out["state"], "open");
    assert!(out["error"]["message"].as_str().unwrap().contains("circuit breaker is open"), "{out}");
    assert_eq!(metrics(s.node.as_ref()).await["metrics"]["queued_events"], 0, "nothing was queued");

    // The publisher itself: the details circuit_state and queued_events.
    let breaker =
        Arc::new(CircuitBreaker::new(CircuitBreakerConfig { graceful_degradation: false, ..config() }).unwrap());
    breaker.force_open();
    let guarded = GuardedPublisher::new(s.switch.clone(), breaker, None);
    let err = guarded.publish(event(key, 4)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::IntegrationServiceUnavailable);
    assert_eq!(err.details().get("circuit_state"), Some(&json!("forced_open")));
    assert_eq!(err.details().get("queued_events"), Some(&json!(0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degradation_without_an_outbox_refuses_instead_of_losing() {
    let s = setup(config(), false).await;
    s.switch.set(FAIL);
    let out = publish(s.node.as_ref(), &event(Uuid::new_v4(), 0)).await;
    assert_eq!(out["success"], false, "{out}");
    assert_eq!(out["circuit_action_taken"], "rejected");
    assert_eq!(out["error"]["code"], "INTEGRATION_SERVICE_UNAVAILABLE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_outbox_cannot_hold_is_refused_at_once() {
    let s = setup(config(), true).await;
    s.switch.set(FAIL);
    let big = OnexEvent::new("test.big", "cb-test", Uuid::new_v4(), json!({"blob": "x".repeat(2 << 20)}));
    let err = s
        .node
        .process_json(json!({"operation_type": "publish_event", "event": big}), Context::new())
        .await
        .expect_err("too large to keep");
    assert_eq!(err.code(), ErrorCode::ValidationError, "{err}");
    assert_eq!(metrics(s.node.as_ref()).await["metrics"]["queued_events"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_past_the_timeout_counts_as_a_failure() {
    let s = setup(CircuitBreakerConfig { graceful_degradation: false, ..config() }, false).await;
    s.switch.set(STALL);
    let start = Instant::now();
    let out = publish(s.node.as_ref(), &event(Uuid::new_v4(), 0)).await;
    eprintln!("stalled publish answered after {:?} (timeout 5 s)", start.elapsed());
    assert!(start.elapsed() < Duration::from_secs(9), "the breaker's timeout must cut the 10 s publish");
    assert_eq!(out["success"], false, "{out}");
    let m = metrics(s.node.as_ref()).await;
    assert_eq!(m["metrics"]["failed_events"], 1, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_admits_a_trial_and_one_failure_reopens() {
    let s = setup(CircuitBreakerConfig { graceful_degradation: false, ..config() }, false).await;
    s.switch.set(FAIL);
    let key = Uuid::new_v4();
    for seq in 0..3 {
        publish(s.node.as_ref(), &event(key, seq)).await;
    }
    assert_eq!(metrics(s.node.as_ref()).await["state"], "open");
    tokio::time::sleep(RECOVERY + Duration::from_millis(200)).await;
    let out = publish(s.node.as_ref(), &event(key, 3)).await;
    assert_eq!(out["state"], "open", "a failed trial reopens: {out}");
    let m = metrics(s.node.as_ref()).await;
    assert_eq!(m["metrics"]["circuit_opens"], 2, "{m}");
    assert_eq!(m["metrics"]["failed_events"], 4, "the failed trial is a failed event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_full_cycle_republishes_the_queue_in_order_on_close() {
    let s = setup(config(), true).await;
    s.switch.set(FAIL);
    let key = Uuid::new_v4();
    let mut queued = Vec::new();
    for seq in 0..6 {
        let e = event(key, seq);
        let out = publish(s.node.as_ref(), &e).await;
        assert_eq!(out["circuit_action_taken"], "queued", "{out}");
        queued.push(e.event_id);
    }
    assert_eq!(metrics(s.node.as_ref()).await["state"], "open");
    assert!(s.switch.published().is_empty());

    s.switch.set(OK);
    tokio::time::sleep(RECOVERY + Duration::from_millis(200)).await;
    // The first call after the open wait is a trial and publishes.
    let trial = event(Uuid::new_v4(), 100);
    let out = publish(s.node.as_ref(), &trial).await;
    assert_eq!((out["state"].clone(), out["result"]["published"].clone()), (json!("half_open"), json!(true)), "{out}");
    assert_eq!(call(s.node.as_ref(), json!({"operation_type": "get_state"})).await["result"]["is_healthy"], true);
    let out = publish(s.node.as_ref(), &event(Uuid::new_v4(), 101)).await;
    assert_eq!(out["state"], "closed", "{out}");

    // The relay sends what was queued: same ids, in order.
    let waited = eventually(Duration::from_secs(10), "queued events republished", || {
        s.switch.published().iter().filter(|e| e.correlation_id == key).count() == queued.len()
    })
    .await;
    eprintln!("queue republished {waited:?} after the close");
    let republished: Vec<Uuid> =
        s.switch.published().iter().filter(|e| e.correlation_id == key).map(|e| e.event_id).collect();
    assert_eq!(republished, queued);
    let m = metrics(s.node.as_ref()).await;
    assert_eq!(m["metrics"]["circuit_closes"], 1, "{m}");
    assert_eq!(m["metrics"]["queued_events"], 0);
    assert_eq!(m["result"]["republished_events"], 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_closes_zeroes_the_counters_and_sends_the_queue() {
    let s = setup(config(), true).await;
    s.switch.set(FAIL);
    let key = Uuid::new_v4();
    for seq in 0..4 {
        publish(s.node.as_ref(), &event(key, seq)).await;
    }
    let health = call(s.node.as_ref(), json!({"operation_type": "get_health_status"})).await;
    assert_eq!(health["state"], "open");
    assert_eq!(health["result"]["is_healthy"], false);
    assert_eq!(health["result"]["queued_events"], 4);

    s.switch.set(OK);
    let out = call(s.node.as_ref(), json!({"operation_type": "reset_circuit"})).await;
    assert_eq!(out["state"], "closed", "{out}");
    for counter in ["total_events", "successful_events", "failed_events", "circuit_opens", "circuit_closes"] {
        assert_eq!(out["metrics"][counter], 0, "{counter} after reset: {out}");
    }
    assert!(out["metrics"]["last_failure"].is_null());
    eventually(Duration::from_secs(10), "queue sent after the reset", || s.switch.published().len() == 4).await;

    let health = call(s.node.as_ref(), json!({"operation_type": "get_health_status"})).await;
    assert_eq!(health["result"]["is_healthy"], true, "{health}");
    assert_eq!(health["result"]["config"]["failure_threshold"], 3);
    assert!(["production", "staging", "development"].contains(&health["result"]["environment"].as_str().unwrap()));
    assert_eq!(health["result"]["success_rate"], 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_are_all_counted_and_the_success_rate_is_exact() {
    let s = setup(config(), false).await;
    let node = s.node.as_ref();
    let events: Vec<OnexEvent> = (0..50).map(|i| event(Uuid::new_v4(), i)).collect();
    let outs = futures::future::join_all(events.iter().map(|e| publish(node, e))).await;
    assert!(outs.iter().all(|o| o["circuit_action_taken"] == "published"));
    let m = metrics(node).await;
    assert_eq!(m["metrics"]["total_events"], 50, "{m}");
    assert_eq!(m["metrics"]["successful_events"], 50);
    assert!((m["result"]["success_rate"].as_f64().unwrap() - 100.0).abs() < 0.01);

    // One failure in 51: 50 / 51 × 100.
    s.switch.set(FAIL);
    publish(node, &event(Uuid::new_v4(), 99)).await;
    let rate = metrics(node).await["result"]["success_rate"].as_f64().unwrap();
    assert!((rate - 5000.0 / 51.0).abs() < 0.01, "{rate}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_relays_what_an_earlier_one_left_in_the_outbox() {
    let db = TestDatabase::create("cb").await;
    let pool = Arc::new(PostgresConnectionManager::connect(db.config()).await.unwrap());
    outbox::migrate(&pool).await.unwrap();
    let left = Outbox::new(pool.clone(), OutboxConfig::default()).unwrap();
    let key = Uuid::new_v4();
    let events: Vec<OnexEvent> = (0..5).map(|i| event(key, i)).collect();
    for e in &events {
        left.enqueue(e, "open").await.unwrap();
    }

    let switch = Arc::new(Switch::default());
    let mut container = Container::new();
    container.register::<dyn EventPublisher>(switch.clone());
    container.register(Arc::new(config()));
    container.register(pool.clone());
    let node = onex_generated::registry().build(NODE, None, &container).unwrap();
    eventually(Duration::from_secs(10), "start-up relay", || switch.published().len() == 5).await;
    let ids: Vec<Uuid> = switch.published().iter().map(|e| e.event_id).collect();
    assert_eq!(ids, events.iter().map(|e| e.event_id).collect::<Vec<_>>());
    assert_eq!(metrics(node.as_ref()).await["metrics"]["queued_events"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_guarded_publisher_is_used_and_reports_its_actions() {
    let switch = Arc::new(Switch::default());
    let breaker = Arc::new(CircuitBreaker::new(config()).unwrap());
    let guarded = Arc::new(GuardedPublisher::new(switch.clone(), breaker.clone(), None));
    let mut container = Container::new();
    container.register(guarded.clone());
    let node = onex_generated::registry().build(NODE, None, &container).unwrap();
    assert_eq!(guarded.publish_with_action(event(Uuid::new_v4(), 0)).await.unwrap(), CircuitAction::Published);
    breaker.force_open();
    let out = call(node.as_ref(), json!({"operation_type": "get_state"})).await;
    assert_eq!(out["state"], "forced_open");
    assert_eq!(guarded.state(), CircuitBreakerState::ForcedOpen);
    assert_eq!(metrics(node.as_ref()).await["metrics"]["total_events"], 1);
}
