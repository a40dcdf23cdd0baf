//! Distributed-tracing shared models, and the tracing settings read from the environment.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::environment::{self, EnvSource, Environment};
use crate::error::OnexError;
use crate::sensitive::Sensitive;

/// Where spans go when `OTEL_EXPORTER_OTLP_ENDPOINT` is not set (an OTLP/gRPC collector on
/// this machine).
pub const DEFAULT_OTLP_ENDPOINT: &str = "http://localhost:4317";
/// `service.name` of every span.
pub const SERVICE_NAME: &str = "omnibase_infrastructure";
/// `service.version` of every span.
pub const SERVICE_VERSION: &str = "1.0.0";

/// Span kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpanKind {
    /// In-process work.
    Internal,
    /// A call to a server (database).
    Client,
    /// Serving a call.
    Server,
    /// Sending a message.
    Producer,
    /// Receiving a message.
    Consumer,
}

/// How spans travel to the collector (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OtlpProtocol {
    /// `grpc`, the default.
    #[default]
    #[serde(rename = "grpc")]
    Grpc,
    /// `http/protobuf`.
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// Tracing settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceConfiguration {
    /// OTLP endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub otlp_endpoint: String,
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`: `grpc` (default) or `http/protobuf`.
    #[serde(default)]
    pub otlp_protocol: OtlpProtocol,
    /// Headers sent to it (`OTEL_EXPORTER_OTLP_HEADERS`, "k=v,…"); values may be secrets.
    #[serde(default)]
    pub otlp_headers: BTreeMap<String, crate::sensitive::Sensitive<String>>,
    /// Sampling ratio in [0, 1].
    pub sample_rate: f64,
    /// `service.name`.
    pub service_name: String,
    /// `service.version`.
    pub service_version: String,
    /// `deployment.environment`.
    pub environment: String,
    /// Spans of the PostgreSQL pool's statements (`OTEL_ENABLE_DB_INSTRUMENTATION`).
    #[serde(default = "enabled")]
    pub instrument_database: bool,
    /// Spans of Kafka sends and consumption, and the trace context they carry in message
    /// headers and event envelopes (`OTEL_ENABLE_KAFKA_INSTRUMENTATION`).
    #[serde(default = "enabled")]
    pub instrument_kafka: bool,
}

fn enabled() -> bool {
    true
}

impl TraceConfiguration {
    /// The sampling ratio of `environment` when `OTEL_TRACE_SAMPLE_RATE` is not set:
    /// production 0.1, staging 0.5, development 1.0.
    pub const fn default_sample_rate(environment: Environment) -> f64 {
        match environment {
            Environment::Production => 0.1,
            Environment::Staging => 0.5,
            Environment::Development => 1.0,
        }
    }

    /// The settings of `environment` from `OTEL_EXPORTER_OTLP_ENDPOINT` (an `http://` or
    /// `https://` URL with a host), `OTEL_EXPORTER_OTLP_PROTOCOL`, `OTEL_EXPORTER_OTLP_HEADERS`
    /// (`key=value` pairs separated by commas, values percent-encoded) and
    /// `OTEL_TRACE_SAMPLE_RATE` (a number, clamped to [0, 1]); `OTEL_SERVICE_NAME` and
    /// `OTEL_SERVICE_VERSION` replace [`SERVICE_NAME`] and [`SERVICE_VERSION`] when set;
    /// `OTEL_ENABLE_DB_INSTRUMENTATION` and `OTEL_ENABLE_KAFKA_INSTRUMENTATION` (`true` or
    /// `false`, default `true`) switch the PostgreSQL and Kafka spans. A value
    /// that does not parse is a `CONFIGURATION_ERROR` naming the variable and what is expected;
    /// a header's value is never repeated in it (headers carry credentials).
    pub fn from_env(env: &dyn EnvSource, environment: Environment) -> Result<Self, OnexError> {
        let set = |key: &str| env.var(key).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let otlp_endpoint = match set("OTEL_EXPORTER_OTLP_ENDPOINT") {
            Some(url) => match endpoint_problem(&url) {
                Some(problem) => return Err(config_error("OTEL_EXPORTER_OTLP_ENDPOINT", problem)),
                None => url,
            },
            None => DEFAULT_OTLP_ENDPOINT.to_owned(),
        };
        let otlp_protocol = match set("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() {
            None | Some("grpc") => OtlpProtocol::Grpc,
            Some("http/protobuf") => OtlpProtocol::HttpProtobuf,
            Some(other) => {
                return Err(config_error(
                    "OTEL_EXPORTER_OTLP_PROTOCOL",
                    format!("is `{other}`; use grpc or http/protobuf"),
                ));
            }
        };
        let otlp_headers = match set("OTEL_EXPORTER_OTLP_HEADERS") {
            Some(text) => parse_headers(&text)?,
            None => BTreeMap::new(),
        };
        let rate: f64 = environment::parse_or(env, "OTEL_TRACE_SAMPLE_RATE", Self::default_sample_rate(environment))?;
        if rate.is_nan() {
            return Err(config_error("OTEL_TRACE_SAMPLE_RATE", "is NaN; use a number from 0 to 1".to_owned()));
        }
        Ok(Self {
            otlp_endpoint,
            otlp_protocol,
            otlp_headers,
            sample_rate: rate.clamp(0.0, 1.0),
            service_name: set("OTEL_SERVICE_NAME").unwrap_or_else(|| SERVICE_NAME.to_owned()),
            service_version: set("OTEL_SERVICE_VERSION").unwrap_or_else(|| SERVICE_VERSION.to_owned()),
            environment: environment.as_str().to_owned(),
            instrument_database: environment::flag_or(env, "OTEL_ENABLE_DB_INSTRUMENTATION", true)?,
            instrument_kafka: environment::flag_or(env, "OTEL_ENABLE_KAFKA_INSTRUMENTATION", true)?,
        })
    }

    /// Checks settings that did not come from [`TraceConfiguration::from_env`] (a request, a
    /// file) by the same rules: the endpoint is an `http://` or `https://` URL with a host and
    /// without credentials, header names are HTTP tokens and values printable ASCII, the sample
    /// rate is a number in [0, 1], and the service name is not blank. A problem is a
    /// `CONFIGURATION_ERROR` naming the field (`configuration.otlp_endpoint`, …) and what is
    /// expected; it never repeats a header's value.
    pub fn validate(&self) -> Result<(), OnexError> {
        let invalid = |field: &str, problem: String| {
            let field = format!("configuration.{field}");
            OnexError::configuration(format!("{field} {problem}")).with_detail("field", field)
        };
        if let Some(problem) = endpoint_problem(self.otlp_endpoint.trim()) {
            return Err(invalid("otlp_endpoint", problem));
        }
        for (name, value) in &self.otlp_headers {
            if let Some(problem) = header_problem(name, value.expose()) {
                return Err(invalid("otlp_headers", problem));
            }
        }
        if !(0.0..=1.0).contains(&self.sample_rate) {
            return Err(invalid("sample_rate", "must be a number from 0 to 1".to_owned()));
        }
        if self.service_name.trim().is_empty() {
            return Err(invalid("service_name", "is blank; name the service the spans come from".to_owned()));
        }
        Ok(())
    }
}

/// Whether `c` may appear in an HTTP header name.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

fn config_error(variable: &str, problem: String) -> OnexError {
    OnexError::configuration(format!("environment variable {variable} {problem}")).with_detail("variable", variable)
}

/// What is wrong with `url` as an OTLP endpoint, if anything: it must be
/// `http(s)://host[:port][/path]`, without credentials, spaces or control characters. The one
/// rule for settings from the environment, from a request ([`TraceConfiguration::validate`])
/// and at start-up (`crate::telemetry::Tracing`). The message never repeats the URL: a
/// mistyped one may hold a credential.
pub(crate) fn endpoint_problem(url: &str) -> Option<String> {
    let bad = |problem: &str| Some(format!("{problem}; use a URL such as http://localhost:4317"));
    let Some(rest) = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")) else {
        return bad("must start with http:// or https://");
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("must not contain spaces or control characters");
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // Credentials in the URL would end up in logs; they belong in OTEL_EXPORTER_OTLP_HEADERS.
    if authority.contains('@') {
        return bad("must not hold credentials (put them in OTEL_EXPORTER_OTLP_HEADERS)");
    }
    // An IPv6 host is bracketed: `[::1]` or `[::1]:4317`.
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        match bracketed.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, port)) => match port.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return bad("has text after its IPv6 host"),
            },
            None => return bad("has an unclosed IPv6 host"),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return bad("has no host");
    }
    if let Some(port) = port
        && port.parse::<u16>().map_or(true, |port| port == 0)
    {
        return bad("has an invalid port");
    }
    None
}

/// What is wrong with an OTLP header, if anything: its name must be an HTTP token and its value
/// printable ASCII (what both gRPC metadata and HTTP/1.1 carry). The message names neither the
/// value nor a malformed name (a secret may sit in the name position of a bad entry).
pub(crate) fn header_problem(name: &str, value: &str) -> Option<String> {
    if name.is_empty() || !name.chars().all(is_token_char) {
        return Some("has an invalid header name (letters, digits and !#$%&'*+-.^_`|~ only)".to_owned());
    }
    if !value.chars().all(|c| c == '\t' || (' '..='~').contains(&c)) {
        return Some(format!(
            "has a value for `{name}` with characters a header cannot carry (control or non-ASCII); percent-encode it"
        ));
    }
    None
}

/// `k=v,k2=v2` with percent-encoded values.
fn parse_headers(text: &str) -> Result<BTreeMap<String, Sensitive<String>>, OnexError> {
    const KEY: &str = "OTEL_EXPORTER_OTLP_HEADERS";
    let mut headers = BTreeMap::new();
    for (n, pair) in text.split(',').enumerate().filter(|(_, p)| !p.trim().is_empty()) {
        let Some((name, value)) = pair.split_once('=') else {
            return Err(config_error(KEY, format!("entry {} has no `=`; use key=value,key2=value2", n + 1)));
        };
        let name = name.trim();
        if name.is_empty() || !name.chars().all(is_token_char) {
            return Err(config_error(KEY, format!("entry {} has an invalid header name", n + 1)));
        }
        let value = percent_decode(value.trim())
            .ok_or_else(|| config_error(KEY, format!("the value of `{name}` is not valid percent-encoded UTF-8")))?;
        if let Some(problem) = header_problem(name, &value) {
            return Err(config_error(KEY, problem));
        }
        headers.insert(name.to_ascii_lowercase(), Sensitive::new(value));
    }
    Ok(headers)
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::environment::MapEnv;
    use crate::error::ErrorCode;

    fn env(pairs: &[(&str, &str)]) -> MapEnv {
        MapEnv(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
    }

    #[test]
    fn defaults_follow_the_environment() {
        let prod = TraceConfiguration::from_env(&env(&[]), Environment::Production).unwrap();
        assert_eq!(prod.otlp_endpoint, DEFAULT_OTLP_ENDPOINT);
        assert_eq!(prod.otlp_protocol, OtlpProtocol::Grpc);
        assert_eq!((prod.sample_rate, prod.environment.as_str()), (0.1, "production"));
        assert_eq!((prod.service_name.as_str(), prod.service_version.as_str()), (SERVICE_NAME, SERVICE_VERSION));
        let staging = TraceConfiguration::from_env(&env(&[]), Environment::Staging).unwrap();
        assert_eq!(staging.sample_rate, 0.5);
        let dev = TraceConfiguration::from_env(&env(&[]), Environment::Development).unwrap();
        assert_eq!(dev.sample_rate, 1.0);
        assert!(dev.instrument_database && dev.instrument_kafka);
    }

    #[test]
    fn database_and_kafka_spans_are_switched_by_their_variables() {
        let off = env(&[("OTEL_ENABLE_DB_INSTRUMENTATION", "false"), ("OTEL_ENABLE_KAFKA_INSTRUMENTATION", "0")]);
        let config = TraceConfiguration::from_env(&off, Environment::Development).unwrap();
        assert!(!config.instrument_database && !config.instrument_kafka);
        let bad = env(&[("OTEL_ENABLE_KAFKA_INSTRUMENTATION", "maybe")]);
        let err = TraceConfiguration::from_env(&bad, Environment::Development).unwrap_err();
        assert!(err.message().contains("OTEL_ENABLE_KAFKA_INSTRUMENTATION"), "{}", err.message());
        // Settings written before the switches existed keep both on.
        let old: TraceConfiguration = serde_json::from_value(serde_json::json!({
            "otlp_endpoint": DEFAULT_OTLP_ENDPOINT, "sample_rate": 1.0, "service_name": "s",
            "service_version": "1", "environment": "development"
        }))
        .unwrap();
        assert!(old.instrument_database && old.instrument_kafka);
    }

    #[test]
    fn the_sample_rate_is_overridden_and_clamped() {
        let rate = |v: &str| {
            TraceConfiguration::from_env(&env(&[("OTEL_TRACE_SAMPLE_RATE", v)]), Environment::Production)
                .map(|c| c.sample_rate)
        };
        assert_eq!(rate("0.25").unwrap(), 0.25);
        assert_eq!(rate("7").unwrap(), 1.0);
        assert_eq!(rate("-1").unwrap(), 0.0);
        for bad in ["often", "NaN"] {
            let err = rate(bad).unwrap_err();
            assert_eq!(err.code(), ErrorCode::ConfigurationError);
            assert!(err.message().contains("OTEL_TRACE_SAMPLE_RATE"), "{err}");
        }
    }

    #[test]
    fn endpoints_and_protocols_are_checked() {
        let endpoint = |v: &str| {
            TraceConfiguration::from_env(&env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", v)]), Environment::Development)
                .map(|c| c.otlp_endpoint)
        };
        assert_eq!(endpoint("https://otel.example:4318/v1/traces").unwrap(), "https://otel.example:4318/v1/traces");
        assert_eq!(endpoint("http://[::1]:4317").unwrap(), "http://[::1]:4317");
        assert_eq!(endpoint("http://[::1]").unwrap(), "http://[::1]");
        for bad in ["localhost:4317", "http://", "http://host:0", "http://host:port", "https://user:pw@host:4317"] {
            let err = endpoint(bad).unwrap_err();
            assert!(err.message().contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{bad}: {err}");
            assert!(!err.message().contains("pw@"), "{err}");
        }
        let protocol = |v: &str| {
            TraceConfiguration::from_env(&env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", v)]), Environment::Development)
                .map(|c| c.otlp_protocol)
        };
        assert_eq!(protocol("http/protobuf").unwrap(), OtlpProtocol::HttpProtobuf);
        assert!(protocol("http/json").unwrap_err().message().contains("grpc or http/protobuf"));
    }

    #[test]
    fn headers_are_parsed_decoded_and_never_shown() {
        let parse = |v: &str| parse_headers(v);
        let headers = parse("Authorization=Bearer%20s3cr3t, x-tenant = acme ,").unwrap();
        assert_eq!(headers["authorization"].expose(), "Bearer s3cr3t");
        assert_eq!(headers["x-tenant"].expose(), "acme");
        assert!(!format!("{headers:?}").contains("s3cr3t"));
        for bad in ["novalue", "=v", "bad name=v", "k=%zz", "k=%ff%fe"] {
            let err = parse(bad).unwrap_err();
            assert!(err.message().contains("OTEL_EXPORTER_OTLP_HEADERS"), "{bad}: {err}");
            assert!(!err.message().contains("zz") && !err.message().contains("ff"), "{err}");
        }
    }

    #[test]
    fn the_service_identity_comes_from_otel_service_name_and_version() {
        let config = TraceConfiguration::from_env(
            &env(&[("OTEL_SERVICE_NAME", " billing "), ("OTEL_SERVICE_VERSION", "2.3.4")]),
            Environment::Staging,
        )
        .unwrap();
        assert_eq!((config.service_name.as_str(), config.service_version.as_str()), ("billing", "2.3.4"));
        let blank = TraceConfiguration::from_env(&env(&[("OTEL_SERVICE_NAME", "  ")]), Environment::Staging).unwrap();
        assert_eq!(blank.service_name, SERVICE_NAME);
    }

    #[test]
    fn a_configuration_from_elsewhere_is_checked_by_the_same_rules() {
        let good = TraceConfiguration::from_env(&env(&[]), Environment::Development).unwrap();
        good.validate().unwrap();
        let problem = |change: &dyn Fn(&mut TraceConfiguration)| {
            let mut config = good.clone();
            change(&mut config);
            let err = config.validate().unwrap_err();
            assert_eq!(err.code(), ErrorCode::ConfigurationError);
            err.message().to_owned()
        };
        assert!(problem(&|c| c.otlp_endpoint = "collector:4317".into()).starts_with("configuration.otlp_endpoint"));
        assert!(problem(&|c| c.otlp_endpoint = "https://".into()).contains("has no host"));
        let credentials = problem(&|c| c.otlp_endpoint = "https://me:hunter2@otel.example".into());
        assert!(!credentials.contains("hunter2"), "{credentials}");
        assert!(problem(&|c| c.sample_rate = f64::NAN).starts_with("configuration.sample_rate"));
        assert!(problem(&|c| c.sample_rate = 1.5).starts_with("configuration.sample_rate"));
        assert!(problem(&|c| c.service_name = " ".into()).starts_with("configuration.service_name"));
        let header = problem(&|c| {
            c.otlp_headers.insert("authorization".into(), Sensitive::new("Bearer s3cr3t\n".into()));
        });
        assert!(header.contains("authorization") && !header.contains("s3cr3t"), "{header}");
        assert!(
            problem(&|c| {
                c.otlp_headers.insert("bad name".into(), Sensitive::new("v".into()));
            })
            .contains("invalid header name")
        );
    }
}
