//! What a host serves and how: a YAML file, then the environment. Every error names the file,
//! the line and column, the key, and what to write instead.
//!
//! ```yaml
//! nodes:                      # required: the nodes this host serves
//!   - name: node_postgres_adapter_effect
//!     version: 1.0.0          # optional: the newest registered version otherwise
//! group_id: onex-host         # the consumer group the hosts of one deployment share
//! max_in_flight: 64           # requests held at once (running or waiting behind their key)
//! max_attempts: 3             # runs of a request failing with a retriable error
//! retry_backoff_ms: 200       # before the second run; doubled before each later one
//! shutdown_timeout_ms: 30000  # SIGTERM: finish, publish and commit within this
//! http: 127.0.0.1:9464        # /metrics and /health/{live,ready}; `off` serves none
//! idempotency: off            # `postgres`: EFFECT nodes' answers stored, replayed on redelivery
//! idempotency_retention_hours: 24
//! publish_rate_limit_per_minute: 0  # events the served nodes publish per minute; 0: no limit
//! ```
//!
//! The environment overrides the deployment-specific keys: `ONEX_HOST_GROUP_ID`,
//! `ONEX_HOST_HTTP` and `ONEX_HOST_MAX_IN_FLIGHT`. The broker and the databases come from the
//! variables their clients read (`REDPANDA_BOOTSTRAP_SERVERS`, `POSTGRES_*`, `CONSUL_*`, …).

mod yaml;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use onex_runtime::contract::SemVer;
use onex_runtime::environment::EnvSource;
use onex_runtime::event_bus::RateLimitRule;
use onex_runtime::{NodeRegistry, OnexError};

use self::yaml::{Position, Yaml};

/// One node to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSelection {
    /// The contract's node name.
    pub name: String,
    /// A registered version; the newest when `None`.
    pub version: Option<SemVer>,
}

/// The host's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct HostConfig {
    /// The nodes served, at least one.
    pub nodes: Vec<NodeSelection>,
    /// The consumer group: hosts sharing it share the requests.
    pub group_id: String,
    /// Requests held at once, running or waiting behind an earlier request with their key.
    pub max_in_flight: usize,
    /// Runs of a request that fails with a retriable error before it is dead-lettered.
    pub max_attempts: u32,
    /// Wait before the second run, doubled before each later one.
    pub retry_backoff: Duration,
    /// How long a SIGTERM may take to finish, publish and commit what is in flight.
    pub shutdown_timeout: Duration,
    /// Where `/metrics` and `/health/*` are served; `None` serves nothing.
    pub http: Option<SocketAddr>,
    /// Whether EFFECT nodes' answers are stored in PostgreSQL and replayed on redelivery
    /// (see [`crate::idempotency`]).
    pub idempotency: bool,
    /// How long stored answers are kept.
    pub idempotency_retention: Duration,
    /// The per-caller limit on the events the served nodes publish through the event bus;
    /// `None` (the default) sets none. The bus's own default (1,000 a minute per caller) is
    /// meant for one client of a shared bus; a host's nodes publish once per request it
    /// serves, so that default would fail every request past the thousandth of a minute, and
    /// `max_in_flight` already bounds the host's load.
    pub publish_rate_limit: Option<RateLimitRule>,
}

impl HostConfig {
    /// The defaults, serving `nodes`.
    pub fn serving(nodes: Vec<NodeSelection>) -> Self {
        Self {
            nodes,
            group_id: "onex-host".to_owned(),
            max_in_flight: 64,
            max_attempts: 3,
            retry_backoff: Duration::from_millis(200),
            shutdown_timeout: Duration::from_secs(30),
            http: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            idempotency: false,
            idempotency_retention: Duration::from_secs(24 * 3600),
            publish_rate_limit: None,
        }
    }

    /// Reads `path`, applies the environment, and checks the node names against `registry`.
    pub fn load(path: &Path, env: &dyn EnvSource, registry: &NodeRegistry) -> Result<Self, OnexError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            OnexError::configuration(format!("cannot read the host configuration {}: {e}", path.display()))
        })?;
        Self::parse(&path.display().to_string(), &text, env, registry)
    }

    /// [`HostConfig::load`] on `text`, named `file` in errors.
    pub fn parse(file: &str, text: &str, env: &dyn EnvSource, registry: &NodeRegistry) -> Result<Self, OnexError> {
        let reader = Reader { file };
        let tree = yaml::parse(text).map_err(|(at, message)| reader.error(at, "", &message))?;
        let mut config = reader.config(&tree, registry)?;
        config.apply_env(env)?;
        Ok(config)
    }

    fn apply_env(&mut self, env: &dyn EnvSource) -> Result<(), OnexError> {
        let set = |key: &str| env.var(key).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        if let Some(group) = set("ONEX_HOST_GROUP_ID") {
            self.group_id = group;
        }
        if let Some(http) = set("ONEX_HOST_HTTP") {
            self.http = parse_http(&http).map_err(|m| OnexError::configuration(format!("ONEX_HOST_HTTP: {m}")))?;
        }
        if let Some(limit) = set("ONEX_HOST_MAX_IN_FLIGHT") {
            self.max_in_flight = parse_count(&limit, 1, 100_000)
                .map_err(|m| OnexError::configuration(format!("ONEX_HOST_MAX_IN_FLIGHT: {m}")))?;
        }
        Ok(())
    }
}

struct Reader<'a> {
    file: &'a str,
}

impl Reader<'_> {
    fn error(&self, at: Position, key: &str, message: &str) -> OnexError {
        let key = if key.is_empty() { String::new() } else { format!("{key}: ") };
        OnexError::configuration(format!("{}:{}:{}: {key}{message}", self.file, at.line, at.column))
    }

    fn config(&self, tree: &Yaml, registry: &NodeRegistry) -> Result<HostConfig, OnexError> {
        let Yaml::Map(entries, at) = tree else {
            return Err(self.error(tree.position(), "", "the configuration is a mapping of keys (`nodes:`, …)"));
        };
        let mut config = HostConfig::serving(Vec::new());
        let mut nodes = None;
        for (key, key_at, value) in entries {
            match key.as_str() {
                "nodes" => nodes = Some(self.nodes(value, registry)?),
                "group_id" => config.group_id = self.text(key, value)?,
                "max_in_flight" => config.max_in_flight = self.count(key, value, 1, 100_000)?,
                "max_attempts" => config.max_attempts = self.count(key, value, 1, 100)? as u32,
                "retry_backoff_ms" => {
                    config.retry_backoff = Duration::from_millis(self.count(key, value, 0, 600_000)? as u64);
                }
                "shutdown_timeout_ms" => {
                    config.shutdown_timeout = Duration::from_millis(self.count(key, value, 100, 3_600_000)? as u64);
                }
                "http" => {
                    let text = self.text(key, value)?;
                    config.http = parse_http(&text).map_err(|m| self.error(value.position(), key, &m))?;
                }
                "idempotency" => {
                    config.idempotency = match self.text(key, value)?.as_str() {
                        "postgres" => true,
                        "off" => false,
                        other => {
                            let message = format!("'{other}' is not `postgres` or `off`");
                            return Err(self.error(value.position(), key, &message));
                        }
                    };
                }
                "idempotency_retention_hours" => {
                    let hours = self.count(key, value, 1, 24 * 365)? as u64;
                    config.idempotency_retention = Duration::from_secs(hours * 3600);
                }
                "publish_rate_limit_per_minute" => {
                    config.publish_rate_limit = publish_rate_limit(self.count(key, value, 0, 100_000_000)? as u32);
                }
                other => {
                    return Err(self.error(
                        *key_at,
                        other,
                        "unknown key; the keys are nodes, group_id, max_in_flight, max_attempts, \
                         retry_backoff_ms, shutdown_timeout_ms, http, idempotency, idempotency_retention_hours, \
                         publish_rate_limit_per_minute",
                    ));
                }
            }
        }
        config.nodes = nodes.ok_or_else(|| self.error(*at, "nodes", "missing: list the nodes this host serves"))?;
        Ok(config)
    }

    fn nodes(&self, value: &Yaml, registry: &NodeRegistry) -> Result<Vec<NodeSelection>, OnexError> {
        let Yaml::Seq(items, at) = value else {
            return Err(self.error(value.position(), "nodes", "a list of `- name: …` entries"));
        };
        if items.is_empty() {
            return Err(self.error(*at, "nodes", "empty: a host serves at least one node"));
        }
        let mut nodes: Vec<NodeSelection> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let path = format!("nodes[{i}]");
            let selection = match item {
                Yaml::Scalar(name, _) => NodeSelection { name: name.clone(), version: None },
                Yaml::Map(entries, at) => {
                    let (mut name, mut version) = (None, None);
                    for (key, key_at, value) in entries {
                        let path = format!("{path}.{key}");
                        match key.as_str() {
                            "name" => name = Some(self.text(&path, value)?),
                            "version" => {
                                let text = self.text(&path, value)?;
                                version = Some(parse_version(&text).ok_or_else(|| {
                                    self.error(value.position(), &path, "a version is MAJOR.MINOR.PATCH, e.g. 1.0.0")
                                })?);
                            }
                            _ => return Err(self.error(*key_at, &path, "unknown key; a node has name and version")),
                        }
                    }
                    let name = name.ok_or_else(|| self.error(*at, &format!("{path}.name"), "missing"))?;
                    NodeSelection { name, version }
                }
                Yaml::Seq(_, at) => return Err(self.error(*at, &path, "a node is `name: …` or its name")),
            };
            if registry.find(&selection.name, selection.version).is_none() {
                let known: Vec<String> =
                    registry.entries().iter().map(|e| format!("{}@{}", e.contract.name, e.contract.version)).collect();
                return Err(self.error(
                    item.position(),
                    &path,
                    &format!("no node '{}' in the registry; known: {}", selection.name, known.join(", ")),
                ));
            }
            if nodes.iter().any(|n| n.name == selection.name) {
                return Err(self.error(item.position(), &path, &format!("'{}' is listed twice", selection.name)));
            }
            nodes.push(selection);
        }
        Ok(nodes)
    }

    fn text(&self, key: &str, value: &Yaml) -> Result<String, OnexError> {
        match value {
            Yaml::Scalar(text, at) if text.trim().is_empty() => Err(self.error(*at, key, "empty")),
            Yaml::Scalar(text, _) => Ok(text.trim().to_owned()),
            other => Err(self.error(other.position(), key, "a single value, not a list or mapping")),
        }
    }

    fn count(&self, key: &str, value: &Yaml, min: usize, max: usize) -> Result<usize, OnexError> {
        let text = self.text(key, value)?;
        parse_count(&text, min, max).map_err(|m| self.error(value.position(), key, &m))
    }
}

fn parse_count(text: &str, min: usize, max: usize) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("'{text}' is not a whole number from {min} to {max}")),
    }
}

/// A limit of `per_minute` events with the event bus's default shape: a tenth of a minute's
/// events back to back, and 30 s refused after the bucket runs dry; `None` for 0.
fn publish_rate_limit(per_minute: u32) -> Option<RateLimitRule> {
    (per_minute > 0).then(|| RateLimitRule {
        per_minute,
        burst: (per_minute / 10).max(1),
        penalty: RateLimitRule::EVENT_PUBLISH.penalty,
    })
}

fn parse_http(text: &str) -> Result<Option<SocketAddr>, String> {
    if text == "off" {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| format!("'{text}' is not an address like 127.0.0.1:9464 (or `off`)"))
}

fn parse_version(text: &str) -> Option<SemVer> {
    let mut parts = text.split('.').map(|p| p.parse::<u32>().ok());
    let version = SemVer::new(parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(version)
}

#[cfg(test)]
mod tests {
    use onex_runtime::environment::MapEnv;

    use super::*;

    fn registry() -> NodeRegistry {
        onex_generated::registry()
    }

    fn parse(text: &str) -> Result<HostConfig, OnexError> {
        HostConfig::parse("host.yaml", text, &MapEnv::default(), &registry())
    }

    #[test]
    fn a_full_file_is_read() {
        let config = parse(
            "nodes:\n  - name: node_postgres_adapter_effect\n    version: 1.0.0\n  - node_consul_effect\n\
             group_id: g\nmax_in_flight: 8\nmax_attempts: 5\nretry_backoff_ms: 10\nshutdown_timeout_ms: 2000\nhttp: off\n\
             idempotency: postgres\nidempotency_retention_hours: 2\npublish_rate_limit_per_minute: 600\n",
        )
        .unwrap();
        assert_eq!(config.nodes.len(), 2);
        assert_eq!(config.nodes[0].version, Some(SemVer::new(1, 0, 0)));
        assert_eq!((config.group_id.as_str(), config.max_in_flight, config.max_attempts), ("g", 8, 5));
        assert_eq!(config.http, None);
        assert!(config.idempotency);
        assert_eq!(config.idempotency_retention, Duration::from_secs(7200));
        let limit = config.publish_rate_limit.unwrap();
        assert_eq!((limit.per_minute, limit.burst), (600, 60));
        let unlimited = parse("nodes: [node_consul_effect]\npublish_rate_limit_per_minute: 0\n").unwrap();
        assert_eq!(unlimited.publish_rate_limit, None);
    }

    #[test]
    fn errors_name_the_file_position_and_key() {
        let e = parse("nodes:\n  - name: node_nope\n").unwrap_err().to_string();
        assert!(e.contains("host.yaml:2:5: nodes[0]: no node 'node_nope'"), "{e}");
        let e = parse("nodes: [node_consul_effect]\nmax_in_flight: lots\n").unwrap_err().to_string();
        assert!(e.contains("host.yaml:2:16: max_in_flight: 'lots' is not a whole number"), "{e}");
        let e = parse("nodes: [node_consul_effect]\ngroup: g\n").unwrap_err().to_string();
        assert!(e.contains("host.yaml:2:1: group: unknown key"), "{e}");
        let e = parse("group_id: g\n").unwrap_err().to_string();
        assert!(e.contains("nodes: missing"), "{e}");
        let e = parse("nodes: [node_consul_effect, node_consul_effect]\n").unwrap_err().to_string();
        assert!(e.contains("listed twice"), "{e}");
    }

    #[test]
    fn the_environment_overrides_deployment_keys() {
        let env = MapEnv::from_pairs([("ONEX_HOST_GROUP_ID", "other"), ("ONEX_HOST_HTTP", "127.0.0.1:0")]);
        let config = HostConfig::parse("h.yaml", "nodes: [node_consul_effect]\n", &env, &registry()).unwrap();
        assert_eq!(config.group_id, "other");
        assert_eq!(config.http, Some("127.0.0.1:0".parse().unwrap()));
        let env = MapEnv::from_pairs([("ONEX_HOST_MAX_IN_FLIGHT", "0")]);
        let e = HostConfig::parse("h.yaml", "nodes: [node_consul_effect]\n", &env, &registry()).unwrap_err();
        assert!(e.to_string().contains("ONEX_HOST_MAX_IN_FLIGHT"), "{e}");
    }
}
