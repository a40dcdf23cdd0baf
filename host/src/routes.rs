//! The topics of a served node. A contract with an `event_bus` section names them; otherwise
//! they follow the topic scheme `{env}.{tenant}.{context}.{class}.{name}.v1` of the bus:
//!
//! | what                     | topic                                   |
//! |--------------------------|-----------------------------------------|
//! | requests                 | `…cmd.{node}-request.v1`                |
//! | results                  | `…evt.{node}-completed.v1`              |
//! | failures (an OnexError)  | `…evt.{node}-failed.v1`                 |
//! | dead letters             | `…dlq.{node}-request.v1`                |
//!
//! where `{node}` is the node name with `_` written `-`. With an `event_bus` section, requests
//! come from its subscribe topics, results and failures both go to its first publish topic
//! (the event type tells them apart), and dead letters to its first DLQ topic; a list the
//! section leaves empty falls back to the scheme.

use onex_runtime::NodeContract;
use onex_runtime::event_bus::TopicNamer;

/// Where a node's requests come from and its answers go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routes {
    /// Topics consumed.
    pub requests: Vec<String>,
    /// Where results go.
    pub completed: String,
    /// Where failures go.
    pub failed: String,
    /// Where requests that cannot be answered go.
    pub dead_letter: String,
}

impl Routes {
    /// The topics of `contract`.
    pub fn of(contract: &NodeContract, namer: &TopicNamer) -> Self {
        let node = contract.name.replace('_', "-");
        Self {
            requests: vec![namer.topic("cmd", &format!("{node}-request"))],
            completed: namer.topic("evt", &format!("{node}-completed")),
            failed: namer.topic("evt", &format!("{node}-failed")),
            dead_letter: namer.topic("dlq", &format!("{node}-request")),
        }
    }

    /// The event type of a result of `node`.
    pub fn completed_type(node: &str) -> String {
        format!("{node}.completed")
    }

    /// The event type of a failure of `node`.
    pub fn failed_type(node: &str) -> String {
        format!("{node}.failed")
    }
}
