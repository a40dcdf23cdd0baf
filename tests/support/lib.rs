//! Shared helpers for the integration tests.
pub mod bench;
pub mod consul;
pub mod corpus;
pub mod events;
pub mod fault_proxy;
pub mod host;
pub mod http;
pub mod kafka;
pub mod otlp;
pub mod otlp_child;
pub mod postgres;
pub mod prometheus;
pub mod secure;
