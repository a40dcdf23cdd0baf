//! The Kafka producer pool on rdkafka (librdkafka).
//!
//! - [`config`]: the producer configuration from the environment, the security policy per
//!   deployment environment, and the mapping onto librdkafka properties.
//! - [`KafkaProducerPool`]: one shared producer per configuration (by default), created
//!   lazily, replaced after a fatal error, evicted when idle, flushed with a deadline on
//!   shutdown; stats and health from real counters ([`metrics`]).
//! - Backpressure: each producer admits at most `max_in_flight_messages` unreported
//!   messages; slots come back with delivery reports, and `QueueFull` waits for the next
//!   delivery instead of sleeping.

pub mod config;
pub mod error;
pub mod metrics;
mod pool;
mod producer;

pub use pool::{KafkaPoolSettings, KafkaProducerPool, ShutdownReport};
pub use producer::{Delivered, DeliveryFuture, ProduceRecord, headers};
pub use rdkafka::message::OwnedHeaders;

#[cfg(test)]
mod tests;
