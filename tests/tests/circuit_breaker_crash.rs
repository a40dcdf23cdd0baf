//! Zero loss across a crash: a child process publishes 10,000 events through a
//! `GuardedPublisher` while the broker is stopped, noting each event id once the publish
//! returned `Ok`, and is SIGKILLed mid-way. This process then starts a relay on the same
//! outbox, the broker comes back, and every event the child reported accepted must arrive on
//! the topic, read back by a plain consumer. Duplicates (at-least-once) are counted and
//! printed.
//!
//! Its own test binary because it stops the shared broker (a drop guard restarts it); the
//! child is this binary again, running the ignored test `crash_child`.

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use onex_runtime::circuit_breaker::{CircuitBreaker, GuardedPublisher};
use onex_runtime::environment::Environment;
use onex_runtime::event::OnexEvent;
use onex_runtime::event_bus::{KafkaEventBus, RetryPolicy, TopicNamer};
use onex_runtime::kafka::{KafkaPoolSettings, KafkaProducerPool};
use onex_runtime::models::circuit_breaker::{CircuitAction, CircuitBreakerConfig};
use onex_runtime::models::kafka::KafkaProducerConfig;
use onex_runtime::outbox::{Outbox, OutboxConfig};
use onex_runtime::postgres::PostgresConnectionManager;
use onex_tests::kafka::{BrokerOutage, bootstrap, ensure_topic, read_events};
use onex_tests::postgres::TestDatabase;
use serde_json::json;
use uuid::Uuid;

const EVENT_TYPE: &str = "test.breaker.crash";
const EVENTS: u32 = 10_000;
/// Accepted events after which the child is killed.
const KILL_AFTER: usize = 3_000;
const ENV_OUT: &str = "ONEX_CB_CRASH_OUT";
const ENV_DB: &str = "ONEX_CB_CRASH_DB";
const ENV_SCHEMA: &str = "ONEX_CB_CRASH_SCHEMA";
const ENV_TENANT: &str = "ONEX_CB_CRASH_TENANT";

fn bus(tenant: &str) -> Arc<KafkaEventBus> {
    let namer = TopicNamer::new("dev", tenant, "onex").unwrap();
    let producer = KafkaProducerConfig { delivery_timeout_ms: 3_000, ..KafkaProducerConfig::new(bootstrap()) };
    let pool = Arc::new(KafkaProducerPool::new(KafkaPoolSettings::default(), producer).unwrap());
    // No rate limit: it is keyed by the event source, one for all these events, and would
    // hold the relay to the default 1,000 events a minute.
    Arc::new(
        KafkaEventBus::new(pool, namer)
            .with_retry_policy(RetryPolicy { max_retries: 0, ..RetryPolicy::default() })
            .with_rate_limit(None),
    )
}

async fn guarded(db: &TestDatabase, tenant: &str) -> (GuardedPublisher, Outbox) {
    let pg = Arc::new(PostgresConnectionManager::connect(db.config()).await.unwrap());
    let outbox = Outbox::new(pg, OutboxConfig { max_depth: 20_000, ..OutboxConfig::default() }).unwrap();
    let config = CircuitBreakerConfig {
        failure_threshold: 2,
        recovery_timeout_secs: 5,
        success_threshold: 1,
        timeout_secs: 5,
        ..CircuitBreakerConfig::for_environment(Environment::Production)
    };
    let breaker = Arc::new(CircuitBreaker::new(config).unwrap());
    let guarded =
        GuardedPublisher::new(bus(tenant), breaker, Some(outbox.clone())).with_relay_retry(Duration::from_secs(1));
    (guarded, outbox)
}

/// The child: publishes until killed, one accepted event id per line in `ONEX_CB_CRASH_OUT`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by zero_loss_across_a_crash as its child process"]
async fn crash_child() {
    let Ok(out) = std::env::var(ENV_OUT) else { return };
    // Never dropped (not even by a panic): the database belongs to the parent.
    let db = std::mem::ManuallyDrop::new(TestDatabase {
        name: std::env::var(ENV_DB).unwrap(),
        schema: std::env::var(ENV_SCHEMA).unwrap(),
    });
    let tenant = std::env::var(ENV_TENANT).unwrap();
    let (guarded, _) = guarded(&db, &tenant).await;
    guarded.start().unwrap();
    let mut file = std::fs::OpenOptions::new().append(true).open(out).unwrap();
    let key = Uuid::new_v4();
    let guarded = &guarded;
    let mut outcomes = futures::stream::iter(0..EVENTS)
        .map(|n| async move {
            let event = OnexEvent::new(EVENT_TYPE, "cb-crash-child", key, json!({ "n": n }));
            let id = event.event_id;
            (id, guarded.publish_with_action(event).await)
        })
        .buffer_unordered(16);
    while let Some((id, outcome)) = outcomes.next().await {
        let action = outcome.expect("every publish is accepted");
        assert!(matches!(action, CircuitAction::Published | CircuitAction::Queued), "{action:?}");
        // One write per event, straight to the kernel: a SIGKILL loses none of them.
        file.write_all(format!("{id}\n").as_bytes()).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_loss_across_a_crash() {
    let db = TestDatabase::create("cbc").await;
    let tenant = format!("t{}", Uuid::new_v4().simple());
    let topic = TopicNamer::new("dev", &tenant, "onex").unwrap().topic_for(EVENT_TYPE).unwrap();
    let out = std::env::temp_dir().join(format!("onex-cb-crash-{}.txt", Uuid::new_v4().simple()));
    std::fs::write(&out, "").unwrap();

    let mut outage = BrokerOutage::begin();
    let started = Instant::now();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--ignored", "--nocapture", "--test-threads", "1"])
        .env(ENV_OUT, &out)
        .env(ENV_DB, &db.name)
        .env(ENV_SCHEMA, &db.schema)
        .env(ENV_TENANT, &tenant)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let accepted_lines = || std::fs::read_to_string(&out).unwrap().lines().count();
    while accepted_lines() < KILL_AFTER {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the child ended before the kill: {status}");
        }
        assert!(started.elapsed() < Duration::from_secs(240), "the child accepted only {} events", accepted_lines());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Only whole lines: a line cut by the kill was not reported accepted.
    let text = std::fs::read_to_string(&out).unwrap();
    let accepted: Vec<Uuid> =
        text.split_inclusive('\n').filter(|l| l.ends_with('\n')).map(|l| l.trim().parse().unwrap()).collect();
    let _ = std::fs::remove_file(&out);
    eprintln!("child killed after {:?} with {} events accepted", started.elapsed(), accepted.len());

    // A new process (this one) starts the relay while the broker is still down, then the
    // broker comes back: the relay's retries send everything.
    let (guarded, outbox) = guarded(&db, &tenant).await;
    let depth = outbox.depth().await.unwrap();
    eprintln!("outbox depth after the crash: {depth}");
    assert!(depth as usize >= accepted.len(), "fewer outbox rows than accepted events");
    guarded.start().unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    outage.end();
    ensure_topic(&topic, 1).await;
    let back = Instant::now();
    while outbox.depth().await.unwrap() > 0 {
        if back.elapsed() > Duration::from_secs(240) {
            let errors = outbox
                .manager()
                .execute_query(
                    "SELECT last_error, count(*) AS n, max(attempts) AS attempts FROM onex_outbox \
                     WHERE published_at IS NULL GROUP BY 1",
                    &[],
                )
                .await
                .unwrap();
            panic!("outbox not drained: {} left; {:?}", outbox.depth().await.unwrap(), errors.rows);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("relay emptied the outbox {:?} after the broker came back", back.elapsed());
    guarded.close().await;

    let expected = accepted.len();
    let read =
        tokio::task::spawn_blocking(move || read_events(&topic, expected, Duration::from_secs(120))).await.unwrap();
    let mut counts: HashMap<Uuid, usize> = HashMap::new();
    for e in &read {
        *counts.entry(e.event_id).or_default() += 1;
    }
    let missing = accepted.iter().filter(|id| !counts.contains_key(id)).count();
    let duplicates: usize = counts.values().map(|c| c - 1).sum();
    eprintln!(
        "{} accepted, {} read back ({} distinct), {missing} missing, {duplicates} duplicates",
        accepted.len(),
        read.len(),
        counts.len()
    );
    assert_eq!(missing, 0, "accepted events lost");
}
