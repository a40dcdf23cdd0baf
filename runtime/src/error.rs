//! The one error type of the runtime, with stable, machine-readable codes.
//!
//! Messages are meant for operators: they say what failed, never carry a secret (see
//! [`crate::sanitize`]) and keep the codes of the original Python system so dashboards and
//! alerts keyed on them keep working.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Stable error codes. The string form (`as_str`) is part of the public contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum ErrorCode {
    /// A connection to the database could not be made or verified.
    DatabaseConnectionFailed,
    /// The database rejected or failed a statement.
    DatabaseQueryError,
    /// A pool operation (acquire, transaction control) failed.
    DatabaseOperationError,
    /// Input does not satisfy the contract.
    ValidationError,
    /// Input was refused for security reasons (injection, plaintext in production, …).
    SecurityViolationError,
    /// Configuration is missing or invalid.
    ConfigurationError,
    /// An integrated service (broker, database) cannot be reached right now.
    IntegrationServiceUnavailable,
    /// An integrated service answered with an error.
    IntegrationServiceError,
    /// A requested service is not registered in the container.
    RegistryResolutionFailed,
    /// An operation ran past its deadline.
    OperationTimeout,
    /// The input named an operation this node does not support.
    UnsupportedOperation,
    /// A handler method has not been written yet (fresh scaffold).
    NotImplemented,
    /// Something was not found (key, service, row).
    NotFound,
    /// A bug: an invariant of the runtime did not hold.
    InternalError,
}

impl ErrorCode {
    /// The stable string form, e.g. `DATABASE_QUERY_ERROR`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::DatabaseConnectionFailed => "DATABASE_CONNECTION_FAILED",
            Self::DatabaseQueryError => "DATABASE_QUERY_ERROR",
            Self::DatabaseOperationError => "DATABASE_OPERATION_ERROR",
            Self::ValidationError => "VALIDATION_ERROR",
            Self::SecurityViolationError => "SECURITY_VIOLATION_ERROR",
            Self::ConfigurationError => "CONFIGURATION_ERROR",
            Self::IntegrationServiceUnavailable => "INTEGRATION_SERVICE_UNAVAILABLE",
            Self::IntegrationServiceError => "INTEGRATION_SERVICE_ERROR",
            Self::RegistryResolutionFailed => "REGISTRY_RESOLUTION_FAILED",
            Self::OperationTimeout => "OPERATION_TIMEOUT",
            Self::UnsupportedOperation => "UNSUPPORTED_OPERATION",
            Self::NotImplemented => "NOT_IMPLEMENTED",
            Self::NotFound => "NOT_FOUND",
            Self::InternalError => "INTERNAL_ERROR",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error with a stable [`ErrorCode`], a sanitized message and structured details.
#[derive(Clone)]
pub struct OnexError {
    code: ErrorCode,
    message: String,
    details: BTreeMap<String, serde_json::Value>,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl OnexError {
    /// An error with `code` and `message`. The message must not contain secrets; use
    /// [`OnexError::with_source`] for text that comes from outside (driver errors).
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), details: BTreeMap::new(), source: None }
    }

    /// Attaches a structured detail (shown in `Debug` and serialized views).
    pub fn with_detail(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.details.insert(key.into(), value.into());
        self
    }

    /// Attaches the underlying error. Its text is sanitized before it is ever displayed.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// Shorthand for [`ErrorCode::ValidationError`].
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationError, message)
    }

    /// Shorthand for [`ErrorCode::ConfigurationError`].
    pub fn configuration(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ConfigurationError, message)
    }

    /// The error a node constructor returns when the container lacks a required dependency:
    /// keeps the cause's code and names the node and the dependency.
    pub fn missing_dependency(node: &str, dependency: &str, cause: &OnexError) -> Self {
        Self::new(
            cause.code,
            format!("{node} cannot be built: dependency `{dependency}` is missing: {}", cause.message),
        )
        .with_detail("node", node)
        .with_detail("dependency", dependency)
    }

    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The message, without the code and without the source.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Structured details.
    pub fn details(&self) -> &BTreeMap<String, serde_json::Value> {
        &self.details
    }

    /// The sanitized text of the source error, if any.
    pub fn source_message(&self) -> Option<String> {
        self.source.as_ref().map(|s| crate::sanitize::sanitize_message(&s.to_string()))
    }
}

impl fmt::Display for OnexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.code, self.message)?;
        if let Some(source) = self.source_message() {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for OnexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnexError")
            .field("code", &self.code)
            .field("message", &self.message)
            .field("details", &self.details)
            .field("source", &self.source_message())
            .finish()
    }
}

impl std::error::Error for OnexError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // The raw source may hold secrets in its Display; callers get the sanitized text
        // through `source_message` instead.
        None
    }
}

impl PartialEq for OnexError {
    fn eq(&self, other: &Self) -> bool {
        self.code == other.code && self.message == other.message && self.details == other.details
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_carries_code_and_sanitized_source() {
        let io = std::io::Error::other("connect to postgres://app:hunter2@db:5432/x failed");
        let err = OnexError::new(ErrorCode::DatabaseConnectionFailed, "cannot connect").with_source(io);
        let shown = err.to_string();
        assert!(shown.starts_with("[DATABASE_CONNECTION_FAILED] cannot connect"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!format!("{err:?}").contains("hunter2"));
    }

    #[test]
    fn missing_dependency_names_node_and_dependency_and_keeps_the_code() {
        let cause = OnexError::new(ErrorCode::RegistryResolutionFailed, "no service X in the container");
        let err = OnexError::missing_dependency("node_a_effect", "pool", &cause);
        assert_eq!(err.code(), ErrorCode::RegistryResolutionFailed);
        assert!(err.message().starts_with("node_a_effect cannot be built: dependency `pool` is missing"), "{err}");
        assert_eq!(err.details()["dependency"], "pool");
    }

    #[test]
    fn codes_serialize_to_their_stable_strings() {
        let json = serde_json::to_string(&ErrorCode::IntegrationServiceUnavailable).unwrap();
        assert_eq!(json, "\"INTEGRATION_SERVICE_UNAVAILABLE\"");
        assert_eq!(ErrorCode::SecurityViolationError.as_str(), "SECURITY_VIOLATION_ERROR");
    }
}
