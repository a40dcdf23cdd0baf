//! `handler_routing`: which handler method takes a request.
//!
//! Every entry of `handlers` is one or more routes, each a method of the node's handler trait
//! (an operation of the node, see [`crate::operations`]). What selects a route depends on
//! `routing_strategy`:
//!
//! - `operation_match`: the request's operation name; the entry's `operation`, and each of its
//!   `supported_operations` (a handler serving several operations gets one method per
//!   operation);
//! - `payload_type_match`: the payload's type tag; the entry's `payload_type`, `event_model`
//!   (its class name), `event_type`, all accepted, and `operation` when none of those is given.
//!   The route is named by the first of `payload_type`, `event_model`, `event_type`, `operation`;
//! - `topic_match`: the topic the request came from, the entry's `topic`.
//!
//! `default_handler` names the handler for requests that match no route: a class path
//! (`pkg.module:Class`, `pkg.module.Class` or `Class`) or a `handler_type`. When it names the
//! handler of a route, that route's method is the fallback; a class of no route gets its own
//! operation [`FALLBACK`]. Without one, an unmatched request is a `VALIDATION_ERROR`.
//!
//! Each route carries the settings of the `io_operations` entry that configures its operation
//! (`idempotent`, `input_fields`, `output_fields`; timeout and description go through the
//! operation itself).

use crate::diagnostics::{Code, Diagnostic, Pos};
use crate::read::{Node, Value};

/// The operation of a `default_handler` that is the handler of no route.
pub const FALLBACK: &str = "fallback";

/// How requests are matched to routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// By the request's operation name.
    OperationMatch,
    /// By the payload's type tag.
    PayloadTypeMatch,
    /// By the topic the request came from.
    TopicMatch,
}

impl Strategy {
    const ALL: [Strategy; 3] = [Strategy::OperationMatch, Strategy::PayloadTypeMatch, Strategy::TopicMatch];

    /// The contract's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::OperationMatch => "operation_match",
            Strategy::PayloadTypeMatch => "payload_type_match",
            Strategy::TopicMatch => "topic_match",
        }
    }

    /// The runtime's variant (`onex_runtime::node::routing::RoutingStrategy`).
    pub fn runtime_variant(self) -> &'static str {
        match self {
            Strategy::OperationMatch => "OperationMatch",
            Strategy::PayloadTypeMatch => "PayloadTypeMatch",
            Strategy::TopicMatch => "TopicMatch",
        }
    }

    /// The entry keys that give a route's keys, for hints.
    fn keys(self) -> &'static str {
        match self {
            Strategy::OperationMatch => "`operation` (or `supported_operations`)",
            Strategy::PayloadTypeMatch => "`payload_type`, `event_model`, `event_type` or `operation`",
            Strategy::TopicMatch => "`topic`",
        }
    }
}

/// The `io_operations` settings of a route's operation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IoSettings {
    /// `idempotent`, when given.
    pub idempotent: Option<bool>,
    /// `input_fields`.
    pub input_fields: Vec<String>,
    /// `output_fields`.
    pub output_fields: Vec<String>,
}

/// One route: an operation of the node and the keys that select it.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// The operation's name (the first key).
    pub operation: String,
    /// What the handler method's name is made of: the operation, an `event_model` class
    /// without its `Model` prefix, or a topic without its `onex.` prefix.
    pub method_base: String,
    /// Every key that selects the route, the operation first.
    pub accepts: Vec<String>,
    /// The handler class (`handler.name`).
    pub handler: String,
    /// `handler_type`, when given.
    pub handler_type: Option<String>,
    /// The entry's `description`.
    pub description: Option<String>,
    /// The settings of the `io_operations` entry of the operation, else the entry's own
    /// `output_fields`.
    pub io: IoSettings,
    /// Where the route's first key is.
    pub pos: Pos,
}

/// What takes requests that match no route.
#[derive(Debug, Clone, PartialEq)]
pub enum Fallback {
    /// The route with this operation.
    Route(String),
    /// A handler of no route: the node's operation [`FALLBACK`].
    Own {
        /// Its class.
        handler: String,
        /// Where `default_handler` is.
        pos: Pos,
    },
}

impl Fallback {
    /// The operation that takes unmatched requests.
    pub fn operation(&self) -> &str {
        match self {
            Fallback::Route(op) => op,
            Fallback::Own { .. } => FALLBACK,
        }
    }
}

/// What `handler_routing` says.
#[derive(Debug, Clone, PartialEq)]
pub struct Routing {
    /// `routing_strategy`.
    pub strategy: Strategy,
    /// The routes, in contract order.
    pub routes: Vec<Route>,
    /// `default_handler`.
    pub fallback: Option<Fallback>,
    /// `max_timeout_seconds`: the timeout of a routed operation its `io_operations` entry does not set.
    pub max_timeout_seconds: Option<f64>,
    /// Where `handler_routing` is.
    pub pos: Pos,
}

impl Routing {
    /// The node's operations: the routes', then [`FALLBACK`] when the default handler has its own.
    pub fn operations(&self) -> Vec<String> {
        let mut ops: Vec<String> = self.routes.iter().map(|r| r.operation.clone()).collect();
        if matches!(self.fallback, Some(Fallback::Own { .. })) {
            ops.push(FALLBACK.to_owned());
        }
        ops
    }
}

/// The operations `handler_routing` of `root` routes to, without reporting anything (dialect
/// normalization asks before validation); `None` when it routes nothing.
pub fn operations_in_tree(root: &Node) -> Option<Vec<String>> {
    let mut ignored = Vec::new();
    read("", root, &mut ignored).map(|r| r.operations())
}

/// Reads `handler_routing` from `root`, if present: `None` when absent or unusable (then
/// `diags` says why).
pub fn read(file: &str, root: &Node, diags: &mut Vec<Diagnostic>) -> Option<Routing> {
    let (key, section) = root.entry("handler_routing")?;
    if section.value == Value::Null {
        return None;
    }
    let mut r = Reader { file, diags, errors: 0 };
    let Some(_) = section.as_map() else {
        r.error(
            section.pos,
            "handler_routing",
            "`handler_routing` must be a mapping",
            "write `handler_routing: {routing_strategy: operation_match, handlers: [...]}`",
        );
        return None;
    };
    let strategy = r.strategy(section, key.pos);
    let entries = r.handlers(section, key.pos);
    let (Some(strategy), Some(entries)) = (strategy, entries) else { return None };
    let mut routes: Vec<Route> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        for route in r.entry_routes(strategy, entry, i) {
            r.add(&mut routes, route);
        }
    }
    r.execution_mode(section);
    let fallback = r.fallback(section, &routes);
    let max_timeout_seconds = section.get("max_timeout_seconds").and_then(seconds);
    let io = root.get("io_operations").and_then(Node::as_seq).unwrap_or_default();
    for route in &mut routes {
        if let Some(settings) =
            io.iter().find(|e| e.get("operation_type").and_then(Node::as_str) == Some(&route.operation))
        {
            let own_output = std::mem::take(&mut route.io.output_fields);
            route.io = io_settings(settings);
            if route.io.output_fields.is_empty() {
                route.io.output_fields = own_output;
            }
        }
    }
    (r.errors == 0).then_some(Routing { strategy, routes, fallback, max_timeout_seconds, pos: key.pos })
}

struct Reader<'a> {
    file: &'a str,
    diags: &'a mut Vec<Diagnostic>,
    errors: usize,
}

impl Reader<'_> {
    fn error(&mut self, pos: Pos, path: &str, message: impl Into<String>, hint: impl Into<String>) {
        self.errors += 1;
        self.diags.push(Diagnostic::error(Code::InvalidRouting, self.file, pos, path, message).with_hint(hint));
    }

    fn strategy(&mut self, section: &Node, pos: Pos) -> Option<Strategy> {
        let names = Strategy::ALL.map(Strategy::as_str).join(", ");
        let Some(node) = section.get("routing_strategy") else {
            self.error(
                pos,
                "handler_routing",
                "`handler_routing` has no `routing_strategy`",
                format!("add `routing_strategy:` with one of: {names}"),
            );
            return None;
        };
        let found = node.as_str().and_then(|text| Strategy::ALL.into_iter().find(|s| s.as_str() == text));
        if found.is_none() {
            let shown = node.as_str().map_or_else(|| node.type_name().to_owned(), |t| format!("`{t}`"));
            self.error(
                node.pos,
                "handler_routing.routing_strategy",
                format!("unknown routing_strategy {shown}"),
                format!("use one of: {names}"),
            );
        }
        found
    }

    fn handlers<'n>(&mut self, section: &'n Node, pos: Pos) -> Option<&'n [Node]> {
        let hint = "list one entry per handler: `handlers: [{operation: send, handler: {name: HandlerSend}}]`";
        match section.get("handlers") {
            None => {
                self.error(pos, "handler_routing", "`handler_routing` has no `handlers`", hint);
                None
            }
            Some(node) => match node.as_seq() {
                Some(items) if !items.is_empty() => Some(items),
                _ => {
                    let what = if node.as_seq().is_some() { "an empty list" } else { node.type_name() };
                    self.error(
                        node.pos,
                        "handler_routing.handlers",
                        format!("`handlers` must be a non-empty list, not {what}"),
                        hint,
                    );
                    None
                }
            },
        }
    }

    /// The routes of entry `i`: one per operation for `operation_match`, one otherwise.
    fn entry_routes(&mut self, strategy: Strategy, entry: &Node, i: usize) -> Vec<Route> {
        let path = format!("handler_routing.handlers[{i}]");
        if entry.as_map().is_none() {
            self.error(
                entry.pos,
                &path,
                format!("a handlers entry must be a mapping, not {}", entry.type_name()),
                format!("write `{{{}: …, handler: {{name: HandlerX}}}}`", first_key(strategy)),
            );
            return Vec::new();
        }
        let handler = match entry.get("handler") {
            Some(h) => h.as_str().map(class_of).or_else(|| h.get("name").and_then(Node::as_str).map(str::to_owned)),
            None => None,
        };
        let Some(handler) = handler.filter(|h| !h.is_empty()) else {
            let at = entry.get("handler").map_or(entry.pos, |h| h.pos);
            self.error(
                at,
                &format!("{path}.handler"),
                "a handlers entry must name its handler",
                "write `handler: {name: HandlerX, module: …}`",
            );
            return Vec::new();
        };
        let handler_type = entry
            .get("handler_type")
            .or_else(|| entry.get("handler").and_then(|h| h.get("handler_type")))
            .and_then(Node::as_str)
            .map(str::to_owned);
        let text = |key: &str| {
            entry.get(key).and_then(|n| n.as_str().filter(|s| !s.trim().is_empty()).map(|s| (s.to_owned(), n.pos)))
        };
        let event_model = entry.get("event_model").and_then(|m| {
            let name = m.as_str().map(class_of).or_else(|| m.get("name").and_then(Node::as_str).map(str::to_owned))?;
            (!name.is_empty()).then_some((name, m.pos))
        });
        let mut keys: Vec<(String, Pos, String)> = Vec::new(); // (key, where, method base)
        match strategy {
            Strategy::OperationMatch => {
                if let Some((op, pos)) = text("operation") {
                    keys.push((op.clone(), pos, op));
                }
                for item in entry.get("supported_operations").and_then(Node::as_seq).unwrap_or_default() {
                    if let Some(op) = item.as_str().filter(|s| !s.trim().is_empty())
                        && !keys.iter().any(|(k, ..)| k == op)
                    {
                        keys.push((op.to_owned(), item.pos, op.to_owned()));
                    }
                }
            }
            Strategy::PayloadTypeMatch => {
                let mut tags = Vec::new();
                if let Some((t, pos)) = text("payload_type") {
                    tags.push((t.clone(), pos, t));
                }
                if let Some((model, pos)) = event_model {
                    let base = model.strip_prefix("Model").filter(|b| !b.is_empty()).unwrap_or(&model).to_owned();
                    tags.push((model, pos, base));
                }
                if let Some((t, pos)) = text("event_type") {
                    tags.push((t.clone(), pos, t));
                }
                if tags.is_empty()
                    && let Some((op, pos)) = text("operation")
                {
                    tags.push((op.clone(), pos, op));
                }
                let mut accepts: Vec<String> = Vec::new();
                for (t, ..) in &tags {
                    if !accepts.contains(t) {
                        accepts.push(t.clone());
                    }
                }
                if let Some((first, pos, base)) = tags.into_iter().next() {
                    return vec![route(first, base, accepts, pos, &handler, handler_type, entry)];
                }
            }
            Strategy::TopicMatch => {
                if let Some((topic, pos)) = text("topic") {
                    let base = topic.strip_prefix("onex.").unwrap_or(&topic).to_owned();
                    keys.push((topic, pos, base));
                }
            }
        }
        if keys.is_empty() {
            self.error(
                entry.pos,
                &path,
                format!("this `{}` entry has no key to match: it needs {}", strategy.as_str(), strategy.keys()),
                format!("add `{}: …` to the entry of `{handler}`", first_key(strategy)),
            );
        }
        keys.into_iter()
            .map(|(key, pos, base)| route(key.clone(), base, vec![key], pos, &handler, handler_type.clone(), entry))
            .collect()
    }

    /// Adds `route` unless one of its keys is taken (reported with both places).
    fn add(&mut self, routes: &mut Vec<Route>, route: Route) {
        for key in &route.accepts {
            if let Some(first) = routes.iter().find(|r| r.accepts.contains(key)) {
                self.errors += 1;
                self.diags.push(
                    Diagnostic::error(
                        Code::DuplicateRoute,
                        self.file,
                        route.pos,
                        "handler_routing.handlers",
                        format!("`{key}` is routed twice: to `{}` and to `{}`", first.handler, route.handler),
                    )
                    .with_related(self.file, first.pos, "first routed here")
                    .with_hint("keep one entry per key"),
                );
                return;
            }
        }
        routes.push(route);
    }

    /// Reports an `execution_mode` the generated dispatch does not follow: it sends a request
    /// to exactly one handler.
    fn execution_mode(&mut self, section: &Node) {
        let Some(mode) = section.get("execution_mode") else { return };
        if let Some(text) = mode.as_str()
            && !matches!(text, "single" | "sequential")
        {
            self.diags.push(
                Diagnostic::warning(Code::InvalidRouting, self.file, mode.pos, "handler_routing.execution_mode", format!("execution_mode `{text}` is not supported: the node sends each request to the one handler its key selects"))
                    .with_hint("use `execution_mode: single`, or fan out inside the handler method"),
            );
        }
    }

    fn fallback(&mut self, section: &Node, routes: &[Route]) -> Option<Fallback> {
        let node = section.get("default_handler")?;
        let text =
            node.as_str().map(str::to_owned).or_else(|| node.get("name").and_then(Node::as_str).map(str::to_owned));
        let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
            self.error(
                node.pos,
                "handler_routing.default_handler",
                format!("`default_handler` must name a handler, not {}", node.type_name()),
                "write `default_handler: pkg.module:HandlerX` or a `handler_type` of the list",
            );
            return None;
        };
        let class = class_of(&text);
        if let Some(route) =
            routes.iter().find(|r| r.handler == class || r.handler_type.as_deref() == Some(text.as_str()))
        {
            return Some(Fallback::Route(route.operation.clone()));
        }
        let is_class_path = text.contains([':', '.']) || text.starts_with(|c: char| c.is_ascii_uppercase());
        if is_class_path {
            return Some(Fallback::Own { handler: class, pos: node.pos });
        }
        let known: Vec<String> = routes
            .iter()
            .flat_map(|r| std::iter::once(r.handler.clone()).chain(r.handler_type.clone()))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        self.error(
            node.pos,
            "handler_routing.default_handler",
            format!("`default_handler` names `{text}`, which is neither a handler nor a handler_type of the list"),
            format!("name one of: {}, or a class path `pkg.module:HandlerX`", known.join(", ")),
        );
        None
    }
}

fn route(
    operation: String,
    base: String,
    accepts: Vec<String>,
    pos: Pos,
    handler: &str,
    handler_type: Option<String>,
    entry: &Node,
) -> Route {
    Route {
        operation,
        method_base: base,
        accepts,
        handler: handler.to_owned(),
        handler_type,
        description: entry.get("description").and_then(Node::as_str).map(|d| d.trim().to_owned()),
        io: IoSettings { output_fields: strings(entry.get("output_fields")), ..IoSettings::default() },
        pos,
    }
}

fn first_key(strategy: Strategy) -> &'static str {
    match strategy {
        Strategy::OperationMatch => "operation",
        Strategy::PayloadTypeMatch => "payload_type",
        Strategy::TopicMatch => "topic",
    }
}

/// `pkg.module:Class`, `pkg.module.Class` or `Class` → `Class`.
fn class_of(path: &str) -> String {
    let path = path.trim();
    let tail = path.rsplit_once(':').map_or(path, |(_, class)| class);
    tail.rsplit_once('.').map_or(tail, |(_, class)| class).to_owned()
}

fn seconds(node: &Node) -> Option<f64> {
    let s = match node.value {
        Value::Int(i) => i as f64,
        Value::Float(f) => f,
        _ => return None,
    };
    (s > 0.0 && s <= 86_400.0).then_some(s)
}

fn strings(node: Option<&Node>) -> Vec<String> {
    node.and_then(Node::as_seq).unwrap_or_default().iter().filter_map(|i| i.as_str().map(str::to_owned)).collect()
}

fn io_settings(entry: &Node) -> IoSettings {
    IoSettings {
        idempotent: entry.get("idempotent").and_then(|n| if let Value::Bool(b) = n.value { Some(b) } else { None }),
        input_fields: strings(entry.get("input_fields")),
        output_fields: strings(entry.get("output_fields")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routing(section: &str) -> (Option<Routing>, Vec<Diagnostic>) {
        let mut diags = Vec::new();
        let root = crate::read::parse("c.yaml", section, &mut diags).expect("test YAML parses");
        (read("c.yaml", &root, &mut diags), diags)
    }

    #[test]
    fn the_corpus_forms_of_an_entry() {
        // `supported_operations` repeating `operation`, a handler_type named by default_handler
        // (node_registration_storage_effect), a string handler path.
        let (r, diags) = routing(
            "handler_routing:\n  routing_strategy: operation_match\n  default_handler: postgresql\n  handlers:\n    \
             - {operation: a.x, supported_operations: [a.x], handler_type: postgresql, handler: {name: HandlerPg}}\n    \
             - {operation: b, handler: 'pkg.handlers.handler_b:HandlerB'}\n",
        );
        assert!(diags.is_empty(), "{diags:?}");
        let r = r.unwrap();
        assert_eq!(r.operations(), ["a.x", "b"]);
        assert_eq!(r.routes[0].accepts, ["a.x"]);
        assert_eq!(r.routes[1].handler, "HandlerB");
        assert_eq!(r.fallback, Some(Fallback::Route("a.x".to_owned())));
    }

    #[test]
    fn a_payload_route_accepts_every_tag_and_is_named_by_the_first() {
        let (r, diags) = routing(
            "handler_routing:\n  routing_strategy: payload_type_match\n  handlers:\n    \
             - {event_model: pkg.models.ModelNodeHeartbeat, event_type: platform.node-heartbeat, handler: {name: H}}\n    \
             - {operation: register_node, handler: {name: G}}\n",
        );
        assert!(diags.is_empty(), "{diags:?}");
        let r = r.unwrap();
        assert_eq!(r.routes[0].operation, "ModelNodeHeartbeat");
        assert_eq!(r.routes[0].method_base, "NodeHeartbeat");
        assert_eq!(r.routes[0].accepts, ["ModelNodeHeartbeat", "platform.node-heartbeat"]);
        assert_eq!(r.routes[1].accepts, ["register_node"]);
    }

    #[test]
    fn a_default_class_of_no_route_gets_its_own_operation() {
        let (r, _) = routing(
            "handler_routing:\n  routing_strategy: topic_match\n  default_handler: pkg.mod.HandlerOther\n  handlers:\n    \
             - {topic: onex.evt.a.b.v1, handler: {name: H}}\n",
        );
        let r = r.unwrap();
        assert_eq!(r.operations(), ["onex.evt.a.b.v1", FALLBACK]);
        assert_eq!(r.routes[0].method_base, "evt.a.b.v1");
        assert!(matches!(&r.fallback, Some(Fallback::Own { handler, .. }) if handler == "HandlerOther"));
    }

    #[test]
    fn no_section_routes_nothing() {
        assert_eq!(routing("node_type: COMPUTE\n").0, None);
        assert_eq!(routing("handler_routing: ~\n").0, None);
    }
}
