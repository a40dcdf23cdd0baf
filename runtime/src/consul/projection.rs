//! Read models of live Consul state: the services with their health, check counts, the KV
//! store and the services' dependency graph.
//!
//! The projections here are pure functions over Consul's answers ([`ServiceSnapshot`] for
//! `/v1/catalog/services` and `/v1/health/service/:name`, [`KvPair`]s for `/v1/kv/?recurse`);
//! [`projector::Projector`] reads them through the client for a [`Selection`], and [`cache`]
//! keeps built projections until Consul's data changes: each remembers the `X-Consul-Index` of
//! its reads, and watchers holding blocking queries on those reads drop it as soon as Consul
//! answers with another index. A request accepts a cached projection up to its own age limit
//! (zero forces a read); a failed read is an error, never an older projection served instead.
//!
//! Rules the projections follow:
//!
//! - **Service health** is the worst status of every check of every instance, node checks
//!   included ([`super::health`]). A selected service without any instance (named by the caller
//!   but not registered, or deregistered between two reads) is reported with 0 instances and
//!   unhealthy: nothing serves it.
//! - **Check counts** count each check once, identified by its node and check id: a node check
//!   appears in the answer of every service on that node, and counting it per service would
//!   inflate the totals. A status Consul may add in the future counts as critical.
//!   A state filter narrows which counts and which services are shown, never the overall
//!   status: that is the worst status of every selected service, so a filter cannot hide a
//!   failing one.
//! - **KV**: each key once (overlapping prefixes are read once), sorted by key. Its first-level
//!   prefix is the key up to and including its first `/` (`config/db/host` → `config/`), the
//!   form Consul itself lists folders in; a key without `/` has none. A value that is UTF-8
//!   text is given as text, other bytes as standard base64 ([`KvValue`]).
//! - **Topology**: one node per service, one edge per declared dependency. A dependency is
//!   declared in one of two ways:
//!   - a Connect proxy (an instance of kind `connect-proxy`) whose `Proxy.DestinationServiceName`
//!     is the dependent service lists it in `Proxy.Upstreams[].DestinationName` (upstreams of
//!     type `prepared_query` name a query, not a service, and are skipped): relationship
//!     `connect_upstream`;
//!   - an instance of the dependent service carries the service meta key
//!     [`DEPENDENCIES_META_KEY`] (`dependencies`), a comma-separated list of service names
//!     (blanks around names ignored): relationship `service_meta`.
//!
//!   Connect proxies stand in front of their service and are not nodes of their own. From the
//!   target services (every service when none are named) the graph follows at most `depth`
//!   dependency hops; the projection reports the largest hop it actually followed. A dependency
//!   on a service that has no instance is kept, its node reported with 0 instances, unhealthy.

pub mod cache;
pub mod projector;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::health::{overall_health, worst_status};
use super::types::{CheckStatus, KvPair, ServiceEntry};
use crate::error::OnexError;
use crate::models::consul::ConsulServiceHealth;
use crate::models::health::HealthStatus;

/// The service meta key that declares a service's dependencies: a comma-separated list of
/// service names (`"db, cache"`).
pub const DEPENDENCIES_META_KEY: &str = "dependencies";

/// The `Kind` of a Connect sidecar proxy instance.
const CONNECT_PROXY_KIND: &str = "connect-proxy";

/// The most services or prefixes one request may name: each costs a read from Consul.
pub const MAX_SELECTED: usize = 1000;

/// One projection over one part of Consul: what a request asks for, and the cache's key.
/// Built by its constructors, which check the request and normalize it (sorted, each name
/// once, nested KV prefixes folded into the outer one), so equal requests share a projection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Selection {
    /// [`service_state`] of the target services (every service when `None`).
    Services {
        /// The services named, or every service.
        targets: Option<BTreeSet<String>>,
    },
    /// [`health_state`] of the target services, showing the given states.
    Health {
        /// The services named, or every service.
        targets: Option<BTreeSet<String>>,
        /// The states shown, or every state.
        states: Option<BTreeSet<CheckState>>,
    },
    /// [`kv_state`] under the prefixes (the whole store when `None`).
    Kv {
        /// The prefixes read, none inside another; `None` for the whole store.
        prefixes: Option<BTreeSet<String>>,
        /// Whether values are projected.
        include_values: bool,
    },
    /// [`topology`] from the target services (every service when `None`).
    Topology {
        /// The services the graph starts from, or every service.
        targets: Option<BTreeSet<String>>,
        /// The most hops followed (at least 1).
        depth: u64,
    },
}

impl Selection {
    /// The service state of `targets` (`target_services`).
    pub fn services(targets: Option<Vec<String>>) -> Result<Self, OnexError> {
        Ok(Self::Services { targets: names("target_services", targets)? })
    }

    /// The health state of `targets`, showing `states` (`health_states`).
    pub fn health(targets: Option<Vec<String>>, states: Option<Vec<CheckState>>) -> Result<Self, OnexError> {
        let states = match states {
            Some(states) if states.is_empty() => {
                return Err(OnexError::validation("health_states, when given, names at least one state")
                    .with_detail("field", "health_states"));
            }
            states => states.map(BTreeSet::from_iter),
        };
        Ok(Self::Health { targets: names("target_services", targets)?, states })
    }

    /// The keys under `prefixes` (`key_prefixes`; `""` is the whole store).
    pub fn kv(prefixes: Option<Vec<String>>, include_values: bool) -> Result<Self, OnexError> {
        let prefixes = match prefixes {
            None => None,
            Some(list) => {
                if list.is_empty() || list.len() > MAX_SELECTED {
                    return Err(OnexError::validation(format!(
                        "key_prefixes, when given, names 1 to {MAX_SELECTED} prefixes, got {}",
                        list.len()
                    ))
                    .with_detail("field", "key_prefixes"));
                }
                let covering = covering_prefixes(list.iter().map(String::as_str));
                if covering.iter().any(String::is_empty) { None } else { Some(covering.into_iter().collect()) }
            }
        };
        Ok(Self::Kv { prefixes, include_values })
    }

    /// The dependency graph from `targets`, at most `depth` hops deep.
    pub fn topology(targets: Option<Vec<String>>, depth: u64) -> Result<Self, OnexError> {
        if depth == 0 {
            return Err(OnexError::validation("depth must be at least 1").with_detail("field", "depth"));
        }
        Ok(Self::Topology { targets: names("target_services", targets)?, depth })
    }
}

/// A list of service names, checked: absent means every service; given, it names 1 to
/// [`MAX_SELECTED`] services, none blank.
fn names(field: &str, list: Option<Vec<String>>) -> Result<Option<BTreeSet<String>>, OnexError> {
    let Some(list) = list else { return Ok(None) };
    if list.is_empty() || list.len() > MAX_SELECTED {
        return Err(OnexError::validation(format!(
            "{field}, when given, names 1 to {MAX_SELECTED} services, got {}",
            list.len()
        ))
        .with_detail("field", field));
    }
    if list.iter().any(|name| name.trim().is_empty()) {
        return Err(OnexError::validation(format!("{field} holds a blank service name")).with_detail("field", field));
    }
    Ok(Some(list.into_iter().collect()))
}

/// The instances of each selected service, as `/v1/health/service/:name` answered them:
/// every service of the catalog, or the services the caller named (an empty list for one
/// that has no instance).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceSnapshot {
    /// Instances per service name.
    pub services: BTreeMap<String, Vec<ServiceEntry>>,
}

impl ServiceSnapshot {
    /// The health of one service from its instances: 0 instances is unhealthy.
    fn health_of(name: &str, entries: Option<&Vec<ServiceEntry>>) -> ConsulServiceHealth {
        let entries = entries.map_or(&[][..], Vec::as_slice);
        if entries.is_empty() {
            return ConsulServiceHealth { service: name.to_owned(), status: HealthStatus::Unhealthy, instances: 0 };
        }
        let worst = worst_status(entries.iter().flat_map(|entry| entry.checks.iter().map(|check| &check.status)));
        ConsulServiceHealth {
            service: name.to_owned(),
            status: worst.health_status(),
            instances: u32::try_from(entries.len()).unwrap_or(u32::MAX),
        }
    }
}

/// Every service of the snapshot with its instance count and worst check status, sorted by name.
pub fn service_state(snapshot: &ServiceSnapshot) -> Vec<ConsulServiceHealth> {
    snapshot.services.iter().map(|(name, entries)| ServiceSnapshot::health_of(name, Some(entries))).collect()
}

/// The check states a health projection shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckState {
    /// Passing checks; healthy services.
    Passing,
    /// Warning checks; degraded services.
    Warning,
    /// Critical checks (and statuses Consul may add later); unhealthy services.
    Critical,
}

impl CheckState {
    /// Every state.
    pub const ALL: [Self; 3] = [Self::Passing, Self::Warning, Self::Critical];

    /// The state a check status counts as: an unknown status counts as critical.
    pub fn of_check(status: CheckStatus) -> Self {
        match status {
            CheckStatus::Passing => Self::Passing,
            CheckStatus::Warning => Self::Warning,
            CheckStatus::Critical | CheckStatus::Unknown => Self::Critical,
        }
    }

    /// The state a service's health corresponds to.
    pub fn of_health(status: HealthStatus) -> Self {
        match status {
            HealthStatus::Healthy => Self::Passing,
            HealthStatus::Degraded => Self::Warning,
            HealthStatus::Unhealthy => Self::Critical,
        }
    }
}

/// Check counts per state and the health of every shown service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthProjection {
    /// Distinct checks passing (0 when the filter leaves passing out).
    pub passing: u64,
    /// Distinct checks warning (0 when the filter leaves warning out).
    pub warning: u64,
    /// Distinct checks critical or in a status this client does not know (0 when the filter
    /// leaves critical out).
    pub critical: u64,
    /// The worst status of every selected service, whatever the filter shows.
    pub overall: HealthStatus,
    /// The services whose status is among the shown states, sorted by name.
    pub services: Vec<ConsulServiceHealth>,
}

/// Check counts and service health, showing only `states` (every state when `None`).
pub fn health_state(snapshot: &ServiceSnapshot, states: Option<&BTreeSet<CheckState>>) -> HealthProjection {
    let shown = |state: CheckState| states.is_none_or(|states| states.contains(&state));
    // A node check is repeated in the answer of every service instance on its node.
    let mut checks: BTreeMap<(&str, &str), CheckStatus> = BTreeMap::new();
    for entry in snapshot.services.values().flatten() {
        for check in &entry.checks {
            checks.insert((check.node.as_str(), check.check_id.as_str()), check.status);
        }
    }
    let (mut passing, mut warning, mut critical) = (0, 0, 0);
    for status in checks.into_values() {
        let state = CheckState::of_check(status);
        if shown(state) {
            match state {
                CheckState::Passing => passing += 1,
                CheckState::Warning => warning += 1,
                CheckState::Critical => critical += 1,
            }
        }
    }
    let all = service_state(snapshot);
    let overall = overall_health(&all);
    let services = all.into_iter().filter(|service| shown(CheckState::of_health(service.status))).collect();
    HealthProjection { passing, warning, critical, overall, services }
}

/// A projected KV value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "encoding", content = "value", rename_all = "lowercase")]
pub enum KvValue {
    /// The value is UTF-8 text.
    Text(String),
    /// The value's bytes are not UTF-8: standard base64 with padding.
    Base64(String),
}

/// One projected key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
    /// The full key.
    pub key: String,
    /// Its value, when values were asked for and the key has one.
    pub value: Option<KvValue>,
    /// Consul's modify index of the key.
    pub modify_index: u64,
}

/// The keys under the selected prefixes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvProjection {
    /// Number of distinct keys.
    pub total_keys: u64,
    /// Distinct first-level prefixes (`config/`), sorted.
    pub prefixes: Vec<String>,
    /// One entry per key, sorted by key.
    pub entries: Vec<KvEntry>,
}

/// The prefixes to read so that every key under `prefixes` is read once: a prefix inside
/// another (`app/db/` inside `app/`) is dropped. `""` is the whole store.
pub fn covering_prefixes<'a>(prefixes: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let sorted: BTreeSet<&str> = prefixes.into_iter().collect();
    let mut kept: Vec<String> = Vec::new();
    for prefix in sorted {
        // Sorted order puts a prefix right after the prefixes it starts with, so comparing with
        // the last kept one suffices.
        if kept.last().is_none_or(|last| !prefix.starts_with(last.as_str())) {
            kept.push(prefix.to_owned());
        }
    }
    kept
}

/// The first-level prefix of a key: up to and including its first `/`.
fn first_level_prefix(key: &str) -> Option<&str> {
    key.find('/').map(|slash| &key[..=slash])
}

/// The KV projection of `pairs` (any number of `?recurse` answers, overlapping or not), with
/// the decoded values when `include_values`. `decode` turns a pair's base64 into its bytes
/// (`KvPair::decoded_value`); its error fails the projection rather than inventing a value.
pub fn kv_state(
    pairs: impl IntoIterator<Item = KvPair>,
    include_values: bool,
    decode: impl Fn(&KvPair) -> Result<Option<Vec<u8>>, OnexError>,
) -> Result<KvProjection, OnexError> {
    let mut by_key: BTreeMap<String, KvPair> = BTreeMap::new();
    for pair in pairs {
        by_key.insert(pair.key.clone(), pair);
    }
    let prefixes: BTreeSet<&str> = by_key.keys().filter_map(|key| first_level_prefix(key)).collect();
    let prefixes = prefixes.into_iter().map(str::to_owned).collect();
    let mut entries = Vec::with_capacity(by_key.len());
    for (key, pair) in &by_key {
        let value = if include_values {
            decode(pair)?.map(|bytes| match String::from_utf8(bytes) {
                Ok(text) => KvValue::Text(text),
                Err(not_text) => KvValue::Base64(STANDARD.encode(not_text.as_bytes())),
            })
        } else {
            None
        };
        entries.push(KvEntry { key: key.clone(), value, modify_index: pair.modify_index });
    }
    Ok(KvProjection { total_keys: entries.len() as u64, prefixes, entries })
}

/// How a dependency was declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Relationship {
    /// An upstream of the service's Connect proxy.
    ConnectUpstream,
    /// The service's [`DEPENDENCIES_META_KEY`] meta.
    ServiceMeta,
}

impl Relationship {
    /// The wire form: `connect_upstream` or `service_meta`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ConnectUpstream => "connect_upstream",
            Self::ServiceMeta => "service_meta",
        }
    }
}

/// A declared dependency: `source` depends on `target`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TopologyEdge {
    /// The dependent service.
    pub source: String,
    /// The service it depends on.
    pub target: String,
    /// How the dependency was declared.
    pub relationship: Relationship,
}

/// Services and their declared dependencies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Topology {
    /// Every service reached, with its health, sorted by name.
    pub nodes: Vec<ConsulServiceHealth>,
    /// Every dependency followed, sorted by source, target and relationship.
    pub edges: Vec<TopologyEdge>,
    /// The largest number of hops followed from a target service (0 when no edge was followed).
    pub depth: u64,
}

fn is_proxy(entry: &ServiceEntry) -> bool {
    entry.service.kind == CONNECT_PROXY_KIND
}

/// Every dependency declared in the snapshot, each once.
pub fn dependency_edges(snapshot: &ServiceSnapshot) -> BTreeSet<TopologyEdge> {
    let mut edges = BTreeSet::new();
    for entry in snapshot.services.values().flatten() {
        let service = &entry.service;
        if is_proxy(entry) {
            let Some(proxy) = &service.proxy else { continue };
            if proxy.destination_service_name.is_empty() {
                continue;
            }
            for upstream in &proxy.upstreams {
                let names_service = matches!(upstream.destination_type.as_str(), "" | "service");
                if names_service && !upstream.destination_name.is_empty() {
                    edges.insert(TopologyEdge {
                        source: proxy.destination_service_name.clone(),
                        target: upstream.destination_name.clone(),
                        relationship: Relationship::ConnectUpstream,
                    });
                }
            }
        } else if let Some(declared) = service.meta.get(DEPENDENCIES_META_KEY) {
            for target in declared.split(',').map(str::trim).filter(|name| !name.is_empty()) {
                edges.insert(TopologyEdge {
                    source: service.service.clone(),
                    target: target.to_owned(),
                    relationship: Relationship::ServiceMeta,
                });
            }
        }
    }
    edges
}

/// The dependency graph from `roots` (every service that is not only a Connect proxy when
/// `None`), following at most `depth` hops. `snapshot` must hold every service of the catalog:
/// a service's proxy is a service of its own, found only by reading them all.
pub fn topology(snapshot: &ServiceSnapshot, roots: Option<&BTreeSet<String>>, depth: u64) -> Topology {
    let all_edges = dependency_edges(snapshot);
    let mut outgoing: BTreeMap<&str, Vec<&TopologyEdge>> = BTreeMap::new();
    for edge in &all_edges {
        outgoing.entry(edge.source.as_str()).or_default().push(edge);
    }
    let roots: Vec<&str> = match roots {
        Some(roots) => roots.iter().map(String::as_str).collect(),
        None => snapshot
            .services
            .iter()
            .filter(|(_, entries)| entries.is_empty() || !entries.iter().all(is_proxy))
            .map(|(name, _)| name.as_str())
            .collect(),
    };
    let mut hops: BTreeMap<&str, u64> = BTreeMap::new();
    let mut queue = VecDeque::new();
    for root in roots {
        if hops.insert(root, 0).is_none() {
            queue.push_back(root);
        }
    }
    let mut edges = BTreeSet::new();
    let mut followed = 0;
    // Breadth first: a service is expanded at its smallest hop count, so the bound is exact.
    while let Some(service) = queue.pop_front() {
        let hop = hops[service];
        if hop >= depth {
            continue;
        }
        for edge in outgoing.get(service).into_iter().flatten() {
            edges.insert(*edge);
            followed = followed.max(hop + 1);
            if !hops.contains_key(edge.target.as_str()) {
                hops.insert(edge.target.as_str(), hop + 1);
                queue.push_back(edge.target.as_str());
            }
        }
    }
    let nodes = hops.keys().map(|name| ServiceSnapshot::health_of(name, snapshot.services.get(*name))).collect();
    Topology { nodes, edges: edges.into_iter().cloned().collect(), depth: followed }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consul::types::{AgentService, CatalogNode, HealthCheck, ServiceProxy, Upstream};
    use crate::error::ErrorCode;

    fn check(node: &str, id: &str, service_id: &str, status: CheckStatus) -> HealthCheck {
        HealthCheck {
            node: node.into(),
            check_id: id.into(),
            name: String::new(),
            status,
            output: String::new(),
            service_id: service_id.into(),
            service_name: String::new(),
        }
    }

    fn instance(service: &str, id: &str, node: &str, checks: Vec<HealthCheck>) -> ServiceEntry {
        ServiceEntry {
            node: CatalogNode::new(node, "10.0.0.1", "dc1"),
            service: AgentService::new(id, service, 8080),
            checks,
        }
    }

    fn with_meta(mut entry: ServiceEntry, dependencies: &str) -> ServiceEntry {
        entry.service.meta.insert(DEPENDENCIES_META_KEY.into(), dependencies.into());
        entry
    }

    fn proxy(of: &str, upstreams: &[(&str, &str)]) -> ServiceEntry {
        let mut entry = instance(&format!("{of}-sidecar-proxy"), &format!("{of}-proxy-1"), "node-1", vec![]);
        entry.service.kind = CONNECT_PROXY_KIND.into();
        entry.service.proxy = Some(ServiceProxy {
            destination_service_name: of.into(),
            upstreams: upstreams
                .iter()
                .map(|(name, kind)| Upstream {
                    destination_name: (*name).into(),
                    destination_type: (*kind).into(),
                    local_bind_port: 9000,
                })
                .collect(),
        });
        entry
    }

    fn snapshot(entries: Vec<ServiceEntry>) -> ServiceSnapshot {
        let mut snapshot = ServiceSnapshot::default();
        for entry in entries {
            snapshot.services.entry(entry.service.service.clone()).or_default().push(entry);
        }
        snapshot
    }

    /// web: two instances, one warning; db: on node-2 whose node check is critical; cache: fine.
    fn three_services() -> ServiceSnapshot {
        use CheckStatus::*;
        let node2_serf = check("node-2", "serfHealth", "", Critical);
        snapshot(vec![
            instance(
                "web",
                "web-1",
                "node-1",
                vec![check("node-1", "serfHealth", "", Passing), check("node-1", "web-1-http", "web-1", Passing)],
            ),
            instance(
                "web",
                "web-2",
                "node-1",
                vec![check("node-1", "serfHealth", "", Passing), check("node-1", "web-2-http", "web-2", Warning)],
            ),
            instance("db", "db-1", "node-2", vec![node2_serf.clone(), check("node-2", "db-1-tcp", "db-1", Passing)]),
            instance(
                "cache",
                "cache-1",
                "node-2",
                vec![node2_serf, check("node-2", "cache-1-tcp", "cache-1", Passing)],
            ),
        ])
    }

    fn health(service: &str, status: HealthStatus, instances: u32) -> ConsulServiceHealth {
        ConsulServiceHealth { service: service.into(), status, instances }
    }

    #[test]
    fn service_state_lists_each_service_with_its_instances_and_worst_check_sorted_by_name() {
        assert_eq!(
            service_state(&three_services()),
            vec![
                health("cache", HealthStatus::Unhealthy, 1),
                health("db", HealthStatus::Unhealthy, 1),
                health("web", HealthStatus::Degraded, 2),
            ]
        );
    }

    #[test]
    fn a_selected_service_without_instances_is_unhealthy_with_zero_instances() {
        let mut snapshot = three_services();
        snapshot.services.insert("ghost".into(), vec![]);
        assert!(service_state(&snapshot).contains(&health("ghost", HealthStatus::Unhealthy, 0)));
    }

    #[test]
    fn health_state_counts_each_check_once_even_a_node_check_shared_by_services() {
        let projection = health_state(&three_services(), None);
        // node-1 serfHealth, web-1-http, web-2-http, node-2 serfHealth, db-1-tcp, cache-1-tcp.
        assert_eq!((projection.passing, projection.warning, projection.critical), (4, 1, 1));
        assert_eq!(projection.overall, HealthStatus::Unhealthy);
        assert_eq!(projection.services, service_state(&three_services()));
    }

    #[test]
    fn a_state_filter_narrows_counts_and_services_but_not_the_overall_status() {
        let states = BTreeSet::from([CheckState::Passing, CheckState::Warning]);
        let projection = health_state(&three_services(), Some(&states));
        assert_eq!((projection.passing, projection.warning, projection.critical), (4, 1, 0));
        assert_eq!(projection.services, vec![health("web", HealthStatus::Degraded, 2)]);
        assert_eq!(projection.overall, HealthStatus::Unhealthy, "the critical services still count");
    }

    #[test]
    fn an_unknown_check_status_counts_as_critical() {
        let snapshot =
            snapshot(vec![instance("web", "web-1", "n", vec![check("n", "c", "web-1", CheckStatus::Unknown)])]);
        let projection = health_state(&snapshot, Some(&BTreeSet::from([CheckState::Critical])));
        assert_eq!(projection.critical, 1);
        assert_eq!(projection.services, vec![health("web", HealthStatus::Unhealthy, 1)]);
    }

    fn pair(key: &str, value: Option<&[u8]>, modify_index: u64) -> KvPair {
        KvPair {
            key: key.into(),
            value: value.map(|bytes| STANDARD.encode(bytes)),
            flags: 0,
            create_index: 1,
            modify_index,
            lock_index: 0,
            session: None,
        }
    }

    /// A stand-in for `KvPair::decoded_value` that knows the encodings these tests make.
    fn decode(pair: &KvPair) -> Result<Option<Vec<u8>>, OnexError> {
        Ok(pair.value.as_ref().map(|encoded| match encoded.as_str() {
            "aG9zdA==" => b"host".to_vec(),
            "//4=" => vec![0xff, 0xfe],
            other => panic!("unexpected encoding {other}"),
        }))
    }

    #[test]
    fn kv_state_lists_each_key_once_sorted_with_its_first_level_prefixes() {
        let pairs = vec![
            pair("config/db/host", Some(b"host"), 7),
            pair("flags", None, 3),
            pair("app/name", None, 5),
            pair("config/db/host", Some(b"host"), 7),
        ];
        let projection = kv_state(pairs, false, decode).unwrap();
        assert_eq!(projection.total_keys, 3);
        assert_eq!(projection.prefixes, vec!["app/", "config/"]);
        let keys: Vec<_> =
            projection.entries.iter().map(|e| (e.key.as_str(), e.modify_index, e.value.clone())).collect();
        assert_eq!(keys, vec![("app/name", 5, None), ("config/db/host", 7, None), ("flags", 3, None)]);
    }

    #[test]
    fn kv_values_are_given_only_when_asked_as_text_or_as_base64_for_other_bytes() {
        let pairs =
            vec![pair("a/text", Some(b"host"), 1), pair("a/binary", Some(&[0xff, 0xfe]), 2), pair("a/empty", None, 3)];
        let projection = kv_state(pairs, true, decode).unwrap();
        let values: Vec<_> = projection.entries.iter().map(|e| e.value.clone()).collect();
        assert_eq!(values, vec![Some(KvValue::Base64("//4=".into())), None, Some(KvValue::Text("host".into()))]);
    }

    #[test]
    fn a_value_that_does_not_decode_fails_the_kv_projection() {
        let failing = |_: &KvPair| Err(OnexError::new(ErrorCode::IntegrationServiceError, "bad base64"));
        let err = kv_state(vec![pair("a/b", Some(b"host"), 1)], true, failing).unwrap_err();
        assert_eq!(err.code(), ErrorCode::IntegrationServiceError);
        // Without values nothing is decoded.
        assert!(kv_state(vec![pair("a/b", Some(b"host"), 1)], false, failing).is_ok());
    }

    #[test]
    fn covering_prefixes_reads_a_nested_prefix_once_and_the_empty_prefix_covers_all() {
        assert_eq!(covering_prefixes(["config/db/", "app/", "config/", "app/"]), vec!["app/", "config/"]);
        assert_eq!(covering_prefixes(["config/", ""]), vec![""]);
        assert_eq!(covering_prefixes(["app", "apple/"]), vec!["app"]);
    }

    /// web → api (proxy upstream), api → db and cache (meta), db → backup (meta), plus a
    /// prepared-query upstream that names no service.
    fn chain() -> ServiceSnapshot {
        let ok = |service: &str| vec![check("node-1", &format!("{service}-check"), service, CheckStatus::Passing)];
        snapshot(vec![
            instance("web", "web-1", "node-1", ok("web")),
            proxy("web", &[("api", ""), ("nearest-db", "prepared_query")]),
            with_meta(instance("api", "api-1", "node-1", ok("api")), " db ,cache,, "),
            with_meta(instance("db", "db-1", "node-1", ok("db")), "backup"),
            instance("cache", "cache-1", "node-1", ok("cache")),
        ])
    }

    fn edge(source: &str, target: &str, relationship: Relationship) -> TopologyEdge {
        TopologyEdge { source: source.into(), target: target.into(), relationship }
    }

    #[test]
    fn edges_come_from_proxy_upstreams_and_the_dependencies_meta() {
        let edges: Vec<_> = dependency_edges(&chain()).into_iter().collect();
        assert_eq!(
            edges,
            vec![
                edge("api", "cache", Relationship::ServiceMeta),
                edge("api", "db", Relationship::ServiceMeta),
                edge("db", "backup", Relationship::ServiceMeta),
                edge("web", "api", Relationship::ConnectUpstream),
            ]
        );
    }

    #[test]
    fn topology_follows_at_most_depth_hops_from_the_targets() {
        let roots = BTreeSet::from(["web".to_owned()]);
        let one = topology(&chain(), Some(&roots), 1);
        assert_eq!(one.edges, vec![edge("web", "api", Relationship::ConnectUpstream)]);
        assert_eq!(one.nodes.iter().map(|n| n.service.as_str()).collect::<Vec<_>>(), vec!["api", "web"]);
        assert_eq!(one.depth, 1);

        let two = topology(&chain(), Some(&roots), 2);
        assert_eq!(two.edges.len(), 3);
        assert_eq!(two.nodes.iter().map(|n| n.service.as_str()).collect::<Vec<_>>(), vec!["api", "cache", "db", "web"]);
        assert_eq!(two.depth, 2);

        // Three hops reach backup, which has no instance; a bound past the graph reports the
        // hops actually followed.
        let deep = topology(&chain(), Some(&roots), 10);
        assert_eq!(deep.depth, 3);
        assert!(deep.nodes.contains(&health("backup", HealthStatus::Unhealthy, 0)));
        assert_eq!(deep.edges.len(), 4);
    }

    #[test]
    fn topology_of_every_service_leaves_proxies_out_and_follows_one_hop_between_them() {
        let all = topology(&chain(), None, 1);
        let names: Vec<_> = all.nodes.iter().map(|n| n.service.as_str()).collect();
        assert_eq!(names, vec!["api", "backup", "cache", "db", "web"]);
        assert_eq!(all.edges.len(), 4);
        assert_eq!(all.depth, 1);
    }

    #[test]
    fn a_target_without_dependencies_is_a_lone_node_at_depth_zero() {
        let roots = BTreeSet::from(["cache".to_owned()]);
        let lone = topology(&chain(), Some(&roots), 2);
        assert_eq!(lone.nodes, vec![health("cache", HealthStatus::Healthy, 1)]);
        assert!(lone.edges.is_empty());
        assert_eq!(lone.depth, 0);
    }

    #[test]
    fn equal_requests_make_equal_selections() {
        let a = Selection::services(Some(vec!["web".into(), "db".into(), "web".into()])).unwrap();
        let b = Selection::services(Some(vec!["db".into(), "web".into()])).unwrap();
        assert_eq!(a, b);
        let nested = Selection::kv(Some(vec!["app/db/".into(), "app/".into()]), false).unwrap();
        assert_eq!(nested, Selection::kv(Some(vec!["app/".into()]), false).unwrap());
        assert_eq!(
            Selection::kv(Some(vec!["app/".into(), String::new()]), true).unwrap(),
            Selection::kv(None, true).unwrap()
        );
    }

    #[test]
    fn a_selection_that_names_nothing_or_a_blank_is_a_validation_error() {
        let cases = [
            Selection::services(Some(vec![])).unwrap_err(),
            Selection::services(Some(vec![" ".into()])).unwrap_err(),
            Selection::health(None, Some(vec![])).unwrap_err(),
            Selection::kv(Some(vec![]), false).unwrap_err(),
            Selection::topology(None, 0).unwrap_err(),
            Selection::topology(Some(vec!["x".into(); MAX_SELECTED + 1]), 1).unwrap_err(),
        ];
        for err in cases {
            assert_eq!(err.code(), ErrorCode::ValidationError, "{}", err.message());
            assert!(err.details().contains_key("field"));
        }
    }

    #[test]
    fn a_dependency_cycle_ends() {
        let ok = |service: &str| vec![check("n", &format!("{service}-c"), service, CheckStatus::Passing)];
        let snapshot = snapshot(vec![
            with_meta(instance("a", "a-1", "n", ok("a")), "b"),
            with_meta(instance("b", "b-1", "n", ok("b")), "a"),
        ]);
        let roots = BTreeSet::from(["a".to_owned()]);
        let cycle = topology(&snapshot, Some(&roots), u64::MAX);
        assert_eq!(cycle.edges.len(), 2);
        assert_eq!(cycle.depth, 2);
    }
}
