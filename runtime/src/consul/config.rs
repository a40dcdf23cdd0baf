//! Where Consul is and how the client talks to it.
//!
//! | Variable | Meaning | Default |
//! |---|---|---|
//! | `CONSUL_HOST` | host name or IP address of the agent | required |
//! | `CONSUL_PORT` | its HTTP port | required |
//! | `CONSUL_DATACENTER` | datacenter every request names (`dc=`) | required |
//! | `CONSUL_HTTP_TOKEN` | ACL token, sent as `X-Consul-Token` | none |
//! | `CONSUL_TIMEOUT_SECONDS` | limit of one request, connection included | 10 |
//! | `CONSUL_POOL_SIZE` | requests in flight at most, idle connections kept | 10 |
//! | `CONSUL_SCHEME` | `http` only (see below) | `http` |
//!
//! The client speaks plain HTTP: no TLS connector is part of the runtime's HTTP stack, so
//! `CONSUL_SCHEME=https` is a configuration error rather than a silent downgrade. Reach a
//! TLS-only Consul through its local agent on loopback, as Consul recommends.

use std::time::Duration;

use crate::environment::{self, EnvSource};
use crate::error::OnexError;
use crate::models::consul::ConsulServiceConfig;
use crate::sensitive::Sensitive;

/// `CONSUL_HOST`.
pub const HOST_VARIABLE: &str = "CONSUL_HOST";
/// `CONSUL_PORT`.
pub const PORT_VARIABLE: &str = "CONSUL_PORT";
/// `CONSUL_DATACENTER`.
pub const DATACENTER_VARIABLE: &str = "CONSUL_DATACENTER";
/// `CONSUL_HTTP_TOKEN` (the name Consul's own CLI reads).
pub const TOKEN_VARIABLE: &str = "CONSUL_HTTP_TOKEN";
/// `CONSUL_TIMEOUT_SECONDS`.
pub const TIMEOUT_VARIABLE: &str = "CONSUL_TIMEOUT_SECONDS";
/// `CONSUL_POOL_SIZE`.
pub const POOL_SIZE_VARIABLE: &str = "CONSUL_POOL_SIZE";
/// `CONSUL_SCHEME`.
pub const SCHEME_VARIABLE: &str = "CONSUL_SCHEME";

/// The request timeout when none is configured.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait for a TCP connection, unless the request timeout is shorter.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests in flight at most (and idle connections kept) when none is configured.
pub const DEFAULT_POOL_SIZE: usize = 10;

/// Where Consul is and the client's limits. `Debug` never shows the token.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsulConfig {
    /// Host name or IP address of the Consul agent.
    pub host: String,
    /// Its HTTP port.
    pub port: u16,
    /// The datacenter every request names.
    pub datacenter: String,
    /// The ACL token, if ACLs are on.
    pub token: Option<Sensitive<String>>,
    /// Limit of one request from sending to the last byte of the answer, the connection and
    /// the wait for a free slot included. A blocking query gets its wait on top.
    pub request_timeout: Duration,
    /// Limit of opening one TCP connection.
    pub connect_timeout: Duration,
    /// Requests in flight at most; also the idle connections kept open.
    pub pool_size: usize,
}

impl ConsulConfig {
    /// Reads the variables in the module's table. A missing required variable, or a value
    /// that does not parse, is a `CONFIGURATION_ERROR` naming the variable.
    pub fn from_env(env: &dyn EnvSource) -> Result<Self, OnexError> {
        let host = environment::required(env, HOST_VARIABLE)?;
        let port_raw = environment::required(env, PORT_VARIABLE)?;
        let port = port_raw.trim().parse::<u16>().ok().filter(|port| *port != 0).ok_or_else(|| {
            OnexError::configuration(format!("{PORT_VARIABLE} must be a port number in 1..=65535, got '{port_raw}'"))
                .with_detail("variable", PORT_VARIABLE)
        })?;
        let datacenter = environment::required(env, DATACENTER_VARIABLE)?;
        if let Some(scheme) = env.var(SCHEME_VARIABLE).map(|s| s.trim().to_ascii_lowercase()) {
            match scheme.as_str() {
                "" | "http" => {}
                "https" => {
                    return Err(OnexError::configuration(format!(
                        "{SCHEME_VARIABLE}=https is not supported: the Consul client speaks plain HTTP (no TLS \
                         connector in the runtime); point {HOST_VARIABLE} at a local Consul agent instead"
                    ))
                    .with_detail("variable", SCHEME_VARIABLE));
                }
                other => {
                    return Err(OnexError::configuration(format!("{SCHEME_VARIABLE} must be http, got '{other}'"))
                        .with_detail("variable", SCHEME_VARIABLE));
                }
            }
        }
        let timeout_seconds = environment::parse_or(env, TIMEOUT_VARIABLE, DEFAULT_REQUEST_TIMEOUT.as_secs_f64())?;
        if !(timeout_seconds.is_finite() && timeout_seconds > 0.0 && timeout_seconds <= 3600.0) {
            return Err(OnexError::configuration(format!(
                "{TIMEOUT_VARIABLE} must be a number of seconds in (0, 3600], got {timeout_seconds}"
            ))
            .with_detail("variable", TIMEOUT_VARIABLE));
        }
        let pool_size = environment::parse_or(env, POOL_SIZE_VARIABLE, DEFAULT_POOL_SIZE)?;
        if !(1..=1024).contains(&pool_size) {
            return Err(OnexError::configuration(format!("{POOL_SIZE_VARIABLE} must be in 1..=1024, got {pool_size}"))
                .with_detail("variable", POOL_SIZE_VARIABLE));
        }
        let mut config = Self::new(host.trim(), port, datacenter.trim())
            .with_request_timeout(Duration::from_secs_f64(timeout_seconds))
            .with_pool_size(pool_size);
        if let Some(token) = env.var(TOKEN_VARIABLE).filter(|t| !t.trim().is_empty()) {
            config = config.with_token(token.trim());
        }
        Ok(config)
    }

    /// Consul at `host:port`, naming `datacenter`; no token, the default limits.
    pub fn new(host: impl Into<String>, port: u16, datacenter: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            port,
            datacenter: datacenter.into(),
            token: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            pool_size: DEFAULT_POOL_SIZE,
        }
    }

    /// With the ACL token `token`.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(Sensitive::new(token.into()));
        self
    }

    /// With `timeout` per request; the connect timeout never exceeds it.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self.connect_timeout = self.connect_timeout.min(timeout);
        self
    }

    /// With `timeout` per TCP connection.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// With at most `pool_size` requests in flight.
    pub fn with_pool_size(mut self, pool_size: usize) -> Self {
        self.pool_size = pool_size;
        self
    }

    /// `host:port`, as the error messages name Consul (IPv6 addresses in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The shared model of this configuration (without the token).
    pub fn to_model(&self) -> ConsulServiceConfig {
        ConsulServiceConfig {
            host: self.host.clone(),
            port: self.port,
            datacenter: self.datacenter.clone(),
            client_pool_size: u32::try_from(self.pool_size).unwrap_or(u32::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::environment::MapEnv;
    use crate::error::ErrorCode;

    fn env(pairs: &[(&str, &str)]) -> MapEnv {
        MapEnv::from_pairs(pairs.iter().copied())
    }

    const BASE: [(&str, &str); 3] =
        [(HOST_VARIABLE, "consul.local"), (PORT_VARIABLE, "8500"), (DATACENTER_VARIABLE, "dc1")];

    #[test]
    fn the_three_required_variables_give_a_configuration_with_defaults() {
        let config = ConsulConfig::from_env(&env(&BASE)).unwrap();
        assert_eq!(config, ConsulConfig::new("consul.local", 8500, "dc1"));
        assert_eq!(config.request_timeout, Duration::from_secs(10));
        assert_eq!(config.pool_size, 10);
        assert_eq!(config.to_model().client_pool_size, 10);
    }

    #[test]
    fn each_missing_required_variable_is_named() {
        for missing in [HOST_VARIABLE, PORT_VARIABLE, DATACENTER_VARIABLE] {
            let pairs: Vec<_> = BASE.iter().copied().filter(|(k, _)| *k != missing).collect();
            let err = ConsulConfig::from_env(&env(&pairs)).unwrap_err();
            assert_eq!(err.code(), ErrorCode::ConfigurationError);
            assert!(err.message().contains(missing), "{err}");
        }
    }

    #[test]
    fn bad_values_are_configuration_errors_naming_the_variable() {
        for (variable, value) in [
            (PORT_VARIABLE, "http"),
            (PORT_VARIABLE, "0"),
            (TIMEOUT_VARIABLE, "-1"),
            (TIMEOUT_VARIABLE, "soon"),
            (POOL_SIZE_VARIABLE, "0"),
            (SCHEME_VARIABLE, "https"),
            (SCHEME_VARIABLE, "gopher"),
        ] {
            let mut pairs = BASE.to_vec();
            pairs.retain(|(k, _)| *k != variable);
            pairs.push((variable, value));
            let err = ConsulConfig::from_env(&env(&pairs)).unwrap_err();
            assert_eq!(err.code(), ErrorCode::ConfigurationError, "{variable}={value}");
            assert!(err.message().contains(variable), "{err}");
        }
    }

    #[test]
    fn the_token_is_read_but_never_shown() {
        let mut pairs = BASE.to_vec();
        pairs.push((TOKEN_VARIABLE, "b1gs3cr3t-token"));
        pairs.push((TIMEOUT_VARIABLE, "2.5"));
        let config = ConsulConfig::from_env(&env(&pairs)).unwrap();
        assert_eq!(config.token.as_ref().map(|t| t.expose().as_str()), Some("b1gs3cr3t-token"));
        assert_eq!(config.request_timeout, Duration::from_millis(2500));
        assert!(config.connect_timeout <= config.request_timeout);
        assert!(!format!("{config:?}").contains("b1gs3cr3t"), "{config:?}");
        assert!(!serde_json::to_string(&config.to_model()).unwrap().contains("b1gs3cr3t"));
    }

    #[test]
    fn an_ipv6_host_is_bracketed_in_the_authority() {
        assert_eq!(ConsulConfig::new("::1", 8500, "dc1").authority(), "[::1]:8500");
        assert_eq!(ConsulConfig::new("127.0.0.1", 8500, "dc1").authority(), "127.0.0.1:8500");
    }
}
