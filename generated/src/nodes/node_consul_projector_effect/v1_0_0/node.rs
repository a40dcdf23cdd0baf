// The handler of `node_consul_projector_effect` v1.0.0: Projects live Consul state into read models (service state, health state, KV state and service topology), caching each projection for a bounded time; never returns made-up data.
//
// Created once by `cargo run -p codegen` from contracts/nodes/node_consul_projector_effect/v1_0_0/contract.yaml.
// From then on this file is owned by people: regeneration never overwrites it.
//
// Every operation is one `onex_runtime::consul::projection::Projector::project` call on the
// `ConsulClient` resolved from the container: the projections, the cache and its invalidation
// by Consul's blocking queries live there (see that module's documentation). This file turns
// the input into a `Selection`, the projection into the output models, and any failure into
// `success: false` with the error's code (the client's `INTEGRATION_SERVICE_UNAVAILABLE` when
// Consul cannot be reached, a `VALIDATION_ERROR` for a request that selects nothing); only
// the contract timeout is an `Err`. Each read from Consul (not a cache hit, and once for the
// requests that shared the read) is announced as `consul.projection.completed` when an event
// publisher is registered, with the projection's size and never its content (KV values may be
// secrets).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use onex_runtime::consul::projection::projector::{Projection, Projector};
use onex_runtime::consul::projection::{CheckState, KvValue, Selection};
use onex_runtime::event::OnexEvent;
use onex_runtime::{Container, Context, OnexError};
use serde_json::{Value, json};

use super::handler::{ConsulProjectorHandler, Dependencies, Input, Output};
use super::models::{
    EnumConsulCheckStatus, EnumConsulKvValueEncoding, EnumConsulProjectorOperation as Operation,
    ModelConsulHealthProjection, ModelConsulKvEntry, ModelConsulKvProjection, ModelConsulProjectorError,
    ModelConsulTopologyEdge, ModelConsulTopologyProjection,
};

const NODE: &str = "node_consul_projector_effect";

/// The event announcing a projection read from Consul.
pub const PROJECTION_EVENT: &str = "consul.projection.completed";

/// Implements the operations of `node_consul_projector_effect`.
pub struct ConsulProjector {
    /// The contract's dependencies, resolved from the container.
    pub dependencies: Dependencies,
    projector: Projector,
}

impl ConsulProjector {
    /// The projector: its cache and watchers.
    pub fn projector(&self) -> &Projector {
        &self.projector
    }

    /// Every operation: select, project (cached or read), answer.
    async fn project(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        let arrival = Instant::now();
        let correlation_id = input.correlation_id.unwrap_or_else(|| ctx.correlation_id());
        let result = match selection(&input) {
            Ok(selection) => {
                // Boxed: the read's state machine is large and only this path carries it.
                Box::pin(self.projector.project(selection, Duration::from_secs(input.cache_ttl_seconds), arrival)).await
            }
            Err(err) => Err(err),
        };
        if let Ok(projected) = &result
            && projected.read_here
        {
            let payload = summary(input.operation_type, projected.projected_at, &projected.value);
            Box::pin(self.publish(correlation_id, payload, ctx)).await;
        }
        let mut output = Output::new(true, input.operation_type, correlation_id, Utc::now());
        match result {
            Ok(projected) => {
                output.projected_at = Some(projected.projected_at);
                output.from_cache = Some(projected.from_cache);
                fill(&mut output, &projected.value);
            }
            Err(err) => {
                output.success = false;
                output.error = Some(operation_error(&err));
            }
        }
        Ok(output)
    }

    /// Publishes when a publisher is registered. A failed publish is logged, not returned: the
    /// projection was built and belongs to the caller.
    async fn publish(&self, correlation_id: uuid::Uuid, payload: Value, ctx: &Context) {
        let Some(bus) = &self.dependencies.protocol_event_bus else { return };
        let mut event = OnexEvent::new(PROJECTION_EVENT, NODE, correlation_id, payload);
        ctx.stamp_event(&mut event, NODE);
        if let Err(e) = bus.publish(event).await {
            tracing::warn!(target: "onex::consul", error = %e, "publishing the projection event failed");
        }
    }
}

/// The selection an input asks for; a request that selects nothing is a validation error.
fn selection(input: &Input) -> Result<Selection, OnexError> {
    let targets = input.target_services.clone();
    match input.operation_type {
        Operation::ProjectServiceState => Selection::services(targets),
        Operation::ProjectHealthState => {
            let states = input.health_states.as_ref().map(|states| {
                states
                    .iter()
                    .map(|state| match state {
                        EnumConsulCheckStatus::Passing => CheckState::Passing,
                        EnumConsulCheckStatus::Warning => CheckState::Warning,
                        EnumConsulCheckStatus::Critical => CheckState::Critical,
                    })
                    .collect()
            });
            Selection::health(targets, states)
        }
        Operation::ProjectKvState => Selection::kv(input.key_prefixes.clone(), input.include_values),
        Operation::ProjectTopology => Selection::topology(targets, input.depth),
    }
}

/// Puts the projection into its output field.
fn fill(output: &mut Output, projection: &Projection) {
    match projection {
        Projection::Services(services) => output.services = Some(services.clone()),
        Projection::Health(health) => {
            output.health = Some(ModelConsulHealthProjection::new(
                health.passing,
                health.warning,
                health.critical,
                health.overall,
                health.services.clone(),
            ));
        }
        Projection::Kv(kv) => {
            let entries = kv
                .entries
                .iter()
                .map(|entry| {
                    let mut model = ModelConsulKvEntry::new(entry.key.clone(), entry.modify_index);
                    match &entry.value {
                        Some(KvValue::Text(text)) => {
                            model.value = Some(text.clone());
                            model.value_encoding = Some(EnumConsulKvValueEncoding::Text);
                        }
                        Some(KvValue::Base64(encoded)) => {
                            model.value = Some(encoded.clone());
                            model.value_encoding = Some(EnumConsulKvValueEncoding::Base64);
                        }
                        None => {}
                    }
                    model
                })
                .collect();
            output.kv = Some(ModelConsulKvProjection::new(kv.total_keys, kv.prefixes.clone(), entries));
        }
        Projection::Topology(topology) => {
            let edges = topology
                .edges
                .iter()
                .map(|edge| {
                    ModelConsulTopologyEdge::new(
                        edge.source.clone(),
                        edge.target.clone(),
                        edge.relationship.as_str().to_owned(),
                    )
                })
                .collect();
            output.topology = Some(ModelConsulTopologyProjection::new(topology.nodes.clone(), edges, topology.depth));
        }
    }
}

/// The event payload: which projection, when, and how big; never names, keys or values.
fn summary(operation: Operation, projected_at: DateTime<Utc>, projection: &Projection) -> Value {
    let size = match projection {
        Projection::Services(services) => json!({"services": services.len()}),
        Projection::Health(health) => json!({
            "services": health.services.len(),
            "passing": health.passing,
            "warning": health.warning,
            "critical": health.critical,
            "overall": health.overall,
        }),
        Projection::Kv(kv) => json!({"total_keys": kv.total_keys}),
        Projection::Topology(topology) => json!({
            "nodes": topology.nodes.len(),
            "edges": topology.edges.len(),
            "depth": topology.depth,
        }),
    };
    json!({"operation": operation.as_str(), "projected_at": projected_at, "size": size})
}

/// The error as the contract carries it: the stable code and the sanitized message (the
/// client's messages never hold the token), with the cause when there is one.
fn operation_error(err: &OnexError) -> ModelConsulProjectorError {
    let mut message = err.message().to_owned();
    if let Some(source) = err.source_message() {
        message.push_str(": ");
        message.push_str(&source);
    }
    ModelConsulProjectorError::new(err.code(), message)
}

impl ConsulProjectorHandler for ConsulProjector {
    fn new(container: &Container) -> Result<Self, OnexError> {
        let dependencies = Dependencies::resolve(container)?;
        let projector = Projector::new((*dependencies.consul_client).clone())?;
        Ok(Self { dependencies, projector })
    }

    async fn project_service_state(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        self.project(input, ctx).await
    }

    async fn project_health_state(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        self.project(input, ctx).await
    }

    async fn project_kv_state(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        self.project(input, ctx).await
    }

    async fn project_topology(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        self.project(input, ctx).await
    }
}
