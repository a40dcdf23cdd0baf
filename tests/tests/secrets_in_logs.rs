//! No secret leaves through a log line, an error or `Debug`, on the error paths where one is
//! most likely to: the producer pool and the event bus with SASL credentials the broker refuses
//! (`scripts/secure-broker.sh start` first; `scripts/test.sh` does) and with an unreachable
//! broker, and the PostgreSQL manager with a role the server refuses and with an unreachable
//! server. Everything is logged at TRACE into one capture (a global subscriber: librdkafka calls
//! back on its own threads), then searched for the secrets.
//!
//! The test PostgreSQL server trusts loopback connections, so a wrong password for a real role
//! is accepted there; the refused role stands in for it (the password is sent all the same).

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use onex_runtime::event::OnexEvent;
use onex_runtime::event_bus::{EventPublisher, KafkaEventBus, TopicNamer};
use onex_runtime::kafka::{KafkaPoolSettings, KafkaProducerPool, ProduceRecord};
use onex_runtime::models::kafka::KafkaProducerConfig;
use onex_runtime::models::postgres::PostgresConnectionConfig;
use onex_runtime::postgres::PostgresConnectionManager;
use onex_runtime::sensitive::Sensitive;
use onex_tests::kafka::unique_topic;
use onex_tests::secure::{Endpoint, config, sasl_security};
use uuid::Uuid;

/// Everything the subscriber writes.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What was said on one error path: errors, health reports and `Debug` forms.
#[derive(Default)]
struct Said(Vec<String>);

impl Said {
    fn add(&mut self, what: impl std::fmt::Display, shown: impl std::fmt::Debug) {
        self.0.push(format!("{what}\n{shown:?}"));
    }
}

fn assert_hidden(secret: &str, texts: &[String], logs: &str) {
    for text in texts {
        assert!(!text.contains(secret), "a secret shows in: {text}");
    }
    if let Some(at) = logs.find(secret) {
        let line = logs[..at].rsplit('\n').next().unwrap_or("");
        panic!("a secret shows in a log line: {line}…");
    }
}

async fn kafka_error_paths(config: KafkaProducerConfig, said: &mut Said) {
    let pool = KafkaProducerPool::new(KafkaPoolSettings { pool_name: "secrets".into(), ..Default::default() }, config)
        .expect("a development pool accepts SASL_PLAINTEXT");
    said.add("config", pool.default_config());
    let topic = unique_topic("secrets");
    match pool.publish(ProduceRecord::new(&topic, b"x"), None).await {
        Ok(_) => panic!("a refused or unreachable broker acknowledged a message"),
        Err(e) => said.add(&e, &e),
    }
    let health = pool.health_check().await;
    said.add(format!("{:?}", health.errors), &health);
    said.add("pool", &pool);
    let namer = TopicNamer::new("dev", &format!("t{}", Uuid::new_v4().simple()), "onex").unwrap();
    let bus = KafkaEventBus::new(Arc::new(pool.clone()), namer);
    let event = OnexEvent::new("secret.probed", "node_test", Uuid::new_v4(), serde_json::json!({}));
    match bus.publish(event).await {
        Ok(()) => panic!("the bus published through a refused or unreachable broker"),
        Err(e) => said.add(&e, &e),
    }
    said.add("bus stats", bus.stats());
    let _ = pool.shutdown().await;
}

async fn postgres_error_path(config: PostgresConnectionConfig, said: &mut Said) {
    said.add("config", &config);
    match tokio::time::timeout(Duration::from_secs(30), PostgresConnectionManager::connect(config)).await {
        Err(_) => panic!("connect did not answer within 30 s"),
        Ok(Ok(manager)) => panic!("the server accepted a role that does not exist: {manager:?}"),
        Ok(Err(e)) => said.add(&e, &e),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_shows_in_logs_errors_or_debug_on_error_paths() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish(),
    )
    .expect("the only subscriber of this test binary");

    let sasl_password = format!("sasl-secret-{}", Uuid::new_v4().simple());
    let pg_password = format!("pg-secret-{}", Uuid::new_v4().simple());
    let mut said = Said::default();

    // SASL credentials the broker refuses.
    let refused = config(&Endpoint::Sasl.address(), sasl_security("SCRAM-SHA-512", "onex-secrets", &sasl_password));
    kafka_error_paths(refused, &mut said).await;
    // Nothing listens on port 1: connection refused, with the same credentials configured.
    let mut unreachable = config("127.0.0.1:1", sasl_security("SCRAM-SHA-512", "onex-secrets", &sasl_password));
    unreachable.delivery_timeout_ms = 2_000;
    kafka_error_paths(unreachable, &mut said).await;

    // A role the server refuses, and then an unreachable server, both with a password.
    let host = onex_tests::postgres::host();
    let mut refused = PostgresConnectionConfig::new(
        host.clone(),
        onex_tests::postgres::port(),
        "postgres",
        format!("onex_no_such_role_{}", Uuid::new_v4().simple()),
        "public",
    );
    refused.password = Sensitive::new(pg_password.clone());
    refused.min_connections = 1;
    postgres_error_path(refused.clone(), &mut said).await;
    let mut unreachable = refused;
    unreachable.port = 1;
    postgres_error_path(unreachable, &mut said).await;

    let logs = String::from_utf8_lossy(&capture.0.lock().unwrap()).into_owned();
    println!("{} texts and {} log lines searched", said.0.len(), logs.lines().count());
    // The capture must have seen the error paths, or finding no secret in it proves nothing.
    assert!(logs.contains("refused the connection"), "the SASL refusal was not logged");
    assert!(said.0.iter().any(|t| t.contains("authentication failed")), "the SASL refusal was not reported");
    assert!(said.0.iter().any(|t| t.contains("DATABASE_CONNECTION_FAILED")), "no PostgreSQL error was reported");
    assert_hidden(&sasl_password, &said.0, &logs);
    assert_hidden(&pg_password, &said.0, &logs);
}
