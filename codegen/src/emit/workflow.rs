//! `workflow.rs` of a node whose contract has a `workflow` section ([`crate::behaviour::workflow`]).

use crate::behaviour::workflow::Workflow;
use crate::model::NodeModel;

/// The file's text.
pub(super) fn file(_node: &NodeModel, _section: &Workflow) -> Result<String, String> {
    Err("not emitted yet".to_owned())
}
