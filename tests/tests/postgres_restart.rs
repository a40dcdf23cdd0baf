//! A PostgreSQL server restart under load, and health across a stop/start.
//!
//! This binary stops the shared test server, so it holds exactly one test; a drop guard
//! starts the server again even when an assertion fails. `cargo test` runs test binaries
//! one after another, so the other binaries never see the server down.
//!
//! Every wait is for an event (a success after the server returned, a health status), under
//! a generous ceiling, so a busy machine slows the test down without failing it; the times
//! measured are printed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use onex_runtime::ErrorCode;
use onex_runtime::models::health::HealthStatus;
use onex_runtime::postgres::PostgresConnectionManager;
use onex_tests::postgres::{ServerGuard, TestDatabase, control_cluster};
use serde_json::json;
use tokio::sync::Mutex;

/// Ceiling of every wait for the server, the pool or the load to reach a state.
const CEILING: Duration = Duration::from_secs(60);

/// Waits (polling every 10 ms) until `done` holds, for at most [`CEILING`]; returns the wait.
async fn wait_until<F: std::future::Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) -> Duration {
    let started = Instant::now();
    while !done().await {
        assert!(started.elapsed() < CEILING, "{what}: not within {CEILING:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

#[derive(Default)]
struct Load {
    ok: AtomicU64,
    errors: AtomicU64,
    slowest_ms: AtomicU64,
    successes: Mutex<Vec<Instant>>,
}

#[test]
fn restart_under_load_surfaces_errors_then_serves_again() {
    let _server = ServerGuard;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let db = TestDatabase::create("app").await;
        // Dropped before `db`, so the server is up again when the database is dropped.
        let _server_before_db_drop = ServerGuard;
        let mut config = db.config();
        config.min_connections = 5;
        config.max_connections = 10;
        config.wait_timeout_secs = 2.0;
        config.create_timeout_secs = 2.0;
        config.command_timeout_secs = 5.0;
        config.maintenance_interval_secs = 0.2;
        let pg = Arc::new(PostgresConnectionManager::connect(config).await.unwrap());

        // Phase 1: restart during load.
        let load = Arc::new(Load::default());
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..16)
            .map(|i| {
                let (pg, load, stop) = (Arc::clone(&pg), Arc::clone(&load), Arc::clone(&stop));
                tokio::spawn(async move {
                    while !stop.load(Relaxed) {
                        let started = Instant::now();
                        let result = pg.fetch_value("SELECT $1::int", &[json!(i)]).await;
                        let ms = started.elapsed().as_millis() as u64;
                        load.slowest_ms.fetch_max(ms, Relaxed);
                        match result {
                            Ok(value) => {
                                assert_eq!(value, Some(json!(i)));
                                load.ok.fetch_add(1, Relaxed);
                                load.successes.lock().await.push(Instant::now());
                            }
                            Err(e) => {
                                assert!(
                                    matches!(
                                        e.code(),
                                        ErrorCode::DatabaseConnectionFailed
                                            | ErrorCode::DatabaseQueryError
                                            | ErrorCode::DatabaseOperationError
                                    ),
                                    "{e}"
                                );
                                load.errors.fetch_add(1, Relaxed);
                                // A caller backing off; the pool itself never spins.
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                        }
                    }
                })
            })
            .collect();
        let (load_ref, pg_ref, db_ref) = (&*load, &*pg, &db);
        wait_until("the load runs before the restart", || async move { load_ref.ok.load(Relaxed) > 0 }).await;
        let before = load.ok.load(Relaxed);
        control_cluster("restart").await;
        let server_back = Instant::now();
        // The load runs until a call succeeds after the server returned (that is the event
        // measured), then stops.
        wait_until("a call succeeds after the restart", || async move {
            load_ref.successes.lock().await.iter().any(|t| *t >= server_back)
        })
        .await;
        stop.store(true, Relaxed);
        tokio::time::timeout(CEILING, futures::future::join_all(workers))
            .await
            .expect("no worker hangs")
            .into_iter()
            .for_each(|r| r.expect("worker panicked"));
        let errors = load.errors.load(Relaxed);
        let slowest = load.slowest_ms.load(Relaxed);
        let first_after = load.successes.lock().await.iter().copied().find(|t| *t >= server_back);
        let recovery = first_after.map(|t| t - server_back);
        eprintln!(
            "restart: {before} ok before, {errors} errors surfaced, slowest call {slowest} ms, first success {recovery:?} after the server returned; stats {:?}",
            pg.connection_stats()
        );
        assert!(errors > 0, "the restart surfaced errors");
        // A call is bounded by the pool's wait (2 s), connect (2 s) and command (5 s) timeouts;
        // the ceiling leaves a busy machine room and still catches a call that hangs.
        assert!(slowest <= 30_000, "no call hung past its bounds ({slowest} ms)");
        recovery.expect("served again after the restart");
        let stats = pg.connection_stats();
        assert!(stats.connections_closed["broken"] > 0, "broken connections were evicted: {stats:?}");
        assert_eq!((stats.in_use, stats.waiting), (0, 0));

        // Phase 2: health turns unhealthy while the server is down, healthy once it is back.
        assert_eq!(pg.health_check().await.status, HealthStatus::Healthy);
        control_cluster("stop").await;
        let started = Instant::now();
        let health = pg.health_check().await;
        let answered = started.elapsed();
        eprintln!("health answered {answered:?} after the server stopped: {:?}", health.errors);
        assert_eq!(health.status, HealthStatus::Unhealthy, "{health:?}");
        assert!(!health.errors.is_empty());
        // Bounded by the 2 s connect timeout; the ceiling catches a health check that hangs.
        assert!(answered < Duration::from_secs(30), "health answers while the server is down: {answered:?}");
        let err = pg.execute_query("SELECT 1", &[]).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::DatabaseConnectionFailed, "{err}");
        control_cluster("start").await;
        let server_back = Instant::now();
        wait_until("healthy after the server returned", || async move {
            pg_ref.health_check().await.status == HealthStatus::Healthy
        })
        .await;
        eprintln!("healthy again {:?} after the server returned", server_back.elapsed());

        // Nothing leaked: the pool holds at most its maximum, and closing it frees them all.
        wait_until("at most the pool's 10 connections", || async move { db_ref.backend_count().await <= 10 }).await;
        pg.close();
        let closed = wait_until("no connection left after close", || async move { db_ref.backend_count().await == 0 }).await;
        eprintln!("every connection gone {closed:?} after close");
    });
}
