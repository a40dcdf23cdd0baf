//! Per-message cost of the producer pool on rdkafka's in-process mock cluster: `MESSAGES`
//! sends, awaited in windows of `WINDOW`. Run under callgrind to compare the instructions of
//! `KafkaProducerPool::send` per message before and after a change (wall time on a shared
//! machine moves too much to show a few instructions).
//!
//! With `TRACED=1` every message is a recorded span (into memory), which shows what tracing
//! costs; without it tracing is disabled (the default).
//!
//! ```text
//! cargo build --release -p onex-runtime --example kafka_send_loop
//! valgrind --tool=callgrind target/release/examples/kafka_send_loop
//! ```

use std::time::Instant;

use onex_runtime::kafka::{KafkaPoolSettings, KafkaProducerPool, ProduceRecord};
use onex_runtime::models::kafka::KafkaProducerConfig;
use onex_runtime::telemetry::Tracing;
use onex_runtime::telemetry::capture::SpanCapture;
use rdkafka::mocking::MockCluster;

const MESSAGES: usize = 20_000;
const WINDOW: usize = 256;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mock = MockCluster::new(1)?;
    mock.create_topic("loop", 1, 1)?;
    let capture = SpanCapture::new();
    let tracing = match std::env::var("TRACED").as_deref() {
        Ok("1") => capture.tracing("kafka-send-loop")?,
        _ => Tracing::disabled(),
    };
    let pool =
        KafkaProducerPool::new(KafkaPoolSettings::default(), KafkaProducerConfig::new(mock.bootstrap_servers()))?
            .with_tracing(tracing.clone());
    let payload = [7u8; 100];
    let started = Instant::now();
    let mut sent = 0;
    while sent < MESSAGES {
        let mut window = Vec::with_capacity(WINDOW);
        for _ in 0..WINDOW.min(MESSAGES - sent) {
            window.push(pool.send(ProduceRecord::new("loop", &payload).key(b"key"), None).await?);
            sent += 1;
        }
        for delivery in window {
            delivery.await?;
        }
    }
    let per_message_us = started.elapsed().as_secs_f64() * 1e6 / MESSAGES as f64;
    println!("tracing enabled: {}; {per_message_us:.2} µs per message", tracing.is_enabled());
    tracing.flush()?;
    pool.shutdown().await?;
    Ok(())
}
