//! Consul: a client for its HTTP API (KV store, service registration, catalog, health).
//!
//! - [`config`]: where Consul is (`CONSUL_HOST`, `CONSUL_PORT`, `CONSUL_DATACENTER`, …).
//! - [`client`]: the HTTP client (KV, agent service registration, catalog, health, blocking
//!   queries), bounded and with finite timeouts.
//! - [`types`]: the API's JSON as Consul sends and accepts it.
//! - [`health`]: a service's health from its checks (the worst status wins).
//! - [`projection`]: read models of live Consul state (services, health, KV, topology), and
//!   a cache that blocking queries keep fresh.
//!
//! An unreachable Consul is an error (`INTEGRATION_SERVICE_UNAVAILABLE`), never a stand-in
//! answer: the original system switched to a mock whenever Consul was down, which hid outages.

pub mod client;
pub mod config;
pub mod health;
pub mod projection;
pub mod types;

pub use client::{ConsulClient, QueryOptions};
pub use config::ConsulConfig;
pub use health::{overall_health, service_health, worst_status};

pub use types::{
    AgentService, AgentServiceRegistration, CatalogNode, CatalogServices, CheckStatus, HealthCheck, Indexed, KvPair,
    ServiceEntry, ServiceProxy, Upstream,
};
