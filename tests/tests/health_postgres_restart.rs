//! PostgreSQL stopped and started again under a running health monitor and the observability
//! server: readiness turns 503 within the probe timeout while liveness stays 200; once the
//! server is back, readiness turns 200 again and the monitor's latest result is healthy again
//! within one monitoring interval.
//!
//! This binary stops the shared test server, so it holds exactly one test; a drop guard
//! starts the server again even when an assertion fails.
//!
//! Every wait is for an event (a status code, a result of the monitor) under a generous
//! ceiling, so a busy machine slows the test down without failing it; the times measured are
//! printed against the probe timeout and the interval they are expected within.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use onex_runtime::Container;
use onex_runtime::environment::Environment;
use onex_runtime::health::HealthMonitor;
use onex_runtime::health::probes::SERVICE_PROBE_TIMEOUT;
use onex_runtime::http::{ObservabilityServer, ObservabilityServerConfig};
use onex_runtime::metrics::MetricsRegistry;
use onex_runtime::models::health::{HealthAssessment, HealthStatus};
use onex_runtime::postgres::PostgresConnectionManager;
use onex_tests::postgres::{ServerGuard, TestDatabase, control_cluster};
use tokio::sync::watch;

/// Short, so the shared server is down for a few seconds only; the rule (the next check 5 s
/// after an unhealthy one, never later than the interval) is the same at any interval.
const INTERVAL: Duration = Duration::from_secs(3);
/// Ceiling of every wait for a state: many intervals, so only a state never reached fails.
const CEILING: Duration = Duration::from_secs(60);

/// A GET of `path`: status, and how long the answer took.
async fn get(address: SocketAddr, path: &str) -> (u16, Duration) {
    let started = Instant::now();
    let (status, _) = onex_tests::http::get(address, path).await.expect("GET");
    (status, started.elapsed())
}

/// Waits (up to `within`) for a result of the monitor with `status`.
async fn result_with(
    results: &mut watch::Receiver<Option<Arc<HealthAssessment>>>,
    status: HealthStatus,
    within: Duration,
) -> Arc<HealthAssessment> {
    let wanted = |r: &Option<Arc<HealthAssessment>>| r.as_ref().is_some_and(|r| r.overall_status == status);
    let found = match tokio::time::timeout(within, results.wait_for(wanted)).await {
        Ok(Ok(result)) => result.clone(),
        Ok(Err(_)) => panic!("the monitor is gone"),
        Err(_) => None,
    };
    found.unwrap_or_else(|| panic!("no {status:?} result within {within:?}; latest: {:?}", results.borrow().clone()))
}

#[test]
fn postgres_stopped_is_unready_and_healthy_again_after_its_return() {
    let _server = ServerGuard;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let db = TestDatabase::create("app").await;
        // Dropped before `db`, so the server is up again when the database is dropped.
        let _server_before_db_drop = ServerGuard;
        let mut config = db.config();
        config.min_connections = 2;
        config.max_connections = 4;
        config.wait_timeout_secs = 2.0;
        config.create_timeout_secs = 2.0;
        config.maintenance_interval_secs = 0.2;
        let pg = Arc::new(PostgresConnectionManager::connect(config).await.unwrap());
        let mut container = Container::new();
        container.register(Arc::clone(&pg));
        container.register(Arc::new(MetricsRegistry::new("dev")));
        let monitor = HealthMonitor::from_container(&container, Environment::Development).unwrap();
        let metrics = container.resolve::<MetricsRegistry>().unwrap();
        let address = "127.0.0.1:0".parse().unwrap();
        let server = ObservabilityServer::start(ObservabilityServerConfig { address }, metrics, monitor.checker())
            .await
            .unwrap();
        let address = server.local_addr();
        assert_eq!(get(address, "/health/ready").await.0, 200);
        let mut results = monitor.subscribe();
        monitor.start_monitoring(INTERVAL).unwrap();
        result_with(&mut results, HealthStatus::Healthy, CEILING).await;

        control_cluster("stop").await;
        let stopped = Instant::now();
        let (ready, took) = get(address, "/health/ready").await;
        let (live, _) = get(address, "/health/live").await;
        eprintln!(
            "PostgreSQL stopped: /health/ready {ready} in {took:?} (probe timeout {SERVICE_PROBE_TIMEOUT:?}), \
             /health/live {live}"
        );
        assert_eq!(ready, 503);
        // The probe answers at its timeout at the latest; the ceiling catches an answer that
        // waits for the server instead.
        assert!(took <= SERVICE_PROBE_TIMEOUT + Duration::from_secs(20), "503 bounded by the probe timeout: {took:?}");
        assert_eq!(live, 200);
        let unhealthy = result_with(&mut results, HealthStatus::Unhealthy, CEILING).await;
        eprintln!(
            "monitor unhealthy {:?} after the stop: {:?}",
            stopped.elapsed(),
            unhealthy.components.iter().find(|c| c.component == "postgres").map(|c| &c.errors)
        );

        control_cluster("start").await;
        let back = Instant::now();
        let ready_after = loop {
            let (ready, _) = get(address, "/health/ready").await;
            if ready == 200 {
                break back.elapsed();
            }
            assert!(back.elapsed() < CEILING, "not ready {CEILING:?} after PostgreSQL returned");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let healthy = result_with(&mut results, HealthStatus::Healthy, CEILING).await;
        let healthy_after = back.elapsed();
        eprintln!(
            "PostgreSQL back: ready after {ready_after:?}, monitor healthy after {healthy_after:?} \
             (interval {INTERVAL:?}); figures {:?}",
            healthy.figures
        );
        assert_eq!(get(address, "/health/live").await.0, 200);
        assert!(monitor.stop_monitoring().await);
        server.shutdown().await;
    });
}
