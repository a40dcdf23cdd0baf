// The handler of `node_event_bus_circuit_breaker_compute` v1.0.0: Guards event publishing with a circuit breaker (closed, open, half open) that queues events while the circuit is open, dead-letters the overflow and republishes the queue when it closes.
//
// Created once by `cargo run -p codegen` from contracts/nodes/node_event_bus_circuit_breaker_compute/v1_0_0/contract.yaml.
// From then on this file is owned by people: regeneration never overwrites it.
//
// The handler is a thin adapter over `onex_runtime::circuit_breaker::GuardedPublisher`, which
// holds the rules (what is published, queued in the PostgreSQL outbox, dead-lettered or
// refused, and the relay that republishes the outbox). Where it comes from, first match wins:
// - a `GuardedPublisher` registered in the container (shared wiring, tests);
// - built here around the container's `dyn EventPublisher`, with a breaker configured by a
//   `CircuitBreakerConfig` registered in the container or else by the environment
//   (`CircuitBreakerConfig::from_env`), and an outbox on the container's PostgreSQL pool when
//   there is one (its capacity is `max_queue_size`);
// - none: without a publisher there is nothing to guard, and publish_event fails with
//   CONFIGURATION_ERROR in every environment (no stand-in that pretends to publish). The
//   other operations report the idle breaker.
//
// Invalid input and configuration problems are an `Err`; a publish that ran and was refused
// (circuit open without graceful degradation, no outbox, outbox unreachable) is an output
// with `success: false`, action `rejected` and the error.

use std::sync::Arc;

use chrono::Utc;
use onex_runtime::circuit_breaker::{CircuitBreaker, GuardedMetrics, GuardedPublisher};
use onex_runtime::environment::{Environment, ProcessEnv};
use onex_runtime::models::circuit_breaker::{CircuitAction, CircuitBreakerConfig};
use onex_runtime::outbox::{Outbox, OutboxConfig};
use onex_runtime::{Container, Context, ErrorCode, OnexError};

use super::handler::{Dependencies, EventBusCircuitBreakerHandler, Input, Output};
use super::models::{ModelCircuitBreakerError, ModelCircuitBreakerResult};

/// Implements the operations of `node_event_bus_circuit_breaker_compute`.
pub struct EventBusCircuitBreaker {
    /// The contract's dependencies, resolved from the container.
    pub dependencies: Dependencies,
    breaker: Arc<CircuitBreaker>,
    /// `None` when the container has no publisher.
    publisher: Option<Arc<GuardedPublisher>>,
    environment: Environment,
}

impl EventBusCircuitBreaker {
    /// The guarded publisher, if the container provided a publisher.
    pub fn publisher(&self) -> Option<&Arc<GuardedPublisher>> {
        self.publisher.as_ref()
    }

    /// The breaker (shared with the publisher).
    pub fn breaker(&self) -> &Arc<CircuitBreaker> {
        &self.breaker
    }

    /// Starts the relay on first use when the node was built outside a runtime.
    fn relay(&self) -> Result<Option<&Arc<GuardedPublisher>>, OnexError> {
        match &self.publisher {
            Some(publisher) => {
                publisher.start()?;
                Ok(Some(publisher))
            }
            None => Ok(None),
        }
    }

    async fn metrics(&self) -> GuardedMetrics {
        match &self.publisher {
            Some(publisher) => publisher.metrics().await,
            None => GuardedMetrics {
                breaker: self.breaker.metrics(),
                queued_events: 0,
                dead_letter_events: 0,
                dropped_events: 0,
                enqueued_events: 0,
                republished_events: 0,
                outbox_error: None,
            },
        }
    }

    /// An output echoing the request's correlation id (the context's when it has none).
    fn output(&self, input: &Input, ctx: &Context) -> Output {
        let correlation_id = input.correlation_id.unwrap_or_else(|| ctx.correlation_id());
        Output::new(true, input.operation_type, correlation_id, Utc::now(), self.breaker.state())
    }

    async fn with_metrics(&self, input: &Input, ctx: &Context) -> Result<Output, OnexError> {
        self.relay()?;
        let metrics = self.metrics().await;
        let mut out = self.output(input, ctx);
        out.metrics = Some(metrics.to_model());
        out.result = Some(ModelCircuitBreakerResult {
            is_healthy: Some(out.state.is_healthy()),
            success_rate: Some(metrics.breaker.success_rate),
            queued_events: Some(metrics.queued_events),
            dead_letter_size: Some(metrics.dead_letter_events),
            republished_events: Some(metrics.republished_events),
            average_latency_ms: metrics.breaker.average_latency.map(|d| d.as_secs_f64() * 1000.0),
            ..ModelCircuitBreakerResult::new()
        });
        Ok(out)
    }
}

impl EventBusCircuitBreakerHandler for EventBusCircuitBreaker {
    fn new(container: &Container) -> Result<Self, OnexError> {
        let dependencies = Dependencies::resolve(container)?;
        let environment = Environment::detect(&ProcessEnv);
        let publisher = match container.try_resolve::<GuardedPublisher>() {
            Some(publisher) => publisher,
            None => {
                let config = match container.try_resolve::<CircuitBreakerConfig>() {
                    Some(config) => CircuitBreakerConfig::clone(&config),
                    None => CircuitBreakerConfig::from_env(&ProcessEnv)?,
                };
                let max_depth = u64::from(config.max_queue_size);
                let breaker = Arc::new(CircuitBreaker::new(config)?);
                let Some(inner) = dependencies.protocol_event_bus.clone() else {
                    return Ok(Self { dependencies, breaker, publisher: None, environment });
                };
                let outbox = dependencies
                    .postgres_connection_manager
                    .clone()
                    .map(|pool| Outbox::new(pool, OutboxConfig { max_depth, ..OutboxConfig::default() }))
                    .transpose()?;
                Arc::new(GuardedPublisher::new(inner, breaker, outbox))
            }
        };
        // Start the relay now when built inside a runtime, so a restarted process republishes
        // what it queued before any request; otherwise the first operation starts it.
        if tokio::runtime::Handle::try_current().is_ok() {
            publisher.start()?;
        }
        Ok(Self { dependencies, breaker: publisher.breaker().clone(), publisher: Some(publisher), environment })
    }

    async fn publish_event(&self, mut input: Input, ctx: &Context) -> Result<Output, OnexError> {
        let Some(publisher) = self.relay()? else {
            return Err(OnexError::configuration(
                "no event publisher is registered in the container: publish_event has nothing to publish through",
            ));
        };
        let event = input.event.take().ok_or_else(|| OnexError::validation("publish_event needs an event"))?;
        let outcome = publisher.publish_with_action(event).await;
        let mut out = self.output(&input, ctx);
        match outcome {
            Ok(action) => {
                out.circuit_action_taken = Some(action);
                out.result = Some(ModelCircuitBreakerResult {
                    published: Some(action == CircuitAction::Published),
                    ..ModelCircuitBreakerResult::new()
                });
            }
            Err(e) if matches!(e.code(), ErrorCode::ValidationError | ErrorCode::ConfigurationError) => return Err(e),
            Err(e) => {
                let queued = e.details().get("queued_events").and_then(serde_json::Value::as_u64);
                out.success = false;
                out.circuit_action_taken = Some(CircuitAction::Rejected);
                out.result = Some(ModelCircuitBreakerResult {
                    published: Some(false),
                    queued_events: queued,
                    ..ModelCircuitBreakerResult::new()
                });
                out.error = Some(ModelCircuitBreakerError {
                    code: e.code(),
                    message: e.message().to_owned(),
                    queued_events: queued,
                });
            }
        }
        Ok(out)
    }

    async fn get_state(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        let mut out = self.output(&input, ctx);
        out.result = Some(ModelCircuitBreakerResult {
            is_healthy: Some(out.state.is_healthy()),
            ..ModelCircuitBreakerResult::new()
        });
        Ok(out)
    }

    async fn get_metrics(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        self.with_metrics(&input, ctx).await
    }

    async fn reset_circuit(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        match &self.publisher {
            Some(publisher) => publisher.reset(),
            None => self.breaker.reset(),
        }
        self.with_metrics(&input, ctx).await
    }

    async fn get_health_status(&self, input: Input, ctx: &Context) -> Result<Output, OnexError> {
        let mut out = self.with_metrics(&input, ctx).await?;
        if let Some(result) = out.result.as_mut() {
            result.environment = Some(self.environment.as_str().to_owned());
            result.config = Some(self.breaker.config().clone());
        }
        Ok(out)
    }
}
