//! `handler_routing`: not read yet.

use crate::diagnostics::Diagnostic;
use crate::read::Node;

/// What `handler_routing` says.
#[derive(Debug, Clone, PartialEq)]
pub struct Routing {}

/// Reads `handler_routing` from `root`, if present.
pub fn read(_file: &str, _root: &Node, _diags: &mut Vec<Diagnostic>) -> Option<Routing> {
    None
}
