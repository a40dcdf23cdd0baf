//! What became of each step of a run.

use std::time::Duration;

use crate::error::OnexError;

/// Why a step was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// The [`super::CancelToken`] was cancelled.
    Token,
    /// The workflow ran past its timeout.
    Timeout,
    /// The step (by index) failed and the graph is [`super::OnFailure::FailFast`].
    FailFast(usize),
}

/// The end state of one step.
#[derive(Debug, Clone)]
pub enum StepStatus {
    /// Every dependency succeeded and so did the step.
    Succeeded,
    /// The last attempt failed (or timed out).
    Failed(OnexError),
    /// Not run: the step (by index) named here failed, and this one depends on it.
    Skipped {
        /// The failed step this one depends on, directly or through other skipped steps.
        because: usize,
    },
    /// Dropped while running, or never started.
    Cancelled(CancelReason),
}

/// One step's line of a [`Report`].
#[derive(Debug, Clone)]
pub struct StepReport {
    /// The step's id.
    pub id: &'static str,
    /// How it ended.
    pub status: StepStatus,
    /// Attempts started (0 when it never started).
    pub attempts: u32,
    /// From the first attempt's start to the end (`None` when it never started).
    pub duration: Option<Duration>,
}

/// The result of [`super::run`]: one line per step, in graph order.
#[derive(Debug, Clone)]
pub struct Report {
    /// The workflow's name.
    pub workflow: &'static str,
    /// One entry per step, indexed like [`super::Graph::steps`].
    pub steps: Vec<StepReport>,
    /// How long the run took.
    pub duration: Duration,
    /// Why the run stopped before running out of work (`None`: every step ran or was skipped).
    pub stopped: Option<CancelReason>,
}

impl Report {
    /// Whether every step succeeded.
    pub fn succeeded(&self) -> bool {
        self.steps.iter().all(|s| matches!(s.status, StepStatus::Succeeded))
    }

    /// The first step (in graph order) that failed, with its error.
    pub fn first_failure(&self) -> Option<(&'static str, &OnexError)> {
        self.steps.iter().find_map(|s| match &s.status {
            StepStatus::Failed(error) => Some((s.id, error)),
            _ => None,
        })
    }

    /// The report of the step called `id`.
    pub fn step(&self, id: &str) -> Option<&StepReport> {
        self.steps.iter().find(|s| s.id == id)
    }
}
