//! `contract.rs`: the contract as constant data, so nothing parses YAML at run time.

use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote};

use super::tokens::{ident, inner_doc, plain_doc, render_unformatted_file, version_text};
use crate::model::NodeModel;
use crate::validate::DependencyKind;

fn duration(seconds: f64) -> TokenStream {
    if seconds.fract() == 0.0 && seconds >= 0.0 {
        let secs = Literal::u64_unsuffixed(seconds as u64);
        quote!(std::time::Duration::from_secs(#secs))
    } else {
        let millis = Literal::u64_unsuffixed((seconds * 1000.0).round() as u64);
        quote!(std::time::Duration::from_millis(#millis))
    }
}

pub(super) fn contract_file(node: &NodeModel) -> Result<String, String> {
    let c = &node.contract;
    let source = c.source.display.as_str();
    let inner = inner_doc(&format!(
        "The contract of `{}` v{} as constant data, so nothing parses YAML at run time.",
        c.name.value,
        version_text(node)
    ));
    let mut items = Vec::new();
    let mut op_idents = Vec::new();
    for op in &node.operations {
        let name = ident(&op.const_name)?;
        let doc = plain_doc(&format!("The `{}` operation.", op.wire));
        let wire = &op.wire;
        let description = &op.description;
        let timeout = duration(op.timeout_seconds);
        items.push(quote! {
            #doc
            pub const #name: onex_runtime::OperationSpec = onex_runtime::OperationSpec {
                name: #wire,
                description: #description,
                timeout: #timeout,
            };
        });
        op_idents.push(name);
    }
    let deps = c.dependencies.iter().map(|d| {
        let name = &d.name.value;
        let kind = match &d.kind {
            DependencyKind::Protocol => quote!(onex_runtime::DependencyKind::Protocol),
            DependencyKind::Service => quote!(onex_runtime::DependencyKind::Service),
            DependencyKind::Model => quote!(onex_runtime::DependencyKind::Model),
            DependencyKind::Other(other) => quote!(onex_runtime::DependencyKind::Other(#other)),
        };
        let class_name = &d.class_name;
        let rust_type = match &d.rust_type {
            Some(t) => {
                let t = &t.value;
                quote!(Some(#t))
            }
            None => quote!(None),
        };
        let required = d.required;
        quote! {
            onex_runtime::DependencySpec {
                name: #name,
                kind: #kind,
                class_name: #class_name,
                rust_type: #rust_type,
                required: #required,
            }
        }
    });
    let ios = c.io_operations.iter().map(|io| {
        let operation = &io.operation.value;
        let io_kind = &io.io_kind;
        let atomic = io.atomic;
        let seconds = node
            .operations
            .iter()
            .find(|o| &o.wire == operation)
            .map_or(io.timeout_seconds.unwrap_or(crate::model::DEFAULT_TIMEOUT_SECONDS), |o| o.timeout_seconds);
        let timeout = duration(seconds);
        let description = io.description.clone().unwrap_or_default();
        quote! {
            onex_runtime::IoOperationSpec {
                operation: #operation,
                operation_type: #io_kind,
                atomic: #atomic,
                timeout: #timeout,
                description: #description,
            }
        }
    });
    let name = &c.name.value;
    let (major, minor, patch) = c.version.value;
    let (major, minor, patch) =
        (Literal::u32_unsuffixed(major), Literal::u32_unsuffixed(minor), Literal::u32_unsuffixed(patch));
    let kind = format_ident!("{}", c.kind.pascal());
    let description = c.description.value.trim();
    let input = &node.input_type;
    let output = &node.output_type;
    let doc = plain_doc(&format!("The contract of `{name}` v{}.", version_text(node)));
    // The lists name `topics.rs`'s constants, so a topic is typed in one place only.
    let topics = if c.behaviour.topics.is_some() {
        quote! {
            Some(onex_runtime::NodeTopics {
                subscribe: super::topics::SUBSCRIBE,
                publish: super::topics::PUBLISH,
                dlq: super::topics::DLQ,
                consumer_group: super::topics::CONSUMER_GROUP,
            })
        }
    } else {
        quote!(None)
    };
    items.push(quote! {
        #doc
        pub static CONTRACT: onex_runtime::NodeContract = onex_runtime::NodeContract {
            name: #name,
            version: onex_runtime::SemVer::new(#major, #minor, #patch),
            kind: onex_runtime::NodeKind::#kind,
            description: #description,
            source: #source,
            input_model: #input,
            output_model: #output,
            operations: &[#(#op_idents),*],
            dependencies: &[#(#deps),*],
            io_operations: &[#(#ios),*],
            topics: #topics,
        };
    });
    render_unformatted_file(source, &inner, items)
}
