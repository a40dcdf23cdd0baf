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
//! - a statement is sanitized once: its text is kept for the next spans that run it (up to
//!   512 distinct statements);
//! - a statement the sanitizer cannot read (an unterminated literal, say) never fails the
//!   call: its text is shown as [`UNSANITIZABLE`], never as written.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustc_hash::FxBuildHasher;

use crate::error::OnexError;
use crate::models::postgres::PostgresConnectionConfig;
use crate::telemetry::recorded::Leaf;
use crate::telemetry::sql::sanitize_sql;
use crate::telemetry::{KeyValue, SpanKind, Tracing};

/// What `db.query.text` shows for a statement the sanitizer cannot read.
pub const UNSANITIZABLE: &str = "-- UNSANITIZABLE --";

/// How many distinct statements keep their sanitized text; past that the cache starts over.
/// A service runs a fixed set of statements (parameters are bound, not spliced in), so a few
/// hundred cover it; a workload of ad-hoc statements pays the sanitizer per span, as without
/// a cache.
const SANITIZED_CACHE_ENTRIES: usize = 512;

/// The attributes of a statement's span: the fixed ones, its text and operation, the
/// correlation id (and on failure `error.type` and `db.response.status_code`).
const ATTRIBUTES: usize = 10;

/// `text` as an attribute value whose clones share it.
fn shared(text: &str) -> opentelemetry::StringValue {
    Arc::<str>::from(text).into()
}

/// The manager's tracing and the attributes every one of its spans carries.
#[derive(Clone, Default)]
pub(crate) struct StatementTracing {
    tracing: Tracing,
    fixed: Arc<[KeyValue]>,
    /// `db.query.text` and `db.operation.name` by statement: sanitizing costs about ten
    /// thousand instructions a statement (callgrind), as much as the rest of a traced call.
    shown: Arc<Mutex<HashMap<Box<str>, Shown, FxBuildHasher>>>,
}

/// How a statement shows in its spans.
#[derive(Clone)]
struct Shown {
    text: opentelemetry::StringValue,
    operation: Option<opentelemetry::StringValue>,
}

impl StatementTracing {
    pub(crate) fn new(tracing: Tracing, config: &PostgresConnectionConfig) -> Self {
        let fixed: Arc<[KeyValue]> = if tracing.is_enabled() {
            Arc::new([
                KeyValue::new("db.system.name", "postgresql"),
                KeyValue::new("db.system", "postgresql"),
                // Shared strings: each span clones these, and an owned one would be copied.
                KeyValue::new("db.namespace", shared(&config.database)),
                KeyValue::new("server.address", shared(&config.host)),
                KeyValue::new("server.port", i64::from(config.port)),
            ])
        } else {
            Arc::new([])
        };
        Self { tracing, fixed, shown: Arc::default() }
    }

    /// The sanitized text and operation of `sql`, from the cache when it was seen before.
    fn shown(&self, sql: &str) -> Shown {
        let mut cache = self.shown.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(shown) = cache.get(sql) {
            return shown.clone();
        }
        let text = sanitize_sql(sql).unwrap_or_else(|_| UNSANITIZABLE.to_owned());
        let operation = super::metrics::first_keyword(sql);
        let shown = Shown {
            text: Arc::<str>::from(text).into(),
            operation: (!operation.is_empty()).then(|| Arc::<str>::from(operation.to_ascii_uppercase()).into()),
        };
        if cache.len() >= SANITIZED_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(sql.into(), shown.clone());
        shown
    }

    pub(crate) fn tracing(&self) -> &Tracing {
        &self.tracing
    }

    /// The span of one call running `sql` (empty when it would not be recorded).
    #[inline]
    pub(crate) fn span(&self, name: &'static str, sql: &str) -> StatementSpan {
        if !self.tracing.is_enabled() {
            return StatementSpan(Leaf::default());
        }
        self.start(name, sql)
    }

    /// Inlined into every call site, `span` is only its branch; this is the traced path.
    #[inline(never)]
    fn start(&self, name: &'static str, sql: &str) -> StatementSpan {
        let mut span = self.tracing.recorded_leaf(name, SpanKind::Client, ATTRIBUTES);
        if !span.is_recording() {
            return StatementSpan(span);
        }
        span.set_attributes(self.fixed.iter().cloned());
        let shown = self.shown(sql);
        span.set_attribute(KeyValue::new("db.query.text", shown.text));
        if let Some(operation) = shown.operation {
            span.set_attribute(KeyValue::new("db.operation.name", operation));
        }
        // Shared with the operation's span when a node operation runs the call.
        if let Some(id) = crate::telemetry::operation::correlation_value() {
            span.set_attribute(KeyValue::new("correlation_id", id));
        }
        StatementSpan(span)
    }
}

/// The span of one call while it runs; it ends when dropped (the call returned, or was
/// cancelled). Empty, and one pointer wide, when the call is not traced.
pub(crate) struct StatementSpan(Leaf);

// The pool's futures hold a statement span across their awaits: untraced, it must stay a
// pointer's width.
const _: () = assert!(std::mem::size_of::<StatementSpan>() == std::mem::size_of::<usize>());

impl StatementSpan {
    /// Records that the call failed with `error` (ERROR status, `error.type`, and the
    /// SQLSTATE as `db.response.status_code` when the server gave one).
    pub(crate) fn failed(&mut self, error: &OnexError) {
        let span = &mut self.0;
        if !span.is_recording() {
            return;
        }
        span.record_error(error);
        if let Some(state) = error.details().get("sqlstate").and_then(serde_json::Value::as_str) {
            span.set_attribute(KeyValue::new("db.response.status_code", state.to_owned()));
        }
    }
}
