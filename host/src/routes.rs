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
    /// The event type of a result ([`Routes::completed_type`]).
    pub completed_type: String,
    /// The event type of a failure ([`Routes::failed_type`]).
    pub failed_type: String,
}

impl Routes {
    /// The topics of `contract`.
    pub fn of(contract: &NodeContract, namer: &TopicNamer) -> Self {
        let node = contract.name.replace('_', "-");
        let mut routes = Self {
            requests: vec![namer.topic("cmd", &format!("{node}-request"))],
            completed: namer.topic("evt", &format!("{node}-completed")),
            failed: namer.topic("evt", &format!("{node}-failed")),
            dead_letter: namer.topic("dlq", &format!("{node}-request")),
            completed_type: Self::completed_type(contract.name),
            failed_type: Self::failed_type(contract.name),
        };
        if let Some(topics) = &contract.topics {
            if !topics.subscribe.is_empty() {
                routes.requests = topics.subscribe.iter().map(|t| (*t).to_owned()).collect();
            }
            if let Some(first) = topics.publish.first() {
                routes.completed = (*first).to_owned();
                routes.failed = (*first).to_owned();
            }
            if let Some(first) = topics.dlq.first() {
                routes.dead_letter = (*first).to_owned();
            }
        }
        routes
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

#[cfg(test)]
mod tests {
    use onex_runtime::NodeTopics;

    use super::*;

    fn contract() -> NodeContract {
        *onex_generated::registry().find("node_consul_effect", None).expect("registered").contract
    }

    #[test]
    fn without_an_event_bus_section_the_topics_follow_the_scheme() {
        let routes = Routes::of(&contract(), &TopicNamer::default());
        assert_eq!(routes.requests, ["dev.omnibase.onex.cmd.node-consul-effect-request.v1"]);
        assert_eq!(routes.completed, "dev.omnibase.onex.evt.node-consul-effect-completed.v1");
        assert_eq!(routes.failed, "dev.omnibase.onex.evt.node-consul-effect-failed.v1");
        assert_eq!(routes.dead_letter, "dev.omnibase.onex.dlq.node-consul-effect-request.v1");
    }

    #[test]
    fn the_contracts_event_bus_section_names_the_topics() {
        let topics = NodeTopics {
            subscribe: &["onex.cmd.consul.register.v1", "onex.cmd.consul.deregister.v1"],
            publish: &["onex.evt.consul.done.v1"],
            dlq: &["onex.dlq.consul.register.v1"],
            consumer_group: None,
        };
        let routes = Routes::of(&NodeContract { topics: Some(topics), ..contract() }, &TopicNamer::default());
        assert_eq!(routes.requests, ["onex.cmd.consul.register.v1", "onex.cmd.consul.deregister.v1"]);
        assert_eq!(
            (routes.completed.as_str(), routes.failed.as_str()),
            ("onex.evt.consul.done.v1", "onex.evt.consul.done.v1")
        );
        assert_eq!(routes.dead_letter, "onex.dlq.consul.register.v1");

        let partial = NodeTopics { publish: &[], dlq: &[], ..topics };
        let routes = Routes::of(&NodeContract { topics: Some(partial), ..contract() }, &TopicNamer::default());
        assert_eq!(routes.completed, "dev.omnibase.onex.evt.node-consul-effect-completed.v1");
    }
}
