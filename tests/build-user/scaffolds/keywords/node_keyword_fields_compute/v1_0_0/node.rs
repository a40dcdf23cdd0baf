// The handler of `node_keyword_fields_compute` v1.0.0: Property names that are Rust keywords keep their wire names.
//
// Created once by `cargo run -p codegen` from contracts/nodes/node_keyword_fields_compute/v1_0_0/contract.yaml.
// From then on this file is owned by people: regeneration never overwrites it.

use onex_runtime::{Container, Context, ErrorCode, OnexError};

use super::handler::{Dependencies, Input, KeywordFieldsHandler, Output};

const NODE: &str = "node_keyword_fields_compute";

/// Implements the operations of `node_keyword_fields_compute`.
pub struct KeywordFields {
    /// The contract's dependencies, resolved from the container.
    pub dependencies: Dependencies,
}

impl KeywordFieldsHandler for KeywordFields {
    fn new(container: &Container) -> Result<Self, OnexError> {
        Ok(Self { dependencies: Dependencies::resolve(container)? })
    }

    async fn process(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("process"))
    }
}

fn not_implemented(operation: &str) -> OnexError {
    OnexError::new(ErrorCode::NotImplemented, format!("{NODE}.{operation} is not implemented yet"))
}
