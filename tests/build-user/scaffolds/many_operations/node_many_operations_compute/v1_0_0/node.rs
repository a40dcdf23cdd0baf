// The handler of `node_many_operations_compute` v1.0.0: Eighteen operations, each answered by its own handler method.
//
// Created once by `cargo run -p codegen` from contracts/nodes/node_many_operations_compute/v1_0_0/contract.yaml.
// From then on this file is owned by people: regeneration never overwrites it.

use onex_runtime::{Container, Context, ErrorCode, OnexError};

use super::handler::{Dependencies, Input, ManyOperationsHandler, Output};

const NODE: &str = "node_many_operations_compute";

/// Implements the operations of `node_many_operations_compute`.
pub struct ManyOperations {
    /// The contract's dependencies, resolved from the container.
    pub dependencies: Dependencies,
}

impl ManyOperationsHandler for ManyOperations {
    fn new(container: &Container) -> Result<Self, OnexError> {
        Ok(Self { dependencies: Dependencies::resolve(container)? })
    }

    async fn alpha(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("alpha"))
    }

    async fn bravo(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("bravo"))
    }

    async fn charlie(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("charlie"))
    }

    async fn delta(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("delta"))
    }

    async fn echo(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("echo"))
    }

    async fn foxtrot(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("foxtrot"))
    }

    async fn golf(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("golf"))
    }

    async fn hotel(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("hotel"))
    }

    async fn india(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("india"))
    }

    async fn juliett(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("juliett"))
    }

    async fn kilo(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("kilo"))
    }

    async fn lima(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("lima"))
    }

    async fn mike(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("mike"))
    }

    async fn november(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("november"))
    }

    async fn oscar(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("oscar"))
    }

    async fn papa(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("papa"))
    }

    async fn quebec(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("quebec"))
    }

    async fn romeo(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("romeo"))
    }
}

fn not_implemented(operation: &str) -> OnexError {
    OnexError::new(ErrorCode::NotImplemented, format!("{NODE}.{operation} is not implemented yet"))
}
