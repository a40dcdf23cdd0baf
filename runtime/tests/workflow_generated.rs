//! The step graph the generator writes for `codegen/tests/workflow/accepted_parallel_diamond`
//! (checked in as `workflow.rs.in`; `codegen/tests/workflow.rs` keeps it current) runs under
//! the executor: it passes the graph invariants, its typed `Step` view agrees with `GRAPH`, and
//! its coordination rules (parallel, at most 2 at once, continue independent branches) hold.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use onex_runtime::workflow::{CancelToken, StepStatus};
use onex_runtime::{ErrorCode, OnexError};

#[allow(dead_code)]
mod pipeline {
    include!("../../codegen/tests/workflow/accepted_parallel_diamond/workflow.rs.in");
}

use pipeline::{GRAPH, LAYERS, Step};

#[test]
fn the_typed_view_agrees_with_the_graph() {
    GRAPH.check().unwrap();
    for (i, step) in Step::ALL.iter().enumerate() {
        assert_eq!(step.index(), i);
        assert_eq!(step.id(), GRAPH.steps[i].id);
        assert_eq!(Step::from_id(step.id()), Some(*step));
        let deps: Vec<usize> = step.depends_on().iter().map(|d| d.index()).collect();
        assert_eq!(deps, GRAPH.steps[i].depends_on);
    }
    let layers: Vec<Vec<usize>> = LAYERS.iter().map(|l| l.iter().map(|s| s.index()).collect()).collect();
    let graph_layers: Vec<Vec<usize>> = GRAPH.layers.iter().map(|l| l.to_vec()).collect();
    assert_eq!(layers, graph_layers);
    assert_eq!(Step::from_id("nope"), None);
}

// The paused clock skips the contract's retry pauses (500 ms, then 1 s).
#[tokio::test(start_paused = true)]
async fn a_failed_check_skips_publish_and_the_rest_still_runs_two_at_a_time() {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (f, m) = (in_flight.clone(), most.clone());
    let report = pipeline::run(
        move |step| {
            let (f, m) = (f.clone(), m.clone());
            async move {
                m.fetch_max(f.fetch_add(1, SeqCst) + 1, SeqCst);
                tokio::task::yield_now().await;
                f.fetch_sub(1, SeqCst);
                match step {
                    Step::CheckSchema => Err(OnexError::new(ErrorCode::ValidationError, "bad schema")),
                    _ => Ok(()),
                }
            }
        },
        &CancelToken::new(),
    )
    .await
    .unwrap();
    let status = |step: Step| report.steps[step.index()].status.clone();
    assert!(matches!(status(Step::Fetch), StepStatus::Succeeded));
    assert!(matches!(status(Step::Audit), StepStatus::Succeeded));
    assert!(matches!(status(Step::CheckPolicy), StepStatus::Succeeded));
    assert!(matches!(status(Step::CheckSchema), StepStatus::Failed(_)));
    assert!(matches!(status(Step::Publish), StepStatus::Skipped { because } if because == Step::CheckSchema.index()));
    // The contract allows 2 retries: three attempts of the failing check.
    assert_eq!(report.steps[Step::CheckSchema.index()].attempts, 3);
    assert_eq!(most.load(SeqCst), 2, "parallel, limited to max_parallel_steps: 2");
}
