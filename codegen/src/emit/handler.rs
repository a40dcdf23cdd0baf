//! `handler.rs`: the node's dependencies, its handler trait and the node type that
//! dispatches each request to the handler.

use proc_macro2::{Ident, Literal, TokenStream};
use quote::{format_ident, quote};

use super::tokens::{
    Block, Item, SharedItem, SharedMembers, doc_attrs, ident, inner_doc, plain_doc, render_unformatted_file,
    version_cmp, version_text,
};
use crate::behaviour::routing::Routing;
use crate::model::{NodeModel, RustType, TypeDef};

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
    let mut items: Vec<Item> = vec![
        quote! {
            /// The node's input (`input_model`).
            pub type Input = super::models::#input;
        }
        .into(),
        quote! {
            /// The node's output (`output_model`).
            pub type Output = super::models::#output;
        }
        .into(),
    ];

    // Dependencies.
    let mut fields = Vec::new();
    let mut resolves = Vec::new();
    for dep in &node.dependencies {
        let field = ident(&dep.ident)?;
        let ty: syn::Type =
            syn::parse_str(&dep.rust_type).map_err(|e| format!("rust_type `{}`: {e}", dep.rust_type))?;
        let doc = doc_attrs(&dep.doc, &format!("`{}` ({}).", dep.ident, dep.rust_type));
        let wire = crate::naming::unraw(&dep.ident);
        if dep.required {
            fields.push(quote!(#doc pub #field: Arc<#ty>));
            resolves.push(quote!(#field: container.resolve::<#ty>().map_err(|e| OnexError::missing_dependency(#name, #wire, &e))?));
        } else {
            fields.push(quote!(#doc pub #field: Option<Arc<#ty>>));
            resolves.push(quote!(#field: container.try_resolve::<#ty>()));
        }
    }
    if node.dependencies.is_empty() {
        items.push(NO_DEPENDENCIES.item()?);
        items.push(RESOLVE_NO_DEPENDENCIES.item()?);
    } else {
        items.push(dependencies_struct(&fields).into());
        items.push(dependencies_impl(&format_ident!("container"), &resolves).into());
    }
    items.push(DEPENDENCIES_DEBUG.item()?);
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
    items.push(HANDLER_MEMBERS.item(|shared| {
        quote! {
            #trait_doc
            pub trait #handler: Sized + Send + Sync + 'static {
                #shared
                #(#methods)*
            }
        }
    })?);

    // The node type.
    let node_doc = plain_doc(&c.description.value);
    items.push(Item::from(quote! {
        #node_doc
        pub struct #node_type<H = super::node::#scaffold> {
            handler: H,
            instruments: NodeInstruments,
        }
    }));
    items.push(NODE_MEMBERS.item(|shared| {
        quote! {
            impl<H: #handler> #node_type<H> {
                #shared
            }
        }
    })?);
    let kind_trait = format_ident!("{}Node", c.kind.pascal());
    let mut models_use = None;
    let routing = c.behaviour.routing.as_ref();
    let dispatch = match (routing, &node.operation_enum) {
        (Some(routing), _) => {
            items.push(routing_static(node, routing)?.into());
            let arms = node
                .operations
                .iter()
                .enumerate()
                .map(|(slot, op)| {
                    let wire = &op.wire;
                    let run = run_tokens(slot, &ident(&op.method)?, &ident(&op.const_name)?);
                    Ok(quote!(#wire => #run,))
                })
                .collect::<Result<Vec<_>, String>>()?;
            // A JSON input is read as it is; a typed one is serialized to find its key.
            let input_is_json = node.types.iter().any(|t| {
                let TypeDef::Alias { name, ty, .. } = t else { return false };
                let json = match ty {
                    RustType::Json => true,
                    RustType::External(path) => path == "serde_json::Value",
                    _ => false,
                };
                json && *name == node.input_type
            });
            let select = if input_is_json { format_ident!("select_json") } else { format_ident!("select") };
            quote! {
                match ROUTING.#select(CONTRACT.name, &input, &ctx)? {
                    #(#arms)*
                    other => Err(routing::no_method(CONTRACT.name, other)),
                }
            }
        }
        (None, Some(enum_name)) => {
            let enum_ident = ident(enum_name)?;
            let arms = node
                .operations
                .iter()
                .enumerate()
                .map(|(slot, op)| {
                    let variant = ident(op.variant.as_deref().unwrap_or_default())?;
                    let run = run_tokens(slot, &ident(&op.method)?, &ident(&op.const_name)?);
                    Ok(quote!(Operation::#variant => #run,))
                })
                .collect::<Result<Vec<_>, String>>()?;
            models_use = Some(quote!(use super::models::#enum_ident as Operation;));
            quote! {
                match input.operation_type {
                    #(#arms)*
                }
            }
        }
        (None, None) => {
            let op = node.operations.first().ok_or("internal: a node without operations")?;
            run_tokens(0, &ident(&op.method)?, &ident(&op.const_name)?)
        }
    };
    let mut specs: Vec<&str> = node.operations.iter().map(|op| op.const_name.as_str()).collect();
    specs.push("CONTRACT");
    specs.sort_by(|a, b| version_cmp(a, b));
    let specs = specs.into_iter().map(ident).collect::<Result<Vec<_>, _>>()?;
    let arc = (!node.dependencies.is_empty()).then(|| {
        quote!(
            use std::sync::Arc;
        )
    });
    let kind_name = kind_trait.to_string();
    let mut runtime_names = ["Container", "Context", &kind_name, "Node", "NodeContract", "OnexError", "OperationSpec"];
    runtime_names.sort_by(|a, b| version_cmp(a, b));
    let runtime_names = runtime_names.into_iter().map(ident).collect::<Result<Vec<_>, _>>()?;
    let uses = [
        match arc {
            None => FUTURE_USE.item()?,
            Some(arc) => quote! { use std::future::Future; #arc }.into(),
        },
        match routing {
            Some(_) => quote! {
                use onex_runtime::metrics::MetricsRegistry;
                use onex_runtime::node::routing::{self, RouteSpec, Routing, RoutingStrategy};
                use onex_runtime::node::{NodeInstruments, dispatch};
                use onex_runtime::telemetry::Tracing;
                use onex_runtime::{#(#runtime_names),*};
            },
            None => quote! {
                use onex_runtime::metrics::MetricsRegistry;
                use onex_runtime::node::{NodeInstruments, dispatch};
                use onex_runtime::telemetry::Tracing;
                use onex_runtime::{#(#runtime_names),*};
            },
        }
        .into(),
        quote! { use super::contract::{#(#specs),*}; #models_use }.into(),
    ];
    items.splice(0..0, uses);
    items.push(NODE_TRAIT_MEMBERS.item(|shared| {
        quote! {
            impl<H: #handler> Node for #node_type<H> {
                #shared

                async fn process(&self, input: Input, ctx: Context) -> Result<Output, OnexError> {
                    #dispatch
                }
            }
        }
    })?);
    items.push(quote! { impl<H: #handler> #kind_trait for #node_type<H> {} }.into());
    render_unformatted_file(source, inner, items)
}

/// `Dependencies`, with a field per dependency.
fn dependencies_struct(fields: &[TokenStream]) -> TokenStream {
    quote! {
        /// The contract's `protocol` and `service` dependencies, resolved from the container.
        #[derive(Clone)]
        pub struct Dependencies {
            #(#fields,)*
        }
    }
}

/// `Dependencies::resolve`, resolving each field from the container.
fn dependencies_impl(container_param: &Ident, resolves: &[TokenStream]) -> TokenStream {
    quote! {
        impl Dependencies {
            /// Resolves every dependency from the container; a missing required one is an
            /// error that names it.
            pub fn resolve(#container_param: &Container) -> Result<Self, OnexError> {
                Ok(Self { #(#resolves,)* })
            }
        }
    }
}

/// One arm of the generated `process`: the operation's slot (its position in the contract's
/// operations, where its series are), its spec and the handler method for it.
fn run_tokens(slot: usize, method: &Ident, spec: &Ident) -> TokenStream {
    let slot = Literal::usize_unsuffixed(slot);
    quote!(self.run(#slot, &#spec, input, ctx, H::#method).await)
}

/// `ROUTING`: the contract's `handler_routing` as the runtime reads it, with each route's
/// `io_operations` settings.
fn routing_static(node: &NodeModel, routing: &Routing) -> Result<TokenStream, String> {
    let strategy = format_ident!("{}", routing.strategy.runtime_variant());
    let routes = routing.routes.iter().map(|r| {
        let operation = &r.operation;
        let accepts = &r.accepts;
        let handler = &r.handler;
        let idempotent = match r.io.idempotent {
            Some(b) => quote!(Some(#b)),
            None => quote!(None),
        };
        let input_fields = &r.io.input_fields;
        let output_fields = &r.io.output_fields;
        quote! {
            RouteSpec {
                operation: #operation,
                accepts: &[#(#accepts),*],
                handler: #handler,
                idempotent: #idempotent,
                input_fields: &[#(#input_fields),*],
                output_fields: &[#(#output_fields),*],
            }
        }
    });
    let fallback = match &routing.fallback {
        Some(f) => {
            let op = f.operation();
            quote!(Some(#op))
        }
        None => quote!(None),
    };
    let doc = plain_doc(&format!(
        "How `{}` routes a request: `{}`, to one operation per route; {}.",
        node.contract.name.value,
        routing.strategy.as_str(),
        match &routing.fallback {
            Some(f) => format!("a request that matches none goes to `{}`", f.operation()),
            None => "a request that matches none is a `VALIDATION_ERROR` naming the accepted keys".to_owned(),
        }
    ));
    Ok(quote! {
        #doc
        pub static ROUTING: Routing = Routing {
            strategy: RoutingStrategy::#strategy,
            routes: &[#(#routes),*],
            fallback: #fallback,
        };
    })
}

// What every node's `handler.rs` has word for word, printed once per run ([`SharedMembers`]).

/// The items of a node without dependencies.
static NO_DEPENDENCIES: SharedItem = SharedItem::new(|| dependencies_struct(&[]));
static RESOLVE_NO_DEPENDENCIES: SharedItem = SharedItem::new(|| dependencies_impl(&format_ident!("_container"), &[]));
static FUTURE_USE: SharedItem = SharedItem::new(|| quote! { use std::future::Future; });

static DEPENDENCIES_DEBUG: SharedItem = SharedItem::new(|| {
    quote! {
        impl std::fmt::Debug for Dependencies {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct("Dependencies").finish_non_exhaustive()
            }
        }
    }
});

/// The handler trait's provided methods, before the node's operations.
static HANDLER_MEMBERS: SharedMembers = SharedMembers::new(Block::Trait, || {
    quote! {
        /// Builds the handler; `Dependencies::resolve(container)` gives the contract's dependencies.
        fn new(container: &Container) -> Result<Self, OnexError>;

        /// Whether the handler bounds `operation` by the context's deadline itself. For such an
        /// operation the node narrows the deadline to the contract timeout and runs the handler
        /// without a timer of its own (a timer costs each request a registration in tokio's
        /// timer wheel); the handler answers `onex_runtime::node::timed_out` when the deadline
        /// ended the work. By default the node times every operation.
        fn times_itself(operation: &OperationSpec) -> bool {
            let _ = operation;
            false
        }
    }
});

/// The node type's methods.
static NODE_MEMBERS: SharedMembers = SharedMembers::new(Block::Impl, || {
    quote! {
        /// Builds the node: the handler resolves its dependencies from `container`, and the
        /// node records a span per operation with the container's `Tracing`, if any, and
        /// its operations' series in the container's `MetricsRegistry`, if any.
        pub fn new(container: &Container) -> Result<Self, OnexError> {
            let instruments = NodeInstruments::from_container(container, &CONTRACT)?;
            Ok(Self { handler: H::new(container)?, instruments })
        }

        /// A node around an existing handler (tests, custom wiring), recording no spans
        /// and no series.
        pub fn with_handler(handler: H) -> Self {
            Self { handler, instruments: NodeInstruments::disabled(&CONTRACT) }
        }

        /// The node, recording a span per operation with `tracing`.
        pub fn with_tracing(mut self, tracing: Tracing) -> Self {
            self.instruments = self.instruments.with_tracing(tracing);
            self
        }

        /// The node, recording its operations' series in `registry`; fails when the
        /// registry holds another family under a node family's name.
        pub fn with_metrics(mut self, registry: &MetricsRegistry) -> Result<Self, OnexError> {
            self.instruments = self.instruments.with_metrics(registry)?;
            Ok(self)
        }

        /// What the node records per operation.
        pub fn instruments(&self) -> &NodeInstruments {
            &self.instruments
        }

        /// The handler.
        pub fn handler(&self) -> &H {
            &self.handler
        }

        /// Runs one operation through `method` of the handler, in a span of its own and
        /// with its series (`slot` is its position in the contract's operations): under
        /// the contract timeout, or under the handler's own timing when it `times_itself`.
        /// A plain function returning `dispatch`'s future, not an `async fn`: another state
        /// machine around it would move the input and the context once more per request.
        fn run(
            &self,
            slot: usize,
            spec: &'static OperationSpec,
            input: Input,
            ctx: Context,
            method: impl AsyncFnOnce(&H, Input, &Context) -> Result<Output, OnexError>,
        ) -> impl Future<Output = Result<Output, OnexError>> {
            let times_itself = H::times_itself(spec);
            let instruments = self.instruments.operation(slot);
            dispatch(CONTRACT.name, spec, times_itself, &self.handler, instruments, input, ctx, method)
        }
    }
});

/// `Node`'s associated types and `contract`, before `process`.
static NODE_TRAIT_MEMBERS: SharedMembers = SharedMembers::new(Block::Impl, || {
    quote! {
        type Input = Input;
        type Output = Output;

        fn contract(&self) -> &'static NodeContract {
            &CONTRACT
        }
    }
});
