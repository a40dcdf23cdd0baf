//! The user's map from external (Python) type names to Rust types.
//!
//! Foreign contracts name types that live outside the contract: pydantic models in Python
//! modules, `#/shared_models/*` import records, `module#/Class` references and external stubs.
//! Each becomes the Rust type given here (`--map-type ModelOnexEvent=onex_runtime::event::OnexEvent`
//! or a `types:` mapping in a YAML config file); an unmapped one becomes `serde_json::Value`
//! with a warning that names it.

use std::collections::BTreeMap;
use std::path::Path;

use crate::diagnostics::{Code, Diagnostic, Pos};

/// What an unmapped external type becomes.
pub const FALLBACK_RUST_TYPE: &str = "serde_json::Value";

/// External type name (a class name, or `module.Class`) → Rust type path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeMap {
    entries: BTreeMap<String, String>,
}

impl TypeMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `name` → `rust_type`, replacing an earlier entry for the same name.
    /// Fails when `rust_type` does not parse as a Rust type or `name` is empty.
    pub fn insert(&mut self, name: &str, rust_type: &str) -> Result<(), String> {
        let name = name.trim();
        let rust_type = rust_type.trim();
        if name.is_empty() {
            return Err("the external type name is empty".to_owned());
        }
        if syn::parse_str::<syn::Type>(rust_type).is_err() {
            return Err(format!("`{rust_type}` is not a Rust type"));
        }
        self.entries.insert(name.to_owned(), rust_type.to_owned());
        Ok(())
    }

    /// Parses one `--map-type` argument, `Name=rust::Path`.
    pub fn insert_arg(&mut self, arg: &str) -> Result<(), String> {
        let Some((name, rust_type)) = arg.split_once('=') else {
            return Err(format!("`{arg}` is not `Name=rust::Path`"));
        };
        self.insert(name, rust_type).map_err(|e| format!("--map-type {arg}: {e}"))
    }

    /// Reads a config file: a YAML mapping with `types: {Name: rust::Path, …}`. Problems are
    /// located diagnostics; good entries are kept.
    pub fn load_file(&mut self, path: &Path, diags: &mut Vec<Diagnostic>) {
        let display = path.to_string_lossy().replace('\\', "/");
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                diags.push(
                    Diagnostic::error(Code::Io, &display, Pos::new(1, 1), "", format!("cannot read the type map: {e}"))
                        .with_hint("pass an existing YAML file with a `types:` mapping"),
                );
                return;
            }
        };
        let Some(root) = crate::read::parse(&display, &text, diags) else { return };
        let Some(types) = root.get("types") else {
            diags.push(
                Diagnostic::error(
                    Code::MissingKey,
                    &display,
                    root.pos,
                    "types",
                    "the type map has no `types:` mapping",
                )
                .with_hint("write `types:` followed by `ModelX: my_crate::X` lines"),
            );
            return;
        };
        let Some(entries) = types.as_map() else {
            diags.push(
                Diagnostic::error(Code::WrongType, &display, types.pos, "types", "`types` must be a mapping")
                    .with_hint("write `types:` followed by `ModelX: my_crate::X` lines"),
            );
            return;
        };
        for (key, value) in entries {
            let path = format!("types.{}", key.name);
            let result = match value.as_str() {
                Some(rust_type) => self.insert(&key.name, rust_type),
                None => Err(format!("the Rust type must be a string, found {}", value.type_name())),
            };
            if let Err(message) = result {
                diags.push(
                    Diagnostic::error(Code::InvalidRustType, &display, value.pos, &path, message)
                        .with_hint("write a Rust path such as `onex_runtime::event::OnexEvent`"),
                );
            }
        }
    }

    /// The Rust type for the external `class` from `module` (the qualified name wins).
    pub fn lookup(&self, class: &str, module: Option<&str>) -> Option<&str> {
        module
            .and_then(|m| self.entries.get(&format!("{m}.{class}")))
            .or_else(|| self.entries.get(class))
            .map(String::as_str)
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_and_lookup() {
        let mut map = TypeMap::new();
        map.insert_arg("ModelOnexEvent=onex_runtime::event::OnexEvent").unwrap();
        map.insert_arg("pkg.mod.ModelX = my::X").unwrap();
        assert_eq!(map.lookup("ModelOnexEvent", Some("a.b")), Some("onex_runtime::event::OnexEvent"));
        assert_eq!(map.lookup("ModelX", Some("pkg.mod")), Some("my::X"));
        assert_eq!(map.lookup("ModelX", Some("other")), None);
        assert!(map.insert_arg("NoEquals").is_err());
        assert!(map.insert_arg("X=not a type!").is_err());
        assert!(map.insert_arg("=a::B").is_err());
    }

    #[test]
    fn config_file_reports_bad_entries_with_location() {
        let dir = std::env::temp_dir().join(format!("codegen-typemap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("types.yaml");
        std::fs::write(&file, "types:\n  A: a::A\n  B: 'not a type!'\n").unwrap();
        let mut map = TypeMap::new();
        let mut diags = Vec::new();
        map.load_file(&file, &mut diags);
        assert_eq!(map.lookup("A", None), Some("a::A"));
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].code, Code::InvalidRustType);
        assert_eq!(diags[0].pos, Pos::new(3, 6));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
