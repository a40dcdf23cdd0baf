//! The scaffold `node.rs`: rendered once from a minijinja template, then owned by people.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use minijinja::Environment;

use super::tokens::version_text;
use crate::model::NodeModel;

/// The scaffold `node.rs` for `node`, rendered from `template` (minijinja text such as
/// [`crate::templates::BUILTIN_NODE`]) and checked by syn.
pub fn scaffold(node: &NodeModel, template: &str) -> Result<String, String> {
    // The built-in template is compiled once per run, not once per node.
    static BUILTIN: OnceLock<Result<Environment<'static>, String>> = OnceLock::new();
    let own;
    let env = if template == crate::templates::BUILTIN_NODE {
        BUILTIN.get_or_init(|| environment(crate::templates::BUILTIN_NODE)).as_ref().map_err(Clone::clone)?
    } else {
        own = environment(template)?;
        &own
    };
    let mut imports = ["Dependencies".to_owned(), "Input".to_owned(), "Output".to_owned(), node.handler_trait.clone()];
    imports.sort();
    let operations: Vec<BTreeMap<&str, String>> = node
        .operations
        .iter()
        .map(|op| BTreeMap::from([("method", op.method.clone()), ("wire", op.wire.clone())]))
        .collect();
    let c = &node.contract;
    let state_machine = c.behaviour.state_machine.as_ref().map(super::state_machine::scaffold_context);
    let summary = c.description.value.trim().lines().next().unwrap_or_default().to_owned();
    let text = env
        .get_template("node.rs")
        .and_then(|t| {
            t.render(minijinja::context! {
                node_name => c.name.value,
                version => version_text(node),
                summary => summary,
                contract_path => c.source.display,
                handler_trait => node.handler_trait,
                scaffold => node.scaffold_type,
                imports => imports.join(", "),
                operations => operations,
                state_machine => state_machine,
            })
        })
        .map_err(|e| format!("template node.rs.jinja: {e}"))?;
    syn::parse_file(&text).map_err(|e| format!("internal: the scaffold does not parse: {e}"))?;
    Ok(text)
}

/// An environment holding `template` as `node.rs`.
fn environment(template: &str) -> Result<Environment<'_>, String> {
    let mut env = Environment::new();
    env.set_keep_trailing_newline(true);
    env.add_template("node.rs", template).map_err(|e| format!("template node.rs.jinja: {e}"))?;
    Ok(env)
}
