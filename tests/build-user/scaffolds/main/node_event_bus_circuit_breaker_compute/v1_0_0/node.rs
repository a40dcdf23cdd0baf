// The handler of `node_event_bus_circuit_breaker_compute` v1.0.0: Guards event publishing with a circuit breaker (closed, open, half open) that queues events while the circuit is open, dead-letters the overflow and republishes the queue when it closes.
//
// Created once by `cargo run -p codegen` from contracts/nodes/node_event_bus_circuit_breaker_compute/v1_0_0/contract.yaml.
// From then on this file is owned by people: regeneration never overwrites it.

use onex_runtime::{Container, Context, ErrorCode, OnexError};

use super::handler::{Dependencies, EventBusCircuitBreakerHandler, Input, Output};

const NODE: &str = "node_event_bus_circuit_breaker_compute";

/// Implements the operations of `node_event_bus_circuit_breaker_compute`.
pub struct EventBusCircuitBreaker {
    /// The contract's dependencies, resolved from the container.
    pub dependencies: Dependencies,
}

impl EventBusCircuitBreakerHandler for EventBusCircuitBreaker {
    fn new(container: &Container) -> Result<Self, OnexError> {
        Ok(Self { dependencies: Dependencies::resolve(container)? })
    }

    async fn publish_event(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("publish_event"))
    }

    async fn get_state(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("get_state"))
    }

    async fn get_metrics(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("get_metrics"))
    }

    async fn reset_circuit(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("reset_circuit"))
    }

    async fn get_health_status(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("get_health_status"))
    }
}

fn not_implemented(operation: &str) -> OnexError {
    OnexError::new(ErrorCode::NotImplemented, format!("{NODE}.{operation} is not implemented yet"))
}
