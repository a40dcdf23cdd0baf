//! Routing a request to one operation of a node whose contract has `handler_routing`.
//!
//! The generated node describes its routes as a static [`Routing`] and asks
//! [`Routing::select`] which operation a request goes to. The routing key comes from:
//!
//! - `operation_match`: the request's operation name, the string field `operation` of the
//!   input (else `operation_type`);
//! - `payload_type_match`: the payload's type tag, the first string among the input's
//!   `event_type` (the event envelope's type), `payload_type` and `intent_type`, then the same
//!   fields of the input's `payload` object (an intent carries `payload.intent_type`);
//! - `topic_match`: the topic the request was consumed from ([`Context::topic`]).
//!
//! A request that matches no route goes to the default handler when the contract names one,
//! and is otherwise a `VALIDATION_ERROR` naming what the node accepts.

use serde::Serialize;

use crate::context::Context;
use crate::error::{ErrorCode, OnexError};

/// How a node picks the operation for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RoutingStrategy {
    /// By the request's operation name.
    OperationMatch,
    /// By the payload's type tag.
    PayloadTypeMatch,
    /// By the topic the request came from.
    TopicMatch,
}

impl RoutingStrategy {
    /// The contract's name for the strategy (`operation_match`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::OperationMatch => "operation_match",
            Self::PayloadTypeMatch => "payload_type_match",
            Self::TopicMatch => "topic_match",
        }
    }

    /// What the strategy matches, for messages (`operation`, `payload type`, `topic`).
    pub const fn key_name(self) -> &'static str {
        match self {
            Self::OperationMatch => "operation",
            Self::PayloadTypeMatch => "payload type",
            Self::TopicMatch => "topic",
        }
    }

    /// The fields of the input that carry the key, in the order they are tried.
    const fn fields(self) -> &'static [&'static str] {
        match self {
            Self::OperationMatch => &["operation", "operation_type"],
            Self::PayloadTypeMatch => &["event_type", "payload_type", "intent_type"],
            Self::TopicMatch => &[],
        }
    }
}

/// One routed operation: the keys that select it and the `io_operations` settings it carries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RouteSpec {
    /// The operation (an `OperationSpec` name of the contract).
    pub operation: &'static str,
    /// The keys that select it (operation names, type tags or topics).
    pub accepts: &'static [&'static str],
    /// The handler class the contract names for it.
    pub handler: &'static str,
    /// `idempotent` of its `io_operations` entry, when given.
    pub idempotent: Option<bool>,
    /// `input_fields` of its `io_operations` entry.
    pub input_fields: &'static [&'static str],
    /// `output_fields` of its `io_operations` entry (or routing entry).
    pub output_fields: &'static [&'static str],
}

/// A node's `handler_routing`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Routing {
    /// How requests are matched.
    pub strategy: RoutingStrategy,
    /// The routes, in contract order.
    pub routes: &'static [RouteSpec],
    /// The operation that takes requests matching no route (`default_handler`).
    pub fallback: Option<&'static str>,
}

impl Routing {
    /// The operation for a request with `input` under `ctx`: the route its key selects, else the
    /// fallback, else a `VALIDATION_ERROR` of `node` naming the accepted keys.
    ///
    /// A typed input is serialized to JSON to find its key (not for `topic_match`); a node whose
    /// input is JSON already calls [`Routing::select_json`].
    pub fn select<I: Serialize>(&self, node: &str, input: &I, ctx: &Context) -> Result<&'static str, OnexError> {
        if self.strategy == RoutingStrategy::TopicMatch {
            return self.select_json(node, &serde_json::Value::Null, ctx);
        }
        let request = serde_json::to_value(input).map_err(|e| {
            OnexError::new(ErrorCode::InternalError, format!("{node}: cannot read the request to route it: {e}"))
        })?;
        self.select_json(node, &request, ctx)
    }

    /// [`Routing::select`] for a request that is JSON already.
    pub fn select_json(
        &self,
        node: &str,
        request: &serde_json::Value,
        ctx: &Context,
    ) -> Result<&'static str, OnexError> {
        let key = match self.strategy {
            RoutingStrategy::TopicMatch => ctx.topic(),
            strategy => key_of(strategy, request),
        };
        self.route(key).ok_or_else(|| self.unmatched(node, key))
    }

    /// The operation `key` selects, else the fallback.
    pub fn route(&self, key: Option<&str>) -> Option<&'static str> {
        key.and_then(|key| self.routes.iter().find(|r| r.accepts.contains(&key)).map(|r| r.operation)).or(self.fallback)
    }

    /// Every key a route accepts, in contract order.
    pub fn accepted(&self) -> Vec<&'static str> {
        self.routes.iter().flat_map(|r| r.accepts.iter().copied()).collect()
    }

    /// The `VALIDATION_ERROR` for a request whose key (`None`: the request has none) selects no
    /// route, naming the keys the node accepts.
    pub fn unmatched(&self, node: &str, key: Option<&str>) -> OnexError {
        let what = self.strategy.key_name();
        let accepted = self.accepted();
        let expected = accepted.join(", ");
        let message = match key {
            Some(key) => format!("{node} has no handler for {what} `{key}`; expected one of: {expected}"),
            None if self.strategy == RoutingStrategy::TopicMatch => {
                format!("{node} routes by topic and the request came from none; expected one of: {expected}")
            }
            None => format!(
                "{node} routes by {what} and the request has none (field {}); expected one of: {expected}",
                self.strategy.fields().iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(" or ")
            ),
        };
        OnexError::new(ErrorCode::ValidationError, message)
            .with_detail("node", node)
            .with_detail("routing_strategy", self.strategy.as_str())
            .with_detail("received", key)
            .with_detail("expected", accepted)
    }
}

/// The routing key of a request (as JSON) under `strategy`; `None` for `topic_match`, whose key
/// is not in the request.
pub fn key_of(strategy: RoutingStrategy, request: &serde_json::Value) -> Option<&str> {
    fn find<'v>(fields: &[&str], value: &'v serde_json::Value) -> Option<&'v str> {
        fields.iter().find_map(|f| value.get(*f).and_then(serde_json::Value::as_str))
    }
    let fields = strategy.fields();
    find(fields, request).or_else(|| match strategy {
        RoutingStrategy::PayloadTypeMatch => request.get("payload").and_then(|p| find(fields, p)),
        _ => None,
    })
}

/// The error for an operation [`Routing::select`] named that the generated node has no method
/// for: a generator bug, answered rather than panicking.
pub fn no_method(node: &str, operation: &str) -> OnexError {
    OnexError::new(
        ErrorCode::InternalError,
        format!("{node}: routing selected `{operation}`, which has no handler method"),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    static ROUTES: [RouteSpec; 2] = [
        RouteSpec {
            operation: "send",
            accepts: &["send", "send.v2"],
            handler: "HandlerSend",
            idempotent: Some(false),
            input_fields: &[],
            output_fields: &[],
        },
        RouteSpec {
            operation: "read",
            accepts: &["read"],
            handler: "HandlerRead",
            idempotent: None,
            input_fields: &[],
            output_fields: &[],
        },
    ];

    fn routing(strategy: RoutingStrategy, fallback: Option<&'static str>) -> Routing {
        Routing { strategy, routes: &ROUTES, fallback }
    }

    #[test]
    fn operation_match_reads_the_operation_field() {
        let r = routing(RoutingStrategy::OperationMatch, None);
        let ctx = Context::new();
        assert_eq!(r.select("n", &json!({"operation": "send.v2"}), &ctx).unwrap(), "send");
        assert_eq!(r.select("n", &json!({"operation_type": "read"}), &ctx).unwrap(), "read");
        let err = r.select("n", &json!({"operation": "drop"}), &ctx).unwrap_err();
        assert_eq!(err.code(), ErrorCode::ValidationError);
        assert_eq!(err.message(), "n has no handler for operation `drop`; expected one of: send, send.v2, read");
        let err = r.select("n", &json!({}), &ctx).unwrap_err();
        assert!(err.message().contains("field `operation` or `operation_type`"), "{}", err.message());
    }

    #[test]
    fn payload_type_match_reads_the_envelope_then_the_payload() {
        let r = routing(RoutingStrategy::PayloadTypeMatch, None);
        let ctx = Context::new();
        assert_eq!(r.select("n", &json!({"event_type": "read", "payload": {}}), &ctx).unwrap(), "read");
        assert_eq!(r.select("n", &json!({"payload": {"intent_type": "send"}}), &ctx).unwrap(), "send");
    }

    #[test]
    fn topic_match_reads_the_context_and_the_fallback_takes_the_rest() {
        let r = routing(RoutingStrategy::TopicMatch, Some("read"));
        assert_eq!(r.select("n", &json!(null), &Context::new().with_topic("send")).unwrap(), "send");
        assert_eq!(r.select("n", &json!(null), &Context::new().with_topic("other")).unwrap(), "read");
        assert_eq!(r.select("n", &json!(null), &Context::new()).unwrap(), "read");
        let strict = routing(RoutingStrategy::TopicMatch, None);
        let err = strict.select("n", &json!(null), &Context::new()).unwrap_err();
        assert_eq!(err.details()["expected"], json!(["send", "send.v2", "read"]));
    }
}
