// The handler of `node_infrastructure_observability_compute` v1.0.0: Collects infrastructure metrics for 24 h, raises and resolves de-duplicated alerts, computes a weighted health score and latency percentiles, and exports the samples in Prometheus text format.
//
// Created once by `cargo run -p codegen` from contracts/nodes/node_infrastructure_observability_compute/v1_0_0/contract.yaml.
// From then on this file is owned by people: regeneration never overwrites it.

use onex_runtime::{Container, Context, ErrorCode, OnexError};

use super::handler::{Dependencies, InfrastructureObservabilityHandler, Input, Output};

const NODE: &str = "node_infrastructure_observability_compute";

/// Implements the operations of `node_infrastructure_observability_compute`.
pub struct InfrastructureObservability {
    /// The contract's dependencies, resolved from the container.
    pub dependencies: Dependencies,
}

impl InfrastructureObservabilityHandler for InfrastructureObservability {
    fn new(container: &Container) -> Result<Self, OnexError> {
        Ok(Self { dependencies: Dependencies::resolve(container)? })
    }

    async fn record_metric(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("record_metric"))
    }

    async fn get_current_metrics(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("get_current_metrics"))
    }

    async fn get_health_summary(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("get_health_summary"))
    }

    async fn get_performance_trends(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("get_performance_trends"))
    }

    async fn export_prometheus(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("export_prometheus"))
    }

    async fn get_alerts(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("get_alerts"))
    }

    async fn resolve_alert(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("resolve_alert"))
    }
}

fn not_implemented(operation: &str) -> OnexError {
    OnexError::new(ErrorCode::NotImplemented, format!("{NODE}.{operation} is not implemented yet"))
}
