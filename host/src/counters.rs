//! What a host counts, exposed at `/metrics` as `onex_host_*` and returned by shutdown.

use onex_runtime::OnexError;
use onex_runtime::metrics::{Counter, Gauge, MetricsRegistry};

/// The host's counters (each one atomic; clones share it).
#[derive(Debug, Clone, Default)]
pub struct HostCounters {
    /// Messages fetched from request topics.
    pub received: Counter,
    /// Requests answered with the node's output.
    pub completed: Counter,
    /// Requests answered with an error.
    pub failed: Counter,
    /// Runs repeated after a retriable error.
    pub retried: Counter,
    /// Messages sent to a dead-letter topic.
    pub dead_lettered: Counter,
    /// Requests whose event id this host had already answered (redeliveries).
    pub duplicates: Counter,
    /// Messages that were not requests (dead-lettered too).
    pub invalid: Counter,
    /// Requests answered from the answer store instead of running the node again.
    pub replayed: Counter,
    /// Requests held now, running or waiting behind their key.
    pub in_flight: Gauge,
}

impl HostCounters {
    /// Registers every counter in `registry`.
    pub fn register(&self, registry: &MetricsRegistry) -> Result<(), OnexError> {
        let counters = [
            ("onex_host_requests_received", "Messages fetched from request topics", &self.received),
            ("onex_host_requests_completed", "Requests answered with the node's output", &self.completed),
            ("onex_host_requests_failed", "Requests answered with an error", &self.failed),
            ("onex_host_request_retries", "Runs repeated after a retriable error", &self.retried),
            ("onex_host_dead_letters", "Messages sent to a dead-letter topic", &self.dead_lettered),
            ("onex_host_duplicate_requests", "Requests this host had already answered", &self.duplicates),
            ("onex_host_invalid_messages", "Messages that were not requests", &self.invalid),
            ("onex_host_replayed_answers", "Requests answered from the answer store", &self.replayed),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone())?;
        }
        registry.register("onex_host_requests_in_flight", "Requests held now", self.in_flight.clone())
    }

    /// The counts as one line, for logs and reports.
    pub fn summary(&self) -> String {
        format!(
            "received {}, completed {}, failed {}, retried {}, dead-lettered {}, duplicates {}, invalid {}, replayed {}",
            self.received.get(),
            self.completed.get(),
            self.failed.get(),
            self.retried.get(),
            self.dead_lettered.get(),
            self.duplicates.get(),
            self.invalid.get(),
            self.replayed.get()
        )
    }
}
