//! `contract.rs`: the contract as constant data, so nothing parses YAML at run time.

use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote};

use super::tokens::{
    Item, LONG, Shapes, Word, doc_comment, ident, inner_doc, list_element, plain_doc, print_item,
    render_unformatted_file, struct_literal_field, version_text,
};
use crate::model::NodeModel;
use crate::validate::DependencyKind;

/// One `onex_runtime::DependencySpec` literal, from its fields' tokens.
fn dependency_spec(
    name: TokenStream,
    kind: TokenStream,
    class_name: TokenStream,
    rust_type: TokenStream,
    required: bool,
) -> TokenStream {
    quote! {
        onex_runtime::DependencySpec {
            name: #name,
            kind: #kind,
            class_name: #class_name,
            rust_type: #rust_type,
            required: #required,
        }
    }
}

fn duration(seconds: f64) -> TokenStream {
    match duration_parts(seconds) {
        (false, secs) => quote!(std::time::Duration::from_secs(#secs)),
        (true, millis) => quote!(std::time::Duration::from_millis(#millis)),
    }
}

/// Whether a timeout is written in milliseconds (not whole seconds), and the number.
fn duration_parts(seconds: f64) -> (bool, Literal) {
    if seconds.fract() == 0.0 && seconds >= 0.0 {
        (false, Literal::u64_unsuffixed(seconds as u64))
    } else {
        (true, Literal::u64_unsuffixed((seconds * 1000.0).round() as u64))
    }
}

/// An operation's `OperationSpec` constant (without its doc comment), printed once per run for
/// each widths of its words ([`Shapes`]; the wire name and the description are [`LONG`] literals).
fn operation_text(const_name: &str, wire: &str, description: &str, seconds: f64) -> Result<String, String> {
    static OPERATIONS: Shapes = Shapes::new();
    let (millis, number) = duration_parts(seconds);
    let (wire, description, number) =
        (Literal::string(wire).to_string(), Literal::string(description).to_string(), number.to_string());
    let words = [(const_name, 'Z'), (wire.as_str(), LONG), (description.as_str(), LONG), (number.as_str(), '1')];
    OPERATIONS.text(u8::from(millis), &words, |words| {
        let literal = |text: &str| text.parse::<Literal>().map_err(|e| format!("internal: literal {text}: {e}"));
        let name = ident(&words[0])?;
        let (wire, description, number) = (literal(&words[1])?, literal(&words[2])?, literal(&words[3])?);
        let timeout = if millis {
            quote!(std::time::Duration::from_millis(#number))
        } else {
            quote!(std::time::Duration::from_secs(#number))
        };
        print_item(quote! {
            pub const #name: onex_runtime::OperationSpec = onex_runtime::OperationSpec {
                name: #wire,
                description: #description,
                timeout: #timeout,
            };
        })
    })
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
        let doc = doc_comment(&format!("The `{}` operation.", op.wire));
        let text = operation_text(&op.const_name, &op.wire, &op.description, op.timeout_seconds)?;
        items.push(Item::Text(doc + &text));
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
        dependency_spec(quote!(#name), kind, quote!(#class_name), rust_type, d.required)
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
    let contract = || {
        quote! {
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
        }
    };
    // Field by field from printed pieces; should a piece not print as expected, the whole
    // static is printed.
    items.push(match contract_text(node) {
        Ok(text) => Item::Text(text),
        Err(_) => Item::from(contract()),
    });
    render_unformatted_file(source, &inner, items)
}

/// The `CONTRACT` static, its doc comment included, put together from its fields printed one
/// by one ([`struct_literal_field`]; a list of structs one element at a time, [`list_element`]):
/// the static is always longer than a line, so each field is on lines of its own, and so is
/// each element of `dependencies` and `io_operations` (each longer than a line too).
fn contract_text(node: &NodeModel) -> Result<String, String> {
    static FIELDS: Shapes = Shapes::new();
    static DEPENDENCIES: Shapes = Shapes::new();
    static IO_OPERATIONS: Shapes = Shapes::new();
    let c = &node.contract;
    let lit = |text: &str| Literal::string(text).to_string();
    let parse = |text: &str| text.parse::<Literal>().map_err(|e| format!("internal: literal {text}: {e}"));
    let mut text = doc_comment(&format!("The contract of `{}` v{}.", c.name.value, version_text(node)));
    text.push_str("pub static CONTRACT: onex_runtime::NodeContract = onex_runtime::NodeContract {\n");
    let literal_field = |name: &str, value: &str| {
        let value = lit(value);
        struct_literal_field(&FIELDS, name.to_owned(), &[(&value, LONG)], |w| {
            let (field, value) = (ident(name)?, parse(&w[0])?);
            Ok(quote!(#field: #value))
        })
    };
    text.push_str(&literal_field("name", &c.name.value)?);
    let (major, minor, patch) = c.version.value;
    let (major, minor, patch) = (major.to_string(), minor.to_string(), patch.to_string());
    text.push_str(&struct_literal_field(
        &FIELDS,
        "version".to_owned(),
        &[(&major, '1'), (&minor, '2'), (&patch, '3')],
        |w| {
            let (major, minor, patch) = (parse(&w[0])?, parse(&w[1])?, parse(&w[2])?);
            Ok(quote!(version: onex_runtime::SemVer::new(#major, #minor, #patch)))
        },
    )?);
    let kind = c.kind.pascal();
    text.push_str(&struct_literal_field(&FIELDS, format!("kind {kind}"), &[], |_| {
        let kind = format_ident!("{}", kind);
        Ok(quote!(kind: onex_runtime::NodeKind::#kind))
    })?);
    text.push_str(&literal_field("description", c.description.value.trim())?);
    text.push_str(&literal_field("source", &c.source.display)?);
    text.push_str(&literal_field("input_model", &node.input_type)?);
    text.push_str(&literal_field("output_model", &node.output_type)?);
    let names: Vec<Word<'_>> = node.operations.iter().map(|op| (op.const_name.as_str(), 'Z')).collect();
    text.push_str(&struct_literal_field(&FIELDS, "operations".to_owned(), &names, |w| {
        let names = w.iter().map(|n| ident(n)).collect::<Result<Vec<_>, _>>()?;
        Ok(quote!(operations: &[#(#names),*]))
    })?);
    if c.dependencies.is_empty() {
        text.push_str("    dependencies: &[],\n");
    } else {
        text.push_str("    dependencies: &[\n");
        for d in &c.dependencies {
            let (name, class_name) = (lit(&d.name.value), lit(&d.class_name));
            let (kind, other) = match &d.kind {
                DependencyKind::Protocol => ("Protocol", None),
                DependencyKind::Service => ("Service", None),
                DependencyKind::Model => ("Model", None),
                DependencyKind::Other(other) => ("Other", Some(lit(other))),
            };
            let rust_type = d.rust_type.as_ref().map(|t| lit(&t.value));
            let mut words = vec![(name.as_str(), LONG)];
            words.extend(other.as_deref().map(|o| (o, 'O')));
            words.push((&class_name, LONG));
            words.extend(rust_type.as_deref().map(|t| (t, 'R')));
            let form = format!("{kind} {} {}", rust_type.is_some(), d.required);
            text.push_str(&list_element(&DEPENDENCIES, form, &words, |w| {
                let mut w = w.iter();
                let mut next = || w.next().ok_or_else(|| "internal: a dependency word is missing".to_owned());
                let name = parse(next()?)?;
                let kind = match other {
                    Some(_) => {
                        let other = parse(next()?)?;
                        quote!(onex_runtime::DependencyKind::Other(#other))
                    }
                    None => {
                        let kind = format_ident!("{}", kind);
                        quote!(onex_runtime::DependencyKind::#kind)
                    }
                };
                let class_name = parse(next()?)?;
                let rust_type = match rust_type {
                    Some(_) => {
                        let t = parse(next()?)?;
                        quote!(Some(#t))
                    }
                    None => quote!(None),
                };
                Ok(dependency_spec(quote!(#name), kind, quote!(#class_name), rust_type, d.required))
            })?);
        }
        text.push_str("    ],\n");
    }
    if c.io_operations.is_empty() {
        text.push_str("    io_operations: &[],\n");
    } else {
        text.push_str("    io_operations: &[\n");
        for io in &c.io_operations {
            let operation = &io.operation.value;
            let seconds = node
                .operations
                .iter()
                .find(|o| &o.wire == operation)
                .map_or(io.timeout_seconds.unwrap_or(crate::model::DEFAULT_TIMEOUT_SECONDS), |o| o.timeout_seconds);
            let (millis, number) = duration_parts(seconds);
            let number = number.to_string();
            let (operation, io_kind) = (lit(operation), lit(&io.io_kind));
            let description = lit(io.description.as_deref().unwrap_or_default());
            let words = [(operation.as_str(), LONG), (&io_kind, LONG), (&number, '1'), (&description, LONG)];
            let form = format!("{} {millis}", io.atomic);
            text.push_str(&list_element(&IO_OPERATIONS, form, &words, |w| {
                let (operation, io_kind, number, description) =
                    (parse(&w[0])?, parse(&w[1])?, parse(&w[2])?, parse(&w[3])?);
                let atomic = io.atomic;
                let timeout = if millis {
                    quote!(std::time::Duration::from_millis(#number))
                } else {
                    quote!(std::time::Duration::from_secs(#number))
                };
                Ok(quote! {
                    onex_runtime::IoOperationSpec {
                        operation: #operation,
                        operation_type: #io_kind,
                        atomic: #atomic,
                        timeout: #timeout,
                        description: #description,
                    }
                })
            })?);
        }
        text.push_str("    ],\n");
    }
    let topics = c.behaviour.topics.is_some();
    text.push_str(&struct_literal_field(&FIELDS, format!("topics {topics}"), &[], |_| {
        Ok(if topics {
            quote! {
                topics: Some(onex_runtime::NodeTopics {
                    subscribe: super::topics::SUBSCRIBE,
                    publish: super::topics::PUBLISH,
                    dlq: super::topics::DLQ,
                    consumer_group: super::topics::CONSUMER_GROUP,
                })
            }
        } else {
            quote!(topics: None)
        })
    })?);
    text.push_str("};\n");
    Ok(text)
}

#[cfg(test)]
mod tests {
    use proc_macro2::Literal;
    use quote::quote;

    use super::{duration, operation_text};
    use crate::emit::tokens::{ident, print_item};

    #[test]
    fn operation_constants_filled_in_from_stand_ins_print_as_the_constants_themselves() {
        // Descriptions from empty to far wider than a line (a long literal's stand-in is `"L"`),
        // names wide enough to wrap the header, both kinds of timeout.
        for (width, seconds) in [(0, 30.0), (1, 0.5), (40, 2.0), (99, 1.25), (100, 30.0), (101, 30.0), (400, 7.0)] {
            for name_width in [1, 30, 80] {
                let name = format!("OPERATION_{}", "X".repeat(name_width));
                let description = format!("{}\"quoted\\", "d".repeat(width));
                let wire = "e".repeat(name_width / 3 + 1);
                for _ in 0..2 {
                    let filled = operation_text(&name, &wire, &description, seconds).unwrap();
                    let (id, timeout) = (ident(&name).unwrap(), duration(seconds));
                    let (wire, description) = (Literal::string(&wire), Literal::string(&description));
                    let printed = print_item(quote! {
                        pub const #id: onex_runtime::OperationSpec = onex_runtime::OperationSpec {
                            name: #wire,
                            description: #description,
                            timeout: #timeout,
                        };
                    })
                    .unwrap();
                    assert_eq!(filled, printed);
                }
            }
        }
    }
}
