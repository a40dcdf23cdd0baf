//! `codegen new node_<name>_<kind>`: a new contract from the contract template
//! (`contract.yaml.jinja`, see [`crate::templates`]).

use std::path::{Path, PathBuf};

use crate::naming::{is_snake_case, to_pascal_case};
use crate::templates::{Template, Templates};

/// The kind a node name ends with, upper case.
fn kind_of(name: &str) -> Option<&'static str> {
    [("_effect", "EFFECT"), ("_compute", "COMPUTE"), ("_reducer", "REDUCER"), ("_orchestrator", "ORCHESTRATOR")]
        .into_iter()
        .find(|(suffix, _)| name.ends_with(suffix) && name.len() > "node_".len() + suffix.len())
        .map(|(_, kind)| kind)
}

/// The text of a new contract for `node_name` from the built-in template, or why the name is
/// not acceptable.
pub fn render(node_name: &str) -> Result<String, String> {
    render_with(node_name, &Templates::builtin().contract)
}

/// [`render`] with another contract template.
pub fn render_with(node_name: &str, template: &Template) -> Result<String, String> {
    let kind = kind_of(node_name);
    if !node_name.starts_with("node_") || !is_snake_case(node_name) || kind.is_none() {
        return Err(format!(
            "`{node_name}` breaks the naming convention: use `node_<name>_<kind>` in lower snake case, \
             where <kind> is effect, compute, reducer or orchestrator (e.g. `node_cache_writer_effect`)"
        ));
    }
    let kind = kind.unwrap_or("EFFECT");
    let suffix = format!("_{}", kind.to_ascii_lowercase());
    let core = node_name.trim_start_matches("node_").trim_end_matches(suffix.as_str());
    let pascal = to_pascal_case(core);
    let title = core.split('_').collect::<Vec<_>>().join(" ");
    template.render(minijinja::context! {
        node_name => node_name,
        kind => kind,
        pascal => pascal,
        title => title,
    })
}

/// Where `new` writes the contract for `node_name` under `contracts_dir`.
pub fn contract_path(contracts_dir: &Path, node_name: &str) -> PathBuf {
    contracts_dir.join("nodes").join(node_name).join("v1_0_0").join("contract.yaml")
}

/// Writes the new contract from the built-in template; refuses to overwrite an existing one.
pub fn create(contracts_dir: &Path, node_name: &str) -> Result<PathBuf, String> {
    create_with(contracts_dir, node_name, &Templates::builtin())
}

/// [`create`] with the contract template of `templates`.
pub fn create_with(contracts_dir: &Path, node_name: &str, templates: &Templates) -> Result<PathBuf, String> {
    let text = render_with(node_name, &templates.contract)?;
    let path = contract_path(contracts_dir, node_name);
    if path.exists() {
        return Err(format!("{} already exists; `new` never overwrites a contract", path.display()));
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}
