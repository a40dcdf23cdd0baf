//! The four health probes of the original system.

use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::Value;

use super::{PostgresConnectionManager, QueryOptions};
use crate::models::health::HealthStatus;
use crate::models::postgres::PostgresHealth;

/// Each probe's statement timeout; health must answer quickly even when the configured
/// command timeout is long.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) async fn check(manager: &PostgresConnectionManager) -> PostgresHealth {
    let started = Instant::now();
    let schema = manager.config.schema.clone();
    let mut health = PostgresHealth {
        status: HealthStatus::Healthy,
        timestamp: Utc::now(),
        connection_pool: manager.connection_stats(),
        server_version: None,
        current_schema: None,
        active_connections: None,
        schema: schema.clone(),
        schema_exists: false,
        response_time_ms: 0.0,
        errors: Vec::new(),
    };
    if manager.is_closed() {
        health.status = HealthStatus::Unhealthy;
        health.errors.push("the connection manager is closed".to_owned());
    } else {
        probe(manager, &schema, &mut health).await;
    }
    health.connection_pool = manager.connection_stats();
    health.response_time_ms = started.elapsed().as_secs_f64() * 1000.0;
    health
}

async fn probe(manager: &PostgresConnectionManager, schema: &str, health: &mut PostgresHealth) {
    let options = QueryOptions {
        timeout: Some(PROBE_TIMEOUT.min(manager.command_timeout)),
        deadline: None,
        record_metrics: false,
    };
    let mut conn = match manager.pool.get().await {
        Ok(conn) => conn,
        Err(e) => {
            health.status = HealthStatus::Unhealthy;
            health.errors.push(format!("checkout failed: {e}"));
            return;
        }
    };
    let probes: [(&str, &str, Vec<Value>); 4] = [
        ("version", "SELECT version()", vec![]),
        ("current_schema", "SELECT current_schema()", vec![]),
        ("active_connections", "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()", vec![]),
        (
            "schema_exists",
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
            vec![Value::String(schema.to_owned())],
        ),
    ];
    for (name, sql, params) in probes {
        let value = match manager.run_on(&mut conn, sql, &params, options, super::conn::Take::FirstValue).await {
            Ok(outcome) => outcome.value,
            Err(e) => {
                health.status = HealthStatus::Unhealthy;
                health.errors.push(format!("{name} probe failed: {e}"));
                continue;
            }
        };
        match (name, value) {
            ("version", Some(Value::String(v))) => health.server_version = Some(v),
            ("current_schema", Some(Value::String(v))) => health.current_schema = Some(v),
            ("current_schema", _) => {}
            ("active_connections", Some(v)) => health.active_connections = v.as_i64(),
            ("schema_exists", Some(Value::Bool(exists))) => health.schema_exists = exists,
            (name, other) => health.errors.push(format!("{name} probe returned an unexpected value: {other:?}")),
        }
    }
    if health.status == HealthStatus::Healthy && !health.schema_exists {
        health.status = HealthStatus::Degraded;
        health.errors.push(format!("schema '{schema}' does not exist"));
    }
}
