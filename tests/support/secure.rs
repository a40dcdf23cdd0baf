//! Helpers for tests against the TLS and SASL endpoints started by `scripts/secure-broker.sh`
//! (which `scripts/test.sh` runs): where they listen, the test certificates, and settings for them.

use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use onex_runtime::models::kafka::{
    KafkaProducerConfig, KafkaSaslConfig, KafkaSecurityConfig, KafkaSslConfig, SecurityProtocol,
};
use onex_runtime::sensitive::Sensitive;

use crate::kafka::repo_root;

/// The endpoints of `scripts/secure-broker.sh`, from `ONEX_TEST_KAFKA_SECURE_PORT_BASE`
/// (default 19093, as in the script).
#[derive(Debug, Clone, Copy)]
pub enum Endpoint {
    /// TLS, server certificate of the test CA for 127.0.0.1 and localhost.
    Tls,
    /// TLS requiring a client certificate of the test CA.
    MutualTls,
    /// TLS with a certificate of the test CA for `wrong-host.invalid` only.
    WrongHost,
    /// SASL_PLAINTEXT (tansu `--authentication`).
    Sasl,
}

impl Endpoint {
    /// `127.0.0.1:port`, after checking that something listens there; panics saying which
    /// script starts it otherwise.
    pub fn address(self) -> String {
        let base: u16 = std::env::var("ONEX_TEST_KAFKA_SECURE_PORT_BASE")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map_or(19093, |v| v.trim().parse().expect("ONEX_TEST_KAFKA_SECURE_PORT_BASE is a port number"));
        let port = base + self as u16;
        let address = format!("127.0.0.1:{port}");
        assert!(
            TcpStream::connect_timeout(&address.parse().expect("loopback address"), Duration::from_secs(2)).is_ok(),
            "nothing listens on {address} ({self:?}): start the TLS/SASL brokers with `scripts/secure-broker.sh start` \
             (scripts/test.sh does; set ONEX_TEST_KAFKA_SECURE_PORT_BASE to the same base for both)"
        );
        address
    }
}

/// A file of `.broker/secure/tls/` made by `scripts/secure-broker.sh` (`ca.pem`, `client.key`, …).
pub fn tls_file(name: &str) -> String {
    let path: PathBuf = repo_root().join(".broker/secure/tls").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `scripts/secure-broker.sh start` (scripts/test.sh does)",
        path.display()
    );
    path.display().to_string()
}

/// TLS settings trusting `ca` (a file of [`tls_file`]), with host name verification.
pub fn ssl(ca: &str) -> KafkaSslConfig {
    KafkaSslConfig { ca_location: Some(tls_file(ca)), check_hostname: true, ..Default::default() }
}

/// A producer configuration for `address` with `security`, failing fast: a message waits at
/// most 10 s (a refusal must be reported long before).
pub fn config(address: &str, security: KafkaSecurityConfig) -> KafkaProducerConfig {
    let mut config = KafkaProducerConfig::new(address);
    config.security = security;
    config.delivery_timeout_ms = 10_000;
    config.request_timeout_ms = 5_000;
    config
}

/// SSL with `ssl` settings.
pub fn ssl_security(ssl: KafkaSslConfig) -> KafkaSecurityConfig {
    KafkaSecurityConfig { security_protocol: SecurityProtocol::Ssl, ssl: Some(ssl), sasl: None }
}

/// SASL_PLAINTEXT with `mechanism`, `username` and `password`.
pub fn sasl_security(mechanism: &str, username: &str, password: &str) -> KafkaSecurityConfig {
    KafkaSecurityConfig {
        security_protocol: SecurityProtocol::SaslPlaintext,
        ssl: None,
        sasl: Some(KafkaSaslConfig {
            mechanism: mechanism.to_owned(),
            username: username.to_owned(),
            password: Sensitive::new(password.to_owned()),
        }),
    }
}
