//! A PostgreSQL server restart under load, and health across a stop/start.
//!
//! This binary stops the shared test server, so it holds exactly one test; a drop guard
//! starts the server again even when an assertion fails. `cargo test` runs test binaries
//! one after another, so the other binaries never see the server down.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use onex_runtime::ErrorCode;
use onex_runtime::models::health::HealthStatus;
use onex_runtime::postgres::PostgresConnectionManager;
use onex_tests::postgres::{ServerGuard, TestDatabase, control_cluster};
use serde_json::json;
use tokio::sync::Mutex;

#[derive(Default)]
struct Load {
    ok: AtomicU64,
    errors: AtomicU64,
    slowest_ms: AtomicU64,
    successes: Mutex<Vec<Instant>>,
}

#[test]
fn restart_under_load_surfaces_errors_then_serves_within_a_second() {
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
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = load.ok.load(Relaxed);
        assert!(before > 0, "load runs before the restart");
        control_cluster("restart").await;
        let server_back = Instant::now();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stop.store(true, Relaxed);
        tokio::time::timeout(Duration::from_secs(10), futures::future::join_all(workers))
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
        assert!(slowest <= 5_000, "no call hung past its bounds ({slowest} ms)");
        let recovery = recovery.expect("served again after the restart");
        assert!(recovery <= Duration::from_secs(1), "served again {recovery:?} after the server returned");
        let stats = pg.connection_stats();
        assert!(stats.connections_closed["broken"] > 0, "broken connections were evicted: {stats:?}");
        assert_eq!((stats.in_use, stats.waiting), (0, 0));

        // Phase 2: health turns unhealthy while the server is down, healthy once it is back.
        assert_eq!(pg.health_check().await.status, HealthStatus::Healthy);
        control_cluster("stop").await;
        let started = Instant::now();
        let health = pg.health_check().await;
        assert_eq!(health.status, HealthStatus::Unhealthy, "{health:?}");
        assert!(!health.errors.is_empty());
        assert!(started.elapsed() < Duration::from_secs(3), "health answers quickly while the server is down");
        let err = pg.execute_query("SELECT 1", &[]).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::DatabaseConnectionFailed, "{err}");
        control_cluster("start").await;
        let server_back = Instant::now();
        loop {
            if pg.health_check().await.status == HealthStatus::Healthy {
                break;
            }
            assert!(server_back.elapsed() < Duration::from_secs(1), "healthy within 1 s of the server's return");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!("healthy again {:?} after the server returned", server_back.elapsed());

        // Nothing leaked: the pool holds at most its maximum, and closing it frees them all.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(db.backend_count().await <= 10);
        pg.close();
        let deadline = Instant::now() + Duration::from_secs(5);
        while db.backend_count().await > 0 {
            assert!(Instant::now() < deadline, "connections left after close");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}
