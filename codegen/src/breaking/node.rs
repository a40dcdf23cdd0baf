//! Rules over the node: its kind, operations and their timeouts, `event_bus` topics, state
//! machine states and triggers, and the dependencies its `Dependencies` struct exposes.

use super::rules::TIMEOUT_SHRINK_RATIO;
use super::{Level, Sink, key_pos, line_pos};
use crate::behaviour::topics::{Topic, Topics};
use crate::diagnostics::{Code, Pos, Severity};
use crate::model::NodeModel;
use crate::validate::{Contract, Dependency, DependencyKind};

/// Every node rule over the pair.
pub(super) fn compare(sink: &mut Sink<'_>) {
    kind(sink);
    operations(sink);
    routing(sink);
    topics(sink);
    state_machine(sink);
    dependencies(sink);
}

/// The top-level key `key` of the contract, else its `node_name`.
fn anchor(c: &Contract, key: &str) -> Pos {
    key_pos(&c.source.text, key).unwrap_or(c.name.pos)
}

fn kind(sink: &mut Sink<'_>) {
    let (om, nm) = (sink.old, sink.new);
    let (o, n) = (&om.contract, &nm.contract);
    if o.kind == n.kind {
        return;
    }
    let message = format!("`{}` changed kind from {} to {}", n.name.value, o.kind.upper(), n.kind.upper());
    let (pos, old_pos) = (anchor(n, "node_type"), anchor(o, "node_type"));
    sink.push(
        Code::NodeKindChanged,
        Level::Wire,
        pos,
        "node_type",
        message,
        Some((old_pos, "the old kind")),
        "keep the kind; a node of another kind is another node: give it its own name",
    );
}

/// Where the operations of `m` are declared: `handler_routing`, else the input model.
fn operations_anchor(m: &NodeModel) -> Pos {
    let c = &m.contract;
    if let Some(routing) = &c.behaviour.routing {
        return routing.pos;
    }
    c.definitions.iter().find(|d| d.name.value == c.input_model.value).map_or(c.input_model.pos, |d| d.name.pos)
}

/// The `io_operations` entry of `wire`, else the line the model cites for it.
fn operation_pos(m: &NodeModel, wire: &str, line: u32) -> Pos {
    let c = &m.contract;
    c.io_operations
        .iter()
        .find(|o| o.operation.value == wire)
        .map_or_else(|| line_pos(&c.source.text, line), |o| o.operation.pos)
}

/// Where the timeout of `wire` comes from, and its YAML path: its `io_operations` entry, else
/// `handler_routing`, else `default_timeout_seconds`, else where the operation is.
fn timeout_pos(m: &NodeModel, wire: &str, line: u32) -> (Pos, &'static str) {
    let c = &m.contract;
    if let Some(io) = c.io_operations.iter().find(|o| o.operation.value == wire && o.timeout_seconds.is_some()) {
        return (io.operation.pos, "io_operations");
    }
    if let Some(routing) = c.behaviour.routing.as_ref().filter(|r| r.max_timeout_seconds.is_some()) {
        return (routing.pos, "handler_routing.max_timeout_seconds");
    }
    match key_pos(&c.source.text, "default_timeout_seconds") {
        Some(pos) => (pos, "default_timeout_seconds"),
        None => (operation_pos(m, wire, line), ""),
    }
}

fn operations(sink: &mut Sink<'_>) {
    let (om, nm) = (sink.old, sink.new);
    for op in &om.operations {
        let old_pos = operation_pos(om, &op.wire, op.line);
        let Some(now) = nm.operations.iter().find(|n| n.wire == op.wire) else {
            sink.push(
                Code::OperationRemoved,
                Level::Wire,
                operations_anchor(nm),
                "",
                format!("operation `{}` was removed", op.wire),
                Some((old_pos, "the operation was here")),
                "keep the operation (it may answer with an error) until no consumer calls it",
            );
            continue;
        };
        let (was, is) = (op.timeout_seconds, now.timeout_seconds);
        let (pos, path) = timeout_pos(nm, &now.wire, now.line);
        let old_pos = timeout_pos(om, &op.wire, op.line).0;
        let name = &now.wire;
        let change = if is <= was * TIMEOUT_SHRINK_RATIO {
            Some((
                format!(
                    "the timeout of operation `{name}` shrank from {was} s to {is} s: calls that took longer now time out"
                ),
                "keep the timeout, or shrink it by less than half at a time",
                Severity::Error,
            ))
        } else if is * TIMEOUT_SHRINK_RATIO >= was {
            Some((
                format!(
                    "the timeout of operation `{name}` grew from {was} s to {is} s: callers with a shorter deadline of their own give up first"
                ),
                "tell the operation's callers to allow for the longer timeout",
                Severity::Warning,
            ))
        } else {
            None
        };
        if let Some((message, help, severity)) = change {
            sink.push(
                Code::TimeoutChanged,
                Level::Wire,
                pos,
                path,
                message,
                Some((old_pos, "the old timeout applies here")),
                help,
            );
            sink.set_last_severity(severity);
        }
    }
    for op in nm.operations.iter().filter(|n| !om.operations.iter().any(|o| o.wire == n.wire)) {
        sink.push(
            Code::SafeAddition,
            Level::Wire,
            operation_pos(nm, &op.wire, op.line),
            "",
            format!("new operation `{}`", op.wire),
            None,
            "nothing to do: a new operation breaks no consumer",
        );
    }
}

/// Requests `handler_routing` routed and no longer does: a key no route accepts any more, or
/// another strategy (the same keys then select by something else). A removed route's
/// operation is [`Code::OperationRemoved`]'s.
fn routing(sink: &mut Sink<'_>) {
    let (om, nm) = (sink.old, sink.new);
    let (Some(old), Some(new)) = (&om.contract.behaviour.routing, &nm.contract.behaviour.routing) else { return };
    if old.strategy != new.strategy {
        sink.push(
            Code::RoutingNarrowed,
            Level::Wire,
            new.pos,
            "handler_routing.routing_strategy",
            format!(
                "routing_strategy changed from {} to {}: requests are matched by something else",
                old.strategy.as_str(),
                new.strategy.as_str()
            ),
            Some((old.pos, "the old strategy")),
            "keep the strategy; route by the new one in a new major version",
        );
        return;
    }
    for route in &old.routes {
        let Some(now) = new.routes.iter().find(|r| r.operation == route.operation) else { continue };
        for key in route.accepts.iter().filter(|k| !new.routes.iter().any(|r| r.accepts.contains(k))) {
            sink.push(
                Code::RoutingNarrowed,
                Level::Wire,
                now.pos,
                "handler_routing.handlers",
                format!(
                    "route `{}` no longer accepts `{key}`: requests with it are refused as unroutable",
                    route.operation
                ),
                Some((route.pos, "the route accepted it here")),
                "keep accepting the key until no consumer sends it",
            );
        }
    }
}

fn topics(sink: &mut Sink<'_>) {
    let (om, nm) = (sink.old, sink.new);
    let none = Topics::default();
    let old = om.contract.behaviour.topics.as_ref().unwrap_or(&none);
    let new = nm.contract.behaviour.topics.as_ref().unwrap_or(&none);
    let lists: [(&str, &[Topic], &[Topic]); 3] = [
        ("subscribe_topics", &old.subscribe, &new.subscribe),
        ("publish_topics", &old.publish, &new.publish),
        ("dlq_topics", &old.dlq, &new.dlq),
    ];
    for (list, a, b) in lists {
        let removed: Vec<&Topic> = a.iter().filter(|t| !b.iter().any(|u| u.name == t.name)).collect();
        let added: Vec<&Topic> = b.iter().filter(|u| !a.iter().any(|t| t.name == u.name)).collect();
        // One topic out and one in of the same list reads as a rename.
        let renamed = match (removed.as_slice(), added.as_slice()) {
            ([_], [to]) => Some(*to),
            _ => None,
        };
        let path = format!("event_bus.{list}");
        for t in &removed {
            let pos = renamed
                .map(|r| r.pos)
                .or(b.first().map(|u| u.pos))
                .unwrap_or_else(|| anchor(&nm.contract, "event_bus"));
            let also = renamed.map_or_else(String::new, |r| format!(" or renamed to `{}`", r.name));
            sink.push(
                Code::TopicRemoved,
                Level::Wire,
                pos,
                &path,
                format!("topic `{}` was removed from {list}{also}", t.name),
                Some((t.pos, "the topic was here")),
                "keep the topic listed until every producer and consumer of it has moved; a new topic version (`.v2`) goes beside the old one",
            );
        }
        for u in added.iter().filter(|u| renamed.is_none_or(|r| r.name != u.name)) {
            sink.push(
                Code::SafeAddition,
                Level::Wire,
                u.pos,
                &path,
                format!("new topic `{}` in {list}", u.name),
                None,
                "nothing to do: a new topic breaks no consumer",
            );
        }
    }
}

fn state_machine(sink: &mut Sink<'_>) {
    let (om, nm) = (sink.old, sink.new);
    let Some(old) = &om.contract.behaviour.state_machine else { return };
    let new = nm.contract.behaviour.state_machine.as_ref();
    let section = anchor(&nm.contract, "state_machine");
    let states = new.map_or(&[][..], |m| &m.states[..]);
    let triggers = new.map_or(&[][..], |m| &m.triggers[..]);
    for s in old.states.iter().filter(|s| !states.iter().any(|t| t.name.value == s.name.value)) {
        sink.push(
            Code::StateRemoved,
            Level::Wire,
            states.first().map_or(section, |t| t.name.pos),
            "state_machine.states",
            format!("state `{}` was removed from the state machine", s.name.value),
            Some((s.name.pos, "the state was here")),
            "keep the state (unreachable, if need be) until no stored data or event names it",
        );
    }
    for t in old.triggers.iter().filter(|t| !triggers.iter().any(|u| u.wire == t.wire)) {
        sink.push(
            Code::TriggerRemoved,
            Level::Wire,
            triggers.first().map_or(section, |u| u.pos),
            "state_machine.transitions",
            format!("trigger `{}` was removed from the state machine", t.wire),
            Some((t.pos, "the trigger was used here")),
            "keep a transition on the trigger until no consumer sends it",
        );
    }
    let Some(new) = new else { return };
    for s in new.states.iter().filter(|s| !old.states.iter().any(|t| t.name.value == s.name.value)) {
        sink.push(
            Code::SafeAddition,
            Level::Wire,
            s.name.pos,
            "state_machine.states",
            format!("new state `{}`", s.name.value),
            None,
            "nothing to do: a new state breaks no consumer",
        );
    }
    for t in new.triggers.iter().filter(|t| !old.triggers.iter().any(|u| u.wire == t.wire)) {
        sink.push(
            Code::SafeAddition,
            Level::Wire,
            t.pos,
            "state_machine.transitions",
            format!("new trigger `{}`", t.wire),
            None,
            "nothing to do: a new trigger breaks no consumer",
        );
    }
}

/// The dependencies the generated `Dependencies` struct has a field for.
fn exposed(c: &Contract) -> impl Iterator<Item = &Dependency> {
    c.dependencies
        .iter()
        .filter(|d| matches!(d.kind, DependencyKind::Protocol | DependencyKind::Service) && d.rust_type.is_some())
}

fn dependencies(sink: &mut Sink<'_>) {
    let (om, nm) = (sink.old, sink.new);
    for d in exposed(&om.contract).filter(|d| !exposed(&nm.contract).any(|e| e.name.value == d.name.value)) {
        sink.push(
            Code::DependencyRemoved,
            Level::Source,
            anchor(&nm.contract, "dependencies"),
            "dependencies",
            format!(
                "dependency `{}` was removed: Rust code that builds or reads that field of the node's `Dependencies` no longer compiles",
                d.name.value
            ),
            Some((d.name.pos, "the dependency was here")),
            "keep the dependency (`required: false`) until callers stop providing it",
        );
    }
    for d in exposed(&nm.contract).filter(|d| d.required) {
        let before = exposed(&om.contract).find(|e| e.name.value == d.name.value);
        if before.is_some_and(|e| e.required) {
            continue;
        }
        let what = if before.is_some() { "became required" } else { "is new and required" };
        let old_pos = before.map_or_else(|| anchor(&om.contract, "dependencies"), |e| e.name.pos);
        sink.push(
            Code::DependencyRequired,
            Level::Source,
            d.name.pos,
            "dependencies",
            format!(
                "dependency `{}` {what}: creating the node fails where callers do not register it in the container",
                d.name.value
            ),
            Some((old_pos, if before.is_some() { "it was optional here" } else { "the baseline's dependencies" })),
            "make the dependency optional (`required: false`) and let the node answer without it, or require it in a new major version",
        );
    }
}
