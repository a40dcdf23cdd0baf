//! The event bus: publishing [`OnexEvent`]s to topics and consuming them.
//!
//! - [`EventPublisher`]: the protocol nodes depend on (register a double in tests).
//! - [`KafkaEventBus`]: the Kafka implementation on the producer pool — topic names per
//!   [`topic`], per-caller [`rate_limit`]s, [`retry`] with exponential backoff, and
//!   at-least-once [`subscriber`]s through consumer groups; its counters as Prometheus
//!   [`series`] through [`KafkaEventBus::with_metrics`].

pub mod kafka_bus;
pub mod rate_limit;
pub mod retry;
pub mod series;
pub mod subscriber;
pub mod topic;

use crate::error::OnexError;
use crate::event::OnexEvent;
use crate::node::BoxFuture;

pub use kafka_bus::{EncodedEvent, EventBusStats, EventMessage, KafkaEventBus};
pub use rate_limit::{RateLimitRule, RateLimiter};
pub use retry::{RetryPolicy, Sleeper, TokioSleeper};
pub use subscriber::{ContextEventHandler, DeadLetter, EventHandler, Subscription, SubscriptionOptions};
pub use topic::TopicNamer;

/// Publishes events. Nodes depend on this protocol, never on a concrete bus, so tests can
/// register a double in the container (`container.register::<dyn EventPublisher>(…)`).
pub trait EventPublisher: Send + Sync {
    /// Publishes one event and resolves once the broker has acknowledged it.
    fn publish(&self, event: OnexEvent) -> BoxFuture<'_, Result<(), OnexError>>;

    /// Admits `event` now (takes its caller's rate-limit tokens, for instance) for a publish
    /// through [`EventPublisher::publish_admitted`], now or later: an event is admitted once,
    /// whether it goes out at once or is kept in an outbox and republished after an outage,
    /// so a relay draining a backlog is not throttled as if its events were new. The default
    /// admits everything.
    fn admit(&self, _event: &OnexEvent) -> Result<(), OnexError> {
        Ok(())
    }

    /// Publishes an event [`EventPublisher::admit`] already admitted: `publish` without the
    /// admission. The default is `publish`, right for publishers whose `admit` admits all.
    fn publish_admitted(&self, event: OnexEvent) -> BoxFuture<'_, Result<(), OnexError>> {
        self.publish(event)
    }

    /// Publishes several events and resolves once all are acknowledged; fails if any failed.
    /// The default publishes them one after the other; implementations override it to
    /// publish concurrently.
    fn publish_batch(&self, events: Vec<OnexEvent>) -> BoxFuture<'_, Result<(), OnexError>> {
        Box::pin(async move {
            for event in events {
                self.publish(event).await?;
            }
            Ok(())
        })
    }
}
