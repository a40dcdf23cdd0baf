// The handler of `node_postgres_adapter_effect` v1.0.0: Message-bus bridge to PostgreSQL; validates each query against size, parameter, complexity and injection limits, runs it behind a database circuit breaker, publishes a completed or failed event, and never raises (failures come back sanitized with success false).
//
// Created once by `cargo run -p codegen` from contracts/nodes/node_postgres_adapter_effect/v1_0_0/contract.yaml.
// From then on this file is owned by people: regeneration never overwrites it.

use onex_runtime::{Container, Context, ErrorCode, OnexError};

use super::handler::{Dependencies, Input, Output, PostgresAdapterHandler};

const NODE: &str = "node_postgres_adapter_effect";

/// Implements the operations of `node_postgres_adapter_effect`.
pub struct PostgresAdapter {
    /// The contract's dependencies, resolved from the container.
    pub dependencies: Dependencies,
}

impl PostgresAdapterHandler for PostgresAdapter {
    fn new(container: &Container) -> Result<Self, OnexError> {
        Ok(Self { dependencies: Dependencies::resolve(container)? })
    }

    async fn query(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("query"))
    }

    async fn health_check(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("health_check"))
    }
}

fn not_implemented(operation: &str) -> OnexError {
    OnexError::new(ErrorCode::NotImplemented, format!("{NODE}.{operation} is not implemented yet"))
}
