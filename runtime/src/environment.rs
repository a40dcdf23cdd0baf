//! Deployment environment detection and typed reads of configuration variables.
//!
//! Configuration comes from environment variables, read through [`EnvSource`] so tests pass
//! a map instead of mutating the process environment (which is unsafe with threads).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::error::OnexError;

/// Where configuration variables come from.
pub trait EnvSource: Send + Sync {
    /// The value of `key`, if set.
    fn var(&self, key: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

/// A fixed set of variables (tests, embedded configuration).
#[derive(Debug, Clone, Default)]
pub struct MapEnv(pub BTreeMap<String, String>);

impl MapEnv {
    /// From `(key, value)` pairs.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Self(pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }
}

impl EnvSource for MapEnv {
    fn var(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }
}

/// The deployment environment, which picks defaults (circuit breaker, sampling, TLS rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// `production`, `prod`, `live`.
    Production,
    /// `staging`, `stage`, `stg`.
    Staging,
    /// `development`, `dev`, `local`, `test`, and anything unknown.
    Development,
}

/// Variables consulted by [`Environment::detect`], first set wins. `ONEX_ENVIRONMENT` is the
/// original system's own variable, so it comes first: a deployment that sets it is never judged
/// by a generic `ENV` or `NODE_ENV` that some other tool set.
pub const ENVIRONMENT_VARIABLES: [&str; 7] =
    ["ONEX_ENVIRONMENT", "ENVIRONMENT", "ENV", "DEPLOYMENT_ENV", "NODE_ENV", "OMNIBASE_ENV", "ONEX_ENV"];

impl Environment {
    /// Reads the first set variable of [`ENVIRONMENT_VARIABLES`]; development when none is.
    pub fn detect(env: &dyn EnvSource) -> Self {
        ENVIRONMENT_VARIABLES
            .iter()
            .find_map(|key| env.var(key).filter(|v| !v.trim().is_empty()))
            .map_or(Self::Development, |v| Self::parse_lenient(&v))
    }

    /// The environment of this process ([`Environment::detect`] on [`ProcessEnv`]). Services
    /// built from explicit configuration (not `from_env`) are held to its rules, so a
    /// constructor cannot be used to step around them.
    pub fn current() -> Self {
        Self::detect(&ProcessEnv)
    }

    /// Maps a name or alias to an environment; unknown names mean development.
    pub fn parse_lenient(name: &str) -> Self {
        match name.trim().to_ascii_lowercase().as_str() {
            "production" | "prod" | "live" => Self::Production,
            "staging" | "stage" | "stg" => Self::Staging,
            _ => Self::Development,
        }
    }

    /// `production`, `staging` or `development`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Production => "production",
            Self::Staging => "staging",
            Self::Development => "development",
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The value of `key`, or a `CONFIGURATION_ERROR` naming it.
pub fn required(env: &dyn EnvSource, key: &str) -> Result<String, OnexError> {
    env.var(key).filter(|v| !v.trim().is_empty()).ok_or_else(|| {
        OnexError::configuration(format!("required environment variable {key} is not set")).with_detail("variable", key)
    })
}

/// The parsed value of `key`, or `default` when unset; a value that does not parse is an
/// error naming the variable (never a silent default).
pub fn parse_or<T: FromStr>(env: &dyn EnvSource, key: &str, default: T) -> Result<T, OnexError>
where
    T::Err: fmt::Display,
{
    match env.var(key).filter(|v| !v.trim().is_empty()) {
        None => Ok(default),
        Some(raw) => raw.trim().parse().map_err(|e| {
            OnexError::configuration(format!("environment variable {key} has an invalid value: {e}"))
                .with_detail("variable", key)
        }),
    }
}

/// Reads a boolean flag: `true/false`, `1/0`, `yes/no`, `on/off`.
pub fn flag_or(env: &dyn EnvSource, key: &str, default: bool) -> Result<bool, OnexError> {
    match env.var(key).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) if v.is_empty() => Ok(default),
        Some(v) => match v.as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(OnexError::configuration(format!("environment variable {key} must be true or false"))
                .with_detail("variable", key)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_follows_the_documented_order() {
        let env = MapEnv::from_pairs([("NODE_ENV", "stg"), ("ONEX_ENV", "prod")]);
        assert_eq!(Environment::detect(&env), Environment::Staging);
        let env = MapEnv::from_pairs([("ENV", "live"), ("NODE_ENV", "dev")]);
        assert_eq!(Environment::detect(&env), Environment::Production);
        assert_eq!(Environment::detect(&MapEnv::default()), Environment::Development);
        assert_eq!(Environment::detect(&MapEnv::from_pairs([("ENVIRONMENT", "qa")])), Environment::Development);
        assert_eq!(Environment::parse_lenient("LOCAL"), Environment::Development);
        assert_eq!(Environment::parse_lenient("Stage"), Environment::Staging);
    }

    #[test]
    fn the_original_systems_variable_is_detected_before_generic_ones() {
        let env = MapEnv::from_pairs([("ONEX_ENVIRONMENT", "production")]);
        assert_eq!(Environment::detect(&env), Environment::Production);
        let env = MapEnv::from_pairs([("ONEX_ENVIRONMENT", "staging"), ("ENVIRONMENT", "dev"), ("NODE_ENV", "prod")]);
        assert_eq!(Environment::detect(&env), Environment::Staging);
    }

    #[test]
    fn typed_reads_name_the_variable() {
        let env = MapEnv::from_pairs([("N", "12"), ("BAD", "x"), ("F", "off")]);
        assert_eq!(parse_or(&env, "N", 5u32).unwrap(), 12);
        assert_eq!(parse_or(&env, "MISSING", 5u32).unwrap(), 5);
        let err = parse_or(&env, "BAD", 5u32).unwrap_err();
        assert!(err.message().contains("BAD"), "{err}");
        assert!(!flag_or(&env, "F", true).unwrap());
        assert!(required(&env, "NOPE").unwrap_err().message().contains("NOPE"));
    }
}
