//! Producer configuration: reading it from the environment, enforcing the
//! security policy of the deployment environment and mapping it onto librdkafka
//! properties.
//!
//! Secrets (SASL password, TLS key password) stay in [`Sensitive`] until the moment they are
//! written into the librdkafka configuration; [`LibrdkafkaProperties`] masks them in `Debug`.

use std::fmt;

use rdkafka::ClientConfig;

use crate::environment::{self, EnvSource, Environment};
use crate::error::{ErrorCode, OnexError};
use crate::models::kafka::{
    KafkaProducerConfig, KafkaSaslConfig, KafkaSecurityConfig, KafkaSslConfig, SecurityProtocol,
};
use crate::sensitive::Sensitive;

/// Default bootstrap address when neither `REDPANDA_BOOTSTRAP_SERVERS` nor `REDPANDA_HOST` is set.
pub const DEFAULT_BOOTSTRAP_HOST: &str = "omnibase-infra-redpanda";
/// Default port joined to `REDPANDA_HOST`.
pub const DEFAULT_BOOTSTRAP_PORT: u16 = 9092;

/// SASL mechanisms the runtime accepts (all supported by the bundled librdkafka).
pub const SASL_MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

impl SecurityProtocol {
    /// The librdkafka `security.protocol` value.
    pub const fn as_librdkafka(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    /// Parses `PLAINTEXT`, `SSL`, `SASL_PLAINTEXT`, `SASL_SSL` (any case).
    pub fn parse(text: &str) -> Result<Self, OnexError> {
        match text.trim().to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Ok(Self::Plaintext),
            "SSL" => Ok(Self::Ssl),
            "SASL_PLAINTEXT" => Ok(Self::SaslPlaintext),
            "SASL_SSL" => Ok(Self::SaslSsl),
            other => Err(OnexError::configuration(format!(
                "unknown Kafka security protocol '{other}'; expected PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
            ))),
        }
    }

    /// Whether the protocol encrypts the connection.
    pub const fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    /// Whether the protocol authenticates with SASL.
    pub const fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

/// Reads the producer configuration from `env`:
///
/// - `REDPANDA_BOOTSTRAP_SERVERS`, else `REDPANDA_HOST:REDPANDA_PORT`
///   (default `omnibase-infra-redpanda:9092`);
/// - `KAFKA_SECURITY_PROTOCOL`, `KAFKA_SASL_{MECHANISM,USERNAME,PASSWORD}` (or
///   `KAFKA_SASL_PASSWORD_FILE`), `KAFKA_SSL_{CA,CERT,KEY}_LOCATION`, `KAFKA_SSL_KEY_PASSWORD`
///   (or `KAFKA_SSL_KEY_PASSWORD_FILE`);
/// - tuning: `KAFKA_CLIENT_ID`, `KAFKA_ACKS`, `KAFKA_ENABLE_IDEMPOTENCE`, `KAFKA_LINGER_MS`,
///   `KAFKA_BATCH_SIZE`, `KAFKA_COMPRESSION_TYPE`, `KAFKA_DELIVERY_TIMEOUT_MS`,
///   `KAFKA_REQUEST_TIMEOUT_MS`, `KAFKA_MAX_IN_FLIGHT_MESSAGES`.
///
/// The result is checked against the policy of the detected environment
/// ([`validate_for_environment`]).
pub fn producer_config_from_env(env: &dyn EnvSource) -> Result<KafkaProducerConfig, OnexError> {
    let bootstrap = match non_empty(env, "REDPANDA_BOOTSTRAP_SERVERS") {
        Some(servers) => servers,
        None => {
            let host = non_empty(env, "REDPANDA_HOST").unwrap_or_else(|| DEFAULT_BOOTSTRAP_HOST.to_owned());
            let port = environment::parse_or(env, "REDPANDA_PORT", DEFAULT_BOOTSTRAP_PORT)?;
            format!("{host}:{port}")
        }
    };
    let mut config = KafkaProducerConfig::new(bootstrap);
    config.client_id = non_empty(env, "KAFKA_CLIENT_ID");
    if let Some(acks) = non_empty(env, "KAFKA_ACKS") {
        config.acks = acks;
    }
    config.enable_idempotence = environment::flag_or(env, "KAFKA_ENABLE_IDEMPOTENCE", config.enable_idempotence)?;
    config.linger_ms = environment::parse_or(env, "KAFKA_LINGER_MS", config.linger_ms)?;
    config.batch_size = environment::parse_or(env, "KAFKA_BATCH_SIZE", config.batch_size)?;
    config.compression_type = non_empty(env, "KAFKA_COMPRESSION_TYPE");
    config.delivery_timeout_ms = environment::parse_or(env, "KAFKA_DELIVERY_TIMEOUT_MS", config.delivery_timeout_ms)?;
    config.request_timeout_ms = environment::parse_or(env, "KAFKA_REQUEST_TIMEOUT_MS", config.request_timeout_ms)?;
    config.max_in_flight_messages =
        environment::parse_or(env, "KAFKA_MAX_IN_FLIGHT_MESSAGES", config.max_in_flight_messages)?;
    config.security = security_from_env(env)?;
    validate_for_environment(&config, Environment::detect(env))?;
    Ok(config)
}

fn security_from_env(env: &dyn EnvSource) -> Result<KafkaSecurityConfig, OnexError> {
    let protocol = match non_empty(env, "KAFKA_SECURITY_PROTOCOL") {
        Some(text) => SecurityProtocol::parse(&text)?,
        None => SecurityProtocol::Plaintext,
    };
    let ssl = protocol.uses_tls().then(|| -> Result<KafkaSslConfig, OnexError> {
        Ok(KafkaSslConfig {
            ca_location: non_empty(env, "KAFKA_SSL_CA_LOCATION"),
            certificate_location: non_empty(env, "KAFKA_SSL_CERT_LOCATION"),
            key_location: non_empty(env, "KAFKA_SSL_KEY_LOCATION"),
            key_password: secret(env, "KAFKA_SSL_KEY_PASSWORD")?,
            check_hostname: environment::flag_or(env, "KAFKA_SSL_CHECK_HOSTNAME", true)?,
        })
    });
    let sasl = protocol.uses_sasl().then(|| -> Result<KafkaSaslConfig, OnexError> {
        Ok(KafkaSaslConfig {
            mechanism: non_empty(env, "KAFKA_SASL_MECHANISM").unwrap_or_else(|| "PLAIN".to_owned()),
            username: environment::required(env, "KAFKA_SASL_USERNAME")?,
            password: secret(env, "KAFKA_SASL_PASSWORD")?.ok_or_else(|| {
                OnexError::configuration("KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE must be set for SASL")
                    .with_detail("variable", "KAFKA_SASL_PASSWORD")
            })?,
        })
    });
    Ok(KafkaSecurityConfig { security_protocol: protocol, ssl: ssl.transpose()?, sasl: sasl.transpose()? })
}

fn non_empty(env: &dyn EnvSource, key: &str) -> Option<String> {
    env.var(key).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// A secret from `KEY`, or from the file named by `KEY_FILE` (trimmed).
fn secret(env: &dyn EnvSource, key: &str) -> Result<Option<Sensitive<String>>, OnexError> {
    if let Some(value) = env.var(key).filter(|v| !v.is_empty()) {
        return Ok(Some(Sensitive::new(value)));
    }
    let file_key = format!("{key}_FILE");
    match non_empty(env, &file_key) {
        None => Ok(None),
        Some(path) => {
            std::fs::read_to_string(&path).map(|text| Some(Sensitive::new(text.trim().to_owned()))).map_err(|e| {
                OnexError::configuration(format!("cannot read {file_key} ({path}): {}", e.kind()))
                    .with_detail("variable", file_key.clone())
            })
        }
    }
}

/// Enforces the transport policy of the deployment environment:
///
/// - staging and production refuse PLAINTEXT and SASL_PLAINTEXT (`SECURITY_VIOLATION_ERROR`);
/// - production refuses switching off the broker's host name check
///   (`ssl.endpoint.identification.algorithm` must be `https`, `SECURITY_VIOLATION_ERROR`);
/// - production also needs a CA bundle and a client certificate and key, i.e. mTLS
///   (`CONFIGURATION_ERROR` naming what is missing);
/// - development (and test) accepts anything.
///
/// [`producer_properties`] and [`consumer_properties`] apply it with the process's
/// environment ([`Environment::current`]), so every client the runtime makes (the pool's
/// producers, whatever constructor built the pool, subscriptions, the node host's consumer) is
/// held to it; `producer_config_from_env` applies it with the environment it reads.
pub fn validate_for_environment(config: &KafkaProducerConfig, env: Environment) -> Result<(), OnexError> {
    let protocol = config.security.security_protocol;
    if env != Environment::Development && !protocol.uses_tls() {
        return Err(OnexError::new(
            ErrorCode::SecurityViolationError,
            format!(
                "Kafka security protocol {protocol:?} sends data unencrypted, which {env} refuses; use SSL or SASL_SSL"
            ),
        )
        .with_detail("environment", env.as_str())
        .with_detail("security_protocol", protocol.as_librdkafka()));
    }
    if env == Environment::Production {
        let ssl = config.security.ssl.as_ref();
        if ssl.is_some_and(|s| !s.check_hostname) {
            return Err(OnexError::new(
                ErrorCode::SecurityViolationError,
                "production refuses Kafka TLS without host name verification; \
                 unset KAFKA_SSL_CHECK_HOSTNAME (or set it to true)",
            )
            .with_detail("environment", env.as_str())
            .with_detail("variable", "KAFKA_SSL_CHECK_HOSTNAME"));
        }
        let missing: Vec<&str> = [
            ("ssl.ca_location", ssl.and_then(|s| s.ca_location.as_ref()).is_none()),
            ("ssl.certificate_location", ssl.and_then(|s| s.certificate_location.as_ref()).is_none()),
            ("ssl.key_location", ssl.and_then(|s| s.key_location.as_ref()).is_none()),
        ]
        .into_iter()
        .filter_map(|(name, absent)| absent.then_some(name))
        .collect();
        if !missing.is_empty() {
            return Err(OnexError::configuration(format!(
                "production requires mutual TLS with a CA bundle; missing: {}",
                missing.join(", ")
            ))
            .with_detail("environment", env.as_str()));
        }
    }
    Ok(())
}

/// librdkafka properties, in the order they are set. `Debug` masks secret values.
#[derive(Clone, PartialEq, Eq)]
pub struct LibrdkafkaProperties(Vec<(&'static str, PropertyValue)>);

/// A property value: plain text or a secret.
#[derive(Clone, PartialEq, Eq)]
pub enum PropertyValue {
    /// Shown in `Debug`.
    Plain(String),
    /// Masked in `Debug`.
    Secret(Sensitive<String>),
}

impl LibrdkafkaProperties {
    /// The value of `key`, secrets included (for tests and for building the client).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| match v {
            PropertyValue::Plain(text) => text.as_str(),
            PropertyValue::Secret(secret) => secret.expose().as_str(),
        })
    }

    /// All property names.
    pub fn keys(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.0.iter().map(|(k, _)| *k)
    }

    /// A librdkafka configuration with every property set.
    pub fn to_client_config(&self) -> ClientConfig {
        let mut client = ClientConfig::new();
        for (key, value) in &self.0 {
            let text = match value {
                PropertyValue::Plain(text) => text.as_str(),
                PropertyValue::Secret(secret) => secret.expose().as_str(),
            };
            client.set(*key, text);
        }
        client
    }

    fn plain(&mut self, key: &'static str, value: impl Into<String>) {
        self.0.push((key, PropertyValue::Plain(value.into())));
    }

    fn secret(&mut self, key: &'static str, value: &Sensitive<String>) {
        self.0.push((key, PropertyValue::Secret(value.clone())));
    }
}

impl fmt::Debug for LibrdkafkaProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (key, value) in &self.0 {
            match value {
                PropertyValue::Plain(text) => map.entry(key, text),
                PropertyValue::Secret(_) => map.entry(key, &"***"),
            };
        }
        map.finish()
    }
}

/// Maps `config` onto librdkafka properties. Invalid combinations are refused here, with a
/// message naming the field, rather than by librdkafka at creation time, and so is a
/// configuration the process's environment forbids ([`validate_for_environment`]).
pub fn producer_properties(config: &KafkaProducerConfig) -> Result<LibrdkafkaProperties, OnexError> {
    check(config)?;
    validate_for_environment(config, Environment::current())?;
    let mut props = LibrdkafkaProperties(Vec::new());
    props.plain("bootstrap.servers", config.bootstrap_servers.trim());
    if let Some(client_id) = &config.client_id {
        props.plain("client.id", client_id.as_str());
    }
    props.plain("acks", config.acks.as_str());
    props.plain("enable.idempotence", config.enable_idempotence.to_string());
    props.plain("linger.ms", config.linger_ms.to_string());
    props.plain("batch.size", config.batch_size.to_string());
    props.plain("compression.type", config.compression_type.as_deref().unwrap_or("none"));
    props.plain("message.max.bytes", config.max_request_size.to_string());
    props.plain("request.timeout.ms", config.request_timeout_ms.to_string());
    // librdkafka's `request.timeout.ms` is the broker's ack timeout only; the client waits for
    // an answer `socket.timeout.ms` (60 s unless set), so a lost answer was never retried
    // within a shorter delivery timeout. The request timeout bounds the client's wait too.
    props.plain("socket.timeout.ms", config.request_timeout_ms.clamp(10, 300_000).to_string());
    props.plain("message.timeout.ms", config.delivery_timeout_ms.to_string());
    // librdkafka's queue must hold everything the in-flight bound lets through, so QueueFull
    // can only come from the byte limit. Twice the bound: a reported message gives its
    // in-flight slot back in the delivery callback, but leaves librdkafka's count only when
    // librdkafka frees it after the callback, so up to one bound's worth of reported messages
    // (the report batch being handed over) can still count while new ones are admitted.
    let queue_messages = u64::from(config.max_in_flight_messages.max(1)) * 2;
    props.plain("queue.buffering.max.messages", queue_messages.min(i32::MAX as u64).to_string());
    apply_security(&mut props, &config.security)?;
    Ok(props)
}

/// Consumer properties for `group_id` on the cluster (and with the credentials) of `config`:
/// at-least-once delivery, i.e. offsets are stored only when the application says so
/// (`enable.auto.offset.store=false`) and committed in the background from the stored ones.
pub fn consumer_properties(config: &KafkaProducerConfig, group_id: &str) -> Result<LibrdkafkaProperties, OnexError> {
    check(config)?;
    validate_for_environment(config, Environment::current())?;
    if group_id.trim().is_empty() {
        return Err(OnexError::configuration("a consumer group id must not be empty"));
    }
    let mut props = LibrdkafkaProperties(Vec::new());
    props.plain("bootstrap.servers", config.bootstrap_servers.trim());
    if let Some(client_id) = &config.client_id {
        props.plain("client.id", client_id.as_str());
    }
    props.plain("group.id", group_id);
    props.plain("enable.auto.commit", "true");
    props.plain("auto.commit.interval.ms", "1000");
    props.plain("enable.auto.offset.store", "false");
    props.plain("auto.offset.reset", "earliest");
    props.plain("session.timeout.ms", "10000");
    apply_security(&mut props, &config.security)?;
    Ok(props)
}

fn check(config: &KafkaProducerConfig) -> Result<(), OnexError> {
    let servers: Vec<&str> = config.bootstrap_servers.split(',').map(str::trim).collect();
    if servers.iter().any(|s| s.is_empty() || !s.contains(':')) {
        return Err(OnexError::configuration(format!(
            "bootstrap_servers must be a comma-separated host:port list, got '{}'",
            config.bootstrap_servers
        )));
    }
    if config.enable_idempotence && !matches!(config.acks.as_str(), "all" | "-1") {
        return Err(OnexError::configuration(format!(
            "enable_idempotence requires acks=all, but acks is '{}'",
            config.acks
        )));
    }
    if !matches!(config.acks.as_str(), "all" | "-1" | "0" | "1") {
        return Err(OnexError::configuration(format!("acks must be all, -1, 0 or 1, got '{}'", config.acks)));
    }
    if config.delivery_timeout_ms == 0 {
        return Err(OnexError::configuration("delivery_timeout_ms must be finite and positive, got 0"));
    }
    if config.max_in_flight_messages == 0 || config.max_in_flight_messages > 10_000_000 {
        return Err(OnexError::configuration(format!(
            "max_in_flight_messages must be between 1 and 10000000, got {}",
            config.max_in_flight_messages
        )));
    }
    Ok(())
}

fn apply_security(props: &mut LibrdkafkaProperties, security: &KafkaSecurityConfig) -> Result<(), OnexError> {
    let protocol = security.security_protocol;
    props.plain("security.protocol", protocol.as_librdkafka());
    if protocol.uses_tls() {
        let ssl = security.ssl.clone().unwrap_or_default();
        if let Some(ca) = &ssl.ca_location {
            props.plain("ssl.ca.location", ca.as_str());
        }
        match (&ssl.certificate_location, &ssl.key_location) {
            (Some(cert), Some(key)) => {
                props.plain("ssl.certificate.location", cert.as_str());
                props.plain("ssl.key.location", key.as_str());
            }
            (None, None) => {}
            _ => {
                return Err(OnexError::configuration(
                    "mutual TLS needs both ssl.certificate_location and ssl.key_location",
                ));
            }
        }
        if let Some(password) = &ssl.key_password {
            props.secret("ssl.key.password", password);
        }
        props.plain("ssl.endpoint.identification.algorithm", if ssl.check_hostname { "https" } else { "none" });
    } else if security.ssl.is_some() {
        return Err(OnexError::configuration(format!(
            "TLS settings are given but security protocol {protocol:?} does not use TLS"
        )));
    }
    if protocol.uses_sasl() {
        let sasl = security.sasl.as_ref().ok_or_else(|| {
            OnexError::configuration(format!(
                "security protocol {protocol:?} needs SASL settings (mechanism, username, password)"
            ))
        })?;
        let mechanism = sasl.mechanism.trim().to_ascii_uppercase();
        if !SASL_MECHANISMS.contains(&mechanism.as_str()) {
            return Err(OnexError::configuration(format!(
                "unsupported SASL mechanism '{}'; expected one of {}",
                sasl.mechanism,
                SASL_MECHANISMS.join(", ")
            )));
        }
        if sasl.username.trim().is_empty() {
            return Err(OnexError::configuration("SASL username must not be empty"));
        }
        props.plain("sasl.mechanism", mechanism);
        props.plain("sasl.username", sasl.username.as_str());
        props.secret("sasl.password", &sasl.password);
    } else if security.sasl.is_some() {
        return Err(OnexError::configuration(format!(
            "SASL settings are given but security protocol {protocol:?} does not use SASL"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::environment::MapEnv;

    fn sasl_ssl_env(environment: &str) -> MapEnv {
        MapEnv::from_pairs([
            ("ENVIRONMENT", environment),
            ("REDPANDA_BOOTSTRAP_SERVERS", "k1:9093,k2:9093"),
            ("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
            ("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
            ("KAFKA_SASL_USERNAME", "svc"),
            ("KAFKA_SASL_PASSWORD", "hunter2"),
            ("KAFKA_SSL_CA_LOCATION", "/certs/ca.pem"),
            ("KAFKA_SSL_CERT_LOCATION", "/certs/client.pem"),
            ("KAFKA_SSL_KEY_LOCATION", "/certs/client.key"),
            ("KAFKA_SSL_KEY_PASSWORD", "keypass"),
        ])
    }

    #[test]
    fn defaults_are_safe_and_finite() {
        let config = producer_config_from_env(&MapEnv::default()).unwrap();
        assert_eq!(config.bootstrap_servers, "omnibase-infra-redpanda:9092");
        let props = producer_properties(&config).unwrap();
        assert_eq!(props.get("acks"), Some("all"));
        assert_eq!(props.get("enable.idempotence"), Some("true"));
        assert_eq!(props.get("message.timeout.ms"), Some("30000"));
        assert_eq!(props.get("security.protocol"), Some("plaintext"));
        assert_eq!(props.get("sasl.password"), None);
        // Room for reported messages librdkafka has not freed yet, beside the in-flight bound.
        let queue = (u64::from(config.max_in_flight_messages) * 2).to_string();
        assert_eq!(props.get("queue.buffering.max.messages"), Some(queue.as_str()));
        let env = MapEnv::from_pairs([("REDPANDA_HOST", "broker"), ("REDPANDA_PORT", "19092")]);
        assert_eq!(producer_config_from_env(&env).unwrap().bootstrap_servers, "broker:19092");
    }

    #[test]
    fn sasl_ssl_maps_every_property_and_hides_secrets() {
        let config = producer_config_from_env(&sasl_ssl_env("production")).unwrap();
        let props = producer_properties(&config).unwrap();
        assert_eq!(props.get("bootstrap.servers"), Some("k1:9093,k2:9093"));
        assert_eq!(props.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(props.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(props.get("sasl.username"), Some("svc"));
        assert_eq!(props.get("sasl.password"), Some("hunter2"));
        assert_eq!(props.get("ssl.ca.location"), Some("/certs/ca.pem"));
        assert_eq!(props.get("ssl.certificate.location"), Some("/certs/client.pem"));
        assert_eq!(props.get("ssl.key.location"), Some("/certs/client.key"));
        assert_eq!(props.get("ssl.key.password"), Some("keypass"));
        assert_eq!(props.get("ssl.endpoint.identification.algorithm"), Some("https"));
        let client = props.to_client_config();
        assert_eq!(client.get("sasl.password"), Some("hunter2"));
        for shown in [format!("{props:?}"), format!("{config:?}")] {
            assert!(!shown.contains("hunter2") && !shown.contains("keypass"), "{shown}");
        }
    }

    #[test]
    fn each_protocol_sets_only_its_properties() {
        let mut config = KafkaProducerConfig::new("k:9092");
        config.security.security_protocol = SecurityProtocol::Ssl;
        config.security.ssl = Some(KafkaSslConfig { ca_location: Some("/ca".into()), ..Default::default() });
        let props = producer_properties(&config).unwrap();
        assert_eq!(props.get("security.protocol"), Some("ssl"));
        assert!(props.keys().all(|k| !k.starts_with("sasl.")));

        config.security.security_protocol = SecurityProtocol::SaslPlaintext;
        config.security.ssl = None;
        config.security.sasl = Some(KafkaSaslConfig {
            mechanism: "plain".into(),
            username: "u".into(),
            password: Sensitive::new("p".into()),
        });
        let props = producer_properties(&config).unwrap();
        assert_eq!(props.get("security.protocol"), Some("sasl_plaintext"));
        assert_eq!(props.get("sasl.mechanism"), Some("PLAIN"));
        assert!(props.keys().all(|k| !k.starts_with("ssl.")));
    }

    #[test]
    fn inconsistent_settings_are_refused_with_the_field_named() {
        let mut config = KafkaProducerConfig::new("k:9092");
        config.acks = "1".into();
        assert!(producer_properties(&config).unwrap_err().message().contains("acks"));
        config.enable_idempotence = false;
        assert!(producer_properties(&config).is_ok());
        config.security.security_protocol = SecurityProtocol::SaslSsl;
        let err = producer_properties(&config).unwrap_err();
        assert!(err.message().contains("SASL"), "{err}");
        let config = KafkaProducerConfig::new("no-port");
        assert!(producer_properties(&config).unwrap_err().message().contains("host:port"));
        let env = MapEnv::from_pairs([("KAFKA_SECURITY_PROTOCOL", "SASL_SSL"), ("KAFKA_SASL_USERNAME", "u")]);
        let err = producer_config_from_env(&env).unwrap_err();
        assert!(err.message().contains("KAFKA_SASL_PASSWORD"), "{err}");
    }

    #[test]
    fn staging_and_production_refuse_plaintext() {
        for name in ["staging", "production"] {
            let env = MapEnv::from_pairs([("ENVIRONMENT", name), ("REDPANDA_BOOTSTRAP_SERVERS", "k:9092")]);
            let err = producer_config_from_env(&env).unwrap_err();
            assert_eq!(err.code(), ErrorCode::SecurityViolationError, "{name}: {err}");
        }
        let mut env = sasl_ssl_env("production");
        env.0.remove("KAFKA_SSL_CERT_LOCATION");
        let err = producer_config_from_env(&env).unwrap_err();
        assert_eq!(err.code(), ErrorCode::ConfigurationError);
        assert!(err.message().contains("ssl.certificate_location"), "{err}");
        let mut env = sasl_ssl_env("staging");
        env.0.remove("KAFKA_SSL_CERT_LOCATION");
        env.0.remove("KAFKA_SSL_KEY_LOCATION");
        assert!(producer_config_from_env(&env).is_ok(), "staging needs TLS, not mTLS");
    }

    #[test]
    fn production_refuses_tls_without_host_name_verification() {
        let mut env = sasl_ssl_env("production");
        env.0.insert("KAFKA_SSL_CHECK_HOSTNAME".into(), "false".into());
        let err = producer_config_from_env(&env).unwrap_err();
        assert_eq!(err.code(), ErrorCode::SecurityViolationError, "{err}");
        assert!(err.message().contains("KAFKA_SSL_CHECK_HOSTNAME"), "{err}");
        env.0.insert("ENVIRONMENT".into(), "staging".into());
        let config = producer_config_from_env(&env).unwrap();
        let props = producer_properties(&config).unwrap();
        assert_eq!(props.get("ssl.endpoint.identification.algorithm"), Some("none"), "staging may turn it off");
        let mut env = sasl_ssl_env("production");
        env.0.remove("KAFKA_SSL_CA_LOCATION");
        let err = producer_config_from_env(&env).unwrap_err();
        assert!(err.message().contains("ssl.ca_location"), "{err}");
    }

    #[test]
    fn secrets_can_come_from_files() {
        let dir = std::env::temp_dir().join(format!("onex-kafka-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("sasl");
        std::fs::write(&file, "from-file\n").unwrap();
        let env = MapEnv::from_pairs([
            ("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT".to_owned()),
            ("KAFKA_SASL_USERNAME", "u".to_owned()),
            ("KAFKA_SASL_PASSWORD_FILE", file.display().to_string()),
        ]);
        let config = producer_config_from_env(&env).unwrap();
        assert_eq!(config.security.sasl.unwrap().password.expose(), "from-file");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
