// The handler of `node_postgres_connection_manager_effect` v1.0.0: Runs queries, transactions and function calls on the shared PostgreSQL connection pool, and reports pool health, connection statistics and per-query metrics.
//
// Created once by `cargo run -p codegen` from contracts/nodes/node_postgres_connection_manager_effect/v1_0_0/contract.yaml.
// From then on this file is owned by people: regeneration never overwrites it.
//
// Every operation runs on the `onex_runtime::postgres::PostgresConnectionManager` resolved
// from the container. Failures of an operation (bad input, SQL errors, checkout errors) are
// answered with `success: false` and `error {code, message}`, as the contract models them;
// only the contract timeout is an `Err` (OPERATION_TIMEOUT: from the node's timer, or for the
// statement operations, which time themselves, from `conclude`). When an event publisher is
// registered, statement operations publish `postgres.query.completed` /
// `postgres.query.failed` with the query hash, never the SQL text or its parameters.

use std::future::Future;
use std::time::{Duration, Instant};

use chrono::Utc;
use onex_runtime::event::OnexEvent;
use onex_runtime::postgres::metrics::query_hash;
use onex_runtime::postgres::{QueryOptions, TransactionOptions};
use onex_runtime::{Container, Context, OnexError, OperationSpec};
use serde_json::{Value, json};

use super::contract::{OPERATION_CALL_FUNCTION, OPERATION_EXECUTE_QUERY, OPERATION_FETCH_ONE, OPERATION_FETCH_VALUE};
use super::handler::{Dependencies, Input, Output, PostgresConnectionManagerHandler};
use super::models::{EnumPostgresConnectionManagerOperation as Operation, ModelPostgresOperationError};

const NODE: &str = "node_postgres_connection_manager_effect";

/// Implements the operations of `node_postgres_connection_manager_effect`.
pub struct PostgresConnectionManager {
    /// The contract's dependencies, resolved from the container.
    pub dependencies: Dependencies,
}

/// What a statement operation produced, before it becomes an [`Output`].
#[derive(Default)]
struct Produced {
    rows: Option<Vec<serde_json::Map<String, Value>>>,
    row: Option<serde_json::Map<String, Value>>,
    value: Option<Value>,
    rows_affected: Option<u64>,
    command_tag: Option<String>,
    column_names: Option<Vec<String>>,
}

impl Produced {
    fn from_result(result: onex_runtime::models::postgres::QueryResult) -> Self {
        Self {
            rows_affected: Some(result.row_count),
            command_tag: result.command_tag,
            column_names: Some(result.column_names),
            rows: Some(result.rows),
            ..Self::default()
        }
    }
}

impl PostgresConnectionManager {
    fn pool(&self) -> &onex_runtime::postgres::PostgresConnectionManager {
        &self.dependencies.postgres_connection_manager
    }

    /// The output skeleton: echoes the request's correlation id (or the context's).
    fn output(&self, input: &Input, ctx: &Context) -> Output {
        Output::new(true, input.operation_type, correlation_id(input, ctx), Utc::now())
    }

    /// Publishes a statement operation's event when an event publisher is registered.
    ///
    /// Runs before [`Self::settle`] builds the output, so the output is never held across an
    /// await: it is built where the handler returns it, not moved through another future.
    async fn announce(
        &self,
        input: &Input,
        ctx: &Context,
        elapsed_ms: f64,
        sql_for_hash: Option<&str>,
        result: &Result<Produced, OnexError>,
    ) {
        if self.dependencies.protocol_event_bus.is_none() {
            return;
        }
        let hash = sql_for_hash.map(|sql| format!("{:016x}", query_hash(sql)));
        let (event_type, payload) = match result {
            Ok(produced) => (
                "postgres.query.completed",
                json!({
                    "operation": input.operation_type.as_str(),
                    "query_hash": hash,
                    "rows_affected": produced.rows_affected,
                    "execution_time_ms": elapsed_ms,
                }),
            ),
            Err(err) => (
                "postgres.query.failed",
                json!({
                    "operation": input.operation_type.as_str(),
                    "query_hash": hash,
                    "error_code": err.code().as_str(),
                    "message": operation_error(err).message,
                    "execution_time_ms": elapsed_ms,
                }),
            ),
        };
        // Boxed: publishing is optional, and its future would otherwise enlarge every request's
        // state.
        Box::pin(self.publish(event_type, correlation_id(input, ctx), payload, ctx)).await;
    }

    /// Turns a statement operation's result into the output.
    fn settle(&self, input: &Input, ctx: &Context, elapsed_ms: f64, result: Result<Produced, OnexError>) -> Output {
        let mut output = self.output(input, ctx);
        output.execution_time_ms = Some(elapsed_ms);
        match result {
            Ok(produced) => {
                output.rows = produced.rows;
                output.row = produced.row;
                output.value = produced.value;
                output.rows_affected = produced.rows_affected;
                output.command_tag = produced.command_tag;
                output.column_names = produced.column_names;
            }
            Err(err) => {
                output.success = false;
                output.error = Some(Box::new(operation_error(&err)));
            }
        }
        output
    }

    /// Publishes an event when a publisher is registered. A publish failure is logged, not
    /// returned: the statement already ran and its result must reach the caller.
    async fn publish(&self, event_type: &str, correlation_id: uuid::Uuid, payload: Value, ctx: &Context) {
        let Some(bus) = &self.dependencies.protocol_event_bus else { return };
        let mut event = OnexEvent::new(event_type, NODE, correlation_id, payload);
        ctx.stamp_event(&mut event, NODE);
        if let Err(e) = bus.publish(event).await {
            tracing::warn!(target: "onex::postgres", error = %e, event_type, "publishing the query event failed");
        }
    }

    /// [`Self::settle`] for a statement operation, which times itself (see `times_itself`): a
    /// failure the context's deadline caused is the node's `OPERATION_TIMEOUT`, as its timer
    /// answers for the operations it times.
    fn conclude(
        &self,
        input: &Input,
        ctx: &Context,
        operation: &'static OperationSpec,
        started: Instant,
        elapsed_ms: f64,
        result: Result<Produced, OnexError>,
    ) -> Result<Output, OnexError> {
        if result.is_err() && ctx.expired() {
            // The deadline was set a moment before `started`: whole milliseconds, rounded up,
            // give back the limit the node narrowed it to (60,000 ms, not 59,999).
            let left = ctx.deadline().map_or(operation.timeout, |d| d.saturating_duration_since(started));
            let millis = u64::try_from(left.as_micros().div_ceil(1000)).unwrap_or(u64::MAX);
            return Err(onex_runtime::node::timed_out(
                NODE,
                operation,
                Duration::from_millis(millis).min(operation.timeout),
            ));
        }
        Ok(self.settle(input, ctx, elapsed_ms, result))
    }

    /// Metadata-only failure output (validation of operations that touch no statement).
    fn failed(&self, input: &Input, ctx: &Context, err: &OnexError) -> Output {
        let mut output = self.output(input, ctx);
        output.success = false;
        output.error = Some(Box::new(operation_error(err)));
        output
    }
}

/// The error as the contract carries it: the stable code and a sanitized message that
/// includes the SQLSTATE when the server reported one.
fn operation_error(err: &OnexError) -> ModelPostgresOperationError {
    let mut message = err.message().to_owned();
    if let Some(source) = err.source_message() {
        message.push_str(": ");
        message.push_str(&source);
    }
    ModelPostgresOperationError { code: err.code(), message }
}

fn required<'a>(value: Option<&'a str>, field: &str, operation: Operation) -> Result<&'a str, OnexError> {
    // Blank means no non-space character: `all` stops at the statement's first one, where
    // `trim` trims both ends (callgrind: ~50 instructions per request).
    match value {
        Some(v) if !v.chars().all(char::is_whitespace) => Ok(v),
        _ => Err(OnexError::validation(format!("{field} is required by {operation}")).with_detail("field", field)),
    }
}

/// Per-call options: the request's timeout (validated) and the context's deadline, which ends
/// the wait for a connection and the statement alike. A request whose deadline had passed at
/// `started` (the operation's clock reading, not a new one) runs nothing.
fn options(input: &Input, ctx: &Context, started: Instant) -> Result<QueryOptions, OnexError> {
    let timeout = match input.timeout_seconds {
        None => None,
        Some(secs) if secs.is_finite() && secs > 0.0 && secs <= 86_400.0 => Some(Duration::from_secs_f64(secs)),
        Some(secs) => {
            return Err(OnexError::validation(format!(
                "timeout_seconds must be a number of seconds in (0, 86400], got {secs}"
            ))
            .with_detail("field", "timeout_seconds"));
        }
    };
    if ctx.expired_at(started) {
        return Err(OnexError::new(onex_runtime::ErrorCode::OperationTimeout, "the request's deadline has passed"));
    }
    Ok(QueryOptions { timeout, deadline: ctx.deadline(), record_metrics: input.record_metrics })
}

/// The request's correlation id, or the context's when the request has none.
fn correlation_id(input: &Input, ctx: &Context) -> uuid::Uuid {
    input.correlation_id.unwrap_or_else(|| ctx.correlation_id())
}

fn millis_since(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

fn params(values: &Option<Vec<Value>>) -> &[Value] {
    values.as_deref().unwrap_or_default()
}

impl PostgresConnectionManagerHandler for PostgresConnectionManager {
    fn new(container: &Container) -> Result<Self, OnexError> {
        Ok(Self { dependencies: Dependencies::resolve(container)? })
    }

    /// Statement operations end the wait for a connection and the statement by the context's
    /// deadline (`options`), so the node needs no timer of its own for them: at tens of
    /// thousands of statements a second that timer was 6 % of the client's instructions per
    /// statement. Transactions, health checks and the rest keep the node's timer.
    fn times_itself(operation: &OperationSpec) -> bool {
        [&OPERATION_EXECUTE_QUERY, &OPERATION_FETCH_ONE, &OPERATION_FETCH_VALUE, &OPERATION_CALL_FUNCTION]
            .iter()
            .any(|timed| timed.name == operation.name)
    }

    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn would store its arguments twice in the future (see onex_runtime::node::dispatch)"
    )]
    fn execute_query(&self, input: Input, ctx: &Context) -> impl Future<Output = Result<Output, OnexError>> + Send {
        async move {
            let started = Instant::now();
            let sql = input.query.as_deref();
            let result = async {
                let sql = required(sql, "query", input.operation_type)?;
                let options = options(&input, ctx, started)?;
                self.pool().execute_query_with(sql, params(&input.parameters), options).await.map(Produced::from_result)
            }
            .await;
            let elapsed_ms = millis_since(started);
            self.announce(&input, ctx, elapsed_ms, sql, &result).await;
            self.conclude(&input, ctx, &OPERATION_EXECUTE_QUERY, started, elapsed_ms, result)
        }
    }

    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn would store its arguments twice in the future (see onex_runtime::node::dispatch)"
    )]
    fn fetch_one(&self, input: Input, ctx: &Context) -> impl Future<Output = Result<Output, OnexError>> + Send {
        async move {
            let started = Instant::now();
            let sql = input.query.as_deref();
            let result = async {
                let sql = required(sql, "query", input.operation_type)?;
                let options = options(&input, ctx, started)?;
                let result = self.pool().execute_query_with(sql, params(&input.parameters), options).await?;
                Ok(Produced {
                    rows_affected: Some(result.row_count),
                    column_names: Some(result.column_names),
                    row: result.rows.into_iter().next(),
                    ..Produced::default()
                })
            }
            .await;
            let elapsed_ms = millis_since(started);
            self.announce(&input, ctx, elapsed_ms, sql, &result).await;
            self.conclude(&input, ctx, &OPERATION_FETCH_ONE, started, elapsed_ms, result)
        }
    }

    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn would store its arguments twice in the future (see onex_runtime::node::dispatch)"
    )]
    fn fetch_value(&self, input: Input, ctx: &Context) -> impl Future<Output = Result<Output, OnexError>> + Send {
        async move {
            let started = Instant::now();
            let sql = input.query.as_deref();
            let result = async {
                let sql = required(sql, "query", input.operation_type)?;
                let options = options(&input, ctx, started)?;
                let value = self.pool().fetch_value_with(sql, params(&input.parameters), options).await?;
                Ok(Produced { value, ..Produced::default() })
            }
            .await;
            let elapsed_ms = millis_since(started);
            self.announce(&input, ctx, elapsed_ms, sql, &result).await;
            self.conclude(&input, ctx, &OPERATION_FETCH_VALUE, started, elapsed_ms, result)
        }
    }

    async fn transaction(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        let started = Instant::now();
        // Rare operations are boxed: the node's `process` future is as large as its largest
        // operation, and every in-flight request carries it.
        let result = Box::pin(async {
            let statements = match input.statements.as_deref() {
                Some(list) if !list.is_empty() => list,
                _ => {
                    return Err(OnexError::validation("statements (at least one) are required by transaction")
                        .with_detail("field", "statements"));
                }
            };
            let options = options(&input, ctx, started)?;
            let tx_options = TransactionOptions {
                isolation: input.isolation,
                read_only: input.read_only,
                deferrable: input.deferrable,
            };
            let mut tx = self.pool().begin(tx_options).await?;
            let mut last = None;
            for (i, statement) in statements.iter().enumerate() {
                // On error `tx` is dropped here, which rolls the transaction back.
                let result = tx
                    .execute_query_with(&statement.query, params(&statement.parameters), options)
                    .await
                    .map_err(|e| e.with_detail("statement_index", i))?;
                last = Some(result);
            }
            tx.commit().await?;
            Ok(last.map(Produced::from_result).unwrap_or_default())
        })
        .await;
        let elapsed_ms = millis_since(started);
        self.announce(&input, ctx, elapsed_ms, None, &result).await;
        Ok(self.settle(&input, ctx, elapsed_ms, result))
    }

    async fn call_function(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        let started = Instant::now();
        let result = Box::pin(async {
            let function = required(input.function_name.as_deref(), "function_name", input.operation_type)?;
            let options = options(&input, ctx, started)?;
            let args = params(&input.arguments);
            self.pool()
                .call_function_with(function, args, input.schema.as_deref(), options)
                .await
                .map(Produced::from_result)
        })
        .await;
        let elapsed_ms = millis_since(started);
        self.announce(&input, ctx, elapsed_ms, None, &result).await;
        self.conclude(&input, ctx, &OPERATION_CALL_FUNCTION, started, elapsed_ms, result)
    }

    async fn health_check(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        let started = Instant::now();
        let health = Box::pin(self.pool().health_check()).await;
        let mut output = self.output(&input, ctx);
        output.execution_time_ms = Some(millis_since(started));
        output.health = Some(Box::new(health));
        Ok(output)
    }

    async fn get_connection_stats(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        let mut output = self.output(&input, ctx);
        output.connection_stats = Some(Box::new(self.pool().connection_stats()));
        Ok(output)
    }

    async fn get_query_metrics(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        if input.limit == 0 {
            let err = OnexError::validation("limit must be at least 1").with_detail("field", "limit");
            return Ok(self.failed(&input, ctx, &err));
        }
        let limit = usize::try_from(input.limit).unwrap_or(usize::MAX);
        let mut output = self.output(&input, ctx);
        output.query_metrics = Some(Box::new(self.pool().query_metrics(limit)));
        Ok(output)
    }

    async fn clear_metrics(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        let mut output = self.output(&input, ctx);
        output.metrics_cleared = Some(self.pool().clear_metrics());
        Ok(output)
    }
}
