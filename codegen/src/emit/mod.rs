//! Stage 4: Rust source for every node. Items are built as `quote!` tokens, checked by
//! `syn::parse2` and printed by `prettyplease`, one item (or one group of `use` or `mod` lines)
//! at a time so a blank line separates them. Scaffolds come from a minijinja template (they
//! are human-owned, rustfmt-formatted code). Nothing here touches the disk: see
//! [`crate::write_tree`].
//!
//! One module per generated file of a node (`models`, `contract`, `handler`, `registry`,
//! `scaffold`); `tokens` holds what they share; this module assembles the crate's files.

mod contract;
mod handler;
mod models;
mod registry;
mod scaffold;
mod state_machine;
mod tokens;
mod topics;
mod workflow;

use std::collections::BTreeMap;

use quote::quote;

use crate::diagnostics::{Code, Diagnostic, Pos};
use crate::model::NodeModel;
pub use scaffold::scaffold;
use tokens::{ident, inner_doc, mod_items, render_file, version_cmp, version_text};

/// The files of one run: paths relative to the crate's `src/`, `/`-separated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// Always regenerated (`@generated`).
    pub generated: BTreeMap<String, String>,
    /// Written only when missing (`node.rs`), then owned by people.
    pub scaffolds: BTreeMap<String, String>,
}

/// Where a node's files go, relative to `src/`: `nodes/<node>/v<M>_<m>_<p>`.
pub fn node_dir(node: &NodeModel) -> String {
    format!("nodes/{}/{}", node.contract.name.value, node.contract.version_module())
}

fn node_mod_file(node: &NodeModel) -> Result<String, String> {
    let c = &node.contract;
    let source = c.source.display.as_str();
    let summary = c.description.value.trim().lines().next().unwrap_or_default().to_owned();
    let inner = inner_doc(&format!("`{}` v{}: {summary}", c.name.value, version_text(node)));
    // rustfmt formats this file (`node.rs` below it is people's code): one `pub use` per item,
    // since a brace list would be wrapped differently by prettyplease and rustfmt, in the order
    // rustfmt sorts them.
    let mut uses = [node.handler_trait.as_str(), node.node_type.as_str(), "Dependencies"];
    uses.sort_by(|a, b| version_cmp(a, b));
    let uses = uses.iter().map(|n| ident(n)).collect::<Result<Vec<_>, _>>()?;
    let scaffold = ident(&node.scaffold_type)?;
    let mut modules = vec!["contract", "handler", "models", "node", "registry"];
    modules.extend(behaviour_files(node).into_iter().map(|(file, _)| file.trim_end_matches(".rs")));
    modules.sort_by(|a, b| version_cmp(a, b));
    let items = vec![
        mod_items(&modules)?,
        quote! {
            pub use contract::CONTRACT;
            #( pub use handler::#uses; )*
            pub use node::#scaffold;
            pub use registry::REGISTRATION;
        },
    ];
    render_file(source, &inner, items)
}

/// The files of the behaviour sections the node's contract has ([`crate::behaviour`]).
fn behaviour_files(node: &NodeModel) -> Vec<(&'static str, Result<String, String>)> {
    let b = &node.contract.behaviour;
    let mut files = Vec::new();
    if let Some(section) = &b.state_machine {
        files.push(("state_machine.rs", state_machine::file(node, section)));
    }
    if let Some(section) = &b.topics {
        files.push(("topics.rs", topics::file(node, section)));
    }
    if let Some(section) = &b.workflow {
        files.push(("workflow.rs", workflow::file(node, section)));
    }
    files
}

fn render_nodes(nodes: &[NodeModel], (out, diags): &mut (Output, Vec<Diagnostic>)) {
    let fail = |node: &NodeModel, message: String| {
        Diagnostic::error(Code::UnsupportedSchema, &node.contract.source.display, Pos::new(1, 1), "", message)
            .with_hint("this is a generator bug or a rust_type that does not print; please report it with the contract")
    };
    for node in nodes {
        let dir = node_dir(node);
        let files = [
            ("mod.rs", node_mod_file(node)),
            ("models.rs", models::models_file(node)),
            ("contract.rs", contract::contract_file(node)),
            ("handler.rs", handler::handler_file(node)),
            ("registry.rs", registry::registry_file(node)),
        ];
        for (file, text) in files.into_iter().chain(behaviour_files(node)) {
            match text {
                Ok(text) => {
                    out.generated.insert(format!("{dir}/{file}"), text);
                }
                Err(message) => diags.push(fail(node, message)),
            }
        }
        match scaffold(node, crate::templates::BUILTIN_NODE) {
            Ok(text) => {
                out.scaffolds.insert(format!("{dir}/node.rs"), text);
            }
            Err(message) => diags.push(fail(node, message)),
        }
    }
}

/// Renders every file of a run. `base` is the contracts folder's display name (`contracts`).
pub fn render(base: &str, nodes: &[NodeModel]) -> Result<Output, Vec<Diagnostic>> {
    // Nodes are independent: render them on all cores. Results land in BTreeMaps and the
    // diagnostics are sorted, so the output never depends on scheduling. Each thread takes the
    // next node when it is done with one: nodes differ in cost, so equal shares would leave
    // one core idle while another still has work.
    let threads = std::thread::available_parallelism().map_or(1, usize::from).clamp(1, 8).min(nodes.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let (parts, crate_files): (Vec<(Output, Vec<Diagnostic>)>, _) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut part = (Output::default(), Vec::new());
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(node) = nodes.get(i) else { break part };
                        render_nodes(std::slice::from_ref(node), &mut part);
                    }
                })
            })
            .collect();
        // The crate's own files need only the node list: this thread prints them while the
        // others render the nodes, rather than after.
        let crate_files = crate_files(base, nodes);
        let parts = handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    let d = Diagnostic::error(
                        Code::UnsupportedSchema,
                        base,
                        Pos::new(1, 1),
                        "",
                        "internal: a render thread panicked",
                    )
                    .with_hint("please report this with the contracts");
                    (Output::default(), vec![d])
                })
            })
            .collect();
        (parts, crate_files)
    });
    let mut out = Output::default();
    let mut diags = Vec::new();
    for (part, part_diags) in parts {
        out.generated.extend(part.generated);
        out.scaffolds.extend(part.scaffolds);
        diags.extend(part_diags);
    }
    crate::diagnostics::sort(&mut diags);
    if !diags.is_empty() {
        return Err(diags);
    }
    match crate_files {
        Ok(files) => out.generated.extend(files),
        Err(message) => {
            return Err(vec![Diagnostic::error(Code::UnsupportedSchema, base, Pos::new(1, 1), "", message)]);
        }
    }
    Ok(out)
}

fn crate_files(base: &str, nodes: &[NodeModel]) -> Result<BTreeMap<String, String>, String> {
    let mut files = BTreeMap::new();
    let source = format!("{base}/");
    let lib_inner = inner_doc(
        "ONEX nodes generated from the contracts under `contracts/`.\n\n\
         Everything here is written by `cargo run -p codegen` except the `node.rs` files,\n\
         which implement each node's handler trait and are owned by people.",
    );
    files.insert(
        "lib.rs".to_owned(),
        render_file(
            &source,
            &lib_inner,
            vec![mod_items(&["nodes", "registry"])?, quote! { pub use registry::registry; }],
        )?,
    );
    // nodes/mod.rs and nodes/<node>/mod.rs.
    let mut by_name: BTreeMap<&str, Vec<&NodeModel>> = BTreeMap::new();
    for node in nodes {
        by_name.entry(node.contract.name.value.as_str()).or_default().push(node);
    }
    let node_mods = mod_items(&by_name.keys().copied().collect::<Vec<_>>())?;
    files.insert(
        "nodes/mod.rs".to_owned(),
        render_file(&source, &inner_doc("One module per node contract, one submodule per version."), vec![node_mods])?,
    );
    for (name, versions) in &by_name {
        let mut mods: Vec<String> = versions.iter().map(|v| v.contract.version_module()).collect();
        mods.sort();
        mods.dedup();
        let items = vec![mod_items(&mods.iter().map(String::as_str).collect::<Vec<_>>())?];
        let node_source = format!("{base}/nodes/{name}/");
        files.insert(
            format!("nodes/{name}/mod.rs"),
            render_file(&node_source, &inner_doc(&format!("`{name}`, one module per contract version.")), items)?,
        );
    }
    files.insert("registry.rs".to_owned(), registry::crate_registry_file(&source, nodes)?);
    Ok(files)
}
