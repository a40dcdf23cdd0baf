//! The hand-written ONEX runtime.
//!
//! Generated node code (see `generated/`) depends on this crate; this crate never knows a
//! generated type. It holds the pieces every node needs — [`container::Container`] for
//! dependency injection, the [`node`] traits of the four kinds, [`context::Context`],
//! [`error::OnexError`], the [`event`] envelope and the typed [`contract`] data — plus the
//! shared [`models`] that contracts reference by Rust path.
#![warn(missing_docs)]

pub mod circuit_breaker;
pub mod consul;
pub mod container;
pub mod context;
pub mod contract;
pub mod environment;
pub mod error;
pub mod event;
pub mod event_bus;
pub mod health;
pub mod http;
pub mod json;
pub mod kafka;
pub mod metrics;
pub mod models;
pub mod node;
pub mod observability;
pub mod outbox;
pub mod postgres;
pub mod registry;
pub mod rfc3339;
pub mod sanitize;
pub mod sensitive;
mod stripes;
pub mod telemetry;
pub mod workflow;

pub use container::Container;
pub use context::{Context, TraceContext};
pub use contract::{DependencyKind, DependencySpec, IoOperationSpec, NodeContract, NodeTopics, OperationSpec, SemVer};
pub use error::{ErrorCode, OnexError};
pub use node::{ComputeNode, DynNode, EffectNode, Node, NodeKind, OrchestratorNode, ReducerNode};
pub use registry::{NodeRegistration, NodeRegistry};
pub use sensitive::Sensitive;
