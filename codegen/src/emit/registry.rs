//! `registry.rs`: how a registry builds the node.

use quote::quote;

use super::tokens::{Item, SharedItem, ident, inner_doc, render_unformatted_file, version_text};
use crate::model::NodeModel;

pub(super) fn registry_file(node: &NodeModel) -> Result<String, String> {
    let c = &node.contract;
    let source = c.source.display.as_str();
    let name = &c.name.value;
    let node_type = ident(&node.node_type)?;
    let scaffold = ident(&node.scaffold_type)?;
    let inner = inner_doc(&format!("The registration of `{name}` v{}.", version_text(node)));
    let doc = format!("`{name}` v{}, built with its scaffold handler.", version_text(node));
    let items: Vec<Item> = vec![
        quote! {
            fn construct(container: &onex_runtime::Container) -> Result<Box<dyn onex_runtime::DynNode>, onex_runtime::OnexError> {
                Ok(Box::new(super::handler::#node_type::<super::node::#scaffold>::new(container)?))
            }
        }
        .into(),
        REGISTRATION.item_with_doc(&doc)?,
    ];
    render_unformatted_file(source, &inner, items)
}

/// `REGISTRATION`, which names nothing of the node but in its doc comment.
static REGISTRATION: SharedItem = SharedItem::new(|| {
    quote! {
        pub const REGISTRATION: onex_runtime::NodeRegistration = onex_runtime::NodeRegistration {
            contract: &super::contract::CONTRACT,
            construct,
        };
    }
});

/// The crate's `registry.rs`: one `registry()` listing every node of the run.
pub(super) fn crate_registry_file(source: &str, nodes: &[NodeModel]) -> Result<String, String> {
    let registrations = nodes
        .iter()
        .map(|n| {
            let name = ident(&n.contract.name.value)?;
            let version = ident(&n.contract.version_module())?;
            Ok(quote!(super::nodes::#name::#version::REGISTRATION))
        })
        .collect::<Result<Vec<_>, String>>()?;
    render_unformatted_file(
        source,
        &inner_doc("The registry of every node in this crate, by name and version."),
        vec![quote! {
            /// Every node generated from the contracts, by name and version.
            pub fn registry() -> onex_runtime::NodeRegistry {
                onex_runtime::NodeRegistry::new([#(#registrations),*])
            }
        }],
    )
}
