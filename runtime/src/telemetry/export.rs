//! The span export queue: a bounded queue between the threads that end spans and one export
//! thread that owns the exporter.
//!
//! Invariants:
//! - Ending a span never blocks and never allocates beyond the span itself: `push` is one
//!   `try_send` of the boxed span (the runtime's spans are built in their box; an SDK span's
//!   `on_end` boxes it). A full queue (collector down or slow) drops the span and counts it.
//! - Ending a span does not wake the export thread: it sleeps until its next tick
//!   (`schedule_delay`) unless a full batch is waiting, and then exactly one wake-up is sent.
//!   A wake-up per span cost the Kafka producer a context switch per sampled message (ten
//!   times the switches of an untraced run, and half its throughput at sampling 0.1).
//! - The exporter runs only on the export thread, inside that thread's own single-threaded
//!   tokio runtime. Nothing here needs the caller's runtime, so ending a span from a plain
//!   thread, a `block_on` or a runtime that is shutting down works the same (the SDK's own
//!   batch processor panics with "no reactor running" when a gRPC exporter is driven from a
//!   thread without one).
//! - Full batches are exported when they fill; every `schedule_delay` the export thread exports
//!   whatever is queued at that tick (what arrives meanwhile waits for the next one), so no span
//!   waits much longer than that, even while spans keep arriving.
//! - One export at a time, each bounded by `export_timeout`; a failed export drops its batch
//!   and counts it (the OTLP exporters retry inside that bound themselves). An exporter that
//!   panics loses its batch, counted the same way, not the export thread.
//! - `flush` and `shutdown` are answered by the export thread after it exported what was queued
//!   before them; `flush` fails when any span since the previous flush was dropped. `shutdown` is bounded by its deadline even when the collector hangs: an export
//!   in flight is cut at the deadline, what is still queued then is counted as dropped, and no
//!   span ended after it is exported.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use opentelemetry::Context;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};

/// Limits of the export queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Spans waiting for export; the next one is dropped and counted.
    pub max_queued: usize,
    /// Spans per export call.
    pub max_batch: usize,
    /// How long a span waits for a batch to fill before it is exported anyway.
    pub schedule_delay: Duration,
    /// Upper bound of one export call, retries included.
    pub export_timeout: Duration,
}

impl Default for QueueLimits {
    /// 2048 queued, batches of 512, exported at least every 500 ms, 10 s per export: the
    /// OpenTelemetry SDK's batch defaults, with a shorter delay so traces show up promptly.
    fn default() -> Self {
        Self {
            max_queued: 2048,
            max_batch: 512,
            schedule_delay: Duration::from_millis(500),
            export_timeout: Duration::from_secs(10),
        }
    }
}

/// What the export queue has done, counted since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExportStats {
    /// Spans handed to the exporter that it accepted.
    pub exported: u64,
    /// Spans dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// Spans dropped because their export failed or timed out.
    pub dropped_export_failed: u64,
    /// Export calls that failed or timed out.
    pub failed_exports: u64,
    /// Spans waiting in the queue now.
    pub queued: u64,
}

impl ExportStats {
    /// Every span that was recorded and will never reach the collector.
    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full + self.dropped_export_failed
    }
}

/// The queue's counters; the metrics collector (module `series`) reads them too.
#[derive(Default)]
pub(crate) struct Counters {
    exported: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_export_failed: AtomicU64,
    failed_exports: AtomicU64,
}

impl Counters {
    /// Spans the exporter accepted.
    pub(crate) fn exported(&self) -> u64 {
        self.exported.load(Ordering::Relaxed)
    }

    /// Spans that will never reach the collector: [`ExportStats::dropped`].
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped_queue_full.load(Ordering::Relaxed) + self.dropped_export_failed.load(Ordering::Relaxed)
    }
}

enum Control {
    /// A full batch is waiting.
    Wake,
    Flush(Sender<OTelSdkResult>),
    Shutdown {
        deadline: Instant,
        done: Sender<OTelSdkResult>,
    },
}

/// How many emptied boxes wait for reuse (see [`QueueProcessor::spare`]): a few batches'
/// worth, a few hundred kilobytes at most.
const SPARE_BOXES: usize = 1024;

/// What an emptied box holds until it is reused, with `queue: None`. It must own no memory:
/// `recorded::start` overwrites a spare box without dropping what it holds.
fn vacant() -> SpanData {
    SpanData {
        span_context: opentelemetry::trace::SpanContext::NONE,
        parent_span_id: opentelemetry::trace::SpanId::INVALID,
        parent_span_is_remote: false,
        span_kind: opentelemetry::trace::SpanKind::Internal,
        name: std::borrow::Cow::Borrowed(""),
        start_time: std::time::SystemTime::UNIX_EPOCH,
        end_time: std::time::SystemTime::UNIX_EPOCH,
        attributes: Vec::new(),
        dropped_attributes_count: 0,
        events: opentelemetry_sdk::trace::SpanEvents::default(),
        links: opentelemetry_sdk::trace::SpanLinks::default(),
        status: opentelemetry::trace::Status::Unset,
        instrumentation_scope: opentelemetry::InstrumentationScope::default(),
    }
}

/// A span in the box it travels in: built there when the runtime records it (see
/// `super::recorded`), with the queue it goes to when it ends; `queue` is `None` once queued
/// (and for an SDK span, which the provider hands to `on_end`).
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) span: SpanData,
    pub(crate) queue: Option<Arc<QueueProcessor>>,
}

/// A [`SpanProcessor`] that queues ended spans for the export thread.
pub(crate) struct QueueProcessor {
    /// Boxed: a span is a few hundred bytes, moved several times on its way (into the queue's
    /// slot and out); a box moves as a pointer, and the runtime's own spans are built in it.
    spans: Sender<Box<Finished>>,
    /// Boxes of exported spans, emptied by the export thread, for the next spans to be built
    /// in (see [`QueueProcessor::spare`]).
    spare: Receiver<Box<Finished>>,
    control: Sender<Control>,
    counters: Arc<Counters>,
    /// A [`Control::Wake`] was sent and the export thread has not taken it yet.
    wake_pending: Arc<AtomicBool>,
    closed: AtomicBool,
    /// The shutdown deadline, once shutdown began: cuts an export in flight.
    shutdown_deadline: tokio::sync::watch::Sender<Option<Instant>>,
    limits: QueueLimits,
}

impl fmt::Debug for QueueProcessor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueProcessor").field("limits", &self.limits).field("stats", &self.stats()).finish()
    }
}

/// Builds the exporter on the export thread (inside its runtime, which the gRPC exporter
/// needs) and reports whether that worked.
pub(crate) type MakeExporter<E> = Box<dyn FnOnce() -> Result<E, String> + Send>;

impl QueueProcessor {
    /// Starts the export thread with the exporter `make` builds there, and waits until it is
    /// built: a bad endpoint is an error here, at start-up, not a log line later. The exporter
    /// is given `resource` before its first export (the OTLP exporters send it with every
    /// batch; the provider's own `set_resource` call cannot reach an exporter on another thread).
    pub(crate) fn start<E: SpanExporter + 'static>(
        make: MakeExporter<E>,
        resource: Resource,
        limits: QueueLimits,
    ) -> Result<Self, String> {
        let (spans, span_rx) = crossbeam_channel::bounded(limits.max_queued.max(1));
        let (spare_tx, spare) = crossbeam_channel::bounded(SPARE_BOXES);
        let (control, control_rx) = crossbeam_channel::unbounded();
        let (ready, ready_rx) = crossbeam_channel::bounded(1);
        let counters = Arc::new(Counters::default());
        let (shutdown_deadline, deadline_rx) = tokio::sync::watch::channel(None);
        let wake_pending = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            spans: span_rx,
            spare: spare_tx,
            control: control_rx,
            wake_pending: wake_pending.clone(),
            counters: counters.clone(),
            shutdown_deadline: deadline_rx,
            limits,
        };
        thread::Builder::new()
            .name("onex-span-export".into())
            .spawn(move || worker.run(make, resource, ready))
            .map_err(|e| format!("cannot start the span export thread: {e}"))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self {
                spans,
                spare,
                control,
                counters,
                wake_pending,
                closed: AtomicBool::new(false),
                shutdown_deadline,
                limits,
            }),
            Ok(Err(problem)) => Err(problem),
            Err(_) => Err("the span export thread stopped while building the exporter".into()),
        }
    }

    pub(crate) fn stats(&self) -> ExportStats {
        ExportStats {
            exported: self.counters.exported.load(Ordering::Relaxed),
            dropped_queue_full: self.counters.dropped_queue_full.load(Ordering::Relaxed),
            dropped_export_failed: self.counters.dropped_export_failed.load(Ordering::Relaxed),
            failed_exports: self.counters.failed_exports.load(Ordering::Relaxed),
            queued: self.spans.len() as u64,
        }
    }

    /// The counters, shared: they stay readable after the queue stops.
    pub(crate) fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    /// Queues a span that ended (the SDK's, through `on_end`, or one the runtime recorded
    /// itself, see `super::recorded`): never blocks; a full queue drops it and counts it.
    pub(crate) fn push(&self, span: Box<Finished>) {
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        match self.spans.try_send(span) {
            Ok(()) => {
                if self.spans.len() >= self.limits.max_batch
                    && !self.wake_pending.load(Ordering::Relaxed)
                    && !self.wake_pending.swap(true, Ordering::AcqRel)
                {
                    let _ = self.control.send(Control::Wake);
                }
            }
            Err(TrySendError::Full(_)) => {
                self.counters.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
            }
            // The export thread is gone (it cannot be, short of a bug): the span is lost, and
            // counted so the loss shows.
            Err(TrySendError::Disconnected(_)) => {
                self.counters.dropped_export_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// An emptied box of an exported span, when one is waiting, to build the next span in.
    ///
    /// Spans are built by the threads that record them and freed on the export thread, so the
    /// allocator's per-thread cache of the recording thread never gets their memory back and
    /// each new box took its slow path (callgrind: ~250 instructions an allocation); taking a
    /// spare box back is one channel receive.
    pub(crate) fn spare(&self) -> Option<Box<Finished>> {
        self.spare.try_recv().ok()
    }

    /// Whether shutdown began: spans ended from now on are not exported.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    fn ask(&self, make: impl FnOnce(Sender<OTelSdkResult>) -> Control, wait: Duration) -> OTelSdkResult {
        let (done, answer) = crossbeam_channel::bounded(1);
        self.control.send(make(done)).map_err(|_| OTelSdkError::AlreadyShutdown)?;
        match answer.recv_timeout(wait) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => Err(OTelSdkError::Timeout(wait)),
            Err(RecvTimeoutError::Disconnected) => Err(OTelSdkError::AlreadyShutdown),
        }
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        self.push(Box::new(Finished { span, queue: None }));
    }

    fn force_flush(&self) -> OTelSdkResult {
        if self.closed.load(Ordering::Relaxed) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        // The export thread exports every queued batch (and the one it is building), each
        // bounded by `export_timeout`: wait for all of them, not for one.
        let batches = self.spans.len().div_ceil(self.limits.max_batch.max(1)) + 2;
        let wait = self.limits.export_timeout.saturating_mul(u32::try_from(batches).unwrap_or(u32::MAX));
        self.ask(Control::Flush, wait.saturating_add(Duration::from_millis(250)))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        if self.closed.swap(true, Ordering::SeqCst) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        let deadline = Instant::now() + timeout;
        self.shutdown_deadline.send_replace(Some(deadline));
        // A little longer than the worker's own deadline, so its answer (rather than this
        // timer) says what happened.
        self.ask(|done| Control::Shutdown { deadline, done }, timeout + Duration::from_millis(250))
    }
}

struct Worker {
    spans: Receiver<Box<Finished>>,
    spare: Sender<Box<Finished>>,
    control: Receiver<Control>,
    wake_pending: Arc<AtomicBool>,
    counters: Arc<Counters>,
    shutdown_deadline: tokio::sync::watch::Receiver<Option<Instant>>,
    limits: QueueLimits,
}

impl Worker {
    fn run<E: SpanExporter>(self, make: MakeExporter<E>, resource: Resource, ready: Sender<Result<(), String>>) {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(e) => {
                let _ = ready.send(Err(format!("cannot start the span export runtime: {e}")));
                return;
            }
        };
        // The whole worker runs inside its runtime's context: building the exporter, creating
        // export futures and timers, and the exporter's own shutdown all look for a reactor.
        let _entered = runtime.enter();
        let exporter = make();
        let exporter = match exporter {
            Ok(mut exporter) => {
                exporter.set_resource(&resource);
                let _ = ready.send(Ok(()));
                exporter
            }
            Err(problem) => {
                let _ = ready.send(Err(problem));
                return;
            }
        };
        let mut batch = Vec::with_capacity(self.limits.max_batch);
        let mut tick = Instant::now() + self.limits.schedule_delay;
        let mut dropped_at_flush = 0;
        loop {
            match self.control.recv_timeout(tick.saturating_duration_since(Instant::now())) {
                Ok(Control::Wake) => {
                    self.wake_pending.store(false, Ordering::Release);
                    // Full batches only; the rest waits for the tick. A failed export is
                    // counted in the stats; the next batch tries again.
                    while self.spans.len() >= self.limits.max_batch {
                        let _ = self.export_one(&runtime, &exporter, &mut batch, None);
                    }
                }
                Ok(Control::Flush(done)) => {
                    let mut result = self.drain(&runtime, &exporter, &mut batch, None);
                    // Spans may have been tried, and dropped, by a tick or a full batch before
                    // this flush: it succeeds only when every span since the last one arrived.
                    let dropped = self.dropped();
                    if result.is_ok() && dropped > dropped_at_flush {
                        result = Err(OTelSdkError::InternalFailure(format!(
                            "{} spans were dropped since the previous flush",
                            dropped - dropped_at_flush
                        )));
                    }
                    dropped_at_flush = dropped;
                    let _ = done.send(result);
                }
                Ok(Control::Shutdown { deadline, done }) => {
                    let mut result = self.drain(&runtime, &exporter, &mut batch, Some(deadline));
                    let left = deadline.saturating_duration_since(Instant::now());
                    if let Err(e) = exporter.shutdown_with_timeout(left) {
                        result = result.and(Err(e));
                    }
                    let _ = done.send(result);
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {
                    // What was queued at the tick, not what arrives meanwhile: chasing the queue
                    // while requests keep ending spans sent a tail of tiny batches each tick,
                    // at a whole request's cost each (callgrind: batches of ~40 spans, ~60,000
                    // instructions an export). Counted in the stats when it fails; the next
                    // tick tries again.
                    let _ = self.drain_queued(&runtime, &exporter, &mut batch);
                    tick = Instant::now() + self.limits.schedule_delay;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Spans dropped so far, for whatever reason.
    fn dropped(&self) -> u64 {
        self.counters.dropped()
    }

    /// Exports everything queued now, batch by batch.
    fn drain<E: SpanExporter>(
        &self,
        runtime: &tokio::runtime::Runtime,
        exporter: &E,
        batch: &mut Vec<SpanData>,
        deadline: Option<Instant>,
    ) -> OTelSdkResult {
        let mut result = Ok(());
        while !self.spans.is_empty() {
            if let Err(e) = self.export_one(runtime, exporter, batch, deadline) {
                result = Err(e);
            }
        }
        result
    }

    /// Exports the spans queued now, batch by batch, and none that arrive meanwhile.
    fn drain_queued<E: SpanExporter>(
        &self,
        runtime: &tokio::runtime::Runtime,
        exporter: &E,
        batch: &mut Vec<SpanData>,
    ) -> OTelSdkResult {
        let mut result = Ok(());
        let mut left = self.spans.len();
        while left > 0 {
            let take = left.min(self.limits.max_batch);
            left -= take;
            if let Err(e) = self.export_up_to(take, runtime, exporter, batch, None) {
                result = Err(e);
            }
        }
        result
    }

    /// Exports the next batch of at most `max_batch` queued spans (none queued: nothing).
    fn export_one<E: SpanExporter>(
        &self,
        runtime: &tokio::runtime::Runtime,
        exporter: &E,
        batch: &mut Vec<SpanData>,
        deadline: Option<Instant>,
    ) -> OTelSdkResult {
        self.export_up_to(self.limits.max_batch, runtime, exporter, batch, deadline)
    }

    /// Exports the next batch of at most `limit` queued spans (none queued: nothing).
    fn export_up_to<E: SpanExporter>(
        &self,
        limit: usize,
        runtime: &tokio::runtime::Runtime,
        exporter: &E,
        batch: &mut Vec<SpanData>,
        deadline: Option<Instant>,
    ) -> OTelSdkResult {
        for mut finished in self.spans.try_iter().take(limit) {
            batch.push(std::mem::replace(&mut finished.span, vacant()));
            // Full (spans are ending slower than they are exported): the box is freed.
            let _ = self.spare.try_send(finished);
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.export(runtime, exporter, batch, deadline)
    }

    fn export<E: SpanExporter>(
        &self,
        runtime: &tokio::runtime::Runtime,
        exporter: &E,
        batch: &mut Vec<SpanData>,
        deadline: Option<Instant>,
    ) -> OTelSdkResult {
        let spans = std::mem::replace(batch, Vec::with_capacity(self.limits.max_batch));
        let count = spans.len() as u64;
        let limit = match deadline {
            Some(deadline) => deadline.saturating_duration_since(Instant::now()).min(self.limits.export_timeout),
            None => self.limits.export_timeout,
        };
        if limit.is_zero() {
            // Past the shutdown deadline: not an export call, only spans that will never leave.
            self.counters.dropped_export_failed.fetch_add(count, Ordering::Relaxed);
            return Err(OTelSdkError::InternalFailure(format!("{count} spans not exported by the shutdown deadline")));
        }
        let mut shutdown_deadline = self.shutdown_deadline.clone();
        let export = async {
            let cut_at_shutdown = async {
                let deadline = shutdown_deadline.wait_for(Option::is_some).await.ok().and_then(|d| *d);
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
                    // The processor is gone; nothing will ask for a shutdown.
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                outcome = tokio::time::timeout(limit, exporter.export(spans)) => {
                    outcome.unwrap_or(Err(OTelSdkError::Timeout(limit)))
                }
                () = cut_at_shutdown => Err(OTelSdkError::Timeout(limit)),
            }
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runtime.block_on(export)))
            .unwrap_or_else(|_| Err(OTelSdkError::InternalFailure("the span exporter panicked".into())));
        match &outcome {
            Ok(()) => {
                self.counters.exported.fetch_add(count, Ordering::Relaxed);
            }
            Err(_) => {
                self.counters.failed_exports.fetch_add(1, Ordering::Relaxed);
                self.counters.dropped_export_failed.fetch_add(count, Ordering::Relaxed);
            }
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    use opentelemetry::trace::SpanKind;

    use super::*;
    use crate::models::tracing::{OtlpProtocol, TraceConfiguration};
    use crate::telemetry::Tracing;

    fn config() -> TraceConfiguration {
        TraceConfiguration {
            otlp_endpoint: "http://127.0.0.1:4317".into(),
            otlp_protocol: OtlpProtocol::Grpc,
            otlp_headers: Default::default(),
            sample_rate: 1.0,
            service_name: "export-test".into(),
            service_version: "0".into(),
            environment: "test".into(),
            instrument_database: true,
            instrument_kafka: true,
        }
    }

    /// Panics on its first export, then counts what it is given.
    #[derive(Debug, Default)]
    struct PanicsOnce {
        calls: Arc<AtomicUsize>,
        accepted: Arc<Mutex<Vec<String>>>,
    }

    impl SpanExporter for PanicsOnce {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("exporter bug");
            }
            self.accepted.lock().unwrap().extend(batch.into_iter().map(|span| span.name.into_owned()));
            Ok(())
        }
    }

    /// Never answers, like a collector that accepted the connection and hung; says when an
    /// export started.
    #[derive(Debug)]
    struct Hangs {
        started: Sender<()>,
    }

    impl SpanExporter for Hangs {
        async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
            let _ = self.started.send(());
            std::future::pending().await
        }
    }

    fn end(tracing: &Tracing, name: &'static str) {
        tracing.span_in(name, SpanKind::Internal, &Context::new()).end();
    }

    #[test]
    fn a_span_built_in_the_box_of_an_exported_one_exports_as_itself() {
        let capture = crate::telemetry::capture::SpanCapture::new();
        let tracing = capture.tracing("spare-test").unwrap();
        let root = opentelemetry::Context::new();
        for name in ["first", "second", "third"] {
            let mut span = tracing.span_in(name, SpanKind::Internal, &root);
            span.set_attribute(opentelemetry::KeyValue::new("name", name));
            drop(span);
            // The flush exports it and leaves its box for the next span.
            tracing.flush().unwrap();
        }
        let spans = capture.spans();
        let shown: Vec<_> = spans
            .iter()
            .map(|span| (span.name.to_string(), crate::telemetry::capture::attribute(span, "name")))
            .collect();
        assert_eq!(
            shown,
            [("first", "first"), ("second", "second"), ("third", "third")]
                .map(|(name, attribute)| (name.to_owned(), Some(attribute.to_owned())))
        );
        assert!(spans.iter().all(|span| span.span_context.is_sampled() && span.end_time >= span.start_time));
        tracing.shutdown().unwrap();
    }
    #[test]
    fn an_exporter_that_panics_loses_its_batch_but_not_the_export_thread() {
        let exporter = PanicsOnce::default();
        let accepted = exporter.accepted.clone();
        let tracing = Tracing::with_exporter(&config(), move || Ok(exporter), QueueLimits::default()).unwrap();
        end(&tracing, "lost");
        assert!(tracing.flush().is_err(), "a panicked export reported success");
        end(&tracing, "kept-1");
        end(&tracing, "kept-2");
        tracing.flush().expect("the export thread survived the panic");
        assert_eq!(*accepted.lock().unwrap(), ["kept-1", "kept-2"]);
        let stats = tracing.stats();
        assert_eq!((stats.exported, stats.dropped_export_failed, stats.failed_exports), (2, 1, 1), "{stats:?}");
        tracing.shutdown().unwrap();
    }

    #[test]
    fn shutdown_cuts_an_export_that_hangs_at_its_deadline_and_counts_what_was_left() {
        let (started, export_started) = crossbeam_channel::unbounded();
        // An export may take a minute; the shutdown bound is what must hold.
        let limits = QueueLimits { max_batch: 2, export_timeout: Duration::from_secs(60), ..QueueLimits::default() };
        let tracing = Tracing::with_exporter(&config(), move || Ok(Hangs { started }), limits).unwrap();
        for _ in 0..7 {
            end(&tracing, "stuck");
        }
        export_started.recv_timeout(Duration::from_secs(10)).expect("the first batch went to the exporter");
        let bound = Duration::from_millis(300);
        let began = Instant::now();
        let outcome = tracing.shutdown_within(bound);
        let took = began.elapsed();
        println!("shutdown against a hung exporter: {took:?}, {outcome:?}, {:?}", tracing.stats());
        assert!(outcome.is_err(), "nothing was exported, yet shutdown reports success");
        assert!(took < Duration::from_secs(5), "shutdown took {took:?} for a bound of {bound:?}");
        // The export thread answered (the processor's own timer would leave spans queued and
        // uncounted): every span is accounted for as dropped.
        let stats = tracing.stats();
        assert_eq!((stats.exported, stats.dropped(), stats.queued), (0, 7, 0), "{stats:?}");
        end(&tracing, "after-shutdown");
        assert_eq!(tracing.stats().dropped(), 7, "a span ended after shutdown was queued or counted");
    }
}
