//! A circuit breaker: stops calling a failing service, then probes it until it recovers.
//!
//! # States
//!
//! - **Closed**: calls pass. The circuit opens after `failure_threshold` *consecutive*
//!   counted failures (a success resets the run), or when the sliding window holds at least
//!   `minimum_number_of_calls` and its failure rate reaches `failure_rate_threshold` percent,
//!   or its slow-call rate (calls of at least `slow_call_duration_threshold_ms`) reaches
//!   `slow_call_rate_threshold` percent. A call slower than `timeout_secs` is a failure.
//! - **Open**: the wrapped call is never made; callers get [`Rejected`]. The open wait is
//!   `recovery_timeout_secs` from the failure that opened the circuit, grown by
//!   `backoff_multiplier` per consecutive reopen (capped at `max_recovery_timeout_secs`) and
//!   lengthened by a random 0–`jitter_percent` percent. By default there is neither growth
//!   nor jitter: the wait is exactly `recovery_timeout_secs`.
//! - **Half open**: `success_threshold` trial calls are admitted and later calls rejected (a
//!   trial whose error is ignored, or that is abandoned, frees its slot); that many successes
//!   close the circuit (a close is counted), and any counted failure reopens it (an open is
//!   counted, and the failure is counted as a failed call with its time as the last failure,
//!   which the original system forgot). Slowness alone does not judge a trial; a trial past
//!   `timeout_secs` is a failure.
//! - **Forced open** and **disabled** are set by an operator ([`CircuitBreaker::force_open`],
//!   [`CircuitBreaker::disable`]) and left only by [`CircuitBreaker::reset`]: forced open
//!   rejects everything; disabled passes everything and records nothing.
//!
//! Decision: the first call after the open wait switches the circuit to half open and is
//! itself let through as a trial call (it publishes), as the original system's tests expect;
//! its code queued that call instead, which delayed recovery by one call for no benefit.
//!
//! Which errors count is the classifier's decision ([`CircuitBreaker::with_classifier`]);
//! by default ([`default_classifier`]) errors that are the caller's fault — validation,
//! security refusal, unsupported operation — do not: the service answered correctly. Such an
//! *ignored* call neither counts as a failure nor resets the run of failures. A timeout
//! always counts.
//!
//! Every state change is published as a [`Transition`] on a broadcast channel
//! ([`CircuitBreaker::subscribe`]). With a [`MetricsRegistry`] given to
//! [`CircuitBreaker::with_metrics`], the state, the transitions and the calls are Prometheus
//! [`series`], read from the counters below at scrape time.
//!
//! # Use
//!
//! Either wrap the call, [`CircuitBreaker::call`], which also enforces the timeout, or take a
//! [`Permit`] with [`CircuitBreaker::try_acquire`] and report the outcome with
//! [`Permit::success`] or [`Permit::failure`]; on [`Rejected`] the caller keeps the work for
//! later (the outbox) or fails with [`Rejected::to_error`]. A permit dropped without an
//! outcome (a cancelled caller) counts as nothing.
//!
//! # Invariants
//!
//! - The state and an *epoch* live in one atomic word (`epoch << 8 | state`); every
//!   transition stores a new word with the next epoch. A permit remembers the epoch it was
//!   taken in, and its outcome drives the state machine only if the epoch is still current:
//!   a call that started before a transition cannot, say, count as a half-open trial.
//! - The closed path takes no lock and writes no cache line another thread writes: taking a
//!   permit is one atomic load and a clock read; reporting it is a clock read, relaxed
//!   updates of the calling thread's stripe (module `stripes`: outcome counter, last-success time,
//!   moving-average latency, window slot) and loads of the state and of the run of failures,
//!   which is written only when it changes. Concurrent calls through a closed breaker never
//!   wait for one another: the compare-exchange loops (latency, run of failures) are
//!   lock-free, one retries only because another call made progress. Readers (metrics, the
//!   window's totals) add the stripes up; the average latency is the mean of the stripes'
//!   moving averages.
//! - [`CircuitBreaker::call`] registers a timer only for a call that is still pending after
//!   its first poll (module `deadline`).
//! - A call reads the clock twice, and [`CircuitBreaker::call`] no more than a bare permit:
//!   its deadline is the permit's start plus `timeout_secs`, and the report's reading serves
//!   the latency, the timeout, the window's second and the last-success or last-failure time.
//!   Those times are kept as offsets on the breaker's monotonic clock and turned into UTC only
//!   when metrics are read, from the UTC time taken together with the clock's zero at
//!   construction; so they follow the monotonic clock, not later adjustments of the system
//!   clock. `total_calls` is not a counter of its own but the sum of the outcome counters.
//! - Per-state counters (the run of failures, the half-open trials) carry the low 40 bits of
//!   the epoch they count for and are updated by compare-exchange, so an update aimed at a
//!   past epoch fails instead of polluting the new state.
//! - Transitions (rare) take the `transitions` mutex, re-check that the state word is still
//!   the one they decided on, prepare the new state's counters and open deadline, and only
//!   then store the new word (release), so a reader that sees a state sees its counters. The
//!   transition event is sent under the same mutex, so events arrive in transition order.
//! - Metrics counters are plain relaxed atomics: each is exact once the calls are reported;
//!   a snapshot taken during calls may mix before and after a call.

mod deadline;
mod publisher;
pub mod series;
mod window;

use std::collections::hash_map::RandomState;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use crossbeam_utils::CachePadded;
use serde::Serialize;
use tokio::sync::broadcast;
use tokio::time::Instant;

use self::deadline::Deadline;
use self::window::Window;
use crate::stripes::Striped;

pub use self::publisher::{GuardedMetrics, GuardedPublisher};
use crate::error::{ErrorCode, OnexError};
use crate::metrics::MetricsRegistry;
use crate::models::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerMetrics, CircuitBreakerState};

/// Decides whether an error counts as a failure of the guarded service (`true`) or is
/// ignored (`false`).
pub type ErrorClassifier = Arc<dyn Fn(&OnexError) -> bool + Send + Sync>;

/// Transition events buffered per subscriber; a slower subscriber loses the oldest ones
/// (and is told so by `broadcast::error::RecvError::Lagged`).
const EVENT_CAPACITY: usize = 64;

/// Low bits of the epoch kept beside a per-state counter.
const TAG_BITS: u32 = 40;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;
/// Bits of a per-state counter below its tag.
const COUNT_SHIFT: u32 = 24;
const COUNT_MASK: u64 = (1 << COUNT_SHIFT) - 1;
/// The half-open word splits its count bits: trials admitted above, successes below.
const TRIAL_SHIFT: u32 = 12;
const HALF_MASK: u64 = (1 << TRIAL_SHIFT) - 1;

/// No last success or failure yet (an offset of 584 years).
const NEVER: u64 = u64::MAX;
/// No latency sample yet (a NaN bit pattern no average produces).
const NO_LATENCY: u64 = u64::MAX;
/// A deadline that never comes (about 30 years; tokio's clock caps what it can wait for).
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);
/// Weight of a new sample in the moving-average latency.
const LATENCY_ALPHA: f64 = 0.1;

/// The default classifier: every error counts except those that are the caller's fault
/// (`VALIDATION_ERROR`, `SECURITY_VIOLATION_ERROR`, `UNSUPPORTED_OPERATION`).
pub fn default_classifier(error: &OnexError) -> bool {
    !matches!(
        error.code(),
        ErrorCode::ValidationError | ErrorCode::SecurityViolationError | ErrorCode::UnsupportedOperation
    )
}

/// Why the state changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TransitionReason {
    /// `failures` consecutive failures in closed.
    ConsecutiveFailures {
        /// The run that reached the threshold.
        failures: u32,
    },
    /// The failure rate of the sliding window reached the threshold.
    FailureRate {
        /// Failed calls / calls in the window × 100.
        percent: f64,
    },
    /// The slow-call rate of the sliding window reached the threshold.
    SlowCallRate {
        /// Slow calls / calls in the window × 100.
        percent: f64,
    },
    /// The open wait elapsed; the first call after it is the first trial.
    RecoveryTimeoutElapsed,
    /// Enough trial calls succeeded.
    TrialCallsSucceeded,
    /// A trial call failed.
    TrialCallFailed,
    /// [`CircuitBreaker::reset`].
    Reset,
    /// [`CircuitBreaker::force_open`].
    ForcedOpen,
    /// [`CircuitBreaker::disable`].
    Disabled,
}

/// One state change, as published to [`CircuitBreaker::subscribe`]rs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transition {
    /// The state left.
    pub from: CircuitBreakerState,
    /// The state entered.
    pub to: CircuitBreakerState,
    /// When (UTC).
    pub at: DateTime<Utc>,
    /// Why.
    pub reason: TransitionReason,
}

/// A call refused without being made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    /// The state that refused it: open, half open (all trial calls taken) or forced open.
    pub state: CircuitBreakerState,
    /// Time left until the open wait ends (open only).
    pub retry_after: Option<Duration>,
}

impl Rejected {
    /// The error of a caller that does not degrade gracefully: `INTEGRATION_SERVICE_UNAVAILABLE`
    /// with the detail `circuit_state` (and `retry_after_ms` when known). A caller with a queue
    /// adds `queued_events` itself.
    pub fn to_error(&self) -> OnexError {
        let error = OnexError::new(ErrorCode::IntegrationServiceUnavailable, self.to_string())
            .with_detail("circuit_state", self.state.as_str());
        match self.retry_after {
            Some(wait) => error.with_detail("retry_after_ms", u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)),
            None => error,
        }
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "circuit breaker is {}: the call was not made", self.state)
    }
}

impl std::error::Error for Rejected {}

/// Why [`CircuitBreaker::call`] returned no value.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    /// The breaker refused the call; the wrapped future was never polled.
    Rejected(Rejected),
    /// The call ran and failed, or ran past `timeout_secs` (`OPERATION_TIMEOUT`).
    Failed {
        /// The call's error.
        error: OnexError,
        /// Whether the classifier counted it as a failure of the service.
        counted: bool,
        /// The breaker's state once the failure was recorded.
        state: CircuitBreakerState,
    },
}

impl CallError {
    /// The error of a caller that does not degrade gracefully. A rejection or a counted
    /// failure is `INTEGRATION_SERVICE_UNAVAILABLE` with the detail `circuit_state` (a failure
    /// also keeps its code as `cause_code` and its message); an ignored failure is the
    /// caller's own fault and comes back unchanged.
    pub fn into_error(self) -> OnexError {
        match self {
            Self::Rejected(rejected) => rejected.to_error(),
            Self::Failed { error, counted: false, .. } => error,
            Self::Failed { error, counted: true, state } => OnexError::new(
                ErrorCode::IntegrationServiceUnavailable,
                format!("call through the circuit breaker failed: {}", error.message()),
            )
            .with_detail("circuit_state", state.as_str())
            .with_detail("cause_code", error.code().as_str()),
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rejected(rejected) => rejected.fmt(f),
            Self::Failed { error, .. } => error.fmt(f),
        }
    }
}

impl std::error::Error for CallError {}

impl From<CallError> for OnexError {
    fn from(error: CallError) -> Self {
        error.into_error()
    }
}

/// A snapshot of the breaker's counters.
///
/// `total_calls` counts every call seen: reported permits and rejections (a permit dropped
/// without an outcome is not a call). `success_rate` is `successful_calls /
/// max(total_calls, 1) × 100`, so rejections lower it, as in the original system.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakerMetrics {
    /// The state at the snapshot.
    pub state: CircuitBreakerState,
    /// Calls seen.
    pub total_calls: u64,
    /// Calls that succeeded within the timeout.
    pub successful_calls: u64,
    /// Calls that failed (counted errors and timeouts).
    pub failed_calls: u64,
    /// Calls whose error the classifier ignored.
    pub ignored_calls: u64,
    /// Calls refused without being made.
    pub rejected_calls: u64,
    /// Calls at least `slow_call_duration_threshold_ms` long, whatever their outcome.
    pub slow_calls: u64,
    /// Calls that ran past `timeout_secs` (also in `failed_calls`).
    pub timed_out_calls: u64,
    /// Times the circuit opened (from closed or half open; not forced).
    pub circuit_opens: u64,
    /// Times the open wait ended and the circuit went half open.
    pub circuit_half_opens: u64,
    /// Times it closed after half-open trials.
    pub circuit_closes: u64,
    /// The last counted failure.
    pub last_failure: Option<DateTime<Utc>>,
    /// The last success.
    pub last_success: Option<DateTime<Utc>>,
    /// `successful_calls / max(total_calls, 1) × 100`.
    pub success_rate: f64,
    /// Exponential moving average of call latency (new sample weight 0.1), kept per calling
    /// thread and averaged over the threads that made calls.
    pub average_latency: Option<Duration>,
    /// Calls in the sliding window.
    pub window_calls: u64,
    /// Failure rate of the sliding window, percent.
    pub window_failure_rate: f64,
    /// Slow-call rate of the sliding window, percent.
    pub window_slow_call_rate: f64,
}

impl BreakerMetrics {
    /// The shared model of the original system; the queue figures (queued, dropped,
    /// dead-lettered) belong to the caller's queue and are zero here.
    pub fn to_model(&self) -> CircuitBreakerMetrics {
        CircuitBreakerMetrics {
            total_events: self.total_calls,
            successful_events: self.successful_calls,
            failed_events: self.failed_calls,
            circuit_opens: self.circuit_opens,
            circuit_closes: self.circuit_closes,
            last_failure: self.last_failure,
            last_success: self.last_success,
            ..CircuitBreakerMetrics::default()
        }
    }
}

/// The configuration in the form the breaker uses it.
struct Settings {
    failure_threshold: u64,
    success_threshold: u64,
    timeout: Duration,
    slow_threshold: Duration,
    failure_rate_threshold: u64,
    slow_call_rate_threshold: u64,
    minimum_calls: u64,
    recovery: Duration,
    max_recovery: Duration,
    backoff_multiplier: f64,
    jitter_percent: u32,
}

/// One stripe of the counters ([`stripes`]): every call writes its thread's stripe; readers
/// add the stripes up (times: the latest; latency: the mean of the stripes' averages).
#[derive(Default)]
struct Counters {
    successful: AtomicU64,
    failed: AtomicU64,
    ignored: AtomicU64,
    rejected: AtomicU64,
    slow: AtomicU64,
    timed_out: AtomicU64,
    opens: AtomicU64,
    /// Times the open wait ended and the circuit went half open.
    half_opens: AtomicU64,
    closes: AtomicU64,
    /// Nanoseconds since the breaker's `base`; [`NEVER`] = never.
    last_failure: AtomicU64,
    last_success: AtomicU64,
    /// `f64` bits of the average latency in seconds of this stripe's calls, or
    /// [`NO_LATENCY`].
    latency_bits: AtomicU64,
}

impl Counters {
    fn new() -> Self {
        let counters = Self::default();
        counters.clear();
        counters
    }

    fn clear(&self) {
        for counter in [
            &self.successful,
            &self.failed,
            &self.ignored,
            &self.rejected,
            &self.slow,
            &self.timed_out,
            &self.opens,
            &self.half_opens,
            &self.closes,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
        self.last_failure.store(NEVER, Ordering::Relaxed);
        self.last_success.store(NEVER, Ordering::Relaxed);
        self.latency_bits.store(NO_LATENCY, Ordering::Relaxed);
    }
}

/// What only transitions touch.
struct TransitionState {
    /// Reopens from half open since the circuit was last closed (grows the open wait).
    reopens: u32,
    /// xorshift64 state of the jitter; never 0.
    rng: u64,
}

/// The breaker; share it (`Arc`) between the callers it guards.
pub struct CircuitBreaker {
    config: CircuitBreakerConfig,
    settings: Settings,
    classifier: ErrorClassifier,
    /// The zero of the monotonic offsets below (tokio's clock, so paused-time tests drive it).
    base: Instant,
    /// The UTC time at `base`: turns offsets from it into wall times.
    base_utc: DateTime<Utc>,
    /// `epoch << 8 | state`. Shared with the metrics collector (module `series`), which
    /// reads it at scrape time.
    state: Arc<CachePadded<AtomicU64>>,
    /// Nanoseconds since `base` at which the open wait ends.
    open_until: AtomicU64,
    /// `tag << 24 | consecutive counted failures` in closed.
    consecutive: CachePadded<AtomicU64>,
    /// `tag << 24 | trials admitted << 12 | trial successes` in half open.
    half_open: AtomicU64,
    window: Window,
    /// Shared with the metrics collector, like `state`.
    counters: Striped<Counters>,
    transitions: Mutex<TransitionState>,
    events: broadcast::Sender<Transition>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker").field("state", &self.state()).field("config", &self.config).finish()
    }
}

const fn encode(state: CircuitBreakerState) -> u64 {
    match state {
        CircuitBreakerState::Closed => 0,
        CircuitBreakerState::Open => 1,
        CircuitBreakerState::HalfOpen => 2,
        CircuitBreakerState::ForcedOpen => 3,
        CircuitBreakerState::Disabled => 4,
    }
}

const fn decode(word: u64) -> CircuitBreakerState {
    match word & 0xff {
        0 => CircuitBreakerState::Closed,
        1 => CircuitBreakerState::Open,
        2 => CircuitBreakerState::HalfOpen,
        3 => CircuitBreakerState::ForcedOpen,
        _ => CircuitBreakerState::Disabled,
    }
}

const fn tag_of(epoch: u64) -> u64 {
    (epoch & TAG_MASK) << COUNT_SHIFT
}

fn duration_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// The wall time `nanos` after `base_utc`, to the millisecond (as the original system kept
/// it), or `None` for [`NEVER`].
fn offset_to_time(base_utc: DateTime<Utc>, nanos: u64) -> Option<DateTime<Utc>> {
    if nanos == NEVER {
        return None;
    }
    let at = base_utc.checked_add_signed(chrono::TimeDelta::from_std(Duration::from_nanos(nanos)).ok()?)?;
    DateTime::from_timestamp_millis(at.timestamp_millis())
}

fn percent(part: u64, whole: u64) -> f64 {
    part as f64 * 100.0 / whole.max(1) as f64
}

impl CircuitBreaker {
    /// A closed breaker with `config` (validated first: an invalid one is the
    /// `CONFIGURATION_ERROR` of [`CircuitBreakerConfig::validate`]) and the
    /// [`default_classifier`].
    pub fn new(config: CircuitBreakerConfig) -> Result<Self, OnexError> {
        config.validate()?;
        let settings = Settings {
            failure_threshold: config.failure_threshold.into(),
            success_threshold: config.success_threshold.into(),
            timeout: Duration::from_secs(config.timeout_secs.into()),
            slow_threshold: Duration::from_millis(config.slow_call_duration_threshold_ms),
            failure_rate_threshold: config.failure_rate_threshold.into(),
            slow_call_rate_threshold: config.slow_call_rate_threshold.into(),
            minimum_calls: config.minimum_number_of_calls.into(),
            recovery: Duration::from_secs(config.recovery_timeout_secs.into()),
            max_recovery: Duration::from_secs(config.max_recovery_timeout_secs.into()),
            backoff_multiplier: config.backoff_multiplier,
            jitter_percent: config.jitter_percent,
        };
        let seed = RandomState::new().build_hasher().finish() | 1;
        Ok(Self {
            window: Window::new(config.sliding_window_type, config.sliding_window_size),
            settings,
            config,
            classifier: Arc::new(default_classifier),
            base: Instant::now(),
            base_utc: Utc::now(),
            state: Arc::new(CachePadded::new(AtomicU64::new(encode(CircuitBreakerState::Closed)))),
            open_until: AtomicU64::new(0),
            consecutive: CachePadded::new(AtomicU64::new(tag_of(0))),
            half_open: AtomicU64::new(tag_of(0)),
            counters: Striped::new(Counters::new),
            transitions: Mutex::new(TransitionState { reopens: 0, rng: seed }),
            events: broadcast::channel(EVENT_CAPACITY).0,
        })
    }

    /// Replaces the classifier: `classify(error)` is `true` when the error counts as a
    /// failure of the guarded service.
    pub fn with_classifier(mut self, classify: impl Fn(&OnexError) -> bool + Send + Sync + 'static) -> Self {
        self.classifier = Arc::new(classify);
        self
    }

    /// Shows the breaker in `registry`'s circuit-breaker series (see [`series`]) with the
    /// label `breaker="{name}"`; a process's breakers share the families, each under its own
    /// name. The figures are the breaker's own, read at scrape time: calls cost nothing more.
    /// An empty name, one longer than 128 bytes or with control characters is a
    /// `VALIDATION_ERROR` (field `name`); a name another live breaker has in this registry,
    /// or a breaker already registered there, is a `CONFIGURATION_ERROR`.
    pub fn with_metrics(self, registry: &MetricsRegistry, name: &str) -> Result<Self, OnexError> {
        series::register(registry, name, &self.state, &self.counters)?;
        Ok(self)
    }

    /// The configuration in effect.
    pub fn config(&self) -> &CircuitBreakerConfig {
        &self.config
    }

    /// The current state.
    pub fn state(&self) -> CircuitBreakerState {
        decode(self.state.load(Ordering::Acquire))
    }

    /// Closed or half open: the guarded service is (being) used.
    pub fn is_healthy(&self) -> bool {
        self.state().is_healthy()
    }

    /// A receiver of every later [`Transition`].
    pub fn subscribe(&self) -> broadcast::Receiver<Transition> {
        self.events.subscribe()
    }

    /// Admits one call, or refuses it. Open (before the wait ends), forced open and a half
    /// open breaker whose trial calls are all taken refuse; the first call after the open
    /// wait switches to half open and is admitted as a trial.
    pub fn try_acquire(&self) -> Result<Permit<'_>, Rejected> {
        loop {
            let word = self.state.load(Ordering::Acquire);
            let epoch = word >> 8;
            let state = decode(word);
            match state {
                CircuitBreakerState::Closed | CircuitBreakerState::Disabled => {
                    return Ok(self.permit(epoch, state));
                }
                CircuitBreakerState::HalfOpen => {
                    return if self.take_trial(epoch) {
                        Ok(self.permit(epoch, state))
                    } else {
                        Err(self.reject(state, None))
                    };
                }
                CircuitBreakerState::Open => {
                    let now = self.now_nanos();
                    let until = self.open_until.load(Ordering::Relaxed);
                    if now < until {
                        return Err(self.reject(state, Some(Duration::from_nanos(until - now))));
                    }
                    // Whoever wins the transition, the state has moved on: look again.
                    self.transition(word, CircuitBreakerState::HalfOpen, TransitionReason::RecoveryTimeoutElapsed);
                }
                CircuitBreakerState::ForcedOpen => return Err(self.reject(state, None)),
            }
        }
    }

    /// Runs `call` through the breaker: refused calls are never polled; a call running past
    /// `timeout_secs` is dropped and fails with `OPERATION_TIMEOUT` (always counted).
    pub async fn call<T, F>(&self, call: F) -> Result<T, CallError>
    where
        F: Future<Output = Result<T, OnexError>>,
    {
        let permit = self.try_acquire().map_err(CallError::Rejected)?;
        // The deadline comes from the permit's own clock reading (`timeout` would read the
        // clock again); a disabled breaker's permit has none.
        let start = permit.start.unwrap_or_else(Instant::now);
        // Far enough to never fire when the timeout overflows the clock.
        let deadline = start.checked_add(self.settings.timeout).unwrap_or_else(|| start + FAR_FUTURE);
        match Deadline::new(call, deadline).await {
            Some(Ok(value)) => {
                permit.success();
                Ok(value)
            }
            Some(Err(error)) => {
                let counted = permit.failure(&error);
                Err(CallError::Failed { error, counted, state: self.state() })
            }
            None => {
                permit.finish(Outcome::TimedOut);
                let error = OnexError::new(
                    ErrorCode::OperationTimeout,
                    format!("call through the circuit breaker ran past {} s", self.settings.timeout.as_secs()),
                );
                Err(CallError::Failed { error, counted: true, state: self.state() })
            }
        }
    }

    /// Back to closed with every counter zeroed (metrics, window, run of failures, backoff).
    /// Calls in flight are still counted when they report, but no longer judge any state.
    pub fn reset(&self) {
        self.manual(CircuitBreakerState::Closed, TransitionReason::Reset);
    }

    /// Rejects every call until [`CircuitBreaker::reset`].
    pub fn force_open(&self) {
        self.manual(CircuitBreakerState::ForcedOpen, TransitionReason::ForcedOpen);
    }

    /// Passes every call and records nothing until [`CircuitBreaker::reset`].
    pub fn disable(&self) {
        self.manual(CircuitBreakerState::Disabled, TransitionReason::Disabled);
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> BreakerMetrics {
        let sum = |counter: fn(&Counters) -> &AtomicU64| -> u64 {
            self.counters.iter().map(|c| counter(c).load(Ordering::Relaxed)).sum()
        };
        let latest = |time: fn(&Counters) -> &AtomicU64| -> u64 {
            self.counters.iter().map(|c| time(c).load(Ordering::Relaxed)).filter(|&t| t != NEVER).max().unwrap_or(NEVER)
        };
        let successful = sum(|c| &c.successful);
        let failed = sum(|c| &c.failed);
        let ignored = sum(|c| &c.ignored);
        let rejected = sum(|c| &c.rejected);
        let total = successful + failed + ignored + rejected;
        let window = self.window.totals(self.now_nanos());
        let latencies: Vec<f64> = self
            .counters
            .iter()
            .map(|c| c.latency_bits.load(Ordering::Relaxed))
            .filter(|&bits| bits != NO_LATENCY)
            .map(f64::from_bits)
            .collect();
        let average_latency = (!latencies.is_empty())
            .then(|| Duration::from_secs_f64(latencies.iter().sum::<f64>() / latencies.len() as f64));
        BreakerMetrics {
            state: self.state(),
            total_calls: total,
            successful_calls: successful,
            failed_calls: failed,
            ignored_calls: ignored,
            rejected_calls: rejected,
            slow_calls: sum(|c| &c.slow),
            timed_out_calls: sum(|c| &c.timed_out),
            circuit_opens: sum(|c| &c.opens),
            circuit_half_opens: sum(|c| &c.half_opens),
            circuit_closes: sum(|c| &c.closes),
            last_failure: offset_to_time(self.base_utc, latest(|c| &c.last_failure)),
            last_success: offset_to_time(self.base_utc, latest(|c| &c.last_success)),
            success_rate: percent(successful, total),
            average_latency,
            window_calls: window.calls,
            window_failure_rate: if window.calls == 0 { 0.0 } else { percent(window.failures, window.calls) },
            window_slow_call_rate: if window.calls == 0 { 0.0 } else { percent(window.slow, window.calls) },
        }
    }

    fn permit(&self, epoch: u64, state: CircuitBreakerState) -> Permit<'_> {
        Permit {
            breaker: self,
            epoch,
            state,
            // Disabled records nothing, so it needs no clock either.
            start: (state != CircuitBreakerState::Disabled).then(Instant::now),
            done: false,
        }
    }

    fn now_nanos(&self) -> u64 {
        duration_nanos(self.base.elapsed())
    }

    fn reject(&self, state: CircuitBreakerState, retry_after: Option<Duration>) -> Rejected {
        self.counters.local().rejected.fetch_add(1, Ordering::Relaxed);
        Rejected { state, retry_after }
    }

    /// Claims one of the `success_threshold` trial slots of half-open epoch `epoch`.
    fn take_trial(&self, epoch: u64) -> bool {
        let tag = tag_of(epoch);
        let limit = self.settings.success_threshold;
        self.half_open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |word| {
                let trials = (word >> TRIAL_SHIFT) & HALF_MASK;
                (word & !COUNT_MASK == tag && trials < limit).then_some(word + (1 << TRIAL_SHIFT))
            })
            .is_ok()
    }

    /// Gives back a trial slot of epoch `epoch` (an ignored or abandoned trial).
    fn release_trial(&self, epoch: u64) {
        let tag = tag_of(epoch);
        let _ = self.half_open.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |word| {
            let trials = (word >> TRIAL_SHIFT) & HALF_MASK;
            (word & !COUNT_MASK == tag && trials > 0).then(|| word - (1 << TRIAL_SHIFT))
        });
    }

    /// Counts a trial success of epoch `epoch`; the successes so far, or 0 if the epoch is
    /// over.
    fn trial_success(&self, epoch: u64) -> u64 {
        let tag = tag_of(epoch);
        match self
            .half_open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |word| (word & !COUNT_MASK == tag).then_some(word + 1))
        {
            Ok(previous) => (previous & HALF_MASK) + 1,
            Err(_) => 0,
        }
    }

    /// Extends the run of failures of closed epoch `epoch`; the run, or 0 if the epoch is over.
    fn bump_consecutive(&self, epoch: u64) -> u64 {
        let tag = tag_of(epoch);
        match self.consecutive.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |word| {
            (word & !COUNT_MASK == tag).then(|| word.saturating_add(1).min(tag | COUNT_MASK))
        }) {
            Ok(previous) => (previous & COUNT_MASK) + 1,
            Err(_) => 0,
        }
    }

    /// Ends the run of failures of closed epoch `epoch`. Writes only when there is a run, so
    /// a stream of successes only reads the shared word; retries when a failure lands in
    /// between, so the success is ordered after it.
    fn clear_consecutive(&self, epoch: u64) {
        let tag = tag_of(epoch);
        if self.consecutive.load(Ordering::Relaxed) == tag {
            return;
        }
        let _ = self.consecutive.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |word| {
            (word & !COUNT_MASK == tag && word != tag).then_some(tag)
        });
    }

    /// Records the outcome of a permit; see [`Permit`].
    fn complete(&self, permit: &Permit<'_>, outcome: Outcome) {
        let Some(start) = permit.start else { return };
        // One clock read serves the latency, the timeout, the window's second and the time of
        // the last success or failure.
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(start);
        let since_base = now.saturating_duration_since(self.base);
        // Below NEVER, which means no time at all.
        let at = duration_nanos(since_base).min(NEVER - 1);
        let timed_out = outcome == Outcome::TimedOut || elapsed > self.settings.timeout;
        let failure = timed_out || outcome == Outcome::Failure;
        let ignored = !failure && outcome == Outcome::Ignored;
        let slow = elapsed >= self.settings.slow_threshold;

        let c = self.counters.local();
        if failure {
            c.failed.fetch_add(1, Ordering::Relaxed);
            c.last_failure.store(at, Ordering::Relaxed);
        } else if ignored {
            c.ignored.fetch_add(1, Ordering::Relaxed);
        } else {
            c.successful.fetch_add(1, Ordering::Relaxed);
            c.last_success.store(at, Ordering::Relaxed);
        }
        if slow {
            c.slow.fetch_add(1, Ordering::Relaxed);
        }
        if timed_out {
            c.timed_out.fetch_add(1, Ordering::Relaxed);
        }
        let sample = elapsed.as_secs_f64();
        let _ = c.latency_bits.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
            let average = if bits == NO_LATENCY {
                sample
            } else {
                f64::from_bits(bits) * (1.0 - LATENCY_ALPHA) + sample * LATENCY_ALPHA
            };
            Some(average.to_bits())
        });

        let word = self.state.load(Ordering::Acquire);
        if word >> 8 != permit.epoch {
            // A transition happened while the call ran: its outcome judged the old state.
            return;
        }
        match permit.state {
            CircuitBreakerState::Closed if !ignored => {
                self.window.record(at, failure, slow);
                if failure {
                    let run = self.bump_consecutive(permit.epoch);
                    if run >= self.settings.failure_threshold {
                        let failures = u32::try_from(run).unwrap_or(u32::MAX);
                        self.transition(
                            word,
                            CircuitBreakerState::Open,
                            TransitionReason::ConsecutiveFailures { failures },
                        );
                        return;
                    }
                } else {
                    self.clear_consecutive(permit.epoch);
                }
                if failure || slow {
                    self.judge_window(word, at);
                }
            }
            CircuitBreakerState::HalfOpen if ignored => self.release_trial(permit.epoch),
            CircuitBreakerState::HalfOpen if failure => {
                self.transition(word, CircuitBreakerState::Open, TransitionReason::TrialCallFailed);
            }
            CircuitBreakerState::HalfOpen if self.trial_success(permit.epoch) >= self.settings.success_threshold => {
                self.transition(word, CircuitBreakerState::Closed, TransitionReason::TrialCallsSucceeded);
            }
            _ => {}
        }
    }

    /// Opens the circuit of closed state `word` if a rate of the window reached its threshold.
    fn judge_window(&self, word: u64, now_nanos: u64) {
        let totals = self.window.totals(now_nanos);
        if totals.calls < self.settings.minimum_calls {
            return;
        }
        let s = &self.settings;
        let reason = if s.failure_rate_threshold > 0 && totals.failures * 100 >= s.failure_rate_threshold * totals.calls
        {
            TransitionReason::FailureRate { percent: percent(totals.failures, totals.calls) }
        } else if s.slow_call_rate_threshold > 0 && totals.slow * 100 >= s.slow_call_rate_threshold * totals.calls {
            TransitionReason::SlowCallRate { percent: percent(totals.slow, totals.calls) }
        } else {
            return;
        };
        self.transition(word, CircuitBreakerState::Open, reason);
    }

    /// Moves from state word `expected` to `to`, unless another transition came first.
    fn transition(&self, expected: u64, to: CircuitBreakerState, reason: TransitionReason) {
        let mut guard = self.transitions.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.state.load(Ordering::Acquire);
        if current == expected {
            self.apply(&mut guard, current, to, reason);
        }
    }

    /// Operator transitions: from whatever state the breaker is in.
    fn manual(&self, to: CircuitBreakerState, reason: TransitionReason) {
        let mut guard = self.transitions.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.state.load(Ordering::Acquire);
        if reason == TransitionReason::Reset {
            self.counters.iter().for_each(Counters::clear);
            guard.reopens = 0;
        }
        self.apply(&mut guard, current, to, reason);
    }

    /// Prepares state `to`, publishes it and its event. Called with the transition lock held
    /// and `current` the state word under it.
    fn apply(&self, guard: &mut TransitionState, current: u64, to: CircuitBreakerState, reason: TransitionReason) {
        let from = decode(current);
        let epoch = (current >> 8) + 1;
        match to {
            CircuitBreakerState::Open => {
                if from == CircuitBreakerState::HalfOpen {
                    guard.reopens = guard.reopens.saturating_add(1);
                }
                let wait = self.open_wait(guard);
                self.open_until.store(self.now_nanos().saturating_add(duration_nanos(wait)), Ordering::Relaxed);
                self.counters.local().opens.fetch_add(1, Ordering::Relaxed);
            }
            CircuitBreakerState::HalfOpen => {
                self.half_open.store(tag_of(epoch), Ordering::Relaxed);
                self.counters.local().half_opens.fetch_add(1, Ordering::Relaxed);
            }
            CircuitBreakerState::Closed => {
                self.consecutive.store(tag_of(epoch), Ordering::Relaxed);
                self.window.clear();
                guard.reopens = 0;
                if reason == TransitionReason::TrialCallsSucceeded {
                    self.counters.local().closes.fetch_add(1, Ordering::Relaxed);
                }
            }
            CircuitBreakerState::ForcedOpen | CircuitBreakerState::Disabled => {}
        }
        self.state.store((epoch << 8) | encode(to), Ordering::Release);
        if from != to {
            tracing::info!(from = %from, to = %to, reason = ?reason, "circuit breaker state changed");
            // No subscriber is not an error.
            let _ = self.events.send(Transition { from, to, at: Utc::now(), reason });
        }
    }

    /// `recovery × multiplier^reopens`, capped at the maximum, plus 0–jitter percent.
    fn open_wait(&self, guard: &mut TransitionState) -> Duration {
        let s = &self.settings;
        let grown =
            s.recovery.as_secs_f64() * s.backoff_multiplier.powi(i32::try_from(guard.reopens).unwrap_or(i32::MAX));
        let mut wait = grown.min(s.max_recovery.as_secs_f64()).max(s.recovery.as_secs_f64());
        if s.jitter_percent > 0 {
            // xorshift64: jitter needs spread, not unpredictability.
            guard.rng ^= guard.rng << 13;
            guard.rng ^= guard.rng >> 7;
            guard.rng ^= guard.rng << 17;
            let unit = (guard.rng >> 11) as f64 / (1u64 << 53) as f64;
            wait *= 1.0 + unit * f64::from(s.jitter_percent) / 100.0;
        }
        Duration::from_secs_f64(wait)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Success,
    Failure,
    Ignored,
    TimedOut,
}

/// Leave to make one call; report how it went with [`Permit::success`] or
/// [`Permit::failure`]. A success reported after `timeout_secs` counts as a timed-out
/// failure. Dropped without a report, the permit counts as nothing (a half-open trial slot
/// is given back).
#[must_use = "report the outcome with success() or failure()"]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    epoch: u64,
    state: CircuitBreakerState,
    start: Option<Instant>,
    done: bool,
}

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit").field("state", &self.state).field("epoch", &self.epoch).finish()
    }
}

impl Permit<'_> {
    /// The state the call was admitted in (closed, half open or disabled).
    pub fn state(&self) -> CircuitBreakerState {
        self.state
    }

    /// The call succeeded.
    pub fn success(self) {
        self.finish(Outcome::Success);
    }

    /// The call failed with `error`; returns whether the classifier counted it.
    pub fn failure(self, error: &OnexError) -> bool {
        let counted = (self.breaker.classifier)(error);
        self.finish(if counted { Outcome::Failure } else { Outcome::Ignored });
        counted
    }

    /// [`Permit::success`] or [`Permit::failure`] after `result`; returns whether the error
    /// counted (false for `Ok`).
    pub fn record<T>(self, result: &Result<T, OnexError>) -> bool {
        match result {
            Ok(_) => {
                self.success();
                false
            }
            Err(error) => self.failure(error),
        }
    }

    fn finish(mut self, outcome: Outcome) {
        self.done = true;
        self.breaker.complete(&self, outcome);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.done && self.state == CircuitBreakerState::HalfOpen {
            self.breaker.release_trial(self.epoch);
        }
    }
}

#[cfg(test)]
mod tests;
