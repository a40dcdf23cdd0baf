//! Lookup of nodes by name and version, for hosts that route requests to nodes.

use crate::container::Container;
use crate::contract::{NodeContract, SemVer};
use crate::error::{ErrorCode, OnexError};
use crate::node::DynNode;

/// How to build one node: its contract and a constructor that resolves its dependencies.
#[derive(Clone, Copy)]
pub struct NodeRegistration {
    /// The node's contract.
    pub contract: &'static NodeContract,
    /// Builds the node from a container.
    pub construct: fn(&Container) -> Result<Box<dyn DynNode>, OnexError>,
}

impl std::fmt::Debug for NodeRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeRegistration")
            .field("name", &self.contract.name)
            .field("version", &self.contract.version)
            .finish()
    }
}

/// A set of registrations, sorted by name then version.
#[derive(Debug, Clone, Default)]
pub struct NodeRegistry {
    entries: Vec<NodeRegistration>,
}

impl NodeRegistry {
    /// A registry over `entries`.
    pub fn new(entries: impl IntoIterator<Item = NodeRegistration>) -> Self {
        let mut entries: Vec<_> = entries.into_iter().collect();
        entries.sort_by(|a, b| (a.contract.name, a.contract.version).cmp(&(b.contract.name, b.contract.version)));
        Self { entries }
    }

    /// All registrations.
    pub fn entries(&self) -> &[NodeRegistration] {
        &self.entries
    }

    /// The registration for `name` at `version`, or the newest version when `version` is `None`.
    pub fn find(&self, name: &str, version: Option<SemVer>) -> Option<&NodeRegistration> {
        self.entries.iter().rev().find(|e| e.contract.name == name && version.is_none_or(|v| e.contract.version == v))
    }

    /// Builds the node `name` (newest version unless `version` is given).
    pub fn build(
        &self,
        name: &str,
        version: Option<SemVer>,
        container: &Container,
    ) -> Result<Box<dyn DynNode>, OnexError> {
        let entry = self.find(name, version).ok_or_else(|| {
            let known: Vec<String> =
                self.entries.iter().map(|e| format!("{}@{}", e.contract.name, e.contract.version)).collect();
            OnexError::new(
                ErrorCode::RegistryResolutionFailed,
                format!("no node '{name}' in the registry; known: {}", known.join(", ")),
            )
        })?;
        (entry.construct)(container)
    }
}
