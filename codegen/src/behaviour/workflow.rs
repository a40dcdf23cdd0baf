//! `workflow_coordination`: an orchestrator's steps, their dependencies and the rules that
//! coordinate them, read into a [`Workflow`] whose steps are in topological layers.
//!
//! The section has the same shape in our dialect and in the 2026 one:
//!
//! ```yaml
//! workflow_coordination:
//!   workflow_definition:
//!     workflow_metadata: {workflow_name, workflow_version: {major, minor, patch}, description, execution_mode}
//!     execution_graph:
//!       nodes: [{node_id, node_type, node_name, description, depends_on: [ids], target_node_type, timeout_ms}]
//!       edges: [{from_node, to_node}]          # each also makes to_node depend on from_node
//!     coordination_rules: {execution_mode, parallel_execution_allowed, max_parallel_steps,
//!                          failure_recovery_strategy, allow_partial_completion, max_retries,
//!                          retry_backoff_ms, retry_backoff_multiplier, timeout_ms, step_timeout_ms}
//! ```
//!
//! Invariants of a [`Workflow`] returned by [`read`]:
//! - it has at least one and at most [`MAX_STEPS`] steps; step ids are unique and so are their
//!   Rust variant names;
//! - every dependency is the index of another step, listed once, and the graph has no cycle;
//! - [`Workflow::layers`] lists every step once; a step's dependencies are all in earlier
//!   layers; a layer lists its steps in contract order;
//! - [`Workflow::max_concurrency`] is 1 in sequential mode and at least 1 otherwise.
//!
//! Any problem is a located diagnostic and the section reads as `None`. Keys not listed above
//! (`step_config`, `metadata`, `checkpoint_enabled`, …) stay in the tree, unused.

use std::collections::BTreeMap;

use crate::diagnostics::{Code, Diagnostic, Pos};
use crate::naming::variant_ident;
use crate::read::{Node, Value};
use crate::validate::{Kind, Spanned, join};

/// The most steps a workflow may have (the runtime's limit).
pub const MAX_STEPS: usize = 1024;
/// The most retries of one step.
pub const MAX_RETRIES: i64 = 100;
/// The longest timeout or backoff, in milliseconds (one day).
pub const MAX_MILLIS: i64 = 86_400_000;

const SECTION: &str = "workflow_coordination";
const MODES: &str = "sequential, parallel";
const STRATEGIES: &str = "fail_fast, retry, continue";

/// How many steps run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionMode {
    /// One at a time (the default).
    Sequential,
    /// Ready steps together, up to the limit.
    Parallel,
}

/// What a step that failed for good does to the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Stop everything (the default).
    FailFast,
    /// Skip only the failed step's dependents.
    ContinueIndependent,
}

/// One step (`execution_graph.nodes[]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// `node_id`.
    pub id: Spanned<String>,
    /// The Rust variant of the `Step` enum.
    pub variant: String,
    /// `node_name`: a display name.
    pub name: Option<String>,
    /// `node_type`, with or without `_GENERIC`.
    pub kind: Option<Kind>,
    /// `description`.
    pub description: Option<String>,
    /// `target_node_type`: the node class that carries the step out.
    pub target: Option<String>,
    /// Indices of the steps this one waits for, in the order first named.
    pub depends_on: Vec<usize>,
    /// `timeout_ms` of the step, else `coordination_rules.step_timeout_ms`.
    pub timeout_ms: Option<u64>,
}

/// What `workflow_coordination` says.
#[derive(Debug, Clone, PartialEq)]
pub struct Workflow {
    /// `workflow_metadata.workflow_name`.
    pub name: Option<String>,
    /// `workflow_metadata.workflow_version`.
    pub version: Option<(u32, u32, u32)>,
    /// `workflow_metadata.description`.
    pub description: Option<String>,
    /// The steps, in contract order.
    pub steps: Vec<Step>,
    /// Step indices by topological layer.
    pub layers: Vec<Vec<usize>>,
    /// Sequential or parallel.
    pub mode: ExecutionMode,
    /// Steps in flight at once.
    pub max_concurrency: usize,
    /// The failure rule.
    pub on_failure: OnFailure,
    /// `max_retries` (0 when absent).
    pub max_retries: u32,
    /// `retry_backoff_ms` (0 when absent).
    pub retry_backoff_ms: u64,
    /// `retry_backoff_multiplier` (1 when absent).
    pub retry_backoff_multiplier: f64,
    /// `timeout_ms`: the whole run.
    pub timeout_ms: Option<u64>,
}

/// Reads `workflow_coordination` from `root`, if present.
pub fn read(file: &str, root: &Node, diags: &mut Vec<Diagnostic>) -> Option<Workflow> {
    let section = root.get(SECTION)?;
    let mut r = Reader { file, diags, errors: 0 };
    let workflow = r.workflow(section);
    if r.errors > 0 { None } else { workflow }
}

struct Reader<'a> {
    file: &'a str,
    diags: &'a mut Vec<Diagnostic>,
    errors: usize,
}

/// A dependency as written: the step it names and where.
struct Edge {
    on: usize,
    pos: Pos,
    path: String,
}

impl Reader<'_> {
    fn error(&mut self, code: Code, pos: Pos, path: &str, message: String, hint: &str) -> &mut Diagnostic {
        self.errors += 1;
        self.diags.push(Diagnostic::error(code, self.file, pos, path, message).with_hint(hint));
        self.diags.last_mut().expect("just pushed")
    }

    fn wrong_type(&mut self, node: &Node, path: &str, expected: &str, example: &str) {
        self.error(
            Code::WrongType,
            node.pos,
            path,
            format!("`{path}` must be {expected}, found {}", node.type_name()),
            &format!("write it as {example}"),
        );
    }

    fn map<'n>(&mut self, node: &'n Node, path: &str, example: &str) -> Option<&'n Node> {
        if node.as_map().is_some() {
            Some(node)
        } else {
            self.wrong_type(node, path, "a mapping", example);
            None
        }
    }

    fn required<'n>(&mut self, map: &'n Node, parent: &str, key: &str, example: &str) -> Option<&'n Node> {
        let found = map.get(key);
        if found.is_none() {
            self.error(
                Code::MissingKey,
                map.pos,
                &join(parent, key),
                format!("`{parent}` has no `{key}`"),
                &format!("add `{key}: {example}`"),
            );
        }
        found
    }

    fn string(&mut self, node: &Node, path: &str) -> Option<Spanned<String>> {
        match &node.value {
            Value::Str(s) => Some(Spanned { value: s.clone(), pos: node.pos }),
            // A plain scalar such as `123` or `true` is still a usable id or name.
            Value::Int(i) => Some(Spanned { value: i.to_string(), pos: node.pos }),
            _ => {
                self.wrong_type(node, path, "a string", "\"...\"");
                None
            }
        }
    }

    fn optional_string(&mut self, map: &Node, parent: &str, key: &str) -> Option<Spanned<String>> {
        let node = map.get(key)?;
        self.string(node, &join(parent, key))
    }

    fn optional_bool(&mut self, map: &Node, parent: &str, key: &str) -> Option<Spanned<bool>> {
        let node = map.get(key)?;
        match node.value {
            Value::Bool(b) => Some(Spanned { value: b, pos: node.pos }),
            _ => {
                self.wrong_type(node, &join(parent, key), "true or false", "`true` or `false`");
                None
            }
        }
    }

    /// An integer `key` of `map` within `min..=max`.
    fn optional_int(&mut self, map: &Node, parent: &str, key: &str, min: i64, max: i64) -> Option<Spanned<i64>> {
        let node = map.get(key)?;
        let path = join(parent, key);
        let Value::Int(value) = node.value else {
            self.wrong_type(node, &path, "an integer", &format!("`{min}`"));
            return None;
        };
        if !(min..=max).contains(&value) {
            self.error(
                Code::WorkflowRule,
                node.pos,
                &path,
                format!("`{key}` must be between {min} and {max}, found {value}"),
                &format!("use a whole number from {min} to {max}"),
            );
            return None;
        }
        Some(Spanned { value, pos: node.pos })
    }

    fn optional_millis(&mut self, map: &Node, parent: &str, key: &str) -> Option<u64> {
        self.optional_int(map, parent, key, 1, MAX_MILLIS).map(|v| v.value.unsigned_abs())
    }

    fn workflow(&mut self, section: &Node) -> Option<Workflow> {
        let section = self.map(section, SECTION, "`{workflow_definition: {execution_graph: {nodes: [...]}}}`")?;
        let def_path = join(SECTION, "workflow_definition");
        let definition = self.required(section, SECTION, "workflow_definition", "{execution_graph: {nodes: [...]}}")?;
        let definition = self.map(definition, &def_path, "`{execution_graph: {nodes: [...]}}`")?;

        let meta_path = join(&def_path, "workflow_metadata");
        let meta = definition.get("workflow_metadata").and_then(|m| self.map(m, &meta_path, "`{workflow_name: x}`"));
        let name = meta.and_then(|m| self.optional_string(m, &meta_path, "workflow_name")).map(|s| s.value);
        let description = meta.and_then(|m| self.optional_string(m, &meta_path, "description")).map(|s| s.value);
        let version = meta.and_then(|m| m.get("workflow_version")).and_then(|v| self.version(v, &meta_path));
        let meta_mode = meta.and_then(|m| self.mode(m, &meta_path));

        let graph_path = join(&def_path, "execution_graph");
        let graph = self.required(definition, &def_path, "execution_graph", "{nodes: [...]}")?;
        let graph = self.map(graph, &graph_path, "`{nodes: [{node_id: first}]}`")?;
        let rules_path = join(&def_path, "coordination_rules");
        let rules = definition
            .get("coordination_rules")
            .and_then(|r| self.map(r, &rules_path, "`{execution_mode: sequential}`"));

        let step_timeout = rules.and_then(|r| self.optional_millis(r, &rules_path, "step_timeout_ms"));
        let (mut steps, edges) = self.steps(graph, &graph_path, step_timeout)?;
        let coordination = self.coordination(rules, &rules_path, meta_mode, steps.len());
        let layers = self.layers(&mut steps, &edges, &graph_path)?;
        let coordination = coordination?;
        Some(Workflow {
            name,
            version,
            description,
            steps,
            layers,
            mode: coordination.mode,
            max_concurrency: coordination.max_concurrency,
            on_failure: coordination.on_failure,
            max_retries: coordination.max_retries,
            retry_backoff_ms: coordination.retry_backoff_ms,
            retry_backoff_multiplier: coordination.retry_backoff_multiplier,
            timeout_ms: coordination.timeout_ms,
        })
    }

    fn version(&mut self, node: &Node, meta_path: &str) -> Option<(u32, u32, u32)> {
        let path = join(meta_path, "workflow_version");
        if let Some(text) = node.as_str() {
            let parts: Vec<Option<u32>> = text.split('.').map(|p| p.parse().ok()).collect();
            if let [Some(a), Some(b), Some(c)] = parts[..] {
                return Some((a, b, c));
            }
        }
        let part = |key: &str| match node.get(key).map(|n| &n.value) {
            Some(Value::Int(i)) => u32::try_from(*i).ok(),
            _ => None,
        };
        match (part("major"), part("minor"), part("patch")) {
            (Some(a), Some(b), Some(c)) => Some((a, b, c)),
            _ => {
                self.wrong_type(node, &path, "a version", "`{major: 1, minor: 0, patch: 0}`");
                None
            }
        }
    }

    fn mode(&mut self, map: &Node, parent: &str) -> Option<Spanned<ExecutionMode>> {
        let text = self.optional_string(map, parent, "execution_mode")?;
        let mode = match text.value.to_ascii_lowercase().as_str() {
            "sequential" => ExecutionMode::Sequential,
            "parallel" => ExecutionMode::Parallel,
            other => {
                let path = join(parent, "execution_mode");
                self.error(
                    Code::WorkflowRule,
                    text.pos,
                    &path,
                    format!("unknown execution mode `{other}`"),
                    &format!("use one of: {MODES}"),
                );
                return None;
            }
        };
        Some(Spanned { value: mode, pos: text.pos })
    }

    /// The steps and, for each, its dependencies as written (unresolved ones already reported).
    fn steps(
        &mut self,
        graph: &Node,
        graph_path: &str,
        step_timeout: Option<u64>,
    ) -> Option<(Vec<Step>, Vec<Vec<Edge>>)> {
        let nodes_path = join(graph_path, "nodes");
        let nodes = self.required(graph, graph_path, "nodes", "[{node_id: first}]")?;
        let Some(items) = nodes.as_seq() else {
            self.wrong_type(
                nodes,
                &nodes_path,
                "a list of steps",
                "`[{node_id: first}, {node_id: second, depends_on: [first]}]`",
            );
            return None;
        };
        if items.is_empty() {
            self.error(
                Code::WorkflowNoSteps,
                nodes.pos,
                &nodes_path,
                "the workflow has no steps".to_owned(),
                "list at least one step (`- node_id: first`), or remove `workflow_coordination`",
            );
            return None;
        }
        if items.len() > MAX_STEPS {
            self.error(
                Code::WorkflowRule,
                nodes.pos,
                &nodes_path,
                format!("the workflow has {} steps; at most {MAX_STEPS} are supported", items.len()),
                "split the workflow into smaller ones",
            );
            return None;
        }
        let mut steps: Vec<Step> = Vec::new();
        // Per step, the dependency names as written, with where and at what path.
        let mut written: Vec<Vec<(Spanned<String>, String)>> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("{nodes_path}[{i}]");
            let Some(item) = self.map(item, &path, "`{node_id: first, depends_on: []}`") else { continue };
            let id =
                self.required(item, &path, "node_id", "first").and_then(|n| self.string(n, &join(&path, "node_id")));
            let name = self.optional_string(item, &path, "node_name").map(|s| s.value);
            let description = self.optional_string(item, &path, "description").map(|s| s.value);
            let target = self.optional_string(item, &path, "target_node_type").map(|s| s.value);
            let kind = self.step_kind(item, &path);
            let timeout_ms = self.optional_millis(item, &path, "timeout_ms").or(step_timeout);
            let deps = self.names(item, &path, "depends_on");
            let Some(id) = id else { continue };
            if let Some(first) = steps.iter().find(|s| s.id.value == id.value) {
                let (first, file) = (first.id.pos, self.file.to_owned());
                self.error(
                    Code::WorkflowDuplicateStep,
                    id.pos,
                    &join(&path, "node_id"),
                    format!("two steps have the id `{}`", id.value),
                    "give each step its own `node_id`",
                )
                .related
                .push(crate::diagnostics::Related {
                    file,
                    pos: first,
                    message: "first defined here".to_owned(),
                });
                continue;
            }
            let variant = variant_ident(&id.value);
            if let Some(other) = steps.iter().find(|s| s.variant == variant) {
                let (other_id, other_pos) = (other.id.value.clone(), other.id.pos);
                let file = self.file.to_owned();
                self.error(
                    Code::NameCollision,
                    id.pos,
                    &join(&path, "node_id"),
                    format!("steps `{other_id}` and `{}` both become the Rust variant `Step::{variant}`", id.value),
                    "rename one of the two steps so their ids differ by more than case and punctuation",
                )
                .related
                .push(crate::diagnostics::Related {
                    file,
                    pos: other_pos,
                    message: format!("`{other_id}` is here"),
                });
                continue;
            }
            steps.push(Step { id, variant, name, kind, description, target, depends_on: Vec::new(), timeout_ms });
            written.push(deps);
        }
        // `edges` add dependencies too: `to_node` waits for `from_node`.
        let mut extra: Vec<(String, Spanned<String>, String)> = Vec::new();
        if let Some(edges) = graph.get("edges") {
            let edges_path = join(graph_path, "edges");
            match edges.as_seq() {
                None => {
                    self.wrong_type(edges, &edges_path, "a list of edges", "`[{from_node: first, to_node: second}]`")
                }
                Some(list) => {
                    for (i, edge) in list.iter().enumerate() {
                        let path = format!("{edges_path}[{i}]");
                        let Some(edge) = self.map(edge, &path, "`{from_node: first, to_node: second}`") else {
                            continue;
                        };
                        let from = self
                            .required(edge, &path, "from_node", "first")
                            .and_then(|n| self.string(n, &join(&path, "from_node")));
                        let to = self
                            .required(edge, &path, "to_node", "second")
                            .and_then(|n| self.string(n, &join(&path, "to_node")));
                        if let (Some(from), Some(to)) = (from, to) {
                            extra.push((to.value.clone(), from, join(&path, "from_node")));
                            // The `to` end must name a step as well.
                            if !steps.iter().any(|s| s.id.value == to.value) {
                                self.unknown(&steps, &to, &join(&path, "to_node"));
                            }
                        }
                    }
                }
            }
        }
        let index: BTreeMap<&str, usize> = steps.iter().enumerate().map(|(i, s)| (s.id.value.as_str(), i)).collect();
        let mut edges: Vec<Vec<Edge>> = (0..steps.len()).map(|_| Vec::new()).collect();
        let mut resolve =
            |me: &mut Self, step: usize, dep: &Spanned<String>, path: &str| match index.get(dep.value.as_str()) {
                Some(&on) if !edges[step].iter().any(|e| e.on == on) => {
                    edges[step].push(Edge { on, pos: dep.pos, path: path.to_owned() })
                }
                Some(_) => {}
                None => me.unknown(&steps, dep, path),
            };
        for (step, deps) in written.iter().enumerate() {
            for (dep, path) in deps {
                resolve(self, step, dep, path);
            }
        }
        for (to, from, path) in &extra {
            if let Some(&step) = index.get(to.as_str()) {
                resolve(self, step, from, path);
            }
        }
        Some((steps, edges))
    }

    fn unknown(&mut self, steps: &[Step], name: &Spanned<String>, path: &str) {
        let known: Vec<&str> = steps.iter().map(|s| s.id.value.as_str()).collect();
        self.error(
            Code::WorkflowUnknownStep,
            name.pos,
            path,
            format!("no step has the id `{}`", name.value),
            &format!("use the `node_id` of a step: {}", known.join(", ")),
        );
    }

    /// A list of step ids (`depends_on`), each with its path.
    fn names(&mut self, map: &Node, parent: &str, key: &str) -> Vec<(Spanned<String>, String)> {
        let Some(node) = map.get(key) else { return Vec::new() };
        let path = join(parent, key);
        let Some(items) = node.as_seq() else {
            self.wrong_type(node, &path, "a list of step ids", "`[first, second]`");
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let item_path = format!("{path}[{i}]");
                self.string(item, &item_path).map(|s| (s, item_path))
            })
            .collect()
    }

    fn step_kind(&mut self, item: &Node, path: &str) -> Option<Kind> {
        let text = self.optional_string(item, path, "node_type")?;
        let upper = text.value.to_ascii_uppercase();
        let bare = upper.strip_suffix("_GENERIC").unwrap_or(&upper);
        let kind =
            [Kind::Effect, Kind::Compute, Kind::Reducer, Kind::Orchestrator].into_iter().find(|k| k.upper() == bare);
        if kind.is_none() {
            self.error(
                Code::WorkflowRule,
                text.pos,
                &join(path, "node_type"),
                format!("unknown step node_type `{}`", text.value),
                "use one of EFFECT, COMPUTE, REDUCER, ORCHESTRATOR (a `_GENERIC` suffix is allowed)",
            );
        }
        kind
    }

    fn coordination(
        &mut self,
        rules: Option<&Node>,
        path: &str,
        meta_mode: Option<Spanned<ExecutionMode>>,
        step_count: usize,
    ) -> Option<Coordination> {
        let errors_before = self.errors;
        let empty = Node { value: Value::Map(Vec::new()), pos: Pos::new(1, 1) };
        let rules = rules.unwrap_or(&empty);
        let rules_mode = self.mode(rules, path);
        let allowed = self.optional_bool(rules, path, "parallel_execution_allowed");
        let limit = self.limit(rules, path);
        let strategy = self.optional_string(rules, path, "failure_recovery_strategy");
        let partial = self.optional_bool(rules, path, "allow_partial_completion");
        let max_retries = self.optional_int(rules, path, "max_retries", 0, MAX_RETRIES);
        let backoff = self.optional_int(rules, path, "retry_backoff_ms", 0, MAX_MILLIS);
        let multiplier = self.multiplier(rules, path);
        let timeout_ms = self.optional_millis(rules, path, "timeout_ms");

        if let (Some(a), Some(b)) = (&meta_mode, &rules_mode)
            && a.value != b.value
        {
            let file = self.file.to_owned();
            self.error(
                Code::WorkflowRule,
                b.pos,
                &join(path, "execution_mode"),
                "`coordination_rules.execution_mode` contradicts `workflow_metadata.execution_mode`".to_owned(),
                "give the execution mode once, in `coordination_rules`",
            )
            .related
            .push(crate::diagnostics::Related {
                file,
                pos: a.pos,
                message: "the other execution mode".to_owned(),
            });
        }
        let explicit = rules_mode.or(meta_mode);
        let mode = match (&explicit, &allowed) {
            (Some(m), Some(a)) if m.value == ExecutionMode::Parallel && !a.value => {
                self.error(
                    Code::WorkflowRule,
                    a.pos,
                    &join(path, "parallel_execution_allowed"),
                    "`execution_mode: parallel` with `parallel_execution_allowed: false`".to_owned(),
                    "choose one: `execution_mode: sequential`, or allow parallel execution",
                );
                ExecutionMode::Sequential
            }
            (Some(m), _) => m.value,
            (None, Some(a)) if a.value => ExecutionMode::Parallel,
            _ => ExecutionMode::Sequential,
        };
        let max_concurrency = match (mode, &limit) {
            (ExecutionMode::Sequential, Some((l, key))) if l.value > 1 => {
                self.error(
                    Code::WorkflowRule,
                    l.pos,
                    &join(path, key),
                    format!("a sequential workflow cannot run {} steps at once", l.value),
                    "remove the limit, set it to 1, or make the workflow `execution_mode: parallel`",
                );
                1
            }
            (ExecutionMode::Sequential, _) => 1,
            (ExecutionMode::Parallel, Some((l, _))) => l.value.unsigned_abs() as usize,
            (ExecutionMode::Parallel, None) => step_count.max(1),
        };
        let on_failure = match strategy {
            None => self.partial_rule(partial.as_ref(), None, path),
            Some(s) => match s.value.to_ascii_lowercase().as_str() {
                "fail_fast" => self.partial_rule(partial.as_ref(), Some((OnFailure::FailFast, &s)), path),
                "continue" => self.partial_rule(partial.as_ref(), Some((OnFailure::ContinueIndependent, &s)), path),
                "retry" => self.partial_rule(partial.as_ref(), None, path),
                other => {
                    self.error(
                        Code::WorkflowRule,
                        s.pos,
                        &join(path, "failure_recovery_strategy"),
                        format!("unknown failure recovery strategy `{other}`"),
                        &format!("use one of: {STRATEGIES}"),
                    );
                    OnFailure::FailFast
                }
            },
        };
        if self.errors > errors_before {
            return None;
        }
        Some(Coordination {
            mode,
            max_concurrency,
            on_failure,
            max_retries: max_retries.map_or(0, |r| r.value.unsigned_abs() as u32),
            retry_backoff_ms: backoff.map_or(0, |b| b.value.unsigned_abs()),
            retry_backoff_multiplier: multiplier.unwrap_or(1.0),
            timeout_ms,
        })
    }

    /// `max_parallel_steps` or its synonym `max_parallel_branches`; both must agree.
    fn limit(&mut self, rules: &Node, path: &str) -> Option<(Spanned<i64>, &'static str)> {
        let steps = self.optional_int(rules, path, "max_parallel_steps", 1, MAX_STEPS as i64);
        let branches = self.optional_int(rules, path, "max_parallel_branches", 1, MAX_STEPS as i64);
        if let (Some(s), Some(b)) = (&steps, &branches)
            && s.value != b.value
        {
            self.error(
                Code::WorkflowRule,
                b.pos,
                &join(path, "max_parallel_branches"),
                format!("`max_parallel_branches: {}` contradicts `max_parallel_steps: {}`", b.value, s.value),
                "keep one of the two limits",
            );
        }
        steps.map(|s| (s, "max_parallel_steps")).or(branches.map(|b| (b, "max_parallel_branches")))
    }

    fn multiplier(&mut self, rules: &Node, path: &str) -> Option<f64> {
        let node = rules.get("retry_backoff_multiplier")?;
        let key = join(path, "retry_backoff_multiplier");
        let value = match node.value {
            Value::Int(i) => i as f64,
            Value::Float(f) => f,
            _ => {
                self.wrong_type(node, &key, "a number", "`2.0`");
                return None;
            }
        };
        if !(1.0..=10.0).contains(&value) {
            self.error(
                Code::WorkflowRule,
                node.pos,
                &key,
                format!("`{key}` must be between 1 and 10, found {value}"),
                "use 1 for a constant pause, 2 to double it at each retry",
            );
            return None;
        }
        Some(value)
    }

    /// The failure rule: the strategy's own (`fail_fast`, `continue`) when it has one, else
    /// `allow_partial_completion` (true: continue independent branches), else fail fast.
    fn partial_rule(
        &mut self,
        partial: Option<&Spanned<bool>>,
        strategy: Option<(OnFailure, &Spanned<String>)>,
        path: &str,
    ) -> OnFailure {
        let from_partial = partial.map(|p| if p.value { OnFailure::ContinueIndependent } else { OnFailure::FailFast });
        match (strategy, from_partial) {
            (Some((rule, s)), Some(other)) if rule != other => {
                let p = partial.expect("from_partial is Some").pos;
                let file = self.file.to_owned();
                self.error(
                    Code::WorkflowRule,
                    p,
                    &join(path, "allow_partial_completion"),
                    format!("`allow_partial_completion` contradicts `failure_recovery_strategy: {}`", s.value),
                    "drop `allow_partial_completion`; the strategy decides what a failure stops",
                )
                .related
                .push(crate::diagnostics::Related {
                    file,
                    pos: s.pos,
                    message: "the strategy".to_owned(),
                });
                rule
            }
            (Some((rule, _)), _) => rule,
            (None, Some(rule)) => rule,
            (None, None) => OnFailure::FailFast,
        }
    }

    /// Topological layers (Kahn's algorithm, contract order within a layer); every cycle is
    /// reported, named step by step.
    fn layers(&mut self, steps: &mut [Step], edges: &[Vec<Edge>], graph_path: &str) -> Option<Vec<Vec<usize>>> {
        let n = steps.len();
        let mut layer_of: Vec<Option<usize>> = vec![None; n];
        let mut layers: Vec<Vec<usize>> = Vec::new();
        loop {
            let next: Vec<usize> = (0..n)
                .filter(|&i| layer_of[i].is_none())
                .filter(|&i| edges[i].iter().all(|e| layer_of[e.on].is_some_and(|l| l < layers.len())))
                .collect();
            if next.is_empty() {
                break;
            }
            for &i in &next {
                layer_of[i] = Some(layers.len());
            }
            layers.push(next);
        }
        for (step, deps) in steps.iter_mut().zip(edges) {
            step.depends_on = deps.iter().map(|e| e.on).collect();
        }
        if layer_of.iter().all(Option::is_some) {
            return Some(layers);
        }
        // Every step left over waits for another left over, so following the first such
        // dependency from any of them must come back to a step already on the path.
        let mut in_reported_cycle = vec![false; n];
        for start in 0..n {
            if layer_of[start].is_some() || in_reported_cycle[start] {
                continue;
            }
            let mut path = vec![start];
            let cycle = loop {
                let current = *path.last().expect("path starts non-empty");
                let Some(next) = edges[current].iter().map(|e| e.on).find(|&d| layer_of[d].is_none()) else {
                    break None;
                };
                if let Some(at) = path.iter().position(|&p| p == next) {
                    break Some(path[at..].to_vec());
                }
                path.push(next);
            };
            let Some(mut cycle) = cycle else { continue };
            if cycle.iter().any(|&s| in_reported_cycle[s]) {
                continue;
            }
            let first = cycle.iter().enumerate().min_by_key(|(_, s)| **s).map_or(0, |(i, _)| i);
            cycle.rotate_left(first);
            for &s in &cycle {
                in_reported_cycle[s] = true;
            }
            let names: Vec<&str> = cycle.iter().chain(cycle.first()).map(|&s| steps[s].id.value.as_str()).collect();
            let arrows = names.join(" → ");
            let edge_pos =
                |from: usize, to: usize| edges[from].iter().find(|e| e.on == to).map_or(steps[from].id.pos, |e| e.pos);
            let successor = |k: usize| cycle[(k + 1) % cycle.len()];
            let pos = edge_pos(cycle[0], successor(0));
            let related: Vec<crate::diagnostics::Related> = (1..cycle.len())
                .map(|k| crate::diagnostics::Related {
                    file: self.file.to_owned(),
                    pos: edge_pos(cycle[k], successor(k)),
                    message: format!(
                        "`{}` depends on `{}` here",
                        steps[cycle[k]].id.value,
                        steps[successor(k)].id.value
                    ),
                })
                .collect();
            let path = edges[cycle[0]]
                .iter()
                .find(|e| e.on == successor(0))
                .map_or_else(|| join(graph_path, "nodes"), |e| e.path.clone());
            let what =
                if cycle.len() == 1 { "a step depends on itself" } else { "steps depend on each other in a cycle" };
            self.error(
                Code::WorkflowCycle,
                pos,
                &path,
                format!("{what}: {arrows} (each depends on the next)"),
                &format!(
                    "remove one of these dependencies (e.g. `{}` on `{}`) so that some step can start first",
                    steps[cycle[0]].id.value,
                    steps[successor(0)].id.value
                ),
            )
            .related
            .extend(related);
        }
        None
    }
}

struct Coordination {
    mode: ExecutionMode,
    max_concurrency: usize,
    on_failure: OnFailure,
    max_retries: u32,
    retry_backoff_ms: u64,
    retry_backoff_multiplier: f64,
    timeout_ms: Option<u64>,
}
