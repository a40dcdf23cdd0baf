//! Stage 1½: read every real ONEX contract. Detects what a file is by its keys ([`family`]),
//! and rewrites node contracts written in the other ONEX dialects (September 2025, 2026 and
//! their mixtures) into our dialect's tree, positions preserved, so [`crate::validate`] reads
//! them like our own contracts.
//!
//! Contracts already in our dialect pass through untouched: the strict checks of our own
//! contract folder (naming, folders) apply to them only. Everything the rewrite cannot use is
//! reported with its location; unknown keys stay in the tree and are never errors.

pub mod family;
pub mod refs;
pub mod schema;
pub mod tree;
pub mod typemap;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::diagnostics::{Code, Diagnostic, Pos};
use crate::naming;
use crate::read::{Key, Node, SourceFile, Value};

pub use family::Family;
pub use refs::External;
pub use typemap::TypeMap;

use refs::{GROUPS, Resolver};

/// The dialect a node contract is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// This repository's dialect (`contracts/README.md`).
    Onex,
    /// The September 2025 dialect (class-name `input_model`, `version`, string versions).
    Sept2025,
    /// The 2026 dialect (`*_GENERIC`, `input_model: {name, module}`).
    Head2026,
}

impl Dialect {
    /// Whether this is a foreign dialect (read leniently, names converted).
    pub fn is_foreign(self) -> bool {
        self != Dialect::Onex
    }
}

/// How to read foreign contracts.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// External type → Rust type.
    pub type_map: TypeMap,
    /// Whether to read `subcontracts[].path` files (off for in-memory input such as fuzzing).
    pub load_subcontracts: bool,
}

/// A node contract in our dialect.
#[derive(Debug, Clone)]
pub struct Normalized {
    /// The tree, in our dialect.
    pub root: Node,
    /// What it was written in.
    pub dialect: Dialect,
    /// External types it uses, by class name.
    pub externals: Vec<External>,
    /// Subcontract files read through `subcontracts[].path` (for rebuild tracking).
    pub subcontracts: Vec<PathBuf>,
}

/// What became of one parsed file.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A node contract, ready for validation.
    Node(Box<Normalized>),
    /// Another family of file; skipped with a note.
    Skipped(Family),
}

/// The four kinds, upper case.
const KINDS: [&str; 4] = ["EFFECT", "COMPUTE", "REDUCER", "ORCHESTRATOR"];

/// Decides the family of `root`, and rewrites a foreign node contract into our dialect.
pub fn normalize(source: &SourceFile, root: Node, options: &Options, diags: &mut Vec<Diagnostic>) -> Outcome {
    let family = family::detect(&root);
    if family != Family::NodeContract {
        diags.push(
            Diagnostic::note(
                Code::NotANodeContract,
                &source.display,
                root.pos,
                "",
                format!("skipped: this is {}, not a node contract (it has {})", family.describe(), family.evidence()),
            )
            .with_hint("nothing to do; only files with a top-level `node_type` generate code"),
        );
        return Outcome::Skipped(family);
    }
    let dialect = detect_dialect(&root);
    if dialect == Dialect::Onex {
        return Outcome::Node(Box::new(Normalized { root, dialect, externals: Vec::new(), subcontracts: Vec::new() }));
    }
    let original = root.clone();
    let mut root = root;
    let file = source.display.as_str();
    let mut n = Normalizer { file, diags };
    n.versions(&mut root);
    let kind = n.node_type(&mut root);
    n.node_name(&mut root, source, kind.as_deref());
    n.description(&mut root);
    let dependency_names = n.dependencies(&mut root, &options.type_map);
    let mut resolver = Resolver {
        file,
        original: &original,
        type_map: &options.type_map,
        definitions: BTreeSet::new(),
        renamed: BTreeMap::new(),
        dependency_names,
        externals: BTreeMap::new(),
    };
    n.definitions(&mut root, &mut resolver);
    n.states(&mut root, &mut resolver);
    n.models(&mut root, &mut resolver);
    n.io_operations(&mut root, kind.as_deref());
    let externals: Vec<External> = resolver.externals.into_values().collect();
    add_external_dependencies(&mut root, &externals);
    let subcontracts = if options.load_subcontracts { n.subcontracts(&root, source) } else { Vec::new() };
    let mut externals = externals;
    externals.sort_by(|a, b| a.class.cmp(&b.class));
    Outcome::Node(Box::new(Normalized { root, dialect, externals, subcontracts }))
}

/// Which dialect a node contract is written in, by its keys.
pub fn detect_dialect(root: &Node) -> Dialect {
    let generic =
        root.get("node_type").and_then(Node::as_str).is_some_and(|t| t.to_ascii_uppercase().ends_with("_GENERIC"));
    let model_map = ["input_model", "output_model"].iter().any(|k| root.get(k).is_some_and(|m| m.as_map().is_some()));
    if generic || model_map {
        return Dialect::Head2026;
    }
    let foreign_keys = ["version", "name", "node_version", "contract_name"].iter().any(|k| tree::has(root, k));
    let string_version = root.get("contract_version").is_some_and(|v| v.as_map().is_none());
    let grouped = root.get("definitions").is_some_and(is_grouped);
    let no_name = !tree::has(root, "node_name");
    if foreign_keys || string_version || grouped || no_name { Dialect::Sept2025 } else { Dialect::Onex }
}

/// Whether `definitions` groups its schemas (`models:`, `enums:`, …) rather than naming them.
fn is_grouped(definitions: &Node) -> bool {
    definitions.as_map().is_some_and(|entries| {
        entries.iter().any(|(k, v)| GROUPS.contains(&k.name.as_str()) && v.as_map().is_some() && !looks_like_schema(v))
    })
}

fn looks_like_schema(node: &Node) -> bool {
    ["type", "properties", "$ref", "enum", "oneOf", "items", "additionalProperties"].iter().any(|k| tree::has(node, k))
}

struct Normalizer<'a> {
    file: &'a str,
    diags: &'a mut Vec<Diagnostic>,
}

impl Normalizer<'_> {
    fn warn(&mut self, code: Code, pos: Pos, path: &str, message: String, hint: &str) {
        self.diags.push(Diagnostic::warning(code, self.file, pos, path, message).with_hint(hint));
    }

    /// `"1.0.0"` → `{major, minor, patch}`, for `contract_version`, `node_version` and
    /// `version`; a missing `contract_version` comes from `version`, then `node_version`.
    fn versions(&mut self, root: &mut Node) {
        for key in ["contract_version", "node_version", "version"] {
            let Some(node) = tree::get_mut(root, key) else { continue };
            if let Some(text) = node.as_str().map(str::to_owned) {
                match parse_semver(&text) {
                    Some((a, b, c)) => {
                        let pos = node.pos;
                        *node = tree::map(
                            vec![
                                ("major", tree::int(a, pos)),
                                ("minor", tree::int(b, pos)),
                                ("patch", tree::int(c, pos)),
                            ],
                            pos,
                        );
                    }
                    None => {
                        let pos = node.pos;
                        self.diags.push(
                            Diagnostic::error(
                                Code::WrongType,
                                self.file,
                                pos,
                                key,
                                format!("`{key}: {text}` is not a version `major.minor.patch`"),
                            )
                            .with_hint("write it as `1.0.0` or `{major: 1, minor: 0, patch: 0}`"),
                        );
                    }
                }
            }
        }
        if !tree::has(root, "contract_version")
            && let Some((key, value)) = ["version", "node_version"]
                .iter()
                .find_map(|k| root.entry(k).map(|(key, value)| (key.clone(), value.clone())))
            && value.as_map().is_some()
        {
            tree::set(root, "contract_version", value, key.pos);
        }
    }

    /// `node_type` in any case, with or without `_GENERIC`. Returns the kind, upper case.
    fn node_type(&mut self, root: &mut Node) -> Option<String> {
        let node = tree::get_mut(root, "node_type")?;
        let text = node.as_str()?.to_owned();
        let upper = text.trim().to_ascii_uppercase();
        let kind = upper.strip_suffix("_GENERIC").unwrap_or(&upper).to_owned();
        if KINDS.contains(&kind.as_str()) {
            node.value = Value::Str(kind.clone());
            Some(kind)
        } else {
            None
        }
    }

    /// `node_name` (else `name`, else the file's folder), converted to `node_<name>_<kind>`.
    fn node_name(&mut self, root: &mut Node, source: &SourceFile, kind: Option<&str>) {
        let written = ["node_name", "name"]
            .iter()
            .find_map(|k| root.get(k).and_then(|n| n.as_str().map(|s| (s.to_owned(), n.pos))));
        let (name, pos) = match written {
            Some(found) => found,
            None => {
                let folder =
                    source.abs_path.parent().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned());
                let stem = source.abs_path.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let name = if stem == "contract" { folder.unwrap_or(stem) } else { stem };
                (name, root.pos)
            }
        };
        let converted = naming::convert_node_name(&name, kind);
        if converted != name {
            self.warn(
                Code::Renamed,
                pos,
                "node_name",
                format!("node name `{name}` becomes `{converted}` (lower snake case, `node_` prefix, kind suffix)"),
                "set `node_name` to the converted name to silence this",
            );
        }
        tree::set(root, "node_name", tree::string(&converted, pos), pos);
    }

    /// A missing `description` comes from `metadata.description`, else names the node.
    fn description(&mut self, root: &mut Node) {
        if root.get("description").and_then(Node::as_str).is_some_and(|d| !d.trim().is_empty()) {
            return;
        }
        let from_metadata = root
            .get("metadata")
            .and_then(|m| m.get("description"))
            .and_then(|d| d.as_str().map(|s| (s.to_owned(), d.pos)));
        let (text, pos) = from_metadata.unwrap_or_else(|| {
            let name = tree::str_of(root, "node_name").unwrap_or("node").to_owned();
            (format!("The `{name}` node (its contract has no description)."), root.pos)
        });
        tree::set(root, "description", tree::string(&text, pos), pos);
    }

    /// Dependency names in snake case and unique; a missing `type` is core's default
    /// (`protocol`); mapped protocol/service classes get their `rust_type`.
    fn dependencies(&mut self, root: &mut Node, type_map: &TypeMap) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        let file = self.file.to_owned();
        let Some(Node { value: Value::Seq(items), .. }) = tree::get_mut(root, "dependencies") else { return names };
        let mut renames = Vec::new();
        for (i, item) in items.iter_mut().enumerate() {
            if item.as_map().is_none() {
                continue;
            }
            let pos = item.pos;
            if !tree::has(item, "type") {
                tree::set(item, "type", tree::string("protocol", pos), pos);
            }
            let Some(name_node) = item.get("name") else { continue };
            let Some(name) = name_node.as_str().map(str::to_owned) else { continue };
            let name_pos = name_node.pos;
            let converted = naming::first_free(&naming::foreign_dependency_name(&name), |n| names.contains(n));
            if converted != name {
                renames.push((name_pos, format!("dependencies[{i}].name"), name.clone(), converted.clone()));
                tree::set(item, "name", tree::string(&converted, name_pos), name_pos);
            }
            names.insert(converted);
            let is_container_resolved = matches!(tree::str_of(item, "type"), Some("protocol" | "service"));
            if is_container_resolved && !tree::has(item, "rust_type") {
                let class = tree::str_of(item, "class_name").or_else(|| tree::str_of(item, "interface"));
                let module = tree::str_of(item, "module");
                if let Some(rust_type) = class.and_then(|c| type_map.lookup(c, module)).map(str::to_owned) {
                    tree::set(item, "rust_type", tree::string(&rust_type, pos), pos);
                }
            }
        }
        for (pos, path, from, to) in renames {
            self.diags.push(
                Diagnostic::warning(Code::Renamed, &file, pos, &path, format!("dependency `{from}` becomes `{to}`"))
                    .with_hint(
                        "dependency names are lower snake case and unique; rename it in the contract to silence this",
                    ),
            );
        }
        names
    }

    /// Flattens grouped definitions, turns import records and external stubs into external
    /// types, converts names to PascalCase and normalizes every schema.
    fn definitions(&mut self, root: &mut Node, r: &mut Resolver<'_>) {
        let Some(defs) = root.get("definitions") else { return };
        let Some(entries) = defs.as_map() else { return };
        let defs_pos = defs.pos;
        // 1. Flatten, remembering each entry's original pointer.
        let mut flat: Vec<(String, Key, Node)> = Vec::new();
        for (key, value) in entries {
            if GROUPS.contains(&key.name.as_str()) && value.as_map().is_some() && !looks_like_schema(value) {
                for (inner_key, inner) in value.as_map().unwrap_or_default() {
                    flat.push((
                        format!("#/definitions/{}/{}", key.name, inner_key.name),
                        inner_key.clone(),
                        inner.clone(),
                    ));
                }
            } else {
                flat.push((format!("#/definitions/{}", key.name), key.clone(), value.clone()));
            }
        }
        // 2. Names: PascalCase (an import record is named after its class), unique.
        let dependency_classes: BTreeMap<String, Option<String>> = ["dependencies", "shared_model_dependencies"]
            .iter()
            .filter_map(|k| r.original.get(k).and_then(Node::as_seq))
            .flatten()
            .filter_map(|d| {
                let class = d.get("class_name").and_then(Node::as_str)?;
                Some((class.to_owned(), d.get("module").and_then(Node::as_str).map(str::to_owned)))
            })
            .collect();
        let mut named: Vec<(String, Key, Node)> = Vec::new();
        let mut seen: BTreeMap<String, Pos> = BTreeMap::new();
        for (pointer, key, value) in flat {
            let written =
                if refs::is_import_record(&value) { refs::import_class(&value, &key.name) } else { key.name.clone() };
            let name = naming::foreign_type_name(&written);
            if name != key.name {
                self.warn(
                    Code::Renamed,
                    key.pos,
                    &crate::validate::join("definitions", &key.name),
                    format!("definition `{}` becomes the type `{name}`", key.name),
                    "type names are PascalCase (an import record is named after its class); rename the definition and its `$ref`s to silence this",
                );
            }
            if let Some(first) = seen.get(&name) {
                self.diags.push(
                    Diagnostic::error(
                        Code::NameCollision,
                        self.file,
                        key.pos,
                        &crate::validate::join("definitions", &key.name),
                        format!("two definitions are named `{name}`; the second is not used"),
                    )
                    .with_related(self.file, *first, "the first is here")
                    .with_hint("rename one of them (grouped definitions share one namespace)"),
                );
                continue;
            }
            seen.insert(name.clone(), key.pos);
            if name != key.name || pointer != format!("#/definitions/{}", key.name) {
                r.renamed.insert(pointer, name.clone());
            }
            r.definitions.insert(name.clone());
            named.push((name, key, value));
        }
        // 3. Externals, then every schema.
        let mut out: Vec<(Key, Node)> = Vec::new();
        for (name, key, mut value) in named {
            let path = crate::validate::join("definitions", &name);
            let external = if refs::is_import_record(&value) {
                let module = tree::str_of(&value, "module").map(str::to_owned);
                Some(module)
            } else if is_external_stub(&value, &name, &dependency_classes) {
                Some(dependency_classes.get(&name).cloned().flatten())
            } else {
                None
            };
            if let Some(module) = external {
                let description = value.get("description").cloned();
                let target = r.import(&name, module.as_deref(), key.pos, self.diags);
                let mut alias = tree::map(vec![("$ref", tree::string(&target.pointer(), key.pos))], value.pos);
                if let Some(description) = description {
                    tree::set(&mut alias, "description", description, key.pos);
                }
                value = alias;
            } else {
                schema::normalize(&mut value, &path, r, self.diags);
            }
            out.push((Key { name, pos: key.pos }, value));
        }
        let mut flat_defs = Node { value: Value::Map(out), pos: defs_pos };
        self.tag_unions(&mut flat_defs);
        tree::set(root, "definitions", flat_defs, defs_pos);
    }

    /// Fills `x-tag` on every `oneOf` whose arms share a single-value enum discriminator;
    /// reports the others, which are read as any JSON value.
    fn tag_unions(&mut self, defs: &mut Node) {
        let snapshot = defs.clone();
        let Value::Map(entries) = &mut defs.value else { return };
        for (key, value) in entries.iter_mut() {
            let path = crate::validate::join("definitions", &key.name);
            self.tag_unions_in(value, &path, &snapshot);
        }
    }

    fn tag_unions_in(&mut self, node: &mut Node, path: &str, defs: &Node) {
        if tree::has(node, schema::TAG_KEY) {
            let found = node.get("oneOf").and_then(|arms| schema::discriminator(arms, defs));
            let pos = node.get("oneOf").map_or(node.pos, |n| n.pos);
            match found {
                Some(tag) => tree::set(node, schema::TAG_KEY, tree::string(&tag, pos), pos),
                None => {
                    tree::remove(node, schema::TAG_KEY);
                    tree::remove(node, "oneOf");
                    self.warn(
                        Code::DialectApproximation,
                        pos,
                        &crate::validate::join(path, "oneOf"),
                        "this `oneOf` has no single-value enum discriminator shared by all arms; it is read as any JSON value".to_owned(),
                        "give every arm a property such as `kind: {type: string, enum: [arm_name]}`",
                    );
                }
            }
        }
        if let Value::Map(entries) = &mut node.value {
            for (key, child) in entries.iter_mut() {
                if key.name == "oneOf" {
                    continue;
                }
                let child_path = crate::validate::join(path, &key.name);
                match &mut child.value {
                    Value::Map(_) => self.tag_unions_in(child, &child_path, defs),
                    Value::Seq(items) => {
                        for item in items.iter_mut() {
                            self.tag_unions_in(item, &child_path, defs);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// `input_state`/`output_state` (`object_type`, `property_type`, `reference`) as schemas.
    fn states(&mut self, root: &mut Node, r: &mut Resolver<'_>) {
        for key in ["input_state", "output_state"] {
            if let Some(state) = tree::get_mut(root, key) {
                schema::normalize(state, key, r, self.diags);
            }
        }
    }

    /// `input_model`/`output_model` as class names: `{name, module}` maps and dotted paths
    /// give their class; a class with no definition is an external type (or is described by
    /// `input_state`/`output_state`); a missing model is any JSON value, with a warning.
    fn models(&mut self, root: &mut Node, r: &mut Resolver<'_>) {
        for (key, state_key) in [("input_model", "input_state"), ("output_model", "output_state")] {
            let entry = root.entry(key).map(|(k, v)| (k.clone(), v.clone()));
            let (class, module, pos) = match &entry {
                Some((_, value)) => match &value.value {
                    Value::Map(_) => (
                        tree::str_of(value, "name").or_else(|| tree::str_of(value, "class_name")).map(str::to_owned),
                        tree::str_of(value, "module").map(str::to_owned),
                        value.pos,
                    ),
                    Value::Str(text) => match text.rsplit_once('.') {
                        Some((module, class)) if !class.is_empty() => {
                            (Some(class.to_owned()), Some(module.to_owned()), value.pos)
                        }
                        _ => (Some(text.clone()), None, value.pos),
                    },
                    _ => continue, // validate reports the wrong type
                },
                None => (None, None, root.pos),
            };
            let state = root.get(state_key).filter(|s| s.as_map().is_some()).cloned();
            let class = match class {
                Some(class) if !class.is_empty() => class,
                _ => {
                    let fallback = format!(
                        "{}{}",
                        naming::to_pascal_case(tree::str_of(root, "node_name").unwrap_or("node")),
                        if key == "input_model" { "Input" } else { "Output" }
                    );
                    if state.is_none() {
                        self.warn(
                            Code::DialectApproximation,
                            pos,
                            key,
                            format!(
                                "the contract has no `{key}`; the node's {} is any JSON value (`{fallback}`)",
                                if key == "input_model" { "input" } else { "output" }
                            ),
                            &format!("add `{key}: {{name: ModelX, module: …}}` and map it with `--map-type`"),
                        );
                    }
                    fallback
                }
            };
            // A definition renamed in `definitions` (prelude names, PascalCase) keeps its models.
            let class = r.renamed.get(&format!("#/definitions/{class}")).cloned().unwrap_or(class);
            let key_pos = entry.as_ref().map_or(pos, |(k, _)| k.pos);
            tree::set(root, key, tree::string(&class, pos), key_pos);
            if r.definitions.contains(&class) {
                continue;
            }
            let schema_node = match (state, module.is_some() || entry.is_none()) {
                // A described state wins over an unmapped import.
                (Some(state), _) if r.type_map.lookup(&class, module.as_deref()).is_none() => state,
                (_, _) if entry.is_none() => tree::map(Vec::new(), pos),
                _ => {
                    let target = r.import(&class, module.as_deref(), pos, self.diags);
                    tree::map(vec![("$ref", tree::string(&target.pointer(), pos))], pos)
                }
            };
            r.definitions.insert(class.clone());
            let defs_pos = root.get("definitions").map_or(pos, |d| d.pos);
            if !tree::has(root, "definitions") {
                tree::set(root, "definitions", tree::map(Vec::new(), pos), key_pos);
            }
            if let Some(defs) = tree::get_mut(root, "definitions") {
                let _ = defs_pos;
                tree::set(defs, &class, schema_node, pos);
            }
        }
    }

    /// The four `io_operations` shapes → `{operation_type, atomic, timeout_seconds,
    /// description}` entries for the node's operations. Entries that configure no operation
    /// are reported once; an EFFECT node without usable entries gets one per operation.
    fn io_operations(&mut self, root: &mut Node, kind: Option<&str>) {
        let operations = crate::operations::in_tree(root);
        let original = root.get("io_operations").cloned();
        let list_pos = original.as_ref().map_or(root.pos, |n| n.pos);
        let mut out: Vec<Node> = Vec::new();
        let mut unused: Vec<String> = Vec::new();
        let mut configured = BTreeSet::new();
        for item in original.as_ref().and_then(Node::as_seq).unwrap_or_default() {
            if item.as_map().is_none() {
                continue;
            }
            let candidates: Vec<&Node> = ["operation_type", "operation_name", "operation", "name"]
                .iter()
                .filter_map(|k| item.get(k))
                .filter(|n| n.as_str().is_some())
                .collect();
            let matched = candidates.iter().find_map(|c| {
                let text = c.as_str().unwrap_or_default();
                match_operation(text, &operations).map(|op| (op, *c))
            });
            let Some((op, at)) = matched else {
                // Name the entry by its identifier, not by shape 2's read/write/delete.
                let label = ["operation_name", "operation", "name", "operation_type"]
                    .iter()
                    .find_map(|k| item.get(k).and_then(Node::as_str));
                if let Some(label) = label {
                    unused.push(label.to_owned());
                }
                continue;
            };
            if !configured.insert(op.clone()) {
                unused.push(at.as_str().unwrap_or_default().to_owned());
                continue;
            }
            let mut entry = tree::map(vec![("operation_type", tree::string(&op, at.pos))], item.pos);
            if let Some(atomic @ Node { value: Value::Bool(_), .. }) = item.get("atomic") {
                tree::set(&mut entry, "atomic", atomic.clone(), atomic.pos);
            }
            if let Some(timeout) = item.get("timeout_seconds") {
                let seconds = match timeout.value {
                    Value::Int(i) => Some(i as f64),
                    Value::Float(f) => Some(f),
                    _ => None,
                };
                if seconds.is_some_and(|s| s > 0.0 && s <= 86_400.0) {
                    tree::set(&mut entry, "timeout_seconds", timeout.clone(), timeout.pos);
                }
            }
            if let Some(description @ Node { value: Value::Str(_), .. }) = item.get("description") {
                tree::set(&mut entry, "description", description.clone(), description.pos);
            }
            // Settings a routed operation carries (crate::behaviour::routing).
            for key in ["idempotent", "input_fields", "output_fields"] {
                if let Some(value) = item.get(key) {
                    tree::set(&mut entry, key, value.clone(), value.pos);
                }
            }
            out.push(entry);
        }
        if !unused.is_empty() {
            self.warn(
                Code::DialectApproximation,
                list_pos,
                "io_operations",
                format!(
                    "io_operations entries {} configure no operation of this node (its operations: {}); their settings are not used",
                    unused.iter().map(|u| format!("`{u}`")).collect::<Vec<_>>().join(", "),
                    operations.join(", ")
                ),
                if root.get("handler_routing").is_some() {
                    "name a routed operation (a route's key, or its last `.`-separated part)"
                } else {
                    "name an operation_type value of the input model in `operation_type`"
                },
            );
        }
        if kind == Some("EFFECT") {
            for op in &operations {
                if !configured.contains(op) {
                    out.push(tree::map(vec![("operation_type", tree::string(op, list_pos))], list_pos));
                }
            }
        }
        if original.is_some() || !out.is_empty() {
            tree::set(root, "io_operations", tree::seq(out, list_pos), list_pos);
        }
    }

    /// Reads `subcontracts[].path` files (relative to the contract's folder): reports YAML
    /// problems in them and files that are missing or are not subcontracts.
    fn subcontracts(&mut self, root: &Node, source: &SourceFile) -> Vec<PathBuf> {
        let mut read = Vec::new();
        let Some(items) = root.get("subcontracts").and_then(Node::as_seq) else { return read };
        let base_dir = source.abs_path.parent().map(PathBuf::from).unwrap_or_default();
        let display_dir = source.display.rsplit_once('/').map_or("", |(d, _)| d).to_owned();
        for (i, item) in items.iter().enumerate() {
            let Some(path_node) = item.get("path") else { continue };
            let Some(relative) = path_node.as_str() else { continue };
            let clean = relative.trim_start_matches("./");
            let abs = base_dir.join(clean);
            let display = if display_dir.is_empty() { clean.to_owned() } else { format!("{display_dir}/{clean}") };
            let yaml_path = format!("subcontracts[{i}].path");
            if !abs.is_file() {
                self.warn(
                    Code::Io,
                    path_node.pos,
                    &yaml_path,
                    format!("subcontract `{relative}` does not exist (looked for `{display}`)"),
                    "fix the path (it is relative to the contract's folder) or remove the entry",
                );
                continue;
            }
            match crate::read::read_source(&base_dir, &abs) {
                Ok(mut sub) => {
                    sub.display = display.clone();
                    read.push(abs);
                    if let Some(sub_root) = crate::read::parse(&display, &sub.text, self.diags) {
                        let family = family::detect(&sub_root);
                        if family != Family::Subcontract {
                            self.warn(
                                Code::DialectApproximation,
                                path_node.pos,
                                &yaml_path,
                                format!("`{relative}` is {}, not a subcontract", family.describe()),
                                "point `path` at a subcontract file",
                            );
                        }
                    }
                }
                Err(d) => {
                    // The reader's message names the absolute path; keep the contract-relative one.
                    let reason =
                        if d.code == Code::YamlLimit { "it is too large" } else { "it is not a readable UTF-8 file" };
                    self.warn(
                        d.code,
                        path_node.pos,
                        &yaml_path,
                        format!("subcontract `{relative}` cannot be read: {reason}"),
                        "fix the file, or remove the entry",
                    );
                }
            }
        }
        read
    }
}

/// `1.2.3` (optionally `v1.2.3`) → its parts.
fn parse_semver(text: &str) -> Option<(i64, i64, i64)> {
    let text = text.trim().trim_start_matches('v');
    let mut parts = text.split('.').map(|p| p.parse::<u32>().ok().map(i64::from));
    let version = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(version)
}

/// `Name: {type: object, description: …}` with no properties, named like a dependency class
/// or described as an external dependency: a stand-in for an imported class.
fn is_external_stub(value: &Node, name: &str, dependency_classes: &BTreeMap<String, Option<String>>) -> bool {
    let Some(entries) = value.as_map() else { return false };
    let allowed = ["type", "description"];
    let only_stub_keys = entries.iter().all(|(k, _)| allowed.contains(&k.name.as_str()));
    let object = tree::str_of(value, "type").is_none_or(|t| t == "object");
    let described_external =
        tree::str_of(value, "description").is_some_and(|d| d.to_ascii_lowercase().contains("external dependency"));
    only_stub_keys && object && (dependency_classes.contains_key(name) || described_external)
}

/// The operation an io_operations name configures: the same name, the only operation whose
/// last `.`-separated part it is (`upsert_contract` → `postgres.upsert_contract`), or the only
/// operation it contains as a whole `_`-separated part (`kafka_message_produce` → `produce`).
fn match_operation(text: &str, operations: &[String]) -> Option<String> {
    if operations.iter().any(|o| o == text) {
        return Some(text.to_owned());
    }
    let mut dotted = operations.iter().filter(|o| o.rsplit_once('.').is_some_and(|(_, last)| last == text));
    if let (Some(only), None) = (dotted.next(), dotted.next()) {
        return Some(only.clone());
    }
    let padded = format!("_{text}_");
    let mut found = operations.iter().filter(|o| padded.contains(&format!("_{o}_")));
    let first = found.next()?;
    found.next().is_none().then(|| first.clone())
}

/// Appends a `type: model` dependency with `rust_type` for every external type.
fn add_external_dependencies(root: &mut Node, externals: &[External]) {
    if externals.is_empty() {
        return;
    }
    let pos = root.pos;
    if !matches!(root.get("dependencies"), Some(Node { value: Value::Seq(_), .. })) {
        tree::set(root, "dependencies", tree::seq(Vec::new(), pos), pos);
    }
    let Some(Node { value: Value::Seq(items), .. }) = tree::get_mut(root, "dependencies") else { return };
    let mut sorted: Vec<&External> = externals.iter().collect();
    sorted.sort_by(|a, b| a.dependency.cmp(&b.dependency));
    for ext in sorted {
        let p = ext.pos;
        let mut entry = vec![
            ("name", tree::string(&ext.dependency, p)),
            ("type", tree::string("model", p)),
            ("class_name", tree::string(&ext.class, p)),
            ("rust_type", tree::string(&ext.rust_type, p)),
        ];
        if let Some(module) = &ext.module {
            entry.push(("module", tree::string(module, p)));
        }
        items.push(tree::map(entry, p));
    }
}

#[cfg(test)]
mod tests;
