//! Schemas of the foreign dialects rewritten into our dialect's JSON-Schema subset.
//!
//! Handles the OpenAPI flavour of September 2025 (`nullable`, `x-sensitive`, `required: false`
//! on a property, `$ref` with siblings, `oneOf` with single-value enum discriminators), the
//! `input_state` flavour (`property_type`, `object_type`, `reference`) and the pydantic flavour
//! of 2026 (`type: uuid|datetime|float|enum|ref`, `default_factory`, `ge`/`le`,
//! `min_length`/`max_length`, `key_type`/`value_type`, `item_type`). Unknown keys stay.

use crate::diagnostics::{Code, Diagnostic};
use crate::read::{Node, Value};
use crate::validate::join;

use super::refs::{Resolver, Target};
use super::tree;

/// The key our dialect uses to mark a `oneOf` whose arms carry a single-value enum
/// discriminator: its value is the discriminating property.
pub const TAG_KEY: &str = "x-tag";

/// Rewrites the schema `node` (at YAML path `path`) in place.
pub fn normalize(node: &mut Node, path: &str, r: &mut Resolver<'_>, diags: &mut Vec<Diagnostic>) {
    if node.as_map().is_none() {
        return;
    }
    tree::rename(node, "property_type", "type");
    tree::rename(node, "object_type", "type");
    rewrite_reference(node, path, r, diags);
    rewrite_pydantic_type(node, path, r, diags);
    for (from, to) in [
        ("ge", "minimum"),
        ("le", "maximum"),
        ("gt", "exclusiveMinimum"),
        ("lt", "exclusiveMaximum"),
        ("min_length", "minLength"),
        ("max_length", "maxLength"),
        ("min_items", "minItems"),
        ("max_items", "maxItems"),
    ] {
        if !tree::has(node, to) {
            tree::rename(node, from, to);
        }
    }
    // A factory default means "absent → fresh empty value": the field is simply optional.
    tree::remove(node, "default_factory");
    if matches!(node.get("default"), Some(Node { value: Value::Null, .. })) {
        tree::remove(node, "default");
    }
    rewrite_map_and_list_shorthands(node, path, r, diags);
    if tree::str_of(node, "type") == Some("array") && !tree::has(node, "items") {
        // An untyped list (`list` / `list[Any]`): items are any JSON value.
        let pos = node.pos;
        tree::set(node, "items", tree::map(Vec::new(), pos), pos);
    }
    normalize_children(node, path, r, diags);
    mark_tagged_union(node);
}

/// `reference: X` (input_state) and `type: ref` + `ref: X` (pydantic) → `$ref`; `$ref` strings
/// resolved as JSON pointers and rewritten to our dialect.
fn rewrite_reference(node: &mut Node, path: &str, r: &mut Resolver<'_>, diags: &mut Vec<Diagnostic>) {
    let bare = if tree::has(node, "$ref") {
        None
    } else if let Some((_, value)) = take_string(node, "reference") {
        Some(value)
    } else if tree::str_of(node, "type") == Some("ref") {
        let found = take_string(node, "ref").map(|(_, v)| v);
        if found.is_some() {
            tree::remove(node, "type");
        }
        found
    } else {
        None
    };
    if let Some(name) = bare {
        let module = tree::str_of(node, "module").map(str::to_owned);
        let target = r.resolve_name(name.as_str().unwrap_or_default(), module.as_deref(), name.pos, diags);
        set_ref(node, &target, name.pos);
        return;
    }
    let Some(reference) = node.get("$ref") else { return };
    let Some(text) = reference.as_str().map(str::to_owned) else { return };
    let pos = reference.pos;
    match r.resolve_pointer(&text, pos, &join(path, "$ref"), diags) {
        Some(target) => set_ref(node, &target, pos),
        None => {
            // Reported; the value is read as any JSON so the rest of the file still checks.
            tree::remove(node, "$ref");
        }
    }
}

fn set_ref(node: &mut Node, target: &Target, pos: crate::diagnostics::Pos) {
    tree::remove(node, "type");
    tree::set(node, "$ref", tree::string(&target.pointer(), pos), pos);
}

/// Removes `key` when it holds a string, returning it.
fn take_string(node: &mut Node, key: &str) -> Option<(String, Node)> {
    node.get(key).and_then(Node::as_str)?;
    tree::remove(node, key).map(|(k, v)| (k.name, v))
}

/// The pydantic / Python spellings of `type`.
fn rewrite_pydantic_type(node: &mut Node, path: &str, r: &mut Resolver<'_>, diags: &mut Vec<Diagnostic>) {
    let Some(ty) = node.get("type") else { return };
    let pos = ty.pos;
    let Some(name) = ty.as_str().map(str::to_owned) else { return };
    let set_type = |node: &mut Node, t: &str| tree::set(node, "type", tree::string(t, pos), pos);
    let set_format = |node: &mut Node, f: &str| {
        if !tree::has(node, "format") {
            tree::set(node, "format", tree::string(f, pos), pos);
        }
    };
    match name.as_str() {
        "uuid" | "UUID" => {
            set_type(node, "string");
            set_format(node, "uuid");
        }
        "datetime" | "date-time" => {
            set_type(node, "string");
            set_format(node, "date-time");
        }
        "date" => {
            set_type(node, "string");
            set_format(node, "date");
        }
        "float" => set_type(node, "number"),
        "int" => set_type(node, "integer"),
        "str" => set_type(node, "string"),
        "bool" => set_type(node, "boolean"),
        "dict" => set_type(node, "object"),
        "list" => set_type(node, "array"),
        "any" | "Any" => {
            tree::remove(node, "type");
        }
        "enum" => {
            let values = node.get("enum").and_then(Node::as_seq).map(<[Node]>::to_vec);
            match values {
                Some(values) if values.iter().all(|v| v.as_str().is_some()) => set_type(node, "string"),
                _ => {
                    // Only the Python enum class is known: it is an external type.
                    let class = tree::str_of(node, "enum_class").map(str::to_owned);
                    let module = tree::str_of(node, "module").map(str::to_owned);
                    match class {
                        Some(class) => {
                            let target = r.import(&class, module.as_deref(), pos, diags);
                            set_ref(node, &target, pos);
                        }
                        None => {
                            diags.push(
                                Diagnostic::error(
                                    Code::UnsupportedSchema,
                                    r.file,
                                    pos,
                                    &join(path, "type"),
                                    "`type: enum` needs an `enum:` list of strings or an `enum_class`",
                                )
                                .with_hint("list the values: `enum: [a, b]`"),
                            );
                            tree::remove(node, "type");
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

/// `key_type`/`value_type` → `additionalProperties`; `item_type` → `items`.
fn rewrite_map_and_list_shorthands(node: &mut Node, path: &str, r: &mut Resolver<'_>, diags: &mut Vec<Diagnostic>) {
    tree::remove(node, "key_type");
    if let Some((key, value)) = tree::remove(node, "value_type")
        && !tree::has(node, "additionalProperties")
    {
        let schema = shorthand_schema(&value);
        tree::set(node, "additionalProperties", schema, key.pos);
        if let Some(slot) = tree::get_mut(node, "additionalProperties") {
            normalize(slot, &join(path, "additionalProperties"), r, diags);
        }
    }
    if let Some((key, value)) = tree::remove(node, "item_type")
        && !tree::has(node, "items")
    {
        tree::set(node, "items", shorthand_schema(&value), key.pos);
        if let Some(slot) = tree::get_mut(node, "items") {
            normalize(slot, &join(path, "items"), r, diags);
        }
    }
}

/// The schema for a `value_type`/`item_type` value: a type name, or a schema mapping.
fn shorthand_schema(value: &Node) -> Node {
    match value.as_str() {
        Some("any" | "Any") => Node { value: Value::Bool(true), pos: value.pos },
        Some(name) => tree::map(vec![("type", tree::string(name, value.pos))], value.pos),
        None => value.clone(),
    }
}

/// Recurses into `properties`, `items`, `additionalProperties` and `oneOf`/`anyOf`/`allOf`.
/// A nullable property leaves its parent's `required` list: in Rust it is an `Option`.
fn normalize_children(node: &mut Node, path: &str, r: &mut Resolver<'_>, diags: &mut Vec<Diagnostic>) {
    let mut nullable = Vec::new();
    if let Some(properties) = tree::get_mut(node, "properties")
        && let Value::Map(entries) = &mut properties.value
    {
        for (key, prop) in entries.iter_mut() {
            let is_nullable = matches!(prop.get("nullable"), Some(Node { value: Value::Bool(true), .. }));
            if is_nullable {
                nullable.push(key.name.clone());
            }
            normalize(prop, &join(&join(path, "properties"), &key.name), r, diags);
        }
    }
    if !nullable.is_empty()
        && let Some(Node { value: Value::Seq(items), .. }) = tree::get_mut(node, "required")
    {
        items.retain(|item| item.as_str().is_none_or(|name| !nullable.iter().any(|n| n == name)));
    }
    if let Some(items) = tree::get_mut(node, "items") {
        normalize(items, &join(path, "items"), r, diags);
    }
    if let Some(extra) = tree::get_mut(node, "additionalProperties") {
        normalize(extra, &join(path, "additionalProperties"), r, diags);
    }
    for keyword in ["oneOf", "anyOf", "allOf"] {
        if let Some(Node { value: Value::Seq(arms), .. }) = tree::get_mut(node, keyword) {
            for (i, arm) in arms.iter_mut().enumerate() {
                normalize(arm, &format!("{}[{i}]", join(path, keyword)), r, diags);
            }
        }
    }
}

/// Marks `oneOf: [$ref…]` whose arms all have the same property fixed by a single-value
/// `enum` with `x-tag: <property>`, after checking the arms are local definitions. The arms
/// are looked up later (they may be defined after the union), see [`discriminator`].
fn mark_tagged_union(node: &mut Node) {
    if tree::has(node, "oneOf") && !tree::has(node, TAG_KEY) {
        let pos = node.pos;
        // The discriminator is decided once all definitions are normalized.
        tree::set(node, TAG_KEY, Node { value: Value::Null, pos }, pos);
    }
}

/// The property that discriminates the arms of a `oneOf` (each arm a `$ref` to a local object
/// definition with that property as a single-value string enum), given the normalized
/// definitions. `None` when the arms do not follow that pattern.
pub fn discriminator(one_of: &Node, definitions: &Node) -> Option<String> {
    let arms = one_of.as_seq()?;
    if arms.is_empty() {
        return None;
    }
    let mut candidate: Option<Vec<String>> = None;
    for arm in arms {
        let name = arm.get("$ref")?.as_str()?.strip_prefix("#/definitions/")?;
        let def = definitions.get(name)?;
        let tags: Vec<String> = def
            .get("properties")?
            .as_map()?
            .iter()
            .filter(|(_, p)| {
                p.get("enum").and_then(Node::as_seq).is_some_and(|e| e.len() == 1 && e[0].as_str().is_some())
            })
            .map(|(k, _)| k.name.clone())
            .collect();
        candidate = Some(match candidate {
            None => tags,
            Some(previous) => previous.into_iter().filter(|t| tags.contains(t)).collect(),
        });
    }
    let found = candidate?.into_iter().next()?;
    // The tag values must differ between arms, or the union cannot be told apart.
    let mut values: Vec<&str> = arms
        .iter()
        .filter_map(|arm| {
            let name = arm.get("$ref")?.as_str()?.strip_prefix("#/definitions/")?;
            definitions.get(name)?.get("properties")?.get(&found)?.get("enum")?.as_seq()?.first()?.as_str()
        })
        .collect();
    let count = values.len();
    values.sort_unstable();
    values.dedup();
    (values.len() == count && count == arms.len()).then_some(found)
}
