//! `workflow.rs` of a node whose contract has a `workflow_coordination` section
//! ([`crate::behaviour::workflow`]): a `Step` enum, the topological `LAYERS`, the `GRAPH` the
//! runtime's executor takes (`onex_runtime::workflow`) and a typed `run`.

use proc_macro2::{Literal, TokenStream};
use quote::quote;

use super::tokens::{Item, SharedItem, ident, inner_doc, plain_doc, render_unformatted_file, version_text};
use crate::behaviour::workflow::{ExecutionMode, OnFailure, Workflow};
use crate::model::NodeModel;
use crate::validate::Kind;

fn millis(ms: u64) -> TokenStream {
    let ms = Literal::u64_unsuffixed(ms);
    quote!(std::time::Duration::from_millis(#ms))
}

fn optional_millis(ms: Option<u64>) -> TokenStream {
    match ms {
        Some(ms) => {
            let d = millis(ms);
            quote!(Some(#d))
        }
        None => quote!(None),
    }
}

/// The file's text.
pub(super) fn file(node: &NodeModel, section: &Workflow) -> Result<String, String> {
    let c = &node.contract;
    let source = c.source.display.as_str();
    let name = section.name.clone().unwrap_or_else(|| c.name.value.clone());
    let version = section.version.map_or_else(String::new, |(a, b, v)| format!(" v{a}.{b}.{v}"));
    let mut summary = format!(
        "The workflow `{name}`{version} of `{}` v{}: its steps, their dependencies in topological layers and \
         the graph the runtime's workflow executor runs.",
        c.name.value,
        version_text(node)
    );
    if let Some(description) = &section.description {
        summary = format!("{summary}\n\n{}", description.trim());
    }
    let inner = inner_doc(&summary);

    let variants = section.steps.iter().map(|s| ident(&s.variant)).collect::<Result<Vec<_>, _>>()?;
    let ids: Vec<&str> = section.steps.iter().map(|s| s.id.value.as_str()).collect();
    let docs: Vec<TokenStream> = section
        .steps
        .iter()
        .map(|s| {
            let mut text = match (&s.description, &s.name) {
                (Some(description), _) => description.clone(),
                (None, Some(name)) => format!("{name} (the `{}` step).", s.id.value),
                (None, None) => format!("The `{}` step.", s.id.value),
            };
            if let Some(target) = &s.target {
                text = format!("{text}\n\nCarried out by `{target}`.");
            }
            plain_doc(&text)
        })
        .collect();
    let count = Literal::usize_unsuffixed(section.steps.len());
    let depends_on: Vec<TokenStream> = section
        .steps
        .iter()
        .map(|s| {
            let deps = s.depends_on.iter().map(|&d| &variants[d]);
            quote!(&[#(Step::#deps),*])
        })
        .collect();
    let layers = section.layers.iter().map(|layer| {
        let members = layer.iter().map(|&i| &variants[i]);
        quote!(&[#(Step::#members),*])
    });

    let specs = section.steps.iter().map(|s| {
        let id = &s.id.value;
        let kind = match s.kind {
            Some(Kind::Effect) => quote!(Some(onex_runtime::NodeKind::Effect)),
            Some(Kind::Compute) => quote!(Some(onex_runtime::NodeKind::Compute)),
            Some(Kind::Reducer) => quote!(Some(onex_runtime::NodeKind::Reducer)),
            Some(Kind::Orchestrator) => quote!(Some(onex_runtime::NodeKind::Orchestrator)),
            None => quote!(None),
        };
        let deps = s.depends_on.iter().map(|&d| Literal::usize_unsuffixed(d));
        let timeout = optional_millis(s.timeout_ms);
        quote! {
            onex_runtime::workflow::StepSpec {
                id: #id,
                kind: #kind,
                depends_on: &[#(#deps),*],
                timeout: #timeout,
            }
        }
    });
    let index_layers = section.layers.iter().map(|layer| {
        let members = layer.iter().map(|&i| Literal::usize_unsuffixed(i));
        quote!(&[#(#members),*])
    });
    let mode = match section.mode {
        ExecutionMode::Sequential => quote!(onex_runtime::workflow::ExecutionMode::Sequential),
        ExecutionMode::Parallel => quote!(onex_runtime::workflow::ExecutionMode::Parallel),
    };
    let on_failure = match section.on_failure {
        OnFailure::FailFast => quote!(onex_runtime::workflow::OnFailure::FailFast),
        OnFailure::ContinueIndependent => quote!(onex_runtime::workflow::OnFailure::ContinueIndependent),
    };
    let max_concurrency = Literal::usize_unsuffixed(section.max_concurrency);
    let max_retries = Literal::u32_unsuffixed(section.max_retries);
    let backoff = millis(section.retry_backoff_ms);
    let multiplier = Literal::f64_unsuffixed(section.retry_backoff_multiplier);
    let timeout = optional_millis(section.timeout_ms);

    let items: Vec<Item> = vec![
        quote! {
            /// The workflow's steps, in contract order.
            #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
            pub enum Step {
                #( #docs #variants, )*
            }
        }
        .into(),
        quote! {
            impl Step {
                /// Every step, in contract order: `Step::ALL[step.index()] == step`.
                pub const ALL: [Step; #count] = [#(Step::#variants),*];

                /// The step's `node_id`.
                pub const fn id(self) -> &'static str {
                    match self {
                        #( Step::#variants => #ids, )*
                    }
                }

                /// The step's position in contract order, which is its index in [`GRAPH`].
                pub const fn index(self) -> usize {
                    self as usize
                }

                /// The steps that must succeed before this one starts.
                pub const fn depends_on(self) -> &'static [Step] {
                    match self {
                        #( Step::#variants => #depends_on, )*
                    }
                }

                /// The step whose `node_id` is `id`.
                pub fn from_id(id: &str) -> Option<Step> {
                    match id {
                        #( #ids => Some(Step::#variants), )*
                        _ => None,
                    }
                }
            }
        }
        .into(),
        quote! {
            /// The steps in topological layers: every dependency of a step is in an earlier layer;
            /// within a layer, contract order.
            pub const LAYERS: &[&[Step]] = &[#(#layers),*];
        }
        .into(),
        quote! {
            /// The workflow as the runtime's executor takes it (steps by index, see [`Step::index`]).
            pub const GRAPH: onex_runtime::workflow::Graph = onex_runtime::workflow::Graph {
                name: #name,
                steps: &[#(#specs),*],
                layers: &[#(#index_layers),*],
                mode: #mode,
                max_concurrency: #max_concurrency,
                on_failure: #on_failure,
                retry: onex_runtime::workflow::Retry {
                    max_retries: #max_retries,
                    backoff: #backoff,
                    backoff_multiplier: #multiplier,
                },
                timeout: #timeout,
            };
        }
        .into(),
        RUN_FN.item()?,
    ];
    render_unformatted_file(source, &inner, items)
}

/// `run`, which names nothing of a workflow: printed once per run ([`SharedItem`]).
static RUN_FN: SharedItem = SharedItem::new(|| {
    quote! {
        /// Runs the workflow: `run_step` is called for each step once its dependencies have
        /// succeeded (and again for each retry), under the contract's coordination rules.
        pub async fn run<F, Fut>(
            run_step: F,
            cancel: &onex_runtime::workflow::CancelToken,
        ) -> Result<onex_runtime::workflow::Report, onex_runtime::OnexError>
        where
            F: Fn(Step) -> Fut,
            Fut: std::future::Future<Output = Result<(), onex_runtime::OnexError>>,
        {
            onex_runtime::workflow::run(&GRAPH, |index| run_step(Step::ALL[index]), cancel).await
        }
    }
});
