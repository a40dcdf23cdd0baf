//! Broker stopped mid-stream, then started again: delivery errors surface within the message
//! timeout, health turns unhealthy, and the same pool recovers without a process restart.
//!
//! Its own test binary because it stops the shared broker; a drop guard restarts it even if
//! an assertion fails.
//!
//! Every wait is for an event (a delivery report, a delivery, a health status) under a
//! generous ceiling, so a busy machine slows the test down without failing it; the times
//! measured are printed.

use std::time::{Duration, Instant};

use onex_runtime::kafka::{DeliveryFuture, KafkaPoolSettings, KafkaProducerPool, ProduceRecord};
use onex_runtime::models::health::HealthStatus;
use onex_runtime::models::kafka::KafkaProducerConfig;
use onex_tests::kafka::{BrokerOutage, bootstrap, create_topic, unique_topic};

const MESSAGE_TIMEOUT: Duration = Duration::from_secs(5);
/// Ceiling of every wait: many message timeouts, so only a state never reached fails.
const CEILING: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_surfaces_errors_and_the_pool_recovers() {
    let topic = unique_topic("restart");
    create_topic(&topic, 1).await;
    let config = KafkaProducerConfig {
        delivery_timeout_ms: MESSAGE_TIMEOUT.as_millis() as u32,
        ..KafkaProducerConfig::new(bootstrap())
    };
    // tansu never grants the epoch bump an idempotent producer needs after losing messages;
    // the pool replaces such a producer after this stall.
    let settings = KafkaPoolSettings {
        health_window: Duration::from_secs(2),
        identity_stall_limit: Duration::from_secs(5),
        ..Default::default()
    };
    let pool = KafkaProducerPool::new(settings, config).unwrap();

    // Mid-stream: a steady flow, acknowledged.
    for i in 0..1_000u32 {
        pool.send(ProduceRecord::new(&topic, &i.to_be_bytes()), None).await.unwrap().await.unwrap();
    }
    assert_eq!(pool.health().status, HealthStatus::Healthy);

    let mut outage = BrokerOutage::begin();
    let mut in_flight: Vec<(Instant, DeliveryFuture)> = Vec::new();
    let mut worst = Duration::ZERO;
    for i in 0..200u32 {
        let sent_at = Instant::now();
        in_flight.push((sent_at, pool.send(ProduceRecord::new(&topic, &i.to_be_bytes()), None).await.unwrap()));
    }
    for (sent_at, delivery) in in_flight {
        let err = delivery.await.expect_err("a message sent while the broker is down must fail");
        let waited = sent_at.elapsed();
        worst = worst.max(waited);
        // The pool's watchdog reports a message at its timeout plus a quarter second; the
        // ceiling catches a report that never comes on its own.
        assert!(waited <= MESSAGE_TIMEOUT + CEILING, "error surfaced after {waited:?}: {err}");
    }
    eprintln!("slowest delivery error surfaced {worst:?} after its send (message timeout {MESSAGE_TIMEOUT:?})");
    let stats = pool.stats();
    assert_eq!(stats.total_messages_failed, 200, "{stats:?}");
    assert_eq!(stats.queue_depth, 0);
    assert_eq!(pool.health().status, HealthStatus::Unhealthy);
    assert_eq!(pool.health_check().await.status, HealthStatus::Unhealthy);

    // Broker back (empty: it keeps data in memory), same pool, same process.
    outage.end();
    create_topic(&topic, 1).await;
    let restarted = Instant::now();
    let recovered = loop {
        match pool.publish(ProduceRecord::new(&topic, b"after"), None).await {
            Ok(delivered) => break delivered,
            Err(e) => {
                assert!(restarted.elapsed() < CEILING, "pool did not recover within {CEILING:?}: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    eprintln!("first delivery {:?} after the broker was back", restarted.elapsed());
    assert!(recovered.offset >= 0);
    for i in 0..100u32 {
        pool.publish(ProduceRecord::new(&topic, &i.to_be_bytes()), None).await.unwrap();
    }
    // The failures age out of the health window (2 s): healthy again once they have.
    let healthy_again = loop {
        pool.publish(ProduceRecord::new(&topic, b"healthy again"), None).await.unwrap();
        let health = pool.health_check().await;
        if health.status == HealthStatus::Healthy {
            break restarted.elapsed();
        }
        assert!(restarted.elapsed() < CEILING, "not healthy {CEILING:?} after the restart: {:?}", health.errors);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("healthy again {healthy_again:?} after the broker was back (health window 2 s)");
    let report = pool.shutdown().await.unwrap();
    assert_eq!(report.undelivered, 0);
}
