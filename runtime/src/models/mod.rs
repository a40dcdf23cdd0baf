//! Shared models: hand-written types that contracts reference by Rust path from their
//! `dependencies` (`rust_type: onex_runtime::models::postgres::QueryResult`).
//!
//! They mirror the shared pydantic models of the original system, minus
//! its defects. All of them serialize with serde so they can sit inside generated models.

pub mod circuit_breaker;
pub mod consul;
pub mod health;
pub mod kafka;
pub mod observability;
pub mod postgres;
pub mod tracing;
