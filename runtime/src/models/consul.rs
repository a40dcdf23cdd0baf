//! Consul shared models.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::models::health::HealthStatus;

/// Where Consul is (`CONSUL_HOST`, `CONSUL_PORT`, `CONSUL_DATACENTER`, all required).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsulServiceConfig {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Datacenter.
    pub datacenter: String,
    /// Client pool size (10).
    pub client_pool_size: u32,
}

/// One service registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsulServiceRegistration {
    /// Service id.
    pub service_id: String,
    /// Service name.
    pub name: String,
    /// Address.
    pub address: String,
    /// Port.
    pub port: u16,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Metadata.
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
}

/// The health of one service: the worst of its checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsulServiceHealth {
    /// Service name.
    pub service: String,
    /// Worst check status.
    pub status: HealthStatus,
    /// Instances seen.
    pub instances: u32,
}
