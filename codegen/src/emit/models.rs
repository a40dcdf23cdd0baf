//! `models.rs`: the input, the output and every type of the contract's `definitions`.

use proc_macro2::{Literal, TokenStream};
use quote::quote;

use super::tokens::{
    Item, Shapes, doc_attrs, doc_comment, ident, indented_doc_comment, inner_doc, one_line_empty_block, print_item,
    render_unformatted_file, version_text,
};
use crate::model::{DefaultValue, Doc, Field, NodeModel, RustType, TaggedVariant, TypeDef};
use crate::naming::SerdeRule;

fn rust_type(ty: &RustType) -> Result<TokenStream, String> {
    Ok(match ty {
        RustType::String => quote!(String),
        RustType::SensitiveString => quote!(onex_runtime::Sensitive<String>),
        RustType::I64 => quote!(i64),
        RustType::I32 => quote!(i32),
        RustType::U64 => quote!(u64),
        RustType::F64 => quote!(f64),
        RustType::Bool => quote!(bool),
        RustType::Uuid => quote!(uuid::Uuid),
        RustType::DateTime => quote!(chrono::DateTime<chrono::Utc>),
        RustType::Json => quote!(serde_json::Value),
        RustType::JsonMap => quote!(serde_json::Map<String, serde_json::Value>),
        RustType::Vec(inner) => {
            let inner = rust_type(inner)?;
            quote!(Vec<#inner>)
        }
        RustType::Map(inner) => {
            let inner = rust_type(inner)?;
            quote!(std::collections::BTreeMap<String, #inner>)
        }
        RustType::Named(name) => {
            let name = ident(name)?;
            quote!(#name)
        }
        RustType::External(path) => {
            let ty: syn::Type = syn::parse_str(path).map_err(|e| format!("rust_type `{path}`: {e}"))?;
            quote!(#ty)
        }
    })
}

fn default_expr(value: &DefaultValue, ty: &RustType) -> Result<TokenStream, String> {
    Ok(match value {
        DefaultValue::Str(s) if *ty == RustType::SensitiveString => quote!(onex_runtime::Sensitive::new(#s.to_owned())),
        DefaultValue::Str(s) => quote!(#s.to_owned()),
        DefaultValue::Int(i) => match ty {
            RustType::I32 => {
                let v =
                    Literal::i32_unsuffixed(i32::try_from(*i).map_err(|_| format!("default {i} does not fit i32"))?);
                quote!(#v)
            }
            RustType::U64 => {
                let v =
                    Literal::u64_unsuffixed(u64::try_from(*i).map_err(|_| format!("default {i} does not fit u64"))?);
                quote!(#v)
            }
            _ => {
                let v = Literal::i64_unsuffixed(*i);
                quote!(#v)
            }
        },
        DefaultValue::Float(f) if f.is_finite() => {
            let v = Literal::f64_unsuffixed(*f);
            quote!(#v)
        }
        DefaultValue::Float(f) => return Err(format!("default {f} is not a finite number")),
        DefaultValue::Bool(b) => quote!(#b),
        DefaultValue::Variant(e, v) => {
            let (e, v) = (ident(e)?, ident(v)?);
            quote!(#e::#v)
        }
        DefaultValue::ExternalVariant { path, variant, .. } => {
            let path: syn::Path = syn::parse_str(path).map_err(|e| format!("rust_type `{path}`: {e}"))?;
            let variant = ident(variant)?;
            quote!(#path::#variant)
        }
        DefaultValue::List(items) => {
            let inner = match ty {
                RustType::Vec(inner) => inner.as_ref().clone(),
                _ => RustType::Json,
            };
            let items = items.iter().map(|i| default_expr(i, &inner)).collect::<Result<Vec<_>, _>>()?;
            quote!(vec![#(#items),*])
        }
        DefaultValue::Json(json) => {
            let text = serde_json::to_string(json).map_err(|e| e.to_string())?;
            let tokens: TokenStream = text.parse().map_err(|e| format!("default {text}: {e}"))?;
            quote!(serde_json::json!(#tokens))
        }
    })
}

/// How a type's names reach the wire: an optional `rename_all` rule, then a `rename` for each
/// name the rule (or serde's default, the identifier) gets wrong.
struct Renames {
    rule: Option<SerdeRule>,
    apply: fn(SerdeRule, &str) -> String,
}

impl Renames {
    /// The rule that leaves the fewest names to rename one by one, if it saves attributes
    /// (itself counting as one). `names` are (identifier, wire name) pairs.
    fn choose<'a>(
        names: impl Iterator<Item = (&'a str, &'a str)> + Clone,
        apply: fn(SerdeRule, &str) -> String,
    ) -> Self {
        let misses = |rule: Option<SerdeRule>| {
            names.clone().filter(|(ident, wire)| Self::needs_rename(rule, apply, ident, wire)).count()
        };
        let mut best = (misses(None), None);
        for rule in SerdeRule::ALL {
            let cost = 1 + misses(Some(rule));
            if cost < best.0 {
                best = (cost, Some(rule));
            }
        }
        Renames { rule: best.1, apply }
    }

    /// Whether a name needs its own `rename` under `rule`: when the rule (or, without one, the
    /// identifier) does not give its wire name, and always for an identifier escaped with a
    /// trailing `_` (`self_` for `self`), which no reader should have to work out through a rule.
    fn needs_rename(rule: Option<SerdeRule>, apply: fn(SerdeRule, &str) -> String, ident: &str, wire: &str) -> bool {
        let ident = crate::naming::unraw(ident);
        let serde_name = match rule {
            Some(rule) => apply(rule, ident),
            None => ident.to_owned(),
        };
        serde_name != wire || ident.strip_suffix('_') == Some(wire)
    }

    /// `#[serde(rename_all = "…")]` for the type, when a rule was chosen.
    fn rename_all(&self) -> Option<TokenStream> {
        self.rule.map(|rule| {
            let name = rule.name();
            quote!(#[serde(rename_all = #name)])
        })
    }

    /// `#[serde(rename = "…")]` for one name, when the rule does not give its wire name.
    fn rename(&self, ident: &str, wire: &str) -> Option<TokenStream> {
        self.needs(ident, wire).then(|| quote!(#[serde(rename = #wire)]))
    }

    /// Whether one name needs its own `rename` ([`Renames::needs_rename`] under this rule).
    fn needs(&self, ident: &str, wire: &str) -> bool {
        Self::needs_rename(self.rule, self.apply, ident, wire)
    }
}

/// What a field is made of, apart from its doc comment: its attributes and its declaration.
struct FieldParts {
    /// `#[serde(rename = …)]`'s wire name as a string literal, when the field needs one.
    rename: Option<String>,
    /// `#[serde(default = …)]`'s function name as a string literal, for a defaulted field.
    default_fn: Option<String>,
    /// `#[serde(default, skip_serializing_if = …)]` and `Option<…>` around the type.
    optional: bool,
    name: String,
    ty: TokenStream,
}

impl FieldParts {
    /// The field (without its doc comment) from `words`: its name, and the literals of
    /// `rename` and `default_fn` when it has them, in that order.
    fn tokens(&self, words: &[String]) -> Result<TokenStream, String> {
        let literal = |text: &str| text.parse::<Literal>().map_err(|e| format!("internal: literal {text}: {e}"));
        let mut words = words.iter();
        let name = ident(words.next().ok_or("internal: a field without a name")?)?;
        let mut next = || words.next().ok_or_else(|| "internal: a field word is missing".to_owned());
        let rename = match &self.rename {
            Some(_) => {
                let wire = literal(next()?)?;
                Some(quote!(#[serde(rename = #wire)]))
            }
            None => None,
        };
        let ty = &self.ty;
        if self.default_fn.is_some() {
            let fn_name = literal(next()?)?;
            return Ok(quote! { #rename #[serde(default = #fn_name)] pub #name: #ty });
        }
        if self.optional {
            return Ok(quote! {
                #rename
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub #name: Option<#ty>
            });
        }
        Ok(quote! { #rename pub #name: #ty })
    }

    /// The field as printed in its struct (indented once, without its doc comment): printed
    /// once per run for each form and widths of its words ([`Shapes`]).
    fn text(&self) -> Result<String, String> {
        static FIELDS: Shapes = Shapes::new();
        let mut words: Vec<(&str, char)> = vec![(&self.name, 'q')];
        words.extend(self.rename.as_deref().map(|w| (w, 'W')));
        words.extend(self.default_fn.as_deref().map(|w| (w, 'D')));
        let kind =
            u8::from(self.rename.is_some()) | u8::from(self.default_fn.is_some()) << 1 | u8::from(self.optional) << 2;
        FIELDS.text_in_form(kind, self.ty.to_string(), &words, |words| {
            let field = self.tokens(words)?;
            let printed = print_item(quote! { struct S { #field } })?;
            let inside = printed.strip_prefix("struct S {\n").and_then(|rest| rest.strip_suffix("}\n"));
            inside.map(str::to_owned).ok_or_else(|| format!("internal: a field printed as\n{printed}"))
        })
    }
}

/// A struct field as printed in its struct, doc comment included; adds the function of its
/// default to `defaults` and a check of an external default to `checks`.
fn field_text(
    struct_name: &str,
    field: &Field,
    renames: &Renames,
    defaults: &mut Vec<TokenStream>,
    checks: &mut Vec<TokenStream>,
) -> Result<String, String> {
    let doc = match &field.doc.text {
        Some(text) => indented_doc_comment(text, "    "),
        None => indented_doc_comment(&format!("`{}`.", field.wire), "    "),
    };
    let ty = rust_type(&field.ty)?;
    let ty = if field.boxed { quote!(Box<#ty>) } else { ty };
    let rename = renames.needs(&field.ident, &field.wire).then(|| Literal::string(&field.wire).to_string());
    let mut default_fn = None;
    if let Some(default) = &field.default {
        let fn_name = default_fn_name(struct_name, field);
        let fn_ident = ident(&fn_name)?;
        let expr = default_expr(default, &field.ty)?;
        let expr = if field.boxed { quote!(Box::new(#expr)) } else { expr };
        if let DefaultValue::ExternalVariant { wire, .. } = default {
            checks.push(quote! {
                assert_eq!(serde_json::to_value(super::#fn_ident()).ok(), Some(serde_json::Value::from(#wire)));
            });
        }
        defaults.push(quote! {
            fn #fn_ident() -> #ty {
                #expr
            }
        });
        default_fn = Some(Literal::string(&fn_name).to_string());
    }
    let optional = default_fn.is_none() && field.optional;
    let parts = FieldParts { rename, default_fn, optional, name: field.ident.clone(), ty };
    Ok(doc + &parts.text()?)
}

/// A struct with `fields` (printed, [`field_text`]) under `doc` and `attrs`: its header is
/// printed with an empty block, and the fields go in it when that header fits on one line
/// (prettyplease then breaks it nowhere with the block open either, see
/// [`super::tokens::SharedMembers`]); otherwise the whole struct is printed from `fields()`.
fn struct_item(
    doc: &str,
    header: TokenStream,
    fields_text: &str,
    fields: impl FnOnce() -> Result<Vec<TokenStream>, String>,
) -> Result<Item, String> {
    let bare = print_item(quote! { #header {} })?;
    if let Some(header_text) = one_line_empty_block(&bare) {
        return Ok(Item::Text(format!("{}{header_text}{{\n{fields_text}}}\n", doc_comment(doc))));
    }
    let fields = fields()?;
    let doc = super::tokens::plain_doc(doc);
    print_item(quote! { #doc #header { #(#fields,)* } }).map(Item::Text)
}

/// A field with its doc comment as tokens, for a struct whose header does not fit on a line.
fn field_tokens_slow(struct_name: &str, field: &Field, renames: &Renames) -> Result<TokenStream, String> {
    let doc = doc_attrs(&field.doc, &format!("`{}`.", field.wire));
    let ty = rust_type(&field.ty)?;
    let ty = if field.boxed { quote!(Box<#ty>) } else { ty };
    let rename = renames.needs(&field.ident, &field.wire).then(|| Literal::string(&field.wire).to_string());
    let default_fn = field.default.as_ref().map(|_| Literal::string(&default_fn_name(struct_name, field)).to_string());
    let optional = default_fn.is_none() && field.optional;
    let parts = FieldParts { rename, default_fn, optional, name: field.ident.clone(), ty };
    let mut words = vec![parts.name.clone()];
    words.extend(parts.rename.clone());
    words.extend(parts.default_fn.clone());
    let field = parts.tokens(&words)?;
    Ok(quote! { #doc #field })
}

/// A tagged union: the tag property names the arm on the wire, and each arm's struct (which
/// leaves the tag out) holds the rest of the object.
fn tagged_tokens(
    name: &str,
    doc: &Doc,
    tag: &str,
    variants: &[TaggedVariant],
    serde: &TokenStream,
) -> Result<TokenStream, String> {
    let ident_name = ident(name)?;
    let doc = doc_attrs(doc, &format!("`{name}`: one of its arms, told apart by `{tag}`."));
    let idents = variants.iter().map(|v| ident(&v.ident)).collect::<Result<Vec<_>, _>>()?;
    let types = variants.iter().map(|v| ident(&v.ty)).collect::<Result<Vec<_>, _>>()?;
    let docs: Vec<String> = variants.iter().map(|v| format!(" `{tag}: {}`", v.wire)).collect();
    let renames_of = Renames::choose(variants.iter().map(|v| (v.ident.as_str(), v.wire.as_str())), SerdeRule::variant);
    let rename_all = renames_of.rename_all();
    let renames = variants.iter().map(|v| renames_of.rename(&v.ident, &v.wire));
    Ok(quote! {
        #doc
        #[derive(Debug, Clone, PartialEq, #serde)]
        #[serde(tag = #tag)]
        #rename_all
        pub enum #ident_name {
            #( #[doc = #docs] #renames #idents(#types), )*
        }
    })
}

/// The function that fills `field` of `struct_name` with its contract default.
fn default_fn_name(struct_name: &str, field: &Field) -> String {
    format!(
        "default_{}_{}",
        crate::naming::to_snake_case(struct_name),
        crate::naming::unraw(&field.ident).trim_end_matches('_')
    )
}

/// `new` taking the required fields (in contract order): optional fields start absent and
/// defaulted ones at their defaults, so callers write `Model { x: Some(..), ..Model::new(a) }`
/// instead of listing every field. A struct without required fields also gets `Default`.
fn constructor_tokens(struct_name: &str, fields: &[Field]) -> Result<TokenStream, String> {
    let ident_name = ident(struct_name)?;
    let mut params = Vec::new();
    let mut inits = Vec::new();
    for field in fields {
        let name = ident(&field.ident)?;
        if field.default.is_some() {
            let fill = ident(&default_fn_name(struct_name, field))?;
            inits.push(quote!(#name: #fill()));
        } else if field.optional {
            inits.push(quote!(#name: None));
        } else {
            let ty = rust_type(&field.ty)?;
            params.push(quote!(#name: #ty));
            inits.push(if field.boxed { quote!(#name: Box::new(#name)) } else { quote!(#name) });
        }
    }
    let many = (params.len() > 7).then(|| quote!(#[allow(clippy::too_many_arguments)]));
    let default = params.is_empty().then(|| {
        quote! {
            impl Default for #ident_name {
                fn default() -> Self {
                    Self::new()
                }
            }
        }
    });
    Ok(quote! {
        impl #ident_name {
            /// A value with the required fields given; optional fields absent, defaulted fields
            /// at their contract defaults.
            #many
            pub fn new(#(#params),*) -> Self {
                Self { #(#inits),* }
            }
        }
        #default
    })
}

pub(super) fn models_file(node: &NodeModel) -> Result<String, String> {
    let source = node.contract.source.display.as_str();
    let c = &node.contract;
    let inner = inner_doc(&format!(
        "Models of `{}` v{}: the input, the output and every type in its `definitions`.",
        c.name.value,
        version_text(node)
    ));
    let mut items: Vec<Item> = Vec::new();
    // Imported, the derive list fits on one line; a contract type named like either trait
    // would clash with the import, and then the derives name serde's paths.
    let clash = node.types.iter().any(|t| matches!(t.name(), "Serialize" | "Deserialize"));
    let serde = if clash {
        quote!(serde::Serialize, serde::Deserialize)
    } else {
        if node.types.iter().any(|t| !matches!(t, TypeDef::Alias { .. })) {
            items.push(Item::from(quote!(
                use serde::{Deserialize, Serialize};
            )));
        }
        quote!(Serialize, Deserialize)
    };
    let mut checks = Vec::new();
    for ty in &node.types {
        match ty {
            TypeDef::Struct { name, doc, fields } => {
                let ident_name = ident(name)?;
                let fallback = format!("`{name}`.");
                let doc_text = doc.text.as_deref().unwrap_or(&fallback);
                let mut defaults = Vec::new();
                let constructor = constructor_tokens(name, fields)?;
                let renames =
                    Renames::choose(fields.iter().map(|f| (f.ident.as_str(), f.wire.as_str())), SerdeRule::field);
                let rename_all = renames.rename_all();
                let mut fields_text = String::new();
                let mut field_checks = Vec::new();
                for f in fields {
                    fields_text.push_str(&field_text(name, f, &renames, &mut defaults, &mut field_checks)?);
                }
                checks.extend(field_checks);
                let header = quote! {
                    #[derive(Debug, Clone, PartialEq, #serde)]
                    #rename_all
                    pub struct #ident_name
                };
                let slow_fields =
                    || fields.iter().map(|f| field_tokens_slow(name, f, &renames)).collect::<Result<Vec<_>, _>>();
                items.push(struct_item(doc_text, header, &fields_text, slow_fields)?);
                items.push(constructor.into());
                items.extend(defaults.into_iter().map(Item::from));
            }
            TypeDef::Enum { name, doc, variants } => {
                let ident_name = ident(name)?;
                let doc = doc_attrs(doc, &format!("`{name}`."));
                let idents = variants.iter().map(|v| ident(&v.ident)).collect::<Result<Vec<_>, _>>()?;
                let wires: Vec<&str> = variants.iter().map(|v| v.wire.as_str()).collect();
                let variant_docs: Vec<String> = wires.iter().map(|w| format!(" `{w}`")).collect();
                let renames_of =
                    Renames::choose(variants.iter().map(|v| (v.ident.as_str(), v.wire.as_str())), SerdeRule::variant);
                let rename_all = renames_of.rename_all();
                let renames = variants.iter().map(|v| renames_of.rename(&v.ident, &v.wire));
                let count = Literal::usize_unsuffixed(variants.len());
                items.push(Item::from(quote! {
                    #doc
                    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, #serde)]
                    #rename_all
                    pub enum #ident_name {
                        #( #[doc = #variant_docs] #renames #idents, )*
                    }
                }));
                items.push(Item::from(quote! {
                    impl #ident_name {
                        /// Every value, in contract order.
                        pub const ALL: [Self; #count] = [#(Self::#idents),*];

                        /// The value as written in the contract and on the wire.
                        pub const fn as_str(self) -> &'static str {
                            match self {
                                #( Self::#idents => #wires, )*
                            }
                        }
                    }
                }));
                items.push(Item::from(quote! {
                    impl std::fmt::Display for #ident_name {
                        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                            f.write_str(self.as_str())
                        }
                    }
                }));
            }
            TypeDef::Tagged { name, doc, tag, variants } => {
                items.push(Item::from(tagged_tokens(name, doc, tag, variants, &serde)?))
            }
            TypeDef::Alias { name, doc, ty } => {
                let ident_name = ident(name)?;
                let doc = doc_attrs(doc, &format!("`{name}`."));
                let ty = rust_type(ty)?;
                items.push(Item::from(quote! {
                    #doc
                    pub type #ident_name = #ty;
                }));
            }
        }
    }
    if !checks.is_empty() {
        items.push(Item::from(quote! {
            #[cfg(test)]
            mod tests {
                /// Defaults of shared enums are written as variants; this checks that each one
                /// serializes to the string the contract wrote.
                #[test]
                fn shared_enum_defaults_match_the_contract() {
                    #(#checks)*
                }
            }
        }));
    }
    render_unformatted_file(source, &inner, items)
}

#[cfg(test)]
mod tests {
    use proc_macro2::{Literal, TokenStream};
    use quote::quote;

    use super::{FieldParts, Renames};
    use crate::emit::tokens::print_item;
    use crate::naming::SerdeRule;

    #[test]
    fn fields_filled_in_from_stand_ins_print_as_the_fields_themselves() {
        let long_type: TokenStream = format!("a::{}::Type<String>", "very_long_module".repeat(6)).parse().unwrap();
        let types = [quote!(String), quote!(Option<Vec<std::collections::BTreeMap<String, i64>>>), long_type];
        let mut wrapped = 0;
        for ty in &types {
            for width in [1, 20, 60, 90] {
                for (rename, default_fn, optional) in [(false, false, false), (true, false, true), (true, true, false)]
                {
                    let name = "f".repeat(width);
                    let parts = FieldParts {
                        rename: rename.then(|| Literal::string(&"w".repeat(width / 2 + 1)).to_string()),
                        default_fn: default_fn.then(|| Literal::string(&"default_".repeat(width / 8 + 1)).to_string()),
                        optional,
                        name: name.clone(),
                        ty: ty.clone(),
                    };
                    let mut words = vec![name];
                    words.extend(parts.rename.clone());
                    words.extend(parts.default_fn.clone());
                    let field = parts.tokens(&words).unwrap();
                    let printed = print_item(quote! { struct S { #field } }).unwrap();
                    let expected = printed.strip_prefix("struct S {\n").unwrap().strip_suffix("}\n").unwrap();
                    wrapped += usize::from(expected.lines().count() > 1 + usize::from(rename) + 1);
                    for _ in 0..2 {
                        assert_eq!(parts.text().unwrap(), expected);
                    }
                }
            }
        }
        assert!(wrapped > 0, "some fields are long enough to wrap");
    }

    fn attrs(names: &[(&str, &str)], apply: fn(SerdeRule, &str) -> String) -> (Option<&'static str>, Vec<String>) {
        let renames = Renames::choose(names.iter().copied(), apply);
        let own = names.iter().filter(|(i, w)| renames.rename(i, w).is_some()).map(|(_, w)| w.to_string()).collect();
        (renames.rule.map(SerdeRule::name), own)
    }

    #[test]
    fn a_rule_is_used_when_it_saves_renames_and_exceptions_keep_theirs() {
        let variants = [("Query", "query"), ("HealthCheck", "health_check"), ("SelfValue", "Self")];
        assert_eq!(attrs(&variants, SerdeRule::variant), (Some("snake_case"), vec!["Self".to_owned()]));
        // One rename either way: no rule.
        assert_eq!(attrs(&[("Query", "query")], SerdeRule::variant), (None, vec!["query".to_owned()]));
        let fields = [("user_id", "userId"), ("r#type", "type"), ("max_len", "maxLen")];
        assert_eq!(attrs(&fields, SerdeRule::field), (Some("camelCase"), vec![]));
        // An escaped keyword keeps its own rename even where a rule would give its wire name.
        let fields = [("self_", "self"), ("camel_case", "camelCase")];
        assert_eq!(attrs(&fields, SerdeRule::field), (None, vec!["self".to_owned(), "camelCase".to_owned()]));
    }
}
