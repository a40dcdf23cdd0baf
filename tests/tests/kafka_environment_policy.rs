//! Every way of making a Kafka client is held to the rules of the process's deployment
//! environment (`ONEX_ENVIRONMENT`, the original system's variable, or the generic ones), not
//! only `KafkaProducerPool::from_env`: production refuses plaintext and TLS without host name
//! verification, staging refuses plaintext, development accepts anything.
//!
//! The environment is the process's, so each one is tried in a child process of this test
//! binary (setting variables in a running multi-threaded test process is unsound).

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;

use onex_runtime::environment::MapEnv;
use onex_runtime::event_bus::subscriber::subscribe;
use onex_runtime::event_bus::{EventHandler, SubscriptionOptions};
use onex_runtime::kafka::config::consumer_properties;
use onex_runtime::kafka::{KafkaPoolSettings, KafkaProducerPool, ProduceRecord};
use onex_runtime::models::kafka::{KafkaProducerConfig, KafkaSslConfig, SecurityProtocol};
use onex_runtime::{ErrorCode, OnexError};

const CHILD_TEST: &str = "child_makes_every_kind_of_kafka_client";

/// Nothing listens on port 1; a message accepted in development gives up after 1 s.
fn plaintext() -> KafkaProducerConfig {
    let mut config = KafkaProducerConfig::new("127.0.0.1:1");
    config.delivery_timeout_ms = 1_000;
    config
}

/// SSL with a CA and a client certificate: what production asks for. The files need not exist:
/// nothing here connects.
fn mutual_tls(check_hostname: bool) -> KafkaProducerConfig {
    let mut config = plaintext();
    config.security.security_protocol = SecurityProtocol::Ssl;
    config.security.ssl = Some(KafkaSslConfig {
        ca_location: Some("/nonexistent/ca.pem".into()),
        certificate_location: Some("/nonexistent/client.pem".into()),
        key_location: Some("/nonexistent/client.key".into()),
        key_password: None,
        check_hostname,
    });
    config
}

fn outcome<T>(result: Result<T, OnexError>) -> String {
    match result {
        Ok(_) => "ok".to_owned(),
        Err(e) => e.code().as_str().to_owned(),
    }
}

#[test]
#[ignore = "run by every_constructor_applies_the_rules_of_the_process_environment in a child process"]
fn child_makes_every_kind_of_kafka_client() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let settings = KafkaPoolSettings::default;
    let mut results = BTreeMap::new();
    results.insert("pool new, plaintext", outcome(KafkaProducerPool::new(settings(), plaintext())));
    results.insert("pool new, TLS unchecked host", outcome(KafkaProducerPool::new(settings(), mutual_tls(false))));
    results.insert("pool new, mutual TLS", outcome(KafkaProducerPool::new(settings(), mutual_tls(true))));
    // from_env reading a source that names no environment: the process's still applies.
    let env = MapEnv::from_pairs([("REDPANDA_BOOTSTRAP_SERVERS", "127.0.0.1:1")]);
    results.insert("pool from_env, plaintext", outcome(KafkaProducerPool::from_env(&env)));
    results.insert("consumer properties, plaintext", outcome(consumer_properties(&plaintext(), "group")));
    let handler: EventHandler = Arc::new(|_| Box::pin(async { Ok(()) }));
    let subscribed = runtime.block_on(async {
        subscribe(&plaintext(), &["onex.evt.test.policy.v1"], SubscriptionOptions::new("group"), handler)
    });
    results.insert("subscribe, plaintext", outcome(subscribed));
    // A pool allowed here, asked to send on another, plaintext, configuration.
    let pool = KafkaProducerPool::new(settings(), mutual_tls(true))
        .or_else(|_| KafkaProducerPool::new(settings(), plaintext()));
    if let Ok(pool) = pool {
        let sent = runtime.block_on(pool.send_with(&plaintext(), ProduceRecord::new("t", b"x"), None));
        results.insert("pool send_with, plaintext", outcome(sent));
    }
    println!("RESULTS {}", serde_json::to_string(&results).unwrap());
}

/// Runs the child test with `ONEX_ENVIRONMENT=environment` and returns what each client got.
fn results_in(environment: &str) -> BTreeMap<String, String> {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", CHILD_TEST, "--ignored", "--nocapture", "--test-threads=1"])
        .env("ONEX_ENVIRONMENT", environment)
        .output()
        .expect("run the child test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child in {environment} failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    let line =
        stdout.lines().find_map(|l| l.split_once("RESULTS ").map(|(_, r)| r)).expect("the child prints its results");
    serde_json::from_str(line).unwrap()
}

#[test]
fn every_constructor_applies_the_rules_of_the_process_environment() {
    let refused = ErrorCode::SecurityViolationError.as_str();
    let production = results_in("production");
    println!("production: {production:#?}");
    for (client, got) in &production {
        let expected = if client.contains("mutual TLS") { "ok" } else { refused };
        assert_eq!(got, expected, "production, {client}");
    }
    assert_eq!(production.len(), 7, "{production:?}");

    let staging = results_in("staging");
    println!("staging: {staging:#?}");
    for (client, got) in &staging {
        let expected = if client.contains("plaintext") { refused } else { "ok" };
        assert_eq!(got, expected, "staging, {client}");
    }
    assert_eq!(staging.len(), 7, "{staging:?}");

    let development = results_in("development");
    for (client, got) in &development {
        // send_with reaches librdkafka, which cannot connect to port 1 but accepts the message.
        assert_eq!(got, "ok", "development, {client}");
    }
    assert_eq!(development.len(), 7, "{development:?}");
}
