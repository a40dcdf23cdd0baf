//! `topics.rs` of a node whose contract has an `event_bus` section ([`crate::behaviour::topics`]):
//! one constant per topic, and the lists the node host subscribes to, publishes on and
//! dead-letters to, naming those constants so that no topic is typed twice.

use proc_macro2::TokenStream;
use quote::quote;

use super::tokens::{ident, inner_doc, plain_doc, render_unformatted_file, version_text};
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
    let mut items: Vec<TokenStream> = Vec::new();
    for topic in section.distinct() {
        let name = ident(&const_name(&topic.name))?;
        let value = &topic.name;
        let doc = plain_doc(&describe(topic));
        items.push(quote! {
            #doc
            pub const #name: &str = #value;
        });
    }
    let lists = [
        ("SUBSCRIBE", "The topics the node consumes (`subscribe_topics`).", &section.subscribe),
        ("PUBLISH", "The topics the node publishes to (`publish_topics`).", &section.publish),
        ("DLQ", "The dead-letter topics of the node (`dlq_topics`).", &section.dlq),
    ];
    for (list, doc, topics) in lists {
        let list = ident(list)?;
        let doc = plain_doc(doc);
        let names = topics.iter().map(|t| ident(&const_name(&t.name))).collect::<Result<Vec<_>, _>>()?;
        items.push(quote! {
            #doc
            pub const #list: &[&str] = &[#(#names),*];
        });
    }
    let group = match &section.consumer_group {
        Some(g) => quote!(Some(#g)),
        None => quote!(None),
    };
    items.push(quote! {
        /// The consumer group the contract names (`consumer_group`), if any.
        pub const CONSUMER_GROUP: Option<&str> = #group;
    });
    // prettyplease and rustfmt wrap the lists differently: rustfmt leaves the file alone.
    render_unformatted_file(&c.source.display, inner, items)
}

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
