//! The scaffold `node.rs`: rendered once from a minijinja template, then owned by people.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use minijinja::Environment;

use super::tokens::version_text;
use crate::model::NodeModel;

/// The scaffold `node.rs` for `node`, rendered from `template` (minijinja text such as
/// [`crate::templates::BUILTIN_NODE`]) and checked to be Rust.
///
/// The check: a template of people's own is parsed by syn after rendering. The built-in one is
/// Rust whatever it is given as long as each value it writes into code is an identifier and
/// each value it writes into a comment or a string literal is plain text (`builtin_parses`):
/// a syn parse of the whole file per node cost a run of the corpus package 6 % of its
/// instructions. A pipeline test parses scaffolds rendered from the built-in template, and
/// values that are not plain still take the full parse.
pub fn scaffold(node: &NodeModel, template: &str) -> Result<String, String> {
    // The built-in template is compiled once per run, not once per node.
    static BUILTIN: OnceLock<Result<Environment<'static>, String>> = OnceLock::new();
    let own;
    let builtin = template == crate::templates::BUILTIN_NODE;
    let env = if builtin {
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
    if !(builtin && builtin_parses(node)) {
        syn::parse_file(&text).map_err(|e| format!("internal: the scaffold does not parse: {e}"))?;
    }
    Ok(text)
}

/// Whether the built-in template is sure to give Rust for `node`: it writes `handler_trait`,
/// `scaffold`, the imports and every `method` as identifiers; `node_name`, `version`,
/// `summary`, `contract_path`, every `wire` and every guard's `text` into a `//` or `///`
/// comment or between the quotes of a string literal, where any text without a control
/// character, `"` or `\` is Rust. Keep it in step with `templates/node.rs.jinja`.
fn builtin_parses(node: &NodeModel) -> bool {
    let is_ident = |name: &str| syn::parse_str::<syn::Ident>(name).is_ok();
    let plain = |text: &str| !text.chars().any(|ch| ch.is_control() || ch == '"' || ch == '\\');
    let c = &node.contract;
    let summary = c.description.value.trim().lines().next().unwrap_or_default();
    let idents = [node.handler_trait.as_str(), node.scaffold_type.as_str()].into_iter();
    let texts = [c.name.value.as_str(), summary, c.source.display.as_str()].into_iter();
    let (mut idents, mut texts): (Vec<&str>, Vec<&str>) = (idents.collect(), texts.collect());
    for op in &node.operations {
        idents.push(&op.method);
        texts.push(&op.wire);
    }
    if let Some(machine) = &c.behaviour.state_machine {
        for action in &machine.actions {
            idents.push(&action.method);
            texts.push(&action.wire);
        }
        for guard in &machine.guards {
            idents.push(&guard.method);
            texts.push(&guard.text);
        }
    }
    idents.into_iter().all(is_ident) && texts.into_iter().all(plain)
}

/// An environment holding `template` as `node.rs`.
fn environment(template: &str) -> Result<Environment<'_>, String> {
    let mut env = Environment::new();
    env.set_keep_trailing_newline(true);
    env.add_template("node.rs", template).map_err(|e| format!("template node.rs.jinja: {e}"))?;
    Ok(env)
}
