//! `event_bus`: the topics a node subscribes to, publishes on and dead-letters to, checked
//! against the topic grammar so that each is typed once, as a constant of the node's
//! `topics.rs`.
//!
//! A topic is accepted in one of three forms:
//!
//! - the grammar: `onex.<kind>.<producer>.<event>.v<N>`, where kind is `evt`, `cmd`, `intent`
//!   or `dlq`, producer is `[a-z0-9-]+`, event is one or more `[a-z0-9_-]+` segments joined by
//!   dots, and N is a positive integer without leading zeros;
//! - the legacy dead-letter form `onex.dlq.<intents|events|commands>.v<N>`;
//! - the legacy unversioned form `onex.<domain>.<name>`: exactly three segments, domain
//!   `[a-z0-9-]+` and not a kind, name `[a-z0-9_-]+` (the runtime's
//!   `onex.runtime.subscriptions`).
//!
//! `subscribe_topics`, `publish_topics` and `dlq_topics` are lists whose items are topic strings
//! or mappings `{topic: …, …}`; `consumer_group` is kept. Other keys (`version`,
//! `plugin_managed`, `planned_subscribe_topics`, …) configure the host, not the topics.

use crate::diagnostics::{Code, Diagnostic, Pos};
use crate::read::{Node, Value};

/// The kinds of the topic grammar.
pub const KINDS: [&str; 4] = ["evt", "cmd", "intent", "dlq"];

/// The grammar, for hints.
pub const GRAMMAR: &str = "onex.<evt|cmd|intent|dlq>.<producer>.<event>.v<N>";

/// Which accepted form a topic has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Form {
    /// `onex.<kind>.<producer>.<event>.v<N>`.
    Grammar {
        /// `evt`, `cmd`, `intent` or `dlq`.
        kind: String,
        /// The producer segment.
        producer: String,
        /// The event (dotted segments).
        event: String,
        /// N.
        version: u32,
    },
    /// `onex.dlq.<intents|events|commands>.v<N>`.
    LegacyDlq {
        /// `intents`, `events` or `commands`.
        of: String,
        /// N.
        version: u32,
    },
    /// `onex.<domain>.<name>`.
    LegacyUnversioned,
}

/// One topic, where the contract gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Topic {
    /// The topic name.
    pub name: String,
    /// Its form.
    pub form: Form,
    /// The item's `description`, when it is a mapping with one.
    pub description: Option<String>,
    /// Where the topic is.
    pub pos: Pos,
}

/// What `event_bus` says.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Topics {
    /// `subscribe_topics`.
    pub subscribe: Vec<Topic>,
    /// `publish_topics`.
    pub publish: Vec<Topic>,
    /// `dlq_topics`.
    pub dlq: Vec<Topic>,
    /// `consumer_group`.
    pub consumer_group: Option<String>,
}

impl Topics {
    /// Every topic once, in the order first listed (subscribe, publish, dlq).
    pub fn distinct(&self) -> Vec<&Topic> {
        let mut seen: Vec<&Topic> = Vec::new();
        for topic in self.subscribe.iter().chain(&self.publish).chain(&self.dlq) {
            if !seen.iter().any(|t| t.name == topic.name) {
                seen.push(topic);
            }
        }
        seen
    }
}

/// The lists `event_bus` may have, with the field each fills.
const LISTS: [&str; 3] = ["subscribe_topics", "publish_topics", "dlq_topics"];

/// Reads `event_bus` from `root`, if present: `None` when absent, empty of topic lists, or
/// when one of its topics is unusable (then `diags` says why).
pub fn read(file: &str, root: &Node, diags: &mut Vec<Diagnostic>) -> Option<Topics> {
    let section = root.get("event_bus")?;
    if section.value == Value::Null {
        return None;
    }
    let mut errors = 0;
    let mut error = |diags: &mut Vec<Diagnostic>, code: Code, pos: Pos, path: &str, message: String, hint: String| {
        errors += 1;
        diags.push(Diagnostic::error(code, file, pos, path, message).with_hint(hint));
    };
    if section.as_map().is_none() {
        error(
            diags,
            Code::InvalidEventBus,
            section.pos,
            "event_bus",
            format!("`event_bus` must be a mapping, not {}", section.type_name()),
            "write `event_bus: {subscribe_topics: [...], publish_topics: [...]}`".to_owned(),
        );
        return None;
    }
    let mut topics = Topics::default();
    let mut any_list = false;
    for key in LISTS {
        let Some(list) = section.get(key) else { continue };
        let path = format!("event_bus.{key}");
        let items = match &list.value {
            Value::Null => continue,
            Value::Seq(items) => items,
            _ => {
                error(
                    diags,
                    Code::InvalidEventBus,
                    list.pos,
                    &path,
                    format!("`{key}` must be a list, not {}", list.type_name()),
                    format!("write `{key}: [{}]`", example()),
                );
                continue;
            }
        };
        any_list = true;
        let mut out: Vec<Topic> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            let (name_node, description) = match &item.value {
                Value::Str(_) => (item, None),
                Value::Map(_) => match item.get("topic") {
                    Some(t) if t.as_str().is_some() => {
                        (t, item.get("description").and_then(Node::as_str).map(|d| d.trim().to_owned()))
                    }
                    _ => {
                        error(
                            diags,
                            Code::InvalidEventBus,
                            item.pos,
                            &item_path,
                            "a topic mapping must have a `topic` string".to_owned(),
                            format!("write `{{topic: {}}}`", example()),
                        );
                        continue;
                    }
                },
                _ => {
                    error(
                        diags,
                        Code::InvalidEventBus,
                        item.pos,
                        &item_path,
                        format!("a topic must be a string or a `{{topic: …}}` mapping, not {}", item.type_name()),
                        format!("write `- {}`", example()),
                    );
                    continue;
                }
            };
            let name = name_node.as_str().unwrap_or_default().trim().to_owned();
            let Some(form) = parse(&name) else {
                error(
                    diags,
                    Code::InvalidTopic,
                    name_node.pos,
                    &item_path,
                    format!("topic `{name}` is not in the topic grammar {GRAMMAR}"),
                    format!(
                        "write the topic as {GRAMMAR} (producer `[a-z0-9-]+`, event `[a-z0-9_-]+` segments joined by dots), e.g. `{}`",
                        example()
                    ),
                );
                continue;
            };
            if let Some(first) = out.iter().find(|t| t.name == name) {
                diags.push(
                    Diagnostic::warning(
                        Code::InvalidEventBus,
                        file,
                        name_node.pos,
                        &item_path,
                        format!("topic `{name}` is listed twice in `{key}`"),
                    )
                    .with_related(file, first.pos, "first listed here")
                    .with_hint("delete the second entry; the topic gets one constant"),
                );
                continue;
            }
            out.push(Topic { name, form, description, pos: name_node.pos });
        }
        match key {
            "subscribe_topics" => topics.subscribe = out,
            "publish_topics" => topics.publish = out,
            _ => topics.dlq = out,
        }
    }
    topics.consumer_group = section.get("consumer_group").and_then(Node::as_str).map(str::to_owned);
    let distinct = topics.distinct();
    for (i, topic) in distinct.iter().enumerate() {
        let name = const_name(&topic.name);
        if let Some(first) = distinct[..i].iter().find(|t| const_name(&t.name) == name) {
            errors += 1;
            diags.push(
                Diagnostic::error(
                    Code::NameCollision,
                    file,
                    topic.pos,
                    "event_bus",
                    format!("topics `{}` and `{}` both become the constant `{name}`", first.name, topic.name),
                )
                .with_related(file, first.pos, "the first topic is here")
                .with_hint("topics that differ only in `-`, `_` or `.` cannot both be constants; rename one"),
            );
        }
    }
    (errors == 0 && any_list).then_some(topics)
}

/// The constant of `topic` in `topics.rs`: the topic without `onex.`, in upper snake case
/// (`onex.evt.platform.node-registered.v1` → `EVT_PLATFORM_NODE_REGISTERED_V1`).
pub fn const_name(topic: &str) -> String {
    let rest = topic.strip_prefix("onex.").unwrap_or(topic);
    let name = crate::naming::to_snake_case(rest).to_ascii_uppercase();
    if name.starts_with(|c: char| c.is_ascii_digit()) { format!("TOPIC_{name}") } else { name }
}

fn example() -> &'static str {
    "onex.evt.platform.node-registered.v1"
}

/// The form of `topic`, or `None` when it has none of the accepted forms.
pub fn parse(topic: &str) -> Option<Form> {
    let parts: Vec<&str> = topic.split('.').collect();
    if parts.first() != Some(&"onex") {
        return None;
    }
    let producer_like =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let event_like = |s: &str| {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    };
    match parts.as_slice() {
        ["onex", "dlq", of @ ("intents" | "events" | "commands"), v] => {
            Some(Form::LegacyDlq { of: (*of).to_owned(), version: version(v)? })
        }
        ["onex", domain, name] if !KINDS.contains(domain) && producer_like(domain) && event_like(name) => {
            Some(Form::LegacyUnversioned)
        }
        ["onex", kind, producer, event @ .., v] if KINDS.contains(kind) && !event.is_empty() => {
            (producer_like(producer) && event.iter().all(|s| event_like(s))).then_some(())?;
            Some(Form::Grammar {
                kind: (*kind).to_owned(),
                producer: (*producer).to_owned(),
                event: event.join("."),
                version: version(v)?,
            })
        }
        _ => None,
    }
}

/// `v<N>` → N, for N ≥ 1 without leading zeros.
fn version(text: &str) -> Option<u32> {
    let digits = text.strip_prefix('v')?;
    if digits.starts_with('0') || digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grammar_and_the_legacy_forms() {
        assert_eq!(
            parse("onex.evt.platform.node-registered.v1"),
            Some(Form::Grammar {
                kind: "evt".into(),
                producer: "platform".into(),
                event: "node-registered".into(),
                version: 1
            })
        );
        assert!(matches!(parse("onex.cmd.omnibase-infra.llm.inference_request.v12"), Some(Form::Grammar { .. })));
        assert!(matches!(parse("onex.dlq.omnibase-infra.router.v1"), Some(Form::Grammar { .. })));
        assert_eq!(parse("onex.dlq.intents.v2"), Some(Form::LegacyDlq { of: "intents".into(), version: 2 }));
        assert_eq!(parse("onex.runtime.subscriptions"), Some(Form::LegacyUnversioned));
        for bad in [
            "",
            "onex",
            "evt.platform.x.v1",
            "onex.evt.platform.x",
            "onex.evt.platform.x.v0",
            "onex.evt.platform.x.v01",
            "onex.evt.Platform.x.v1",
            "onex.evt.platform..v1",
            "onex.news.platform.x.v1",
            "onex.evt.platform_x.y.v1",
            "onex.evt.x",
            "onex.runtime.subscriptions.extra",
            "dev.omnibase.onex.evt.x.v1",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
