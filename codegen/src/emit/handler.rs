//! `handler.rs`: the node's dependencies, its handler trait and the node type that
//! dispatches each request to the handler.

use proc_macro2::{Ident, Literal, TokenStream};
use quote::{format_ident, quote};

use super::tokens::{
    Block, Item, Shapes, SharedItem, SharedMembers, Word, doc_attrs, ident, indented_doc_comment, inner_doc,
    members_text, plain_doc, render_unformatted_file, version_cmp, version_text,
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
    // The handler trait. Its operations' signatures differ only in the method's name: printed
    // once per name width ([`Shapes`]).
    let mut signatures = String::new();
    for op in &node.operations {
        signatures.push_str(&indented_doc_comment(&op.description, "    "));
        signatures.push_str(&SIGNATURES.text(0, &[(&op.method, 'q')], |words| print_signature(&words[0]))?);
    }
    let methods = || {
        node.operations
            .iter()
            .map(|op| {
                let method = ident(&op.method)?;
                let doc = plain_doc(&op.description);
                Ok(quote! {
                    #doc
                    fn #method(&self, input: Input, ctx: &Context) -> impl Future<Output = Result<Output, OnexError>> + Send;
                })
            })
            .collect::<Result<TokenStream, String>>()
    };
    let trait_doc = plain_doc(&format!(
        "The operations of `{name}`, one async method each. `super::node::{}` implements it.",
        node.scaffold_type
    ));
    items.push(HANDLER_MEMBERS.item_then(
        |members| {
            quote! {
                #trait_doc
                pub trait #handler: Sized + Send + Sync + 'static {
                    #members
                }
            }
        },
        &signatures,
        methods,
    )?);

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
    let input_is_json = || {
        // A JSON input is read as it is; a typed one is serialized to find its key.
        node.types.iter().any(|t| {
            let TypeDef::Alias { name, ty, .. } = t else { return false };
            let json = match ty {
                RustType::Json => true,
                RustType::External(path) => path == "serde_json::Value",
                _ => false,
            };
            json && *name == node.input_type
        })
    };
    let dispatch = match (routing, &node.operation_enum) {
        (Some(routing), _) => {
            items.push(routing_static(node, routing)?.into());
            Dispatch::Routed { json: input_is_json() }
        }
        (None, Some(enum_name)) => {
            let enum_ident = ident(enum_name)?;
            models_use = Some(quote!(use super::models::#enum_ident as Operation;));
            Dispatch::ByEnum
        }
        (None, None) => Dispatch::Single,
    };
    let process = process_text(node, dispatch)?;
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
    items.push(NODE_TRAIT_MEMBERS.item_then(
        |members| {
            quote! {
                impl<H: #handler> Node for #node_type<H> {
                    #members
                }
            }
        },
        &process,
        || process_tokens(node, dispatch),
    )?);
    items.push(quote! { impl<H: #handler> #kind_trait for #node_type<H> {} }.into());
    render_unformatted_file(source, &inner, items)
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

/// How the generated `process` picks the operation.
#[derive(Clone, Copy)]
enum Dispatch {
    /// By `ROUTING` (`handler_routing`): `select_json` for a JSON input, else `select`.
    Routed { json: bool },
    /// By the input's `operation_type`, an enum of the models.
    ByEnum,
    /// The contract's one operation.
    Single,
}

impl Dispatch {
    /// A [`Shapes`] kind per variant.
    fn kind(self) -> u8 {
        match self {
            Dispatch::Routed { json: false } => 0,
            Dispatch::Routed { json: true } => 1,
            Dispatch::ByEnum => 2,
            Dispatch::Single => 3,
        }
    }

    /// The `match` of `process` around `arms`.
    fn match_tokens(self, arms: TokenStream) -> TokenStream {
        match self {
            Dispatch::Routed { json } => {
                let select = if json { format_ident!("select_json") } else { format_ident!("select") };
                quote! {
                    match ROUTING.#select(CONTRACT.name, &input, &ctx)? {
                        #arms
                        other => Err(routing::no_method(CONTRACT.name, other)),
                    }
                }
            }
            Dispatch::ByEnum => quote! { match input.operation_type { #arms } },
            Dispatch::Single => arms,
        }
    }
}

/// `async fn process` of the node type's `Node` impl.
fn process_fn(body: TokenStream) -> TokenStream {
    quote! {
        async fn process(&self, input: Input, ctx: Context) -> Result<Output, OnexError> {
            #body
        }
    }
}

/// `process` printed as a member of the `Node` impl, put together from pieces printed once per
/// run ([`Shapes`]): the text around the `match` arms, once per kind of dispatch, and each arm
/// (arms are separated by forced line breaks, so each prints the same whatever is around it),
/// once per widths of its words.
fn process_text(node: &NodeModel, dispatch: Dispatch) -> Result<String, String> {
    static FRAMES: Shapes = Shapes::new();
    static ARMS: Shapes = Shapes::new();
    /// The stand-in arm the frame is printed around.
    const ARM: &str = "            _ => {}\n";
    if node.operations.is_empty() {
        return Err("internal: a node without operations".to_owned());
    }
    let slots: Vec<String> = (0..node.operations.len()).map(|slot| slot.to_string()).collect();
    let arm_words = |slot: usize| -> Result<Vec<(String, char)>, String> {
        let op = &node.operations[slot];
        let pattern = match dispatch {
            Dispatch::Routed { .. } => (Literal::string(&op.wire).to_string(), 'W'),
            Dispatch::ByEnum => (op.variant.clone().ok_or("internal: an operation without a variant")?, 'Q'),
            Dispatch::Single => (String::new(), 'Q'),
        };
        Ok(vec![pattern, (slots[slot].clone(), '1'), (op.const_name.clone(), 'Z'), (op.method.clone(), 'q')])
    };
    if let Dispatch::Single = dispatch {
        let words = arm_words(0)?;
        let words: Vec<Word<'_>> = words[1..].iter().map(|(w, c)| (w.as_str(), *c)).collect();
        return FRAMES.text(dispatch.kind(), &words, |words| {
            let run = run_tokens(&words[0], &words[1], &words[2])?;
            members_text(Block::Impl, process_fn(run))
        });
    }
    let frame = FRAMES.text(dispatch.kind(), &[], |_| {
        members_text(Block::Impl, process_fn(dispatch.match_tokens(quote!(_ => {}))))
    })?;
    let (before, after) = frame.split_once(ARM).ok_or_else(|| format!("internal: process printed as\n{frame}"))?;
    let mut text = before.to_owned();
    for slot in 0..node.operations.len() {
        let words = arm_words(slot)?;
        let words: Vec<Word<'_>> = words.iter().map(|(w, c)| (w.as_str(), *c)).collect();
        text.push_str(&ARMS.text(dispatch.kind(), &words, |words| print_arm(dispatch, words))?);
    }
    text.push_str(after);
    Ok(text)
}

/// One arm of `process`'s `match` as printed there (indented three times).
fn print_arm(dispatch: Dispatch, words: &[String]) -> Result<String, String> {
    let arm = arm_tokens(dispatch, words)?;
    let printed = members_text(Block::Impl, quote! { fn f() { match x { #arm } } })?;
    let inside = printed.strip_prefix("    fn f() {\n        match x {\n");
    let inside = inside.and_then(|rest| rest.strip_suffix("        }\n    }\n"));
    inside.map(str::to_owned).ok_or_else(|| format!("internal: a match arm printed as\n{printed}"))
}

/// A handler trait's operation signature as printed in the trait (indented once).
fn print_signature(method: &str) -> Result<String, String> {
    let method = ident(method)?;
    members_text(
        Block::Trait,
        quote! { fn #method(&self, input: Input, ctx: &Context) -> impl Future<Output = Result<Output, OnexError>> + Send; },
    )
}

/// `process` as tokens, for when it cannot be put together from printed pieces.
fn process_tokens(node: &NodeModel, dispatch: Dispatch) -> Result<TokenStream, String> {
    let arms = (0..node.operations.len())
        .map(|slot| {
            let op = &node.operations[slot];
            let pattern = match dispatch {
                Dispatch::Routed { .. } => Literal::string(&op.wire).to_string(),
                _ => op.variant.clone().unwrap_or_default(),
            };
            let words = [pattern, slot.to_string(), op.const_name.clone(), op.method.clone()];
            match dispatch {
                Dispatch::Single => run_tokens(&words[1], &words[2], &words[3]),
                _ => arm_tokens(dispatch, &words),
            }
        })
        .collect::<Result<Vec<_>, String>>()?;
    let arms = match dispatch {
        Dispatch::Single => arms.into_iter().next().ok_or("internal: a node without operations")?,
        _ => quote!(#(#arms)*),
    };
    Ok(process_fn(dispatch.match_tokens(arms)))
}

/// One arm of the generated `process`'s `match`: `words` are the pattern (the wire name as a
/// string literal, or the `Operation` variant) and [`run_tokens`]'s words.
fn arm_tokens(dispatch: Dispatch, words: &[String]) -> Result<TokenStream, String> {
    let run = run_tokens(&words[1], &words[2], &words[3])?;
    Ok(match dispatch {
        Dispatch::Routed { .. } => {
            let wire: Literal = words[0].parse().map_err(|e| format!("internal: wire literal {}: {e}", words[0]))?;
            quote!(#wire => #run,)
        }
        _ => {
            let variant = ident(&words[0])?;
            quote!(Operation::#variant => #run,)
        }
    })
}

/// What an operation's arm of the generated `process` runs: the operation's slot (its position
/// in the contract's operations, where its series are), its spec and the handler method for it.
fn run_tokens(slot: &str, spec: &str, method: &str) -> Result<TokenStream, String> {
    let slot: Literal = slot.parse().map_err(|e| format!("internal: slot {slot}: {e}"))?;
    let (spec, method) = (ident(spec)?, ident(method)?);
    Ok(quote!(self.run(#slot, &#spec, input, ctx, H::#method).await))
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

/// The handler trait's operation signatures, by the width of the method's name.
static SIGNATURES: Shapes = Shapes::new();

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

#[cfg(test)]
mod tests {
    use super::{Dispatch, Shapes, Word, print_arm, print_signature};

    /// Names from one letter to wider than a line, so some arms and signatures wrap.
    fn name(letter: char, width: usize) -> String {
        std::iter::once(letter).chain(std::iter::repeat_n('x', width.saturating_sub(1))).collect()
    }

    #[test]
    fn arms_filled_in_from_stand_ins_print_as_the_arms_themselves() {
        let shapes = Shapes::new();
        let mut wrapped = 0;
        for dispatch in [Dispatch::Routed { json: false }, Dispatch::ByEnum] {
            for width in (1..=90).step_by(7) {
                let pattern = match dispatch {
                    Dispatch::Routed { .. } => format!("\"{}\"", name('k', width)),
                    _ => name('K', width),
                };
                let words = [pattern, (width % 13).to_string(), name('O', width / 2 + 1), name('m', width)];
                let word_refs: Vec<Word<'_>> =
                    words.iter().zip(['W', '1', 'Z', 'q']).map(|(w, c)| (w.as_str(), c)).collect();
                // Twice: the second is filled in from the first's stand-ins.
                for _ in 0..2 {
                    let filled = shapes.text(dispatch.kind(), &word_refs, |w| print_arm(dispatch, w)).unwrap();
                    assert_eq!(filled, print_arm(dispatch, &words).unwrap());
                    wrapped += usize::from(filled.lines().count() > 3);
                }
            }
        }
        assert!(wrapped > 0, "some arms are long enough to wrap");
    }

    #[test]
    fn signatures_filled_in_from_stand_ins_print_as_the_signatures_themselves() {
        let shapes = Shapes::new();
        for width in 1..=100 {
            for method in [name('a', width), format!("r#{}", name('b', width))] {
                for _ in 0..2 {
                    let filled = shapes.text(0, &[(&method, 'q')], |w| print_signature(&w[0])).unwrap();
                    assert_eq!(filled, print_signature(&method).unwrap());
                }
            }
        }
    }

    #[test]
    fn words_that_are_not_ascii_are_printed_as_they_are() {
        let shapes = Shapes::new();
        let words = ["\"clé\"".to_owned(), "0".to_owned(), "OPERATION".to_owned(), "get".to_owned()];
        let word_refs: Vec<Word<'_>> = words.iter().zip(['W', '1', 'Z', 'q']).map(|(w, c)| (w.as_str(), c)).collect();
        let dispatch = Dispatch::Routed { json: true };
        let filled = shapes.text(dispatch.kind(), &word_refs, |w| print_arm(dispatch, w)).unwrap();
        assert_eq!(filled, print_arm(dispatch, &words).unwrap());
        assert!(filled.contains("\"clé\""));
    }
}
