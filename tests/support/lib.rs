//! Shared helpers for the integration tests.
pub mod kafka;
pub mod postgres;
