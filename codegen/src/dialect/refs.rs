//! `$ref` and friends as JSON pointers from the document root, and the external types they
//! reach.
//!
//! Foreign contracts point at types in four ways: `#/definitions/X` (also grouped:
//! `#/definitions/models/X`), `#/shared_models/X` (an import record `{module, class_name}`),
//! `module.path#/Class` (a Python class) and the bare names of `reference:` / `type: ref`.
//! Local targets become `#/definitions/X`; external ones become `#/dependencies/<name>` of a
//! synthesized `type: model` dependency whose `rust_type` comes from the type map.

use std::collections::{BTreeMap, BTreeSet};

use crate::diagnostics::{Code, Diagnostic, Pos};
use crate::read::{Node, Value};

use super::typemap::{FALLBACK_RUST_TYPE, TypeMap};

/// Keys under `definitions` that group schemas rather than name one.
pub const GROUPS: [&str; 4] = ["models", "enums", "schemas", "responses"];

/// An external type the contract uses, and what it became in Rust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct External {
    /// The class name (`ModelOnexEvent`).
    pub class: String,
    /// The Python module, when the contract says.
    pub module: Option<String>,
    /// The synthesized dependency's name (`external_model_onex_event`).
    pub dependency: String,
    /// The Rust type it maps to.
    pub rust_type: String,
    /// Whether the type map gave `rust_type` (otherwise it is `serde_json::Value`).
    pub mapped: bool,
    /// Where it is first used.
    pub pos: Pos,
}

/// Where a reference leads after normalization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `#/definitions/<name>` (flattened, renamed name).
    Local(String),
    /// `#/dependencies/<name>` as written (our dialect).
    Dependency(String),
    /// An external type (see [`External`]), by its dependency name.
    External(String),
}

impl Target {
    /// The `$ref` string of our dialect.
    pub fn pointer(&self) -> String {
        match self {
            Target::Local(name) => format!("#/definitions/{name}"),
            Target::Dependency(name) | Target::External(name) => format!("#/dependencies/{name}"),
        }
    }
}

/// What references resolve against: the document as written, the flattened definition names,
/// renamed pointers and the externals collected so far.
pub struct Resolver<'a> {
    /// The display path of the file, for diagnostics.
    pub file: &'a str,
    /// The document as written.
    pub original: &'a Node,
    /// The user's type map.
    pub type_map: &'a TypeMap,
    /// Definition names after flattening and renaming.
    pub definitions: BTreeSet<String>,
    /// Original pointer (`#/definitions/models/x_model`) → definition name.
    pub renamed: BTreeMap<String, String>,
    /// Names of the contract's own dependencies (to keep synthesized names unique).
    pub dependency_names: BTreeSet<String>,
    /// Externals by class name (module-qualified when two modules share a class name).
    pub externals: BTreeMap<String, External>,
}

impl Resolver<'_> {
    /// Resolves a `$ref` string written at `pos` (YAML path `path`). `None` after reporting
    /// an error when it points to nothing.
    pub fn resolve_pointer(
        &mut self,
        target: &str,
        pos: Pos,
        path: &str,
        diags: &mut Vec<Diagnostic>,
    ) -> Option<Target> {
        if let Some(name) = self.renamed.get(target) {
            return Some(Target::Local(name.clone()));
        }
        if let Some(rest) = target.strip_prefix("#/dependencies/") {
            return Some(Target::Dependency(rest.to_owned()));
        }
        if let Some(rest) = target.strip_prefix("#/definitions/") {
            let segments: Vec<String> = rest.split('/').map(unescape).collect();
            let name = match segments.as_slice() {
                [name] => Some(name.clone()),
                [group, name] if GROUPS.contains(&group.as_str()) => Some(name.clone()),
                _ => None,
            };
            if let Some(name) = name.filter(|n| self.definitions.contains(n)) {
                return Some(Target::Local(name));
            }
        }
        if let Some(pointer) = target.strip_prefix('#') {
            return match json_pointer(self.original, pointer) {
                Some(found) if is_import_record(found) => {
                    let class = import_class(found, pointer);
                    let module = found.get("module").and_then(Node::as_str).map(str::to_owned);
                    Some(self.import_or_local(&class, module.as_deref(), pos, diags))
                }
                Some(found) if found.as_map().is_some() => {
                    diags.push(
                        Diagnostic::error(
                            Code::UnresolvedRef,
                            self.file,
                            pos,
                            path,
                            format!("`$ref: {target}` points at a schema outside `definitions`"),
                        )
                        .with_related(self.file, found.pos, "the target is here")
                        .with_hint("move the schema under `definitions` and refer to `#/definitions/<Name>`"),
                    );
                    None
                }
                _ => {
                    let known: Vec<&str> = self.definitions.iter().map(String::as_str).collect();
                    diags.push(
                        Diagnostic::error(
                            Code::UnresolvedRef,
                            self.file,
                            pos,
                            path,
                            format!("`$ref: {target}` points to nothing in this file"),
                        )
                        .with_hint(format!(
                            "refer to one of the definitions ({}) or to an import under `shared_models`",
                            if known.is_empty() { "none defined".to_owned() } else { known.join(", ") }
                        )),
                    );
                    None
                }
            };
        }
        if let Some((module, class)) = target.split_once('#') {
            let class = class.trim_start_matches('/').rsplit('/').next().unwrap_or_default();
            if !class.is_empty() {
                let module = (!module.is_empty()).then_some(module);
                return Some(self.import(class, module, pos, diags));
            }
        }
        diags.push(
            Diagnostic::error(
                Code::UnresolvedRef,
                self.file,
                pos,
                path,
                format!("`$ref: {target}` is neither a JSON pointer (`#/…`) nor a `module#/Class` reference"),
            )
            .with_hint("write `#/definitions/<Name>`, `#/shared_models/<Name>` or `python.module#/Class`"),
        );
        None
    }

    /// Resolves a bare type name (`reference: X`, `type: ref` + `ref: X`, `input_model: X`):
    /// a local definition, else a `shared_models` import, else an external class.
    pub fn resolve_name(&mut self, name: &str, module: Option<&str>, pos: Pos, diags: &mut Vec<Diagnostic>) -> Target {
        if let Some(renamed) = self.renamed.get(&format!("#/definitions/{name}")) {
            return Target::Local(renamed.clone());
        }
        if self.definitions.contains(name) && self.type_map.lookup(name, module).is_none() {
            return Target::Local(name.to_owned());
        }
        if let Some(record) = self.original.get("shared_models").and_then(|s| s.get(name))
            && is_import_record(record)
        {
            let class = import_class(record, name);
            let module = record.get("module").and_then(Node::as_str).map(str::to_owned);
            return self.import_or_local(&class, module.as_deref(), pos, diags);
        }
        self.import(name, module, pos, diags)
    }

    /// An import that a local definition of the same name stands in for, unless the type map
    /// maps it (hook_node both imports its shared models and describes them inline).
    pub fn import_or_local(
        &mut self,
        class: &str,
        module: Option<&str>,
        pos: Pos,
        diags: &mut Vec<Diagnostic>,
    ) -> Target {
        if self.type_map.lookup(class, module).is_none() && self.definitions.contains(class) {
            return Target::Local(class.to_owned());
        }
        self.import(class, module, pos, diags)
    }

    /// The external `class`: the type map decides its Rust type, and an unmapped class becomes
    /// `serde_json::Value` with a warning (once per class and file).
    pub fn import(&mut self, class: &str, module: Option<&str>, pos: Pos, diags: &mut Vec<Diagnostic>) -> Target {
        let mapped = self.type_map.lookup(class, module).map(str::to_owned);
        if let Some(existing) = self.externals.get(class) {
            return Target::External(existing.dependency.clone());
        }
        let base = format!("external_{}", crate::naming::to_snake_case(class));
        let dependency = crate::naming::first_free(&base, |n| self.dependency_names.contains(n));
        self.dependency_names.insert(dependency.clone());
        let (rust_type, is_mapped) = match mapped {
            Some(rust_type) => (rust_type, true),
            None => {
                let from = module.map(|m| format!(" (from `{m}`)")).unwrap_or_default();
                diags.push(
                    Diagnostic::warning(
                        Code::UnmappedExternalType,
                        self.file,
                        pos,
                        "",
                        format!("external type `{class}`{from} has no Rust mapping; it becomes `{FALLBACK_RUST_TYPE}`"),
                    )
                    .with_hint(format!("map it: `--map-type {class}=<rust::Path>` or `{class}: <rust::Path>` under `types:` in the type map file")),
                );
                (FALLBACK_RUST_TYPE.to_owned(), false)
            }
        };
        self.externals.insert(
            class.to_owned(),
            External {
                class: class.to_owned(),
                module: module.map(str::to_owned),
                dependency: dependency.clone(),
                rust_type,
                mapped: is_mapped,
                pos,
            },
        );
        Target::External(dependency)
    }
}

/// Whether `node` is an import record: `{module, class_name}` or `{name, module}` and no schema keys.
pub fn is_import_record(node: &Node) -> bool {
    let Some(entries) = node.as_map() else { return false };
    let has = |k: &str| entries.iter().any(|(key, _)| key.name == k);
    let schema_keys = ["type", "properties", "$ref", "enum", "items", "oneOf", "additionalProperties"];
    has("module") && (has("class_name") || has("name")) && !schema_keys.iter().any(|k| has(k))
}

/// The class an import record names (`class_name`, else `name`, else the last pointer segment).
pub fn import_class(record: &Node, pointer: &str) -> String {
    record
        .get("class_name")
        .or_else(|| record.get("name"))
        .and_then(Node::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| pointer.rsplit('/').next().unwrap_or_default().to_owned())
}

/// RFC 6901 resolution of `pointer` (without the leading `#`) from `root`.
pub fn json_pointer<'n>(root: &'n Node, pointer: &str) -> Option<&'n Node> {
    if pointer.is_empty() {
        return Some(root);
    }
    let mut node = root;
    for segment in pointer.strip_prefix('/')?.split('/') {
        let segment = unescape(segment);
        node = match &node.value {
            Value::Map(_) => node.get(&segment)?,
            Value::Seq(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(node)
}

fn unescape(segment: &str) -> String {
    segment.replace("~1", "/").replace("~0", "~")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> Node {
        let mut diags = Vec::new();
        crate::read::parse("t.yaml", text, &mut diags).unwrap()
    }

    #[test]
    fn pointers() {
        let root = doc("a:\n  b~c: [x, {y: 1}]\n  'd/e': 2\n");
        assert_eq!(json_pointer(&root, "/a/b~0c/1/y").unwrap().value, Value::Int(1));
        assert_eq!(json_pointer(&root, "/a/d~1e").unwrap().value, Value::Int(2));
        assert!(json_pointer(&root, "/a/zz").is_none());
        assert!(json_pointer(&root, "a").is_none());
        assert!(json_pointer(&root, "/a/b~0c/9").is_none());
    }

    #[test]
    fn shared_models_external_and_local() {
        let root = doc("shared_models:\n  ModelA: {module: pkg.a, class_name: ModelA}\n");
        let type_map = TypeMap::new();
        let mut r = Resolver {
            file: "t.yaml",
            original: &root,
            type_map: &type_map,
            definitions: ["ModelLocal".to_owned()].into(),
            renamed: BTreeMap::new(),
            dependency_names: BTreeSet::new(),
            externals: BTreeMap::new(),
        };
        let mut diags = Vec::new();
        let p = Pos::new(1, 1);
        assert_eq!(
            r.resolve_pointer("#/shared_models/ModelA", p, "x", &mut diags),
            Some(Target::External("external_model_a".into()))
        );
        assert_eq!(diags.len(), 1, "one warning per unmapped class");
        assert_eq!(diags[0].code, Code::UnmappedExternalType);
        assert_eq!(
            r.resolve_pointer("pkg.b#/ModelA", p, "x", &mut diags),
            Some(Target::External("external_model_a".into()))
        );
        assert_eq!(
            r.resolve_pointer("#/definitions/models/ModelLocal", p, "x", &mut diags),
            Some(Target::Local("ModelLocal".into()))
        );
        assert_eq!(r.resolve_pointer("#/nothing/here", p, "x", &mut diags), None);
        assert_eq!(diags.last().unwrap().code, Code::UnresolvedRef);
        assert_eq!(r.resolve_pointer("plain", p, "x", &mut diags), None);
    }
}
