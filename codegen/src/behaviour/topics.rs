//! `event_bus`: not read yet.

use crate::diagnostics::Diagnostic;
use crate::read::Node;

/// What `event_bus` says.
#[derive(Debug, Clone, PartialEq)]
pub struct Topics {}

/// Reads `event_bus` from `root`, if present.
pub fn read(_file: &str, _root: &Node, _diags: &mut Vec<Diagnostic>) -> Option<Topics> {
    None
}
