//! The Kafka producer pool on rdkafka (librdkafka).
//!
//! - [`config`]: the producer configuration from the environment, the security policy per
//!   deployment environment, and the mapping onto librdkafka properties.
//! - [`KafkaProducerPool`]: one shared producer per configuration (by default), created
//!   lazily, replaced after a fatal error, evicted when idle, flushed with a deadline on
//!   shutdown; stats and health from real counters ([`metrics`]).
//! - Backpressure: each producer admits at most `max_in_flight_messages` unreported
//!   messages; slots come back with delivery reports, and `QueueFull` (librdkafka's byte
//!   limit) waits for the next delivery, looking again every few milliseconds because
//!   librdkafka frees a message's queue space only after its report.
//! - Batches: [`SendBatch`] sends messages on one producer and awaits them together, with one
//!   allocation and one wake-up per batch instead of per message (the node's `send_batch`).
//! - Topics: each producer keeps a librdkafka handle per topic (module `topic`), so a send names
//!   its topic by handle rather than by a name librdkafka looks up under a lock.
//! - Metrics ([`series`]): with a [`crate::metrics::MetricsRegistry`] given to
//!   [`KafkaProducerPool::with_metrics`], the pool's `onex_kafka_*` series, read from the
//!   counters above at scrape time.
//! - Spans (module `trace`): with a [`crate::telemetry::Tracing`] given to
//!   [`KafkaProducerPool::with_tracing`], every message is a PRODUCER span whose context the
//!   message's headers carry; without one (the default) nothing of it runs.
//! - Allocator: librdkafka allocates each message on the sending thread and frees it on its
//!   own, which glibc's malloc serves slowly; a service producing hundreds of thousands of
//!   messages a second should run on jemalloc (measured in the README's Performance section).

mod batch;
pub mod config;
pub mod error;
pub mod metrics;
mod pool;
mod producer;
pub mod series;
mod topic;
pub(crate) mod trace;

pub use batch::SendBatch;
pub use pool::{KafkaPoolSettings, KafkaProducerPool, ShutdownReport};
pub use producer::{Delivered, DeliveryFuture, ProduceRecord, headers};
pub use rdkafka::message::OwnedHeaders;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod trace_tests;
