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
    let mut node_names = vec!["NodeInstruments".to_owned(), "dispatch".to_owned()];
    if let Dispatch::ByEnum = dispatch {
        node_names.extend(one_of_names(node.operations.len()));
    }
    node_names.sort_by(|a, b| version_cmp(a, b));
    let node_names = node_names.iter().map(|name| ident(name)).collect::<Result<Vec<_>, _>>()?;
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
                use onex_runtime::node::{#(#node_names),*};
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

    /// Which of [`Words`] an arm of the first `match` of `process` shows ([`arm_tokens`]): a
    /// routed arm runs the operation, a `ByEnum` arm only picks its slot and spec.
    fn arm_words(self) -> &'static [usize] {
        match self {
            Dispatch::Routed { .. } => &[0, 1, 2, 3],
            Dispatch::ByEnum => &[0, 1, 2],
            Dispatch::Single => &[],
        }
    }

    /// `process` of the node type's `Node` impl around `arms` (for `ByEnum`, the arms that
    /// pick the operation's slot and spec, then `methods`, those that pick the handler's
    /// method; for `Single`, the one operation's run).
    ///
    /// Only a routed `process` is an `async fn` (the route's `?` returns early). The others
    /// are plain functions returning `dispatch`'s future itself: as an `async fn`, `process`
    /// was a state machine around that future and moved it (3.7 KB for the PostgreSQL
    /// connection manager) into its own state once per request; callgrind: ~900 of 17,100
    /// instructions per PostgreSQL node request. A `ByEnum` `process` picks the handler's
    /// method in `call`, whose `OneOf` enum makes every operation's future one type, so one
    /// `dispatch` serves every operation.
    fn process_tokens(self, handler: &Ident, arms: TokenStream, methods: TokenStream) -> TokenStream {
        match self {
            Dispatch::Routed { json } => {
                let select = if json { format_ident!("select_json") } else { format_ident!("select") };
                quote! {
                    async fn process(&self, input: Input, ctx: Context) -> Result<Output, OnexError> {
                        match ROUTING.#select(CONTRACT.name, &input, &ctx)? {
                            #arms
                            other => Err(routing::no_method(CONTRACT.name, other)),
                        }
                    }
                }
            }
            Dispatch::ByEnum => quote! {
                fn process(&self, input: Input, ctx: Context) -> impl Future<Output = Result<Output, OnexError>> + Send {
                    /// The handler's method for the request's operation. `OneOf…` makes its futures
                    /// one type and polls each where it is: an `async` block doing the same would
                    /// hold the input a second time in every request in flight.
                    fn call<H: #handler>(h: &H, input: Input, ctx: &Context) -> impl Future<Output = Result<Output, OnexError>> + Send {
                        match input.operation_type { #methods }
                    }
                    let (slot, spec) = match input.operation_type { #arms };
                    self.run(slot, spec, input, ctx, call::<H>)
                }
            },
            Dispatch::Single => quote! {
                fn process(&self, input: Input, ctx: Context) -> impl Future<Output = Result<Output, OnexError>> + Send {
                    #arms
                }
            },
        }
    }
}

/// The [`Shapes`] kind of a `ByEnum` arm that picks the handler's method (the other arms'
/// kinds are their [`Dispatch::kind`]).
const METHOD_ARM: u8 = 4;

/// `process` printed as a member of the `Node` impl, put together from pieces printed once per
/// run ([`Shapes`]): the text around the `match` arms, once per kind of dispatch, and each arm
/// (arms are separated by forced line breaks, so each prints the same whatever is around it),
/// once per widths of its words.
fn process_text(node: &NodeModel, dispatch: Dispatch) -> Result<String, String> {
    static FRAMES: Shapes = Shapes::new();
    static ARMS: Shapes = Shapes::new();
    /// The stand-in arm the frame is printed around, in `process`'s own match.
    const ARM: &str = "            _ => {}\n";
    /// The same in the match of `call`, the function inside a `ByEnum` `process`.
    const CALL_ARM: &str = "                _ => {}\n";
    if node.operations.is_empty() {
        return Err("internal: a node without operations".to_owned());
    }
    let handler = ident(&node.handler_trait)?;
    let words_of = |slot: usize| Words::of(node, dispatch, slot);
    if let Dispatch::Single = dispatch {
        let words = words_of(0)?;
        return FRAMES.text(dispatch.kind(), &words.refs(RUN), |w| {
            let run = run_tokens(&w[0], &w[1], &w[2], false)?;
            members_text(Block::Impl, dispatch.process_tokens(&handler, run, quote!()))
        });
    }
    let handler_word = [(node.handler_trait.as_str(), 'X')];
    let frame_words: &[Word<'_>] = if let Dispatch::ByEnum = dispatch { &handler_word } else { &[] };
    let frame = FRAMES.text(dispatch.kind(), frame_words, |w| {
        let handler = match w.first() {
            Some(word) => ident(word)?,
            None => handler.clone(),
        };
        members_text(Block::Impl, dispatch.process_tokens(&handler, quote!(_ => {}), quote!(_ => {})))
    })?;
    let count = node.operations.len();
    let (mut text, rest) = match dispatch {
        Dispatch::ByEnum => {
            let (head, rest) =
                frame.split_once(CALL_ARM).ok_or_else(|| format!("internal: process printed as\n{frame}"))?;
            let mut text = head.to_owned();
            for slot in 0..count {
                let words = words_of(slot)?;
                let chain = one_of_chain(slot, count);
                let form = chain.iter().map(|(of, variant)| format!("{of}.{variant} ")).collect();
                text.push_str(&ARMS.text_in_form(METHOD_ARM, form, &words.refs(METHOD), |w| {
                    print_arm_tokens(method_arm(w, &chain)?, IN_CALL)
                })?);
            }
            (text, rest)
        }
        _ => (String::new(), frame.as_str()),
    };
    let (head, tail) = rest.split_once(ARM).ok_or_else(|| format!("internal: process printed as\n{frame}"))?;
    if tail.contains(ARM) || tail.contains(CALL_ARM) {
        return Err(format!("internal: process printed as\n{frame}"));
    }
    text.push_str(head);
    for slot in 0..count {
        let words = words_of(slot)?;
        text.push_str(&ARMS.text(dispatch.kind(), &words.refs(dispatch.arm_words()), |w| print_arm(dispatch, w))?);
    }
    text.push_str(tail);
    Ok(text)
}

/// The most operations one `onex_runtime::node::OneOf…` enum holds (`ONE_OF_MAX` there).
const ONE_OF_MAX: usize = 16;

/// The `OneOf` variants that carry the future of operation `slot` of `count` out of `call`,
/// outermost first, as (operations of the enum, variant): `OneOf9::V2` is `(9, 2)`. Past
/// [`ONE_OF_MAX`] operations the last variant holds an enum of the rest. None for a node of
/// one operation, whose future is the one type already.
fn one_of_chain(slot: usize, count: usize) -> Vec<(usize, usize)> {
    let (mut slot, mut count) = (slot, count);
    let mut chain = Vec::new();
    while count > 1 {
        if count <= ONE_OF_MAX || slot < ONE_OF_MAX - 1 {
            chain.push((count.min(ONE_OF_MAX), slot));
            break;
        }
        chain.push((ONE_OF_MAX, ONE_OF_MAX - 1));
        slot -= ONE_OF_MAX - 1;
        count -= ONE_OF_MAX - 1;
    }
    chain
}

/// The `OneOf…` enums a `ByEnum` node of `count` operations names, in the order they are
/// imported.
fn one_of_names(count: usize) -> Vec<String> {
    let mut names: Vec<String> =
        (0..count).flat_map(|slot| one_of_chain(slot, count)).map(|(of, _)| format!("OneOf{of}")).collect();
    names.sort_by(|a, b| version_cmp(a, b));
    names.dedup();
    names
}

/// Which of [`Words`] a `ByEnum` method arm shows ([`method_arm`]): the pattern, the method.
const METHOD: &[usize] = &[0, 3];
/// Which of [`Words`] a single operation's run shows ([`run_tokens`]): slot, spec, method.
const RUN: &[usize] = &[1, 2, 3];

/// The words of one operation in `process`, each with its [`Shapes`] stand-in letter: the
/// pattern, the slot, the spec's name and the handler method's name.
struct Words {
    all: [(String, char); 4],
}

impl Words {
    fn of(node: &NodeModel, dispatch: Dispatch, slot: usize) -> Result<Self, String> {
        let op = &node.operations[slot];
        let pattern = match dispatch {
            Dispatch::Routed { .. } => (Literal::string(&op.wire).to_string(), 'W'),
            Dispatch::ByEnum => (op.variant.clone().ok_or("internal: an operation without a variant")?, 'Q'),
            Dispatch::Single => (String::new(), 'Q'),
        };
        let all = [pattern, (slot.to_string(), '1'), (op.const_name.clone(), 'Z'), (op.method.clone(), 'q')];
        Ok(Self { all })
    }

    fn refs(&self, picked: &[usize]) -> Vec<Word<'_>> {
        picked.iter().map(|&i| (self.all[i].0.as_str(), self.all[i].1)).collect()
    }

    fn texts(&self, picked: &[usize]) -> Vec<String> {
        picked.iter().map(|&i| self.all[i].0.clone()).collect()
    }
}

/// One arm of `process`'s first `match` as printed there (indented three times).
fn print_arm(dispatch: Dispatch, words: &[String]) -> Result<String, String> {
    print_arm_tokens(arm_tokens(dispatch, words)?, IN_PROCESS)
}

/// How deep in functions of the `impl` a printed arm's `match` is: `process`'s own matches.
const IN_PROCESS: usize = 1;
/// The match of `call`, the function inside a `ByEnum` `process`.
const IN_CALL: usize = 2;

/// `arm` as printed in a `match` nested `depth` functions deep in the `impl` ([`IN_PROCESS`]:
/// indented three times; [`IN_CALL`]: four).
fn print_arm_tokens(arm: TokenStream, depth: usize) -> Result<String, String> {
    let mut item = quote! { match x { #arm } };
    for _ in 0..depth {
        item = quote! { fn f() { #item } };
    }
    let printed = members_text(Block::Impl, item)?;
    let indent = |level: usize| "    ".repeat(level);
    let opened: String = (1..=depth).map(|level| format!("{}fn f() {{\n", indent(level))).collect();
    let head = format!("{opened}{}match x {{\n", indent(depth + 1));
    let tail: String = (1..=depth + 1).rev().map(|level| format!("{}}}\n", indent(level))).collect();
    let inside = printed.strip_prefix(head.as_str()).and_then(|rest| rest.strip_suffix(tail.as_str()));
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
    let handler = ident(&node.handler_trait)?;
    let count = node.operations.len();
    let all = (0..count).map(|slot| Words::of(node, dispatch, slot)).collect::<Result<Vec<_>, _>>()?;
    let first = all.first().ok_or("internal: a node without operations")?;
    if let Dispatch::Single = dispatch {
        let words = first.texts(RUN);
        return Ok(dispatch.process_tokens(&handler, run_tokens(&words[0], &words[1], &words[2], false)?, quote!()));
    }
    let arms =
        all.iter().map(|w| arm_tokens(dispatch, &w.texts(dispatch.arm_words()))).collect::<Result<Vec<_>, _>>()?;
    let methods = match dispatch {
        Dispatch::ByEnum => all
            .iter()
            .enumerate()
            .map(|(slot, w)| method_arm(&w.texts(METHOD), &one_of_chain(slot, count)))
            .collect::<Result<Vec<_>, _>>()?,
        _ => Vec::new(),
    };
    Ok(dispatch.process_tokens(&handler, quote!(#(#arms)*), quote!(#(#methods)*)))
}

/// One arm of the generated `process`'s first `match`: for a routed node, the wire name (a
/// string literal) and [`run_tokens`]'s words; for `ByEnum`, the `Operation` variant, and the
/// slot and spec it picks.
fn arm_tokens(dispatch: Dispatch, words: &[String]) -> Result<TokenStream, String> {
    Ok(match dispatch {
        Dispatch::Routed { .. } => {
            let wire: Literal = words[0].parse().map_err(|e| format!("internal: wire literal {}: {e}", words[0]))?;
            let run = run_tokens(&words[1], &words[2], &words[3], true)?;
            quote!(#wire => #run,)
        }
        _ => {
            let variant = ident(&words[0])?;
            let slot: Literal = words[1].parse().map_err(|e| format!("internal: slot {}: {e}", words[1]))?;
            let spec = ident(&words[2])?;
            quote!(Operation::#variant => (#slot, &#spec),)
        }
    })
}

/// One arm of the `match` of a `ByEnum` `process`'s `call`: the `Operation` variant and the
/// handler method it calls, its future wrapped in the `OneOf` variants of `chain`
/// ([`one_of_chain`]).
fn method_arm(words: &[String], chain: &[(usize, usize)]) -> Result<TokenStream, String> {
    let (variant, method) = (ident(&words[0])?, ident(&words[1])?);
    let mut future = quote!(h.#method(input, ctx));
    for (of, slot) in chain.iter().rev() {
        let (of, slot) = (format_ident!("OneOf{of}"), format_ident!("V{slot}"));
        future = quote!(#of::#slot(#future));
    }
    Ok(quote!(Operation::#variant => #future,))
}

/// What an operation of the generated `process` runs: the operation's slot (its position in
/// the contract's operations, where its series are), its spec and the handler method for it;
/// `awaited` inside an `async fn process`.
fn run_tokens(slot: &str, spec: &str, method: &str, awaited: bool) -> Result<TokenStream, String> {
    let slot: Literal = slot.parse().map_err(|e| format!("internal: slot {slot}: {e}"))?;
    let (spec, method) = (ident(spec)?, ident(method)?);
    let run = quote!(self.run(#slot, &#spec, input, ctx, H::#method));
    Ok(if awaited { quote!(#run.await) } else { run })
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
    use super::{
        Dispatch, IN_CALL, METHOD, METHOD_ARM, ONE_OF_MAX, Shapes, Word, method_arm, one_of_chain, one_of_names,
        print_arm, print_arm_tokens, print_signature,
    };
    use crate::emit::tokens::{Block, ident, members_text};
    use quote::quote;

    /// Names from one letter to wider than a line, so some arms and signatures wrap.
    fn name(letter: char, width: usize) -> String {
        std::iter::once(letter).chain(std::iter::repeat_n('x', width.saturating_sub(1))).collect()
    }

    #[test]
    fn arms_filled_in_from_stand_ins_print_as_the_arms_themselves() {
        let shapes = Shapes::new();
        let mut wrapped = 0;
        // Routed arms, `ByEnum` slot arms and `ByEnum` method arms, with the words each shows.
        type Print<'a> = &'a dyn Fn(&[String]) -> Result<String, String>;
        let kinds: [(u8, &[usize], Print<'_>); 5] = [
            (0, &[0, 1, 2, 3], &|w| print_arm(Dispatch::Routed { json: false }, w)),
            (2, &[0, 1, 2], &|w| print_arm(Dispatch::ByEnum, w)),
            (METHOD_ARM, METHOD, &|w| print_arm_tokens(method_arm(w, &[])?, IN_CALL)),
            (METHOD_ARM + 1, METHOD, &|w| print_arm_tokens(method_arm(w, &[(9, 2)])?, IN_CALL)),
            (METHOD_ARM + 2, METHOD, &|w| print_arm_tokens(method_arm(w, &[(16, 15), (16, 15), (3, 2)])?, IN_CALL)),
        ];
        for (kind, picked, print) in kinds {
            for width in (1..=90).step_by(7) {
                let pattern = match kind {
                    0 => format!("\"{}\"", name('k', width)),
                    _ => name('K', width),
                };
                let all = [pattern, (width % 13).to_string(), name('O', width / 2 + 1), name('m', width)];
                let words: Vec<String> = picked.iter().map(|&i| all[i].clone()).collect();
                let letters = ['W', '1', 'Z', 'q'];
                let word_refs: Vec<Word<'_>> = picked.iter().map(|&i| (all[i].as_str(), letters[i])).collect();
                // Twice: the second is filled in from the first's stand-ins.
                for _ in 0..2 {
                    let filled = shapes.text(kind, &word_refs, print).unwrap();
                    assert_eq!(filled, print(&words).unwrap());
                    wrapped += usize::from(filled.lines().count() > 3);
                }
            }
        }
        assert!(wrapped > 0, "some arms are long enough to wrap");
    }

    #[test]
    fn process_frames_filled_in_from_stand_ins_print_as_the_frames_themselves() {
        let shapes = Shapes::new();
        let print = |handler: &str| {
            let handler = ident(handler)?;
            members_text(Block::Impl, Dispatch::ByEnum.process_tokens(&handler, quote!(_ => {}), quote!(_ => {})))
        };
        let mut wrapped = 0;
        for width in (1..=120).step_by(3) {
            let handler = format!("{}Handler", name('P', width));
            for _ in 0..2 {
                let filled = shapes.text(Dispatch::ByEnum.kind(), &[(&handler, 'X')], |w| print(&w[0])).unwrap();
                assert_eq!(filled, print(&handler).unwrap());
                wrapped += usize::from(filled.contains(&format!("fn call<H: {handler}>(\n")));
            }
        }
        assert!(wrapped > 0, "some handler names are long enough to wrap `call`'s signature");
    }

    #[test]
    fn every_operation_has_its_own_way_out_of_the_nested_one_of_enums() {
        assert!(one_of_chain(0, 1).is_empty(), "one operation needs no enum");
        assert_eq!(one_of_chain(2, 9), [(9, 2)]);
        assert_eq!(one_of_chain(15, 16), [(16, 15)]);
        assert_eq!(one_of_chain(14, 17), [(16, 14)]);
        assert_eq!(one_of_chain(16, 17), [(16, 15), (2, 1)]);
        assert_eq!(one_of_names(40), ["OneOf10", "OneOf16"]);
        for count in 1..=3 * ONE_OF_MAX {
            let chains: Vec<_> = (0..count).map(|slot| one_of_chain(slot, count)).collect();
            for (slot, chain) in chains.iter().enumerate() {
                assert!(chain.iter().all(|&(of, variant)| (2..=ONE_OF_MAX).contains(&of) && variant < of), "{chain:?}");
                // Every enum but the innermost is full, and only its last variant leads on.
                for (depth, &(of, variant)) in chain.iter().enumerate() {
                    if depth + 1 < chain.len() {
                        assert_eq!((of, variant), (ONE_OF_MAX, ONE_OF_MAX - 1), "operation {slot} of {count}");
                    }
                }
                assert!(!chains[..slot].contains(chain), "operations share the way {chain:?} ({count})");
            }
        }
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
