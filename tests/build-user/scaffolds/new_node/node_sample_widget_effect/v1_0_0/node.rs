// The handler of `node_sample_widget_effect` v1.0.0: sample widget: describe what this node does.
//
// Created once by `cargo run -p codegen` from contracts/nodes/node_sample_widget_effect/v1_0_0/contract.yaml.
// From then on this file is owned by people: regeneration never overwrites it.

use onex_runtime::{Container, Context, ErrorCode, OnexError};

use super::handler::{Dependencies, Input, Output, SampleWidgetHandler};

const NODE: &str = "node_sample_widget_effect";

/// Implements the operations of `node_sample_widget_effect`.
pub struct SampleWidget {
    /// The contract's dependencies, resolved from the container.
    pub dependencies: Dependencies,
}

impl SampleWidgetHandler for SampleWidget {
    fn new(container: &Container) -> Result<Self, OnexError> {
        Ok(Self { dependencies: Dependencies::resolve(container)? })
    }

    async fn process(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("process"))
    }

    async fn health_check(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("health_check"))
    }
}

fn not_implemented(operation: &str) -> OnexError {
    OnexError::new(ErrorCode::NotImplemented, format!("{NODE}.{operation} is not implemented yet"))
}
