//! The executor: one loop that starts ready steps and waits for the first of "a step ended",
//! "cancelled" and "the workflow timed out".

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::time::Instant;

use super::{CancelReason, CancelToken, Graph, OnFailure, Report, StepReport, StepStatus};
use crate::error::{ErrorCode, OnexError};

/// Runs `graph`, calling `step(index)` for each step that becomes ready (and again for each
/// retry). Returns a report for every step; an `Err` only when the graph breaks an invariant
/// of [`Graph::check`], in which case nothing ran.
pub async fn run<F, Fut>(graph: &Graph, step: F, cancel: &CancelToken) -> Result<Report, OnexError>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<(), OnexError>>,
{
    graph.check()?;
    let run_started = Instant::now();
    let deadline = graph.timeout.map(|t| run_started + t);
    let n = graph.steps.len();
    let order: Vec<usize> = graph.layers.iter().flat_map(|layer| layer.iter().copied()).collect();
    let limit = graph.concurrency();
    let attempts: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
    let mut status: Vec<Option<StepStatus>> = vec![None; n];
    let mut started: Vec<Option<Instant>> = vec![None; n];
    let mut durations: Vec<Option<Duration>> = vec![None; n];
    let mut in_flight = FuturesUnordered::new();
    let mut stopped: Option<CancelReason> = None;

    loop {
        if cancel.is_cancelled() {
            stopped = Some(CancelReason::Token);
            break;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            stopped = Some(CancelReason::Timeout);
            break;
        }
        for &index in &order {
            if in_flight.len() >= limit {
                break;
            }
            let ready = started[index].is_none()
                && status[index].is_none()
                && graph.steps[index].depends_on.iter().all(|&d| matches!(status[d], Some(StepStatus::Succeeded)));
            if ready {
                tracing::debug!(target: "onex::workflow", workflow = graph.name, step = graph.steps[index].id, "step started");
                started[index] = Some(Instant::now());
                in_flight.push(attempt(graph, index, &step, &attempts[index]));
            }
        }
        if in_flight.is_empty() {
            break;
        }
        let ended = tokio::select! {
            biased;
            () = cancel.cancelled() => Err(CancelReason::Token),
            () = sleep_until(deadline) => Err(CancelReason::Timeout),
            Some(ended) = in_flight.next() => Ok(ended),
        };
        let (index, result, took) = match ended {
            Ok(ended) => ended,
            Err(reason) => {
                tracing::info!(target: "onex::workflow", workflow = graph.name, reason = ?reason, "workflow run stopped");
                stopped = Some(reason);
                break;
            }
        };
        durations[index] = Some(took);
        match result {
            Ok(()) => status[index] = Some(StepStatus::Succeeded),
            Err(error) => {
                tracing::warn!(
                    target: "onex::workflow",
                    workflow = graph.name,
                    step = graph.steps[index].id,
                    code = %error.code(),
                    attempts = attempts[index].load(Relaxed),
                    "workflow step failed"
                );
                status[index] = Some(StepStatus::Failed(error));
                skip_dependents(graph, &order, &mut status);
                if graph.on_failure == OnFailure::FailFast {
                    stopped = Some(CancelReason::FailFast(index));
                    break;
                }
            }
        }
    }
    // Dropping the futures of the steps still in flight is what cancels them.
    drop(in_flight);

    let now = Instant::now();
    let steps = graph
        .steps
        .iter()
        .enumerate()
        .map(|(index, spec)| {
            let status = status[index].take().unwrap_or_else(|| {
                // Nothing is left without a status when the loop ran out of work: a step whose
                // dependencies all succeeded was started, and the others were skipped.
                StepStatus::Cancelled(stopped.unwrap_or(CancelReason::Token))
            });
            let duration = durations[index].or_else(|| started[index].map(|s| now - s));
            StepReport { id: spec.id, status, attempts: attempts[index].load(Relaxed), duration }
        })
        .collect();
    Ok(Report { workflow: graph.name, steps, duration: now - run_started, stopped })
}

/// Runs step `index` until it succeeds or has used its retries. Returns the index, the last
/// result and the time from the first start.
async fn attempt<F, Fut>(
    graph: &Graph,
    index: usize,
    step: &F,
    attempts: &AtomicU32,
) -> (usize, Result<(), OnexError>, Duration)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<(), OnexError>>,
{
    let spec = &graph.steps[index];
    let first_start = Instant::now();
    let mut retry = 0u32;
    loop {
        attempts.fetch_add(1, Relaxed);
        let result = match spec.timeout {
            Some(limit) => tokio::time::timeout(limit, step(index)).await.unwrap_or_else(|_| {
                Err(OnexError::new(
                    ErrorCode::OperationTimeout,
                    format!("step `{}` of workflow `{}` took longer than {limit:?}", spec.id, graph.name),
                )
                .with_detail("step", spec.id))
            }),
            None => step(index).await,
        };
        match result {
            Err(_) if retry < graph.retry.max_retries => {
                retry += 1;
                tokio::time::sleep(graph.retry.pause(retry)).await;
            }
            result => return (index, result, first_start.elapsed()),
        }
    }
}

/// Marks every step not yet run that depends on a failed or skipped step as skipped, naming
/// the failed step at the root. `order` is topological, so one pass reaches every dependent.
fn skip_dependents(graph: &Graph, order: &[usize], status: &mut [Option<StepStatus>]) {
    for &index in order {
        if status[index].is_some() {
            continue;
        }
        let root = graph.steps[index].depends_on.iter().find_map(|&dep| match &status[dep] {
            Some(StepStatus::Failed(_)) => Some(dep),
            Some(StepStatus::Skipped { because }) => Some(*because),
            _ => None,
        });
        if let Some(because) = root {
            status[index] = Some(StepStatus::Skipped { because });
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
