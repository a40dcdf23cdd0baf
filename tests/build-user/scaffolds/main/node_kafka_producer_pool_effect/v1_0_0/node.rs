// The handler of `node_kafka_producer_pool_effect` v1.0.0: Publishes messages to Kafka through a bounded pool of 2 to 10 producers, waiting for broker acknowledgement, and reports pool statistics and health.
//
// Created once by `cargo run -p codegen` from contracts/nodes/node_kafka_producer_pool_effect/v1_0_0/contract.yaml.
// From then on this file is owned by people: regeneration never overwrites it.

use onex_runtime::{Container, Context, ErrorCode, OnexError};

use super::handler::{Dependencies, Input, KafkaProducerPoolHandler, Output};

const NODE: &str = "node_kafka_producer_pool_effect";

/// Implements the operations of `node_kafka_producer_pool_effect`.
pub struct KafkaProducerPool {
    /// The contract's dependencies, resolved from the container.
    pub dependencies: Dependencies,
}

impl KafkaProducerPoolHandler for KafkaProducerPool {
    fn new(container: &Container) -> Result<Self, OnexError> {
        Ok(Self { dependencies: Dependencies::resolve(container)? })
    }

    async fn send_message(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("send_message"))
    }

    async fn send_batch(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("send_batch"))
    }

    async fn flush(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("flush"))
    }

    async fn get_pool_stats(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("get_pool_stats"))
    }

    async fn health_check(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("health_check"))
    }

    async fn close(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("close"))
    }
}

fn not_implemented(operation: &str) -> OnexError {
    OnexError::new(ErrorCode::NotImplemented, format!("{NODE}.{operation} is not implemented yet"))
}
