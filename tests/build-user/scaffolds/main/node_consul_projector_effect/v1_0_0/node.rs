// The handler of `node_consul_projector_effect` v1.0.0: Projects live Consul state into read models (service state, health state, KV state and service topology), caching each projection for a bounded time; never returns made-up data.
//
// Created once by `cargo run -p codegen` from contracts/nodes/node_consul_projector_effect/v1_0_0/contract.yaml.
// From then on this file is owned by people: regeneration never overwrites it.

use onex_runtime::{Container, Context, ErrorCode, OnexError};

use super::handler::{ConsulProjectorHandler, Dependencies, Input, Output};

const NODE: &str = "node_consul_projector_effect";

/// Implements the operations of `node_consul_projector_effect`.
pub struct ConsulProjector {
    /// The contract's dependencies, resolved from the container.
    pub dependencies: Dependencies,
}

impl ConsulProjectorHandler for ConsulProjector {
    fn new(container: &Container) -> Result<Self, OnexError> {
        Ok(Self { dependencies: Dependencies::resolve(container)? })
    }

    async fn project_service_state(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("project_service_state"))
    }

    async fn project_health_state(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("project_health_state"))
    }

    async fn project_kv_state(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("project_kv_state"))
    }

    async fn project_topology(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("project_topology"))
    }
}

fn not_implemented(operation: &str) -> OnexError {
    OnexError::new(ErrorCode::NotImplemented, format!("{NODE}.{operation} is not implemented yet"))
}
