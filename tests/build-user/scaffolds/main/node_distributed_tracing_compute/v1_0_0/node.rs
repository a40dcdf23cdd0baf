// The handler of `node_distributed_tracing_compute` v1.0.0: OpenTelemetry tracing for the infrastructure nodes; exports spans over OTLP gRPC with environment-based sampling, records database and Kafka spans, and carries W3C trace context in event metadata.
//
// Created once by `cargo run -p codegen` from contracts/nodes/node_distributed_tracing_compute/v1_0_0/contract.yaml.
// From then on this file is owned by people: regeneration never overwrites it.

use onex_runtime::{Container, Context, ErrorCode, OnexError};

use super::handler::{Dependencies, DistributedTracingHandler, Input, Output};

const NODE: &str = "node_distributed_tracing_compute";

/// Implements the operations of `node_distributed_tracing_compute`.
pub struct DistributedTracing {
    /// The contract's dependencies, resolved from the container.
    pub dependencies: Dependencies,
}

impl DistributedTracingHandler for DistributedTracing {
    fn new(container: &Container) -> Result<Self, OnexError> {
        Ok(Self { dependencies: Dependencies::resolve(container)? })
    }

    async fn initialize_tracing(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("initialize_tracing"))
    }

    async fn trace_operation(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("trace_operation"))
    }

    async fn inject_context(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("inject_context"))
    }

    async fn extract_context(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("extract_context"))
    }

    async fn trace_database(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("trace_database"))
    }

    async fn trace_kafka(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("trace_kafka"))
    }

    async fn shutdown_tracing(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("shutdown_tracing"))
    }
}

fn not_implemented(operation: &str) -> OnexError {
    OnexError::new(ErrorCode::NotImplemented, format!("{NODE}.{operation} is not implemented yet"))
}
