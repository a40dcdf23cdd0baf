//! `state_machine`: not read yet.

use crate::diagnostics::Diagnostic;
use crate::read::Node;

/// What `state_machine` says.
#[derive(Debug, Clone, PartialEq)]
pub struct StateMachine {}

/// Reads `state_machine` from `root`, if present.
pub fn read(_file: &str, _root: &Node, _diags: &mut Vec<Diagnostic>) -> Option<StateMachine> {
    None
}
