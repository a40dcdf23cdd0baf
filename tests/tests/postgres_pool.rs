//! The PostgreSQL connection manager against the real server on 127.0.0.1:5432.
//! Each test creates its own database (see `onex_tests::postgres::TestDatabase`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use onex_runtime::ErrorCode;
use onex_runtime::models::health::HealthStatus;
use onex_runtime::models::postgres::{IsolationLevel, QueryType};
use onex_runtime::postgres::metrics::query_hash;
use onex_runtime::postgres::{PostgresConnectionManager, QueryOptions, TransactionOptions};
use onex_tests::postgres::TestDatabase;
use serde_json::{Value, json};

async fn manager(
    db: &TestDatabase,
    adjust: impl FnOnce(&mut onex_runtime::models::postgres::PostgresConnectionConfig),
) -> PostgresConnectionManager {
    let mut config = db.config();
    adjust(&mut config);
    PostgresConnectionManager::connect(config).await.expect("connect")
}

/// A pool of exactly one connection, so consecutive calls share it.
fn one_connection(config: &mut onex_runtime::models::postgres::PostgresConnectionConfig) {
    config.min_connections = 1;
    config.max_connections = 1;
}

async fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_from_env_prewarms_and_sets_search_path_once_per_connection() {
    let db = TestDatabase::create("infra \"odd\" name").await;
    let mut env = db.env();
    env.0.insert("POSTGRES_MIN_CONNECTIONS".into(), "5".into());
    env.0.insert("POSTGRES_APPLICATION_NAME".into(), "onex-prewarm".into());
    let pg = PostgresConnectionManager::from_env(&env).await.expect("from_env");
    let stats = pg.connection_stats();
    assert_eq!((stats.size, stats.idle, stats.min_size, stats.max_size), (5, 5, 5, 50));
    assert_eq!(db.backend_count().await, 5, "five pre-warmed backends");
    assert_eq!(pg.fetch_value("SELECT current_schema()", &[]).await.unwrap(), Some(json!("infra \"odd\" name")));
    // search_path was set by the connection's set-up, not per checkout: a session change
    // survives the next checkout of the same connection (pool of one).
    let single = manager(&db, one_connection).await;
    single.execute_query("SET search_path TO public", &[]).await.unwrap();
    assert_eq!(single.fetch_value("SELECT current_schema()", &[]).await.unwrap(), Some(json!("public")));
    single.close();
    pg.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_schema_or_server_fails_start_up_with_connection_failed() {
    let db = TestDatabase::create("present").await;
    let mut config = db.config();
    config.schema = "absent".into();
    let err = PostgresConnectionManager::connect(config).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::DatabaseConnectionFailed, "{err}");
    assert!(err.message().contains("absent"), "{err}");

    let mut config = db.config();
    config.port = 1; // nothing listens there
    config.password = "hunter2-secret".to_owned().into();
    let started = Instant::now();
    let err = PostgresConnectionManager::connect(config).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::DatabaseConnectionFailed, "{err}");
    assert!(started.elapsed() < Duration::from_secs(3), "connect errors surface at once, not as a timeout");
    assert!(!err.to_string().contains("hunter2") && !format!("{err:?}").contains("hunter2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_query_returns_rows_or_rows_affected() {
    let db = TestDatabase::create("app").await;
    let pg = manager(&db, |_| {}).await;
    let ddl =
        pg.execute_query("CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, qty int)", &[]).await.unwrap();
    assert_eq!((ddl.row_count, ddl.rows.len()), (0, 0));
    let inserted = pg
        .execute_query(
            "INSERT INTO items (name, qty) VALUES ($1, $2), ($3, $4), ($5, $6)",
            &[json!("a"), json!(1), json!("b"), json!(2), json!("c"), json!(3)],
        )
        .await
        .unwrap();
    assert_eq!(inserted.row_count, 3);
    assert_eq!(inserted.command_tag.as_deref(), Some("INSERT 0 3"));
    let returning = pg
        .execute_query("INSERT INTO items (name, qty) VALUES ($1, $2) RETURNING id, name", &[json!("d"), json!(4)])
        .await
        .unwrap();
    assert_eq!(returning.column_names, vec!["id", "name"]);
    assert_eq!(returning.rows[0]["id"], json!(4));
    let updated = pg.execute_query("UPDATE items SET qty = qty + 1 WHERE qty >= $1", &[json!(2)]).await.unwrap();
    assert_eq!((updated.row_count, updated.command_tag.as_deref()), (3, Some("UPDATE 3")));
    let with = pg
        .execute_query(
            "WITH big AS (SELECT * FROM items WHERE qty > $1) SELECT name FROM big ORDER BY name",
            &[json!(2)],
        )
        .await
        .unwrap();
    let names: Vec<&Value> = with.rows.iter().map(|r| &r["name"]).collect();
    assert_eq!(names, vec!["b", "c", "d"]);
    let deleted = pg.execute_query("DELETE FROM items WHERE name = $1", &[json!("a")]).await.unwrap();
    assert_eq!(deleted.row_count, 1);
    let one = pg.fetch_one("SELECT name, qty FROM items WHERE id = $1", &[json!(2)]).await.unwrap().unwrap();
    assert_eq!((one["name"].clone(), one["qty"].clone()), (json!("b"), json!(3)));
    assert_eq!(pg.fetch_one("SELECT * FROM items WHERE id = $1", &[json!(99)]).await.unwrap(), None);
    assert_eq!(pg.fetch_value("SELECT count(*) FROM items", &[]).await.unwrap(), Some(json!(3)));
    assert_eq!(pg.fetch_value("SELECT qty FROM items WHERE id = -1", &[]).await.unwrap(), None);
    // Of several rows, the first; the others are read to the end and dropped, so the
    // connection serves the next statement.
    let last = pg.fetch_one("SELECT name FROM items ORDER BY name DESC", &[]).await.unwrap().unwrap();
    assert_eq!(last["name"], json!("d"));
    assert_eq!(pg.fetch_value("SELECT name FROM items ORDER BY name", &[]).await.unwrap(), Some(json!("b")));
    assert_eq!(pg.fetch_value("SELECT count(*) FROM items", &[]).await.unwrap(), Some(json!(3)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn types_map_to_and_from_json() {
    let db = TestDatabase::create("app").await;
    let pg = manager(&db, |_| {}).await;
    pg.execute_query("CREATE TYPE mood AS ENUM ('ok', 'sad')", &[]).await.unwrap();
    pg.execute_query(
        "CREATE TABLE t (i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, n numeric(30,6), tx text, vc varchar(10), \
         b bool, u uuid, ts timestamp, tz timestamptz, d date, j json, jb jsonb, by bytea, ia int4[], ta text[], m mood)",
        &[],
    )
    .await
    .unwrap();
    let params = [
        json!(-7),
        json!(2_000_000_000),
        json!(9_007_199_254_740_993_i64),
        json!(1.5),
        json!(2.25),
        json!("12345678901234567890.123456"),
        json!("text ✓"),
        json!("short"),
        json!(true),
        json!("6f1c2b8e-0a4b-4c1e-9a59-1d2f3e4a5b6c"),
        json!("2024-05-01T10:20:30.5"),
        json!("2024-05-01T10:20:30Z"),
        json!("2024-05-01"),
        json!({"k": [1, 2]}),
        json!({"nested": {"x": null}}),
        json!("\\xdeadbeef"),
        json!([1, null, 3]),
        json!(["a", "b"]),
        json!("sad"),
    ];
    let placeholders: Vec<String> = (1..=params.len()).map(|i| format!("${i}")).collect();
    pg.execute_query(&format!("INSERT INTO t VALUES ({})", placeholders.join(", ")), &params).await.unwrap();
    let row = pg.fetch_one("SELECT * FROM t", &[]).await.unwrap().unwrap();
    let expected = json!({
        "i2": -7, "i4": 2_000_000_000, "i8": 9_007_199_254_740_993_i64, "f4": 1.5, "f8": 2.25,
        "n": "12345678901234567890.123456", "tx": "text ✓", "vc": "short", "b": true,
        "u": "6f1c2b8e-0a4b-4c1e-9a59-1d2f3e4a5b6c", "ts": "2024-05-01T10:20:30.500",
        "tz": "2024-05-01T10:20:30Z", "d": "2024-05-01", "j": {"k": [1, 2]}, "jb": {"nested": {"x": null}},
        "by": "\\xdeadbeef", "ia": [1, null, 3], "ta": ["a", "b"], "m": "sad"
    });
    assert_eq!(Value::Object(row), expected);
    // A type without a JSON mapping is a clear error naming the column, not a panic.
    let err = pg.execute_query("SELECT '127.0.0.1'::inet AS addr", &[]).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::DatabaseQueryError);
    assert!(err.message().contains("addr") && err.message().contains("::text"), "{err}");
    assert_eq!(pg.fetch_value("SELECT '127.0.0.1'::inet::text", &[]).await.unwrap(), Some(json!("127.0.0.1/32")));
    // A value that does not fit its parameter is a validation error naming it.
    let err = pg.execute_query("SELECT * FROM t WHERE i4 = $1", &[json!("not a number")]).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ValidationError);
    assert!(err.message().contains("$1"), "{err}");
    let err = pg.execute_query("SELECT $1::int", &[]).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ValidationError, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_errors_carry_the_sqlstate_and_no_secret() {
    let db = TestDatabase::create("app").await;
    let pg = manager(&db, |c| c.password = "pw-should-never-show".to_owned().into()).await;
    let err = pg.execute_query("SELECT * FROM no_such_table", &[]).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::DatabaseQueryError);
    assert_eq!(err.details()["sqlstate"], "42P01");
    pg.execute_query("CREATE TABLE u (id int PRIMARY KEY)", &[]).await.unwrap();
    pg.execute_query("INSERT INTO u VALUES (1)", &[]).await.unwrap();
    let err = pg.execute_query("INSERT INTO u VALUES ($1)", &[json!(1)]).await.unwrap_err();
    assert_eq!(err.details()["sqlstate"], "23505");
    let shown = format!("{err} {err:?} {pg:?} {:?}", pg.config());
    assert!(!shown.contains("pw-should-never-show"), "{shown}");
    let stats = pg.connection_stats();
    assert_eq!(stats.failed_queries, 2);
    assert_eq!(stats.failed_connections, 0, "SQL errors are not connection failures");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_commit_roll_back_on_error_and_on_drop() {
    let db = TestDatabase::create("app").await;
    // The same connection serves every step below.
    let pg = manager(&db, one_connection).await;
    pg.execute_query("CREATE TABLE acc (id int PRIMARY KEY, v int)", &[]).await.unwrap();

    let mut tx = pg.begin(TransactionOptions::default()).await.unwrap();
    tx.execute_query("INSERT INTO acc VALUES (1, 10)", &[]).await.unwrap();
    assert_eq!(tx.fetch_value("SELECT v FROM acc WHERE id = 1", &[]).await.unwrap(), Some(json!(10)));
    tx.commit().await.unwrap();

    let mut tx = pg.begin(TransactionOptions::default()).await.unwrap();
    tx.execute_query("INSERT INTO acc VALUES (2, 20)", &[]).await.unwrap();
    let err = tx.execute_query("INSERT INTO acc VALUES (1, 0)", &[]).await.unwrap_err();
    assert_eq!(err.details()["sqlstate"], "23505");
    let err = tx.commit().await.unwrap_err();
    assert!(err.message().contains("rolled back"), "committing after a failed statement reports the rollback: {err}");
    assert_eq!(pg.fetch_value("SELECT count(*) FROM acc", &[]).await.unwrap(), Some(json!(1)));

    {
        let mut tx = pg.begin(TransactionOptions::default()).await.unwrap();
        tx.execute_query("UPDATE acc SET v = 99 WHERE id = 1", &[]).await.unwrap();
        // dropped without commit
    }
    assert_eq!(pg.fetch_value("SELECT v FROM acc WHERE id = 1", &[]).await.unwrap(), Some(json!(10)));
    assert_eq!(
        pg.fetch_value("SELECT pg_current_xact_id_if_assigned() IS NULL", &[]).await.unwrap(),
        Some(json!(true)),
        "the connection (the only one) is no longer inside the dropped transaction, which had written"
    );

    let options = TransactionOptions { isolation: IsolationLevel::Serializable, read_only: true, deferrable: true };
    let mut tx = pg.begin(options).await.unwrap();
    assert_eq!(tx.fetch_value("SHOW transaction_isolation", &[]).await.unwrap(), Some(json!("serializable")));
    assert_eq!(tx.fetch_value("SHOW transaction_read_only", &[]).await.unwrap(), Some(json!("on")));
    assert_eq!(tx.fetch_value("SHOW transaction_deferrable", &[]).await.unwrap(), Some(json!("on")));
    let err = tx.execute_query("INSERT INTO acc VALUES (3, 30)", &[]).await.unwrap_err();
    assert_eq!(err.details()["sqlstate"], "25006", "read-only transaction refuses writes");
    tx.rollback().await.unwrap();

    let options = TransactionOptions { isolation: IsolationLevel::RepeatableRead, ..Default::default() };
    let mut tx = pg.begin(options).await.unwrap();
    assert_eq!(tx.fetch_value("SHOW transaction_isolation", &[]).await.unwrap(), Some(json!("repeatable read")));
    tx.rollback().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_function_quotes_identifiers_and_injection_is_inert() {
    let db = TestDatabase::create("app").await;
    let pg = manager(&db, |_| {}).await;
    pg.execute_query("CREATE TABLE victims (name text)", &[]).await.unwrap();
    pg.execute_query("CREATE FUNCTION \"Add Two\"(a int, b int) RETURNS int LANGUAGE sql AS 'SELECT a + b'", &[])
        .await
        .unwrap();
    pg.execute_query("CREATE FUNCTION public.pairs(n int) RETURNS TABLE(x int, y text) LANGUAGE sql AS $$ SELECT g, 'v' || g FROM generate_series(1, n) g $$", &[]).await.unwrap();
    let sum = pg.call_function("Add Two", &[json!(2), json!(3)], None).await.unwrap();
    assert_eq!(sum.rows[0]["Add Two"], json!(5));
    let pairs = pg.call_function("pairs", &[json!(2)], Some("public")).await.unwrap();
    assert_eq!(pairs.row_count, 2);
    assert_eq!(pairs.rows[1]["y"], json!("v2"));

    // Injection through a function name is one (non-existent) identifier.
    let err = pg.call_function("pairs\"(1); DROP TABLE victims; --", &[], None).await.unwrap_err();
    assert_eq!(err.details()["sqlstate"], "42883", "undefined function, nothing executed: {err}");
    let err = pg.call_function("x", &[], Some("app\"; DROP TABLE victims; --")).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::DatabaseQueryError);
    // Injection through parameters is stored verbatim.
    let payloads =
        ["'; DROP TABLE victims; --", "\" OR 1=1 --", "$1); DELETE FROM victims; --", "\\'; SELECT pg_sleep(5); --"];
    for payload in payloads {
        pg.execute_query("INSERT INTO victims VALUES ($1)", &[json!(payload)]).await.unwrap();
    }
    let found = pg.execute_query("SELECT name FROM victims WHERE name = $1", &[json!(payloads[0])]).await.unwrap();
    assert_eq!(found.rows[0]["name"], json!(payloads[0]));
    assert_eq!(pg.fetch_value("SELECT count(*) FROM victims", &[]).await.unwrap(), Some(json!(4)));
    assert_eq!(
        pg.fetch_value("SELECT count(*) FROM victims WHERE name = $1", &[json!("x' OR '1'='1")]).await.unwrap(),
        Some(json!(0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_tasks_on_ten_connections_finish_and_leak_nothing() {
    let db = TestDatabase::create("app").await;
    let baseline = db.backend_count().await;
    let pg = Arc::new(
        manager(&db, |c| {
            c.min_connections = 5;
            c.max_connections = 10;
            c.wait_timeout_secs = 30.0;
        })
        .await,
    );
    pg.execute_query("CREATE TABLE hits (task int, n int)", &[]).await.unwrap();
    let started = Instant::now();
    let tasks: Vec<_> = (0..200)
        .map(|task| {
            let pg = Arc::clone(&pg);
            tokio::spawn(async move {
                for n in 0..5 {
                    if n == 2 {
                        let mut tx = pg.begin(TransactionOptions::default()).await?;
                        tx.execute_query("INSERT INTO hits VALUES ($1, $2)", &[json!(task), json!(n)]).await?;
                        tx.commit().await?;
                    } else {
                        pg.execute_query("INSERT INTO hits VALUES ($1, $2)", &[json!(task), json!(n)]).await?;
                    }
                }
                Ok::<_, onex_runtime::OnexError>(())
            })
        })
        .collect();
    let results =
        tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(tasks)).await.expect("no deadlock");
    for result in results {
        result.expect("task panicked").expect("task failed");
    }
    eprintln!("200 tasks x 5 statements on 10 connections: {:?}", started.elapsed());
    assert_eq!(pg.fetch_value("SELECT count(*) FROM hits", &[]).await.unwrap(), Some(json!(1000)));
    let stats = pg.connection_stats();
    assert!(stats.size <= 10, "{stats:?}");
    assert_eq!((stats.in_use, stats.waiting), (0, 0), "{stats:?}");
    assert!(stats.waited_checkouts > 0, "the load made callers wait: {stats:?}");
    assert_eq!(stats.wait_time_histogram.last().unwrap().count, stats.checkouts);
    assert!(db.backend_count().await - baseline <= 10);
    pg.close();
    let deadline = Instant::now() + Duration::from_secs(5);
    while db.backend_count().await > baseline {
        assert!(Instant::now() < deadline, "backends left after close");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pg.connection_stats().size, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_times_out_within_its_bound_and_a_cancelled_waiter_leaves() {
    let db = TestDatabase::create("app").await;
    let pg = Arc::new(
        manager(&db, |c| {
            c.min_connections = 1;
            c.max_connections = 2;
            c.wait_timeout_secs = 0.3;
        })
        .await,
    );
    let held = (pg.acquire().await.unwrap(), pg.acquire().await.unwrap());
    let started = Instant::now();
    let err = pg.execute_query("SELECT 1", &[]).await.unwrap_err();
    let waited = started.elapsed();
    assert_eq!(err.code(), ErrorCode::DatabaseOperationError, "{err}");
    assert!(waited >= Duration::from_millis(300) && waited < Duration::from_millis(800), "{waited:?}");
    let stats = pg.connection_stats();
    assert_eq!((stats.wait_timeouts, stats.failed_connections, stats.waiting), (1, 1, 0));

    // A waiter that is cancelled leaves the queue and does not consume the next free slot.
    let waiter = {
        let pg = Arc::clone(&pg);
        tokio::spawn(async move { pg.acquire().await.map(drop) })
    };
    wait_until("the waiter to queue", Duration::from_secs(1), || pg.connection_stats().waiting == 1).await;
    waiter.abort();
    let _ = waiter.await;
    assert_eq!(pg.connection_stats().waiting, 0);
    drop(held);
    let started = Instant::now();
    assert_eq!(pg.fetch_value("SELECT 1", &[]).await.unwrap(), Some(json!(1)));
    assert!(started.elapsed() < Duration::from_millis(100));
    assert_eq!(pg.connection_stats().in_use, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reaper_recycles_idle_and_worn_connections_and_keeps_the_minimum() {
    let db = TestDatabase::create("app").await;
    let pg = manager(&db, |c| {
        c.min_connections = 2;
        c.max_connections = 4;
        c.max_inactive_connection_lifetime_secs = 1;
        c.max_queries = 3;
        c.maintenance_interval_secs = 0.1;
    })
    .await;
    let first_pid = pg.fetch_value("SELECT pg_backend_pid()", &[]).await.unwrap();
    // Idle connections expire after 1 s without anyone checking them out, and are replaced.
    let deadline = Instant::now() + Duration::from_secs(5);
    while pg.connection_stats().connections_closed["idle"] < 2 {
        assert!(Instant::now() < deadline, "reaper did not close idle connections: {:?}", pg.connection_stats());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while pg.connection_stats().size < 2 {
        assert!(Instant::now() < deadline, "pool not replenished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_ne!(pg.fetch_value("SELECT pg_backend_pid()", &[]).await.unwrap(), first_pid);
    assert!(db.backend_count().await <= 4);
    // A connection that served max_queries statements is closed, not reused.
    let before = pg.connection_stats().connections_closed["max_queries"];
    for _ in 0..6 {
        pg.fetch_value("SELECT 1", &[]).await.unwrap();
    }
    assert!(pg.connection_stats().connections_closed["max_queries"] > before, "{:?}", pg.connection_stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_are_prepared_once_per_connection() {
    let db = TestDatabase::create("app").await;
    let pg = manager(&db, one_connection).await;
    for i in 0..5 {
        pg.execute_query("SELECT $1::int + 1 AS next", &[json!(i)]).await.unwrap();
    }
    let prepared = pg
        .fetch_value("SELECT count(*) FROM pg_prepared_statements WHERE statement = 'SELECT $1::int + 1 AS next'", &[])
        .await
        .unwrap();
    assert_eq!(prepared, Some(json!(1)));
    // DDL that changes a cached statement's result type evicts and re-prepares it.
    pg.execute_query("CREATE TABLE shape (a int)", &[]).await.unwrap();
    pg.execute_query("SELECT * FROM shape", &[]).await.unwrap();
    pg.execute_query("ALTER TABLE shape ADD COLUMN b text", &[]).await.unwrap();
    let err = pg.execute_query("SELECT * FROM shape", &[]).await.unwrap_err();
    assert_eq!(err.details()["sqlstate"], "0A000");
    let again = pg.execute_query("SELECT * FROM shape", &[]).await.unwrap();
    assert_eq!(again.column_names, vec!["a", "b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_past_its_timeout_is_cancelled_on_the_server() {
    let db = TestDatabase::create("app").await;
    let pg = manager(&db, |c| c.command_timeout_secs = 0.3).await;
    let started = Instant::now();
    let err = pg.execute_query("SELECT pg_sleep(30)", &[]).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert_eq!(err.code(), ErrorCode::DatabaseQueryError);
    assert_eq!(err.details()["timeout_ms"], 300);
    let admin = db.client().await;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let row = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'",
                &[],
            )
            .await
            .unwrap();
        if row.get::<_, i64>(0) == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the statement still runs on the server");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pg.connection_stats().connections_closed["timeout"], 1);
    let per_call = QueryOptions { timeout: Some(Duration::from_secs(5)), ..QueryOptions::default() };
    assert!(pg.execute_query_with("SELECT pg_sleep(0.5)", &[], per_call).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_deadline_ends_both_the_wait_for_a_connection_and_the_statement() {
    let db = TestDatabase::create("app").await;
    let pg = manager(&db, |c| {
        one_connection(c);
        c.wait_timeout_secs = 30.0;
    })
    .await;
    let by =
        |ms| QueryOptions { deadline: Some(Instant::now() + Duration::from_millis(ms)), ..QueryOptions::default() };

    // The only connection is held: the wait ends at the deadline, not after the 30 s wait timeout.
    let held = pg.acquire().await.unwrap();
    let started = Instant::now();
    let err = pg.fetch_value_with("SELECT 1", &[], by(200)).await.unwrap_err();
    let waited = started.elapsed();
    assert_eq!(err.code(), ErrorCode::DatabaseOperationError, "{err}");
    assert!(waited >= Duration::from_millis(200) && waited < Duration::from_millis(700), "{waited:?}");
    assert!(err.details()["wait_timeout_ms"].as_u64().unwrap() <= 200, "{err}");
    drop(held);

    // The statement is cancelled at the deadline although the command timeout is a minute.
    let started = Instant::now();
    let err = pg.execute_query_with("SELECT pg_sleep(30)", &[], by(300)).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert_eq!(err.code(), ErrorCode::DatabaseQueryError, "{err}");
    assert!(err.details()["timeout_ms"].as_u64().unwrap() <= 300, "{err}");

    // A deadline far enough away changes nothing.
    assert_eq!(pg.fetch_value_with("SELECT 1", &[], by(5_000)).await.unwrap(), Some(json!(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_statement_on_a_connection_gets_its_own_timeout() {
    // One connection, so every statement reuses its timer (armed lazily, see `Conn::run`).
    let db = TestDatabase::create("app").await;
    let pg = manager(&db, one_connection).await;
    let within = |ms| QueryOptions { timeout: Some(Duration::from_millis(ms)), ..QueryOptions::default() };

    // A short timeout, then a longer one: the second statement outlives the first one's timer.
    pg.fetch_value_with("SELECT 1", &[], within(100)).await.unwrap();
    pg.execute_query_with("SELECT pg_sleep(0.4)", &[], within(5_000)).await.unwrap();
    // It also outlives a timer that already fired while the connection sat idle.
    pg.fetch_value_with("SELECT 1", &[], within(50)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    pg.execute_query_with("SELECT pg_sleep(0.2)", &[], within(5_000)).await.unwrap();

    // A long timeout, then a shorter one: the timer is pulled in.
    let started = Instant::now();
    let err = pg.execute_query_with("SELECT pg_sleep(30)", &[], within(300)).await.unwrap_err();
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(2), "{took:?}");
    assert_eq!(err.details()["timeout_ms"], 300, "{err}");
    assert_eq!(pg.fetch_value("SELECT 2", &[]).await.unwrap(), Some(json!(2)));
    pg.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_metrics_keep_the_last_thousand_with_a_stable_hash() {
    let db = TestDatabase::create("app").await;
    let pg = manager(&db, |_| {}).await;
    for i in 0..1010 {
        pg.execute_query("SELECT $1::int", &[json!(i)]).await.unwrap();
    }
    let _ = pg.execute_query("SELECT broken(", &[]).await.unwrap_err();
    let quiet = QueryOptions { record_metrics: false, ..QueryOptions::default() };
    pg.execute_query_with("SELECT 42", &[], quiet).await.unwrap();
    let metrics = pg.query_metrics(2000);
    assert_eq!(metrics.len(), 1000);
    assert!(!metrics[0].success && metrics[0].error_code.as_deref() == Some("DATABASE_QUERY_ERROR"));
    assert_eq!(metrics[1].query_hash, format!("{:016x}", query_hash("SELECT $1::int")));
    // The hash is FNV-1a 64 of the whitespace-normalized text: the same in every process.
    assert_eq!(query_hash("SELECT  $1::int\n"), query_hash("SELECT $1::int"));
    assert_eq!(metrics[1].query_type, QueryType::Select);
    assert_eq!(pg.query_metrics(5).len(), 5);
    let stats = pg.connection_stats();
    assert!(stats.total_queries >= 1012 && stats.failed_queries == 1, "{stats:?}");
    assert!(stats.average_query_time_ms > 0.0);
    assert_eq!(pg.clear_metrics(), 1000);
    assert!(pg.query_metrics(10).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_healthy_degraded_without_schema_and_unhealthy_when_closed() {
    let db = TestDatabase::create("app").await;
    let pg = manager(&db, |_| {}).await;
    let health = pg.health_check().await;
    assert_eq!(health.status, HealthStatus::Healthy, "{health:?}");
    assert!(health.server_version.as_deref().unwrap_or_default().starts_with("PostgreSQL"));
    assert_eq!(health.current_schema.as_deref(), Some("app"));
    assert!(health.active_connections.unwrap() >= 1);
    assert!(health.schema_exists && health.errors.is_empty());
    db.client().await.batch_execute("DROP SCHEMA app").await.unwrap();
    let health = pg.health_check().await;
    assert_eq!(health.status, HealthStatus::Degraded, "{health:?}");
    assert!(!health.schema_exists);
    pg.close();
    let health = pg.health_check().await;
    assert_eq!(health.status, HealthStatus::Unhealthy);
    let err = pg.execute_query("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::DatabaseOperationError);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_modes_encrypt_and_verify_full_checks_the_host_name() {
    use onex_runtime::models::postgres::SslMode;
    // The server's certificate is Debian's snakeoil one: self-signed, CN and SAN "localhost".
    const CA: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
    let db = TestDatabase::create("app").await;
    let ssl_in_use = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    for (mode, host, encrypted) in [
        (SslMode::Disable, "127.0.0.1", false),
        (SslMode::Prefer, "127.0.0.1", true),
        (SslMode::Require, "127.0.0.1", true),
        (SslMode::VerifyFull, "localhost", true),
    ] {
        let pg = manager(&db, |c| {
            c.ssl_mode = mode;
            c.host = host.into();
            c.min_connections = 1;
            c.ssl_ca_file = Some(CA.into());
        })
        .await;
        assert_eq!(pg.fetch_value(ssl_in_use, &[]).await.unwrap(), Some(json!(encrypted)), "{mode:?}");
        pg.close();
    }
    // verify-full refuses a certificate that does not name the host it connected to.
    let mut config = db.config();
    config.ssl_mode = SslMode::VerifyFull;
    config.ssl_ca_file = Some(CA.into());
    let err = PostgresConnectionManager::connect(config).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::DatabaseConnectionFailed, "{err}");
    // A CA file that cannot be read is a configuration error naming the variable.
    let mut config = db.config();
    config.ssl_mode = SslMode::Require;
    config.ssl_ca_file = Some("/nonexistent/ca.pem".into());
    let err = PostgresConnectionManager::connect(config).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ConfigurationError, "{err}");
    assert_eq!(err.details()["variable"], "POSTGRES_SSL_CA_FILE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_dropped_mid_statement_stops_it_on_the_server_and_the_connection_is_not_reused() {
    let db = TestDatabase::create("app").await;
    let pg = Arc::new(manager(&db, one_connection).await);
    let caller = {
        let pg = Arc::clone(&pg);
        tokio::spawn(async move { pg.execute_query("SELECT pg_sleep(30)", &[]).await })
    };
    let admin = db.client().await;
    let running = "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'";
    let deadline = Instant::now() + Duration::from_secs(5);
    while admin.query_one(running, &[]).await.unwrap().get::<_, i64>(0) == 0 {
        assert!(Instant::now() < deadline, "the statement never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    caller.abort();
    let _ = caller.await;
    let deadline = Instant::now() + Duration::from_secs(3);
    while admin.query_one(running, &[]).await.unwrap().get::<_, i64>(0) > 0 {
        assert!(Instant::now() < deadline, "the abandoned statement still runs on the server");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(pg.connection_stats().connections_closed["cancelled"], 1);
    // The only slot is free again and serves at once on a fresh connection.
    let started = Instant::now();
    assert_eq!(pg.fetch_value("SELECT 7", &[]).await.unwrap(), Some(json!(7)));
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// Waiters reuse each other's timers (the pool keeps them armed between waits): a reused timer
/// must still end a wait at that wait's own, earlier deadline, and a timer left over from a
/// runtime that has shut down must not be polled (tokio panics on that) when the pool is used
/// from another runtime.
#[test]
fn a_waiter_keeps_its_own_deadline_on_a_reused_timer_and_on_a_new_runtime() {
    let runtime = || tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let by =
        |ms| QueryOptions { deadline: Some(Instant::now() + Duration::from_millis(ms)), ..QueryOptions::default() };
    let first = runtime();
    let (db, pg) = first.block_on(async {
        let db = TestDatabase::create("app").await;
        let pg = Arc::new(
            manager(&db, |c| {
                one_connection(c);
                c.wait_timeout_secs = 30.0;
            })
            .await,
        );
        // A wait with a far deadline that ends with the connection: its timer, armed for
        // 20 s from now, becomes the pool's spare.
        let held = pg.acquire().await.unwrap();
        let waiter = {
            let pg = Arc::clone(&pg);
            tokio::spawn(async move { pg.fetch_value_with("SELECT 1", &[], by(20_000)).await })
        };
        wait_until("the waiter to queue", Duration::from_secs(5), || pg.connection_stats().waiting == 1).await;
        drop(held);
        assert_eq!(waiter.await.unwrap().unwrap(), Some(json!(1)));
        assert_eq!(pg.connection_stats().waited_checkouts, 1);

        // The next wait takes that timer and must end at its own 200 ms deadline.
        let held = pg.acquire().await.unwrap();
        let started = Instant::now();
        let err = pg.fetch_value_with("SELECT 1", &[], by(200)).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::DatabaseOperationError, "{err}");
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
        drop(held);
        (db, pg)
    });
    drop(first);

    // The first runtime is gone, with its connection tasks and its timers.
    runtime().block_on(async {
        let held = pg.acquire().await.expect("a new connection on this runtime");
        let err = pg.fetch_value_with("SELECT 1", &[], by(200)).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::DatabaseOperationError, "{err}");
        drop(held);
        assert_eq!(pg.fetch_value("SELECT 1", &[]).await.unwrap(), Some(json!(1)));
        assert_eq!(pg.connection_stats().wait_timeouts, 2);
        pg.close();
    });
    drop(db);
}
