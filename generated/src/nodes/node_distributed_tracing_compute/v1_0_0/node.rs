// The handler of `node_distributed_tracing_compute` v1.0.0: OpenTelemetry tracing for the infrastructure nodes; exports spans over OTLP gRPC with environment-based sampling, records database and Kafka spans, and carries W3C trace context in event metadata.
//
// Created once by `cargo run -p codegen` from contracts/nodes/node_distributed_tracing_compute/v1_0_0/contract.yaml.
// From then on this file is owned by people: regeneration never overwrites it.
//
// The handler is a thin adapter over `onex_runtime::telemetry`: the `Tracing` handle records and
// exports, `carrier` moves W3C context in and out of events, `sql::sanitize_sql` makes
// statements safe to show. What it adds is which `Tracing` is in use, and the rules below.
//
// Which tracing the node uses:
// - the container's `Tracing` when one is registered (the process's tracer, shared with every
//   service; the node's own operation spans, `node_distributed_tracing_compute.{operation}`,
//   are recorded with it too);
// - otherwise the one the first `initialize_tracing` builds, from the request's
//   `configuration` or from the environment (`TraceConfiguration::from_env`: the OTEL_*
//   variables and the deployment environment's sample rate). It records the spans the
//   operations ask for; the node-operation spans need a `Tracing` in the container.
// - `initialize_tracing` while a tracing is in use is idempotent: it keeps that one (a second
//   export pipeline would export every span twice) and reports it. To change the settings,
//   `shutdown_tracing` first; the next `initialize_tracing` then builds a new one.
// - `OTEL_SDK_DISABLED=true` makes `initialize_tracing` build nothing.
//
// Without a tracing in use (never initialized, disabled, or shut down) every operation still
// answers, with `tracing_enabled: false` and no span ids: a service must not fail because
// telemetry is off. Context propagation does not depend on it: `inject_context` stamps the
// request's trace context, and `extract_context` reads a carrier, either way. Bad input is an
// error whether tracing is on or not: `VALIDATION_ERROR` for a missing or malformed field (a
// malformed `traceparent`, a statement the sanitizer cannot read, an attribute that is not a
// string, number or boolean), `CONFIGURATION_ERROR` naming the field or variable for settings
// that cannot work (an endpoint that is not http(s) with a host). A `shutdown_tracing` that
// could not flush within 5 s answers `success: false` with the export counters, not an error:
// the tracing did stop.
//
// Secrets: OTLP header values never leave the configuration (the status names the headers
// only), and a statement reaches a span, an output or an error only in its sanitized form.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::Utc;
use onex_runtime::environment::{self, EnvSource, Environment, ProcessEnv};
use onex_runtime::event::{EventMetadata, OnexEvent};
use onex_runtime::models::tracing::{SpanKind, TraceConfiguration};
use onex_runtime::telemetry::{self, KeyValue, OtelContext, Tracing, carrier};
use onex_runtime::{Container, Context, ErrorCode, OnexError, TraceContext};
use opentelemetry::trace::TraceContextExt as _;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::handler::{Dependencies, DistributedTracingHandler, Input, Output};
use super::models::{ModelTracingError, ModelTracingStatus};

const NODE: &str = "node_distributed_tracing_compute";

/// Type of the audit event published for every recorded span.
pub const SPAN_AUDIT_EVENT: &str = "tracing.span.recorded";

/// Longest span name or attribute key accepted.
const MAX_NAME_CHARS: usize = 256;
/// Longest Kafka topic name (the broker's own limit).
const MAX_TOPIC_CHARS: usize = 249;

/// Implements the operations of `node_distributed_tracing_compute`.
pub struct DistributedTracing {
    /// The contract's dependencies, resolved from the container.
    pub dependencies: Dependencies,
    env: Arc<dyn EnvSource>,
    environment: Environment,
    /// `OTEL_ENABLE_AUDIT_INTEGRATION` (default true): publish one audit event per span.
    audit: bool,
    state: Mutex<State>,
}

/// The tracing the node uses.
enum State {
    /// None: never initialized and none in the container, or `OTEL_SDK_DISABLED`.
    Off,
    /// Recording and exporting.
    Active(Tracing),
    /// Shut down by `shutdown_tracing`; kept for its status and counters.
    Stopped { tracing: Tracing, flushed: bool },
}

impl std::fmt::Debug for DistributedTracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (state, tracing) = match &*self.state() {
            State::Off => ("off", Tracing::disabled()),
            State::Active(tracing) => ("active", tracing.clone()),
            State::Stopped { tracing, .. } => ("stopped", tracing.clone()),
        };
        f.debug_struct("DistributedTracing")
            .field("state", &state)
            .field("tracing", &tracing)
            .field("environment", &self.environment)
            .field("audit", &self.audit)
            .finish_non_exhaustive()
    }
}

impl DistributedTracing {
    /// The handler with configuration read from `env` instead of the process environment
    /// (tests, embedded hosts): the deployment environment, `OTEL_*` settings for
    /// `initialize_tracing`, `OTEL_ENABLE_AUDIT_INTEGRATION` and `OTEL_SDK_DISABLED`.
    pub fn with_env(container: &Container, env: Arc<dyn EnvSource>) -> Result<Self, OnexError> {
        let dependencies = Dependencies::resolve(container)?;
        let environment = Environment::detect(env.as_ref());
        let audit = environment::flag_or(env.as_ref(), "OTEL_ENABLE_AUDIT_INTEGRATION", true)?;
        let tracing = Tracing::from_container(container);
        let state = if tracing.is_enabled() { State::Active(tracing) } else { State::Off };
        Ok(Self { dependencies, env, environment, audit, state: Mutex::new(state) })
    }

    /// The tracing that records spans now, if any.
    pub fn tracing(&self) -> Option<Tracing> {
        match &*self.state() {
            State::Active(tracing) => Some(tracing.clone()),
            State::Off | State::Stopped { .. } => None,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is replaced whole, never left half-written: a panic elsewhere cannot have
        // broken it.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An answer for `input`, with the status of the tracing in use (or stopped) and its
    /// counters.
    fn output(&self, input: &Input, ctx: &Context) -> Output {
        let correlation_id = correlation_id(input, ctx);
        let (enabled, status) = match &*self.state() {
            State::Off => (false, None),
            State::Active(tracing) => (true, status(tracing, None)),
            State::Stopped { tracing, flushed } => (false, status(tracing, Some(*flushed))),
        };
        let mut out = Output::new(true, input.operation_type, correlation_id, Utc::now(), enabled);
        out.status = status;
        out
    }

    /// Records one span of `kind` named `name` under `parent` with the node's attributes
    /// (`correlation_id`, `environment`, `service.name`) and `attributes`, ends it, and
    /// publishes its audit event. Without a tracing in use, records nothing.
    async fn record(&self, spec: SpanSpec, parent: &OtelContext, input: &Input, ctx: &Context, out: &mut Output) {
        let Some(tracing) = self.tracing() else { return };
        let correlation_id = correlation_id(input, ctx);
        let mut span = tracing.span_in(spec.name.clone(), otel_kind(spec.kind), parent);
        let recording = span.is_recording();
        if recording {
            span.set_attributes([
                KeyValue::new("correlation_id", correlation_id.to_string()),
                KeyValue::new("environment", tracing.environment().unwrap_or_default().to_owned()),
                KeyValue::new("service.name", tracing.service_name().unwrap_or_default().to_owned()),
            ]);
            span.set_attributes(spec.attributes.iter().cloned());
        }
        let trace = span.trace_context();
        out.span_name = Some(spec.name.clone());
        out.span_kind = Some(spec.kind);
        out.trace_id = trace.as_ref().map(|t| hex(&t.trace_id));
        out.span_id = trace.as_ref().map(|t| hex(&t.span_id));
        let span_cx = span.into_context(parent);
        let audit = match (&self.dependencies.protocol_event_bus, recording && self.audit) {
            (Some(bus), true) => {
                let payload = json!({
                    "operation_type": input.operation_type,
                    "trace_id": out.trace_id,
                    "span_id": out.span_id,
                    "span_name": spec.name,
                    "span_kind": spec.kind,
                    "service_name": tracing.service_name(),
                    "environment": tracing.environment(),
                    "attributes": attributes_json(&spec.attributes),
                });
                let mut event = OnexEvent::new(SPAN_AUDIT_EVENT, NODE, correlation_id, payload);
                carrier::stamp_envelope(&mut event.metadata, &span_cx, &tracing);
                Some((bus.clone(), event))
            }
            _ => None,
        };
        // The span ends here, before the audit event goes out: publishing is not its work.
        drop(span_cx);
        if let Some((bus, event)) = audit
            && let Err(e) = bus.publish(event).await
        {
            // The span is recorded either way; the audit trail is best effort.
            tracing::warn!(target: "onex::tracing", error = %e, span = %spec.name, "publishing the span audit event failed");
        }
    }
}

impl DistributedTracingHandler for DistributedTracing {
    fn new(container: &Container) -> Result<Self, OnexError> {
        Self::with_env(container, Arc::new(ProcessEnv))
    }

    async fn initialize_tracing(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        if let Some(config) = &input.configuration {
            config.validate()?;
        }
        let disabled = environment::flag_or(self.env.as_ref(), "OTEL_SDK_DISABLED", false)?;
        {
            let mut state = self.state();
            if !disabled && !matches!(*state, State::Active(_)) {
                let config = match &input.configuration {
                    Some(config) => config.clone(),
                    None => TraceConfiguration::from_env(self.env.as_ref(), self.environment)?,
                };
                // Built under the lock: two concurrent initializations must not start two
                // export pipelines. Building starts a thread and an exporter that connects
                // lazily, so the lock is held briefly.
                *state = State::Active(Tracing::install(&config)?);
            }
        }
        Ok(self.output(&input, ctx))
    }

    async fn trace_operation(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        let name = input
            .operation_name
            .as_deref()
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .ok_or_else(|| OnexError::validation("trace_operation needs operation_name, the span's name"))?;
        check_length("operation_name", name)?;
        let attributes = user_attributes(input.attributes.as_ref(), &[])?;
        let parent = parent_of(&input, ctx)?;
        let spec = SpanSpec { name: name.to_owned(), kind: input.span_kind, attributes };
        let mut out = self.output(&input, ctx);
        self.record(spec, &parent, &input, ctx, &mut out).await;
        Ok(out)
    }

    async fn inject_context(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        let cx = current_context(ctx);
        let tracing = self.tracing().unwrap_or_default();
        let mut out = self.output(&input, ctx);
        let carrier = match input.event.clone() {
            Some(mut event) => {
                carrier::stamp_envelope(&mut event.metadata, &cx, &tracing);
                let carrier = event.metadata.trace_context.clone();
                out.event = Some(event);
                carrier
            }
            None => {
                let mut metadata = EventMetadata::default();
                carrier::stamp_envelope(&mut metadata, &cx, &tracing);
                metadata.trace_context
            }
        };
        if let Some(trace) = carrier.get("traceparent").and_then(|tp| TraceContext::parse_traceparent(tp).ok()) {
            out.trace_id = Some(hex(&trace.trace_id));
            out.span_id = Some(hex(&trace.span_id));
        }
        out.carrier = (!carrier.is_empty()).then_some(carrier);
        Ok(out)
    }

    async fn extract_context(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        let (source, carrier) = match (&input.parent_context, &input.event) {
            (Some(carrier), _) if !carrier.is_empty() => ("parent_context", carrier),
            (_, Some(event)) => ("event.metadata.trace_context", &event.metadata.trace_context),
            _ => {
                return Err(OnexError::validation(
                    "extract_context needs parent_context (a W3C carrier) or an event whose metadata.trace_context \
                     carries one",
                ));
            }
        };
        let mut out = self.output(&input, ctx);
        if carrier.contains_key("traceparent") {
            let remote = remote_parent(source, carrier)?;
            let trace = carrier::trace_context_of(remote.span().span_context());
            out.trace_id = Some(hex(&trace.trace_id));
            out.span_id = Some(hex(&trace.span_id));
        }
        out.carrier = (!carrier.is_empty()).then(|| carrier.clone());
        Ok(out)
    }

    async fn trace_database(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        let query = input
            .database_query
            .as_deref()
            .ok_or_else(|| OnexError::validation("trace_database needs database_query, the statement to record"))?;
        let sanitized = onex_runtime::telemetry::sql::sanitize_sql(query)
            .map_err(|e| OnexError::validation(format!("database_query: {}", e.message())))?;
        if sanitized.is_empty() {
            return Err(OnexError::validation("database_query is empty; give the statement to record"));
        }
        let op = match &input.operation_name {
            Some(name) => operation_token("operation_name", name)?,
            None => first_keyword(query).unwrap_or_else(|| "query".to_owned()),
        };
        const OWN: [&str; 3] = ["db.system.name", "db.operation.name", "db.query.text"];
        let mut attributes = vec![
            KeyValue::new("db.system.name", "postgresql"),
            KeyValue::new("db.operation.name", op.to_ascii_uppercase()),
            KeyValue::new("db.query.text", sanitized.clone()),
        ];
        attributes.extend(user_attributes(input.attributes.as_ref(), &OWN)?);
        let parent = parent_of(&input, ctx)?;
        let spec = SpanSpec { name: format!("postgres.{op}"), kind: SpanKind::Client, attributes };
        let mut out = self.output(&input, ctx);
        out.sanitized_query = Some(sanitized);
        self.record(spec, &parent, &input, ctx, &mut out).await;
        Ok(out)
    }

    async fn trace_kafka(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        let topic =
            input.kafka_topic.as_deref().ok_or_else(|| OnexError::validation("trace_kafka needs kafka_topic"))?;
        check_topic(topic)?;
        let (kind, operation_type) =
            if input.producing { (SpanKind::Producer, "send") } else { (SpanKind::Consumer, "receive") };
        let op = match &input.operation_name {
            Some(name) => operation_token("operation_name", name)?,
            None => operation_type.to_owned(),
        };
        const OWN: [&str; 4] =
            ["messaging.system", "messaging.destination.name", "messaging.operation.type", "messaging.operation.name"];
        let mut attributes = vec![
            KeyValue::new("messaging.system", "kafka"),
            KeyValue::new("messaging.destination.name", topic.to_owned()),
            KeyValue::new("messaging.operation.type", operation_type),
            KeyValue::new("messaging.operation.name", op.clone()),
        ];
        attributes.extend(user_attributes(input.attributes.as_ref(), &OWN)?);
        let parent = parent_of(&input, ctx)?;
        let spec = SpanSpec { name: format!("kafka.{op}"), kind, attributes };
        let mut out = self.output(&input, ctx);
        self.record(spec, &parent, &input, ctx, &mut out).await;
        Ok(out)
    }

    async fn shutdown_tracing(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        let tracing = {
            let mut state = self.state();
            let State::Active(tracing) = &*state else {
                // Never started, or already stopped: nothing left to flush.
                drop(state);
                return Ok(self.output(&input, ctx));
            };
            let tracing = tracing.clone();
            // Stopped before the flush starts, so spans asked for meanwhile are not recorded.
            *state = State::Stopped { tracing: tracing.clone(), flushed: false };
            tracing
        };
        // Up to 5 s of blocking on the export thread's answer: off the async workers.
        let stopping = tracing.clone();
        let result = tokio::task::spawn_blocking(move || stopping.shutdown()).await.unwrap_or_else(|e| {
            Err(OnexError::new(ErrorCode::InternalError, format!("the tracing shutdown did not complete: {e}")))
        });
        *self.state() = State::Stopped { tracing, flushed: result.is_ok() };
        let mut out = self.output(&input, ctx);
        if let Err(e) = result {
            out.success = false;
            out.error = Some(ModelTracingError::new(e.code(), e.message().to_owned()));
        }
        Ok(out)
    }
}

/// A span to record.
struct SpanSpec {
    name: String,
    kind: SpanKind,
    attributes: Vec<KeyValue>,
}

/// The request's correlation id, or the context's (generated when the request had none).
fn correlation_id(input: &Input, ctx: &Context) -> Uuid {
    input.correlation_id.unwrap_or_else(|| ctx.correlation_id())
}

/// The status of `tracing` without secrets, with its export counters.
fn status(tracing: &Tracing, flushed: Option<bool>) -> Option<ModelTracingStatus> {
    let stats = tracing.stats();
    let mut status = ModelTracingStatus::new(
        tracing.otlp_endpoint()?.to_owned(),
        tracing.sample_rate()?,
        tracing.service_name()?.to_owned(),
        tracing.service_version()?.to_owned(),
        tracing.environment()?.to_owned(),
        stats.exported,
        stats.dropped(),
        stats.dropped_queue_full,
        stats.dropped_export_failed,
        stats.queued,
    );
    status.otlp_header_names = Some(tracing.otlp_header_names().to_vec());
    status.spans_flushed = flushed;
    Some(status)
}

/// The span the node's work runs in: the OpenTelemetry context current in the operation (the
/// node-operation span when the node records them), else the request's trace context, else
/// none (a new span then starts a trace).
fn current_context(ctx: &Context) -> OtelContext {
    let current = OtelContext::current();
    match ctx.trace() {
        Some(trace) if !current.has_active_span() => carrier::remote_context(trace),
        _ => current,
    }
}

/// The parent of a recorded span: the request's `parent_context` when it names one, else
/// [`current_context`].
fn parent_of(input: &Input, ctx: &Context) -> Result<OtelContext, OnexError> {
    match &input.parent_context {
        Some(carrier) if !carrier.is_empty() => remote_parent("parent_context", carrier),
        _ => Ok(current_context(ctx)),
    }
}

/// The remote span `carrier` (read from `source`) names, or a `VALIDATION_ERROR` that says
/// what a traceparent looks like (without repeating the value).
fn remote_parent(source: &str, carrier: &BTreeMap<String, String>) -> Result<OtelContext, OnexError> {
    if !carrier.contains_key("traceparent") {
        return Err(OnexError::validation(format!("{source} has no traceparent")).with_detail("field", source));
    }
    carrier::extract_parent(None, Some(carrier)).ok_or_else(|| {
        OnexError::validation(format!(
            "{source}.traceparent is not a W3C traceparent: expected 00-<32 hex trace id>-<16 hex span id>-<2 hex \
             flags>, ids not all zero"
        ))
        .with_detail("field", format!("{source}.traceparent"))
    })
}

fn otel_kind(kind: SpanKind) -> telemetry::SpanKind {
    match kind {
        SpanKind::Internal => telemetry::SpanKind::Internal,
        SpanKind::Client => telemetry::SpanKind::Client,
        SpanKind::Server => telemetry::SpanKind::Server,
        SpanKind::Producer => telemetry::SpanKind::Producer,
        SpanKind::Consumer => telemetry::SpanKind::Consumer,
    }
}

/// The request's `attributes` as span attributes: strings, integers, other numbers and
/// booleans. Keys the node sets itself (`own`, and the common ones) cannot be given.
fn user_attributes(attributes: Option<&Map<String, Value>>, own: &[&str]) -> Result<Vec<KeyValue>, OnexError> {
    const COMMON: [&str; 3] = ["correlation_id", "environment", "service.name"];
    let Some(attributes) = attributes else { return Ok(Vec::new()) };
    attributes
        .iter()
        .map(|(key, value)| {
            let field = || format!("attributes.{key}");
            if key.trim().is_empty() {
                return Err(OnexError::validation("attributes has an empty key"));
            }
            check_length("an attribute key", key)?;
            if COMMON.contains(&key.as_str()) || own.contains(&key.as_str()) {
                return Err(OnexError::validation(format!(
                    "{} is set by the node; give correlation_id or the operation's own fields instead",
                    field()
                )));
            }
            let key = key.clone();
            match value {
                Value::String(text) => Ok(KeyValue::new(key, text.clone())),
                Value::Bool(flag) => Ok(KeyValue::new(key, *flag)),
                Value::Number(number) => match (number.as_i64(), number.as_f64()) {
                    (Some(integer), _) => Ok(KeyValue::new(key, integer)),
                    (None, Some(float)) => Ok(KeyValue::new(key, float)),
                    (None, None) => Err(OnexError::validation(format!("{} is out of range", field()))),
                },
                _ => Err(OnexError::validation(format!("{} must be a string, a number or a boolean", field()))),
            }
        })
        .collect()
}

/// Span attributes as JSON, for the audit event.
fn attributes_json(attributes: &[KeyValue]) -> Value {
    attributes
        .iter()
        .map(|kv| {
            let value = match &kv.value {
                opentelemetry::Value::Bool(flag) => Value::from(*flag),
                opentelemetry::Value::I64(integer) => Value::from(*integer),
                opentelemetry::Value::F64(float) => Value::from(*float),
                other => Value::from(other.as_str().into_owned()),
            };
            (kv.key.as_str().to_owned(), value)
        })
        .collect::<Map<String, Value>>()
        .into()
}

fn check_length(what: &str, text: &str) -> Result<(), OnexError> {
    if text.chars().count() > MAX_NAME_CHARS {
        return Err(OnexError::validation(format!("{what} is longer than {MAX_NAME_CHARS} characters")));
    }
    Ok(())
}

/// `name` as the operation part of a span name: letters, digits, `_`, `-`, lower-cased.
fn operation_token(field: &str, name: &str) -> Result<String, OnexError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(OnexError::validation(format!(
            "{field} must be 1 to 64 letters, digits, `_` or `-` (such as select or send)"
        )));
    }
    Ok(name.to_ascii_lowercase())
}

/// The statement's first keyword, lower-cased, past whitespace, comments and opening
/// parentheses. Only a run of letters counts: a literal (quoted or a number) never does.
fn first_keyword(statement: &str) -> Option<String> {
    let mut rest = statement;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '(');
        if let Some(comment) = rest.strip_prefix("--") {
            rest = comment.split_once('\n').map_or("", |(_, after)| after);
        } else if let Some(comment) = rest.strip_prefix("/*") {
            rest = comment.split_once("*/").map_or("", |(_, after)| after);
        } else {
            break;
        }
    }
    let word: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
    let ends_word = rest[word.len()..].chars().next().is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
    (!word.is_empty() && ends_word).then(|| word.to_ascii_lowercase())
}

/// A Kafka topic name: 1 to 249 of letters, digits, `.`, `_` and `-`.
fn check_topic(topic: &str) -> Result<(), OnexError> {
    let valid = !topic.is_empty()
        && topic.len() <= MAX_TOPIC_CHARS
        && topic.chars().all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c));
    if valid {
        Ok(())
    } else {
        Err(OnexError::validation(format!(
            "kafka_topic must be 1 to {MAX_TOPIC_CHARS} letters, digits, `.`, `_` or `-`"
        )))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
