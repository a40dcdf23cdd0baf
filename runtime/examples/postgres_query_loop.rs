//! Per-statement cost of the PostgreSQL pool: `SELECT 1` run in a loop on one connection.
//!
//! Reads `POSTGRES_*` like the service does. Prints the mean of each of `ROUNDS` rounds of
//! `QUERIES` statements, and the best round: the figure to compare before and after a change.
//! With `TRACED=1` the manager records a span per statement into memory (every trace
//! sampled), which shows what tracing costs; without it, tracing is disabled (the default).
//!
//! ```text
//! POSTGRES_HOST=127.0.0.1 POSTGRES_PORT=5432 POSTGRES_DATABASE=postgres POSTGRES_USER=postgres \
//!   POSTGRES_SCHEMA=public cargo run --release -p onex-runtime --example postgres_query_loop
//! ```

use std::time::Instant;

use onex_runtime::environment::ProcessEnv;
use onex_runtime::postgres::PostgresConnectionManager;
use onex_runtime::telemetry::Tracing;
use onex_runtime::telemetry::capture::SpanCapture;

const ROUNDS: usize = 7;
const QUERIES: usize = 20_000;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let capture = SpanCapture::new();
    let tracing = match std::env::var("TRACED").as_deref() {
        Ok("1") => capture.tracing("postgres-query-loop")?,
        _ => Tracing::disabled(),
    };
    println!("tracing enabled: {}", tracing.is_enabled());
    let pg = PostgresConnectionManager::from_env(&ProcessEnv).await?.with_tracing(tracing.clone());
    for _ in 0..1_000 {
        pg.fetch_value("SELECT 1", &[]).await?;
    }
    let mut best = f64::MAX;
    for round in 0..ROUNDS {
        let started = Instant::now();
        for _ in 0..QUERIES {
            pg.fetch_value("SELECT 1", &[]).await?;
        }
        let per_query_us = started.elapsed().as_secs_f64() * 1e6 / QUERIES as f64;
        best = best.min(per_query_us);
        println!("round {round}: {per_query_us:.2} µs per statement");
    }
    println!("best: {best:.2} µs per statement");
    tracing.flush()?;
    let stats = tracing.stats();
    println!("spans exported: {}, dropped: {}", stats.exported, stats.dropped());
    capture.clear();
    pg.close();
    Ok(())
}
