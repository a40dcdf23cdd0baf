//! `workflow_coordination`: not read yet.

use crate::diagnostics::Diagnostic;
use crate::read::Node;

/// What `workflow_coordination` says.
#[derive(Debug, Clone, PartialEq)]
pub struct Workflow {}

/// Reads `workflow_coordination` from `root`, if present.
pub fn read(_file: &str, _root: &Node, _diags: &mut Vec<Diagnostic>) -> Option<Workflow> {
    None
}
