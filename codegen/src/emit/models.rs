//! `models.rs`: the input, the output and every type of the contract's `definitions`.

use proc_macro2::{Literal, TokenStream};
use quote::quote;

use super::tokens::{
    Item, Run, Shapes, Word, check_ident, doc_attrs, doc_comment, ident, indented_doc_comment, inner_doc,
    one_line_empty_block, print_item, push_string_literal, render_unformatted_file, version_text,
};
use crate::model::{DefaultValue, Doc, Field, NodeModel, RustType, TaggedVariant, TypeDef, Variant};
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
    gives: Gives,
    /// How many of the names the rule was chosen for need their own `rename` under it: when
    /// none does (most types), [`Renames::needs`] answers without asking the rule again.
    exceptions: usize,
}

/// Whether a rule gives an identifier its wire name: [`SerdeRule::gives_variant`] or
/// [`SerdeRule::gives_field`], which answer without building the name.
type Gives = fn(SerdeRule, &str, &str) -> bool;

impl Renames {
    /// The rule that leaves the fewest names to rename one by one, if it saves attributes
    /// (itself counting as one). `names` are (identifier, wire name) pairs.
    fn choose<'a>(names: impl Iterator<Item = (&'a str, &'a str)> + Clone, gives: Gives) -> Self {
        // The cheapest of no rule (first, so it wins a tie) and each rule (in `ALL`'s order,
        // earlier wins a tie), a rule costing one more for itself. A count stops once it cannot
        // beat the best so far, and the candidates are counted in the order of their misses
        // among the first names, so on an enum of hundreds of thousands of values only the
        // winner (and no rule) goes through all of them.
        let misses = |rule: Option<SerdeRule>, limit: usize| {
            names.clone().filter(|(ident, wire)| Self::needs_rename(rule, gives, ident, wire)).take(limit).count()
        };
        let candidates: Vec<Option<SerdeRule>> = std::iter::once(None).chain(SerdeRule::ALL.map(Some)).collect();
        let mut order: Vec<(usize, usize)> = (0..candidates.len()).map(|i| (0, i)).collect();
        if names.clone().nth(32).is_some() {
            let sample = |rule: Option<SerdeRule>| {
                names.clone().take(32).filter(|(ident, wire)| Self::needs_rename(rule, gives, ident, wire)).count()
            };
            for entry in &mut order {
                entry.0 = sample(candidates[entry.1]);
            }
            order.sort();
        }
        // (cost, index in `candidates`)
        let mut best = (usize::MAX, usize::MAX);
        for (_, index) in order {
            let own = usize::from(index > 0);
            // An earlier candidate wins a tie, so it is counted up to one miss further.
            let limit = best.0.saturating_add(usize::from(index < best.1)).saturating_sub(own);
            let found = misses(candidates[index], limit);
            if found < limit && (found + own, index) < best {
                best = (found + own, index);
            }
        }
        // The winner was counted in full (its count stopped under its limit).
        let exceptions = best.0.saturating_sub(usize::from(best.1 > 0));
        Renames { rule: candidates.get(best.1).copied().flatten(), gives, exceptions }
    }

    /// Whether a name needs its own `rename` under `rule`: when the rule (or, without one, the
    /// identifier) does not give its wire name, and always for an identifier escaped with a
    /// trailing `_` (`self_` for `self`), which no reader should have to work out through a rule.
    fn needs_rename(rule: Option<SerdeRule>, gives: Gives, ident: &str, wire: &str) -> bool {
        let ident = crate::naming::unraw(ident);
        let renamed = match rule {
            Some(rule) => !gives(rule, ident, wire),
            None => ident != wire,
        };
        renamed || ident.strip_suffix('_') == Some(wire)
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

    /// Whether one name needs its own `rename` ([`Renames::needs_rename`] under this rule);
    /// `ident` and `wire` are one of the names the rule was chosen for.
    fn needs(&self, ident: &str, wire: &str) -> bool {
        self.exceptions > 0 && Self::needs_rename(self.rule, self.gives, ident, wire)
    }
}

/// The serde `with` module of a timestamp field, and of an optional one.
const RFC3339: &str = "onex_runtime::rfc3339";
const RFC3339_OPTION: &str = "onex_runtime::rfc3339::option";

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
    /// The name of the contract type `ty` is (`Box`ed when `boxed`), if it is one: then it is
    /// a word of the field, not part of its form, so fields of many types share one print.
    ty_name: Option<String>,
    boxed: bool,
    /// The type is a timestamp itself (not one in a list or map, not boxed): it goes through `onex_runtime::rfc3339`, which writes and reads
    /// the same text as chrono's serde but without chrono's per-character path (a node's
    /// output timestamp was a tenth of what serving a small request cost).
    timestamp: bool,
}

impl FieldParts {
    /// The parts of `field`, its type written as `ty`: when `ty_name` is given, the type is
    /// that word (`Box`ed when `boxed`) rather than part of the field's form.
    fn of(
        field: &Field,
        ty: TokenStream,
        rename: Option<String>,
        default_fn: Option<String>,
        ty_name: Option<String>,
        boxed: bool,
    ) -> Self {
        let optional = default_fn.is_none() && field.optional;
        let timestamp = matches!(field.ty, RustType::DateTime) && !field.boxed;
        Self { rename, default_fn, optional, name: field.ident.clone(), ty, ty_name, boxed, timestamp }
    }

    /// The field (without its doc comment) from `words`, in the order they are printed: the
    /// literals of `rename` and `default_fn` when it has them, its name, and its type's name
    /// when it has one.
    fn tokens(&self, words: &[String]) -> Result<TokenStream, String> {
        let literal = |text: &str| text.parse::<Literal>().map_err(|e| format!("internal: literal {text}: {e}"));
        let mut words = words.iter();
        let mut next = || words.next().ok_or_else(|| "internal: a field word is missing".to_owned());
        let rename = match &self.rename {
            Some(_) => {
                let wire = literal(next()?)?;
                Some(quote!(#[serde(rename = #wire)]))
            }
            None => None,
        };
        let fn_name = match &self.default_fn {
            Some(_) => Some(literal(next()?)?),
            None => None,
        };
        let name = ident(next()?)?;
        let ty = match &self.ty_name {
            Some(_) => {
                let ty = ident(next()?)?;
                if self.boxed { quote!(Box<#ty>) } else { quote!(#ty) }
            }
            None => self.ty.clone(),
        };
        let module = self.timestamp.then_some(if self.optional { RFC3339_OPTION } else { RFC3339 });
        let with = module.map(|module| quote!(, with = #module));
        if let Some(fn_name) = fn_name {
            return Ok(quote! { #rename #[serde(default = #fn_name #with)] pub #name: #ty });
        }
        if self.optional {
            return Ok(quote! {
                #rename
                #[serde(default, skip_serializing_if = "Option::is_none" #with)]
                pub #name: Option<#ty>
            });
        }
        match module {
            Some(module) => Ok(quote! { #rename #[serde(with = #module)] pub #name: #ty }),
            None => Ok(quote! { #rename pub #name: #ty }),
        }
    }

    /// The field as printed in its struct (indented once, without its doc comment): printed
    /// once per run for each form and widths of its words ([`Shapes`]).
    fn text(&self) -> Result<String, String> {
        static FIELDS: Shapes = Shapes::new();
        // In the order the printed field shows them, which is where the stand-ins are looked for.
        let mut words: Vec<(&str, char)> = Vec::with_capacity(4);
        words.extend(self.rename.as_deref().map(|w| (w, 'W')));
        words.extend(self.default_fn.as_deref().map(|w| (w, 'D')));
        words.push((&self.name, 'q'));
        words.extend(self.ty_name.as_deref().map(|w| (w, 'T')));
        let kind = u8::from(self.rename.is_some())
            | u8::from(self.default_fn.is_some()) << 1
            | u8::from(self.optional) << 2
            | u8::from(self.ty_name.is_some()) << 3
            | u8::from(self.boxed) << 4;
        let form = if self.ty_name.is_some() { String::new() } else { self.ty.to_string() };
        FIELDS.text_in_form(kind, form, &words, |words| {
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
    let ty_name = match &field.ty {
        RustType::Named(name) => Some(name.clone()),
        _ => None,
    };
    let parts = FieldParts::of(field, ty, rename, default_fn, ty_name, field.boxed);
    Ok(doc + &parts.text()?)
}

/// A struct with `fields` (printed, [`field_text`]) under `doc` and `attrs`: its header is
/// printed with an empty block (`bare`, `header {}` printed), and the fields go in it when that header fits on one line
/// (prettyplease then breaks it nowhere with the block open either, see
/// [`super::tokens::SharedMembers`]); otherwise the whole struct is printed from `fields()`.
fn struct_item(
    doc: &str,
    header: TokenStream,
    bare: &str,
    fields_text: &str,
    fields: impl FnOnce() -> Result<Vec<TokenStream>, String>,
) -> Result<Item, String> {
    if let Some(header_text) = one_line_empty_block(bare) {
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
    let parts = FieldParts::of(field, ty, rename, default_fn, None, false);
    let mut words = Vec::new();
    words.extend(parts.rename.clone());
    words.extend(parts.default_fn.clone());
    words.push(parts.name.clone());
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
    let renames_of =
        Renames::choose(variants.iter().map(|v| (v.ident.as_str(), v.wire.as_str())), SerdeRule::gives_variant);
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

/// An enum's items: the enum, its `impl` (`ALL` and `as_str`) and its `Display`.
///
/// An enum may have hundreds of thousands of values (a contract at the size limit), and syn and
/// prettyplease over one item that size take seconds: the enum's variants and the arms of
/// `as_str` are printed one by one ([`Shapes`], once per run for each widths of their words)
/// and written into the printed headers, as [`struct_item`] does with fields. Items the
/// splicing cannot vouch for (a header too long for a line, a value with a line break, an
/// `ALL` that might fit on one line) are printed whole ([`enum_items_whole`]); the unit tests
/// compare both ways.
fn enum_items(name: &str, doc: &Doc, variants: &[Variant], serde: &TokenStream) -> Result<Vec<Item>, String> {
    let ident_name = ident(name)?;
    let renames_of =
        Renames::choose(variants.iter().map(|v| (v.ident.as_str(), v.wire.as_str())), SerdeRule::gives_variant);
    if variants.is_empty() || variants.iter().any(|v| v.wire.contains('\n')) {
        return enum_items_whole(name, doc, variants, serde, &renames_of);
    }
    let fallback = format!("`{name}`.");
    let doc_text = doc.text.as_deref().unwrap_or(&fallback);
    let rename_all = renames_of.rename_all();
    let header = quote! {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, #serde)]
        #rename_all
        pub enum #ident_name
    };
    // Each value's text is written straight onto the block's (an enum may have hundreds of
    // thousands), with the literal of its wire name built in one reused buffer.
    let mut literal = String::new();
    let mut variants_text = String::with_capacity(variants.iter().map(|v| 24 + 2 * v.wire.len()).sum());
    let mut runs = [Run::new(&VARIANTS, 0), Run::new(&VARIANTS, 1)];
    for v in variants {
        write_variant(v, &renames_of, &mut runs, &mut literal, &mut variants_text)?;
    }
    let bare = print_item(quote! { #header {} })?;
    let enum_item = struct_item(doc_text, header, &bare, &variants_text, || {
        variants
            .iter()
            .map(|v| {
                let (docs, id) = (format!(" `{}`", v.wire), ident(&v.ident)?);
                let rename = renames_of.rename(&v.ident, &v.wire);
                Ok(quote!(#[doc = #docs] #rename #id))
            })
            .collect::<Result<Vec<_>, String>>()
    })?;
    // The one-line `ALL` would be wider than a line by its elements alone, so prettyplease
    // breaks it, one element a line; a shorter one is printed whole.
    let all_width: usize = variants.iter().map(|v| "Self::, ".len() + v.ident.len()).sum();
    let bare_impl = print_item(quote! { impl #ident_name {} })?;
    let impl_header = one_line_empty_block(&bare_impl).filter(|_| all_width > 100);
    let impl_item = match impl_header {
        Some(header) => {
            let mut text = String::with_capacity(header.len() + 64 * variants.len());
            text.push_str(header);
            text.push_str("{\n    /// Every value, in contract order.\n");
            text.push_str(&format!("    pub const ALL: [Self; {}] = [\n", variants.len()));
            for v in variants {
                check_ident(&v.ident)?;
                text.push_str("        Self::");
                text.push_str(&v.ident);
                text.push_str(",\n");
            }
            text.push_str("    ];\n    /// The value as written in the contract and on the wire.\n");
            text.push_str("    pub const fn as_str(self) -> &'static str {\n        match self {\n");
            let mut arms = Run::new(&ARMS, 0);
            for v in variants {
                literal.clear();
                push_string_literal(&mut literal, &v.wire);
                arms.write(&[(&v.ident, 'q'), (&literal, 'W')], &mut text, print_as_str_arm)?;
            }
            text.push_str("        }\n    }\n}\n");
            Item::Text(text)
        }
        None => enum_impl_tokens(name, variants)?.into(),
    };
    Ok(vec![enum_item, impl_item, enum_display_tokens(name)?.into()])
}

/// [`enum_items`] printed whole by syn and prettyplease.
fn enum_items_whole(
    name: &str,
    doc: &Doc,
    variants: &[Variant],
    serde: &TokenStream,
    renames_of: &Renames,
) -> Result<Vec<Item>, String> {
    let ident_name = ident(name)?;
    let doc = doc_attrs(doc, &format!("`{name}`."));
    let idents = variants.iter().map(|v| ident(&v.ident)).collect::<Result<Vec<_>, _>>()?;
    let variant_docs: Vec<String> = variants.iter().map(|v| format!(" `{}`", v.wire)).collect();
    let rename_all = renames_of.rename_all();
    let renames = variants.iter().map(|v| renames_of.rename(&v.ident, &v.wire));
    Ok(vec![
        Item::from(quote! {
            #doc
            #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, #serde)]
            #rename_all
            pub enum #ident_name {
                #( #[doc = #variant_docs] #renames #idents, )*
            }
        }),
        enum_impl_tokens(name, variants)?.into(),
        enum_display_tokens(name)?.into(),
    ])
}

/// An enum's `impl` with `ALL` and `as_str`.
fn enum_impl_tokens(name: &str, variants: &[Variant]) -> Result<TokenStream, String> {
    let ident_name = ident(name)?;
    let idents = variants.iter().map(|v| ident(&v.ident)).collect::<Result<Vec<_>, _>>()?;
    let wires: Vec<&str> = variants.iter().map(|v| v.wire.as_str()).collect();
    let count = Literal::usize_unsuffixed(variants.len());
    Ok(quote! {
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
    })
}

fn enum_display_tokens(name: &str) -> Result<TokenStream, String> {
    let ident_name = ident(name)?;
    Ok(quote! {
        impl std::fmt::Display for #ident_name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    })
}

/// The printed variants of enums ([`Shapes`]): kind 0 without a `rename`, 1 with one.
static VARIANTS: Shapes = Shapes::new();
/// The printed arms of enums' `as_str` ([`Shapes`]).
static ARMS: Shapes = Shapes::new();

/// Writes one variant as printed in its enum (indented once), its doc comment included: the
/// value holds no line break, so prettyplease prints the doc attribute as a `///` line of its
/// text (a space and the value in backticks: it ends in a backtick, so no trailing space is
/// trimmed). `runs` are
/// [`VARIANTS`]' two kinds; `literal` is a buffer for the wire name's literal.
fn write_variant(
    v: &Variant,
    renames_of: &Renames,
    runs: &mut [Run<'static>; 2],
    literal: &mut String,
    out: &mut String,
) -> Result<(), String> {
    out.push_str("    /// `");
    out.push_str(&v.wire);
    out.push_str("`\n");
    if renames_of.needs(&v.ident, &v.wire) {
        literal.clear();
        push_string_literal(literal, &v.wire);
        runs[1].write(&[(&v.ident, 'q'), (literal, 'W')], out, print_variant)
    } else {
        runs[0].write(&[(&v.ident, 'q')], out, print_variant)
    }
}

/// A variant from its words (its name, and its wire name's literal when it has a `rename`), as
/// printed in its enum, without its doc comment.
fn print_variant(words: &[String]) -> Result<String, String> {
    let id = ident(&words[0])?;
    let rename = match words.get(1) {
        Some(wire) => {
            let wire = wire.parse::<Literal>().map_err(|e| format!("internal: literal {wire}: {e}"))?;
            Some(quote!(#[serde(rename = #wire)]))
        }
        None => None,
    };
    let printed = print_item(quote! { enum E { #rename #id, } })?;
    let inside = printed.strip_prefix("enum E {\n").and_then(|rest| rest.strip_suffix("}\n"));
    inside.map(str::to_owned).ok_or_else(|| format!("internal: a variant printed as\n{printed}"))
}

/// One arm of an enum's `as_str` (`Self::V => "v",`) from its words (the name and the wire
/// name's literal), as printed there (indented three times).
fn print_as_str_arm(words: &[String]) -> Result<String, String> {
    let id = ident(&words[0])?;
    let wire = words[1].parse::<Literal>().map_err(|e| format!("internal: literal {}: {e}", words[1]))?;
    let printed = print_item(quote! {
        impl S {
            fn f(self) -> &'static str {
                match self {
                    Self::#id => #wire,
                }
            }
        }
    })?;
    let inside = printed
        .strip_prefix("impl S {\n    fn f(self) -> &'static str {\n        match self {\n")
        .and_then(|rest| rest.strip_suffix("        }\n    }\n}\n"));
    inside.map(str::to_owned).ok_or_else(|| format!("internal: an arm printed as\n{printed}"))
}

/// The constructor of a struct of many fields, written line by line when prettyplease would
/// break both its parameters (if it has any) and its `Self { … }` over lines, one a line:
/// each parameter and each field of the literal is printed alone ([`Shapes`]) where such a
/// list puts it. `None` when the lists might fit on a line, or the header does not.
fn large_constructor_text(struct_name: &str, fields: &[Field]) -> Result<Option<String>, String> {
    static PARAMS: Shapes = Shapes::new();
    static INITS: Shapes = Shapes::new();
    let required: Vec<&Field> = fields.iter().filter(|f| f.default.is_none() && !f.optional).collect();
    // Lower bounds of the one-line widths: `name: T, ` and `name, `.
    let params_width: usize = required.iter().map(|f| f.ident.len() + 5).sum();
    let inits_width: usize = fields.iter().map(|f| f.ident.len() + 2).sum();
    if (!required.is_empty() && params_width <= 100) || inits_width <= 100 {
        return Ok(None);
    }
    let ident_name = ident(struct_name)?;
    let bare = print_item(quote! { impl #ident_name {} })?;
    let Some(header) = one_line_empty_block(&bare) else { return Ok(None) };
    let filler = ident(&"_".repeat(100))?;
    let mut text = String::with_capacity(header.len() + 64 * fields.len());
    text.push_str(header);
    text.push_str("{\n    /// A value with the required fields given; optional fields absent, defaulted fields\n");
    text.push_str("    /// at their contract defaults.\n");
    if required.len() > 7 {
        text.push_str("    #[allow(clippy::too_many_arguments)]\n");
    }
    if required.is_empty() {
        text.push_str("    pub fn new() -> Self {\n");
    } else {
        text.push_str("    pub fn new(\n");
        for field in &required {
            let ty = rust_type(&field.ty)?;
            let form = ty.to_string();
            if form.contains('z') {
                return Ok(None);
            }
            let words: [Word<'_>; 1] = [(&field.ident, 'z')];
            text.push_str(&PARAMS.text_in_form(0, form, &words, |words| {
                let name = ident(&words[0])?;
                let printed = print_item(quote! { impl S { pub fn new(#name: #ty, #filler: u8) -> Self {} } })?;
                let inside =
                    printed.strip_prefix("impl S {\n    pub fn new(\n").and_then(|rest| rest.split_once("        __"));
                inside
                    .map(|(param, _)| param.to_owned())
                    .ok_or_else(|| format!("internal: a parameter printed as\n{printed}"))
            })?);
        }
        text.push_str("    ) -> Self {\n");
    }
    text.push_str("        Self {\n");
    for field in fields {
        let mut words: Vec<Word<'_>> = vec![(&field.ident, 'z')];
        let fill = field.default.as_ref().map(|_| default_fn_name(struct_name, field));
        words.extend(fill.as_deref().map(|f| (f, 'J')));
        let kind = if fill.is_some() {
            0
        } else if field.optional {
            1
        } else if field.boxed {
            words.push((&field.ident, 'z'));
            2
        } else {
            3
        };
        text.push_str(&INITS.text(kind, &words, |words| {
            let name = ident(&words[0])?;
            let init = match kind {
                0 => {
                    let fill = ident(&words[1])?;
                    quote!(#name: #fill())
                }
                1 => quote!(#name: None),
                2 => {
                    let again = ident(&words[1])?;
                    quote!(#name: Box::new(#again))
                }
                _ => quote!(#name),
            };
            let printed = print_item(quote! { impl S { fn f() { S { #init, #filler: 0 } } } })?;
            let inside = printed
                .strip_prefix("impl S {\n    fn f() {\n        S {\n")
                .and_then(|rest| rest.split_once("            __"));
            inside.map(|(init, _)| init.to_owned()).ok_or_else(|| format!("internal: a field printed as\n{printed}"))
        })?);
    }
    text.push_str("        }\n    }\n}\n");
    if required.is_empty() {
        text.push_str(&print_item(quote! {
            impl Default for #ident_name {
                fn default() -> Self {
                    Self::new()
                }
            }
        })?);
    }
    Ok(Some(text))
}

/// `pub type Name = Type;` under its doc comment: printed once per run for each type and width
/// of the name ([`Shapes`]; a contract may have thousands of aliases), or whole when the type
/// shows the name's stand-in letter `Q`. prettyplease prints a `#[doc]` attribute above an item
/// at the top level as [`doc_comment`] writes it.
fn alias_item(name: &str, doc: &Doc, ty: &RustType) -> Result<Item, String> {
    static ALIASES: Shapes = Shapes::new();
    let ty = rust_type(ty)?;
    let form = ty.to_string();
    if form.contains('Q') {
        let ident_name = ident(name)?;
        let doc = doc_attrs(doc, &format!("`{name}`."));
        return Ok(Item::from(quote! {
            #doc
            pub type #ident_name = #ty;
        }));
    }
    let text = ALIASES.text_in_form(0, form, &[(name, 'Q')], |words| {
        let ident_name = ident(&words[0])?;
        print_item(quote! { pub type #ident_name = #ty; })
    })?;
    Ok(Item::Text(doc_comment(doc.text.as_deref().unwrap_or(&format!("`{name}`."))) + &text))
}

/// The function that fills `field` of `struct_name` with its contract default.
fn default_fn_name(struct_name: &str, field: &Field) -> String {
    format!(
        "default_{}_{}",
        crate::naming::to_snake_case(struct_name),
        crate::naming::unraw(&field.ident).trim_end_matches('_')
    )
}

/// The constructor of a struct ([`constructor_from_words`]) from its own words.
fn constructor_tokens(struct_name: &str, fields: &[Field]) -> Result<TokenStream, String> {
    let (words, _) = constructor_words(struct_name, fields);
    let words: Vec<String> = words.iter().map(|(w, _)| w.clone()).collect();
    constructor_from_words(fields, &words)
}

/// The words of [`constructor_tokens`] in the order it prints them (the struct's name, each
/// parameter's name and contract type, each field's name and the function of its default, the
/// struct's name again in `impl Default`), with their stand-in letters, and its form: what
/// else its layout depends on (each field's kind and any type that is not a contract type's
/// name).
fn constructor_words(struct_name: &str, fields: &[Field]) -> (Vec<(String, char)>, String) {
    let mut words = vec![(struct_name.to_owned(), 'Q')];
    let mut form = String::new();
    let mut params = 0;
    for field in fields.iter().filter(|f| f.default.is_none() && !f.optional) {
        params += 1;
        words.push((field.ident.clone(), 'z'));
        match &field.ty {
            RustType::Named(name) => {
                words.push((name.clone(), 'K'));
                form.push_str("p:;");
            }
            other => form.push_str(&format!("p:{other:?};")),
        }
    }
    for field in fields {
        words.push((field.ident.clone(), 'z'));
        if field.default.is_some() {
            words.push((default_fn_name(struct_name, field), 'J'));
            form.push('d');
        } else if field.optional {
            form.push('o');
        } else if field.boxed {
            words.push((field.ident.clone(), 'z'));
            form.push('b');
        } else {
            form.push('r');
        }
    }
    if params == 0 {
        words.push((struct_name.to_owned(), 'Q'));
    }
    (words, form)
}

/// `new` taking the required fields (in contract order): optional fields start absent and
/// defaulted ones at their defaults, so callers write `Model { x: Some(..), ..Model::new(a) }`
/// instead of listing every field. A struct without required fields also gets `Default`.
/// Built from `words` ([`constructor_words`]).
fn constructor_from_words(fields: &[Field], words: &[String]) -> Result<TokenStream, String> {
    let mut words = words.iter();
    let mut next = || words.next().ok_or_else(|| "internal: a constructor word is missing".to_owned());
    let ident_name = ident(next()?)?;
    let mut params = Vec::new();
    let mut inits = Vec::new();
    for field in fields.iter().filter(|f| f.default.is_none() && !f.optional) {
        let name = ident(next()?)?;
        let ty = match &field.ty {
            RustType::Named(_) => {
                let ty = ident(next()?)?;
                quote!(#ty)
            }
            other => rust_type(other)?,
        };
        params.push(quote!(#name: #ty));
    }
    for field in fields {
        let name = ident(next()?)?;
        if field.default.is_some() {
            let fill = ident(next()?)?;
            inits.push(quote!(#name: #fill()));
        } else if field.optional {
            inits.push(quote!(#name: None));
        } else if field.boxed {
            let again = ident(next()?)?;
            inits.push(quote!(#name: Box::new(#again)));
        } else {
            inits.push(quote!(#name));
        }
    }
    let many = (params.len() > 7).then(|| quote!(#[allow(clippy::too_many_arguments)]));
    let default = match params.is_empty() {
        true => {
            let again = ident(next()?)?;
            Some(quote! {
                impl Default for #again {
                    fn default() -> Self {
                        Self::new()
                    }
                }
            })
        }
        false => None,
    };
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

/// [`constructor_tokens`] printed: once per run for each form and widths of its words
/// ([`Shapes`]) when the struct has a few fields (a contract may have thousands of small
/// structs, inline objects nested in each other); a struct of many fields has a form and
/// widths of its own and is printed whole.
fn constructor_item(struct_name: &str, fields: &[Field]) -> Result<Item, String> {
    static CONSTRUCTORS: Shapes = Shapes::new();
    if fields.len() > 8 {
        return match large_constructor_text(struct_name, fields)? {
            Some(text) => Ok(Item::Text(text)),
            None => constructor_tokens(struct_name, fields).map(Item::from),
        };
    }
    // The stand-in letters are ones the rest of the item never shows; a type written out (not
    // a contract type's name) might show them, and such a constructor is printed whole.
    let written_out =
        fields.iter().filter(|f| f.default.is_none() && !f.optional && !matches!(f.ty, RustType::Named(_)));
    for field in written_out {
        if rust_type(&field.ty)?.to_string().contains(['Q', 'z', 'K', 'J']) {
            return constructor_tokens(struct_name, fields).map(Item::from);
        }
    }
    let (words, form) = constructor_words(struct_name, fields);
    let words: Vec<Word<'_>> = words.iter().map(|(w, letter)| (w.as_str(), *letter)).collect();
    CONSTRUCTORS
        .text_in_form(0, form, &words, |words| print_item(constructor_from_words(fields, words)?))
        .map(Item::Text)
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
                let constructor = constructor_item(name, fields)?;
                let renames =
                    Renames::choose(fields.iter().map(|f| (f.ident.as_str(), f.wire.as_str())), SerdeRule::gives_field);
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
                // Printed once per run for each width of the name (a contract may have
                // thousands of structs); nothing else in it shows the letter `Q`.
                static HEADERS: Shapes = Shapes::new();
                let form = format!("{serde} {}", rename_all.as_ref().map(ToString::to_string).unwrap_or_default());
                let bare = HEADERS.text_in_form(0, form, &[(name, 'Q')], |words| {
                    let ident_name = ident(&words[0])?;
                    print_item(quote! {
                        #[derive(Debug, Clone, PartialEq, #serde)]
                        #rename_all
                        pub struct #ident_name {}
                    })
                })?;
                let slow_fields =
                    || fields.iter().map(|f| field_tokens_slow(name, f, &renames)).collect::<Result<Vec<_>, _>>();
                items.push(struct_item(doc_text, header, &bare, &fields_text, slow_fields)?);
                items.push(constructor);
                items.extend(defaults.into_iter().map(Item::from));
            }
            TypeDef::Enum { name, doc, variants } => items.extend(enum_items(name, doc, variants, &serde)?),
            TypeDef::Tagged { name, doc, tag, variants } => {
                items.push(Item::from(tagged_tokens(name, doc, tag, variants, &serde)?))
            }
            TypeDef::Alias { name, doc, ty } => items.push(alias_item(name, doc, ty)?),
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

    use super::{FieldParts, Gives, Renames, enum_items, enum_items_whole};
    use crate::emit::tokens::{Item, print_item};
    use crate::model::{Doc, Variant};
    use crate::naming::SerdeRule;

    #[test]
    fn fields_filled_in_from_stand_ins_print_as_the_fields_themselves() {
        let long_type: TokenStream = format!("a::{}::Type<String>", "very_long_module".repeat(6)).parse().unwrap();
        // Types as tokens, and contract types by name (boxed or not), short and long.
        let named = |name: &str, boxed: bool| {
            let id = proc_macro2::Ident::new(name, proc_macro2::Span::call_site());
            let ty = if boxed { quote!(Box<#id>) } else { quote!(#id) };
            (ty, Some(name.to_owned()), boxed)
        };
        let types = [
            (quote!(String), None, false),
            (quote!(chrono::DateTime<chrono::Utc>), None, false),
            (quote!(Option<Vec<std::collections::BTreeMap<String, i64>>>), None, false),
            (long_type, None, false),
            named("ModelA", false),
            named("ModelB", true),
            named(&"ModelVeryLongName".repeat(5), false),
            named(&"ModelVeryLongName".repeat(5), true),
        ];
        let mut wrapped = 0;
        for (ty, ty_name, boxed) in &types {
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
                        ty_name: ty_name.clone(),
                        boxed: *boxed,
                        timestamp: ty.to_string().contains("DateTime"),
                    };
                    let mut words = Vec::new();
                    words.extend(parts.rename.clone());
                    words.extend(parts.default_fn.clone());
                    words.push(name);
                    words.extend(parts.ty_name.clone());
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

    fn texts(items: Vec<Item>) -> Vec<String> {
        items
            .into_iter()
            .map(|item| match item {
                Item::Text(text) => text,
                Item::Tokens(tokens) => print_item(tokens).unwrap(),
            })
            .collect()
    }

    #[test]
    fn enums_written_piece_by_piece_print_as_the_whole_items_do() {
        // Values that need no rename, values a rule renames, values with their own rename
        // (quotes, backslashes, tabs, non-ASCII, long enough to wrap the attribute or the arm),
        // a line break (printed whole), and names long enough to wrap the headers.
        let wires = |n: usize, kind: usize| -> Vec<(String, String)> {
            (0..n)
                .map(|i| match kind {
                    0 => (format!("V{i}"), format!("V{i}")),
                    1 => (format!("ValueNumber{i}"), format!("value_number_{i}")),
                    2 => (format!("Odd{i}"), format!("odd \"{i}\" \\ \t é ✓ {}", "w".repeat(i * 7))),
                    3 => (format!("L{}{i}", "LongIdentifier".repeat(i % 8)), "x".repeat(i * 13)),
                    _ => (format!("Line{i}"), format!("line\nbreak {i}")),
                })
                .collect()
        };
        let mut pieces = 0;
        for name in ["Kind", &"VeryLongEnumName".repeat(6), &"Wrapped".repeat(16)] {
            for n in [0, 1, 2, 5, 9, 12, 40] {
                for kind in 0..5 {
                    let variants: Vec<Variant> =
                        wires(n, kind).into_iter().map(|(ident, wire)| Variant { ident, wire }).collect();
                    for serde in [quote!(Serialize, Deserialize), quote!(serde::Serialize, serde::Deserialize)] {
                        for doc in [
                            Doc { text: None, line: 1 },
                            Doc { text: Some("Some <doc>.\n\nTwo lines.".into()), line: 1 },
                        ] {
                            let renames = Renames::choose(
                                variants.iter().map(|v| (v.ident.as_str(), v.wire.as_str())),
                                SerdeRule::gives_variant,
                            );
                            let whole = texts(enum_items_whole(name, &doc, &variants, &serde, &renames).unwrap());
                            let spliced = enum_items(name, &doc, &variants, &serde).unwrap();
                            pieces += spliced.iter().filter(|i| matches!(i, Item::Text(_))).count();
                            assert_eq!(texts(spliced), whole, "{name} {n} {kind}");
                        }
                    }
                }
            }
        }
        assert!(pieces > 100, "most enums are written piece by piece ({pieces})");
    }

    #[test]
    fn constructors_filled_in_from_stand_ins_print_as_the_constructors_themselves() {
        use super::{constructor_item, constructor_tokens};
        use crate::model::{DefaultValue, Field, RustType};
        let field = |ident: &str, ty: RustType, kind: usize| Field {
            ident: ident.to_owned(),
            wire: ident.to_owned(),
            rename: false,
            ty,
            optional: kind == 1,
            default: (kind == 2).then_some(DefaultValue::Int(1)),
            boxed: kind == 3,
            doc: Doc { text: None, line: 1 },
        };
        let types = |i: usize| match i % 4 {
            0 => RustType::String,
            1 => RustType::Named(format!("Model{}", "Long".repeat(i))),
            2 => RustType::Vec(Box::new(RustType::I64)),
            _ => RustType::Named("QzKJ".to_owned()),
        };
        let mut printed = 0;
        for name in ["M", "ModelScaleInput", &"ModelVeryLongName".repeat(5)] {
            for count in 0..10 {
                for pattern in 0..6 {
                    let fields: Vec<Field> = (0..count)
                        .map(|i| {
                            let ident = if (i + pattern) % 5 == 0 {
                                "a".to_owned()
                            } else {
                                format!("field_{}", "x".repeat(i * pattern))
                            };
                            let ident = if i % 7 == 6 { "r#type".to_owned() } else { format!("{ident}{i}") };
                            field(&ident, types(i + pattern), (i * (pattern + 1) + pattern) % 4)
                        })
                        .collect();
                    let whole = print_item(constructor_tokens(name, &fields).unwrap()).unwrap();
                    for _ in 0..2 {
                        let text = text_counting(constructor_item(name, &fields).unwrap(), &mut printed);
                        assert_eq!(text, whole, "{name} {count} {pattern}");
                    }
                }
            }
        }
        assert!(printed > 100, "most constructors are filled in ({printed})");
    }

    /// An item's text; counts the items that came as text (filled in, not printed whole).
    fn text_counting(item: Item, texts: &mut usize) -> String {
        match item {
            Item::Text(text) => {
                *texts += 1;
                text
            }
            Item::Tokens(tokens) => print_item(tokens).unwrap(),
        }
    }

    #[test]
    fn large_constructors_written_line_by_line_print_as_the_constructors_themselves() {
        use super::{constructor_item, constructor_tokens};
        use crate::model::{DefaultValue, Field, RustType};
        let mut written = 0;
        for name in ["M", &"ModelVeryLongName".repeat(5), &"Wrapped".repeat(15)] {
            for count in [9, 12, 30, 60] {
                for pattern in 0..8 {
                    let fields: Vec<Field> = (0..count)
                        .map(|i| {
                            let kind = if pattern < 4 { pattern } else { (i * pattern) % 4 };
                            let ident = match (i + pattern) % 6 {
                                0 => format!("r#type{i}"),
                                1 => format!("f{i}"),
                                _ => format!("field_{}{i}", "long_".repeat(pattern * 3)),
                            };
                            Field {
                                wire: ident.clone(),
                                ident,
                                rename: false,
                                ty: match i % 4 {
                                    0 => RustType::String,
                                    1 => RustType::Named(format!("Model{}", "Long".repeat(i % 30))),
                                    2 => RustType::Vec(Box::new(RustType::Map(Box::new(RustType::I64)))),
                                    _ => RustType::Named("Qz".to_owned()),
                                },
                                optional: kind == 1,
                                default: (kind == 2).then_some(DefaultValue::Int(1)),
                                boxed: kind == 3,
                                doc: Doc { text: None, line: 1 },
                            }
                        })
                        .collect();
                    let whole = print_item(constructor_tokens(name, &fields).unwrap()).unwrap();
                    let text = text_counting(constructor_item(name, &fields).unwrap(), &mut written);
                    assert_eq!(text, whole, "{name} {count} {pattern}");
                }
            }
        }
        assert!(written > 40, "most large constructors are written line by line ({written})");
    }

    fn attrs(names: &[(&str, &str)], gives: Gives) -> (Option<&'static str>, Vec<String>) {
        let renames = Renames::choose(names.iter().copied(), gives);
        let own = names.iter().filter(|(i, w)| renames.rename(i, w).is_some()).map(|(_, w)| w.to_string()).collect();
        (renames.rule.map(SerdeRule::name), own)
    }

    #[test]
    fn the_rule_chosen_is_the_cheapest_and_the_first_of_equals() {
        // Every candidate counted in full, no rule first and then `ALL`'s order, strictly less.
        // The rule and how many names it leaves with their own `rename`.
        fn reference<'a>(names: &[(&'a str, &'a str)], gives: Gives) -> (Option<SerdeRule>, usize) {
            let misses = |rule| names.iter().filter(|(i, w)| Renames::needs_rename(rule, gives, i, w)).count();
            let mut best = (misses(None), None);
            for rule in SerdeRule::ALL {
                let cost = 1 + misses(Some(rule));
                if cost < best.0 {
                    best = (cost, Some(rule));
                }
            }
            (best.1, misses(best.1))
        }
        let pools: [&[(&str, &str)]; 4] = [
            &[("Query", "query"), ("HealthCheck", "health_check"), ("V2Api", "v2_api"), ("Ab", "AB"), ("Xy", "Xy")],
            &[("user_id", "userId"), ("r#type", "type"), ("max_len", "max-len"), ("a", "A"), ("self_", "self")],
            &[("Query", "QUERY"), ("HealthCheck", "HEALTH_CHECK"), ("Ok", "ok"), ("Ok2", "Ok2"), ("X", "x")],
            &[("a_b", "aB"), ("a_b", "A_B"), ("a_b", "a-b"), ("a_b", "AB"), ("a_b", "a_b")],
        ];
        for (p, pool) in pools.iter().enumerate() {
            for len in [0, 1, 2, 5, 33, 40, 90] {
                for shift in 0..pool.len() {
                    let names: Vec<(&str, &str)> =
                        (0..len).map(|i| pool[(i * (shift + 1) + i / 7) % pool.len()]).collect();
                    for gives in [SerdeRule::gives_variant as Gives, SerdeRule::gives_field] {
                        let chosen = Renames::choose(names.iter().copied(), gives);
                        let found = (chosen.rule, chosen.exceptions);
                        assert_eq!(found, reference(&names, gives), "pool {p} len {len} shift {shift}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_rule_is_used_when_it_saves_renames_and_exceptions_keep_theirs() {
        let variants = [("Query", "query"), ("HealthCheck", "health_check"), ("SelfValue", "Self")];
        assert_eq!(attrs(&variants, SerdeRule::gives_variant), (Some("snake_case"), vec!["Self".to_owned()]));
        // One rename either way: no rule.
        assert_eq!(attrs(&[("Query", "query")], SerdeRule::gives_variant), (None, vec!["query".to_owned()]));
        let fields = [("user_id", "userId"), ("r#type", "type"), ("max_len", "maxLen")];
        assert_eq!(attrs(&fields, SerdeRule::gives_field), (Some("camelCase"), vec![]));
        // An escaped keyword keeps its own rename even where a rule would give its wire name.
        let fields = [("self_", "self"), ("camel_case", "camelCase")];
        assert_eq!(attrs(&fields, SerdeRule::gives_field), (None, vec!["self".to_owned(), "camelCase".to_owned()]));
    }
}
