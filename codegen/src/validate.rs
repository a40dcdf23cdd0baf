//! Stage 2: turn a document tree into a typed [`Contract`], collecting every diagnostic.
//!
//! Validation never stops at the first problem: each check records a located diagnostic and
//! carries on with what it could read, so one run reports everything. Keys the dialect does
//! not know are kept in the tree and ignored here, never errors, so other dialects can be
//! read later by adding code, not by relaxing checks.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use crate::behaviour::Behaviour;
use crate::diagnostics::{Code, Diagnostic, Pos};
use crate::naming::{is_pascal_case, is_snake_case, to_pascal_case, to_snake_case};
use crate::read::{Key, Node, SourceFile, Value};

/// A value with the position it was read from.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned<T> {
    /// The value.
    pub value: T,
    /// Where it starts.
    pub pos: Pos,
}

/// The four node kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// `EFFECT`
    Effect,
    /// `COMPUTE`
    Compute,
    /// `REDUCER`
    Reducer,
    /// `ORCHESTRATOR`
    Orchestrator,
}

impl Kind {
    /// The lower-case suffix of node names (`effect`, …).
    pub fn suffix(self) -> &'static str {
        match self {
            Kind::Effect => "effect",
            Kind::Compute => "compute",
            Kind::Reducer => "reducer",
            Kind::Orchestrator => "orchestrator",
        }
    }

    /// `EFFECT`, …
    pub fn upper(self) -> &'static str {
        match self {
            Kind::Effect => "EFFECT",
            Kind::Compute => "COMPUTE",
            Kind::Reducer => "REDUCER",
            Kind::Orchestrator => "ORCHESTRATOR",
        }
    }

    /// `Effect`, … (the runtime's `NodeKind` variant and the node type suffix).
    pub fn pascal(self) -> &'static str {
        match self {
            Kind::Effect => "Effect",
            Kind::Compute => "Compute",
            Kind::Reducer => "Reducer",
            Kind::Orchestrator => "Orchestrator",
        }
    }

    fn from_upper(s: &str) -> Option<Kind> {
        [Kind::Effect, Kind::Compute, Kind::Reducer, Kind::Orchestrator].into_iter().find(|k| k.upper() == s)
    }
}

/// `dependencies[].type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DependencyKind {
    /// Resolved from the container.
    Protocol,
    /// Resolved from the container.
    Service,
    /// A shared model type.
    Model,
    /// Kept verbatim.
    Other(String),
}

/// One `dependencies` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Dependency {
    /// `name`, snake_case.
    pub name: Spanned<String>,
    /// `type`.
    pub kind: DependencyKind,
    /// `class_name`.
    pub class_name: String,
    /// `rust_type`, already checked to parse as a Rust type.
    pub rust_type: Option<Spanned<String>>,
    /// `required` (default true).
    pub required: bool,
    /// `description`.
    pub description: Option<String>,
}

/// One `io_operations` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct IoOperation {
    /// `operation_type`: the operation it configures.
    pub operation: Spanned<String>,
    /// `kind` (`read`, `write`, `query`, …); `io` when absent.
    pub io_kind: String,
    /// `atomic` (default false).
    pub atomic: bool,
    /// `timeout_seconds`.
    pub timeout_seconds: Option<f64>,
    /// `description`.
    pub description: Option<String>,
}

/// Where a `$ref` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefTarget {
    /// `#/definitions/X`
    Definition(String),
    /// `#/dependencies/<name>`
    Dependency(String),
}

/// A schema, as far as the generator needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Schema {
    /// Where the schema starts.
    pub pos: Pos,
    /// The YAML path of the schema.
    pub path: String,
    /// `description`.
    pub description: Option<String>,
    /// The shape.
    pub kind: SchemaKind,
    /// `default`, as written.
    pub default: Option<Node>,
    /// `x-sensitive: true`.
    pub sensitive: bool,
    /// `x-boxed: true`: the field is stored behind a `Box`, for large values that are rarely
    /// set, so that every other value of the struct stays small to move.
    pub boxed: bool,
    /// `required: true|false` written on a property (the older dialect's style).
    pub required_flag: Option<bool>,
}

/// The shape of a schema.
#[derive(Debug, Clone, PartialEq)]
pub enum SchemaKind {
    /// `$ref`.
    Ref(Spanned<RefTarget>),
    /// `oneOf` whose arms are definitions told apart by a single-value enum property (`x-tag`,
    /// found by [`crate::dialect`]): a tagged Rust enum.
    Tagged {
        /// The discriminating property (its value names the arm on the wire).
        tag: String,
        /// The arms: definition names, in order.
        arms: Vec<Spanned<String>>,
    },
    /// `type: object` with `properties`.
    Object {
        /// `properties`, in source order.
        properties: Vec<Property>,
        /// `required`.
        required: Vec<Spanned<String>>,
    },
    /// `type: object` with only `additionalProperties: <schema>`.
    Map(Box<Schema>),
    /// `type: object` with neither properties nor a value schema.
    FreeObject,
    /// `type: string` + `enum`.
    StringEnum(Vec<Spanned<String>>),
    /// `type: string`.
    String {
        /// `format`.
        format: Option<String>,
    },
    /// `type: integer`.
    Integer {
        /// `format`.
        format: Option<String>,
        /// `minimum`.
        minimum: Option<f64>,
    },
    /// `type: number`.
    Number,
    /// `type: boolean`.
    Boolean,
    /// `type: array`.
    Array(Box<Schema>),
    /// No `type`: any JSON.
    Any,
}

/// A property of an object schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Property {
    /// The wire name and where the key is.
    pub name: Spanned<String>,
    /// Its schema.
    pub schema: Schema,
}

/// A `definitions` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    /// The type name and where the key is.
    pub name: Spanned<String>,
    /// Its schema.
    pub schema: Schema,
}

/// A validated contract.
#[derive(Debug, Clone)]
pub struct Contract {
    /// The file it came from.
    pub source: SourceFile,
    /// `contract_version`.
    pub version: Spanned<(u32, u32, u32)>,
    /// `node_name`.
    pub name: Spanned<String>,
    /// `node_type`.
    pub kind: Kind,
    /// `description`.
    pub description: Spanned<String>,
    /// `input_model`.
    pub input_model: Spanned<String>,
    /// `output_model`.
    pub output_model: Spanned<String>,
    /// `default_timeout_seconds`.
    pub default_timeout_seconds: Option<f64>,
    /// `dependencies`.
    pub dependencies: Vec<Dependency>,
    /// `io_operations`.
    pub io_operations: Vec<IoOperation>,
    /// `definitions`, in source order.
    pub definitions: Vec<Definition>,
    /// Routing, state machine, workflow and topics ([`crate::behaviour`]).
    pub behaviour: Behaviour,
}

impl Contract {
    /// The `v{major}_{minor}_{patch}` folder / module name.
    pub fn version_module(&self) -> String {
        let (a, b, c) = self.version.value;
        format!("v{a}_{b}_{c}")
    }
}

struct Checker<'a> {
    file: &'a str,
    diags: &'a mut Vec<Diagnostic>,
}

impl Checker<'_> {
    fn error(&mut self, code: Code, pos: Pos, path: &str, message: impl Into<String>, hint: impl Into<String>) {
        self.diags.push(Diagnostic::error(code, self.file, pos, path, message).with_hint(hint));
    }

    fn wrong_type(&mut self, node: &Node, path: &str, expected: &str, example: &str) {
        self.error(
            Code::WrongType,
            node.pos,
            path,
            format!("`{path}` must be {expected}, found {}", node.type_name()),
            format!("write it as {example}"),
        );
    }

    /// The required key `key` of `map`; reports CG0004 at `map` when absent.
    fn required<'n>(&mut self, map: &'n Node, parent: &str, key: &str, example: &str) -> Option<&'n Node> {
        let found = map.get(key);
        if found.is_none() {
            let path = join(parent, key);
            let what = if parent.is_empty() { "the contract".to_owned() } else { format!("`{parent}`") };
            self.error(
                Code::MissingKey,
                map.pos,
                &path,
                format!("{what} has no `{key}`"),
                format!("add `{key}: {example}`"),
            );
        }
        found
    }

    fn string(&mut self, node: &Node, path: &str, example: &str) -> Option<Spanned<String>> {
        match &node.value {
            Value::Str(s) => Some(Spanned { value: s.clone(), pos: node.pos }),
            _ => {
                self.wrong_type(node, path, "a string", example);
                None
            }
        }
    }

    fn required_string(&mut self, map: &Node, parent: &str, key: &str, example: &str) -> Option<Spanned<String>> {
        let node = self.required(map, parent, key, example)?;
        self.string(node, &join(parent, key), example)
    }

    fn optional_string(&mut self, map: &Node, parent: &str, key: &str) -> Option<String> {
        let node = map.get(key)?;
        self.string(node, &join(parent, key), "\"...\"").map(|s| s.value)
    }

    fn optional_bool(&mut self, map: &Node, parent: &str, key: &str) -> Option<bool> {
        let node = map.get(key)?;
        match node.value {
            Value::Bool(b) => Some(b),
            _ => {
                self.wrong_type(node, &join(parent, key), "true or false", "`true` or `false`");
                None
            }
        }
    }

    fn optional_seconds(&mut self, map: &Node, parent: &str, key: &str) -> Option<f64> {
        let node = map.get(key)?;
        let value = match node.value {
            Value::Int(i) => i as f64,
            Value::Float(f) => f,
            _ => {
                self.wrong_type(node, &join(parent, key), "a number of seconds", "`30`");
                return None;
            }
        };
        if !(value > 0.0 && value <= 86_400.0) {
            self.error(
                Code::WrongType,
                node.pos,
                &join(parent, key),
                format!("`{}` must be between 0 and 86400 seconds, found {value}", join(parent, key)),
                "use a positive number of seconds, at most one day",
            );
            return None;
        }
        Some(value)
    }
}

/// `a.b`, or `b` when `a` is empty.
pub fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() { key.to_owned() } else { format!("{parent}.{key}") }
}

/// Validates one parsed contract. Returns `None` when too much is missing to build a contract;
/// every problem is in `diags` either way.
pub fn validate(source: SourceFile, root: &Node, diags: &mut Vec<Diagnostic>) -> Option<Contract> {
    validate_layout(source, root, true, diags)
}

/// [`validate`] for a contract normalized from another dialect ([`crate::dialect`]): those
/// keep their own folder layouts, so the `<node_name>/v<version>/` folder checks are skipped.
pub fn validate_foreign(source: SourceFile, root: &Node, diags: &mut Vec<Diagnostic>) -> Option<Contract> {
    validate_layout(source, root, false, diags)
}

fn validate_layout(
    source: SourceFile,
    root: &Node,
    check_layout: bool,
    diags: &mut Vec<Diagnostic>,
) -> Option<Contract> {
    let file = source.display.clone();
    let mut c = Checker { file: &file, diags };
    if root.as_map().is_none() {
        c.wrong_type(root, "", "a mapping of contract keys", "`contract_version: {major: 1, minor: 0, patch: 0}` …");
        return None;
    }
    let errors_before = c.diags.iter().filter(|d| d.is_error()).count();

    let version = c
        .required(root, "", "contract_version", "{major: 1, minor: 0, patch: 0}")
        .and_then(|node| read_version(&mut c, node));
    let name = c.required_string(root, "", "node_name", "node_<name>_<kind>");
    let kind = c.required_string(root, "", "node_type", "EFFECT").and_then(|t| {
        let kind = Kind::from_upper(&t.value);
        if kind.is_none() {
            let hint = match Kind::from_upper(&t.value.to_ascii_uppercase()) {
                Some(k) => format!("write it in upper case: `node_type: {}`", k.upper()),
                None => "use one of EFFECT, COMPUTE, REDUCER, ORCHESTRATOR".to_owned(),
            };
            c.error(Code::UnknownNodeType, t.pos, "node_type", format!("unknown node_type `{}`", t.value), hint);
        }
        kind
    });
    let description = c.required_string(root, "", "description", "\"What the node does.\"");
    let input_model = c.required_string(root, "", "input_model", "ModelXInput");
    let output_model = c.required_string(root, "", "output_model", "ModelXOutput");
    let default_timeout_seconds = c.optional_seconds(root, "", "default_timeout_seconds");

    if let Some(name) = &name {
        check_node_name(&mut c, name, kind);
        if check_layout {
            check_folders(&mut c, &source, name, version.as_ref());
        }
    }

    let dependencies = read_dependencies(&mut c, root);
    let io_operations = read_io_operations(&mut c, root, kind);
    let definitions = match c.required(root, "", "definitions", "{ModelXInput: {type: object, …}}") {
        Some(node) => read_definitions(&mut c, node, &dependencies),
        None => Vec::new(),
    };

    for model in [&input_model, &output_model].into_iter().flatten() {
        if !definitions.iter().any(|d| d.name.value == model.value) {
            let key = if Some(model) == input_model.as_ref() { "input_model" } else { "output_model" };
            let known: Vec<&str> = definitions.iter().map(|d| d.name.value.as_str()).collect();
            c.error(
                Code::UnresolvedRef,
                model.pos,
                key,
                format!("`{key}` names `{}`, which is not in `definitions`", model.value),
                format!("define `{}` under `definitions`, or use one of: {}", model.value, list_or_none(&known)),
            );
        }
    }

    let behaviour = crate::behaviour::read(&file, root, c.diags);

    let errors_after = c.diags.iter().filter(|d| d.is_error()).count();
    if errors_after > errors_before {
        return None;
    }
    Some(Contract {
        source,
        version: version?,
        name: name?,
        kind: kind?,
        description: description?,
        input_model: input_model?,
        output_model: output_model?,
        default_timeout_seconds,
        dependencies,
        io_operations,
        definitions,
        behaviour,
    })
}

/// The names for a hint: all of a short list; of a long one the first [`HINT_NAMES`] and a
/// count, so that each of many errors stays short (a list per error would make the output
/// quadratic in the number of names).
fn list_or_none(items: &[&str]) -> String {
    match items.len() {
        0 => "(none defined)".to_owned(),
        n if n <= HINT_NAMES => items.join(", "),
        n => format!("{}, … ({} more)", items[..HINT_NAMES].join(", "), n - HINT_NAMES),
    }
}

/// How many names a hint lists at most.
const HINT_NAMES: usize = 20;

/// The definition names of a contract: in order for hints, hashed for lookups, so that a
/// contract with many definitions and as many `$ref`s validates in linear time.
struct DefNames<'a> {
    list: Vec<&'a str>,
    set: HashSet<&'a str>,
}

impl<'a> DefNames<'a> {
    fn new(list: Vec<&'a str>) -> Self {
        let set = list.iter().copied().collect();
        Self { list, set }
    }

    fn contains(&self, name: &str) -> bool {
        self.set.contains(name)
    }
}

fn read_version(c: &mut Checker<'_>, node: &Node) -> Option<Spanned<(u32, u32, u32)>> {
    if node.as_map().is_none() {
        c.wrong_type(node, "contract_version", "a mapping", "`{major: 1, minor: 0, patch: 0}`");
        return None;
    }
    let mut parts = [0u32; 3];
    let mut ok = true;
    for (i, key) in ["major", "minor", "patch"].into_iter().enumerate() {
        let Some(part) = c.required(node, "contract_version", key, "0") else {
            ok = false;
            continue;
        };
        match part.value {
            Value::Int(v) if (0..=i64::from(u32::MAX)).contains(&v) => parts[i] = v as u32,
            _ => {
                c.wrong_type(part, &join("contract_version", key), "a non-negative integer", "`0`");
                ok = false;
            }
        }
    }
    ok.then_some(Spanned { value: (parts[0], parts[1], parts[2]), pos: node.pos })
}

fn check_node_name(c: &mut Checker<'_>, name: &Spanned<String>, kind: Option<Kind>) {
    let kinds = [Kind::Effect, Kind::Compute, Kind::Reducer, Kind::Orchestrator];
    let suffix = kinds.into_iter().find(|k| name.value.ends_with(&format!("_{}", k.suffix())));
    let middle = name
        .value
        .strip_prefix("node_")
        .and_then(|rest| suffix.and_then(|k| rest.strip_suffix(&format!("_{}", k.suffix()))));
    let valid = is_snake_case(&name.value) && middle.is_some_and(|m| !m.is_empty() && is_snake_case(m));
    if !valid {
        let suggestion = suggest_node_name(&name.value, kind);
        c.error(
            Code::NamingConvention,
            name.pos,
            "node_name",
            format!("node_name `{}` breaks the naming convention `node_<name>_<kind>`", name.value),
            format!(
                "use lower snake case with the `node_` prefix and the kind as suffix, e.g. `{suggestion}` \
                 (and rename the folder to match)"
            ),
        );
        return;
    }
    if let (Some(kind), Some(suffix)) = (kind, suffix)
        && kind != suffix
    {
        c.error(
            Code::KindMismatch,
            name.pos,
            "node_name",
            format!("node_name `{}` ends in `_{}` but node_type is {}", name.value, suffix.suffix(), kind.upper()),
            format!("make them agree: `node_type: {}` or a name ending in `_{}`", suffix.upper(), kind.suffix()),
        );
    }
}

fn suggest_node_name(name: &str, kind: Option<Kind>) -> String {
    let snake = to_snake_case(name);
    let mut core = snake.strip_prefix("node_").unwrap_or(&snake).to_owned();
    for k in [Kind::Effect, Kind::Compute, Kind::Reducer, Kind::Orchestrator] {
        if let Some(stripped) = core.strip_suffix(&format!("_{}", k.suffix())) {
            core = stripped.to_owned();
        }
    }
    let suffix = kind.map_or("effect", Kind::suffix);
    format!("node_{core}_{suffix}")
}

fn check_folders(
    c: &mut Checker<'_>,
    source: &SourceFile,
    name: &Spanned<String>,
    version: Option<&Spanned<(u32, u32, u32)>>,
) {
    let parts: Vec<String> = source
        .abs_path
        .components()
        .rev()
        .skip(1)
        .take(2)
        .map(|p| p.as_os_str().to_string_lossy().into_owned())
        .collect();
    let (Some(version_dir), Some(node_dir)) = (parts.first(), parts.get(1)) else { return };
    if node_dir != &name.value {
        c.error(
            Code::FolderNameMismatch,
            name.pos,
            "node_name",
            format!("node_name `{}` does not match its folder `{node_dir}`", name.value),
            format!("rename the folder to `{}` or set `node_name: {node_dir}`", name.value),
        );
    }
    if let Some(version) = version {
        let (a, b, p) = version.value;
        let expected = format!("v{a}_{b}_{p}");
        if version_dir != &expected {
            c.error(
                Code::FolderVersionMismatch,
                version.pos,
                "contract_version",
                format!("contract_version {a}.{b}.{p} does not match its folder `{version_dir}`"),
                format!("move the file to a folder named `{expected}`, or change contract_version to match"),
            );
        }
    }
}

fn read_dependencies(c: &mut Checker<'_>, root: &Node) -> Vec<Dependency> {
    let Some(node) = root.get("dependencies") else { return Vec::new() };
    let Some(items) = node.as_seq() else {
        if node.value != Value::Null {
            c.wrong_type(node, "dependencies", "a list", "`- name: x` entries");
        }
        return Vec::new();
    };
    let mut deps: Vec<Dependency> = Vec::new();
    let mut seen: HashMap<String, Pos> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("dependencies[{i}]");
        if item.as_map().is_none() {
            c.wrong_type(item, &path, "a mapping", "`{name: x, type: service, rust_type: …}`");
            continue;
        }
        let name = c.required_string(item, &path, "name", "my_service");
        let kind = c.required_string(item, &path, "type", "service").map(|t| match t.value.as_str() {
            "protocol" => DependencyKind::Protocol,
            "service" => DependencyKind::Service,
            "model" => DependencyKind::Model,
            other => DependencyKind::Other(other.to_owned()),
        });
        let class_name = c.optional_string(item, &path, "class_name").unwrap_or_default();
        let rust_type = item.get("rust_type").and_then(|n| c.string(n, &join(&path, "rust_type"), "`a::b::Type`"));
        let required = c.optional_bool(item, &path, "required").unwrap_or(true);
        let description = c.optional_string(item, &path, "description");
        if let Some(rt) = &rust_type
            && syn::parse_str::<syn::Type>(&rt.value).is_err()
        {
            c.error(
                Code::InvalidRustType,
                rt.pos,
                &join(&path, "rust_type"),
                format!("rust_type `{}` is not a Rust type", rt.value),
                "write a Rust path such as `onex_runtime::postgres::PostgresConnectionManager` or `dyn a::Trait`",
            );
        }
        let (Some(name), Some(kind)) = (name, kind) else { continue };
        if !is_snake_case(&name.value) {
            c.error(
                Code::NamingConvention,
                name.pos,
                &join(&path, "name"),
                format!("dependency name `{}` is not lower snake case", name.value),
                format!("rename it to `{}`", to_snake_case(&name.value)),
            );
            continue;
        }
        if let Some(&first_pos) = seen.get(&name.value) {
            c.diags.push(
                Diagnostic::error(
                    Code::DuplicateName,
                    c.file,
                    name.pos,
                    &join(&path, "name"),
                    format!("dependency `{}` is declared twice", name.value),
                )
                .with_related(c.file, first_pos, "first declared here")
                .with_hint("remove one of the two entries or rename it"),
            );
            continue;
        }
        seen.insert(name.value.clone(), name.pos);
        deps.push(Dependency { name, kind, class_name, rust_type, required, description });
    }
    deps
}

fn read_io_operations(c: &mut Checker<'_>, root: &Node, kind: Option<Kind>) -> Vec<IoOperation> {
    let node = root.get("io_operations");
    let items = match node {
        None => None,
        Some(node) => match node.as_seq() {
            Some(items) => Some(items),
            None if node.value == Value::Null => None,
            None => {
                c.wrong_type(node, "io_operations", "a list", "`- operation_type: …` entries");
                return Vec::new();
            }
        },
    };
    if kind == Some(Kind::Effect) && items.is_none_or(<[Node]>::is_empty) {
        let pos = node.map_or(root.pos, |n| n.pos);
        c.error(
            Code::MissingIoOperations,
            pos,
            "io_operations",
            "an EFFECT contract must list its io_operations",
            "add `io_operations:` with one entry per operation: `- {operation_type: <op>, atomic: true, timeout_seconds: 30}`",
        );
    }
    let mut ops: Vec<IoOperation> = Vec::new();
    let mut seen: HashMap<String, Pos> = HashMap::new();
    for (i, item) in items.unwrap_or_default().iter().enumerate() {
        let path = format!("io_operations[{i}]");
        if item.as_map().is_none() {
            c.wrong_type(item, &path, "a mapping", "`{operation_type: op, atomic: true, timeout_seconds: 30}`");
            continue;
        }
        let operation = c.required_string(item, &path, "operation_type", "<one of the input's operation_type values>");
        let io_kind = c.optional_string(item, &path, "kind").unwrap_or_else(|| "io".to_owned());
        let atomic = c.optional_bool(item, &path, "atomic").unwrap_or(false);
        let timeout_seconds = c.optional_seconds(item, &path, "timeout_seconds");
        let description = c.optional_string(item, &path, "description");
        let Some(operation) = operation else { continue };
        if let Some(&first_pos) = seen.get(&operation.value) {
            c.diags.push(
                Diagnostic::error(
                    Code::DuplicateName,
                    c.file,
                    operation.pos,
                    &join(&path, "operation_type"),
                    format!("io_operations configures `{}` twice", operation.value),
                )
                .with_related(c.file, first_pos, "first configured here")
                .with_hint("keep one entry per operation"),
            );
            continue;
        }
        seen.insert(operation.value.clone(), operation.pos);
        ops.push(IoOperation { operation, io_kind, atomic, timeout_seconds, description });
    }
    ops
}

fn read_definitions(c: &mut Checker<'_>, node: &Node, deps: &[Dependency]) -> Vec<Definition> {
    let Some(entries) = node.as_map() else {
        c.wrong_type(node, "definitions", "a mapping of type name to schema", "`ModelX: {type: object}`");
        return Vec::new();
    };
    let names = DefNames::new(entries.iter().map(|(k, _)| k.name.as_str()).collect());
    let mut defs = Vec::new();
    for (key, value) in entries {
        let path = join("definitions", &key.name);
        if !is_pascal_case(&key.name) {
            c.error(
                Code::NamingConvention,
                key.pos,
                &path,
                format!("type name `{}` is not PascalCase", key.name),
                format!("rename it to `{}` (and every `$ref` to it)", to_pascal_case(&key.name)),
            );
        }
        let schema = read_schema(c, value, &path, &names, deps);
        defs.push(Definition { name: Spanned { value: key.name.clone(), pos: key.pos }, schema });
    }
    defs
}

fn read_schema(c: &mut Checker<'_>, node: &Node, path: &str, defs: &DefNames<'_>, deps: &[Dependency]) -> Schema {
    let mut schema = Schema {
        pos: node.pos,
        path: path.to_owned(),
        description: None,
        kind: SchemaKind::Any,
        default: None,
        sensitive: false,
        boxed: false,
        required_flag: None,
    };
    if node.as_map().is_none() {
        c.wrong_type(node, path, "a schema mapping", "`{type: string}`");
        return schema;
    }
    schema.description = c.optional_string(node, path, "description");
    schema.default = node.get("default").cloned();
    schema.sensitive = c.optional_bool(node, path, "x-sensitive").unwrap_or(false);
    schema.boxed = c.optional_bool(node, path, "x-boxed").unwrap_or(false);
    schema.required_flag = match node.get("required") {
        Some(Node { value: Value::Bool(b), .. }) => Some(*b),
        _ => None,
    };
    if let (Some(arms), Some(tag)) =
        (node.get("oneOf").and_then(Node::as_seq), node.get("x-tag").and_then(Node::as_str))
    {
        let mut names = Vec::new();
        for (i, arm) in arms.iter().enumerate() {
            let arm_path = format!("{}[{i}]", join(path, "oneOf"));
            match arm.get("$ref").and_then(Node::as_str).and_then(|r| r.strip_prefix("#/definitions/")) {
                Some(name) if defs.contains(name) => names.push(Spanned { value: name.to_owned(), pos: arm.pos }),
                _ => c.error(
                    Code::UnsupportedSchema,
                    arm.pos,
                    &arm_path,
                    "an arm of a tagged `oneOf` must be `$ref: \"#/definitions/<Type>\"`",
                    "define the arm under `definitions` and refer to it",
                ),
            }
        }
        schema.kind = SchemaKind::Tagged { tag: tag.to_owned(), arms: names };
        return schema;
    }
    if let Some(reference) = node.get("$ref") {
        if let Some(target) = c.string(reference, &join(path, "$ref"), "`\"#/definitions/ModelX\"`")
            && let Some(resolved) = resolve_ref(c, &target, &join(path, "$ref"), defs, deps)
        {
            schema.kind = SchemaKind::Ref(Spanned { value: resolved, pos: target.pos });
        }
        return schema;
    }
    let ty = node.get("type");
    let ty_name = match ty {
        None => None,
        Some(t) => c.string(t, &join(path, "type"), "`string`, `integer`, `number`, `boolean`, `array` or `object`"),
    };
    let format = c.optional_string(node, path, "format");
    schema.kind = match ty_name.as_ref().map(|t| t.value.as_str()) {
        None if node.get("enum").is_some() => read_enum(c, node, path),
        None if node.get("properties").is_some() => read_object(c, node, path, defs, deps),
        None => SchemaKind::Any,
        Some("string") if node.get("enum").is_some() => read_enum(c, node, path),
        Some("string") => SchemaKind::String { format },
        Some("integer") => {
            let minimum = match node.get("minimum").map(|m| &m.value) {
                Some(Value::Int(i)) => Some(*i as f64),
                Some(Value::Float(f)) => Some(*f),
                _ => None,
            };
            SchemaKind::Integer { format, minimum }
        }
        Some("number") => SchemaKind::Number,
        Some("boolean") => SchemaKind::Boolean,
        Some("array") => match node.get("items") {
            Some(items) => SchemaKind::Array(Box::new(read_schema(c, items, &join(path, "items"), defs, deps))),
            None => {
                c.error(
                    Code::MissingKey,
                    node.pos,
                    &join(path, "items"),
                    format!("array schema `{path}` has no `items`"),
                    "add `items: {type: string}` (or the element schema)",
                );
                SchemaKind::Any
            }
        },
        Some("object") => read_object(c, node, path, defs, deps),
        Some(other) => {
            let pos = ty_name.as_ref().map_or(node.pos, |t| t.pos);
            c.error(
                Code::UnsupportedSchema,
                pos,
                &join(path, "type"),
                format!("unknown schema type `{other}`"),
                "use string, integer, number, boolean, array or object (omit `type` for any JSON value)",
            );
            SchemaKind::Any
        }
    };
    if schema.sensitive && !matches!(schema.kind, SchemaKind::String { .. }) {
        c.error(
            Code::UnsupportedSchema,
            node.pos,
            &join(path, "x-sensitive"),
            "`x-sensitive: true` is only supported on plain strings",
            "put the secret in a `type: string` property",
        );
        schema.sensitive = false;
    }
    schema
}

fn read_enum(c: &mut Checker<'_>, node: &Node, path: &str) -> SchemaKind {
    let Some(enum_node) = node.get("enum") else { return SchemaKind::Any };
    let enum_path = join(path, "enum");
    let Some(items) = enum_node.as_seq().filter(|s| !s.is_empty()) else {
        c.wrong_type(enum_node, &enum_path, "a non-empty list of strings", "`[a, b]`");
        return SchemaKind::String { format: None };
    };
    let mut values: Vec<Spanned<String>> = Vec::with_capacity(items.len());
    // Keyed by the text in the document (no copy of each value), sized once: an enum may have
    // hundreds of thousands of values.
    let mut seen: HashMap<&str, Pos> = HashMap::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        // The item's path is written only for a diagnostic.
        let Value::Str(value) = &item.value else {
            c.wrong_type(item, &format!("{enum_path}[{i}]"), "a string", "a quoted string");
            continue;
        };
        let first_pos = match seen.entry(value) {
            Entry::Occupied(first) => *first.get(),
            Entry::Vacant(slot) => {
                slot.insert(item.pos);
                values.push(Spanned { value: value.clone(), pos: item.pos });
                continue;
            }
        };
        c.diags.push(
            Diagnostic::error(
                Code::DuplicateName,
                c.file,
                item.pos,
                &format!("{enum_path}[{i}]"),
                format!("enum value `{value}` is listed twice"),
            )
            .with_related(c.file, first_pos, "first listed here")
            .with_hint("remove the repeated value"),
        );
    }
    SchemaKind::StringEnum(values)
}

fn read_object(c: &mut Checker<'_>, node: &Node, path: &str, defs: &DefNames<'_>, deps: &[Dependency]) -> SchemaKind {
    let properties = node.get("properties");
    let additional = node.get("additionalProperties");
    let Some(properties) = properties else {
        return match additional {
            Some(extra) if extra.as_map().is_some() => {
                SchemaKind::Map(Box::new(read_schema(c, extra, &join(path, "additionalProperties"), defs, deps)))
            }
            _ => SchemaKind::FreeObject,
        };
    };
    let Some(entries) = properties.as_map() else {
        if properties.value != Value::Null {
            c.wrong_type(properties, &join(path, "properties"), "a mapping", "`{name: {type: string}}`");
        }
        return SchemaKind::FreeObject;
    };
    let props: Vec<Property> = entries
        .iter()
        .map(|(key, value): &(Key, Node)| Property {
            name: Spanned { value: key.name.clone(), pos: key.pos },
            schema: read_schema(c, value, &join(&join(path, "properties"), &key.name), defs, deps),
        })
        .collect();
    let mut required = Vec::new();
    let names: HashSet<&str> = props.iter().map(|p| p.name.value.as_str()).collect();
    if let Some(req) = node.get("required") {
        match req.as_seq() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    let item_path = format!("{}[{i}]", join(path, "required"));
                    let Some(name) = c.string(item, &item_path, "a property name") else { continue };
                    if !names.contains(name.value.as_str()) {
                        c.error(
                            Code::UnresolvedRef,
                            name.pos,
                            &item_path,
                            format!("`required` lists `{}`, which is not a property of `{path}`", name.value),
                            "add the property under `properties` or remove it from `required`",
                        );
                        continue;
                    }
                    required.push(name);
                }
            }
            None if matches!(req.value, Value::Bool(_)) => {}
            None => c.wrong_type(req, &join(path, "required"), "a list of property names", "`[a, b]`"),
        }
    }
    SchemaKind::Object { properties: props, required }
}

fn resolve_ref(
    c: &mut Checker<'_>,
    target: &Spanned<String>,
    path: &str,
    defs: &DefNames<'_>,
    deps: &[Dependency],
) -> Option<RefTarget> {
    if let Some(name) = target.value.strip_prefix("#/definitions/") {
        if defs.contains(name) {
            return Some(RefTarget::Definition(name.to_owned()));
        }
        c.error(
            Code::UnresolvedRef,
            target.pos,
            path,
            format!("`$ref: {}` points to nothing: there is no definition `{name}`", target.value),
            format!("define `{name}` under `definitions`, or refer to one of: {}", list_or_none(&defs.list)),
        );
        return None;
    }
    if let Some(name) = target.value.strip_prefix("#/dependencies/") {
        match deps.iter().find(|d| d.name.value == name) {
            Some(dep) if dep.rust_type.is_some() => return Some(RefTarget::Dependency(name.to_owned())),
            Some(dep) => {
                let dep_pos = dep.name.pos;
                c.diags.push(
                    Diagnostic::error(
                        Code::UnresolvedRef,
                        c.file,
                        target.pos,
                        path,
                        format!("`$ref: {}` names dependency `{name}`, which has no rust_type", target.value),
                    )
                    .with_related(c.file, dep_pos, "dependency declared here")
                    .with_hint("add `rust_type: onex_runtime::models::…` to the dependency"),
                );
            }
            None => {
                let known: Vec<&str> = deps.iter().map(|d| d.name.value.as_str()).collect();
                c.error(
                    Code::UnresolvedRef,
                    target.pos,
                    path,
                    format!("`$ref: {}` points to nothing: there is no dependency `{name}`", target.value),
                    format!("declare `{name}` under `dependencies`, or refer to one of: {}", list_or_none(&known)),
                );
            }
        }
        return None;
    }
    c.error(
        Code::UnresolvedRef,
        target.pos,
        path,
        format!("`$ref: {}` is not a reference this dialect can resolve", target.value),
        "use `#/definitions/<Type>` or `#/dependencies/<name>`",
    );
    None
}
