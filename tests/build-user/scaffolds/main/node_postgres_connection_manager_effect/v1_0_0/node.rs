// The handler of `node_postgres_connection_manager_effect` v1.0.0: Runs queries, transactions and function calls on the shared PostgreSQL connection pool, and reports pool health, connection statistics and per-query metrics.
//
// Created once by `cargo run -p codegen` from contracts/nodes/node_postgres_connection_manager_effect/v1_0_0/contract.yaml.
// From then on this file is owned by people: regeneration never overwrites it.

use onex_runtime::{Container, Context, ErrorCode, OnexError};

use super::handler::{Dependencies, Input, Output, PostgresConnectionManagerHandler};

const NODE: &str = "node_postgres_connection_manager_effect";

/// Implements the operations of `node_postgres_connection_manager_effect`.
pub struct PostgresConnectionManager {
    /// The contract's dependencies, resolved from the container.
    pub dependencies: Dependencies,
}

impl PostgresConnectionManagerHandler for PostgresConnectionManager {
    fn new(container: &Container) -> Result<Self, OnexError> {
        Ok(Self { dependencies: Dependencies::resolve(container)? })
    }

    async fn execute_query(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("execute_query"))
    }

    async fn fetch_one(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("fetch_one"))
    }

    async fn fetch_value(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("fetch_value"))
    }

    async fn transaction(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("transaction"))
    }

    async fn call_function(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("call_function"))
    }

    async fn health_check(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("health_check"))
    }

    async fn get_connection_stats(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("get_connection_stats"))
    }

    async fn get_query_metrics(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("get_query_metrics"))
    }

    async fn clear_metrics(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("clear_metrics"))
    }
}

fn not_implemented(operation: &str) -> OnexError {
    OnexError::new(ErrorCode::NotImplemented, format!("{NODE}.{operation} is not implemented yet"))
}
