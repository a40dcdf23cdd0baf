//! The Consul HTTP API's JSON, as Consul sends and accepts it (field names in Consul's
//! PascalCase). Shapes follow Consul's API documentation for the endpoints the client uses:
//! `/v1/kv`, `/v1/agent/service/register`, `/v1/catalog/services`, `/v1/health/service`.
//! Unknown fields are ignored, so newer Consul versions that add fields still parse, and a list
//! or map Consul sends as `null` (Go's nil slice or map: `"Tags": null`) reads as empty.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{ErrorCode, OnexError};

/// Reads `null` as the type's default: Consul marshals a Go nil slice or map as `null`.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// One KV entry (`GET /v1/kv/:key`, with `?recurse` for a prefix).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KvPair {
    /// The full key.
    pub key: String,
    /// The value, base64-encoded as Consul sends it; `None` for a key stored without one.
    #[serde(default)]
    pub value: Option<String>,
    /// Opaque flags a client may store with the key.
    #[serde(default)]
    pub flags: u64,
    /// Raft index of the key's creation.
    #[serde(default)]
    pub create_index: u64,
    /// Raft index of the key's last change.
    #[serde(default)]
    pub modify_index: u64,
    /// How many times a lock on the key was acquired.
    #[serde(default)]
    pub lock_index: u64,
    /// The session holding a lock on the key, if any.
    #[serde(default)]
    pub session: Option<String>,
}

impl KvPair {
    /// The value, decoded from base64; `None` when the key has no value. Malformed base64 is
    /// an `INTEGRATION_SERVICE_ERROR`: Consul always sends valid base64.
    pub fn decoded_value(&self) -> Result<Option<Vec<u8>>, OnexError> {
        let Some(value) = &self.value else { return Ok(None) };
        base64::engine::general_purpose::STANDARD.decode(value).map(Some).map_err(|e| {
            OnexError::new(
                ErrorCode::IntegrationServiceError,
                format!("the value of Consul key '{}' is not valid base64: {e}", self.key),
            )
            .with_detail("key", self.key.clone())
        })
    }
}

/// A service registration for the local agent (`PUT /v1/agent/service/register`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentServiceRegistration {
    /// Unique id on the agent; Consul uses the name when empty.
    #[serde(rename = "ID", default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// The logical service name.
    pub name: String,
    /// Tags for filtering.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Address of the service; the agent's address when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// Port of the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Free-form metadata (string keys and values).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
}

/// `GET /v1/catalog/services`: every service name with the union of its tags.
pub type CatalogServices = BTreeMap<String, Vec<String>>;

/// One instance of a service with its node and checks (`GET /v1/health/service/:service`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceEntry {
    /// The node the instance runs on.
    pub node: CatalogNode,
    /// The instance.
    pub service: AgentService,
    /// The node's and the instance's checks.
    #[serde(default, deserialize_with = "null_as_default")]
    pub checks: Vec<HealthCheck>,
}

impl ServiceEntry {
    /// `service` on `node`, without checks.
    pub fn new(node: CatalogNode, service: AgentService) -> Self {
        Self { node, service, checks: Vec::new() }
    }
}

/// A node of the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CatalogNode {
    /// The node's id (a UUID).
    #[serde(rename = "ID", default)]
    pub id: String,
    /// The node's name.
    pub node: String,
    /// The node's address.
    #[serde(default)]
    pub address: String,
    /// The node's datacenter.
    #[serde(default)]
    pub datacenter: String,
}

impl CatalogNode {
    /// The node `node` at `address` in `datacenter` (its id left empty).
    pub fn new(node: impl Into<String>, address: impl Into<String>, datacenter: impl Into<String>) -> Self {
        Self { id: String::new(), node: node.into(), address: address.into(), datacenter: datacenter.into() }
    }
}

/// A service instance as the agent and the catalog describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentService {
    /// The instance id.
    #[serde(rename = "ID")]
    pub id: String,
    /// The service name.
    pub service: String,
    /// Tags.
    #[serde(default, deserialize_with = "null_as_default")]
    pub tags: Vec<String>,
    /// Metadata (string keys and values).
    #[serde(default, deserialize_with = "null_as_default")]
    pub meta: BTreeMap<String, String>,
    /// Address; empty when the node's address applies.
    #[serde(default)]
    pub address: String,
    /// Port.
    #[serde(default)]
    pub port: u16,
    /// `""` for a typical service, `connect-proxy` or a gateway kind otherwise.
    #[serde(default)]
    pub kind: String,
    /// The proxy configuration of a Connect proxy: where its upstreams are.
    #[serde(default)]
    pub proxy: Option<ServiceProxy>,
}

impl AgentService {
    /// Instance `id` of `service` on `port`: no tags or meta, the node's address, a typical
    /// service (not a proxy or gateway).
    pub fn new(id: impl Into<String>, service: impl Into<String>, port: u16) -> Self {
        Self {
            id: id.into(),
            service: service.into(),
            tags: Vec::new(),
            meta: BTreeMap::new(),
            address: String::new(),
            port,
            kind: String::new(),
            proxy: None,
        }
    }
}

/// The part of a Connect proxy's configuration that names its service and upstreams.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceProxy {
    /// The service this proxy stands in front of.
    #[serde(default)]
    pub destination_service_name: String,
    /// The services it calls.
    #[serde(default, deserialize_with = "null_as_default")]
    pub upstreams: Vec<Upstream>,
}

/// One upstream of a Connect proxy.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Upstream {
    /// The service called.
    pub destination_name: String,
    /// `service` (default) or `prepared_query`.
    #[serde(default)]
    pub destination_type: String,
    /// The local port the proxy listens on for it.
    #[serde(default)]
    pub local_bind_port: u16,
}

/// One health check of a node or a service instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthCheck {
    /// The node the check runs on.
    #[serde(default)]
    pub node: String,
    /// The check's id.
    #[serde(rename = "CheckID")]
    pub check_id: String,
    /// The check's name.
    #[serde(default)]
    pub name: String,
    /// Its current status.
    pub status: CheckStatus,
    /// Output of the check's last run (may hold anything the check printed).
    #[serde(default)]
    pub output: String,
    /// The instance checked; empty for a node check.
    #[serde(rename = "ServiceID", default)]
    pub service_id: String,
    /// The service checked; empty for a node check.
    #[serde(default)]
    pub service_name: String,
}

/// A check's status. A status this client does not know (a future Consul's) is
/// [`CheckStatus::Unknown`], which counts as critical: an unknown state is not a healthy one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// The check passes.
    Passing,
    /// The check warns.
    Warning,
    /// The check fails.
    Critical,
    /// Any other status string.
    #[serde(other)]
    Unknown,
}

impl CheckStatus {
    /// Orders statuses by how bad they are: passing < warning < critical = unknown.
    pub fn severity(self) -> u8 {
        match self {
            Self::Passing => 0,
            Self::Warning => 1,
            Self::Critical | Self::Unknown => 2,
        }
    }
}

/// A read with Consul's index: `X-Consul-Index` of the answer, to pass back as `index` for a
/// blocking query that waits until the data changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Indexed<T> {
    /// The data read.
    pub value: T,
    /// The `X-Consul-Index` header of the answer (0 when Consul sent none).
    pub index: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_check_status_parses_and_counts_as_critical() {
        let status: CheckStatus = serde_json::from_str("\"maintenance\"").unwrap();
        assert_eq!(status, CheckStatus::Unknown);
        assert_eq!(status.severity(), CheckStatus::Critical.severity());
    }

    #[test]
    fn null_lists_and_maps_read_as_empty() {
        let service: AgentService =
            serde_json::from_str(r#"{"ID":"web","Service":"web","Tags":null,"Meta":null,"Proxy":{"Upstreams":null}}"#)
                .unwrap();
        assert!(service.tags.is_empty() && service.meta.is_empty());
        assert_eq!(service.proxy.unwrap().upstreams, vec![]);
    }

    #[test]
    fn a_kv_value_decodes_from_base64_and_bad_base64_is_an_integration_error() {
        let mut pair: KvPair = serde_json::from_str(r#"{"Key":"zip","Value":"dGVzdA=="}"#).unwrap();
        assert_eq!(pair.decoded_value().unwrap(), Some(b"test".to_vec()));
        pair.value = None;
        assert_eq!(pair.decoded_value().unwrap(), None);
        pair.value = Some("not base64!".into());
        assert_eq!(pair.decoded_value().unwrap_err().code(), ErrorCode::IntegrationServiceError);
    }

    #[test]
    fn a_registration_serializes_with_consul_field_names_and_skips_empty_fields() {
        let registration = AgentServiceRegistration { name: "web".into(), port: Some(80), ..Default::default() };
        assert_eq!(serde_json::to_string(&registration).unwrap(), r#"{"Name":"web","Port":80}"#);
    }
}
