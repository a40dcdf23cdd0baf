//! Stage 2½: what a contract says about behaviour rather than data. Each section has its own
//! module that reads it from the (normalized) tree, checks it with located diagnostics and
//! builds a typed description the emitters turn into Rust:
//!
//! - [`routing`]: `handler_routing` and `io_operations` → one handler method per operation and
//!   a dispatch by the routing strategy;
//! - [`state_machine`]: `state_machine` → `State`/`Trigger` enums and a total transition
//!   function;
//! - [`workflow`]: `workflow_coordination` → a typed step graph and its topological layers;
//! - [`topics`]: `event_bus` → topic constants checked against the topic grammar.
//!
//! A contract that has none of these sections gets [`Behaviour::default`]. The sections are
//! read after [`crate::validate`] has accepted the contract's data part, from the same tree.

pub mod routing;
pub mod state_machine;
pub mod topics;
pub mod workflow;

use crate::diagnostics::Diagnostic;
use crate::read::Node;

/// Everything a contract says about behaviour.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// `handler_routing` (with the `io_operations` it routes to).
    pub routing: Option<routing::Routing>,
    /// `state_machine`.
    pub state_machine: Option<state_machine::StateMachine>,
    /// `workflow_coordination`.
    pub workflow: Option<workflow::Workflow>,
    /// `event_bus`.
    pub topics: Option<topics::Topics>,
}

/// Reads every behaviour section of `root` (a contract of file `file`); problems go to `diags`.
pub fn read(file: &str, root: &Node, diags: &mut Vec<Diagnostic>) -> Behaviour {
    Behaviour {
        routing: routing::read(file, root, diags),
        state_machine: state_machine::read(file, root, diags),
        workflow: workflow::read(file, root, diags),
        topics: topics::read(file, root, diags),
    }
}
