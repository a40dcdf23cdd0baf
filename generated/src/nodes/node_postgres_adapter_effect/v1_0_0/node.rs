// The handler of `node_postgres_adapter_effect` v1.0.0: Message-bus bridge to PostgreSQL; validates each query against size, parameter, complexity and injection limits, runs it behind a database circuit breaker, publishes a completed or failed event, and never raises (failures come back sanitized with success false).
//
// Created once by `cargo run -p codegen` from contracts/nodes/node_postgres_adapter_effect/v1_0_0/contract.yaml.
// From then on this file is owned by people: regeneration never overwrites it.
//
// A request goes through, in order:
//
// 1. the correlation id: the nil UUID is refused (VALIDATION_ERROR); without one the context's
//    (generated) id is used; either way it is echoed in the output and the event;
// 2. the query guard (`onex_runtime::postgres::guard`): size, parameter and timeout limits of
//    the deployment environment (VALIDATION_ERROR), injection patterns and complexity score
//    (SECURITY_VIOLATION_ERROR);
// 3. the database circuit breaker: 5 consecutive database failures open it for 60 s, then at
//    most 3 trial calls decide (INTEGRATION_SERVICE_UNAVAILABLE, "Database circuit breaker is
//    OPEN…", while it refuses). Only failures of the database count (see
//    `counts_against_database`): refusals of the guard never reach the breaker, and a statement
//    the server rejects as wrong (syntax, constraint, type) is the caller's fault;
// 4. the statement on the pool, with its parameters bound positionally ($1..$n; objects and
//    arrays bind as jsonb where the server expects json or jsonb);
// 5. one event through the `protocol_event_bus`: `postgres.query.completed`,
//    `postgres.query.failed` or `postgres.health.response`, with `payload.database_type =
//    "postgresql"` (the original envelope's `data` is our `payload`), the correlation id, the
//    query hash and figures — never the SQL text or a parameter.
//
// `process()` never fails: every failure is an output with `success: false`, an `error_code`
// and an `error_message` that went through `sanitize_error_message` (no password, DSN, token,
// host, path or quoted name). Both operations time themselves (`times_itself`): the pool's
// checkout and statement end at the context's deadline, and a deadline that passes is answered
// as OPERATION_TIMEOUT inside the output, not as the node timer's `Err`.
//
// Events: a publish that fails, or is not acknowledged by the deadline, fails the operation
// (INTEGRATION_SERVICE_UNAVAILABLE; a statement that ran keeps its result in the output, since
// its effects stay). Without a registered publisher the adapter publishes nothing and says so
// once at construction; in production that is a CONFIGURATION_ERROR instead, since the adapter
// is a message-bus bridge and its callers wait for the events.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use chrono::Utc;
use onex_runtime::circuit_breaker::{CircuitBreaker, Rejected};
use onex_runtime::environment::{EnvSource, Environment, ProcessEnv};
use onex_runtime::event::OnexEvent;
use onex_runtime::event_bus::EventPublisher;
use onex_runtime::models::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerState};
use onex_runtime::models::health::HealthStatus;
use onex_runtime::models::postgres::{PostgresHealth, QueryResult};
use onex_runtime::postgres::QueryOptions;
use onex_runtime::postgres::guard::QueryGuard;
use onex_runtime::postgres::metrics::query_hash;
use onex_runtime::sanitize::{sanitize_error_message, sanitize_message};
use onex_runtime::{Container, Context, ErrorCode, OnexError, OperationSpec};
use serde_json::{Map, Value};

use super::contract::{OPERATION_HEALTH_CHECK, OPERATION_QUERY};
use super::handler::{Dependencies, Input, Output, PostgresAdapterHandler};
use super::models::{EnumPostgresAdapterOperation as Operation, ModelPostgresAdapterQueryRequest as QueryRequest};

const NODE: &str = "node_postgres_adapter_effect";
const LOG_TARGET: &str = "onex::postgres_adapter";

/// `payload.database_type` of every event.
pub const DATABASE_TYPE: &str = "postgresql";
/// The event of a statement that ran.
pub const QUERY_COMPLETED: &str = "postgres.query.completed";
/// The event of a query request that failed or was refused.
pub const QUERY_FAILED: &str = "postgres.query.failed";
/// The event of a health check.
pub const HEALTH_RESPONSE: &str = "postgres.health.response";
/// Above this share of failed checkouts and connects (of all the pool's attempts) the database
/// is degraded.
pub const FAILED_CONNECTION_RATIO_LIMIT: f64 = 0.10;
/// How long a failure event may still take to publish when the request's deadline has passed:
/// it is published in the background, so the answer is not delayed.
const LATE_EVENT_GRACE: Duration = Duration::from_secs(5);

/// SQLSTATE classes that mean the database failed rather than the statement: connection
/// exception, insufficient resources, operator intervention (shutdown, statement cancelled by
/// the server), system error (I/O), configuration file error, internal error.
const SERVER_FAILURE_CLASSES: [&str; 6] = ["08", "53", "57", "58", "F0", "XX"];

/// The database circuit breaker's configuration: 5 consecutive counted failures open it, it
/// stays open 60 s, and 3 trial calls (all of which must succeed) close it again. The rate
/// policies of the breaker are off: only a run of failures opens it. A statement that runs for
/// more than 120 s (the longest call the breaker times) counts as a failure even if it
/// succeeds.
pub fn database_breaker_config() -> CircuitBreakerConfig {
    CircuitBreakerConfig {
        failure_threshold: 5,
        recovery_timeout_secs: 60,
        success_threshold: 3,
        timeout_secs: 120,
        failure_rate_threshold: 0,
        slow_call_rate_threshold: 0,
        ..CircuitBreakerConfig::for_environment(Environment::Production)
    }
}

/// Whether `error` is a failure of the database, which the circuit breaker counts: a lost or
/// refused connection, a checkout that failed or timed out, a statement that timed out, and a
/// server error of the classes in which the server itself failed (`08`, `53`, `57`, `58`, `F0`,
/// `XX`). Validation and security refusals and errors in the statement (syntax, constraint,
/// data, permissions) are the caller's and do not count.
pub fn counts_against_database(error: &OnexError) -> bool {
    match error.code() {
        ErrorCode::DatabaseConnectionFailed | ErrorCode::DatabaseOperationError | ErrorCode::OperationTimeout => true,
        ErrorCode::DatabaseQueryError => match error.details().get("sqlstate").and_then(Value::as_str) {
            // No answer from the server: the statement timed out or the driver failed.
            None => true,
            Some(state) => SERVER_FAILURE_CLASSES.iter().any(|class| state.starts_with(class)),
        },
        _ => false,
    }
}

/// Implements the operations of `node_postgres_adapter_effect`.
pub struct PostgresAdapter {
    /// The contract's dependencies, resolved from the container.
    pub dependencies: Dependencies,
    guard: QueryGuard,
    breaker: CircuitBreaker,
    /// The statement timeout of a request that asks for none: the pool's command timeout,
    /// within the guard's limit.
    default_timeout: Duration,
}

/// A failure as the output and the event carry it: the code and the sanitized message.
#[derive(Debug, Clone)]
struct Failure {
    code: ErrorCode,
    message: String,
}

impl PostgresAdapter {
    /// The adapter with the guard configured by `env` (`DEPLOYMENT_ENVIRONMENT`,
    /// `POSTGRES_ADAPTER_*`; see `onex_runtime::postgres::guard::limits`). A bad setting, or
    /// production without an event publisher, is a `CONFIGURATION_ERROR`.
    pub fn with_env(container: &Container, env: &dyn EnvSource) -> Result<Self, OnexError> {
        Self::with_guard(container, QueryGuard::from_env(env)?)
    }

    /// The adapter with `guard`.
    pub fn with_guard(container: &Container, guard: QueryGuard) -> Result<Self, OnexError> {
        let dependencies = Dependencies::resolve(container)?;
        if dependencies.protocol_event_bus.is_none() {
            if guard.environment() == Environment::Production {
                return Err(OnexError::configuration(format!(
                    "{NODE} needs an event publisher (protocol_event_bus) in production: its callers wait for its events"
                ))
                .with_detail("dependency", "protocol_event_bus"));
            }
            tracing::warn!(
                target: LOG_TARGET,
                environment = %guard.environment(),
                "no event publisher is registered: the adapter answers requests but publishes no events"
            );
        }
        let breaker = CircuitBreaker::new(database_breaker_config())?.with_classifier(counts_against_database);
        let pool_timeout = dependencies.postgres_connection_manager.config().command_timeout_secs;
        let max_timeout = guard.config().max_timeout;
        let default_timeout = Duration::try_from_secs_f64(pool_timeout).map_or(max_timeout, |t| t.min(max_timeout));
        Ok(Self { dependencies, guard, breaker, default_timeout })
    }

    /// The query guard.
    pub fn guard(&self) -> &QueryGuard {
        &self.guard
    }

    /// The database circuit breaker (its state, metrics and transitions).
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    fn pool(&self) -> &onex_runtime::postgres::PostgresConnectionManager {
        &self.dependencies.postgres_connection_manager
    }

    /// Guard, breaker, statement; with the statement's hash once the guard computed it.
    async fn run_query(
        &self,
        request: Option<&QueryRequest>,
        ctx: &Context,
    ) -> (Option<u64>, Result<QueryResult, OnexError>) {
        let Some(request) = request else {
            let error =
                OnexError::validation("query_request is required by query").with_detail("field", "query_request");
            return (None, Err(error));
        };
        let params = request.parameters.as_deref().unwrap_or_default();
        let checked = match self.guard.check(&request.query, params, request.timeout_seconds) {
            Ok(checked) => checked,
            // A refused statement is hashed here, off the path of the statements that run.
            Err(e) => return (Some(query_hash(&request.query)), Err(e)),
        };
        let hash = Some(checked.query_hash);
        if ctx.expired() {
            return (hash, Err(OnexError::new(ErrorCode::OperationTimeout, "the request's deadline has passed")));
        }
        let permit = match self.breaker.try_acquire() {
            Ok(permit) => permit,
            Err(rejected) => return (hash, Err(breaker_refusal(rejected))),
        };
        let options = QueryOptions {
            timeout: Some(checked.timeout.unwrap_or(self.default_timeout)),
            deadline: ctx.deadline(),
            record_metrics: request.record_metrics,
        };
        let result = self.pool().execute_query_with(&request.query, params, options).await;
        permit.record(&result);
        (hash, result)
    }

    /// The output's form of `error`: a deadline that passed is OPERATION_TIMEOUT; any text is
    /// sanitized (with sanitization switched off, outside production, passwords are still
    /// masked).
    fn failure(&self, error: &OnexError, ctx: &Context, operation: Operation) -> Failure {
        let database = matches!(
            error.code(),
            ErrorCode::DatabaseQueryError
                | ErrorCode::DatabaseOperationError
                | ErrorCode::DatabaseConnectionFailed
                | ErrorCode::OperationTimeout
        );
        if database && ctx.expired() {
            return Failure {
                code: ErrorCode::OperationTimeout,
                message: format!("{operation} did not finish before the request's deadline and was cancelled"),
            };
        }
        let mut text = error.message().to_owned();
        if let Some(source) = error.source_message() {
            text.push_str(": ");
            text.push_str(&source);
        }
        Failure { code: error.code(), message: self.sanitize(&text) }
    }

    fn sanitize(&self, text: &str) -> String {
        if self.guard.config().sanitize_errors { sanitize_error_message(text) } else { sanitize_message(text) }
    }

    /// The event of an operation, carrying the request's trace context.
    fn event(event_type: &'static str, correlation_id: uuid::Uuid, payload: Value, ctx: &Context) -> OnexEvent {
        let mut event = OnexEvent::new(event_type, NODE, correlation_id, payload);
        ctx.stamp_event(&mut event, NODE);
        event
    }

    /// Publishes `event` (of `event_type`) to `bus`. The failure of the publish, or its
    /// missing acknowledgement at the deadline, comes back sanitized. The event of a failure
    /// whose deadline has passed goes out in the background instead, while the answer leaves
    /// now.
    async fn publish(
        &self,
        bus: &Arc<dyn EventPublisher>,
        event_type: &'static str,
        event: OnexEvent,
        ctx: &Context,
        reports_failure: bool,
    ) -> Result<(), Failure> {
        if reports_failure && ctx.expired() {
            publish_late(Arc::clone(bus), event);
            return Ok(());
        }
        let correlation_id = event.correlation_id;
        let failure = match within(bus.publish(event), ctx.deadline()).await {
            Some(Ok(())) => return Ok(()),
            Some(Err(e)) => {
                let mut text = e.message().to_owned();
                if let Some(source) = e.source_message() {
                    text.push_str(": ");
                    text.push_str(&source);
                }
                format!("the {event_type} event could not be published: {}", self.sanitize(&text))
            }
            None => format!("the {event_type} event was not acknowledged before the request's deadline"),
        };
        tracing::warn!(target: LOG_TARGET, %correlation_id, event_type, error = %failure, "publishing an event failed");
        Err(Failure { code: ErrorCode::IntegrationServiceUnavailable, message: failure })
    }

    /// Marks a health report degraded by the pool's failure ratio and the breaker, and
    /// sanitizes its errors.
    fn judge(&self, health: &mut PostgresHealth) -> f64 {
        let stats = &health.connection_pool;
        let attempts = stats.checkouts.saturating_add(stats.failed_connections);
        let ratio = if attempts == 0 { 0.0 } else { stats.failed_connections as f64 / attempts as f64 };
        if ratio > FAILED_CONNECTION_RATIO_LIMIT {
            health.errors.push(format!(
                "{:.1} % of the pool's checkouts and connects failed, over the limit of {:.0} %",
                ratio * 100.0,
                FAILED_CONNECTION_RATIO_LIMIT * 100.0
            ));
            if health.status == HealthStatus::Healthy {
                health.status = HealthStatus::Degraded;
            }
        }
        if !self.breaker.is_healthy() {
            health.errors.push(format!("the database circuit breaker is {}", self.breaker.state().as_str()));
            if health.status == HealthStatus::Healthy {
                health.status = HealthStatus::Degraded;
            }
        }
        for error in &mut health.errors {
            *error = self.sanitize(error);
        }
        ratio
    }
}

/// The answer while the breaker refuses calls.
#[cold]
fn breaker_refusal(rejected: Rejected) -> OnexError {
    let message = match rejected.state {
        CircuitBreakerState::HalfOpen => {
            "Database circuit breaker is HALF_OPEN: its trial calls are in flight, so this call was refused".to_owned()
        }
        CircuitBreakerState::ForcedOpen => "Database circuit breaker is OPEN: an operator forced it open".to_owned(),
        _ => match rejected.retry_after {
            Some(wait) => format!(
                "Database circuit breaker is OPEN: the database failed repeatedly; calls are refused for another {} s",
                wait.as_secs().max(1)
            ),
            None => "Database circuit breaker is OPEN: the database failed repeatedly".to_owned(),
        },
    };
    OnexError::new(ErrorCode::IntegrationServiceUnavailable, message)
        .with_detail("circuit_state", rejected.state.as_str())
}

/// The request's correlation id, the context's when it has none; the nil UUID is refused.
fn correlation_id(requested: Option<uuid::Uuid>, ctx: &Context) -> Result<uuid::Uuid, OnexError> {
    match requested {
        Some(id) if id.is_nil() => {
            Err(OnexError::validation("correlation_id must not be the nil UUID: it would correlate unrelated requests")
                .with_detail("field", "correlation_id"))
        }
        Some(id) => Ok(id),
        None => Ok(ctx.correlation_id()),
    }
}

/// Runs `work` to its end, or until `deadline`; `None` when the deadline came first. The timer
/// is registered only when the first poll left the work pending: an event publisher that
/// acknowledges at once (an in-process bus, a buffered producer) costs no timer.
async fn within<F: Future>(work: F, deadline: Option<Instant>) -> Option<F::Output> {
    let mut work = pin!(work);
    let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = work.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        let Some(deadline) = deadline else { return Poll::Pending };
        let timer =
            timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(tokio::time::Instant::from_std(deadline))));
        timer.as_mut().poll(cx).map(|()| None)
    })
    .await
}

/// Publishes `event` in the background, within [`LATE_EVENT_GRACE`]; a failure is logged.
fn publish_late(bus: Arc<dyn EventPublisher>, event: OnexEvent) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!(target: LOG_TARGET, correlation_id = %event.correlation_id, "no runtime to publish a late event on; it is dropped");
        return;
    };
    runtime.spawn(async move {
        let correlation_id = event.correlation_id;
        let event_type = event.event_type.clone();
        match tokio::time::timeout(LATE_EVENT_GRACE, bus.publish(event)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(
                target: LOG_TARGET,
                %correlation_id,
                event_type,
                error = %sanitize_error_message(e.message()),
                "publishing a late event failed"
            ),
            Err(_) => tracing::warn!(target: LOG_TARGET, %correlation_id, event_type, "a late event was not acknowledged in time"),
        }
    });
}

fn millis_since(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

/// The hash as 16 lower-case hex digits, the form the pool's query metrics show.
fn hex(hash: u64) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(16);
    for shift in (0..16).rev() {
        text.push(char::from(DIGITS[((hash >> (shift * 4)) & 0xf) as usize]));
    }
    text
}

/// `payload` of a `postgres.query.completed` event: the figures of a statement that ran (the
/// event type says which operation, and the breaker admitted it).
fn completed_payload(hash: Option<u64>, result: &QueryResult, elapsed_ms: f64) -> Value {
    let mut payload = Map::new();
    payload.insert("database_type".into(), DATABASE_TYPE.into());
    payload.insert("query_hash".into(), hash.map(hex).into());
    payload.insert("row_count".into(), result.row_count.into());
    payload.insert("execution_time_ms".into(), elapsed_ms.into());
    Value::Object(payload)
}

/// `payload` of a `postgres.query.failed` event.
fn failed_payload(hash: Option<u64>, failure: &Failure, elapsed_ms: f64, state: CircuitBreakerState) -> Value {
    let mut payload = Map::new();
    payload.insert("database_type".into(), DATABASE_TYPE.into());
    payload.insert("query_hash".into(), hash.map(hex).into());
    payload.insert("error_code".into(), failure.code.as_str().into());
    payload.insert("error_message".into(), failure.message.clone().into());
    payload.insert("execution_time_ms".into(), elapsed_ms.into());
    payload.insert("circuit_breaker_state".into(), state.as_str().into());
    Value::Object(payload)
}

/// `payload` of a `postgres.health.response` event: status and figures, no names.
fn health_payload(
    health: Option<&PostgresHealth>,
    ratio: f64,
    failure: Option<&Failure>,
    elapsed_ms: f64,
    state: CircuitBreakerState,
) -> Value {
    let mut payload = Map::new();
    payload.insert("database_type".into(), DATABASE_TYPE.into());
    let status = match health.map(|h| h.status) {
        Some(HealthStatus::Healthy) => "healthy",
        Some(HealthStatus::Degraded) => "degraded",
        Some(HealthStatus::Unhealthy) => "unhealthy",
        None => "unknown",
    };
    payload.insert("status".into(), status.into());
    if let Some(health) = health {
        let pool = &health.connection_pool;
        payload.insert("response_time_ms".into(), health.response_time_ms.into());
        payload.insert("failed_connection_ratio".into(), ratio.into());
        payload.insert(
            "pool".into(),
            serde_json::json!({
                "size": pool.size,
                "idle": pool.idle,
                "in_use": pool.in_use,
                "waiting": pool.waiting,
                "max_size": pool.max_size,
                "checkouts": pool.checkouts,
                "failed_connections": pool.failed_connections,
            }),
        );
        payload.insert("errors".into(), health.errors.clone().into());
    }
    if let Some(failure) = failure {
        payload.insert("error_code".into(), failure.code.as_str().into());
        payload.insert("error_message".into(), failure.message.clone().into());
    }
    payload.insert("execution_time_ms".into(), elapsed_ms.into());
    payload.insert("circuit_breaker_state".into(), state.as_str().into());
    Value::Object(payload)
}

impl PostgresAdapterHandler for PostgresAdapter {
    /// The adapter configured from the process environment ([`PostgresAdapter::with_env`]).
    fn new(container: &Container) -> Result<Self, OnexError> {
        Self::with_env(container, &ProcessEnv)
    }

    /// Both operations end their I/O at the context's deadline and answer a timeout inside the
    /// output: `process()` never fails.
    fn times_itself(operation: &OperationSpec) -> bool {
        [&OPERATION_QUERY, &OPERATION_HEALTH_CHECK].iter().any(|timed| timed.name == operation.name)
    }

    async fn query(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        let started = Instant::now();
        let Input { operation_type, correlation_id: requested, query_request, context } = input;
        let (id, hash, result) = match correlation_id(requested, ctx) {
            Ok(id) => {
                let (hash, result) = self.run_query(query_request.as_ref(), ctx).await;
                (id, hash, result)
            }
            Err(e) => (ctx.correlation_id(), None, Err(e)),
        };
        // The failure in the output's form, and whether the database failed (a warning) or
        // the request was refused (not one).
        let result = result.map_err(|e| (self.failure(&e, ctx, operation_type), counts_against_database(&e)));
        let state = self.breaker.state();
        let mut published = Ok(());
        if let Some(bus) = &self.dependencies.protocol_event_bus {
            let elapsed_ms = millis_since(started);
            let (event_type, payload) = match &result {
                Ok(rows) => (QUERY_COMPLETED, completed_payload(hash, rows, elapsed_ms)),
                Err((failure, _)) => (QUERY_FAILED, failed_payload(hash, failure, elapsed_ms, state)),
            };
            let event = Self::event(event_type, id, payload, ctx);
            published = self.publish(bus, event_type, event, ctx, result.is_err()).await;
        }
        let mut output = Output::new(true, operation_type, id, Utc::now(), millis_since(started));
        match (result, published) {
            (Ok(rows), Ok(())) => output.query_result = Some(rows),
            (Ok(rows), Err(publish)) => {
                // The statement ran and its effects stay: its result goes back with the error.
                output.query_result = Some(rows);
                output.success = false;
                output.error_code = Some(publish.code);
                output.error_message = Some(publish.message);
            }
            (Err((failure, database)), published) => {
                if database {
                    tracing::warn!(target: LOG_TARGET, correlation_id = %id, code = %failure.code, error = %failure.message, "query failed");
                } else {
                    tracing::debug!(target: LOG_TARGET, correlation_id = %id, code = %failure.code, error = %failure.message, "query refused");
                }
                output.success = false;
                output.error_code = Some(failure.code);
                output.error_message = Some(match published {
                    Ok(()) => failure.message,
                    Err(_) => format!("{} (its failure event was not published either)", failure.message),
                });
            }
        }
        output.circuit_breaker_state = Some(state);
        output.context = context;
        Ok(output)
    }

    async fn health_check(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        let started = Instant::now();
        let Input { operation_type, correlation_id: requested, context, .. } = input;
        let (id, mut health, mut failure) = match correlation_id(requested, ctx) {
            Ok(id) => match within(Box::pin(self.pool().health_check()), ctx.deadline()).await {
                Some(health) => (id, Some(health), None),
                None => (
                    id,
                    None,
                    Some(Failure {
                        code: ErrorCode::OperationTimeout,
                        message: "health_check did not finish before the request's deadline".to_owned(),
                    }),
                ),
            },
            Err(e) => (ctx.correlation_id(), None, Some(self.failure(&e, ctx, operation_type))),
        };
        let ratio = health.as_mut().map_or(0.0, |health| self.judge(health));
        if let Some(report) = health.as_ref().filter(|h| h.status == HealthStatus::Unhealthy) {
            let first = report.errors.first().map_or("a probe failed", String::as_str);
            failure = Some(Failure {
                code: ErrorCode::IntegrationServiceUnavailable,
                message: format!("the database is unhealthy: {first}"),
            });
        }
        let state = self.breaker.state();
        let payload = health_payload(health.as_ref(), ratio, failure.as_ref(), millis_since(started), state);
        let published = match &self.dependencies.protocol_event_bus {
            Some(bus) => {
                let event = Self::event(HEALTH_RESPONSE, id, payload, ctx);
                self.publish(bus, HEALTH_RESPONSE, event, ctx, failure.is_some()).await
            }
            None => Ok(()),
        };
        let mut output = Output::new(true, operation_type, id, Utc::now(), millis_since(started));
        if let Some(failure) = failure {
            output.success = false;
            output.error_code = Some(failure.code);
            output.error_message = Some(match &published {
                Ok(()) => failure.message,
                Err(_) => format!("{} (its health event was not published either)", failure.message),
            });
        } else if let Err(publish) = published {
            output.success = false;
            output.error_code = Some(publish.code);
            output.error_message = Some(publish.message);
        }
        output.health = health.map(Box::new);
        output.circuit_breaker_state = Some(state);
        output.context = context;
        Ok(output)
    }
}
