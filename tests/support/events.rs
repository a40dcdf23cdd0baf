//! An event publisher for tests that keeps what it is given.

use std::sync::Mutex;

use onex_runtime::OnexError;
use onex_runtime::event::OnexEvent;
use onex_runtime::event_bus::EventPublisher;
use onex_runtime::node::BoxFuture;

/// Acknowledges every event at once and keeps it, in publish order.
#[derive(Default)]
pub struct RecordingBus(Mutex<Vec<OnexEvent>>);

impl RecordingBus {
    /// The events published so far.
    pub fn events(&self) -> Vec<OnexEvent> {
        self.0.lock().unwrap().clone()
    }

    /// How many events were published so far.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// Whether nothing was published yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl EventPublisher for RecordingBus {
    fn publish(&self, event: OnexEvent) -> BoxFuture<'_, Result<(), OnexError>> {
        self.0.lock().unwrap().push(event);
        Box::pin(async { Ok(()) })
    }
}
