//! Maps librdkafka errors onto [`OnexError`] and classifies them for retries.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::error::{ErrorCode, OnexError};

/// Whether retrying the same publish later can succeed.
///
/// Transient broker or network conditions are retriable; anything about the message itself
/// (too large, invalid), authorization, configuration or a fatal producer state is not.
pub fn is_retriable(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::MessageTimedOut
            | C::AllBrokersDown
            | C::BrokerTransportFailure
            | C::QueueFull
            | C::OperationTimedOut
            | C::TimedOutQueue
            | C::Resolve
            | C::LeaderNotAvailable
            | C::NotLeaderForPartition
            | C::RequestTimedOut
            | C::NetworkException
            | C::NotEnoughReplicas
            | C::NotEnoughReplicasAfterAppend
            | C::NotCoordinator
            | C::KafkaStorageError
            | C::UnknownTopicOrPartition
            | C::PurgeInflight
            | C::PurgeQueue
    )
}

/// The ONEX code for a delivery or enqueue failure: `INTEGRATION_SERVICE_UNAVAILABLE` when the
/// broker cannot be reached or did not answer in time, `OPERATION_TIMEOUT` for an expired
/// message timeout, `VALIDATION_ERROR` when the message itself is refused, otherwise
/// `INTEGRATION_SERVICE_ERROR`.
pub fn error_code_for(code: RDKafkaErrorCode) -> ErrorCode {
    use RDKafkaErrorCode as C;
    match code {
        // PurgeQueue: the pool's watchdog purges only messages past their message timeout.
        C::MessageTimedOut | C::OperationTimedOut | C::RequestTimedOut | C::TimedOutQueue | C::PurgeQueue => {
            ErrorCode::OperationTimeout
        }
        C::AllBrokersDown | C::BrokerTransportFailure | C::Resolve | C::NetworkException => {
            ErrorCode::IntegrationServiceUnavailable
        }
        C::MessageSizeTooLarge | C::InvalidMessage | C::InvalidRecord => ErrorCode::ValidationError,
        _ => ErrorCode::IntegrationServiceError,
    }
}

/// A delivery failure of one message to `topic`, with the librdkafka code in the details
/// (`kafka_error`, `retriable`) so callers and tests can branch on it without parsing text.
pub fn delivery_error(topic: &str, error: &KafkaError) -> OnexError {
    let code = error.rdkafka_error_code();
    let onex_code = code.map_or(ErrorCode::IntegrationServiceError, error_code_for);
    let mut err = OnexError::new(onex_code, format!("Kafka delivery to topic '{topic}' failed: {error}"))
        .with_detail("topic", topic)
        .with_detail("retriable", code.is_some_and(is_retriable));
    if let Some(code) = code {
        err = err.with_detail("kafka_error", format!("{code:?}"));
    }
    err
}

/// A message to `topic` that could not go out because the broker refused the connection
/// itself: `code` is librdkafka's `Authentication` (wrong SASL credentials, unknown user) or
/// `SSL` (the TLS handshake failed: unknown CA, wrong host name, client certificate refused).
/// Not retriable: the same credentials and certificates fail the same way.
pub fn refused_error(topic: &str, code: &str, reason: &str) -> OnexError {
    let what = if code == "SSL" { "the TLS handshake failed" } else { "authentication failed" };
    OnexError::new(
        ErrorCode::IntegrationServiceError,
        format!("Kafka delivery to topic '{topic}' failed: the broker refused the connection, {what}: {reason}"),
    )
    .with_detail("topic", topic)
    .with_detail("retriable", false)
    .with_detail("kafka_error", code)
}

/// The librdkafka code recorded by [`delivery_error`] or [`refused_error`], if any.
pub fn kafka_error_name(error: &OnexError) -> Option<&str> {
    error.details().get("kafka_error").and_then(|v| v.as_str())
}

/// Whether an error produced by this module may be retried.
pub fn onex_error_is_retriable(error: &OnexError) -> bool {
    error.details().get("retriable").and_then(serde_json::Value::as_bool).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors_retry_and_message_errors_do_not() {
        assert!(is_retriable(RDKafkaErrorCode::MessageTimedOut));
        assert!(is_retriable(RDKafkaErrorCode::NotLeaderForPartition));
        assert!(!is_retriable(RDKafkaErrorCode::MessageSizeTooLarge));
        assert!(!is_retriable(RDKafkaErrorCode::TopicAuthorizationFailed));
        assert!(!is_retriable(RDKafkaErrorCode::Fatal));
    }

    #[test]
    fn delivery_errors_carry_code_and_classification() {
        let err = delivery_error("t", &KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut));
        assert_eq!(err.code(), ErrorCode::OperationTimeout);
        assert!(onex_error_is_retriable(&err));
        assert_eq!(kafka_error_name(&err), Some("MessageTimedOut"));
        let err = delivery_error("t", &KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge));
        assert_eq!(err.code(), ErrorCode::ValidationError);
        assert!(!onex_error_is_retriable(&err));
    }
}
