//! The minijinja templates: `node.rs.jinja` (the scaffold of each node's human-owned `node.rs`)
//! and `contract.yaml.jinja` (the contract `new` writes).
//!
//! Both are compiled in, so a build script reads no template file. A templates directory
//! (`--templates DIR`, [`crate::Builder::templates_dir`]) overrides them one by one: a file
//! with the template's name in it replaces the built-in one, a missing file keeps it. A
//! template that does not parse is refused when it is loaded, one that fails to render when it
//! is used; either error names the file.
//!
//! The variables each template sees:
//!
//! - `node.rs.jinja`: `node_name`, `version` (`1.0.0`), `summary` (the first line of the
//!   description), `contract_path`, `handler_trait`, `scaffold` (the struct name), `imports`
//!   (the names to import from `super::handler`, comma-separated) and `operations` (a list of
//!   `{method, wire}`). The result must parse as a Rust file.
//! - `contract.yaml.jinja`: `node_name`, `kind` (`EFFECT`, `COMPUTE`, …), `pascal` (the name
//!   between `node_` and the kind, in PascalCase) and `title` (the same in words).

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use crate::Output;
use crate::model::NodeModel;

/// The file name of the scaffold template.
pub const NODE_FILE: &str = "node.rs.jinja";

/// The file name of the contract template.
pub const CONTRACT_FILE: &str = "contract.yaml.jinja";

/// The built-in scaffold template (`templates/node.rs.jinja` in this repository).
pub const BUILTIN_NODE: &str = include_str!("../../templates/node.rs.jinja");

/// The built-in contract template (`templates/contract.yaml.jinja` in this repository).
pub const BUILTIN_CONTRACT: &str = include_str!("../../templates/contract.yaml.jinja");

/// One template: its text and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The template's file name (`node.rs.jinja` or `contract.yaml.jinja`).
    pub name: &'static str,
    /// The file it was read from; `None` for the built-in one.
    pub path: Option<PathBuf>,
    /// The template source.
    pub text: String,
}

impl Template {
    fn builtin(name: &'static str, text: &str) -> Self {
        Self { name, path: None, text: text.to_owned() }
    }

    /// Whether this is the compiled-in template.
    pub fn is_builtin(&self) -> bool {
        self.path.is_none()
    }

    /// The name errors use: the file's path, or `built-in <name>`.
    pub fn origin(&self) -> String {
        match &self.path {
            Some(path) => path.display().to_string(),
            None => format!("built-in {}", self.name),
        }
    }

    /// Renders the template with `context`; errors name the file.
    pub fn render(&self, context: minijinja::Value) -> Result<String, String> {
        let mut env = minijinja::Environment::new();
        env.set_keep_trailing_newline(true);
        env.add_template(self.name, &self.text)
            .and_then(|()| env.get_template(self.name))
            .and_then(|t| t.render(context))
            .map_err(|e| format!("template {}: {}", self.origin(), describe(&e)))
    }
}

/// A minijinja error with its cause chain and location (the `Display` of the error alone
/// leaves out the line for some errors).
fn describe(e: &minijinja::Error) -> String {
    let mut text = e.to_string();
    if let Some(line) = e.line()
        && !text.contains(&format!(":{line})"))
    {
        text.push_str(&format!(" (line {line})"));
    }
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// The two templates of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Templates {
    /// `node.rs.jinja`.
    pub node: Template,
    /// `contract.yaml.jinja`.
    pub contract: Template,
}

impl Default for Templates {
    fn default() -> Self {
        Self::builtin()
    }
}

impl Templates {
    /// The compiled-in templates.
    pub fn builtin() -> Self {
        Self {
            node: Template::builtin(NODE_FILE, BUILTIN_NODE),
            contract: Template::builtin(CONTRACT_FILE, BUILTIN_CONTRACT),
        }
    }

    /// The templates of `dir`, each falling back to the built-in one when `dir` has no file of
    /// that name; with no `dir`, the built-in ones. A `dir` that is not a directory, a file
    /// that cannot be read and a template that does not parse are errors naming the path.
    pub fn load(dir: Option<&Path>) -> Result<Self, String> {
        let mut templates = Self::builtin();
        let Some(dir) = dir else { return Ok(templates) };
        if !dir.is_dir() {
            return Err(format!("templates directory {} does not exist or is not a directory", dir.display()));
        }
        for template in [&mut templates.node, &mut templates.contract] {
            let path = dir.join(template.name);
            if !path.exists() {
                continue;
            }
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("cannot read template {}: {e}", path.display()))?;
            *template = Template { name: template.name, path: Some(path), text };
            // Parse now, so a broken template is reported even when nothing needs rendering.
            let mut env = minijinja::Environment::new();
            env.add_template(template.name, &template.text)
                .map_err(|e| format!("template {}: {}", template.origin(), describe(&e)))?;
        }
        Ok(templates)
    }

    /// The files read from the templates directory.
    pub fn files(&self) -> Vec<&Path> {
        [&self.node, &self.contract].into_iter().filter_map(|t| t.path.as_deref()).collect()
    }

    /// Feeds the templates' origin and text to `hasher` (for the build script's no-op stamp).
    pub fn hash_into(&self, hasher: &mut impl Hasher) {
        for template in [&self.node, &self.contract] {
            template.path.hash(hasher);
            template.text.hash(hasher);
        }
    }

    /// Re-renders every scaffold of `out` with the node template, when it is not the built-in
    /// one (the emitter renders the built-in one). `nodes` are the nodes `out` was rendered
    /// from. Errors name the template file and the node.
    pub fn apply(&self, nodes: &[NodeModel], out: &mut Output) -> Result<(), String> {
        if self.node.is_builtin() {
            return Ok(());
        }
        for node in nodes {
            let rel = format!("{}/node.rs", crate::emit::node_dir(node));
            let text = crate::emit::scaffold(node, &self.node.text).map_err(|e| {
                // The emitter names the built-in file and calls a non-Rust result internal;
                // here the template is the user's.
                let e = e.strip_prefix("template node.rs.jinja: ").unwrap_or(&e);
                let e = e.strip_prefix("internal: ").unwrap_or(e);
                format!("template {} (rendering `{}`): {e}", self.node.origin(), node.contract.name.value)
            })?;
            out.scaffolds.insert(rel, text);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("codegen-templates-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_directory_overrides_only_the_templates_it_holds() {
        let dir = scratch("override");
        std::fs::write(dir.join(CONTRACT_FILE), "node_name: {{ node_name }}\n").unwrap();
        let templates = Templates::load(Some(&dir)).unwrap();
        assert!(templates.node.is_builtin());
        assert_eq!(templates.contract.path.as_deref(), Some(dir.join(CONTRACT_FILE).as_path()));
        assert_eq!(templates.files(), [dir.join(CONTRACT_FILE).as_path()]);
        let text = templates.contract.render(minijinja::context! { node_name => "node_x_effect" }).unwrap();
        assert_eq!(text, "node_name: node_x_effect\n");
        assert_eq!(Templates::load(None).unwrap(), Templates::builtin());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn broken_templates_and_missing_directories_are_errors_naming_the_path() {
        let dir = scratch("broken");
        std::fs::write(dir.join(NODE_FILE), "{% for x in %}\n").unwrap();
        let err = Templates::load(Some(&dir)).unwrap_err();
        assert!(err.contains(&dir.join(NODE_FILE).display().to_string()) && err.contains("syntax error"), "{err}");
        let missing = dir.join("nope");
        let err = Templates::load(Some(&missing)).unwrap_err();
        assert!(err.contains(&missing.display().to_string()), "{err}");

        std::fs::write(dir.join(NODE_FILE), "{{ \"a\" + 1 }}\n").unwrap();
        let templates = Templates::load(Some(&dir)).unwrap();
        let err = templates.node.render(minijinja::context! {}).unwrap_err();
        assert!(err.starts_with(&format!("template {}: ", dir.join(NODE_FILE).display())), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_stamp_changes_with_the_text() {
        let hash = |t: &Templates| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            t.hash_into(&mut h);
            h.finish()
        };
        let mut other = Templates::builtin();
        other.node.text.push('\n');
        assert_ne!(hash(&Templates::builtin()), hash(&other));
    }
}
