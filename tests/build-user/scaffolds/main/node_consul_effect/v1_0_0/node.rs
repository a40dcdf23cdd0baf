// The handler of `node_consul_effect` v1.0.0: Consul adapter for the KV store and service discovery; reads, writes and deletes keys, registers, deregisters and lists services, and reports service health as the worst check status per service.
//
// Created once by `cargo run -p codegen` from contracts/nodes/node_consul_effect/v1_0_0/contract.yaml.
// From then on this file is owned by people: regeneration never overwrites it.

use onex_runtime::{Container, Context, ErrorCode, OnexError};

use super::handler::{ConsulHandler, Dependencies, Input, Output};

const NODE: &str = "node_consul_effect";

/// Implements the operations of `node_consul_effect`.
pub struct Consul {
    /// The contract's dependencies, resolved from the container.
    pub dependencies: Dependencies,
}

impl ConsulHandler for Consul {
    fn new(container: &Container) -> Result<Self, OnexError> {
        Ok(Self { dependencies: Dependencies::resolve(container)? })
    }

    async fn kv_get(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("kv_get"))
    }

    async fn kv_put(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("kv_put"))
    }

    async fn kv_delete(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("kv_delete"))
    }

    async fn service_register(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("service_register"))
    }

    async fn service_deregister(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("service_deregister"))
    }

    async fn service_list(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("service_list"))
    }

    async fn health_check(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("health_check"))
    }
}

fn not_implemented(operation: &str) -> OnexError {
    OnexError::new(ErrorCode::NotImplemented, format!("{NODE}.{operation} is not implemented yet"))
}
