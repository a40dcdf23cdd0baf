//! A contract as typed constant data.
//!
//! The generator turns each `contract.yaml` into a `static NodeContract`, so nothing parses
//! YAML at run time and a node's timeouts, dependencies and io operations are plain data.

use std::time::Duration;

use crate::node::NodeKind;

/// A semantic version, as `contract_version` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SemVer {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch version.
    pub patch: u32,
}

impl SemVer {
    /// `major.minor.patch`.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self { major, minor, patch }
    }
}

impl std::fmt::Display for SemVer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Everything the runtime needs to know about one node contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeContract {
    /// `node_name`, e.g. `node_postgres_connection_manager_effect`.
    pub name: &'static str,
    /// `contract_version`.
    pub version: SemVer,
    /// `node_type`.
    pub kind: NodeKind,
    /// `description`.
    pub description: &'static str,
    /// The contract file, relative to the contracts root it was read from.
    pub source: &'static str,
    /// `input_model` type name.
    pub input_model: &'static str,
    /// `output_model` type name.
    pub output_model: &'static str,
    /// The operations the node dispatches on (the values of the input's operation enum).
    pub operations: &'static [OperationSpec],
    /// `dependencies`.
    pub dependencies: &'static [DependencySpec],
    /// `io_operations` (EFFECT nodes).
    pub io_operations: &'static [IoOperationSpec],
    /// The topics of `event_bus`; `None` when the contract has no `event_bus` section.
    pub topics: Option<NodeTopics>,
}

impl NodeContract {
    /// The operation called `name`.
    pub fn operation(&self, name: &str) -> Option<&'static OperationSpec> {
        self.operations.iter().find(|op| op.name == name)
    }
}

/// The event-bus topics a contract's `event_bus` section names (the constants of the node's generated `topics.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeTopics {
    /// Topics the node consumes (`subscribe_topics`).
    pub subscribe: &'static [&'static str],
    /// Topics the node publishes to (`publish_topics`).
    pub publish: &'static [&'static str],
    /// Dead-letter topics (`dlq_topics`).
    pub dlq: &'static [&'static str],
    /// The consumer group the contract names, if any.
    pub consumer_group: Option<&'static str>,
}

/// One operation of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperationSpec {
    /// The wire name, e.g. `execute_query`.
    pub name: &'static str,
    /// What it does.
    pub description: &'static str,
    /// The time the node allows it before answering `OPERATION_TIMEOUT`.
    pub timeout: Duration,
}

/// What kind of thing a dependency is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DependencyKind {
    /// A behaviour resolved from the container.
    Protocol,
    /// A concrete service resolved from the container.
    Service,
    /// A shared model type (not resolved at run time).
    Model,
    /// Anything else the contract named (`environment`, `library`, …); kept verbatim.
    Other(&'static str),
}

/// One entry of `dependencies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DependencySpec {
    /// `name`.
    pub name: &'static str,
    /// `type`.
    pub kind: DependencyKind,
    /// `class_name` (the Python class in the original system).
    pub class_name: &'static str,
    /// `rust_type`: the Rust path the container resolves, or the shared model's type.
    pub rust_type: Option<&'static str>,
    /// Whether the node fails to start without it.
    pub required: bool,
}

/// One entry of `io_operations`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoOperationSpec {
    /// The operation this entry configures.
    pub operation: &'static str,
    /// `read`, `write`, `query`, …
    pub operation_type: &'static str,
    /// Whether the operation runs all-or-nothing.
    pub atomic: bool,
    /// The per-operation timeout.
    pub timeout: Duration,
    /// What it does.
    pub description: &'static str,
}
