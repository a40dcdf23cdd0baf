//! Spans of the connection manager's calls.
//!
//! Each call of the manager's API (and of a [`super::Transaction`]'s) is one CLIENT span named
//! `postgres.{call}` (`postgres.query`, `postgres.fetch_one`, `postgres.fetch_value`,
//! `postgres.call_function`, `postgres.begin`, `postgres.commit`, `postgres.rollback`), a
//! child of the caller's current OpenTelemetry context (the node operation's span). It covers
//! the wait for a connection and the statement, and carries the database conventions'
//! attributes: `db.system.name` (and the older `db.system`) = `postgresql`, `db.namespace` (the
//! database), `db.operation.name` (the statement's first keyword), `db.query.text` (the
//! statement with every literal replaced by `?`), `server.address`, `server.port`, and the
//! request's `correlation_id` when the caller's context names one. A failed call records its
//! error (ERROR status, `error.type`, SQLSTATE in `db.response.status_code`).
//!
//! Invariants:
//! - with tracing disabled, or in a trace the sampler dropped, a call costs one branch: no
//!   attribute is built, the statement is not sanitized, nothing is allocated;
//! - a statement the sanitizer cannot read (an unterminated literal, say) never fails the
//!   call: its text is shown as [`UNSANITIZABLE`], never as written.

use std::sync::Arc;

use crate::error::OnexError;
use crate::models::postgres::PostgresConnectionConfig;
use crate::telemetry::sql::sanitize_sql;
use crate::telemetry::{CorrelationId, KeyValue, Span, SpanKind, Tracing};

/// What `db.query.text` shows for a statement the sanitizer cannot read.
pub const UNSANITIZABLE: &str = "-- UNSANITIZABLE --";

/// The manager's tracing and the attributes every one of its spans carries.
#[derive(Clone, Default)]
pub(crate) struct StatementTracing {
    tracing: Tracing,
    fixed: Arc<[KeyValue]>,
}

impl StatementTracing {
    pub(crate) fn new(tracing: Tracing, config: &PostgresConnectionConfig) -> Self {
        let fixed: Arc<[KeyValue]> = if tracing.is_enabled() {
            Arc::new([
                KeyValue::new("db.system.name", "postgresql"),
                KeyValue::new("db.system", "postgresql"),
                KeyValue::new("db.namespace", config.database.clone()),
                KeyValue::new("server.address", config.host.clone()),
                KeyValue::new("server.port", i64::from(config.port)),
            ])
        } else {
            Arc::new([])
        };
        Self { tracing, fixed }
    }

    pub(crate) fn tracing(&self) -> &Tracing {
        &self.tracing
    }

    /// The span of one call running `sql` (empty when it would not be recorded).
    #[inline]
    pub(crate) fn span(&self, name: &'static str, sql: &str) -> StatementSpan {
        if !self.tracing.is_enabled() {
            return StatementSpan(None);
        }
        self.start(name, sql)
    }

    /// Inlined into every call site, `span` is only its branch; this is the traced path.
    #[inline(never)]
    fn start(&self, name: &'static str, sql: &str) -> StatementSpan {
        let mut span = self.tracing.span(name, SpanKind::Client);
        if !span.is_recording() {
            return StatementSpan(None);
        }
        span.set_attributes(self.fixed.iter().cloned());
        let text = sanitize_sql(sql).unwrap_or_else(|_| UNSANITIZABLE.to_owned());
        span.set_attribute(KeyValue::new("db.query.text", text));
        let operation = super::metrics::first_keyword(sql);
        if !operation.is_empty() {
            span.set_attribute(KeyValue::new("db.operation.name", operation.to_ascii_uppercase()));
        }
        if let Some(id) = CorrelationId::current() {
            span.set_attribute(KeyValue::new("correlation_id", id.to_string()));
        }
        StatementSpan(Some(Box::new(span)))
    }
}

/// The span of one call while it runs; it ends when dropped (the call returned, or was
/// cancelled). Empty, and one pointer wide, when the call is not traced.
pub(crate) struct StatementSpan(Option<Box<Span>>);

impl StatementSpan {
    /// Records that the call failed with `error` (ERROR status, `error.type`, and the
    /// SQLSTATE as `db.response.status_code` when the server gave one).
    pub(crate) fn failed(&mut self, error: &OnexError) {
        let Some(span) = &mut self.0 else { return };
        span.record_error(error);
        if let Some(state) = error.details().get("sqlstate").and_then(serde_json::Value::as_str) {
            span.set_attribute(KeyValue::new("db.response.status_code", state.to_owned()));
        }
    }
}
