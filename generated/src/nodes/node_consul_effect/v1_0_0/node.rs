// The handler of `node_consul_effect` v1.0.0: Consul adapter for the KV store and service discovery; reads, writes and deletes keys, registers, deregisters and lists services, and reports service health as the worst check status per service.
//
// Created once by `cargo run -p codegen` from contracts/nodes/node_consul_effect/v1_0_0/contract.yaml.
// From then on this file is owned by people: regeneration never overwrites it.
//
// Every operation runs on the `onex_runtime::consul::ConsulClient` resolved from the container.
// Failures are answered, as the contract models them, with `success: false`, a status
// (`not_found` for a missing key or unknown service, `failed` otherwise) and `error {code,
// message}`: NOT_FOUND, VALIDATION_ERROR for a request missing what its operation needs,
// INTEGRATION_SERVICE_UNAVAILABLE when Consul cannot be reached (never a stand-in answer),
// INTEGRATION_SERVICE_ERROR when it answers with an error. Only the contract timeout is an
// `Err` (the node's timer).
//
// Deleting a key that does not exist succeeds: Consul's delete is idempotent and does not say
// whether the key existed, and asking first would race with other writers.
//
// When an event publisher is registered, successful writes publish `consul.kv.changed`,
// `consul.service.registered` and `consul.service.deregistered`. Their payloads name keys and
// services, never a KV value (values often hold configuration secrets).

use chrono::Utc;
use onex_runtime::consul::{
    AgentServiceRegistration, ConsulClient, QueryOptions, ServiceEntry, overall_health, service_health,
};
use onex_runtime::event::OnexEvent;
use onex_runtime::models::consul::ConsulServiceRegistration;
use onex_runtime::{Container, Context, ErrorCode, OnexError};
use serde_json::{Value, json};

use super::handler::{ConsulHandler, Dependencies, Input, Output};
use super::models::{EnumConsulOperation as Operation, EnumConsulOperationStatus as Status, ModelConsulError};

const NODE: &str = "node_consul_effect";

/// Implements the operations of `node_consul_effect`.
pub struct Consul {
    /// The contract's dependencies, resolved from the container.
    pub dependencies: Dependencies,
}

impl Consul {
    fn client(&self) -> &ConsulClient {
        &self.dependencies.consul_client
    }

    /// The output skeleton of a success: echoes the request's correlation id (or the
    /// context's, generated when the request had none).
    fn output(&self, input: &Input, ctx: &Context) -> Output {
        Output::new(true, input.operation_type, correlation_id(input, ctx), Utc::now(), Status::Success)
    }

    /// The output of a failed operation: `not_found` for NOT_FOUND, `failed` otherwise.
    fn failed(&self, input: &Input, ctx: &Context, err: &OnexError) -> Output {
        let mut output = self.output(input, ctx);
        output.success = false;
        output.status = if err.code() == ErrorCode::NotFound { Status::NotFound } else { Status::Failed };
        let mut message = err.message().to_owned();
        if let Some(source) = err.source_message() {
            message.push_str(": ");
            message.push_str(&source);
        }
        output.error = Some(ModelConsulError::new(err.code(), message));
        output
    }

    /// Turns an operation's result into the output.
    fn settle(&self, input: &Input, ctx: &Context, result: Result<impl FnOnce(&mut Output), OnexError>) -> Output {
        match result {
            Ok(fill) => {
                let mut output = self.output(input, ctx);
                fill(&mut output);
                output
            }
            Err(err) => self.failed(input, ctx, &err),
        }
    }

    /// Publishes an event when a publisher is registered. A publish failure is logged, not
    /// returned: Consul has already changed, and the caller must learn that.
    async fn publish(&self, event_type: &str, input: &Input, ctx: &Context, mut payload: Value) {
        let Some(bus) = &self.dependencies.protocol_event_bus else { return };
        payload["datacenter"] = json!(self.client().config().datacenter);
        let mut event = OnexEvent::new(event_type, NODE, correlation_id(input, ctx), payload);
        ctx.stamp_event(&mut event, NODE);
        if let Err(e) = bus.publish(event).await {
            tracing::warn!(target: "onex::consul", error = %e, event_type, "publishing the Consul event failed");
        }
    }
}

/// The request's correlation id, or the context's when the request has none.
fn correlation_id(input: &Input, ctx: &Context) -> uuid::Uuid {
    input.correlation_id.unwrap_or_else(|| ctx.correlation_id())
}

fn required<'a>(value: Option<&'a str>, field: &str, operation: Operation) -> Result<&'a str, OnexError> {
    match value {
        Some(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(OnexError::validation(format!("{field} is required by {operation}")).with_detail("field", field)),
    }
}

/// An instance as the contract's registration model shows it: the node's address when the
/// instance has none of its own, as Consul's DNS answers.
fn registration_of(entry: ServiceEntry) -> ConsulServiceRegistration {
    let address = if entry.service.address.is_empty() { entry.node.address } else { entry.service.address };
    ConsulServiceRegistration {
        service_id: entry.service.id,
        name: entry.service.service,
        address,
        port: entry.service.port,
        tags: entry.service.tags,
        meta: entry.service.meta.into_iter().collect(),
    }
}

impl ConsulHandler for Consul {
    fn new(container: &Container) -> Result<Self, OnexError> {
        Ok(Self { dependencies: Dependencies::resolve(container)? })
    }

    async fn kv_get(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        let result = async {
            let key = required(input.key.as_deref(), "key", input.operation_type)?;
            let pair = self.client().kv_get(key).await?.ok_or_else(|| {
                OnexError::new(ErrorCode::NotFound, format!("the Consul key '{key}' does not exist"))
                    .with_detail("key", key)
            })?;
            let bytes = pair.decoded_value()?.unwrap_or_default();
            let value = String::from_utf8(bytes).map_err(|e| {
                OnexError::new(
                    ErrorCode::IntegrationServiceError,
                    format!(
                        "the value of Consul key '{key}' is not UTF-8 text ({} bytes); this node returns text values",
                        e.as_bytes().len()
                    ),
                )
            })?;
            Ok(move |output: &mut Output| {
                output.key = Some(pair.key);
                output.value = Some(value);
                output.modify_index = Some(pair.modify_index);
            })
        }
        .await;
        let mut output = self.settle(&input, ctx, result);
        output.key = output.key.take().or_else(|| input.key.clone());
        Ok(output)
    }

    async fn kv_put(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        let result = async {
            let key = required(input.key.as_deref(), "key", input.operation_type)?;
            // An empty value is a value: Consul stores the key without data.
            let value = input
                .value
                .as_deref()
                .ok_or_else(|| OnexError::validation("value is required by kv_put").with_detail("field", "value"))?;
            if !self.client().kv_put(key, value.as_bytes()).await? {
                return Err(OnexError::new(
                    ErrorCode::IntegrationServiceError,
                    format!("Consul did not write the key '{key}'"),
                ));
            }
            self.publish("consul.kv.changed", &input, ctx, json!({"operation": "put", "key": key, "recurse": false}))
                .await;
            Ok(|_: &mut Output| {})
        }
        .await;
        let mut output = self.settle(&input, ctx, result);
        output.key = input.key.clone();
        Ok(output)
    }

    async fn kv_delete(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        let result = async {
            let key = required(input.key.as_deref(), "key", input.operation_type)?;
            if !self.client().kv_delete(key, input.recurse).await? {
                return Err(OnexError::new(
                    ErrorCode::IntegrationServiceError,
                    format!("Consul did not delete the key '{key}'"),
                ));
            }
            let payload = json!({"operation": "delete", "key": key, "recurse": input.recurse});
            self.publish("consul.kv.changed", &input, ctx, payload).await;
            Ok(|_: &mut Output| {})
        }
        .await;
        let mut output = self.settle(&input, ctx, result);
        output.key = input.key.clone();
        Ok(output)
    }

    async fn service_register(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        let result = async {
            let service = input.service.as_ref().ok_or_else(|| {
                OnexError::validation("service is required by service_register").with_detail("field", "service")
            })?;
            required(Some(&service.name), "service.name", input.operation_type)?;
            let registration = AgentServiceRegistration {
                id: service.service_id.trim().to_owned(),
                name: service.name.clone(),
                tags: service.tags.clone(),
                address: service.address.clone(),
                port: (service.port != 0).then_some(service.port),
                meta: service.meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            };
            self.client().service_register(&registration).await?;
            // Consul uses the name as the id when none is given.
            let service_id = if registration.id.is_empty() { registration.name.clone() } else { registration.id };
            let payload = json!({
                "service_id": service_id,
                "name": service.name,
                "address": service.address,
                "port": service.port,
                "tags": service.tags,
            });
            self.publish("consul.service.registered", &input, ctx, payload).await;
            Ok(move |output: &mut Output| output.service_id = Some(service_id))
        }
        .await;
        Ok(self.settle(&input, ctx, result))
    }

    async fn service_deregister(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        let result = async {
            let service_id = required(input.service_id.as_deref(), "service_id", input.operation_type)?;
            self.client().service_deregister(service_id).await?;
            self.publish("consul.service.deregistered", &input, ctx, json!({"service_id": service_id})).await;
            Ok(|_: &mut Output| {})
        }
        .await;
        let mut output = self.settle(&input, ctx, result);
        output.service_id = input.service_id.clone();
        Ok(output)
    }

    async fn service_list(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        let result = Box::pin(self.client().catalog_instances()).await.map(|entries| {
            let mut services: Vec<ConsulServiceRegistration> = entries.into_iter().map(registration_of).collect();
            services.sort_by(|a, b| (&a.name, &a.service_id).cmp(&(&b.name, &b.service_id)));
            move |output: &mut Output| {
                output.service_count = Some(services.len() as u64);
                output.services = Some(services);
            }
        });
        Ok(self.settle(&input, ctx, result))
    }

    async fn health_check(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        let result = Box::pin(async {
            let entries = match input.service_name.as_deref() {
                None => self.client().catalog_instances().await?,
                Some(name) => {
                    let name = required(Some(name), "service_name", input.operation_type)?;
                    let entries = self.client().health_service(name, QueryOptions::default()).await?.value;
                    if entries.is_empty() {
                        return Err(OnexError::new(ErrorCode::NotFound, format!("Consul knows no service '{name}'"))
                            .with_detail("service_name", name));
                    }
                    entries
                }
            };
            let health = service_health(&entries);
            let overall = overall_health(&health);
            Ok(move |output: &mut Output| {
                output.health = Some(health);
                output.overall_health = Some(overall);
            })
        })
        .await;
        Ok(self.settle(&input, ctx, result))
    }
}
