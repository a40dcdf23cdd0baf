//! What a node records about its operations: a span per operation ([`Tracing`]) and, when the
//! process has a [`MetricsRegistry`], three Prometheus series per operation, labelled
//! `node` (the contract's name) and `operation`:
//! - `onex_node_operations_total{outcome="ok"|"error"}`: operations answered, by outcome; every
//!   `Err` answer (an `OPERATION_TIMEOUT` too) is an `error`;
//! - `onex_node_operations_in_flight`: operations started and not yet answered;
//! - `onex_node_operation_duration_seconds`: a histogram over [`LATENCY_SECONDS`] of the time
//!   from dispatch to the answer.
//!
//! Invariants:
//! - The families exist once per registry ([`MetricsRegistry::shared`]); every node of the
//!   process adds its own label values to them, and two instances of one node share their
//!   series.
//! - A node resolves its handles once, when it is built: one slot per operation of its
//!   contract, in the contract's order. A request indexes its slot and touches atomics only:
//!   no lock, no lookup, no allocation. Without a registry it pays one branch.
//! - Every series of every operation exists from the node's construction on (zero until used),
//!   so a rate over it is defined from the first scrape.
//! - An operation dropped before it answers (its caller gave up) leaves the in-flight gauge and
//!   records neither an outcome nor a duration.
//!
//! [`LATENCY_SECONDS`]: crate::metrics::LATENCY_SECONDS

use std::time::Instant;

use crate::container::Container;
use crate::contract::NodeContract;
use crate::error::OnexError;
use crate::metrics::{Counter, Family, Gauge, Histogram, MetricsRegistry};
use crate::telemetry::Tracing;

/// The family of operations answered (`_total` is added by the exposition).
pub const OPERATIONS: &str = "onex_node_operations";
/// The family of operations in flight.
pub const IN_FLIGHT: &str = "onex_node_operations_in_flight";
/// The family of operation durations.
pub const DURATION: &str = "onex_node_operation_duration_seconds";

/// `node`, `operation`.
type OperationLabels = [(&'static str, &'static str); 2];
/// `node`, `operation`, `outcome`.
type OutcomeLabels = [(&'static str, &'static str); 3];

/// The node families of one registry, shared by every node of the process.
struct NodeFamilies {
    operations: Family<OutcomeLabels, Counter>,
    in_flight: Family<OperationLabels, Gauge>,
    duration: Family<OperationLabels, Histogram, fn() -> Histogram>,
}

impl NodeFamilies {
    fn register(registry: &MetricsRegistry) -> Result<Self, OnexError> {
        let families = Self {
            operations: Family::default(),
            in_flight: Family::default(),
            duration: Family::new_with_constructor(Histogram::latency),
        };
        registry.register(OPERATIONS, "Node operations answered, by outcome", families.operations.clone())?;
        registry.register(IN_FLIGHT, "Node operations started and not yet answered", families.in_flight.clone())?;
        registry.register(
            DURATION,
            "Time from a node operation's dispatch to its answer, in seconds",
            families.duration.clone(),
        )?;
        Ok(families)
    }

    fn operation(&self, node: &'static str, operation: &'static str) -> OperationMetrics {
        let labels = [("node", node), ("operation", operation)];
        let outcome = |outcome| [labels[0], labels[1], ("outcome", outcome)];
        OperationMetrics {
            operation,
            ok: self.operations.get_or_create_owned(&outcome("ok")),
            error: self.operations.get_or_create_owned(&outcome("error")),
            in_flight: self.in_flight.get_or_create_owned(&labels),
            duration: self.duration.get_or_create_owned(&labels),
        }
    }
}

/// The series of one operation of one node: handles into the shared families.
struct OperationMetrics {
    /// The operation's name, to check in debug builds that a request took its own slot.
    operation: &'static str,
    ok: Counter,
    error: Counter,
    in_flight: Gauge,
    duration: Histogram,
}

/// What a node records per operation: the process's [`Tracing`] and, with a
/// [`MetricsRegistry`], the series of each operation of its contract. Generated nodes hold one
/// and pass [`NodeInstruments::operation`] to [`dispatch`](super::dispatch).
pub struct NodeInstruments {
    contract: &'static NodeContract,
    tracing: Tracing,
    /// One slot per operation of the contract, in its order; `None` without a registry.
    metrics: Option<Box<[OperationMetrics]>>,
}

impl NodeInstruments {
    /// Records nothing: no spans, no series.
    pub fn disabled(contract: &'static NodeContract) -> Self {
        Self { contract, tracing: Tracing::disabled(), metrics: None }
    }

    /// The container's [`Tracing`] (or none) and, when the container holds a
    /// [`MetricsRegistry`], the contract's series in it.
    ///
    /// Fails with `CONFIGURATION_ERROR` when a node family's name is taken in that registry by
    /// something other than the nodes.
    pub fn from_container(container: &Container, contract: &'static NodeContract) -> Result<Self, OnexError> {
        let instruments = Self::disabled(contract).with_tracing(Tracing::from_container(container));
        match container.try_resolve::<MetricsRegistry>() {
            Some(registry) => instruments.with_metrics(&registry),
            None => Ok(instruments),
        }
    }

    /// These instruments, recording spans with `tracing`.
    #[must_use]
    pub fn with_tracing(mut self, tracing: Tracing) -> Self {
        self.tracing = tracing;
        self
    }

    /// These instruments, recording the series of every operation of the contract in
    /// `registry` (instead of any registry before).
    ///
    /// Fails with `CONFIGURATION_ERROR` when a node family's name is taken in `registry` by
    /// something other than the nodes.
    pub fn with_metrics(mut self, registry: &MetricsRegistry) -> Result<Self, OnexError> {
        let families = registry.shared(NodeFamilies::register)?;
        let node = self.contract.name;
        self.metrics = Some(self.contract.operations.iter().map(|op| families.operation(node, op.name)).collect());
        Ok(self)
    }

    /// The tracing spans are recorded with.
    pub fn tracing(&self) -> &Tracing {
        &self.tracing
    }

    /// Whether operations are counted and timed in a registry.
    pub fn has_metrics(&self) -> bool {
        self.metrics.is_some()
    }

    /// The instruments of the operation in `slot`: its position in the contract's
    /// `operations`. A slot past them records no series.
    #[inline]
    pub fn operation(&self, slot: usize) -> OperationInstruments<'_> {
        OperationInstruments {
            tracing: &self.tracing,
            metrics: match &self.metrics {
                None => None,
                Some(slots) => slots.get(slot),
            },
        }
    }
}

impl std::fmt::Debug for NodeInstruments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeInstruments")
            .field("node", &self.contract.name)
            .field("tracing", &self.tracing)
            .field("metrics", &self.has_metrics())
            .finish()
    }
}

/// The instruments of one operation of a node, for one request: what
/// [`dispatch`](super::dispatch) records the operation with.
#[derive(Clone, Copy)]
pub struct OperationInstruments<'a> {
    pub(super) tracing: &'a Tracing,
    metrics: Option<&'a OperationMetrics>,
}

impl<'a> OperationInstruments<'a> {
    /// Records spans with `tracing` and no series (for code that dispatches without a node's
    /// instruments, such as tests).
    pub fn tracing_only(tracing: &'a Tracing) -> Self {
        Self { tracing, metrics: None }
    }

    /// Starts timing the operation named `operation`, which started at `started`, when it has
    /// series: counts it in flight until the returned timer is finished or dropped.
    #[inline]
    pub(super) fn start(self, operation: &'static str, started: Instant) -> Option<OperationTimer<'a>> {
        let metrics = self.metrics?;
        debug_assert_eq!(metrics.operation, operation, "a request took another operation's slot");
        metrics.in_flight.inc();
        Some(OperationTimer { metrics, started })
    }
}

impl std::fmt::Debug for OperationInstruments<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperationInstruments")
            .field("tracing", self.tracing)
            .field("operation", &self.metrics.map(|m| m.operation))
            .finish()
    }
}

/// One operation being timed; dropping it unfinished only takes it out of flight.
pub(super) struct OperationTimer<'a> {
    metrics: &'a OperationMetrics,
    started: Instant,
}

impl OperationTimer<'_> {
    /// Records the answer: its outcome and how long it took.
    #[inline]
    pub(super) fn finish(self, ok: bool) {
        self.metrics.duration.observe_duration(self.started.elapsed());
        if ok { &self.metrics.ok } else { &self.metrics.error }.inc();
    }
}

impl Drop for OperationTimer<'_> {
    #[inline]
    fn drop(&mut self) {
        self.metrics.in_flight.dec();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::context::Context;
    use crate::contract::{OperationSpec, SemVer};
    use crate::error::ErrorCode;
    use crate::node::{NodeKind, dispatch};

    static QUERY: OperationSpec = OperationSpec { name: "query", description: "", timeout: Duration::from_secs(5) };
    static PING: OperationSpec = OperationSpec { name: "ping", description: "", timeout: Duration::from_millis(20) };
    static CONTRACT: NodeContract = NodeContract {
        name: "node_probe_effect",
        version: SemVer::new(1, 0, 0),
        kind: NodeKind::Effect,
        description: "",
        source: "",
        input_model: "In",
        output_model: "Out",
        operations: &[QUERY, PING],
        dependencies: &[],
        io_operations: &[],
        topics: None,
    };

    /// Answers `Ok(input)` for a non-negative input, `Err` otherwise, once `gate` lets it.
    struct Handler {
        gate: tokio::sync::Semaphore,
    }

    impl Handler {
        fn open() -> Self {
            Self { gate: tokio::sync::Semaphore::new(1_000) }
        }

        async fn query(&self, input: i64, _: &Context) -> Result<i64, OnexError> {
            // Each request takes a permit for good: one permit lets exactly one through.
            self.gate.acquire().await.expect("the gate is never closed").forget();
            if input < 0 { Err(OnexError::validation("input must not be negative")) } else { Ok(input) }
        }
    }

    /// Runs `query` as a generated node does, in slot 0.
    async fn call(handler: &Handler, instruments: &NodeInstruments, input: i64) -> Result<i64, OnexError> {
        dispatch(CONTRACT.name, &QUERY, false, handler, instruments.operation(0), input, Context::new(), Handler::query)
            .await
    }

    fn line<'t>(text: &'t str, series: &str) -> Option<&'t str> {
        text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
    }

    #[tokio::test]
    async fn a_dispatch_with_a_registry_counts_each_answer_by_outcome_and_times_it() {
        let registry = MetricsRegistry::new("test");
        let instruments = NodeInstruments::disabled(&CONTRACT).with_metrics(&registry).unwrap();
        let handler = Handler::open();
        assert_eq!(call(&handler, &instruments, 7).await.unwrap(), 7);
        assert_eq!(call(&handler, &instruments, -1).await.unwrap_err().code(), ErrorCode::ValidationError);

        let text = registry.encode().unwrap();
        let labels = r#"environment="test",node="node_probe_effect",operation="query""#;
        assert_eq!(
            line(&text, &format!(r#"onex_node_operations_total{{{labels},outcome="ok"}}"#)),
            Some("1"),
            "{text}"
        );
        assert_eq!(
            line(&text, &format!(r#"onex_node_operations_total{{{labels},outcome="error"}}"#)),
            Some("1"),
            "{text}"
        );
        assert_eq!(
            line(&text, &format!("onex_node_operation_duration_seconds_count{{{labels}}}")),
            Some("2"),
            "{text}"
        );
        assert_eq!(line(&text, &format!("onex_node_operations_in_flight{{{labels}}}")), Some("0"), "{text}");
        let slot = &instruments.metrics.as_ref().unwrap()[0];
        assert!(slot.duration.sum() > 0.0, "the answers took no time: {}", slot.duration.sum());
        // The other operation's series exist from the start, at zero.
        let ping = r#"environment="test",node="node_probe_effect",operation="ping""#;
        assert_eq!(line(&text, &format!(r#"onex_node_operations_total{{{ping},outcome="ok"}}"#)), Some("0"), "{text}");
        assert_eq!(line(&text, &format!("onex_node_operation_duration_seconds_count{{{ping}}}")), Some("0"), "{text}");
    }

    #[tokio::test]
    async fn an_operation_past_its_timeout_counts_as_an_error_that_took_the_timeout() {
        let registry = MetricsRegistry::new("test");
        let instruments = NodeInstruments::disabled(&CONTRACT).with_metrics(&registry).unwrap();
        let never = async |_: &Handler, _: (), _: &Context| std::future::pending::<Result<(), OnexError>>().await;
        let handler = Handler::open();
        let err = dispatch(CONTRACT.name, &PING, false, &handler, instruments.operation(1), (), Context::new(), never)
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::OperationTimeout);
        let slot = &instruments.metrics.as_ref().unwrap()[1];
        assert_eq!((slot.ok.get(), slot.error.get(), slot.in_flight.get()), (0, 1, 0));
        assert!(slot.duration.sum() >= PING.timeout.as_secs_f64(), "timed {} s", slot.duration.sum());
    }

    #[tokio::test]
    async fn an_operation_is_in_flight_until_it_answers_or_is_dropped() {
        let registry = MetricsRegistry::new("test");
        let instruments = NodeInstruments::disabled(&CONTRACT).with_metrics(&registry).unwrap();
        let slot = &instruments.metrics.as_ref().unwrap()[0];
        let handler = Handler { gate: tokio::sync::Semaphore::new(0) };

        let mut answered = std::pin::pin!(call(&handler, &instruments, 1));
        assert!(futures::poll!(answered.as_mut()).is_pending());
        assert_eq!(slot.in_flight.get(), 1);
        handler.gate.add_permits(1);
        assert_eq!(answered.await.unwrap(), 1);
        assert_eq!((slot.in_flight.get(), slot.ok.get(), slot.duration.count()), (0, 1, 1));

        let mut dropped = Box::pin(call(&handler, &instruments, 2));
        assert!(futures::poll!(dropped.as_mut()).is_pending());
        assert_eq!(slot.in_flight.get(), 1);
        drop(dropped);
        assert_eq!(slot.in_flight.get(), 0, "a dropped operation stayed in flight");
        assert_eq!(
            (slot.ok.get(), slot.error.get(), slot.duration.count()),
            (1, 0, 1),
            "a dropped operation was counted"
        );
    }

    #[tokio::test]
    async fn a_container_without_a_registry_gives_instruments_without_series() {
        let mut container = Container::new();
        container.register(Arc::new(Tracing::disabled()));
        let instruments = NodeInstruments::from_container(&container, &CONTRACT).unwrap();
        assert!(!instruments.has_metrics());
        assert!(instruments.operation(0).metrics.is_none());
        assert_eq!(call(&Handler::open(), &instruments, 3).await.unwrap(), 3);
    }

    #[tokio::test]
    async fn nodes_built_from_one_container_share_the_families_of_its_registry() {
        let registry = Arc::new(MetricsRegistry::new("test"));
        let mut container = Container::new();
        container.register(Arc::clone(&registry));
        let first = NodeInstruments::from_container(&container, &CONTRACT).unwrap();
        let second = NodeInstruments::from_container(&container, &CONTRACT).unwrap();
        let handler = Handler::open();
        call(&handler, &first, 1).await.unwrap();
        call(&handler, &second, 2).await.unwrap();
        let text = registry.encode().unwrap();
        assert_eq!(text.matches("# TYPE onex_node_operations counter").count(), 1, "{text}");
        let ok =
            r#"onex_node_operations_total{environment="test",node="node_probe_effect",operation="query",outcome="ok"}"#;
        assert_eq!(line(&text, ok), Some("2"), "{text}");
    }

    #[test]
    fn a_registry_that_holds_a_node_family_name_already_is_a_configuration_error() {
        let registry = MetricsRegistry::new("test");
        registry.register(IN_FLIGHT, "something else", Gauge::<i64>::default()).unwrap();
        let err = NodeInstruments::disabled(&CONTRACT).with_metrics(&registry).unwrap_err();
        assert_eq!(err.code(), ErrorCode::ConfigurationError);
        assert!(err.message().contains(IN_FLIGHT), "{err}");
    }

    #[test]
    fn a_slot_past_the_contract_records_nothing() {
        let registry = MetricsRegistry::new("test");
        let instruments = NodeInstruments::disabled(&CONTRACT).with_metrics(&registry).unwrap();
        assert!(instruments.operation(1).metrics.is_some());
        assert!(instruments.operation(2).metrics.is_none());
    }

    /// The cost of the series on the request path, natively: one sample (in flight up and
    /// down, a clock read, the histogram, the counter) and a whole dispatch of an operation
    /// that answers at once, without and with a registry. A measurement, printed; run it in
    /// release: `cargo test -p onex-runtime --release --lib node::instruments -- --ignored --nocapture`.
    /// Under callgrind, the inclusive cost of `samples` and `dispatches` divided by
    /// [`CALLS`] per call gives the instructions of each.
    #[test]
    #[ignore = "a measurement, meaningful in release builds only"]
    fn recording_an_operation_costs_tens_of_nanoseconds() {
        const ROUNDS: usize = 21;
        /// The fewest nanoseconds per call of a round of [`CALLS`] calls over `ROUNDS`: on a
        /// machine shared with other work the quickest round is the one least disturbed.
        fn per_call(mut round: impl FnMut()) -> f64 {
            (0..ROUNDS)
                .map(|_| {
                    let start = Instant::now();
                    round();
                    start.elapsed().as_nanos() as f64 / f64::from(CALLS)
                })
                .fold(f64::INFINITY, f64::min)
        }
        let registry = MetricsRegistry::new("bench");
        let plain = NodeInstruments::disabled(&CONTRACT);
        let metered = NodeInstruments::disabled(&CONTRACT).with_metrics(&registry).unwrap();
        let sample = per_call(|| samples(&metered));
        let handler = Handler::open();
        let without = per_call(|| dispatches::<false>(&handler, &plain));
        let with = per_call(|| dispatches::<true>(&handler, &metered));
        println!(
            "one sample: {sample:.1} ns; dispatch without a registry: {without:.1} ns, with: {with:.1} ns \
             (+{:.1} ns)",
            with - without
        );
        assert_eq!(metered.metrics.as_ref().unwrap()[0].ok.get(), u64::from(CALLS) * (2 * ROUNDS as u64));
        // A ceiling far above the target (50 ns), so that neither a busy machine nor callgrind
        // (~1.2 µs a sample) fails it.
        assert!(sample < 5_000.0, "one sample took {sample} ns");
    }

    /// Calls per round of the measurement.
    const CALLS: u32 = 50_000;

    /// [`CALLS`] samples. The dispatch reads the clock at the start anyway (for the deadline):
    /// a sample adds the read at the end, and the atomics.
    #[inline(never)]
    fn samples(metered: &NodeInstruments) {
        let started = Instant::now();
        for _ in 0..CALLS {
            let timer = std::hint::black_box(metered.operation(0)).start(QUERY.name, std::hint::black_box(started));
            std::hint::black_box(timer).expect("slot 0 has series").finish(true);
        }
    }

    /// [`CALLS`] dispatches of an operation that answers at once; one function per kind of
    /// instruments, so that a profile tells them apart.
    #[inline(never)]
    fn dispatches<const METERED: bool>(handler: &Handler, instruments: &NodeInstruments) {
        assert_eq!(instruments.has_metrics(), METERED);
        for _ in 0..CALLS {
            let instruments = std::hint::black_box(instruments).operation(0);
            let work = dispatch(CONTRACT.name, &QUERY, true, handler, instruments, 1, Context::new(), {
                async |_: &Handler, input: i64, _: &Context| Ok::<_, OnexError>(input)
            });
            assert_eq!(futures::executor::block_on(work).unwrap(), 1);
        }
    }
}
