//! The workflow executor: dependencies, the concurrency limit, failure rules, cancellation,
//! timeouts and retries. Tests wait for events (channels, semaphores), never for the clock;
//! the timeout tests run on tokio's paused clock, which jumps ahead only when every task waits.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use onex_runtime::workflow::{
    CancelReason, CancelToken, ExecutionMode, Graph, OnFailure, Retry, StepSpec, StepStatus, run,
};
use onex_runtime::{ErrorCode, OnexError};
use tokio::sync::{Semaphore, mpsc};

const fn step(id: &'static str, depends_on: &'static [usize]) -> StepSpec {
    StepSpec { id, kind: None, depends_on, timeout: None }
}

const fn graph(steps: &'static [StepSpec], layers: &'static [&'static [usize]]) -> Graph {
    Graph {
        name: "test",
        steps,
        layers,
        mode: ExecutionMode::Parallel,
        max_concurrency: 8,
        on_failure: OnFailure::FailFast,
        retry: Retry::NONE,
        timeout: None,
    }
}

/// a; b, c after a; d after b and c; e alone.
const DIAMOND: Graph = graph(
    &[step("a", &[]), step("b", &[0]), step("c", &[0]), step("d", &[1, 2]), step("e", &[])],
    &[&[0, 4], &[1, 2], &[3]],
);

/// The chain orchestrator's shape: retrieve → replay, verify → store.
const TWO_CHAINS: Graph = graph(
    &[step("retrieve", &[]), step("replay", &[0]), step("verify", &[]), step("store", &[2])],
    &[&[0, 2], &[1, 3]],
);

/// Sets a flag when dropped: shows a step's future was dropped (cancelled), not finished.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, SeqCst);
    }
}

fn failure(id: &str) -> OnexError {
    OnexError::new(ErrorCode::IntegrationServiceError, format!("{id} failed"))
}

/// Safety net so a broken executor fails the test instead of hanging it.
async fn bounded<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), future).await.expect("the test did not finish")
}

#[tokio::test]
async fn a_step_starts_only_after_its_dependencies_succeeded() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let log = events.clone();
    let report = run(
        &DIAMOND,
        move |i| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push(("start", i));
                // Let the other steps in flight interleave with this one.
                tokio::task::yield_now().await;
                log.lock().unwrap().push(("end", i));
                Ok(())
            }
        },
        &CancelToken::new(),
    )
    .await
    .unwrap();
    assert!(report.succeeded(), "{report:?}");
    let events = events.lock().unwrap().clone();
    let at = |kind: &str, i: usize| events.iter().position(|e| *e == (kind, i)).unwrap();
    for (i, spec) in DIAMOND.steps.iter().enumerate() {
        for &dep in spec.depends_on {
            assert!(at("end", dep) < at("start", i), "{} started before {} ended: {events:?}", spec.id, dep);
        }
    }
    // b and c were in flight together: the graph is parallel.
    assert!(at("start", 2) < at("end", 1), "{events:?}");
    for s in &report.steps {
        assert_eq!(s.attempts, 1);
        assert!(s.duration.is_some());
    }
}

#[tokio::test]
async fn sequential_mode_runs_one_step_at_a_time_in_layer_order() {
    let order = Arc::new(Mutex::new(Vec::new()));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let graph = Graph { mode: ExecutionMode::Sequential, ..TWO_CHAINS };
    let (o, f, m) = (order.clone(), in_flight.clone(), most.clone());
    let report = run(
        &graph,
        move |i| {
            let (o, f, m) = (o.clone(), f.clone(), m.clone());
            async move {
                m.fetch_max(f.fetch_add(1, SeqCst) + 1, SeqCst);
                o.lock().unwrap().push(i);
                tokio::task::yield_now().await;
                f.fetch_sub(1, SeqCst);
                Ok(())
            }
        },
        &CancelToken::new(),
    )
    .await
    .unwrap();
    assert!(report.succeeded());
    assert_eq!(*order.lock().unwrap(), [0, 2, 1, 3], "layer by layer, contract order within a layer");
    assert_eq!(most.load(SeqCst), 1);
}

#[tokio::test]
async fn no_more_steps_run_at_once_than_the_limit() {
    const WIDE: Graph = Graph {
        max_concurrency: 2,
        ..graph(
            &[step("s0", &[]), step("s1", &[]), step("s2", &[]), step("s3", &[]), step("s4", &[]), step("s5", &[])],
            &[&[0, 1, 2, 3, 4, 5]],
        )
    };
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let (f, m, g) = (in_flight.clone(), most.clone(), gate.clone());
    let runner = tokio::spawn(async move {
        let step = move |i: usize| {
            let (f, m, g, tx) = (f.clone(), m.clone(), g.clone(), started_tx.clone());
            async move {
                m.fetch_max(f.fetch_add(1, SeqCst) + 1, SeqCst);
                tx.send(i).unwrap();
                g.acquire().await.unwrap().forget();
                f.fetch_sub(1, SeqCst);
                Ok(())
            }
        };
        run(&WIDE, step, &CancelToken::new()).await
    });
    bounded(async {
        // The limit is reached: two steps start before any is let go.
        let mut seen = vec![started.recv().await.unwrap(), started.recv().await.unwrap()];
        for _ in 0..4 {
            gate.add_permits(1);
            seen.push(started.recv().await.unwrap());
        }
        gate.add_permits(2);
        seen.sort();
        assert_eq!(seen, [0, 1, 2, 3, 4, 5]);
    })
    .await;
    let report = bounded(runner).await.unwrap().unwrap();
    assert!(report.succeeded());
    assert_eq!(most.load(SeqCst), 2);
}

#[tokio::test]
async fn continue_independent_skips_only_the_dependents_of_a_failure() {
    let graph = Graph { on_failure: OnFailure::ContinueIndependent, ..DIAMOND };
    let report = run(&graph, |i| async move { if i == 1 { Err(failure("b")) } else { Ok(()) } }, &CancelToken::new())
        .await
        .unwrap();
    let status = |id: &str| report.step(id).unwrap().status.clone();
    assert!(matches!(status("a"), StepStatus::Succeeded));
    assert!(matches!(status("b"), StepStatus::Failed(ref e) if e.message() == "b failed"));
    assert!(matches!(status("c"), StepStatus::Succeeded));
    assert!(matches!(status("d"), StepStatus::Skipped { because: 1 }), "{:?}", status("d"));
    assert!(matches!(status("e"), StepStatus::Succeeded));
    assert_eq!(report.step("d").unwrap().attempts, 0);
    assert_eq!(report.step("d").unwrap().duration, None);
    assert_eq!(report.first_failure().map(|(id, _)| id), Some("b"));
    assert_eq!(report.stopped, None, "continue-independent runs out of work");
}

#[tokio::test]
async fn a_skip_names_the_failure_at_the_root_of_a_chain() {
    const CHAIN: Graph = Graph {
        on_failure: OnFailure::ContinueIndependent,
        ..graph(&[step("a", &[]), step("b", &[0]), step("c", &[1]), step("d", &[])], &[&[0, 3], &[1], &[2]])
    };
    let report = run(&CHAIN, |i| async move { if i == 0 { Err(failure("a")) } else { Ok(()) } }, &CancelToken::new())
        .await
        .unwrap();
    assert!(matches!(report.steps[1].status, StepStatus::Skipped { because: 0 }));
    assert!(matches!(report.steps[2].status, StepStatus::Skipped { because: 0 }));
    assert!(matches!(report.steps[3].status, StepStatus::Succeeded));
}

#[tokio::test]
async fn fail_fast_drops_the_steps_in_flight_and_starts_nothing_new() {
    // a fails once e is running; b depends on a; e is in flight; d waits for e.
    const G: Graph = graph(&[step("a", &[]), step("b", &[0]), step("e", &[]), step("d", &[2])], &[&[0, 2], &[1, 3]]);
    let e_dropped = Arc::new(AtomicBool::new(false));
    let e_running = Arc::new(tokio::sync::Notify::new());
    let calls = Arc::new(AtomicUsize::new(0));
    let (dropped, running, c) = (e_dropped.clone(), e_running.clone(), calls.clone());
    let report = bounded(run(
        &G,
        move |i| {
            let (dropped, running) = (dropped.clone(), running.clone());
            c.fetch_add(1, SeqCst);
            async move {
                match i {
                    0 => {
                        running.notified().await;
                        Err(failure("a"))
                    }
                    2 => {
                        let _flag = DropFlag(dropped);
                        running.notify_one();
                        std::future::pending().await
                    }
                    _ => Ok(()),
                }
            }
        },
        &CancelToken::new(),
    ))
    .await
    .unwrap();
    assert!(matches!(report.steps[0].status, StepStatus::Failed(_)));
    assert!(matches!(report.steps[1].status, StepStatus::Skipped { because: 0 }));
    assert!(matches!(report.steps[2].status, StepStatus::Cancelled(CancelReason::FailFast(0))));
    assert!(matches!(report.steps[3].status, StepStatus::Cancelled(CancelReason::FailFast(0))));
    assert_eq!(report.steps[2].attempts, 1);
    assert!(report.steps[2].duration.is_some());
    assert_eq!(report.steps[3].attempts, 0);
    assert!(e_dropped.load(SeqCst), "the step in flight was dropped");
    assert_eq!(report.stopped, Some(CancelReason::FailFast(0)));
    assert_eq!(calls.load(SeqCst), 2, "only a and e were ever started");
}

#[tokio::test]
async fn cancelling_the_token_stops_the_run_and_starts_nothing_new() {
    const G: Graph =
        Graph { max_concurrency: 2, ..graph(&[step("x", &[]), step("y", &[]), step("z", &[])], &[&[0, 1, 2]]) };
    let drops = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let token = CancelToken::new();
    let (d, c, t) = (drops.clone(), calls.clone(), token.clone());
    let runner = tokio::spawn(async move {
        let step = move |i: usize| {
            let (d, tx) = (d.clone(), started_tx.clone());
            c.fetch_add(1, SeqCst);
            async move {
                struct Count(Arc<AtomicUsize>);
                impl Drop for Count {
                    fn drop(&mut self) {
                        self.0.fetch_add(1, SeqCst);
                    }
                }
                let _count = Count(d);
                tx.send(i).unwrap();
                std::future::pending::<Result<(), OnexError>>().await
            }
        };
        run(&G, step, &t).await
    });
    bounded(async {
        started.recv().await.unwrap();
        started.recv().await.unwrap();
    })
    .await;
    token.cancel();
    let report = bounded(runner).await.unwrap().unwrap();
    for s in &report.steps {
        assert!(matches!(s.status, StepStatus::Cancelled(CancelReason::Token)), "{s:?}");
    }
    assert_eq!(calls.load(SeqCst), 2, "the third step never started");
    assert_eq!(report.stopped, Some(CancelReason::Token));
    assert_eq!(drops.load(SeqCst), 2, "both steps in flight were dropped");
    assert_eq!(report.steps.iter().filter(|s| s.attempts == 0).count(), 1);

    // A token cancelled before the run starts nothing.
    let calls = AtomicUsize::new(0);
    let report = run(
        &G,
        |_| {
            calls.fetch_add(1, SeqCst);
            async { Ok(()) }
        },
        &token,
    )
    .await
    .unwrap();
    assert_eq!(calls.load(SeqCst), 0);
    assert!(report.steps.iter().all(|s| matches!(s.status, StepStatus::Cancelled(CancelReason::Token))));
}

#[tokio::test]
async fn dropping_the_run_future_drops_every_step_in_flight() {
    let dropped = Arc::new(AtomicBool::new(false));
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let flag = dropped.clone();
    let token = CancelToken::new();
    let mut running = Box::pin(run(
        &DIAMOND,
        move |i| {
            let (flag, tx) = (flag.clone(), started_tx.clone());
            async move {
                let _flag = DropFlag(flag);
                tx.send(i).unwrap();
                std::future::pending::<Result<(), OnexError>>().await
            }
        },
        &token,
    ));
    tokio::select! {
        _ = &mut running => panic!("the run cannot finish: its steps never end"),
        first = started.recv() => assert_eq!(first, Some(0)),
    }
    assert!(!dropped.load(SeqCst));
    drop(running);
    assert!(dropped.load(SeqCst), "dropping the run dropped the step");
}

#[tokio::test(start_paused = true)]
async fn a_step_past_its_timeout_fails_with_operation_timeout_after_its_retries() {
    const G: Graph = Graph {
        retry: Retry { max_retries: 2, backoff: Duration::from_secs(1), backoff_multiplier: 2.0 },
        ..graph(&[StepSpec { timeout: Some(Duration::from_secs(30)), ..step("slow", &[]) }], &[&[0]])
    };
    let report = run(&G, |_| std::future::pending(), &CancelToken::new()).await.unwrap();
    let slow = &report.steps[0];
    assert!(matches!(&slow.status, StepStatus::Failed(e) if e.code() == ErrorCode::OperationTimeout), "{slow:?}");
    assert_eq!(slow.attempts, 3);
    // Three timeouts and the pauses of 1 s and 2 s between them, on the paused clock.
    assert_eq!(slow.duration, Some(Duration::from_secs(93)));
}

#[tokio::test]
async fn a_failed_attempt_is_retried_until_it_succeeds() {
    const G: Graph = Graph {
        retry: Retry { max_retries: 3, ..Retry::NONE },
        ..graph(&[step("flaky", &[]), step("after", &[0])], &[&[0], &[1]])
    };
    let calls = AtomicUsize::new(0);
    let report = run(
        &G,
        |i| {
            let call = if i == 0 { calls.fetch_add(1, SeqCst) } else { 99 };
            async move { if call < 2 { Err(failure("flaky")) } else { Ok(()) } }
        },
        &CancelToken::new(),
    )
    .await
    .unwrap();
    assert!(report.succeeded(), "{report:?}");
    assert_eq!(report.steps[0].attempts, 3);
    assert_eq!(report.steps[1].attempts, 1);
}

#[tokio::test(start_paused = true)]
async fn the_workflow_timeout_cancels_what_is_left() {
    const G: Graph = Graph {
        timeout: Some(Duration::from_secs(60)),
        ..graph(&[step("quick", &[]), step("stuck", &[0]), step("never", &[1])], &[&[0], &[1], &[2]])
    };
    let report = run(
        &G,
        |i| async move {
            if i == 1 {
                std::future::pending::<()>().await;
            }
            Ok(())
        },
        &CancelToken::new(),
    )
    .await
    .unwrap();
    assert!(matches!(report.steps[0].status, StepStatus::Succeeded));
    assert!(matches!(report.steps[1].status, StepStatus::Cancelled(CancelReason::Timeout)));
    assert!(matches!(report.steps[2].status, StepStatus::Cancelled(CancelReason::Timeout)));
    assert_eq!(report.duration, Duration::from_secs(60));
    assert_eq!(report.stopped, Some(CancelReason::Timeout));
}

#[tokio::test]
async fn a_graph_that_breaks_an_invariant_runs_nothing() {
    const SAME_LAYER: Graph = graph(&[step("a", &[]), step("b", &[0])], &[&[0, 1]]);
    const MISSING: Graph = graph(&[step("a", &[]), step("b", &[0])], &[&[0]]);
    const TWICE: Graph = graph(&[step("a", &[]), step("b", &[0])], &[&[0], &[1, 0]]);
    const UNKNOWN_DEP: Graph = graph(&[step("a", &[7])], &[&[0]]);
    const DUPLICATE: Graph = graph(&[step("a", &[]), step("a", &[])], &[&[0, 1]]);
    const NO_SLOTS: Graph = Graph { max_concurrency: 0, ..graph(&[step("a", &[])], &[&[0]]) };
    let calls = AtomicUsize::new(0);
    for (graph, expected) in [
        (SAME_LAYER, "not in an earlier layer"),
        (MISSING, "in no layer"),
        (TWICE, "in two layers"),
        (UNKNOWN_DEP, "does not exist"),
        (DUPLICATE, "two steps are called"),
        (NO_SLOTS, "max_concurrency 0"),
    ] {
        let error = run(
            &graph,
            |_| {
                calls.fetch_add(1, SeqCst);
                async { Ok(()) }
            },
            &CancelToken::new(),
        )
        .await
        .unwrap_err();
        assert_eq!(error.code(), ErrorCode::ConfigurationError);
        assert!(error.message().contains(expected), "{expected}: {}", error.message());
    }
    assert_eq!(calls.load(SeqCst), 0);
}

#[test]
fn retry_pauses_grow_by_the_multiplier() {
    let retry = Retry { max_retries: 5, backoff: Duration::from_millis(2000), backoff_multiplier: 2.0 };
    assert_eq!(retry.pause(1), Duration::from_secs(2));
    assert_eq!(retry.pause(2), Duration::from_secs(4));
    assert_eq!(retry.pause(3), Duration::from_secs(8));
    assert_eq!(Retry { backoff_multiplier: 1e9, ..retry }.pause(60), Duration::from_secs(3600));
}
