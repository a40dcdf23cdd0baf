//! Helpers for tests against the TLS and SASL endpoints started by `scripts/secure-broker.sh`
//! (which `scripts/test.sh` runs): where they listen, the test certificates, and SCRAM users.

use std::ffi::{CStr, CString};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use onex_runtime::models::kafka::{
    KafkaProducerConfig, KafkaSaslConfig, KafkaSecurityConfig, KafkaSslConfig, SecurityProtocol,
};
use onex_runtime::sensitive::Sensitive;
use rdkafka::bindings as rd;

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
    /// SASL_SSL (tansu `--authentication` behind the TLS terminator).
    SaslSsl,
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

/// SASL_SSL (trusting the test CA) with `mechanism`, `username` and `password`.
pub fn sasl_security(mechanism: &str, username: &str, password: &str) -> KafkaSecurityConfig {
    KafkaSecurityConfig {
        security_protocol: SecurityProtocol::SaslSsl,
        ssl: Some(ssl("ca.pem")),
        sasl: Some(KafkaSaslConfig {
            mechanism: mechanism.to_owned(),
            username: username.to_owned(),
            password: Sensitive::new(password.to_owned()),
        }),
    }
}

/// Creates (or replaces) the SCRAM-SHA-512 user `user` with `password` on the SASL_SSL broker.
///
/// tansu keeps users in its storage, which is memory here, so they cannot be made before the
/// broker starts, and `tansu user create` does not authenticate, which a broker started with
/// `--authentication` refuses. An admin client signs in with PLAIN instead, which tansu 0.6.0
/// accepts with any password (it does not check PLAIN passwords: see the README), and sends
/// AlterUserScramCredentials, the Kafka API `kafka-configs --add-config SCRAM-SHA-512=…` uses.
pub fn create_scram_user(user: &str, password: &str) {
    let address = Endpoint::SaslSsl.address();
    let settings = [
        ("bootstrap.servers", address.as_str()),
        ("security.protocol", "sasl_ssl"),
        ("ssl.ca.location", &tls_file("ca.pem")),
        ("sasl.mechanism", "PLAIN"),
        ("sasl.username", "onex-test-admin"),
        ("sasl.password", "tansu-does-not-check-plain-passwords"),
    ];
    // SAFETY: every pointer handed to librdkafka comes from a live CString or from librdkafka
    // itself, and each object is destroyed once, after its last use, in reverse order of creation.
    unsafe {
        let conf = rd::rd_kafka_conf_new();
        let mut err = [0 as std::ffi::c_char; 512];
        for (key, value) in settings {
            let (k, v) = (CString::new(key).unwrap(), CString::new(value).unwrap());
            let set = rd::rd_kafka_conf_set(conf, k.as_ptr(), v.as_ptr(), err.as_mut_ptr(), err.len());
            assert_eq!(set, rd::rd_kafka_conf_res_t::RD_KAFKA_CONF_OK, "{key}: {}", text(err.as_ptr()));
        }
        let client = rd::rd_kafka_new(rd::rd_kafka_type_t::RD_KAFKA_PRODUCER, conf, err.as_mut_ptr(), err.len());
        assert!(!client.is_null(), "admin client: {}", text(err.as_ptr()));
        let queue = rd::rd_kafka_queue_new(client);
        let name = CString::new(user).unwrap();
        let mut upsertion = rd::rd_kafka_UserScramCredentialUpsertion_new(
            name.as_ptr(),
            rd::rd_kafka_ScramMechanism_t::RD_KAFKA_SCRAM_MECHANISM_SHA_512,
            8192,
            password.as_ptr(),
            password.len(),
            std::ptr::null(),
            0,
        );
        rd::rd_kafka_AlterUserScramCredentials(client, &mut upsertion, 1, std::ptr::null_mut(), queue);
        let event = rd::rd_kafka_queue_poll(queue, 15_000);
        let outcome = if event.is_null() {
            Err("no answer within 15 s".to_owned())
        } else if rd::rd_kafka_event_error(event) != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            Err(text(rd::rd_kafka_event_error_string(event)))
        } else {
            let result = rd::rd_kafka_event_AlterUserScramCredentials_result(event);
            let mut count = 0usize;
            let responses = rd::rd_kafka_AlterUserScramCredentials_result_responses(result, &mut count);
            let mut outcome = if count == 1 { Ok(()) } else { Err(format!("{count} answers for one user")) };
            for i in 0..count {
                let error = rd::rd_kafka_AlterUserScramCredentials_result_response_error(*responses.add(i));
                if !error.is_null()
                    && rd::rd_kafka_error_code(error) != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
                {
                    outcome = Err(text(rd::rd_kafka_error_string(error)));
                }
            }
            outcome
        };
        if !event.is_null() {
            rd::rd_kafka_event_destroy(event);
        }
        rd::rd_kafka_UserScramCredentialAlteration_destroy(upsertion);
        rd::rd_kafka_queue_destroy(queue);
        rd::rd_kafka_destroy(client);
        if let Err(e) = outcome {
            panic!("cannot create SCRAM user {user} on {address}: {e}");
        }
    }
}

/// # Safety
/// `ptr` is null or a NUL-terminated string.
unsafe fn text(ptr: *const std::ffi::c_char) -> String {
    if ptr.is_null() {
        return String::new();
    }
    // SAFETY: the caller promises a NUL-terminated string.
    unsafe { CStr::from_ptr(ptr) }.to_string_lossy().into_owned()
}
