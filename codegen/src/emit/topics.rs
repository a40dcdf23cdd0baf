//! `topics.rs` of a node whose contract has a `topics` section ([`crate::behaviour::topics`]).

use crate::behaviour::topics::Topics;
use crate::model::NodeModel;

/// The file's text.
pub(super) fn file(_node: &NodeModel, _section: &Topics) -> Result<String, String> {
    Err("not emitted yet".to_owned())
}
