//! `state_machine.rs` of a node whose contract has a `state_machine` section ([`crate::behaviour::state_machine`]).

use crate::behaviour::state_machine::StateMachine;
use crate::model::NodeModel;

/// The file's text.
pub(super) fn file(_node: &NodeModel, _section: &StateMachine) -> Result<String, String> {
    Err("not emitted yet".to_owned())
}
