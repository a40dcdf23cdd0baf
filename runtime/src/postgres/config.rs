//! The pool configuration from `POSTGRES_*` variables.
//!
//! Connection identity (host, port, database, user, schema) has no defaults: a missing one is
//! a `CONFIGURATION_ERROR` naming the variable, because connecting to a guessed database is
//! worse than not starting. Pool knobs default to the values of the original system.

use std::time::Duration;

use crate::environment::{EnvSource, parse_or, required};
use crate::error::OnexError;
use crate::models::postgres::{PostgresConnectionConfig, SslMode};
use crate::sensitive::Sensitive;

/// Variables that must be set.
pub const REQUIRED_VARIABLES: [&str; 5] =
    ["POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DATABASE", "POSTGRES_USER", "POSTGRES_SCHEMA"];

/// Reads the configuration from `env` and validates it.
pub fn config_from_env(env: &dyn EnvSource) -> Result<PostgresConnectionConfig, OnexError> {
    let host = required(env, "POSTGRES_HOST")?;
    let port: u16 = {
        let raw = required(env, "POSTGRES_PORT")?;
        raw.trim().parse().map_err(|e| {
            OnexError::configuration(format!("environment variable POSTGRES_PORT has an invalid value: {e}"))
                .with_detail("variable", "POSTGRES_PORT")
        })?
    };
    let database = required(env, "POSTGRES_DATABASE")?;
    let user = required(env, "POSTGRES_USER")?;
    let schema = required(env, "POSTGRES_SCHEMA")?;
    let mut config = PostgresConnectionConfig::new(host.trim(), port, database.trim(), user.trim(), schema.trim());
    config.password = read_password(env)?;
    config.min_connections = parse_or(env, "POSTGRES_MIN_CONNECTIONS", config.min_connections)?;
    config.max_connections = parse_or(env, "POSTGRES_MAX_CONNECTIONS", config.max_connections)?;
    config.max_inactive_connection_lifetime_secs =
        parse_or(env, "POSTGRES_MAX_INACTIVE_LIFETIME", config.max_inactive_connection_lifetime_secs)?;
    config.max_queries = parse_or(env, "POSTGRES_MAX_QUERIES", config.max_queries)?;
    config.command_timeout_secs = parse_or(env, "POSTGRES_COMMAND_TIMEOUT", config.command_timeout_secs)?;
    config.ssl_mode = match env.var("POSTGRES_SSL_MODE").filter(|v| !v.trim().is_empty()) {
        None => config.ssl_mode,
        Some(raw) => parse_ssl_mode(&raw)?,
    };
    config.ssl_cert_file = optional(env, "POSTGRES_SSL_CERT_FILE");
    config.ssl_key_file = optional(env, "POSTGRES_SSL_KEY_FILE");
    config.ssl_ca_file = optional(env, "POSTGRES_SSL_CA_FILE");
    config.wait_timeout_secs = parse_or(env, "POSTGRES_POOL_WAIT_TIMEOUT", config.wait_timeout_secs)?;
    config.create_timeout_secs = parse_or(env, "POSTGRES_POOL_CREATE_TIMEOUT", config.create_timeout_secs)?;
    config.recycle_timeout_secs = parse_or(env, "POSTGRES_POOL_RECYCLE_TIMEOUT", config.recycle_timeout_secs)?;
    config.maintenance_interval_secs =
        parse_or(env, "POSTGRES_POOL_MAINTENANCE_INTERVAL", config.maintenance_interval_secs)?;
    config.statement_cache_size = parse_or(env, "POSTGRES_STATEMENT_CACHE_SIZE", config.statement_cache_size)?;
    if let Some(name) = optional(env, "POSTGRES_APPLICATION_NAME") {
        config.application_name = name;
    }
    validate(&config)?;
    Ok(config)
}

/// `POSTGRES_PASSWORD`, else the trimmed content of the file named by
/// `POSTGRES_PASSWORD_FILE`, else empty (trust or peer authentication).
fn read_password(env: &dyn EnvSource) -> Result<Sensitive<String>, OnexError> {
    if let Some(password) = env.var("POSTGRES_PASSWORD").filter(|v| !v.is_empty()) {
        return Ok(Sensitive::new(password));
    }
    match optional(env, "POSTGRES_PASSWORD_FILE") {
        None => Ok(Sensitive::default()),
        Some(path) => {
            std::fs::read_to_string(&path).map(|content| Sensitive::new(content.trim().to_owned())).map_err(|e| {
                OnexError::configuration(format!("POSTGRES_PASSWORD_FILE {path} cannot be read: {e}"))
                    .with_detail("variable", "POSTGRES_PASSWORD_FILE")
            })
        }
    }
}

fn optional(env: &dyn EnvSource, key: &str) -> Option<String> {
    env.var(key).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// Parses `disable`, `prefer`, `require` or `verify-full` (also with `_`).
pub fn parse_ssl_mode(raw: &str) -> Result<SslMode, OnexError> {
    match raw.trim().to_ascii_lowercase().replace('_', "-").as_str() {
        "disable" => Ok(SslMode::Disable),
        "prefer" => Ok(SslMode::Prefer),
        "require" => Ok(SslMode::Require),
        "verify-full" => Ok(SslMode::VerifyFull),
        other => Err(OnexError::configuration(format!(
            "environment variable POSTGRES_SSL_MODE has an invalid value '{other}': \
             expected disable, prefer, require or verify-full"
        ))
        .with_detail("variable", "POSTGRES_SSL_MODE")),
    }
}

/// Checks the invariants the pool relies on: 1 ≤ max, min ≤ max, every timeout finite and
/// positive, a non-empty schema and a statement limit of at least one query.
pub fn validate(config: &PostgresConnectionConfig) -> Result<(), OnexError> {
    let invalid = |variable: &str, why: String| {
        Err(OnexError::configuration(format!("{variable} {why}")).with_detail("variable", variable))
    };
    if config.host.is_empty() {
        return invalid("POSTGRES_HOST", "must not be empty".into());
    }
    if config.schema.is_empty() {
        return invalid("POSTGRES_SCHEMA", "must not be empty".into());
    }
    if config.max_connections == 0 {
        return invalid("POSTGRES_MAX_CONNECTIONS", "must be at least 1".into());
    }
    if config.min_connections > config.max_connections {
        return invalid(
            "POSTGRES_MIN_CONNECTIONS",
            format!(
                "({}) must not exceed POSTGRES_MAX_CONNECTIONS ({})",
                config.min_connections, config.max_connections
            ),
        );
    }
    if config.max_queries == 0 {
        return invalid("POSTGRES_MAX_QUERIES", "must be at least 1".into());
    }
    if config.max_inactive_connection_lifetime_secs == 0 {
        return invalid("POSTGRES_MAX_INACTIVE_LIFETIME", "must be at least 1 second".into());
    }
    for (variable, value) in [
        ("POSTGRES_COMMAND_TIMEOUT", config.command_timeout_secs),
        ("POSTGRES_POOL_WAIT_TIMEOUT", config.wait_timeout_secs),
        ("POSTGRES_POOL_CREATE_TIMEOUT", config.create_timeout_secs),
        ("POSTGRES_POOL_RECYCLE_TIMEOUT", config.recycle_timeout_secs),
        ("POSTGRES_POOL_MAINTENANCE_INTERVAL", config.maintenance_interval_secs),
    ] {
        if !(value.is_finite() && value > 0.0 && value <= 86_400.0) {
            return invalid(variable, format!("must be a number of seconds in (0, 86400], got {value}"));
        }
    }
    if config.ssl_key_file.is_some() != config.ssl_cert_file.is_some() {
        return invalid("POSTGRES_SSL_CERT_FILE", "and POSTGRES_SSL_KEY_FILE must be set together".into());
    }
    Ok(())
}

/// Seconds as a [`Duration`]; only called on validated values.
pub(crate) fn secs(value: f64) -> Duration {
    Duration::from_secs_f64(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::environment::MapEnv;
    use crate::error::ErrorCode;

    fn base() -> Vec<(&'static str, String)> {
        vec![
            ("POSTGRES_HOST", "127.0.0.1".into()),
            ("POSTGRES_PORT", "5432".into()),
            ("POSTGRES_DATABASE", "app".into()),
            ("POSTGRES_USER", "svc".into()),
            ("POSTGRES_SCHEMA", "infrastructure".into()),
        ]
    }

    #[test]
    fn defaults_match_the_original_system() {
        let config = config_from_env(&MapEnv::from_pairs(base())).unwrap();
        assert_eq!((config.min_connections, config.max_connections), (5, 50));
        assert_eq!(config.max_inactive_connection_lifetime_secs, 300);
        assert_eq!(config.max_queries, 50_000);
        assert_eq!(config.command_timeout_secs, 60.0);
        assert_eq!(config.ssl_mode, SslMode::Prefer);
        assert_eq!(config.password.expose(), "");
        assert!(config.wait_timeout_secs <= 5.0 && config.create_timeout_secs <= 5.0);
        assert!(config.recycle_timeout_secs <= 1.0);
    }

    #[test]
    fn each_missing_variable_is_named() {
        for missing in REQUIRED_VARIABLES {
            let pairs = base().into_iter().filter(|(k, _)| *k != missing);
            let err = config_from_env(&MapEnv::from_pairs(pairs)).unwrap_err();
            assert_eq!(err.code(), ErrorCode::ConfigurationError);
            assert!(err.message().contains(missing), "{err}");
            assert_eq!(err.details()["variable"], missing);
        }
    }

    #[test]
    fn every_knob_is_overridable() {
        let mut pairs = base();
        pairs.extend([
            ("POSTGRES_MIN_CONNECTIONS", "2".into()),
            ("POSTGRES_MAX_CONNECTIONS", "9".into()),
            ("POSTGRES_MAX_INACTIVE_LIFETIME", "30".into()),
            ("POSTGRES_MAX_QUERIES", "100".into()),
            ("POSTGRES_COMMAND_TIMEOUT", "2.5".into()),
            ("POSTGRES_SSL_MODE", "verify_full".into()),
            ("POSTGRES_POOL_WAIT_TIMEOUT", "0.25".into()),
            ("POSTGRES_POOL_CREATE_TIMEOUT", "3".into()),
            ("POSTGRES_POOL_RECYCLE_TIMEOUT", "0.5".into()),
            ("POSTGRES_POOL_MAINTENANCE_INTERVAL", "0.1".into()),
            ("POSTGRES_STATEMENT_CACHE_SIZE", "7".into()),
            ("POSTGRES_APPLICATION_NAME", "svc-a".into()),
        ]);
        let c = config_from_env(&MapEnv::from_pairs(pairs)).unwrap();
        assert_eq!((c.min_connections, c.max_connections, c.max_queries), (2, 9, 100));
        assert_eq!(c.max_inactive_connection_lifetime_secs, 30);
        assert_eq!(c.command_timeout_secs, 2.5);
        assert_eq!(c.ssl_mode, SslMode::VerifyFull);
        assert_eq!((c.wait_timeout_secs, c.create_timeout_secs, c.recycle_timeout_secs), (0.25, 3.0, 0.5));
        assert_eq!((c.maintenance_interval_secs, c.statement_cache_size), (0.1, 7));
        assert_eq!(c.application_name, "svc-a");
    }

    #[test]
    fn invalid_values_are_rejected_by_name() {
        for (key, value) in [
            ("POSTGRES_PORT", "http"),
            ("POSTGRES_MIN_CONNECTIONS", "60"),
            ("POSTGRES_MAX_CONNECTIONS", "0"),
            ("POSTGRES_COMMAND_TIMEOUT", "-1"),
            ("POSTGRES_POOL_WAIT_TIMEOUT", "inf"),
            ("POSTGRES_SSL_MODE", "allow"),
            ("POSTGRES_MAX_QUERIES", "0"),
        ] {
            let mut pairs = base();
            pairs.retain(|(k, _)| *k != key);
            pairs.push((key, value.into()));
            let err = config_from_env(&MapEnv::from_pairs(pairs)).unwrap_err();
            assert_eq!(err.code(), ErrorCode::ConfigurationError, "{key}");
            assert!(err.to_string().contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn password_comes_from_the_file_trimmed_and_never_shows() {
        let path = std::env::temp_dir().join(format!("onex-pg-pw-{}", uuid::Uuid::new_v4()));
        std::fs::write(&path, "  s3cr3t-pw\n").unwrap();
        let mut pairs = base();
        pairs.push(("POSTGRES_PASSWORD_FILE", path.display().to_string()));
        let config = config_from_env(&MapEnv::from_pairs(pairs.clone())).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(config.password.expose(), "s3cr3t-pw");
        assert!(!format!("{config:?}").contains("s3cr3t-pw"));

        pairs.push(("POSTGRES_PASSWORD", "direct".into()));
        let config = config_from_env(&MapEnv::from_pairs(pairs.clone())).unwrap();
        assert_eq!(config.password.expose(), "direct");

        pairs.retain(|(k, _)| *k != "POSTGRES_PASSWORD");
        let err = config_from_env(&MapEnv::from_pairs(pairs)).unwrap_err();
        assert_eq!(err.details()["variable"], "POSTGRES_PASSWORD_FILE");
    }
}
