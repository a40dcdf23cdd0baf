//! `handler.rs`: the node's dependencies, its handler trait and the node type that
//! dispatches each request to the handler.

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

use super::tokens::{doc_attrs, ident, inner_doc, plain_doc, render_unformatted_file, version_text};
use crate::model::NodeModel;

pub(super) fn handler_file(node: &NodeModel) -> Result<String, String> {
    let c = &node.contract;
    let source = c.source.display.as_str();
    let name = &c.name.value;
    let inner = inner_doc(&format!(
        "The handler trait of `{name}` v{}, its dependencies and the node type that dispatches to it.",
        version_text(node)
    ));
    let input = ident(&node.input_type)?;
    let output = ident(&node.output_type)?;
    let handler = ident(&node.handler_trait)?;
    let node_type = ident(&node.node_type)?;
    let scaffold = ident(&node.scaffold_type)?;
    let mut items = vec![
        quote! { use std::future::Future; },
        quote! { use onex_runtime::{Container, Context, OnexError}; },
        quote! {
            /// The node's input (`input_model`).
            pub type Input = super::models::#input;
        },
        quote! {
            /// The node's output (`output_model`).
            pub type Output = super::models::#output;
        },
    ];
    if !node.dependencies.is_empty() {
        items.insert(1, quote! { use std::sync::Arc; });
    }

    // Dependencies.
    let mut fields = Vec::new();
    let mut resolves = Vec::new();
    for dep in &node.dependencies {
        let field = ident(&dep.ident)?;
        let ty: syn::Type =
            syn::parse_str(&dep.rust_type).map_err(|e| format!("rust_type `{}`: {e}", dep.rust_type))?;
        let doc = doc_attrs(&dep.doc, &format!("`{}` ({}).", dep.ident, dep.rust_type));
        let wire = crate::model::unraw(&dep.ident);
        if dep.required {
            fields.push(quote!(#doc pub #field: Arc<#ty>));
            resolves.push(quote!(#field: container.resolve::<#ty>().map_err(|e| OnexError::missing_dependency(#name, #wire, &e))?));
        } else {
            fields.push(quote!(#doc pub #field: Option<Arc<#ty>>));
            resolves.push(quote!(#field: container.try_resolve::<#ty>()));
        }
    }
    let container_param =
        if node.dependencies.is_empty() { format_ident!("_container") } else { format_ident!("container") };
    items.push(quote! {
        /// The contract's `protocol` and `service` dependencies, resolved from the container.
        #[derive(Clone)]
        pub struct Dependencies {
            #(#fields,)*
        }
    });
    items.push(quote! {
        impl Dependencies {
            /// Resolves every dependency from the container; a missing required one is an
            /// error that names it.
            pub fn resolve(#container_param: &Container) -> Result<Self, OnexError> {
                Ok(Self { #(#resolves,)* })
            }
        }
    });
    items.push(quote! {
        impl std::fmt::Debug for Dependencies {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct("Dependencies").finish_non_exhaustive()
            }
        }
    });
    // The handler trait.
    let methods = node
        .operations
        .iter()
        .map(|op| {
            let method = ident(&op.method)?;
            let doc = plain_doc(&op.description);
            Ok(quote! {
                #doc
                fn #method(&self, input: Input, ctx: &Context) -> impl Future<Output = Result<Output, OnexError>> + Send;
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let trait_doc = plain_doc(&format!(
        "The operations of `{name}`, one async method each. `super::node::{}` implements it.",
        node.scaffold_type
    ));
    items.push(quote! {
        #trait_doc
        pub trait #handler: Sized + Send + Sync + 'static {
            /// Builds the handler; `Dependencies::resolve(container)` gives the contract's dependencies.
            fn new(container: &Container) -> Result<Self, OnexError>;

            /// Whether the handler bounds `operation` by the context's deadline itself. For such an
            /// operation the node narrows the deadline to the contract timeout and runs the handler
            /// without a timer of its own (a timer costs each request a registration in tokio's
            /// timer wheel); the handler answers `onex_runtime::node::timed_out` when the deadline
            /// ended the work. By default the node times every operation.
            fn times_itself(operation: &onex_runtime::OperationSpec) -> bool {
                let _ = operation;
                false
            }

            #(#methods)*
        }
    });

    // The node type.
    let node_doc = plain_doc(&c.description.value);
    items.push(quote! {
        #node_doc
        pub struct #node_type<H = super::node::#scaffold> {
            handler: H,
        }
    });
    items.push(quote! {
        impl<H: #handler> #node_type<H> {
            /// Builds the node: the handler resolves its dependencies from `container`.
            pub fn new(container: &Container) -> Result<Self, OnexError> {
                Ok(Self { handler: H::new(container)? })
            }

            /// A node around an existing handler (tests, custom wiring).
            pub fn with_handler(handler: H) -> Self {
                Self { handler }
            }

            /// The handler.
            pub fn handler(&self) -> &H {
                &self.handler
            }
        }
    });
    let dispatch = match &node.operation_enum {
        Some(enum_name) => {
            let enum_ident = ident(enum_name)?;
            let arms = node
                .operations
                .iter()
                .map(|op| {
                    let variant = ident(op.variant.as_deref().unwrap_or_default())?;
                    let method = ident(&op.method)?;
                    let spec = ident(&op.const_name)?;
                    let run = run_tokens(name, &method, &spec);
                    Ok(quote! {
                        super::models::#enum_ident::#variant => { #run }
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            quote! {
                let operation = input.operation_type;
                match operation {
                    #(#arms)*
                }
            }
        }
        None => {
            let op = node.operations.first().ok_or("internal: a node without operations")?;
            run_tokens(name, &ident(&op.method)?, &ident(&op.const_name)?)
        }
    };
    items.push(quote! {
        impl<H: #handler> onex_runtime::Node for #node_type<H> {
            type Input = Input;
            type Output = Output;

            fn contract(&self) -> &'static onex_runtime::NodeContract {
                &super::contract::CONTRACT
            }

            async fn process(&self, input: Input, ctx: Context) -> Result<Output, OnexError> {
                #dispatch
            }
        }
    });
    let kind_trait = format_ident!("{}Node", c.kind.pascal());
    items.push(quote! {
        impl<H: #handler> onex_runtime::#kind_trait for #node_type<H> {}
    });
    render_unformatted_file(source, inner, items)
}

/// Runs one operation in the generated `process`: the runtime decides between the node's timer
/// and a handler that times the operation itself.
fn run_tokens(node: &str, method: &Ident, spec: &Ident) -> TokenStream {
    quote! {
        let spec = &super::contract::#spec;
        let handler_times_it = H::times_itself(spec);
        let ctx = &onex_runtime::node::operation_context(ctx, spec, handler_times_it);
        let work = std::pin::pin!(self.handler.#method(input, ctx));
        onex_runtime::node::run_operation(#node, spec, handler_times_it, ctx, work).await
    }
}
