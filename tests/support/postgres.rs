//! Helpers for tests against the PostgreSQL server on 127.0.0.1:5432 (user postgres, trust).
//!
//! Every test gets its own database from [`TestDatabase::create`]; dropping the guard
//! terminates that database's connections and drops it, even when the test panicked.

use std::time::Duration;

use onex_runtime::environment::MapEnv;
use onex_runtime::models::postgres::{PostgresConnectionConfig, SslMode};
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

/// Host of the test server: `ONEX_TEST_PG_HOST`, default `127.0.0.1`.
pub fn host() -> String {
    std::env::var("ONEX_TEST_PG_HOST").ok().filter(|v| !v.is_empty()).unwrap_or_else(|| "127.0.0.1".to_owned())
}

/// Port of the test server: `ONEX_TEST_PG_PORT`, default 5432.
pub fn port() -> u16 {
    std::env::var("ONEX_TEST_PG_PORT").ok().and_then(|v| v.parse().ok()).unwrap_or(5432)
}

/// Opens a plain connection to `database` as `postgres`.
pub async fn admin_client(database: &str) -> Client {
    let mut config = tokio_postgres::Config::new();
    config
        .host(host())
        .port(port())
        .user("postgres")
        .dbname(database)
        .application_name("onex-test-admin")
        .connect_timeout(Duration::from_secs(5));
    let (client, connection) = config
        .connect(NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to PostgreSQL at {}:{}/{database}: {e}", host(), port()));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A database that exists for one test.
#[derive(Debug)]
pub struct TestDatabase {
    /// Database name (`onex_test_<uuid>`).
    pub name: String,
    /// Schema created in it, which the pool configuration names.
    pub schema: String,
}

impl TestDatabase {
    /// Creates a uniquely named database with schema `schema` in it.
    pub async fn create(schema: &str) -> TestDatabase {
        let name = format!("onex_test_{}", Uuid::new_v4().simple());
        let admin = admin_client("postgres").await;
        admin.batch_execute(&format!("CREATE DATABASE \"{name}\"")).await.expect("CREATE DATABASE");
        let guard = TestDatabase { name, schema: schema.to_owned() };
        let client = guard.client().await;
        client
            .batch_execute(&format!("CREATE SCHEMA \"{}\"", schema.replace('"', "\"\"")))
            .await
            .expect("CREATE SCHEMA");
        guard
    }

    /// A plain (unpooled) admin connection to this database.
    pub async fn client(&self) -> Client {
        admin_client(&self.name).await
    }

    /// A pool configuration for this database: TLS off, small sizes and short timeouts
    /// suited to tests (each test adjusts what it exercises).
    pub fn config(&self) -> PostgresConnectionConfig {
        let mut config = PostgresConnectionConfig::new(host(), port(), &self.name, "postgres", &self.schema);
        config.ssl_mode = SslMode::Disable;
        config.min_connections = 2;
        config.max_connections = 10;
        config.wait_timeout_secs = 5.0;
        config.create_timeout_secs = 5.0;
        config.command_timeout_secs = 30.0;
        config.application_name = format!("onex-test-{}", &self.name[10..18]);
        config
    }

    /// The `POSTGRES_*` variables naming this database.
    pub fn env(&self) -> MapEnv {
        MapEnv::from_pairs([
            ("POSTGRES_HOST", host()),
            ("POSTGRES_PORT", port().to_string()),
            ("POSTGRES_DATABASE", self.name.clone()),
            ("POSTGRES_USER", "postgres".to_owned()),
            ("POSTGRES_SCHEMA", self.schema.clone()),
            ("POSTGRES_SSL_MODE", "disable".to_owned()),
        ])
    }

    /// Connections to this database other than `except_application` (the admin probe).
    pub async fn backend_count(&self) -> i64 {
        let admin = admin_client("postgres").await;
        let row = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name <> 'onex-test-admin'",
                &[&self.name],
            )
            .await
            .expect("count backends");
        row.get(0)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside or outside a runtime; a thread with its own runtime works in both.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime
                .block_on(async move {
                    let admin = admin_client("postgres").await;
                    admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await
                })
                .map_err(std::io::Error::other)
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: dropping test database {} failed: {e}", self.name),
            Err(_) => eprintln!("warning: dropping test database {} panicked", self.name),
        }
    }
}

/// The version of the local cluster (`ls /etc/postgresql`; the newest when there are several).
fn cluster_version() -> String {
    let mut versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
        .expect("/etc/postgresql lists the clusters")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    versions.sort();
    versions.pop().expect("one PostgreSQL cluster")
}

/// Runs `pg_ctlcluster {version} main {action}` (`stop`, `start`, `restart`) on the shared test
/// server. Only a test binary of its own may stop it (cargo runs test binaries one after
/// another), and it holds a [`ServerGuard`] while it does.
pub fn pg_ctlcluster(action: &str) -> std::process::ExitStatus {
    std::process::Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &cluster_version(), "main", action])
        .status()
        .unwrap_or_else(|e| panic!("pg_ctlcluster {action}: {e}"))
}

/// [`pg_ctlcluster`] from async code, asserting that it succeeded.
pub async fn control_cluster(action: &'static str) {
    let status = tokio::task::spawn_blocking(move || pg_ctlcluster(action)).await.expect("pg_ctlcluster task");
    assert!(status.success(), "pg_ctlcluster {action}: {status}");
}

/// Starts the shared server again when dropped, whatever happened in the test.
pub struct ServerGuard;

impl Drop for ServerGuard {
    fn drop(&mut self) {
        // `start` on a running cluster exits non-zero, which is fine here.
        let _ = pg_ctlcluster("start");
    }
}
