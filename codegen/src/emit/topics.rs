//! `topics.rs` of a node whose contract has an `event_bus` section ([`crate::behaviour::topics`]):
//! one constant per topic, and the lists the node host subscribes to, publishes on and
//! dead-letters to, naming those constants so that no topic is typed twice.

use proc_macro2::{Ident, Span, TokenStream};
use quote::quote;

use super::tokens::{Item, SharedItem, ident, inner_doc, plain_doc, render_unformatted_file, version_text};
use crate::behaviour::topics::{Form, Topic, Topics, const_name};
use crate::model::NodeModel;

/// The file's text.
pub(super) fn file(node: &NodeModel, section: &Topics) -> Result<String, String> {
    let c = &node.contract;
    let inner = inner_doc(&format!(
        "The event-bus topics of `{}` v{} (`event_bus`): one constant per topic, and the lists the node host \
         subscribes to, publishes on and dead-letters to.",
        c.name.value,
        version_text(node)
    ));
    let mut items: Vec<Item> = Vec::new();
    for topic in section.distinct() {
        let name = ident(&const_name(&topic.name))?;
        let value = &topic.name;
        let doc = plain_doc(&describe(topic));
        items.push(
            quote! {
                #doc
                pub const #name: &str = #value;
            }
            .into(),
        );
    }
    let lists = [
        ("SUBSCRIBE", &section.subscribe, &EMPTY_SUBSCRIBE),
        ("PUBLISH", &section.publish, &EMPTY_PUBLISH),
        ("DLQ", &section.dlq, &EMPTY_DLQ),
    ];
    for (list, topics, empty) in lists {
        if topics.is_empty() {
            items.push(empty.item()?);
            continue;
        }
        let names = topics.iter().map(|t| ident(&const_name(&t.name))).collect::<Result<Vec<_>, _>>()?;
        items.push(list_item(list, &names).into());
    }
    items.push(match &section.consumer_group {
        Some(g) => consumer_group(quote!(Some(#g))).into(),
        None => NO_CONSUMER_GROUP.item()?,
    });
    // prettyplease and rustfmt wrap the lists differently: rustfmt leaves the file alone.
    render_unformatted_file(&c.source.display, &inner, items)
}

/// `SUBSCRIBE`, `PUBLISH` or `DLQ`: the constants of `names`.
fn list_item(list: &'static str, names: &[Ident]) -> TokenStream {
    let doc = plain_doc(match list {
        "SUBSCRIBE" => "The topics the node consumes (`subscribe_topics`).",
        "PUBLISH" => "The topics the node publishes to (`publish_topics`).",
        _ => "The dead-letter topics of the node (`dlq_topics`).",
    });
    let list = Ident::new(list, Span::call_site());
    quote! {
        #doc
        pub const #list: &[&str] = &[#(#names),*];
    }
}

fn consumer_group(group: TokenStream) -> TokenStream {
    quote! {
        /// The consumer group the contract names (`consumer_group`), if any.
        pub const CONSUMER_GROUP: Option<&str> = #group;
    }
}

// The items of empty lists and of no consumer group, printed once per run ([`SharedItem`]).
static EMPTY_SUBSCRIBE: SharedItem = SharedItem::new(|| list_item("SUBSCRIBE", &[]));
static EMPTY_PUBLISH: SharedItem = SharedItem::new(|| list_item("PUBLISH", &[]));
static EMPTY_DLQ: SharedItem = SharedItem::new(|| list_item("DLQ", &[]));
static NO_CONSUMER_GROUP: SharedItem = SharedItem::new(|| consumer_group(quote!(None)));

fn describe(topic: &Topic) -> String {
    let form = match &topic.form {
        Form::Grammar { kind, producer, event, version } => {
            let what = match kind.as_str() {
                "evt" => "An event",
                "cmd" => "A command",
                "intent" => "An intent",
                _ => "A dead-letter topic",
            };
            format!("{what} of `{producer}`: `{event}`, version {version}.")
        }
        Form::LegacyDlq { of, version } => format!("The legacy dead-letter topic of {of}, version {version}."),
        Form::LegacyUnversioned => {
            "A legacy unversioned topic: a domain and a name, no kind and no version.".to_owned()
        }
    };
    match &topic.description {
        Some(d) if !d.is_empty() => format!("{form} {d}"),
        _ => form,
    }
}
