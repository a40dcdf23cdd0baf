//! The node traits of the four ONEX kinds.
//!
//! Every node implements [`Node`]: typed input in, typed output or [`OnexError`] out, under a
//! [`Context`]. The kind traits mark which of the four roles a node plays, and the
//! invariants that come with it; the generated code implements exactly one of them, chosen
//! by the contract's `node_type`. [`DynNode`] erases the types for registries and hosts
//! that route JSON (from Kafka, HTTP) to nodes by name.

mod instruments;
mod one_of;
pub mod routing;

use std::future::Future;
use std::pin::Pin;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::context::Context;
use crate::contract::{NodeContract, OperationSpec};
use crate::error::{ErrorCode, OnexError};
use crate::telemetry::{self, Tracing};

pub use instruments::{NodeInstruments, OperationInstruments};
pub use one_of::*;

/// The four ONEX node kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NodeKind {
    /// Talks to the outside world (databases, brokers, files, HTTP).
    Effect,
    /// Pure transformation of its input.
    Compute,
    /// State and aggregation.
    Reducer,
    /// Coordinates other nodes.
    Orchestrator,
}

impl NodeKind {
    /// `EFFECT`, `COMPUTE`, `REDUCER` or `ORCHESTRATOR`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Effect => "EFFECT",
            Self::Compute => "COMPUTE",
            Self::Reducer => "REDUCER",
            Self::Orchestrator => "ORCHESTRATOR",
        }
    }
}

impl std::fmt::Display for NodeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A node: a contract plus an async `process`.
pub trait Node: Send + Sync + 'static {
    /// The contract's `input_model`.
    type Input: DeserializeOwned + Serialize + Send + 'static;
    /// The contract's `output_model`.
    type Output: DeserializeOwned + Serialize + Send + 'static;

    /// The node's contract, as constant data.
    fn contract(&self) -> &'static NodeContract;

    /// Handles one request. Implementations apply the contract's per-operation timeout and
    /// never panic on bad input: they answer with an [`OnexError`].
    fn process(&self, input: Self::Input, ctx: Context)
    -> impl Future<Output = Result<Self::Output, OnexError>> + Send;
}

/// An EFFECT node: the only kind allowed to do I/O. Its contract lists `io_operations`, each
/// with a timeout and an atomicity flag.
pub trait EffectNode: Node {}

/// A COMPUTE node: a pure, deterministic transformation. It may hold caches but no I/O.
pub trait ComputeNode: Node {}

/// A REDUCER node: folds events into state and emits intents for side effects.
pub trait ReducerNode: Node {}

/// An ORCHESTRATOR node: coordinates other nodes, emitting events and intents.
pub trait OrchestratorNode: Node {}

/// A boxed future, as [`DynNode`] returns; re-exported so that node code and tests name it
/// through this crate.
pub use futures::future::BoxFuture;

/// A node with its types erased to JSON, for registries and hosts.
pub trait DynNode: Send + Sync {
    /// The node's contract.
    fn contract(&self) -> &'static NodeContract;

    /// Deserializes `input`, processes it, serializes the output.
    fn process_json(
        &self,
        input: serde_json::Value,
        ctx: Context,
    ) -> BoxFuture<'_, Result<serde_json::Value, OnexError>>;

    /// [`DynNode::process_json`] on JSON text: the input model is decoded straight from
    /// `input` and the output written straight to text, with no `serde_json::Value` between
    /// (for a service that receives and sends JSON, such as the node host, that is two
    /// conversions less per request). Errors are the same as `process_json`'s.
    fn process_json_text<'a>(
        &'a self,
        input: &'a RawValue,
        ctx: Context,
    ) -> BoxFuture<'a, Result<Box<RawValue>, OnexError>>;
}

impl<N: Node> DynNode for N {
    fn contract(&self) -> &'static NodeContract {
        Node::contract(self)
    }

    fn process_json(
        &self,
        input: serde_json::Value,
        ctx: Context,
    ) -> BoxFuture<'_, Result<serde_json::Value, OnexError>> {
        Box::pin(async move {
            let contract = Node::contract(self);
            let input = decode_input::<N::Input>(&input, contract)?;
            let output = self.process(input, ctx).await?;
            serde_json::to_value(output).map_err(|e| unencodable_output(contract, &e))
        })
    }

    fn process_json_text<'a>(
        &'a self,
        input: &'a RawValue,
        ctx: Context,
    ) -> BoxFuture<'a, Result<Box<RawValue>, OnexError>> {
        Box::pin(async move {
            let contract = Node::contract(self);
            let input = decode_input_text::<N::Input>(input, contract)?;
            let output = self.process(input, ctx).await?;
            serde_json::value::to_raw_value(&output).map_err(|e| unencodable_output(contract, &e))
        })
    }
}

fn unencodable_output(contract: &NodeContract, error: &serde_json::Error) -> OnexError {
    OnexError::new(
        ErrorCode::InternalError,
        format!("cannot serialize {} of {}: {error}", contract.output_model, contract.name),
    )
}

/// Decodes a JSON input. An input that does not match names the field it failed on (as a
/// path like `messages[2].topic`, also in the `field` detail): serde's own error names a missing
/// field but not a field of the wrong type. The path is tracked only on the error path, so a
/// valid input costs one plain decode.
fn decode_input<T: serde::de::DeserializeOwned>(
    input: &serde_json::Value,
    contract: &NodeContract,
) -> Result<T, OnexError> {
    T::deserialize(input)
        .or_else(|_| serde_path_to_error::deserialize::<_, T>(input).map_err(|e| mismatch(contract, e)))
}

/// [`decode_input`] from JSON text.
fn decode_input_text<T: serde::de::DeserializeOwned>(
    input: &RawValue,
    contract: &NodeContract,
) -> Result<T, OnexError> {
    serde_json::from_str(input.get()).or_else(|_| {
        serde_path_to_error::deserialize::<_, T>(&mut serde_json::Deserializer::from_str(input.get()))
            .map_err(|e| mismatch(contract, e))
    })
}

/// The error of an input that does not match the input model, naming the field.
fn mismatch(contract: &NodeContract, error: serde_path_to_error::Error<serde_json::Error>) -> OnexError {
    let path = error.path().to_string();
    let at = if path == "." { String::new() } else { format!(" at `{path}`") };
    OnexError::validation(format!(
        "input does not match {} of {}{at}: {}",
        contract.input_model,
        contract.name,
        error.inner()
    ))
    .with_detail("field", path)
}

/// Who bounds an operation by its deadline.
enum Timing {
    /// The handler, under the narrowed deadline of its context.
    Handler,
    /// The node, with a timer until `deadline`, `limit` after the operation started (no timer
    /// when that instant is past what the clock can hold).
    Node { limit: std::time::Duration, deadline: Option<tokio::time::Instant> },
}

impl Timing {
    fn node(ctx: &Context, operation: &OperationSpec, started: tokio::time::Instant) -> Self {
        let limit = ctx.budget(operation.timeout);
        Self::Node { limit, deadline: started.checked_add(limit) }
    }
}

/// Runs one operation of `node` as `timing` says: under the operation's contract timeout,
/// capped by the time left before the request's deadline, so every node answers a slow handler
/// the same way (`OPERATION_TIMEOUT` naming the node, the operation and the limit); or, when
/// the handler times the operation itself, without a timer: a timer costs each request a
/// registration in tokio's timer wheel (callgrind: ~600 of 16,700 instructions per PostgreSQL
/// node request), and the handler then answers [`timed_out`] itself.
///
/// Takes the work pinned where the caller keeps it: a handler future is kilobytes, and moved by
/// value through the timeout, the map and the caller's await it was copied several times per
/// request (callgrind: pinning saved 813 of 17,190 instructions per PostgreSQL node request).
fn run_timed<'w, T, W>(
    node: &'static str,
    operation: &'static OperationSpec,
    timing: Timing,
    work: Pin<&'w mut W>,
) -> impl Future<Output = Result<T, OnexError>> + 'w
where
    W: Future<Output = Result<T, OnexError>>,
{
    use futures::FutureExt as _;
    use futures::future::Either;
    let Timing::Node { limit, deadline: Some(deadline) } = timing else {
        return Either::Left(work);
    };
    // A combinator, not an `async move` block: the block would hold the timeout future twice
    // (as its capture and as the awaited value).
    Either::Right(
        tokio::time::timeout_at(deadline, work)
            .map(move |outcome| outcome.unwrap_or_else(|_| Err(timed_out(node, operation, limit)))),
    )
}

/// The answer to an operation that outlived `limit`: `OPERATION_TIMEOUT` naming the node, the
/// operation and the limit. [`dispatch`] gives it for the operations the node times; a handler
/// that times an operation itself (`times_itself`) gives it when the deadline ended the work.
pub fn timed_out(node: &'static str, operation: &'static OperationSpec, limit: std::time::Duration) -> OnexError {
    let millis = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
    OnexError::new(ErrorCode::OperationTimeout, format!("{node}.{} did not finish within {millis} ms", operation.name))
        .with_detail("node", node)
        .with_detail("operation", operation.name)
        .with_detail("timeout_ms", millis)
}

/// Runs one operation of `node` for a request: `method` of `handler` on `input`, under the
/// operation's contract timeout (capped by the request's deadline) unless the handler times the
/// operation itself (`handler_times_it`, `times_itself` in the generated handler trait): then
/// the handler's context has its deadline narrowed to that timeout and no timer runs. Generated
/// nodes call it once per request with the handler trait's method (`H::query`) or, when the
/// input names its operation, a function that picks the method and wraps its future in a
/// [`OneOf2`]…[`OneOf16`]; the handler's future stays pinned inside this one.
///
/// `instruments` say what else is recorded (see [`NodeInstruments`]). With their tracing
/// enabled the operation runs in a span named `{node}.{operation}`, a child of the
/// OpenTelemetry context current when it is called or, without one, of the request's
/// [`Context::trace`]; the handler's context carries the new span as its trace, and spans the
/// handler's work starts (statements, messages) are its children. An error answer is recorded
/// on the span with ERROR status. With the operation's series, the operation is counted in
/// flight while it runs, and its answer counted by outcome and timed from this call on.
///
/// The clock is read once to start the operation, for its deadline and its series alike: a
/// read costs twice what the series' atomics cost together (~27 ns against ~13 ns on the
/// project's machine).
///
/// A plain function returning an `async move` block, not an `async fn`: an `async fn` moves
/// its arguments into locals as it starts, and its future keeps both copies (the context,
/// 104 bytes, was stored three times with its narrowed and traced rebindings). The block uses
/// what it captured in place, so every in-flight request carries one context.
#[allow(clippy::too_many_arguments, clippy::manual_async_fn)]
pub fn dispatch<H, I, T, M>(
    node: &'static str,
    operation: &'static OperationSpec,
    handler_times_it: bool,
    handler: &H,
    instruments: OperationInstruments<'_>,
    input: I,
    mut ctx: Context,
    method: M,
) -> impl Future<Output = Result<T, OnexError>>
where
    H: ?Sized,
    M: AsyncFnOnce(&H, I, &Context) -> Result<T, OnexError>,
{
    async move {
        // The handler's deadline is on the process clock, the node's timer on tokio's (the
        // same clock unless a test paused tokio's).
        let (timing, started) = if handler_times_it {
            let now = std::time::Instant::now();
            ctx = ctx.narrowed_from(operation.timeout, now);
            (Timing::Handler, now)
        } else {
            let now = tokio::time::Instant::now();
            (Timing::node(&ctx, operation, now), now.into_std())
        };
        // The answer waits in a local until it is recorded. Measured worse (callgrind,
        // PostgreSQL node, instructions per request without series): recording it as it
        // passes (`inspect`), ~190 more; awaiting it bare in one arm and wrapped in the other,
        // ~540 more, as the node's future grew and is copied whole when the generated
        // `process` awaits it.
        let timer = instruments.start(operation.name, started);
        let tracing = instruments.tracing;
        let result = if !tracing.is_enabled() {
            let work = std::pin::pin!(method(handler, input, &ctx));
            run_timed(node, operation, timing, work).await
        } else {
            let mut span = operation_span(tracing, node, operation, &mut ctx);
            let work = std::pin::pin!(method(handler, input, &ctx));
            let result = span.run(run_timed(node, operation, timing, work)).await;
            if let Err(error) = &result {
                span.record_error(error);
            }
            result
        };
        if let Some(timer) = timer {
            timer.finish(result.is_ok());
        }
        result
    }
}

/// Starts the span of one operation and makes `ctx` carry it.
fn operation_span(
    tracing: &Tracing,
    node: &'static str,
    operation: &'static OperationSpec,
    ctx: &mut Context,
) -> telemetry::operation::Operation {
    // The name is looked up only for a recorded span: an unsampled one has none.
    let name = || span_name(node, operation).into();
    let (mut span, trace) = tracing.operation(name, ctx.trace(), ctx.correlation_id(), 4);
    if let Some(correlation) = span.correlation_value() {
        span.set_attributes([
            telemetry::KeyValue::new("onex.node", node),
            telemetry::KeyValue::new("onex.operation", operation.name),
            telemetry::KeyValue::new("correlation_id", correlation),
            telemetry::KeyValue::new("environment", tracing.environment_value()),
        ]);
    }
    if let Some(trace) = trace {
        ctx.set_trace(trace);
    }
    span
}

/// `{node}.{operation}`, made once per operation and thread: formatting it per request cost
/// about a thousand instructions (callgrind), a twentieth of a PostgreSQL node request. The
/// names live as long as the process, one per operation a thread has run.
fn span_name(node: &'static str, operation: &'static OperationSpec) -> &'static str {
    thread_local! {
        static NAMES: std::cell::RefCell<std::collections::HashMap<(usize, usize), &'static str, rustc_hash::FxBuildHasher>> =
            std::cell::RefCell::new(std::collections::HashMap::default());
    }
    let key = (node.as_ptr() as usize, std::ptr::from_ref(operation) as usize);
    NAMES.with(|names| {
        *names
            .borrow_mut()
            .entry(key)
            .or_insert_with(|| Box::leak(format!("{node}.{}", operation.name).into_boxed_str()))
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    static SLOW: OperationSpec = OperationSpec { name: "slow", description: "", timeout: Duration::from_millis(20) };
    static TIMED: NodeContract = NodeContract {
        name: "n",
        version: crate::contract::SemVer::new(1, 0, 0),
        kind: NodeKind::Compute,
        description: "",
        source: "",
        input_model: "u64",
        output_model: "Option<Duration>",
        operations: &[SLOW],
        dependencies: &[],
        io_operations: &[],
        topics: None,
    };

    fn node_timing(ctx: &Context) -> Timing {
        Timing::node(ctx, &SLOW, tokio::time::Instant::now())
    }

    #[tokio::test]
    async fn an_operation_past_its_timeout_answers_operation_timeout() {
        let slow = std::pin::pin!(async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, OnexError>(())
        });
        let err = run_timed("node_x_compute", &SLOW, node_timing(&Context::new()), slow).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::OperationTimeout);
        assert_eq!(err.message(), "node_x_compute.slow did not finish within 20 ms");
    }

    #[tokio::test]
    async fn the_request_deadline_caps_the_contract_timeout() {
        let ctx = Context::new().with_timeout(Duration::from_millis(5));
        let never = std::pin::pin!(std::future::pending::<Result<(), OnexError>>());
        let err = run_timed("n", &SLOW, node_timing(&ctx), never).await.unwrap_err();
        let limit = err.details()["timeout_ms"].as_u64().unwrap();
        assert!(limit <= 5, "the 20 ms contract timeout was not capped: {limit} ms");
        let quick = std::pin::pin!(async { Ok::<_, OnexError>(7) });
        assert_eq!(run_timed("n", &SLOW, node_timing(&Context::new()), quick).await.unwrap(), 7);
    }

    #[tokio::test]
    async fn dispatch_times_out_what_the_node_times_and_narrows_the_deadline_of_what_the_handler_times() {
        let instruments = NodeInstruments::disabled(&TIMED);
        let sleep_then_remaining = async |_: &(), millis: u64, ctx: &Context| {
            tokio::time::sleep(Duration::from_millis(millis)).await;
            Ok::<_, OnexError>(ctx.remaining())
        };
        let err =
            dispatch("n", &SLOW, false, &(), instruments.operation(0), 5_000, Context::new(), sleep_then_remaining)
                .await
                .unwrap_err();
        assert_eq!(err.code(), ErrorCode::OperationTimeout);
        assert_eq!(err.details()["timeout_ms"], 20);
        let short = Context::new().with_timeout(Duration::from_millis(5));
        let err = dispatch("n", &SLOW, false, &(), instruments.operation(0), 5_000, short, sleep_then_remaining)
            .await
            .unwrap_err();
        assert!(err.details()["timeout_ms"].as_u64().unwrap() <= 5, "{err}");
        // The handler times it: no timer, however long it takes, and its deadline is narrowed.
        let remaining =
            dispatch("n", &SLOW, true, &(), instruments.operation(0), 0, Context::new(), sleep_then_remaining)
                .await
                .unwrap()
                .expect("a narrowed deadline");
        assert!(remaining <= SLOW.timeout, "{remaining:?}");
        let late =
            dispatch("n", &SLOW, true, &(), instruments.operation(0), 60, Context::new(), sleep_then_remaining).await;
        assert_eq!(late.unwrap(), Some(Duration::ZERO));
    }

    #[tokio::test]
    async fn an_operation_the_handler_times_gets_the_narrowed_deadline_and_no_timer() {
        let ctx = Context::new().narrowed_from(SLOW.timeout, std::time::Instant::now());
        assert!(ctx.remaining().unwrap() <= SLOW.timeout);
        // Past the 20 ms contract timeout, and still answered: the node started no timer.
        let slow = std::pin::pin!(async {
            tokio::time::sleep(Duration::from_millis(60)).await;
            Ok::<_, OnexError>(7)
        });
        assert_eq!(run_timed("n", &SLOW, Timing::Handler, slow).await.unwrap(), 7);
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Order {
        lines: Vec<Line>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Line {
        sku: String,
        quantity: u32,
    }

    #[test]
    fn an_input_of_the_wrong_shape_names_the_field() {
        let ok = serde_json::json!({"lines": [{"sku": "a", "quantity": 1}]});
        assert_eq!(decode_input::<Order>(&ok, &TIMED).unwrap().lines.len(), 1);
        let wrong_type = serde_json::json!({"lines": [{"sku": "a", "quantity": 1}, {"sku": "b", "quantity": "two"}]});
        let e = decode_input::<Order>(&wrong_type, &TIMED).unwrap_err();
        assert_eq!(e.code(), ErrorCode::ValidationError);
        assert!(e.message().contains("at `lines[1].quantity`"), "{e}");
        assert_eq!(e.details()["field"], "lines[1].quantity");
        let missing = serde_json::json!({"lines": [{"quantity": 1}]});
        let e = decode_input::<Order>(&missing, &TIMED).unwrap_err();
        assert!(e.message().contains("missing field `sku`"), "{e}");
    }

    #[test]
    fn json_text_decodes_as_a_value_does_and_names_the_same_field() {
        let text = |v: &serde_json::Value| serde_json::value::to_raw_value(v).unwrap();
        let ok = serde_json::json!({"lines": [{"sku": "a", "quantity": 1}]});
        assert_eq!(decode_input_text::<Order>(&text(&ok), &TIMED).unwrap().lines[0].sku, "a");
        for wrong in [
            serde_json::json!({"lines": [{"sku": "a", "quantity": 1}, {"sku": "b", "quantity": "two"}]}),
            serde_json::json!({"lines": [{"quantity": 1}]}),
            serde_json::json!([1]),
        ] {
            let from_value = decode_input::<Order>(&wrong, &TIMED).unwrap_err();
            let from_text = decode_input_text::<Order>(&text(&wrong), &TIMED).unwrap_err();
            assert_eq!(from_text.details()["field"], from_value.details()["field"], "{wrong}");
            assert_eq!(from_text.code(), ErrorCode::ValidationError);
        }
    }
}
