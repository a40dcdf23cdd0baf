//! The event bus: publishing [`OnexEvent`]s to topics (issue 5 adds the Kafka-backed bus).

use crate::error::OnexError;
use crate::event::OnexEvent;
use crate::node::BoxFuture;

/// Publishes events. Nodes depend on this protocol, never on a concrete bus, so tests can
/// register a double in the container (`container.register::<dyn EventPublisher>(…)`).
pub trait EventPublisher: Send + Sync {
    /// Publishes one event and resolves once the broker has acknowledged it.
    fn publish(&self, event: OnexEvent) -> BoxFuture<'_, Result<(), OnexError>>;
}
