use std::sync::atomic::{AtomicBool, AtomicUsize};

use tokio::sync::broadcast::error::TryRecvError;

use super::*;
use crate::environment::{Environment, MapEnv};
use crate::models::circuit_breaker::SlidingWindowType;

use CircuitBreakerState::{Closed, Disabled, ForcedOpen, HalfOpen, Open};

/// Production defaults (failures 5, recovery 60 s, successes 3, timeout 30 s) with only the
/// consecutive-failures policy.
fn config() -> CircuitBreakerConfig {
    let mut config = CircuitBreakerConfig::for_environment(Environment::Production);
    config.failure_rate_threshold = 0;
    config.slow_call_rate_threshold = 0;
    config
}

fn breaker(config: CircuitBreakerConfig) -> CircuitBreaker {
    CircuitBreaker::new(config).expect("valid configuration")
}

fn service_down() -> OnexError {
    OnexError::new(ErrorCode::IntegrationServiceUnavailable, "broker unreachable")
}

async fn fail(b: &CircuitBreaker) -> Result<(), CallError> {
    b.call(async { Err::<(), _>(service_down()) }).await
}

async fn succeed(b: &CircuitBreaker) -> Result<(), CallError> {
    b.call(async { Ok(()) }).await
}

/// A call that succeeds after `secs` of (paused) tokio time.
async fn succeed_after(b: &CircuitBreaker, secs: u64) -> Result<(), CallError> {
    b.call(async move {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        Ok(())
    })
    .await
}

/// Every pending event as (from, to, reason).
fn drain(
    rx: &mut broadcast::Receiver<Transition>,
) -> Vec<(CircuitBreakerState, CircuitBreakerState, TransitionReason)> {
    let mut out = Vec::new();
    loop {
        match rx.try_recv() {
            Ok(t) => out.push((t.from, t.to, t.reason)),
            Err(TryRecvError::Empty) => return out,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
}

async fn open_it(b: &CircuitBreaker) {
    for _ in 0..b.config().failure_threshold {
        let _ = fail(b).await;
    }
    assert_eq!(b.state(), Open);
}

#[tokio::test(start_paused = true)]
async fn closed_opens_after_consecutive_failures_and_a_success_resets_the_run() {
    let b = breaker(config());
    let mut rx = b.subscribe();
    for _ in 0..4 {
        assert!(matches!(fail(&b).await, Err(CallError::Failed { counted: true, state: Closed, .. })));
    }
    succeed(&b).await.unwrap();
    for _ in 0..4 {
        let _ = fail(&b).await;
    }
    assert_eq!(b.state(), Closed);
    assert!(drain(&mut rx).is_empty());
    let err = fail(&b).await.unwrap_err();
    assert!(matches!(err, CallError::Failed { state: Open, .. }), "{err:?}");
    assert_eq!(drain(&mut rx), [(Closed, Open, TransitionReason::ConsecutiveFailures { failures: 5 })]);
    let m = b.metrics();
    assert_eq!((m.total_calls, m.successful_calls, m.failed_calls, m.circuit_opens), (10, 1, 9, 1));
    assert!(m.last_failure.is_some() && m.last_success.is_some());
    assert!(!b.is_healthy());
}

#[tokio::test(start_paused = true)]
async fn open_rejects_without_making_the_call() {
    let b = breaker(config());
    open_it(&b).await;
    let called = AtomicBool::new(false);
    let result = b
        .call(async {
            called.store(true, Ordering::SeqCst);
            Ok(())
        })
        .await;
    assert!(!called.load(Ordering::SeqCst), "an open breaker must not make the call");
    let CallError::Rejected(rejected) = result.unwrap_err() else { panic!("expected a rejection") };
    assert_eq!(rejected.state, Open);
    assert_eq!(rejected.retry_after, Some(Duration::from_secs(60)));
    let m = b.metrics();
    assert_eq!((m.rejected_calls, m.total_calls), (1, 6));
    assert_eq!(m.success_rate, 0.0);
}

#[tokio::test(start_paused = true)]
async fn the_first_call_after_the_recovery_timeout_is_let_through_as_the_trial() {
    let b = breaker(config());
    open_it(&b).await;
    let mut rx = b.subscribe();
    tokio::time::advance(Duration::from_secs(59)).await;
    assert!(matches!(succeed(&b).await, Err(CallError::Rejected(Rejected { state: Open, .. }))));
    tokio::time::advance(Duration::from_secs(1)).await;
    let called = AtomicBool::new(false);
    b.call(async {
        called.store(true, Ordering::SeqCst);
        Ok(())
    })
    .await
    .expect("the first call after the wait publishes");
    assert!(called.load(Ordering::SeqCst));
    assert_eq!(b.state(), HalfOpen);
    assert!(b.is_healthy());
    assert_eq!(drain(&mut rx), [(Open, HalfOpen, TransitionReason::RecoveryTimeoutElapsed)]);
}

#[tokio::test(start_paused = true)]
async fn half_open_closes_after_the_success_threshold() {
    let b = breaker(config());
    open_it(&b).await;
    tokio::time::advance(Duration::from_secs(60)).await;
    let mut rx = b.subscribe();
    succeed(&b).await.unwrap();
    succeed(&b).await.unwrap();
    assert_eq!(b.state(), HalfOpen);
    succeed(&b).await.unwrap();
    assert_eq!(b.state(), Closed);
    assert_eq!(
        drain(&mut rx),
        [
            (Open, HalfOpen, TransitionReason::RecoveryTimeoutElapsed),
            (HalfOpen, Closed, TransitionReason::TrialCallsSucceeded)
        ]
    );
    let m = b.metrics();
    assert_eq!((m.circuit_opens, m.circuit_closes, m.successful_calls), (1, 1, 3));
    // Closed again with a fresh run: it takes five failures to open.
    for _ in 0..4 {
        let _ = fail(&b).await;
    }
    assert_eq!(b.state(), Closed);
}

#[tokio::test(start_paused = true)]
async fn a_half_open_failure_reopens_counts_a_failed_call_and_restarts_the_wait() {
    let b = breaker(config());
    open_it(&b).await;
    let before = b.metrics();
    tokio::time::advance(Duration::from_secs(60)).await;
    let mut rx = b.subscribe();
    let err = fail(&b).await.unwrap_err();
    assert!(matches!(err, CallError::Failed { counted: true, state: Open, .. }), "{err:?}");
    assert_eq!(
        drain(&mut rx),
        [
            (Open, HalfOpen, TransitionReason::RecoveryTimeoutElapsed),
            (HalfOpen, Open, TransitionReason::TrialCallFailed)
        ]
    );
    let after = b.metrics();
    assert_eq!(after.failed_calls, before.failed_calls + 1);
    assert_eq!(after.circuit_opens, 2);
    assert!(after.last_failure >= before.last_failure && after.last_failure.is_some());
    // The wait runs from this failure.
    tokio::time::advance(Duration::from_secs(59)).await;
    assert!(matches!(succeed(&b).await, Err(CallError::Rejected(_))));
    tokio::time::advance(Duration::from_secs(1)).await;
    succeed(&b).await.unwrap();
    assert_eq!(b.state(), HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_at_most_success_threshold_trials() {
    let b = breaker(config());
    open_it(&b).await;
    tokio::time::advance(Duration::from_secs(60)).await;
    let first = b.try_acquire().unwrap();
    let second = b.try_acquire().unwrap();
    let third = b.try_acquire().unwrap();
    assert_eq!(first.state(), HalfOpen);
    let refused = b.try_acquire().unwrap_err();
    assert_eq!(refused, Rejected { state: HalfOpen, retry_after: None });
    // An abandoned trial (cancelled caller) gives its slot back and counts as nothing.
    drop(third);
    let fourth = b.try_acquire().unwrap();
    // An ignored error gives its slot back too.
    assert!(!fourth.failure(&OnexError::validation("bad event")));
    let fifth = b.try_acquire().unwrap();
    first.success();
    second.success();
    assert_eq!(b.state(), HalfOpen);
    fifth.success();
    assert_eq!(b.state(), Closed);
}

#[tokio::test(start_paused = true)]
async fn a_call_slower_than_the_timeout_is_a_failure() {
    let mut c = config();
    c.failure_threshold = 2;
    c.success_threshold = 1;
    let b = breaker(c);
    let err = b.call(std::future::pending::<Result<(), OnexError>>()).await.unwrap_err();
    let CallError::Failed { error, counted, .. } = err else { panic!("expected a failure") };
    assert_eq!(error.code(), ErrorCode::OperationTimeout);
    assert!(counted);
    // Permit style: a success reported after the timeout counts as a timeout.
    let permit = b.try_acquire().unwrap();
    tokio::time::advance(Duration::from_secs(31)).await;
    permit.success();
    assert_eq!(b.state(), Open);
    let m = b.metrics();
    assert_eq!((m.failed_calls, m.timed_out_calls, m.successful_calls), (2, 2, 0));
}

#[tokio::test(start_paused = true)]
async fn failure_rate_over_a_count_window_needs_the_minimum_calls() {
    let mut c = config();
    c.failure_threshold = 20;
    c.failure_rate_threshold = 50;
    c.sliding_window_size = 10;
    c.minimum_number_of_calls = 10;
    let b = breaker(c);
    let mut rx = b.subscribe();
    // F S F S F S F S F: 5 of 9 failed, but below the minimum.
    for i in 0..9 {
        let _ = if i % 2 == 0 { fail(&b).await } else { succeed(&b).await };
    }
    assert_eq!(b.state(), Closed);
    succeed(&b).await.unwrap();
    assert_eq!(b.state(), Closed, "a success never opens");
    assert_eq!(b.metrics().window_calls, 10);
    // The oldest failure leaves the window, this one enters it: 5 of 10.
    let _ = fail(&b).await;
    assert_eq!(b.state(), Open);
    assert_eq!(drain(&mut rx), [(Closed, Open, TransitionReason::FailureRate { percent: 50.0 })]);
}

#[tokio::test(start_paused = true)]
async fn failure_rate_over_a_time_window_forgets_old_calls() {
    let mut c = config();
    c.failure_threshold = 20;
    c.failure_rate_threshold = 50;
    c.sliding_window_type = SlidingWindowType::TimeBased;
    c.sliding_window_size = 10;
    c.minimum_number_of_calls = 4;
    let b = breaker(c);
    let _ = fail(&b).await;
    let _ = fail(&b).await;
    tokio::time::advance(Duration::from_secs(10)).await;
    // The two failures are 10 s old: out of the window.
    succeed(&b).await.unwrap();
    succeed(&b).await.unwrap();
    let _ = fail(&b).await;
    assert_eq!(b.state(), Closed, "3 calls in the window, below the minimum");
    assert_eq!(b.metrics().window_calls, 3);
    let _ = fail(&b).await;
    assert_eq!(b.state(), Open, "2 of 4 failed");
}

#[tokio::test(start_paused = true)]
async fn slow_call_rate_opens_the_circuit() {
    let mut c = config();
    c.slow_call_rate_threshold = 50;
    c.slow_call_duration_threshold_ms = 2_000;
    c.sliding_window_size = 4;
    c.minimum_number_of_calls = 4;
    let b = breaker(c);
    let mut rx = b.subscribe();
    succeed(&b).await.unwrap();
    succeed_after(&b, 1).await.unwrap();
    succeed_after(&b, 2).await.unwrap();
    assert_eq!(b.state(), Closed);
    succeed_after(&b, 3).await.unwrap();
    assert_eq!(b.state(), Open);
    assert_eq!(drain(&mut rx), [(Closed, Open, TransitionReason::SlowCallRate { percent: 50.0 })]);
    let m = b.metrics();
    assert_eq!((m.slow_calls, m.successful_calls, m.failed_calls), (2, 4, 0));
    let average = m.average_latency.unwrap();
    assert!(average > Duration::ZERO && average < Duration::from_secs(3), "{average:?}");
}

#[tokio::test(start_paused = true)]
async fn the_default_classifier_ignores_the_callers_faults() {
    let mut c = config();
    c.failure_threshold = 2;
    c.success_threshold = 1;
    let b = breaker(c);
    for _ in 0..5 {
        let err = b.call(async { Err::<(), _>(OnexError::validation("missing field")) }).await.unwrap_err();
        assert!(matches!(err, CallError::Failed { counted: false, .. }));
        // The caller's own error comes back as it was.
        assert_eq!(err.into_error().code(), ErrorCode::ValidationError);
    }
    assert_eq!(b.state(), Closed);
    // An ignored error does not end a run of failures either.
    let _ = fail(&b).await;
    let _ = b.call(async { Err::<(), _>(OnexError::validation("missing field")) }).await;
    let _ = fail(&b).await;
    assert_eq!(b.state(), Open);
    let m = b.metrics();
    assert_eq!((m.ignored_calls, m.failed_calls, m.total_calls), (6, 2, 8));
}

#[tokio::test(start_paused = true)]
async fn a_custom_classifier_decides_what_counts() {
    let mut c = config();
    c.failure_threshold = 1;
    c.success_threshold = 1;
    let b = breaker(c).with_classifier(|e| e.code() == ErrorCode::DatabaseConnectionFailed);
    let _ = fail(&b).await;
    assert_eq!(b.state(), Closed);
    let _ = b.call(async { Err::<(), _>(OnexError::new(ErrorCode::DatabaseConnectionFailed, "down")) }).await;
    assert_eq!(b.state(), Open);
}

#[tokio::test(start_paused = true)]
async fn forced_open_rejects_everything_until_reset() {
    let b = breaker(config());
    let mut rx = b.subscribe();
    b.force_open();
    assert_eq!(b.state(), ForcedOpen);
    tokio::time::advance(Duration::from_secs(3600)).await;
    let err = succeed(&b).await.unwrap_err();
    assert!(matches!(err, CallError::Rejected(Rejected { state: ForcedOpen, retry_after: None })));
    assert!(!b.is_healthy());
    b.reset();
    succeed(&b).await.unwrap();
    assert_eq!(
        drain(&mut rx),
        [(Closed, ForcedOpen, TransitionReason::ForcedOpen), (ForcedOpen, Closed, TransitionReason::Reset)]
    );
}

#[tokio::test(start_paused = true)]
async fn disabled_passes_everything_and_records_nothing() {
    let mut c = config();
    c.failure_threshold = 1;
    c.success_threshold = 1;
    let b = breaker(c);
    b.disable();
    for _ in 0..10 {
        let _ = fail(&b).await;
        let _ = b.call(std::future::pending::<Result<(), OnexError>>()).await;
    }
    assert_eq!(b.state(), Disabled);
    assert!(!b.is_healthy());
    let m = b.metrics();
    assert_eq!((m.total_calls, m.failed_calls, m.timed_out_calls), (0, 0, 0));
    b.reset();
    let _ = fail(&b).await;
    assert_eq!(b.state(), Open);
}

#[tokio::test(start_paused = true)]
async fn reset_closes_and_zeroes_every_counter() {
    let b = breaker(config());
    open_it(&b).await;
    let _ = succeed(&b).await;
    let mut rx = b.subscribe();
    b.reset();
    assert_eq!(b.state(), Closed);
    assert_eq!(drain(&mut rx), [(Open, Closed, TransitionReason::Reset)]);
    let m = b.metrics();
    assert_eq!(
        (m.total_calls, m.failed_calls, m.rejected_calls, m.circuit_opens, m.circuit_closes, m.window_calls),
        (0, 0, 0, 0, 0, 0)
    );
    assert_eq!((m.last_failure, m.last_success, m.average_latency), (None, None, None));
    // The run of failures starts over too.
    for _ in 0..4 {
        let _ = fail(&b).await;
    }
    assert_eq!(b.state(), Closed);
}

#[tokio::test(start_paused = true)]
async fn a_call_admitted_before_a_transition_judges_nothing_after_it() {
    let b = breaker(config());
    let late = b.try_acquire().unwrap();
    open_it(&b).await;
    tokio::time::advance(Duration::from_secs(60)).await;
    let trial = b.try_acquire().unwrap();
    assert_eq!(b.state(), HalfOpen);
    // The late closed-state failure does not reopen the half-open circuit...
    assert!(late.failure(&service_down()));
    assert_eq!(b.state(), HalfOpen);
    // ...but it is still a failed call.
    assert_eq!(b.metrics().failed_calls, 6);
    trial.success();
}

#[tokio::test(start_paused = true)]
async fn repeated_reopens_grow_the_wait_up_to_the_maximum() {
    let mut c = config();
    c.backoff_multiplier = 2.0;
    c.max_recovery_timeout_secs = 200;
    let b = breaker(c);
    open_it(&b).await;
    for expected in [120, 200, 200] {
        tokio::time::advance(b.try_acquire().unwrap_err().retry_after.unwrap()).await;
        let _ = fail(&b).await;
        assert_eq!(b.state(), Open);
        assert_eq!(b.try_acquire().unwrap_err().retry_after, Some(Duration::from_secs(expected)));
    }
    // Closing forgets the reopens.
    tokio::time::advance(Duration::from_secs(200)).await;
    for _ in 0..3 {
        succeed(&b).await.unwrap();
    }
    assert_eq!(b.state(), Closed);
    open_it(&b).await;
    assert_eq!(b.try_acquire().unwrap_err().retry_after, Some(Duration::from_secs(60)));
}

#[tokio::test(start_paused = true)]
async fn jitter_only_lengthens_the_wait_within_its_percentage() {
    let mut c = config();
    c.jitter_percent = 50;
    let b = breaker(c);
    let mut waits = Vec::new();
    for _ in 0..20 {
        open_it(&b).await;
        let wait = b.try_acquire().unwrap_err().retry_after.unwrap();
        assert!(wait >= Duration::from_secs(60) && wait <= Duration::from_secs(90), "{wait:?}");
        waits.push(wait);
        b.reset();
    }
    waits.dedup();
    assert!(waits.len() > 1, "jitter should vary the wait");
}

#[tokio::test(start_paused = true)]
async fn errors_for_callers_without_degradation_say_the_circuit_state() {
    let b = breaker(config());
    let err = fail(&b).await.unwrap_err().into_error();
    assert_eq!(err.code(), ErrorCode::IntegrationServiceUnavailable);
    assert_eq!(err.details()["circuit_state"], "closed");
    assert_eq!(err.details()["cause_code"], "INTEGRATION_SERVICE_UNAVAILABLE");
    open_it(&b).await;
    let err: OnexError = succeed(&b).await.unwrap_err().into();
    assert_eq!(err.code(), ErrorCode::IntegrationServiceUnavailable);
    assert_eq!(err.details()["circuit_state"], "open");
    assert_eq!(err.details()["retry_after_ms"], 60_000);
}

#[tokio::test(start_paused = true)]
async fn metrics_convert_to_the_shared_model() {
    let b = breaker(config());
    succeed(&b).await.unwrap();
    succeed(&b).await.unwrap();
    succeed(&b).await.unwrap();
    let _ = fail(&b).await;
    let m = b.metrics();
    assert_eq!(m.success_rate, 75.0);
    let model = m.to_model();
    assert_eq!((model.total_events, model.successful_events, model.failed_events), (4, 3, 1));
    assert_eq!(model.last_success, m.last_success);
}

#[test]
fn the_closed_path_never_takes_the_transition_lock() {
    let b = breaker(config());
    // Were the closed path to lock, these calls would deadlock on the held mutex.
    let _held = b.transitions.lock().unwrap();
    for _ in 0..4 {
        assert!(b.try_acquire().unwrap().failure(&service_down()));
    }
    b.try_acquire().unwrap().success();
    assert!(!b.try_acquire().unwrap().failure(&OnexError::validation("bad")));
    assert_eq!(b.metrics().total_calls, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_calls_through_a_closed_breaker_are_counted_exactly() {
    const TASKS: usize = 8;
    const CALLS: usize = 2_000;
    let mut c = config();
    // Each task fails one call in ten, so no run of failures exceeds TASKS < 20 and the
    // failure rate stays at 10 % < 50 %.
    c.failure_threshold = 20;
    c.success_threshold = 1;
    c.failure_rate_threshold = 50;
    let b = Arc::new(breaker(c));
    let ignored = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let b = Arc::clone(&b);
        let ignored = Arc::clone(&ignored);
        tasks.push(tokio::spawn(async move {
            for i in 0..CALLS {
                let result = match (i + t) % 10 {
                    0 => fail(&b).await,
                    5 => {
                        ignored.fetch_add(1, Ordering::Relaxed);
                        b.call(async { Err::<(), _>(OnexError::validation("bad")) }).await
                    }
                    _ => succeed(&b).await,
                };
                assert!(!matches!(result, Err(CallError::Rejected(_))));
                if i % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let m = b.metrics();
    let total = (TASKS * CALLS) as u64;
    assert_eq!(m.state, Closed);
    assert_eq!(m.total_calls, total);
    assert_eq!(m.failed_calls, total / 10);
    assert_eq!(m.ignored_calls, ignored.load(Ordering::Relaxed) as u64);
    assert_eq!(m.successful_calls, total - m.failed_calls - m.ignored_calls);
    assert_eq!((m.rejected_calls, m.circuit_opens), (0, 0));
    assert_eq!(m.window_calls, 100);
    assert!((m.window_failure_rate - 10.0).abs() <= 10.0, "{}", m.window_failure_rate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_failures_open_the_circuit_exactly_once() {
    const TASKS: usize = 8;
    const CALLS: usize = 200;
    let b = Arc::new(breaker(config()));
    let mut rx = b.subscribe();
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let b = Arc::clone(&b);
            tokio::spawn(async move {
                for _ in 0..CALLS {
                    let _ = fail(&b).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(drain(&mut rx), [(Closed, Open, TransitionReason::ConsecutiveFailures { failures: 5 })]);
    let m = b.metrics();
    assert_eq!(m.circuit_opens, 1);
    assert_eq!(m.total_calls, (TASKS * CALLS) as u64);
    assert_eq!(m.failed_calls + m.rejected_calls, m.total_calls);
    assert!(m.failed_calls >= 5 && m.failed_calls <= 5 + TASKS as u64, "{}", m.failed_calls);
}

#[test]
fn racing_callers_after_the_wait_make_one_transition_and_only_the_allowed_trials() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    let b = runtime.block_on(async {
        let b = breaker(config());
        open_it(&b).await;
        tokio::time::advance(Duration::from_secs(60)).await;
        b
    });
    let mut rx = b.subscribe();
    let handle = runtime.handle();
    // Threads entered into the paused runtime share its clock, so all see the wait as over.
    let permits: Vec<Permit<'_>> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    let _clock = handle.enter();
                    (0..100).filter_map(|_| b.try_acquire().ok()).collect::<Vec<_>>()
                })
            })
            .collect();
        threads.into_iter().flat_map(|t| t.join().unwrap()).collect()
    });
    assert_eq!(permits.len(), 3, "success_threshold trials");
    assert_eq!(drain(&mut rx), [(Open, HalfOpen, TransitionReason::RecoveryTimeoutElapsed)]);
    let _clock = handle.enter();
    for permit in permits {
        permit.success();
    }
    assert_eq!(b.state(), Closed);
    assert_eq!(b.metrics().rejected_calls, 800 - 3);
}

mod config {
    use super::*;

    /// (field, how to break it, the range text the error must carry).
    type Case = (&'static str, fn(&mut CircuitBreakerConfig), &'static str);

    fn err_of(config: &CircuitBreakerConfig) -> OnexError {
        config.validate().expect_err("invalid configuration")
    }

    #[test]
    fn each_range_error_names_the_field_and_its_range() {
        let cases: [Case; 6] = [
            ("failure_threshold", |c| c.failure_threshold = 21, "between 1 and 20, got 21"),
            ("recovery_timeout_secs", |c| c.recovery_timeout_secs = 301, "between 5 and 300, got 301"),
            ("success_threshold", |c| c.success_threshold = 0, "between 1 and 10, got 0"),
            ("timeout_secs", |c| c.timeout_secs = 4, "between 5 and 120, got 4"),
            ("max_queue_size", |c| c.max_queue_size = 10_001, "between 10 and 10000, got 10001"),
            ("failure_rate_threshold", |c| c.failure_rate_threshold = 101, "between 0 and 100, got 101"),
        ];
        for (field, break_it, range) in cases {
            let mut c = CircuitBreakerConfig::for_environment(Environment::Production);
            break_it(&mut c);
            let err = err_of(&c);
            assert_eq!(err.code(), ErrorCode::ConfigurationError);
            assert!(err.message().contains(field) && err.message().contains(range), "{err}");
            assert_eq!(err.details()["field"], field);
        }
        let mut c = CircuitBreakerConfig::for_environment(Environment::Production);
        c.backoff_multiplier = f64::NAN;
        assert!(err_of(&c).message().contains("backoff_multiplier must be between 1.0 and 10.0"));
    }

    #[test]
    fn cross_field_rules_name_the_rule() {
        let mut c = CircuitBreakerConfig::for_environment(Environment::Production);
        c.failure_threshold = 10;
        c.recovery_timeout_secs = 15;
        let err = err_of(&c);
        assert!(err.message().contains("recovery_timeout_secs must be between 20 and 300, got 15"), "{err}");
        assert_eq!(err.details()["rule"], "recovery_timeout_secs >= 2 x failure_threshold");

        let mut c = CircuitBreakerConfig::for_environment(Environment::Production);
        c.success_threshold = 6;
        let err = err_of(&c);
        assert_eq!(err.details()["field"], "success_threshold");
        assert_eq!(err.details()["rule"], "success_threshold <= failure_threshold");

        let mut c = CircuitBreakerConfig::for_environment(Environment::Development);
        c.slow_call_duration_threshold_ms = 10_001;
        assert_eq!(err_of(&c).details()["field"], "slow_call_duration_threshold_ms");

        let mut c = CircuitBreakerConfig::for_environment(Environment::Development);
        c.sliding_window_size = 10;
        assert_eq!(err_of(&c).details()["field"], "minimum_number_of_calls");
        c.sliding_window_type = SlidingWindowType::TimeBased;
        c.validate().unwrap();

        let mut c = CircuitBreakerConfig::for_environment(Environment::Production);
        c.max_recovery_timeout_secs = 59;
        assert_eq!(err_of(&c).details()["field"], "max_recovery_timeout_secs");
    }

    #[test]
    fn the_breaker_refuses_an_invalid_configuration() {
        let mut c = CircuitBreakerConfig::for_environment(Environment::Production);
        c.failure_threshold = 0;
        let err = CircuitBreaker::new(c).unwrap_err();
        assert_eq!(err.code(), ErrorCode::ConfigurationError);
        assert_eq!(err.details()["field"], "failure_threshold");
    }

    #[test]
    fn per_environment_defaults() {
        let p = CircuitBreakerConfig::for_environment(Environment::Production);
        let s = CircuitBreakerConfig::for_environment(Environment::Staging);
        let d = CircuitBreakerConfig::for_environment(Environment::Development);
        let figures = |c: &CircuitBreakerConfig| {
            (
                c.failure_threshold,
                c.recovery_timeout_secs,
                c.success_threshold,
                c.timeout_secs,
                c.max_queue_size,
                c.dead_letter_enabled,
            )
        };
        assert_eq!(figures(&p), (5, 60, 3, 30, 1000, true));
        assert_eq!(figures(&s), (3, 30, 2, 20, 500, true));
        assert_eq!(figures(&d), (2, 15, 1, 10, 100, false));
        for c in [p, s, d] {
            c.validate().unwrap();
        }
        let unknown = CircuitBreakerConfig::from_env(&MapEnv::from_pairs([("ENVIRONMENT", "qa")])).unwrap();
        assert_eq!(unknown, CircuitBreakerConfig::for_environment(Environment::Development));
        let staging = CircuitBreakerConfig::from_env(&MapEnv::from_pairs([("ENV", "stg")])).unwrap();
        assert_eq!(staging, CircuitBreakerConfig::for_environment(Environment::Staging));
    }

    #[test]
    fn environment_variables_override_the_defaults() {
        let env = MapEnv::from_pairs([
            ("ENVIRONMENT", "production"),
            ("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "8"),
            ("CIRCUIT_BREAKER_RECOVERY_TIMEOUT", "120"),
            ("CIRCUIT_BREAKER_SUCCESS_THRESHOLD", "4"),
            ("CIRCUIT_BREAKER_TIMEOUT", "45"),
            ("CIRCUIT_BREAKER_MAX_QUEUE", "2000"),
            ("CIRCUIT_BREAKER_DEAD_LETTER", "off"),
            ("CIRCUIT_BREAKER_GRACEFUL_DEGRADATION", "false"),
        ]);
        let c = CircuitBreakerConfig::from_env(&env).unwrap();
        assert_eq!(
            (c.failure_threshold, c.recovery_timeout_secs, c.success_threshold, c.timeout_secs, c.max_queue_size),
            (8, 120, 4, 45, 2000)
        );
        assert!(!c.dead_letter_enabled && !c.graceful_degradation);
    }

    #[test]
    fn a_bad_variable_is_named() {
        let env = MapEnv::from_pairs([("CIRCUIT_BREAKER_TIMEOUT", "soon")]);
        let err = CircuitBreakerConfig::from_env(&env).unwrap_err();
        assert_eq!(err.details()["variable"], "CIRCUIT_BREAKER_TIMEOUT");
        let env = MapEnv::from_pairs([("CIRCUIT_BREAKER_TIMEOUT", "500")]);
        let err = CircuitBreakerConfig::from_env(&env).unwrap_err();
        assert!(err.message().contains("timeout_secs must be between 5 and 120, got 500"), "{err}");
        assert_eq!(err.details()["variable"], "CIRCUIT_BREAKER_TIMEOUT");
        let env = MapEnv::from_pairs([("CIRCUIT_BREAKER_DEAD_LETTER", "maybe")]);
        let err = CircuitBreakerConfig::from_env(&env).unwrap_err();
        assert_eq!(err.details()["variable"], "CIRCUIT_BREAKER_DEAD_LETTER");
    }

    #[test]
    fn a_configuration_written_before_the_new_policies_still_deserializes() {
        let json = serde_json::json!({
            "failure_threshold": 5,
            "recovery_timeout_secs": 60,
            "success_threshold": 3,
            "timeout_secs": 30,
            "max_queue_size": 1000,
            "dead_letter_enabled": true,
            "graceful_degradation": true
        });
        let c: CircuitBreakerConfig = serde_json::from_value(json).unwrap();
        assert_eq!(c, CircuitBreakerConfig::for_environment(Environment::Production));
        let round: CircuitBreakerConfig = serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(round, c);
    }
}

#[tokio::test]
async fn last_success_and_failure_are_wall_times_to_the_millisecond() {
    let b = breaker(config());
    let before = DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap();
    succeed(&b).await.unwrap();
    let _ = fail(&b).await;
    let after = Utc::now();
    let m = b.metrics();
    for at in [m.last_success.unwrap(), m.last_failure.unwrap()] {
        assert!(before <= at && at <= after, "{before} <= {at} <= {after}");
        assert_eq!(at.timestamp_subsec_nanos() % 1_000_000, 0, "{at}");
    }
    assert!(m.last_success <= m.last_failure);
}

#[tokio::test(start_paused = true)]
async fn last_success_follows_the_breakers_clock() {
    let b = breaker(config());
    succeed(&b).await.unwrap();
    let first = b.metrics().last_success.unwrap();
    tokio::time::advance(Duration::from_secs(90)).await;
    succeed(&b).await.unwrap();
    let second = b.metrics().last_success.unwrap();
    assert_eq!((second - first).num_seconds(), 90);
    assert_eq!(b.metrics().last_failure, None);
}
