//! The producer pool over TLS against real endpoints (`scripts/secure-broker.sh start` first;
//! `scripts/test.sh` does): the test CA and the broker's host name are verified, a server of
//! another CA or for another host name is refused, and mutual TLS needs a client certificate of
//! the CA. A refusal is a TLS error within seconds, from a send and from the health check, not a
//! message timeout.

use std::time::{Duration, Instant};

use onex_runtime::OnexError;
use onex_runtime::kafka::error::kafka_error_name;
use onex_runtime::kafka::{KafkaPoolSettings, KafkaProducerPool, ProduceRecord};
use onex_runtime::models::health::HealthStatus;
use onex_runtime::models::kafka::{KafkaProducerConfig, KafkaSslConfig};
use onex_tests::kafka::unique_topic;
use onex_tests::secure::{Endpoint, config, ssl, ssl_security, tls_file};

/// Ceiling for a refusal to be reported; the message timeout (10 s) is the alternative.
const REFUSED_WITHIN: Duration = Duration::from_secs(6);

fn pool(config: KafkaProducerConfig) -> KafkaProducerPool {
    KafkaProducerPool::new(KafkaPoolSettings { pool_name: "tls".into(), ..Default::default() }, config).unwrap()
}

/// Publishes one message and returns the outcome with how long it took.
async fn publish(pool: &KafkaProducerPool) -> (Result<(), OnexError>, Duration) {
    let topic = unique_topic("tls");
    let started = Instant::now();
    let outcome = pool.publish(ProduceRecord::new(&topic, b"over tls"), None).await.map(|_| ());
    (outcome, started.elapsed())
}

async fn assert_accepted(config: KafkaProducerConfig, what: &str) {
    let pool = pool(config);
    let (outcome, took) = publish(&pool).await;
    println!("{what}: acknowledged in {took:?}");
    outcome.unwrap_or_else(|e| panic!("{what}: {e}"));
    let health = pool.health_check().await;
    assert_eq!(health.status, HealthStatus::Healthy, "{what}: {:?}", health.errors);
    pool.shutdown().await.unwrap();
}

async fn assert_refused_by_tls(config: KafkaProducerConfig, what: &str) {
    let pool = pool(config);
    let (outcome, took) = publish(&pool).await;
    let err = outcome.expect_err(what);
    println!("{what}: refused in {took:?}: {err}");
    assert_eq!(kafka_error_name(&err), Some("SSL"), "{what}: {err}");
    assert!(err.message().contains("TLS handshake failed"), "{what}: {err}");
    assert!(took < REFUSED_WITHIN, "{what}: took {took:?}");
    let started = Instant::now();
    let health = pool.health_check().await;
    println!("{what}: health check answered in {:?}: {:?}", started.elapsed(), health.errors);
    assert_eq!(health.status, HealthStatus::Unhealthy, "{what}");
    assert!(health.errors.iter().any(|e| e.contains("TLS handshake failed")), "{what}: {:?}", health.errors);
    assert!(started.elapsed() < REFUSED_WITHIN, "{what}");
    let _ = pool.shutdown().await;
}

#[tokio::test]
async fn a_broker_certified_by_the_trusted_ca_for_its_host_name_is_accepted() {
    let address = Endpoint::Tls.address();
    assert_accepted(config(&address, ssl_security(ssl("ca.pem"))), "TLS, test CA, 127.0.0.1").await;
    let localhost = address.replace("127.0.0.1", "localhost");
    assert_accepted(config(&localhost, ssl_security(ssl("ca.pem"))), "TLS, test CA, localhost").await;
}

#[tokio::test]
async fn a_broker_certified_by_another_ca_is_refused_with_a_tls_error() {
    let address = Endpoint::Tls.address();
    assert_refused_by_tls(config(&address, ssl_security(ssl("wrong-ca.pem"))), "TLS, wrong CA").await;
}

#[tokio::test]
async fn a_certificate_for_another_host_name_is_refused_unless_the_check_is_off() {
    let address = Endpoint::WrongHost.address();
    assert_refused_by_tls(config(&address, ssl_security(ssl("ca.pem"))), "TLS, wrong host name").await;
    // The same endpoint and CA with the host name check off connects: the check is what refused.
    let unchecked = KafkaSslConfig { check_hostname: false, ..ssl("ca.pem") };
    let pool = pool(config(&address, ssl_security(unchecked)));
    let health = pool.health_check().await;
    assert_eq!(health.status, HealthStatus::Healthy, "host name check off: {:?}", health.errors);
}

#[tokio::test]
async fn mutual_tls_with_a_client_certificate_of_the_ca_is_accepted() {
    let address = Endpoint::MutualTls.address();
    let client = KafkaSslConfig {
        certificate_location: Some(tls_file("client.pem")),
        key_location: Some(tls_file("client.key")),
        ..ssl("ca.pem")
    };
    assert_accepted(config(&address, ssl_security(client)), "mutual TLS, client certificate").await;
}

#[tokio::test]
async fn mutual_tls_without_a_client_certificate_or_with_a_strangers_is_refused() {
    let address = Endpoint::MutualTls.address();
    assert_refused_by_tls(config(&address, ssl_security(ssl("ca.pem"))), "mutual TLS, no client certificate").await;
    let stranger = KafkaSslConfig {
        certificate_location: Some(tls_file("stranger.pem")),
        key_location: Some(tls_file("stranger.key")),
        ..ssl("ca.pem")
    };
    assert_refused_by_tls(config(&address, ssl_security(stranger)), "mutual TLS, certificate of another CA").await;
}
