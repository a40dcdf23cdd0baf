//! Topic names:
//! `{OMNINODE_ENV:dev}.{OMNINODE_TENANT:omnibase}.{OMNINODE_CONTEXT:onex}.{class}.{name}.v1`.

use crate::environment::EnvSource;
use crate::error::OnexError;

/// Builds topic names from the deployment coordinates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicNamer {
    env: String,
    tenant: String,
    context: String,
}

impl Default for TopicNamer {
    fn default() -> Self {
        Self { env: "dev".into(), tenant: "omnibase".into(), context: "onex".into() }
    }
}

impl TopicNamer {
    /// From explicit coordinates; each must be a valid topic segment.
    pub fn new(env: &str, tenant: &str, context: &str) -> Result<Self, OnexError> {
        for (name, value) in [("OMNINODE_ENV", env), ("OMNINODE_TENANT", tenant), ("OMNINODE_CONTEXT", context)] {
            check_segment(name, value)?;
        }
        Ok(Self { env: env.into(), tenant: tenant.into(), context: context.into() })
    }

    /// Reads `OMNINODE_ENV` (dev), `OMNINODE_TENANT` (omnibase), `OMNINODE_CONTEXT` (onex).
    pub fn from_env(env: &dyn EnvSource) -> Result<Self, OnexError> {
        let get = |key: &str, default: &str| {
            env.var(key).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_owned())
        };
        Self::new(&get("OMNINODE_ENV", "dev"), &get("OMNINODE_TENANT", "omnibase"), &get("OMNINODE_CONTEXT", "onex"))
    }

    /// The topic of an event type:
    /// - `postgres.query.completed` → `…evt.postgres-query-completed.v1`;
    /// - `postgres.query.failed` → `…evt.postgres-query-failed.v1`;
    /// - `postgres.health.response` (or `…health_check_response`) → `…qrs.postgres-health-response.v1`;
    /// - any other type → `…evt.{type with dots replaced by dashes}.v1`.
    pub fn topic_for(&self, event_type: &str) -> Result<String, OnexError> {
        let normalized = event_type.trim().to_ascii_lowercase();
        let (class, name) = match normalized.as_str() {
            "postgres.health.response"
            | "postgres.health_check_response"
            | "postgres.health_check.response"
            | "postgres_health_response" => ("qrs", "postgres-health-response".to_owned()),
            other => ("evt", other.replace(['.', '_'], "-")),
        };
        check_segment("event_type", &name).map_err(|_| {
            OnexError::validation(format!(
                "event type '{event_type}' cannot name a topic: use letters, digits, dots, dashes or underscores"
            ))
        })?;
        Ok(self.topic(class, &name))
    }

    /// `{env}.{tenant}.{context}.{class}.{name}.v1`.
    pub fn topic(&self, class: &str, name: &str) -> String {
        format!("{}.{}.{}.{class}.{name}.v1", self.env, self.tenant, self.context)
    }
}

fn check_segment(name: &str, value: &str) -> Result<(), OnexError> {
    let valid = !value.is_empty()
        && value.len() <= 100
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !value.starts_with('-');
    if valid {
        Ok(())
    } else {
        Err(OnexError::configuration(format!(
            "{name} '{value}' is not a valid topic segment (letters, digits, '-', '_')"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::environment::MapEnv;

    #[test]
    fn names_follow_section_12_20() {
        let namer = TopicNamer::from_env(&MapEnv::default()).unwrap();
        assert_eq!(
            namer.topic_for("postgres.query.completed").unwrap(),
            "dev.omnibase.onex.evt.postgres-query-completed.v1"
        );
        assert_eq!(namer.topic_for("postgres.query.failed").unwrap(), "dev.omnibase.onex.evt.postgres-query-failed.v1");
        assert_eq!(
            namer.topic_for("postgres.health.response").unwrap(),
            "dev.omnibase.onex.qrs.postgres-health-response.v1"
        );
        assert_eq!(namer.topic_for("user.account.created").unwrap(), "dev.omnibase.onex.evt.user-account-created.v1");
        let env = MapEnv::from_pairs([
            ("OMNINODE_ENV", "prod"),
            ("OMNINODE_TENANT", "acme"),
            ("OMNINODE_CONTEXT", "billing"),
        ]);
        let namer = TopicNamer::from_env(&env).unwrap();
        assert_eq!(namer.topic_for("a.b").unwrap(), "prod.acme.billing.evt.a-b.v1");
    }

    #[test]
    fn bad_names_are_refused() {
        let namer = TopicNamer::default();
        assert!(namer.topic_for("").is_err());
        assert!(namer.topic_for("a b").is_err());
        assert!(namer.topic_for("x/../y").is_err());
        assert!(TopicNamer::new("dev", "ten.ant", "onex").is_err());
    }
}
