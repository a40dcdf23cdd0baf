//! Running an orchestrator's step graph (a contract's `workflow_coordination`).
//!
//! The generator turns the contract's steps into a constant [`Graph`]; [`run`] executes it
//! with a caller-supplied function that runs one step.
//!
//! Invariants (checked by [`Graph::check`] before anything runs):
//! - Steps are numbered by their position in [`Graph::steps`]; a dependency is such a number.
//! - [`Graph::layers`] lists every step exactly once, and every dependency of a step lies in an
//!   earlier layer, so the graph has no cycle and the layers are a topological order.
//! - A graph has at most [`MAX_STEPS`] steps, and the concurrency limit is at least 1.
//!
//! Rules of a run:
//! - A step starts only when every dependency has succeeded. Ready steps start in layer order,
//!   source order within a layer, while fewer than [`Graph::concurrency`] steps are in flight
//!   ([`ExecutionMode::Sequential`] means one at a time).
//! - A failed attempt is retried up to [`Retry::max_retries`] times, after a backoff; a step
//!   that outlives its timeout has failed that attempt with `OPERATION_TIMEOUT`.
//! - A step that fails for good makes every step that depends on it, directly or not,
//!   [`StepStatus::Skipped`] naming that step. Under [`OnFailure::FailFast`] (the default)
//!   the steps in flight are dropped and everything not yet run is cancelled; under
//!   [`OnFailure::ContinueIndependent`] the branches that do not depend on it go on.
//! - Cancelling the [`CancelToken`], reaching the workflow timeout or dropping the future of
//!   [`run`] drops every step in flight and starts nothing new.
//! - Steps run concurrently inside the caller's task (no spawning), so dropping is cancelling
//!   and a step may borrow from its caller; a step that needs a thread of its own spawns one.

mod cancel;
mod report;
mod run;

use std::time::Duration;

use crate::error::{ErrorCode, OnexError};
use crate::node::NodeKind;

pub use cancel::CancelToken;
pub use report::{CancelReason, Report, StepReport, StepStatus};
pub use run::run;

/// The most steps a graph may have (contracts have a handful; the limit keeps the per-run
/// bookkeeping, which is quadratic in the worst case, small).
pub const MAX_STEPS: usize = 1024;

/// How many steps may run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionMode {
    /// One step at a time, in layer order.
    Sequential,
    /// Ready steps run together, up to [`Graph::max_concurrency`].
    Parallel,
}

/// What a step that failed for good does to the rest of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Stop the run: drop the steps in flight, start nothing new.
    FailFast,
    /// Skip the failed step's dependents; steps that do not depend on it go on.
    ContinueIndependent,
}

/// Retries of a failed step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retry {
    /// Attempts after the first one (0: no retry).
    pub max_retries: u32,
    /// Pause before the first retry.
    pub backoff: Duration,
    /// Factor applied to the pause before each further retry (at least 1).
    pub backoff_multiplier: f64,
}

impl Retry {
    /// No retries.
    pub const NONE: Retry = Retry { max_retries: 0, backoff: Duration::ZERO, backoff_multiplier: 1.0 };

    /// The pause before retry number `retry` (1-based), capped at one hour.
    pub fn pause(&self, retry: u32) -> Duration {
        let factor = self.backoff_multiplier.max(1.0).powi(retry.saturating_sub(1).min(64) as i32);
        let seconds = (self.backoff.as_secs_f64() * factor).min(3600.0);
        Duration::from_secs_f64(seconds)
    }
}

/// One step of a graph.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepSpec {
    /// The step's id (`node_id`), unique in the graph.
    pub id: &'static str,
    /// The kind of node that carries the step out, when the contract names it.
    pub kind: Option<NodeKind>,
    /// The steps (by index) that must succeed before this one starts.
    pub depends_on: &'static [usize],
    /// How long one attempt may take.
    pub timeout: Option<Duration>,
}

/// A step graph, as constant data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Graph {
    /// The workflow's name.
    pub name: &'static str,
    /// The steps, in contract order.
    pub steps: &'static [StepSpec],
    /// The steps (by index) in topological layers: a step's dependencies are all in earlier
    /// layers; within a layer, contract order.
    pub layers: &'static [&'static [usize]],
    /// Sequential or parallel.
    pub mode: ExecutionMode,
    /// The most steps in flight at once in [`ExecutionMode::Parallel`].
    pub max_concurrency: usize,
    /// What a failure does to the rest.
    pub on_failure: OnFailure,
    /// Retries of failed steps.
    pub retry: Retry,
    /// How long the whole run may take.
    pub timeout: Option<Duration>,
}

impl Graph {
    /// The most steps in flight at once.
    pub fn concurrency(&self) -> usize {
        match self.mode {
            ExecutionMode::Sequential => 1,
            ExecutionMode::Parallel => self.max_concurrency,
        }
    }

    /// The index of the step called `id`.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.id == id)
    }

    /// Checks the invariants in the module docs; a graph the generator wrote always passes.
    pub fn check(&self) -> Result<(), OnexError> {
        let invalid = |message: String| {
            Err(OnexError::new(ErrorCode::ConfigurationError, message).with_detail("workflow", self.name))
        };
        let n = self.steps.len();
        if n > MAX_STEPS {
            return invalid(format!("workflow `{}` has {n} steps; at most {MAX_STEPS} are allowed", self.name));
        }
        if self.max_concurrency == 0 {
            return invalid(format!("workflow `{}` allows no step to run (max_concurrency 0)", self.name));
        }
        // layer_of[i]: the layer step i is in, once seen.
        let mut layer_of: Vec<Option<usize>> = vec![None; n];
        for (layer, members) in self.layers.iter().enumerate() {
            for &step in members.iter() {
                match layer_of.get_mut(step) {
                    None => return invalid(format!("layer {layer} names step {step}, which does not exist")),
                    Some(Some(_)) => return invalid(format!("step `{}` is in two layers", self.steps[step].id)),
                    Some(slot) => *slot = Some(layer),
                }
            }
        }
        for (index, step) in self.steps.iter().enumerate() {
            let Some(layer) = layer_of[index] else {
                return invalid(format!("step `{}` is in no layer", step.id));
            };
            if self.steps[..index].iter().any(|other| other.id == step.id) {
                return invalid(format!("two steps are called `{}`", step.id));
            }
            for &dep in step.depends_on {
                match layer_of.get(dep).copied().flatten() {
                    Some(dep_layer) if dep_layer < layer => {}
                    Some(_) => {
                        return invalid(format!(
                            "step `{}` depends on `{}`, which is not in an earlier layer",
                            step.id, self.steps[dep].id
                        ));
                    }
                    None => return invalid(format!("step `{}` depends on step {dep}, which does not exist", step.id)),
                }
            }
        }
        Ok(())
    }
}
