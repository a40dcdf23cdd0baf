//! The guard's limits per deployment environment and their `POSTGRES_ADAPTER_*` overrides.

use std::time::Duration;

use super::complexity::ComplexityWeights;
use crate::environment::{self, EnvSource, Environment};
use crate::error::OnexError;

/// The variable that picks the profile; without it the usual detection
/// ([`Environment::detect`]) decides.
pub const PROFILE_VARIABLE: &str = "DEPLOYMENT_ENVIRONMENT";

/// Overrides a limit: query size in characters.
pub const MAX_QUERY_SIZE: &str = "POSTGRES_ADAPTER_MAX_QUERY_SIZE";
/// Overrides a limit: parameters per statement.
pub const MAX_PARAMETER_COUNT: &str = "POSTGRES_ADAPTER_MAX_PARAMETER_COUNT";
/// Overrides a limit: characters per parameter (a JSON object or array counts as its JSON text).
pub const MAX_PARAMETER_SIZE: &str = "POSTGRES_ADAPTER_MAX_PARAMETER_SIZE";
/// Overrides a limit: the longest statement timeout a request may ask for, in seconds.
pub const MAX_TIMEOUT_SECONDS: &str = "POSTGRES_ADAPTER_MAX_TIMEOUT_SECONDS";
/// Overrides a limit: the highest complexity score accepted.
pub const MAX_COMPLEXITY_SCORE: &str = "POSTGRES_ADAPTER_MAX_COMPLEXITY_SCORE";
/// Switches error sanitization (on by default; cannot be switched off in production).
pub const ENABLE_ERROR_SANITIZATION: &str = "POSTGRES_ADAPTER_ENABLE_ERROR_SANITIZATION";
/// Switches injection detection (on by default; cannot be switched off in production).
pub const ENABLE_INJECTION_DETECTION: &str = "POSTGRES_ADAPTER_ENABLE_INJECTION_DETECTION";

/// Every variable [`GuardConfig::from_env`] reads besides the environment's.
pub const ENV_VARIABLES: [&str; 7] = [
    MAX_QUERY_SIZE,
    MAX_PARAMETER_COUNT,
    MAX_PARAMETER_SIZE,
    MAX_TIMEOUT_SECONDS,
    MAX_COMPLEXITY_SCORE,
    ENABLE_ERROR_SANITIZATION,
    ENABLE_INJECTION_DETECTION,
];

/// What the guard allows, and whether it sanitizes errors and looks for injection.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GuardConfig {
    /// The profile the defaults came from; production also caps every limit.
    pub environment: Environment,
    /// Longest statement text, in characters.
    pub max_query_size: usize,
    /// Most parameters per statement.
    pub max_parameter_count: usize,
    /// Longest parameter, in characters (objects and arrays: their JSON text).
    pub max_parameter_size: usize,
    /// Longest statement timeout a request may ask for.
    pub max_timeout: Duration,
    /// Highest complexity score accepted.
    pub max_complexity_score: u32,
    /// The weights of the complexity score.
    pub weights: ComplexityWeights,
    /// Whether error messages are sanitized (passwords are masked either way).
    pub sanitize_errors: bool,
    /// Whether statements are matched against the injection patterns.
    pub detect_injection: bool,
}

impl GuardConfig {
    /// The defaults of `environment`:
    ///
    /// | limit | staging (default) | production (also the cap) | development |
    /// |---|---:|---:|---:|
    /// | query size, characters | 50,000 | 25,000 | 100,000 |
    /// | parameters | 100 | 50 | 200 |
    /// | parameter size, characters | 10,000 | 5,000 | 20,000 |
    /// | statement timeout | 300 s | 180 s | 600 s |
    /// | complexity score | 20 | 15 | 30 |
    ///
    /// Production weighs complexity more ([`ComplexityWeights::for_environment`]).
    /// Sanitization and injection detection are on everywhere.
    pub fn for_environment(environment: Environment) -> Self {
        let (query, count, size, timeout, complexity) = match environment {
            Environment::Production => (25_000, 50, 5_000, 180, 15),
            Environment::Staging => (50_000, 100, 10_000, 300, 20),
            Environment::Development => (100_000, 200, 20_000, 600, 30),
        };
        Self {
            environment,
            max_query_size: query,
            max_parameter_count: count,
            max_parameter_size: size,
            max_timeout: Duration::from_secs(timeout),
            max_complexity_score: complexity,
            weights: ComplexityWeights::for_environment(environment),
            sanitize_errors: true,
            detect_injection: true,
        }
    }

    /// The profile of `DEPLOYMENT_ENVIRONMENT` (or, when unset, of [`Environment::detect`])
    /// with the `POSTGRES_ADAPTER_*` overrides of [`ENV_VARIABLES`], validated (see
    /// [`GuardConfig::validate`]). A value that does not parse is a `CONFIGURATION_ERROR`
    /// naming its variable.
    pub fn from_env(env: &dyn EnvSource) -> Result<Self, OnexError> {
        let environment = match env.var(PROFILE_VARIABLE).filter(|v| !v.trim().is_empty()) {
            Some(name) => Environment::parse_lenient(&name),
            None => Environment::detect(env),
        };
        let mut config = Self::for_environment(environment);
        config.max_query_size = environment::parse_or(env, MAX_QUERY_SIZE, config.max_query_size)?;
        config.max_parameter_count = environment::parse_or(env, MAX_PARAMETER_COUNT, config.max_parameter_count)?;
        config.max_parameter_size = environment::parse_or(env, MAX_PARAMETER_SIZE, config.max_parameter_size)?;
        config.max_timeout =
            Duration::from_secs(environment::parse_or(env, MAX_TIMEOUT_SECONDS, config.max_timeout.as_secs())?);
        config.max_complexity_score = environment::parse_or(env, MAX_COMPLEXITY_SCORE, config.max_complexity_score)?;
        config.sanitize_errors = environment::flag_or(env, ENABLE_ERROR_SANITIZATION, config.sanitize_errors)?;
        config.detect_injection = environment::flag_or(env, ENABLE_INJECTION_DETECTION, config.detect_injection)?;
        config.validate().map_err(|err| {
            let field = err.details().get("field").and_then(|f| f.as_str()).map(str::to_owned);
            match FIELD_VARIABLES.iter().find(|(f, _)| Some(*f) == field.as_deref()) {
                Some((_, variable)) if env.var(variable).is_some() => err.with_detail("variable", *variable),
                _ => err,
            }
        })?;
        Ok(config)
    }

    /// Every limit is at least 1; in production no limit is above the production profile's
    /// and neither sanitization nor injection detection is off. A violation is a
    /// `CONFIGURATION_ERROR` naming the field (detail `field`) — the guard refuses to start
    /// rather than run with a weaker setting than production allows.
    pub fn validate(&self) -> Result<(), OnexError> {
        let caps = Self::for_environment(Environment::Production);
        let limits: [(&str, u64, u64); 5] = [
            ("max_query_size", self.max_query_size as u64, caps.max_query_size as u64),
            ("max_parameter_count", self.max_parameter_count as u64, caps.max_parameter_count as u64),
            ("max_parameter_size", self.max_parameter_size as u64, caps.max_parameter_size as u64),
            ("max_timeout", self.max_timeout.as_secs(), caps.max_timeout.as_secs()),
            ("max_complexity_score", u64::from(self.max_complexity_score), u64::from(caps.max_complexity_score)),
        ];
        let production = self.environment == Environment::Production;
        for (field, value, cap) in limits {
            if value == 0 {
                return Err(OnexError::configuration(format!("{field} must be at least 1")).with_detail("field", field));
            }
            if production && value > cap {
                return Err(OnexError::configuration(format!(
                    "{field} is {value}, above the production cap of {cap}: production limits can only be lowered"
                ))
                .with_detail("field", field)
                .with_detail("value", value)
                .with_detail("max", cap));
            }
        }
        if production && !self.sanitize_errors {
            return Err(OnexError::configuration("error sanitization cannot be switched off in production")
                .with_detail("field", "sanitize_errors"));
        }
        if production && !self.detect_injection {
            return Err(OnexError::configuration("injection detection cannot be switched off in production")
                .with_detail("field", "detect_injection"));
        }
        Ok(())
    }
}

/// Which variable sets which field, to name it in a validation error.
const FIELD_VARIABLES: [(&str, &str); 7] = [
    ("max_query_size", MAX_QUERY_SIZE),
    ("max_parameter_count", MAX_PARAMETER_COUNT),
    ("max_parameter_size", MAX_PARAMETER_SIZE),
    ("max_timeout", MAX_TIMEOUT_SECONDS),
    ("max_complexity_score", MAX_COMPLEXITY_SCORE),
    ("sanitize_errors", ENABLE_ERROR_SANITIZATION),
    ("detect_injection", ENABLE_INJECTION_DETECTION),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::environment::MapEnv;
    use crate::error::ErrorCode;

    fn config(pairs: &[(&str, &str)]) -> Result<GuardConfig, OnexError> {
        GuardConfig::from_env(&MapEnv::from_pairs(pairs.iter().copied()))
    }

    #[test]
    fn the_deployment_environment_picks_the_profile() {
        let production = config(&[(PROFILE_VARIABLE, "production")]).unwrap();
        assert_eq!((production.max_query_size, production.max_parameter_count), (25_000, 50));
        assert_eq!((production.max_parameter_size, production.max_timeout.as_secs()), (5_000, 180));
        assert_eq!(production.max_complexity_score, 15);
        assert_eq!(production.weights.regex, 12);
        let staging = config(&[(PROFILE_VARIABLE, "staging")]).unwrap();
        assert_eq!(
            (staging.max_query_size, staging.max_parameter_count, staging.max_parameter_size),
            (50_000, 100, 10_000)
        );
        assert_eq!((staging.max_timeout.as_secs(), staging.max_complexity_score, staging.weights.regex), (300, 20, 10));
        let development = config(&[(PROFILE_VARIABLE, "dev")]).unwrap();
        assert_eq!((development.max_query_size, development.max_parameter_count), (100_000, 200));
        assert_eq!((development.max_parameter_size, development.max_timeout.as_secs()), (20_000, 600));
        assert_eq!(development.max_complexity_score, 30);
        // Without DEPLOYMENT_ENVIRONMENT the usual variables decide; it wins over them.
        assert_eq!(config(&[("ENVIRONMENT", "prod")]).unwrap().environment, Environment::Production);
        assert_eq!(config(&[]).unwrap().environment, Environment::Development);
        let both = config(&[("ENVIRONMENT", "prod"), (PROFILE_VARIABLE, "staging")]).unwrap();
        assert_eq!(both.environment, Environment::Staging);
    }

    #[test]
    fn overrides_lower_production_limits_but_never_raise_them() {
        let lowered = config(&[(PROFILE_VARIABLE, "production"), (MAX_QUERY_SIZE, "10000")]).unwrap();
        assert_eq!(lowered.max_query_size, 10_000);
        let err = config(&[(PROFILE_VARIABLE, "production"), (MAX_QUERY_SIZE, "30000")]).unwrap_err();
        assert_eq!(err.code(), ErrorCode::ConfigurationError);
        assert_eq!(err.details()["variable"], MAX_QUERY_SIZE);
        assert!(err.message().contains("25000"), "{err}");
        for (variable, value) in [
            (MAX_PARAMETER_COUNT, "51"),
            (MAX_PARAMETER_SIZE, "5001"),
            (MAX_TIMEOUT_SECONDS, "181"),
            (MAX_COMPLEXITY_SCORE, "16"),
        ] {
            let err = config(&[(PROFILE_VARIABLE, "prod"), (variable, value)]).unwrap_err();
            assert_eq!(err.details()["variable"], variable, "{err}");
        }
        // Elsewhere an override may raise a limit.
        let raised = config(&[(PROFILE_VARIABLE, "staging"), (MAX_QUERY_SIZE, "200000")]).unwrap();
        assert_eq!(raised.max_query_size, 200_000);
    }

    #[test]
    fn production_keeps_sanitization_and_injection_detection() {
        for variable in [ENABLE_ERROR_SANITIZATION, ENABLE_INJECTION_DETECTION] {
            let err = config(&[(PROFILE_VARIABLE, "production"), (variable, "false")]).unwrap_err();
            assert_eq!(err.code(), ErrorCode::ConfigurationError);
            assert_eq!(err.details()["variable"], variable);
            let dev = config(&[(PROFILE_VARIABLE, "development"), (variable, "off")]).unwrap();
            assert!(!(dev.sanitize_errors && dev.detect_injection));
        }
    }

    #[test]
    fn bad_values_name_their_variable() {
        let err = config(&[(MAX_PARAMETER_COUNT, "many")]).unwrap_err();
        assert_eq!(err.details()["variable"], MAX_PARAMETER_COUNT);
        let err = config(&[(MAX_QUERY_SIZE, "0")]).unwrap_err();
        assert_eq!(err.details()["variable"], MAX_QUERY_SIZE);
        let err = config(&[(ENABLE_INJECTION_DETECTION, "maybe")]).unwrap_err();
        assert_eq!(err.details()["variable"], ENABLE_INJECTION_DETECTION);
    }
}
