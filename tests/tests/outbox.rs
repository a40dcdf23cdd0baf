//! The durable event outbox against the real PostgreSQL server on 127.0.0.1:5432.
//! Each test creates its own database (see `onex_tests::postgres::TestDatabase`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use onex_runtime::event::OnexEvent;
use onex_runtime::event_bus::EventPublisher;
use onex_runtime::node::BoxFuture;
use onex_runtime::outbox::{self, CAPACITY_EXCEEDED, Enqueued, Outbox, OutboxConfig, OutboxStats};
use onex_runtime::postgres::{PostgresConnectionManager, TransactionOptions};
use onex_runtime::{ErrorCode, OnexError};
use onex_tests::postgres::TestDatabase;
use serde_json::{Value, json};
use uuid::Uuid;

const SCHEMA: &str = "obx";

async fn pool(db: &TestDatabase) -> Arc<PostgresConnectionManager> {
    Arc::new(PostgresConnectionManager::connect(db.config()).await.expect("connect"))
}

/// A migrated database and an outbox on it.
async fn setup(config: OutboxConfig) -> (TestDatabase, Outbox) {
    let db = TestDatabase::create(SCHEMA).await;
    let pg = pool(&db).await;
    outbox::migrate(&pg).await.expect("migrate");
    let outbox = Outbox::new(pg, config).expect("outbox");
    (db, outbox)
}

fn event(key: Uuid, seq: usize) -> OnexEvent {
    OnexEvent::new("test.outbox.happened", "outbox-test", key, json!({ "seq": seq }))
}

fn seq(event: &OnexEvent) -> u64 {
    event.payload["seq"].as_u64().expect("seq")
}

async fn enqueue_all(outbox: &Outbox, events: &[OnexEvent]) {
    for event in events {
        let outcome = outbox.enqueue(event, "closed").await.expect("enqueue");
        assert!(matches!(outcome, Enqueued::Queued { .. }), "{outcome:?}");
    }
}

async fn scalar(db: &TestDatabase, sql: &str) -> i64 {
    db.client().await.query_one(sql, &[]).await.expect(sql).get(0)
}

/// Inserts `rows` rows shaped as enqueue stores them, spread over `keys` correlation ids, to
/// time the relay alone.
async fn bulk_load(db: &TestDatabase, rows: i64, keys: i64) {
    db.client()
        .await
        .execute(
            "INSERT INTO obx.onex_outbox (event_id, correlation_id, event_type, payload)
             SELECT e, c, 'test.bulk', jsonb_build_object('event_id', e, 'event_type', 'test.bulk',
                    'correlation_id', c, 'timestamp', now(), 'source', 'bench',
                    'payload', jsonb_build_object('seq', i))
             FROM (SELECT i, gen_random_uuid() AS e,
                          ('00000000-0000-0000-0000-' || lpad((i % $2)::text, 12, '0'))::uuid AS c
                   FROM generate_series(1, $1::bigint) AS i) s",
            &[&rows, &keys],
        )
        .await
        .unwrap();
}

/// A publisher that records what it was given, can fail on demand, can be slow, and notes
/// when one event is being published twice at the same moment.
#[derive(Default)]
struct Recorder {
    published: Mutex<Vec<OnexEvent>>,
    in_flight: Mutex<HashSet<Uuid>>,
    overlaps: AtomicUsize,
    attempts: AtomicUsize,
    fail_all: AtomicBool,
    fail_ids: Mutex<HashSet<Uuid>>,
    delay: Option<Duration>,
}

impl Recorder {
    fn slow(delay: Duration) -> Self {
        Self { delay: Some(delay), ..Self::default() }
    }

    fn published(&self) -> Vec<OnexEvent> {
        self.published.lock().unwrap().clone()
    }

    fn ids(&self) -> Vec<Uuid> {
        self.published().iter().map(|e| e.event_id).collect()
    }
}

impl EventPublisher for Recorder {
    fn publish(&self, event: OnexEvent) -> BoxFuture<'_, Result<(), OnexError>> {
        Box::pin(async move {
            self.attempts.fetch_add(1, SeqCst);
            if !self.in_flight.lock().unwrap().insert(event.event_id) {
                self.overlaps.fetch_add(1, SeqCst);
            }
            if let Some(delay) = self.delay {
                // Makes publishes of two relays overlap; nothing is timed by it.
                tokio::time::sleep(delay).await;
            }
            self.in_flight.lock().unwrap().remove(&event.event_id);
            if self.fail_all.load(SeqCst) || self.fail_ids.lock().unwrap().contains(&event.event_id) {
                return Err(OnexError::new(ErrorCode::IntegrationServiceUnavailable, "broker unavailable (test)"));
            }
            self.published.lock().unwrap().push(event);
            Ok(())
        })
    }
}

/// For every correlation id, the `seq` values in the order they were published.
fn seqs_by_key(events: &[OnexEvent]) -> HashMap<Uuid, Vec<u64>> {
    let mut by_key: HashMap<Uuid, Vec<u64>> = HashMap::new();
    for event in events {
        by_key.entry(event.correlation_id).or_default().push(seq(event));
    }
    by_key
}

fn assert_ordered_per_key(events: &[OnexEvent]) {
    for (key, seqs) in seqs_by_key(events) {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "key {key} published out of order: {seqs:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_is_idempotent_and_concurrent_applies_do_not_race() {
    let db = TestDatabase::create(SCHEMA).await;
    let pg = pool(&db).await;
    assert_eq!(outbox::migrate(&pg).await.unwrap(), vec![1]);
    assert_eq!(outbox::migrate(&pg).await.unwrap(), Vec::<i32>::new(), "second apply does nothing");
    assert_eq!(scalar(&db, "SELECT count(*) FROM obx.onex_schema_migrations").await, 1);
    assert_eq!(scalar(&db, "SELECT count(*) FROM obx.onex_outbox").await, 0);
    assert_eq!(scalar(&db, "SELECT count(*) FROM obx.onex_dead_letter").await, 0);

    // Four pools starting together on a fresh database: one applies, the others wait on the
    // advisory lock and then find the schema current.
    let fresh = TestDatabase::create(SCHEMA).await;
    let pools = futures::future::join_all((0..4).map(|_| pool(&fresh))).await;
    let results = futures::future::join_all(pools.iter().map(|pg| outbox::migrate(pg))).await;
    let mut applied: Vec<Vec<i32>> = results.into_iter().map(|r| r.expect("concurrent migrate")).collect();
    applied.sort();
    assert_eq!(applied, vec![vec![], vec![], vec![], vec![1]]);
    assert_eq!(scalar(&fresh, "SELECT count(*) FROM obx.onex_schema_migrations").await, 1);
    for pg in pools.iter().chain([&pg]) {
        pg.close();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueued_events_are_relayed_in_order_and_marked_published() {
    let (db, outbox) = setup(OutboxConfig::default()).await;
    let keys = [Uuid::new_v4(), Uuid::new_v4()];
    let events: Vec<OnexEvent> = (0..10).map(|i| event(keys[i % 2], i)).collect();
    enqueue_all(&outbox, &events).await;
    assert_eq!(outbox.stats().await.unwrap(), OutboxStats { depth: 10, dead_letters: 0 });

    let recorder = Recorder::default();
    let report = outbox.relay_once(&recorder, 4).await.unwrap();
    assert_eq!((report.claimed, report.published, report.failed, report.deferred), (4, 4, 0, 0));
    let report = outbox.drain(&recorder, 4).await.unwrap();
    assert_eq!((report.published, report.failed, report.stopped), (6, 0, false));
    assert_eq!(recorder.published(), events, "same events, same order, same event ids");
    assert_eq!(outbox.depth().await.unwrap(), 0);
    assert_eq!(scalar(&db, "SELECT count(*) FROM obx.onex_outbox WHERE published_at IS NOT NULL").await, 10);
    assert_eq!(outbox.relay_once(&recorder, 4).await.unwrap().claimed, 0, "nothing is published twice");
    assert_eq!(outbox.relay_once(&recorder, 0).await.unwrap_err().code(), ErrorCode::ValidationError);

    // Enqueue is idempotent per event id, also after the event went out.
    assert_eq!(outbox.enqueue(&events[0], "closed").await.unwrap(), Enqueued::Duplicate);
    assert_eq!(outbox.depth().await.unwrap(), 0);
    outbox.manager().close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_commits_or_rolls_back_with_the_callers_transaction() {
    let (db, outbox) = setup(OutboxConfig::default()).await;
    let pg = Arc::clone(outbox.manager());
    pg.execute_query("CREATE TABLE orders (id int PRIMARY KEY)", &[]).await.unwrap();
    let key = Uuid::new_v4();

    let rolled_back = event(key, 1);
    let mut tx = pg.begin(TransactionOptions::default()).await.unwrap();
    tx.execute_query("INSERT INTO orders VALUES (1)", &[]).await.unwrap();
    assert!(matches!(outbox.enqueue_in(&mut tx, &rolled_back, "closed").await.unwrap(), Enqueued::Queued { .. }));
    tx.rollback().await.unwrap();
    assert_eq!(outbox.depth().await.unwrap(), 0, "a rolled-back transaction leaves no event");

    // A failed statement after the enqueue fails the whole transaction: neither is kept.
    let failed = event(key, 2);
    let mut tx = pg.begin(TransactionOptions::default()).await.unwrap();
    outbox.enqueue_in(&mut tx, &failed, "closed").await.unwrap();
    tx.execute_query("INSERT INTO orders VALUES ('not a number')", &[]).await.unwrap_err();
    assert_eq!(tx.commit().await.unwrap_err().code(), ErrorCode::DatabaseQueryError);
    assert_eq!(outbox.depth().await.unwrap(), 0);

    let committed = event(key, 3);
    let mut tx = pg.begin(TransactionOptions::default()).await.unwrap();
    tx.execute_query("INSERT INTO orders VALUES (3)", &[]).await.unwrap();
    outbox.enqueue_in(&mut tx, &committed, "closed").await.unwrap();
    assert_eq!(outbox.depth().await.unwrap(), 0, "invisible until the caller commits");
    tx.commit().await.unwrap();
    assert_eq!(outbox.depth().await.unwrap(), 1);

    let recorder = Recorder::default();
    outbox.drain(&recorder, 10).await.unwrap();
    assert_eq!(recorder.published(), vec![committed]);
    assert_eq!(scalar(&db, "SELECT count(*) FROM obx.orders").await, 1);
    pg.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_stops_after_three_consecutive_failures_and_republishes_the_same_events_later() {
    let (db, outbox) = setup(OutboxConfig::default()).await;
    let events: Vec<OnexEvent> = (0..5).map(|i| event(Uuid::new_v4(), i)).collect();
    enqueue_all(&outbox, &events).await;

    let recorder = Recorder::default();
    recorder.fail_all.store(true, SeqCst);
    let report = outbox.drain(&recorder, 10).await.unwrap();
    assert!(report.stopped, "{report:?}");
    assert_eq!((report.passes, report.published, report.failed), (1, 0, 3));
    assert_eq!(recorder.attempts.load(SeqCst), 3, "no publish after the third failure in a row");
    let last = report.last_error.expect("last error");
    assert_eq!(last.code(), ErrorCode::IntegrationServiceUnavailable);
    assert_eq!(outbox.depth().await.unwrap(), 5, "all rows stay");
    let client = db.client().await;
    let rows = client.query("SELECT attempts, last_error FROM obx.onex_outbox ORDER BY id", &[]).await.unwrap();
    let attempts: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(attempts, vec![1, 1, 1, 0, 0]);
    let error: Option<String> = rows[0].get(1);
    assert!(error.unwrap().contains("broker unavailable (test)"));

    recorder.fail_all.store(false, SeqCst);
    let report = outbox.drain(&recorder, 10).await.unwrap();
    assert_eq!((report.published, report.stopped), (5, false));
    assert_eq!(recorder.published(), events, "republished events are the stored ones, event ids kept");
    outbox.manager().close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_per_key_is_kept_when_a_row_fails_or_is_held_elsewhere() {
    let (db, outbox) = setup(OutboxConfig::default()).await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    // ids 1..=5: a0 b1 a2 b3 a4
    let events: Vec<OnexEvent> = (0..5).map(|i| event(if i % 2 == 0 { a } else { b }, i)).collect();
    enqueue_all(&outbox, &events).await;

    let recorder = Recorder::default();
    recorder.fail_ids.lock().unwrap().insert(events[0].event_id);
    let report = outbox.relay_once(&recorder, 10).await.unwrap();
    assert_eq!((report.claimed, report.published, report.failed, report.deferred), (5, 2, 1, 2), "{report:?}");
    assert_eq!(recorder.published().iter().map(seq).collect::<Vec<_>>(), vec![1, 3], "only key b went out");

    recorder.fail_ids.lock().unwrap().clear();
    outbox.drain(&recorder, 10).await.unwrap();
    assert_eq!(recorder.published().iter().map(seq).collect::<Vec<_>>(), vec![1, 3, 0, 2, 4]);
    assert_ordered_per_key(&recorder.published());

    // Another relay holds the oldest row of key c: this relay skips it and defers the
    // younger row of c, but publishes key d.
    let (c, d) = (Uuid::new_v4(), Uuid::new_v4());
    let more = vec![event(c, 10), event(d, 11), event(c, 12)];
    enqueue_all(&outbox, &more).await;
    let mut holder = db.client().await;
    let held = holder.transaction().await.unwrap();
    let locked = held
        .query("SELECT id FROM obx.onex_outbox WHERE event_id = $1 FOR UPDATE", &[&more[0].event_id])
        .await
        .unwrap();
    assert_eq!(locked.len(), 1);
    let report = outbox.relay_once(&recorder, 10).await.unwrap();
    assert_eq!((report.claimed, report.published, report.deferred), (2, 1, 1), "{report:?}");
    assert_eq!(recorder.published().last().map(seq), Some(11));
    held.rollback().await.unwrap();
    outbox.drain(&recorder, 10).await.unwrap();
    let tail: Vec<u64> = recorder.published().iter().skip(5).map(seq).collect();
    assert_eq!(tail, vec![11, 10, 12]);
    outbox.manager().close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_that_no_longer_decodes_is_dead_lettered_instead_of_blocking_its_key() {
    let (db, outbox) = setup(OutboxConfig::default()).await;
    let key = Uuid::new_v4();
    enqueue_all(&outbox, &[event(key, 0)]).await;
    let client = db.client().await;
    client
        .execute(
            "INSERT INTO obx.onex_outbox (event_id, correlation_id, event_type, payload) \
             VALUES (gen_random_uuid(), $1, 'test.bad', '{\"not\": \"an event\"}')",
            &[&key],
        )
        .await
        .unwrap();
    let after = event(key, 2);
    enqueue_all(&outbox, std::slice::from_ref(&after)).await;

    let recorder = Recorder::default();
    let report = outbox.relay_once(&recorder, 10).await.unwrap();
    assert_eq!((report.claimed, report.published, report.dead_lettered), (3, 2, 1), "{report:?}");
    assert_eq!(recorder.published().iter().map(seq).collect::<Vec<_>>(), vec![0, 2]);
    let row = client.query_one("SELECT event, reason, circuit_state FROM obx.onex_dead_letter", &[]).await.unwrap();
    assert_eq!(row.get::<_, Value>(0), json!({"not": "an event"}));
    assert!(row.get::<_, String>(1).starts_with("stored payload is not an event"));
    assert_eq!(row.get::<_, String>(2), "unknown");
    assert_eq!(outbox.stats().await.unwrap(), OutboxStats { depth: 0, dead_letters: 1 });
    outbox.manager().close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_relays_on_one_database_never_publish_an_event_twice() {
    let (db, outbox_a) = setup(OutboxConfig::default()).await;
    let outbox_b = Outbox::new(pool(&db).await, OutboxConfig::default()).unwrap();
    let keys: Vec<Uuid> = (0..12).map(|_| Uuid::new_v4()).collect();
    let events: Vec<OnexEvent> = (0..600).map(|i| event(keys[i % keys.len()], i)).collect();
    futures::future::try_join_all(events.chunks(100).map(|chunk| {
        let outbox = outbox_a.clone();
        async move {
            for event in chunk {
                outbox.enqueue(event, "closed").await?;
            }
            Ok::<_, OnexError>(())
        }
    }))
    .await
    .unwrap();
    // Concurrent enqueuers interleave ids; order per key is id order, which is what the
    // relays must keep.
    let client = db.client().await;
    let stored: Vec<i64> = client
        .query("SELECT (payload->'payload'->>'seq')::bigint FROM obx.onex_outbox ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(stored.len(), 600);

    let recorder = Arc::new(Recorder::slow(Duration::from_micros(300)));
    let relay = |outbox: Outbox, recorder: Arc<Recorder>| {
        tokio::spawn(async move {
            let mut published = 0;
            // Each drain ends when a pass only found rows held by the other relay; go on until
            // the outbox is empty.
            while outbox.depth().await? > 0 {
                published += outbox.drain(&*recorder, 25).await?.published;
                tokio::task::yield_now().await;
            }
            Ok::<_, OnexError>(published)
        })
    };
    let (a, b) =
        tokio::join!(relay(outbox_a.clone(), Arc::clone(&recorder)), relay(outbox_b.clone(), Arc::clone(&recorder)));
    let (a, b) = (a.unwrap().unwrap(), b.unwrap().unwrap());
    println!("relay a published {a}, relay b published {b}");
    assert_eq!(a + b, 600);
    assert!(a > 0 && b > 0, "both relays took part: {a} + {b}");

    let ids = recorder.ids();
    let unique: HashSet<Uuid> = ids.iter().copied().collect();
    assert_eq!((ids.len(), unique.len()), (600, 600), "every event exactly once");
    assert_eq!(recorder.overlaps.load(SeqCst), 0, "no event was being published by both relays at once");
    // Per key, publication follows id order.
    let rank: HashMap<i64, usize> = stored.iter().enumerate().map(|(i, s)| (*s, i)).collect();
    for (key, seqs) in seqs_by_key(&recorder.published()) {
        let ranks: Vec<usize> = seqs.iter().map(|s| rank[&i64::try_from(*s).unwrap()]).collect();
        assert!(ranks.windows(2).all(|w| w[0] < w[1]), "key {key} out of id order: {seqs:?}");
    }
    outbox_a.manager().close();
    outbox_b.manager().close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_and_unstorable_events_are_refused_and_never_stored() {
    let (_db, outbox) = setup(OutboxConfig { max_event_bytes: 1024, ..OutboxConfig::default() }).await;
    let big = OnexEvent::new("test.big", "outbox-test", Uuid::new_v4(), json!({ "blob": "x".repeat(2000) }));
    let err = outbox.enqueue(&big, "closed").await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ValidationError);
    assert!(err.message().contains("more than the limit of 1024"), "{err}");
    assert!(err.message().contains(&big.event_id.to_string()), "{err}");

    let nul = OnexEvent::new("test.nul", "outbox-test", Uuid::new_v4(), json!({ "text": "a\u{0}b" }));
    let err = outbox.enqueue(&nul, "closed").await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ValidationError);
    assert!(err.message().contains("NUL character"), "{err}");

    // Refused before anything reaches the caller's transaction, which can still commit.
    let pg = Arc::clone(outbox.manager());
    let mut tx = pg.begin(TransactionOptions::default()).await.unwrap();
    assert_eq!(outbox.enqueue_in(&mut tx, &big, "closed").await.unwrap_err().code(), ErrorCode::ValidationError);
    tx.commit().await.unwrap();
    assert_eq!(outbox.stats().await.unwrap(), OutboxStats { depth: 0, dead_letters: 0 });
    pg.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_capacity_events_go_to_the_dead_letter_table() {
    let (db, outbox) = setup(OutboxConfig { max_depth: 3, ..OutboxConfig::default() }).await;
    let events: Vec<OnexEvent> = (0..4).map(|i| event(Uuid::new_v4(), i)).collect();
    enqueue_all(&outbox, &events[..3]).await;
    let outcome = outbox.enqueue(&events[3], "open").await.unwrap();
    assert!(matches!(outcome, Enqueued::DeadLettered { .. }), "{outcome:?}");
    assert_eq!(outbox.stats().await.unwrap(), OutboxStats { depth: 3, dead_letters: 1 });
    // A duplicate of a queued event is not dead-lettered.
    assert_eq!(outbox.enqueue(&events[0], "open").await.unwrap(), Enqueued::Duplicate);

    let client = db.client().await;
    let row = client
        .query_one("SELECT event, reason, circuit_state, retry_count FROM obx.onex_dead_letter", &[])
        .await
        .unwrap();
    let stored: Value = row.get(0);
    assert_eq!(serde_json::from_value::<OnexEvent>(stored).unwrap(), events[3]);
    assert_eq!(row.get::<_, String>(1), CAPACITY_EXCEEDED);
    assert_eq!(row.get::<_, String>(1), "Queue capacity exceeded");
    assert_eq!(row.get::<_, String>(2), "open");
    assert_eq!(row.get::<_, i32>(3), 0);

    // Room again once a row is published, even one in the middle of the id range (the
    // cheap id-range bound still says full; the exact count says otherwise).
    client.execute("UPDATE obx.onex_outbox SET published_at = now() WHERE id = 2", &[]).await.unwrap();
    assert!(matches!(outbox.enqueue(&event(Uuid::new_v4(), 8), "closed").await.unwrap(), Enqueued::Queued { .. }));
    assert!(matches!(
        outbox.enqueue(&event(Uuid::new_v4(), 9), "closed").await.unwrap(),
        Enqueued::DeadLettered { .. }
    ));
    outbox.drain(&Recorder::default(), 10).await.unwrap();
    assert!(matches!(outbox.enqueue(&event(Uuid::new_v4(), 10), "closed").await.unwrap(), Enqueued::Queued { .. }));
    assert_eq!(outbox.stats().await.unwrap(), OutboxStats { depth: 1, dead_letters: 2 });
    outbox.manager().close();
}

/// `n` dead letters, the first `old` of them created two days ago; returns their ids.
async fn dead_letters(db: &TestDatabase, outbox: &Outbox, n: usize, old: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(outbox.dead_letter(&event(Uuid::new_v4(), i), "test", "open", 2).await.unwrap());
    }
    db.client()
        .await
        .execute(
            "UPDATE obx.onex_dead_letter SET created_at = now() - interval '2 days' WHERE id = ANY($1)",
            &[&ids[..old].to_vec()],
        )
        .await
        .unwrap();
    ids
}

async fn remaining_dead_letters(db: &TestDatabase) -> Vec<i64> {
    let rows = db.client().await.query("SELECT id FROM obx.onex_dead_letter ORDER BY id", &[]).await.unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_purged_by_ttl_then_capped_oldest_first() {
    let (db, outbox) = setup(OutboxConfig::default()).await;
    let ids = dead_letters(&db, &outbox, 10, 3).await;
    let report = outbox.purge_dead_letters(Duration::from_secs(24 * 3600), 5).await.unwrap();
    assert_eq!((report.expired, report.over_cap), (3, 2));
    assert_eq!(remaining_dead_letters(&db).await, ids[5..].to_vec(), "the newest five stay");
    let report = outbox.purge_dead_letters(Duration::from_secs(24 * 3600), 5).await.unwrap();
    assert_eq!((report.expired, report.over_cap), (0, 0));
    outbox.manager().close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_maintenance_task_purges_periodically_until_stopped() {
    let config = OutboxConfig { dead_letter_cap: 4, ..OutboxConfig::default() };
    let (db, outbox) = setup(config).await;
    let ids = dead_letters(&db, &outbox, 6, 1).await;
    // A published row older than the retention goes too; an unpublished one stays.
    let events: Vec<OnexEvent> = (0..2).map(|i| event(Uuid::new_v4(), i)).collect();
    enqueue_all(&outbox, &events[..1]).await;
    outbox.drain(&Recorder::default(), 10).await.unwrap();
    enqueue_all(&outbox, &events[1..]).await;
    db.client()
        .await
        .batch_execute(
            "UPDATE obx.onex_outbox SET published_at = now() - interval '2 days' WHERE published_at IS NOT NULL",
        )
        .await
        .unwrap();

    assert_eq!(outbox.spawn_maintenance(Duration::ZERO).unwrap_err().code(), ErrorCode::ConfigurationError);
    let handle = outbox.spawn_maintenance(Duration::from_millis(20)).unwrap();
    let mut passes = handle.passes();
    let within = Duration::from_secs(10);
    tokio::time::timeout(within, passes.wait_for(|n| *n >= 1)).await.expect("first pass").unwrap();
    assert_eq!(remaining_dead_letters(&db).await, ids[2..].to_vec(), "expired one and capped to four");
    assert_eq!(scalar(&db, "SELECT count(*) FROM obx.onex_outbox").await, 1, "only the unpublished row left");

    // The task keeps running: a later pass purges what expired since. (Inserted already
    // expired in one statement, so a pass cannot see it young and cap an older row instead.)
    let expired: i64 = db
        .client()
        .await
        .query_one(
            "INSERT INTO obx.onex_dead_letter (event, reason, circuit_state, created_at) \
             VALUES ('{}', 'test', 'open', now() - interval '2 days') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let seen = *passes.borrow();
    tokio::time::timeout(within, passes.wait_for(|n| *n > seen + 1)).await.expect("later pass").unwrap();
    let left = remaining_dead_letters(&db).await;
    assert_eq!(left, ids[2..].to_vec(), "row {expired} expired, the rest stay");

    handle.stop().await;
    let stopped_at = *passes.borrow();
    dead_letters(&db, &outbox, 1, 1).await;
    // The task is gone: its sender is dropped, so waiting for another pass ends at once.
    assert!(passes.wait_for(|n| *n > stopped_at).await.is_err(), "no pass after stop");
    assert_eq!(remaining_dead_letters(&db).await.len(), 5);
    outbox.manager().close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_throughput_to_a_no_op_publisher() {
    struct NoOp;
    impl EventPublisher for NoOp {
        fn publish(&self, _event: OnexEvent) -> BoxFuture<'_, Result<(), OnexError>> {
            Box::pin(async { Ok(()) })
        }
    }
    const ROWS: i64 = 10_000;
    let (db, outbox) = setup(OutboxConfig::default()).await;
    bulk_load(&db, ROWS, 64).await;
    assert_eq!(outbox.depth().await.unwrap(), 10_000);
    // Enqueue cost at this depth (the capacity check is part of it).
    let started = Instant::now();
    let extra: Vec<OnexEvent> = (0..500).map(|i| event(Uuid::new_v4(), i)).collect();
    enqueue_all(&outbox, &extra).await;
    let elapsed = started.elapsed();
    println!(
        "enqueue at depth 10,000: {} events in {:.2} s = {:.0} events/s (one at a time)",
        extra.len(),
        elapsed.as_secs_f64(),
        extra.len() as f64 / elapsed.as_secs_f64()
    );
    let started = Instant::now();
    let report = outbox.drain(&NoOp, 500).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!((report.published, report.failed, report.dead_lettered), (10_500, 0, 0));
    assert_eq!(outbox.depth().await.unwrap(), 0);
    println!(
        "relay throughput: {} events in {:.2} s = {:.0} events/s (batch 500, {} passes, {} build)",
        report.published,
        elapsed.as_secs_f64(),
        report.published as f64 / elapsed.as_secs_f64(),
        report.passes,
        if cfg!(debug_assertions) { "debug" } else { "release" }
    );
    outbox.manager().close();
}

/// Acknowledges after a delay picked per event (a hash of its id, up to `spread`), so acks
/// complete in an order unrelated to the order of the publishes. Records the order in
/// which publishes started, and notes two publishes of one key in flight at once.
struct Shuffler {
    spread: Duration,
    started: Mutex<Vec<OnexEvent>>,
    keys_in_flight: Mutex<HashSet<Uuid>>,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    key_overlaps: AtomicUsize,
    fail_key: Option<Uuid>,
}

impl Shuffler {
    fn new(spread: Duration, fail_key: Option<Uuid>) -> Self {
        Self {
            spread,
            started: Mutex::default(),
            keys_in_flight: Mutex::default(),
            in_flight: AtomicUsize::new(0),
            most_in_flight: AtomicUsize::new(0),
            key_overlaps: AtomicUsize::new(0),
            fail_key,
        }
    }
}

impl EventPublisher for Shuffler {
    fn publish(&self, event: OnexEvent) -> BoxFuture<'_, Result<(), OnexError>> {
        Box::pin(async move {
            let now = self.in_flight.fetch_add(1, SeqCst) + 1;
            self.most_in_flight.fetch_max(now, SeqCst);
            if !self.keys_in_flight.lock().unwrap().insert(event.correlation_id) {
                self.key_overlaps.fetch_add(1, SeqCst);
            }
            self.started.lock().unwrap().push(event.clone());
            let hash = event.event_id.as_u128() % 1_000;
            let micros = u64::try_from(hash).unwrap() * u64::try_from(self.spread.as_micros()).unwrap() / 1_000;
            tokio::time::sleep(Duration::from_micros(micros)).await;
            self.keys_in_flight.lock().unwrap().remove(&event.correlation_id);
            self.in_flight.fetch_sub(1, SeqCst);
            if self.fail_key == Some(event.correlation_id) {
                return Err(OnexError::new(ErrorCode::IntegrationServiceUnavailable, "broker refused the key (test)"));
            }
            Ok(())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_per_key_is_kept_when_acknowledgements_complete_out_of_order() {
    let (db, outbox) = setup(OutboxConfig::default()).await;
    let keys: Vec<Uuid> = (0..8).map(|_| Uuid::new_v4()).collect();
    let events: Vec<OnexEvent> = (0..120).map(|i| event(keys[i % keys.len()], i)).collect();
    enqueue_all(&outbox, &events).await;

    let shuffler = Shuffler::new(Duration::from_millis(4), None);
    let report = outbox.drain(&shuffler, 50).await.unwrap();
    assert_eq!((report.published, report.failed, report.stopped), (120, 0, false), "{report:?}");
    let started = shuffler.started.lock().unwrap().clone();
    assert_eq!(started.len(), 120, "every event once");
    assert_ordered_per_key(&started);
    assert_eq!(shuffler.key_overlaps.load(SeqCst), 0, "never two rows of one key in flight");
    assert!(shuffler.most_in_flight.load(SeqCst) > 1, "publishes overlapped");
    let mut ids: Vec<Uuid> = started.iter().map(|e| e.event_id).collect();
    let mut expected: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    ids.sort_unstable();
    expected.sort_unstable();
    assert_eq!(ids, expected, "event ids kept");
    assert_eq!(scalar(&db, "SELECT count(*) FROM obx.onex_outbox WHERE published_at IS NULL").await, 0);
    outbox.manager().close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_key_does_not_block_the_other_keys() {
    let (db, outbox) = setup(OutboxConfig::default()).await;
    let bad = Uuid::new_v4();
    let keys: Vec<Uuid> = (0..20).map(|_| Uuid::new_v4()).collect();
    // The failing key's rows come first, so they are the oldest of the batch.
    let mut events: Vec<OnexEvent> = (0..3).map(|i| event(bad, i)).collect();
    events.extend((3..63).map(|i| event(keys[i % keys.len()], i)));
    enqueue_all(&outbox, &events).await;

    let shuffler = Shuffler::new(Duration::from_millis(2), Some(bad));
    let report = outbox.relay_once(&shuffler, 100).await.unwrap();
    assert_eq!(
        (report.claimed, report.published, report.failed, report.deferred, report.stopped),
        (63, 60, 1, 2, false),
        "{report:?}"
    );
    let started = shuffler.started.lock().unwrap().clone();
    assert_eq!(started.iter().filter(|e| e.correlation_id == bad).count(), 1, "the key stops at its failure");
    assert_ordered_per_key(&started);
    let client = db.client().await;
    let rows =
        client.query("SELECT attempts FROM obx.onex_outbox WHERE published_at IS NULL ORDER BY id", &[]).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.get::<_, i32>(0)).collect::<Vec<_>>(), vec![1, 0, 0]);
    outbox.manager().close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_throughput_with_slow_acknowledgements() {
    /// Acknowledges each event 5 ms after it was given, like a broker with `linger.ms` 5.
    /// With `one_at_a_time`, publishes queue behind each other, as the relay used to send them.
    struct Slow {
        one_at_a_time: Option<tokio::sync::Mutex<()>>,
    }
    impl EventPublisher for Slow {
        fn publish(&self, _event: OnexEvent) -> BoxFuture<'_, Result<(), OnexError>> {
            Box::pin(async move {
                let _turn = match &self.one_at_a_time {
                    Some(lock) => Some(lock.lock().await),
                    None => None,
                };
                tokio::time::sleep(Duration::from_millis(5)).await;
                Ok(())
            })
        }
    }
    let (db, outbox) = setup(OutboxConfig::default()).await;
    for (label, rows, publisher) in [
        ("one at a time (the relay before)", 300, Slow { one_at_a_time: Some(tokio::sync::Mutex::new(())) }),
        ("concurrent", 10_000, Slow { one_at_a_time: None }),
    ] {
        bulk_load(&db, rows, 1_000).await;
        let started = Instant::now();
        let report = outbox.drain(&publisher, 500).await.unwrap();
        let elapsed = started.elapsed();
        assert_eq!(report.published, usize::try_from(rows).unwrap());
        println!(
            "relay with 5 ms acknowledgements, {label}: {} events in {:.2} s = {:.0} events/s \
             (batch 500, 1,000 keys, {} passes, {} build)",
            report.published,
            elapsed.as_secs_f64(),
            report.published as f64 / elapsed.as_secs_f64(),
            report.passes,
            if cfg!(debug_assertions) { "debug" } else { "release" }
        );
    }
    outbox.manager().close();
}
