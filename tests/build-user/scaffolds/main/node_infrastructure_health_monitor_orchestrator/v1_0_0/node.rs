// The handler of `node_infrastructure_health_monitor_orchestrator` v1.0.0: Aggregates the health of PostgreSQL, Kafka and the event bus circuit breaker into one status, keeps the last 100 results for trends, runs periodic monitoring and exposes the omnibase Prometheus series.
//
// Created once by `cargo run -p codegen` from contracts/nodes/node_infrastructure_health_monitor_orchestrator/v1_0_0/contract.yaml.
// From then on this file is owned by people: regeneration never overwrites it.

use onex_runtime::{Container, Context, ErrorCode, OnexError};

use super::handler::{Dependencies, InfrastructureHealthMonitorHandler, Input, Output};

const NODE: &str = "node_infrastructure_health_monitor_orchestrator";

/// Implements the operations of `node_infrastructure_health_monitor_orchestrator`.
pub struct InfrastructureHealthMonitor {
    /// The contract's dependencies, resolved from the container.
    pub dependencies: Dependencies,
}

impl InfrastructureHealthMonitorHandler for InfrastructureHealthMonitor {
    fn new(container: &Container) -> Result<Self, OnexError> {
        Ok(Self { dependencies: Dependencies::resolve(container)? })
    }

    async fn comprehensive_health_check(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("comprehensive_health_check"))
    }

    async fn get_health_trends(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("get_health_trends"))
    }

    async fn start_monitoring(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("start_monitoring"))
    }

    async fn stop_monitoring(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("stop_monitoring"))
    }

    async fn get_prometheus_metrics(&self, _input: Input, _ctx: &Context) -> Result<Output, OnexError> {
        Err(not_implemented("get_prometheus_metrics"))
    }
}

fn not_implemented(operation: &str) -> OnexError {
    OnexError::new(ErrorCode::NotImplemented, format!("{NODE}.{operation} is not implemented yet"))
}
