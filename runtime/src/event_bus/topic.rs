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
        if let Some(topic) = self.canonical_topic_for(event_type) {
            return Ok(topic);
        }
        self.normalized_topic_for(event_type)
    }

    /// The bytes of a canonical event type, as a table: the test of a byte is one load, where
    /// matching five ranges took a fifth of this path (callgrind).
    const CANONICAL_BYTES: [bool; 256] = {
        let mut table = [false; 256];
        let mut b = 0;
        while b < 256 {
            table[b] = matches!(b as u8, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-');
            b += 1;
        }
        table
    };

    /// The fast path of [`topic_for`](Self::topic_for), run for every published event: an
    /// event type already in canonical form (lower-case ASCII letters, digits, `.`, `_`, `-`,
    /// starting with a letter or digit, at most 100 bytes, not one of the query-response names)
    /// needs no trimming, lower-casing or checking, so its topic is written in one allocation
    /// of the exact size. `None` sends every other type through the general path.
    fn canonical_topic_for(&self, event_type: &str) -> Option<String> {
        let bytes = event_type.as_bytes();
        let canonical = matches!(bytes.first(), Some(b'a'..=b'z' | b'0'..=b'9'))
            && bytes.len() <= 100
            && bytes.iter().all(|&b| Self::CANONICAL_BYTES[usize::from(b)])
            && !is_query_response(event_type);
        if !canonical {
            return None;
        }
        const CLASS: &str = "evt.";
        const VERSION: &str = ".v1";
        let mut topic = Vec::with_capacity(
            self.env.len() + self.tenant.len() + self.context.len() + 3 + CLASS.len() + bytes.len() + VERSION.len(),
        );
        for segment in [&self.env, &self.tenant, &self.context] {
            topic.extend_from_slice(segment.as_bytes());
            topic.push(b'.');
        }
        topic.extend_from_slice(CLASS.as_bytes());
        let name = topic.len();
        topic.extend_from_slice(bytes);
        for b in &mut topic[name..] {
            if matches!(b, b'.' | b'_') {
                *b = b'-';
            }
        }
        topic.extend_from_slice(VERSION.as_bytes());
        // SAFETY: the bytes are the segments' (each a `String`, so UTF-8), ASCII separators and
        // the event type's bytes, every one of them ASCII (checked above), with ASCII `.`/`_`
        // replaced by ASCII `-`: valid UTF-8. Checking them again was a fifth of this path.
        Some(unsafe { String::from_utf8_unchecked(topic) })
    }

    /// The general path of [`topic_for`](Self::topic_for): trims, lower-cases and checks.
    fn normalized_topic_for(&self, event_type: &str) -> Result<String, OnexError> {
        let normalized = event_type.trim().to_ascii_lowercase();
        let (class, name) = match normalized.as_str() {
            query_response if is_query_response(query_response) => ("qrs", "postgres-health-response".to_owned()),
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

/// The lower-cased event types published on the query-response topic.
fn is_query_response(normalized: &str) -> bool {
    matches!(
        normalized,
        "postgres.health.response"
            | "postgres.health_check_response"
            | "postgres.health_check.response"
            | "postgres_health_response"
    )
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
    fn query_response_types_keep_their_topic_in_any_case() {
        let namer = TopicNamer::default();
        for event_type in ["postgres.health_check_response", "postgres_health_response", " Postgres.Health.Response "] {
            assert_eq!(namer.topic_for(event_type).unwrap(), "dev.omnibase.onex.qrs.postgres-health-response.v1");
        }
    }

    proptest::proptest! {
        /// The fast path is an optimisation only: whatever it answers, the general path answers the same.
        #[test]
        fn the_fast_path_names_the_same_topic_as_the_general_path(
            event_type in "[a-zA-Z0-9._ /-]{0,12}|[a-z0-9._-]{1,110}|postgres[._]health[._](check[._])?response",
        ) {
            let namer = TopicNamer::new("prod", "acme", "billing").unwrap();
            if let Some(fast) = namer.canonical_topic_for(&event_type) {
                proptest::prop_assert_eq!(Some(fast), namer.normalized_topic_for(&event_type).ok());
            }
            proptest::prop_assert_eq!(
                namer.topic_for(&event_type).ok(),
                namer.normalized_topic_for(&event_type).ok()
            );
        }
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
