//! Consul: a client for its HTTP API (KV store, service registration, catalog, health).
//!
//! - [`types`]: the API's JSON as Consul sends and accepts it.
//!
//! An unreachable Consul is an error (`INTEGRATION_SERVICE_UNAVAILABLE`), never a stand-in
//! answer: the original system switched to a mock whenever Consul was down, which hid outages.

pub mod types;

pub use types::{
    AgentService, AgentServiceRegistration, CatalogNode, CatalogServices, CheckStatus, HealthCheck, Indexed, KvPair,
    ServiceEntry, ServiceProxy, Upstream,
};
