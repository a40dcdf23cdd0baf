//! Schema → Rust types: names every type of one contract's models module (inline types after
//! their parent as `<Parent><Property>`), reports names that collide or shadow the prelude,
//! checks defaults against their types and boxes the fields that close a cycle of structs.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};

use super::{DefaultValue, Doc, Field, RustType, TaggedVariant, TypeDef, Variant};
use crate::diagnostics::{Code, Diagnostic, Pos};
use crate::naming::{PRELUDE_NAMES, field_ident, to_pascal_case, unraw, variant_ident};
use crate::read::{Node, Value};
use crate::validate::{Contract, RefTarget, Schema, SchemaKind, Spanned};

/// The types of `contract`'s models module, in contract order; every problem goes to `diags`.
pub(super) fn build(contract: &Contract, diags: &mut Vec<Diagnostic>) -> Vec<TypeDef> {
    let mut b = Builder {
        contract,
        file: &contract.source.display,
        diags,
        types: Vec::new(),
        type_index: HashMap::new(),
        definitions: contract.definitions.iter().map(|d| (d.name.value.as_str(), d)).collect(),
        names: BTreeMap::new(),
        def_names: BTreeMap::new(),
        pending_defaults: Vec::new(),
        tag_fields: BTreeMap::new(),
    };
    for def in &contract.definitions {
        if let SchemaKind::Tagged { tag, arms } = &def.schema.kind {
            for arm in arms {
                b.tag_fields.insert(to_pascal_case(&arm.value), tag.clone());
            }
        }
    }
    for def in &contract.definitions {
        b.def_names.insert(def.name.value.clone(), to_pascal_case(&def.name.value));
    }
    for def in &contract.definitions {
        let name = to_pascal_case(&def.name.value);
        let what = format!("definition `{}`", def.name.value);
        // A definition is placed at its key, not at its schema (a copy of the schema to move it
        // there cost as much as building the type of a large one).
        let _ = b.add_named_at(&name, &def.schema, def.name.pos, what);
    }
    for (type_index, field_index, node, path) in std::mem::take(&mut b.pending_defaults) {
        let ty = match b.types.get(type_index) {
            Some(TypeDef::Struct { fields, .. }) => fields.get(field_index).map(|f| f.ty.clone()),
            _ => None,
        };
        let Some(ty) = ty else { continue };
        match b.default_for(&ty, &node) {
            Ok(value) => {
                if let Some(TypeDef::Struct { fields, .. }) = b.types.get_mut(type_index)
                    && let Some(field) = fields.get_mut(field_index)
                {
                    field.default = Some(value);
                }
            }
            Err(message) => {
                b.diags.push(
                    Diagnostic::error(Code::InvalidDefault, b.file, node.pos, &format!("{path}.default"), message)
                        .with_hint("write a default of the property's type, or remove it"),
                );
            }
        }
    }
    let mut types = b.types;
    box_cycles(&mut types);
    types
}

struct Builder<'a> {
    contract: &'a Contract,
    file: &'a str,
    diags: &'a mut Vec<Diagnostic>,
    types: Vec<TypeDef>,
    /// Rust type name → its index in `types` (names are unique: [`Builder::claim`]).
    type_index: HashMap<String, usize>,
    /// Definition key → definition (the first of a key, as a scan finds it).
    definitions: HashMap<&'a str, &'a crate::validate::Definition>,
    /// Rust type name → (where, what) of its first definition.
    names: BTreeMap<String, (Pos, String)>,
    /// Definition key → Rust name.
    def_names: BTreeMap<String, String>,
    /// Raw defaults to check once every enum is known: (type index, field index, node, path).
    pending_defaults: Vec<(usize, usize, Node, String)>,
    /// Rust name of a tagged union's arm → its tag property, which the arm's struct leaves out.
    tag_fields: BTreeMap<String, String>,
}

impl Builder<'_> {
    fn claim(&mut self, name: &str, pos: Pos, what: String, path: &str) -> bool {
        if PRELUDE_NAMES.contains(&name) {
            self.diags.push(
                Diagnostic::error(
                    Code::NameCollision,
                    self.file,
                    pos,
                    path,
                    format!("{what} is named `{name}`, which would shadow Rust's own `{name}`"),
                )
                .with_hint(format!("rename it, e.g. `Model{name}`")),
            );
            return false;
        }
        if let Some((first_pos, first_what)) = self.names.get(name) {
            let (first_pos, first_what) = (*first_pos, first_what.clone());
            self.diags.push(
                Diagnostic::error(
                    Code::NameCollision,
                    self.file,
                    pos,
                    path,
                    format!("{what} and {first_what} both become the Rust type `{name}`"),
                )
                .with_related(self.file, first_pos, format!("{first_what} is here"))
                .with_hint("rename one of them (inline types are named <Parent><Property>)"),
            );
            return false;
        }
        self.names.insert(name.to_owned(), (pos, what));
        true
    }

    /// Appends a type, indexing it by name; returns its index.
    fn push_type(&mut self, ty: TypeDef) -> usize {
        let index = self.types.len();
        self.type_index.entry(ty.name().to_owned()).or_insert(index);
        self.types.push(ty);
        index
    }

    /// Adds the named type for `schema` and returns its name.
    fn add_named(&mut self, name: &str, schema: &Schema, what: String) -> Option<String> {
        self.add_named_at(name, schema, schema.pos, what)
    }

    /// [`Builder::add_named`] for a type that is placed at `pos` (its diagnostics and its doc
    /// comment's line) rather than at its schema.
    fn add_named_at(&mut self, name: &str, schema: &Schema, pos: Pos, what: String) -> Option<String> {
        if !self.claim(name, pos, what, &schema.path) {
            return None;
        }
        let doc = Doc { text: schema.description.clone(), line: pos.line };
        match &schema.kind {
            SchemaKind::Object { properties, required } => {
                let index = self.push_type(TypeDef::Struct { name: name.to_owned(), doc, fields: Vec::new() });
                let mut fields: Vec<Field> = Vec::new();
                let mut idents: BTreeMap<String, Pos> = BTreeMap::new();
                let required: HashSet<&str> = required.iter().map(|r| r.value.as_str()).collect();
                for prop in properties {
                    if self.tag_fields.get(name) == Some(&prop.name.value) {
                        continue;
                    }
                    let ident = field_ident(&prop.name.value);
                    if let Some(first) = idents.get(unraw(&ident)) {
                        self.diags.push(
                            Diagnostic::error(
                                Code::NameCollision,
                                self.file,
                                prop.name.pos,
                                &prop.schema.path,
                                format!(
                                    "property `{}` of `{name}` becomes the field `{ident}`, which another property already is",
                                    prop.name.value
                                ),
                            )
                            .with_related(self.file, *first, "the other property is here")
                            .with_hint("rename one of the two properties"),
                        );
                        continue;
                    }
                    idents.insert(unraw(&ident).to_owned(), prop.name.pos);
                    let inline_name = format!("{name}{}", to_pascal_case(&prop.name.value));
                    let Some(ty) = self.type_of(&prop.schema, &inline_name) else { continue };
                    let in_required = required.contains(prop.name.value.as_str());
                    let required = prop.schema.required_flag.unwrap_or(in_required);
                    if let Some(default) = &prop.schema.default {
                        self.pending_defaults.push((index, fields.len(), default.clone(), prop.schema.path.clone()));
                    }
                    let optional = !required && prop.schema.default.is_none();
                    fields.push(Field {
                        rename: unraw(&ident) != prop.name.value,
                        ident,
                        wire: prop.name.value.clone(),
                        ty,
                        optional,
                        default: None,
                        boxed: prop.schema.boxed,
                        doc: Doc { text: prop.schema.description.clone(), line: prop.name.pos.line },
                    });
                }
                if let Some(TypeDef::Struct { fields: slot, .. }) = self.types.get_mut(index) {
                    *slot = fields;
                }
            }
            SchemaKind::StringEnum(values) => {
                let variants = self.variants(name, values, &schema.path);
                self.push_type(TypeDef::Enum { name: name.to_owned(), doc, variants });
            }
            SchemaKind::Tagged { tag, arms } => {
                let mut variants: Vec<TaggedVariant> = Vec::new();
                for arm in arms {
                    let Some(ty) = self.def_names.get(&arm.value).cloned() else { continue };
                    let wire = self.definitions.get(arm.value.as_str()).and_then(|def| tag_value(def, tag));
                    let Some(wire) = wire else {
                        self.diags.push(
                            Diagnostic::error(
                                Code::UnsupportedSchema,
                                self.file,
                                arm.pos,
                                &schema.path,
                                format!("arm `{}` of `{name}` has no single-value enum property `{tag}`", arm.value),
                            )
                            .with_hint(format!(
                                "give `{}` the property `{tag}: {{type: string, enum: [<value>]}}`",
                                arm.value
                            )),
                        );
                        continue;
                    };
                    let ident = variant_ident(&wire);
                    if let Some(first) = variants.iter().find(|v| v.ident == ident) {
                        let first_wire = first.wire.clone();
                        self.diags.push(
                            Diagnostic::error(
                                Code::NameCollision,
                                self.file,
                                arm.pos,
                                &schema.path,
                                format!("arms of `{name}` with `{tag}` `{first_wire}` and `{wire}` both become the variant `{ident}`"),
                            )
                            .with_hint("make the tag values differ by more than case or punctuation"),
                        );
                        continue;
                    }
                    variants.push(TaggedVariant { ident, wire, ty });
                }
                self.push_type(TypeDef::Tagged { name: name.to_owned(), doc, tag: tag.clone(), variants });
            }
            _ => {
                let index = self.push_type(TypeDef::Alias { name: name.to_owned(), doc, ty: RustType::Json });
                let ty = self.type_of(schema, &format!("{name}Item"))?;
                if let Some(TypeDef::Alias { ty: slot, .. }) = self.types.get_mut(index) {
                    *slot = ty;
                }
            }
        }
        Some(name.to_owned())
    }

    /// The variants of the enum `name` with `values`; a value whose variant an earlier value
    /// already is gets an error and no variant.
    fn variants(&mut self, name: &str, values: &[Spanned<String>], path: &str) -> Vec<Variant> {
        let mut variants: Vec<Variant> = values
            .iter()
            .map(|value| Variant { ident: variant_ident(&value.value), wire: value.value.clone() })
            .collect();
        // Looked up, never iterated: a hash map, as an enum may have hundreds of thousands of
        // values, keyed by the variants themselves (no copy of each name), and filled before
        // any is dropped: an identifier first met is never dropped, so `first` always names a
        // kept value.
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(variants.len());
        let mut keep = vec![true; variants.len()];
        for (i, variant) in variants.iter().enumerate() {
            let first = match seen.entry(&variant.ident) {
                Entry::Occupied(first) => *first.get(),
                Entry::Vacant(slot) => {
                    slot.insert(i);
                    continue;
                }
            };
            keep[i] = false;
            let value = &values[i];
            self.diags.push(
                Diagnostic::error(
                    Code::NameCollision,
                    self.file,
                    value.pos,
                    path,
                    format!(
                        "enum values of `{name}` collide: `{}` becomes the variant `{}` twice",
                        value.value, variant.ident
                    ),
                )
                .with_related(self.file, values[first].pos, "the other value is here")
                .with_hint("make the values differ by more than case or punctuation"),
            );
        }
        let mut kept = keep.into_iter();
        variants.retain(|_| kept.next().unwrap_or(true));
        variants
    }

    /// The Rust type for a property/item schema; inline objects and enums become named types.
    fn type_of(&mut self, schema: &Schema, inline_name: &str) -> Option<RustType> {
        Some(match &schema.kind {
            SchemaKind::Ref(target) => match &target.value {
                RefTarget::Definition(def) => RustType::Named(self.def_names.get(def)?.clone()),
                RefTarget::Dependency(dep) => {
                    let dep = self.contract.dependencies.iter().find(|d| &d.name.value == dep)?;
                    RustType::External(dep.rust_type.as_ref()?.value.clone())
                }
            },
            SchemaKind::Object { .. } | SchemaKind::StringEnum(_) | SchemaKind::Tagged { .. } => {
                let what = format!("the inline type at `{}`", schema.path);
                RustType::Named(self.add_named(inline_name, schema, what)?)
            }
            SchemaKind::Map(value) => RustType::Map(Box::new(self.type_of(value, &format!("{inline_name}Value"))?)),
            SchemaKind::FreeObject => RustType::JsonMap,
            SchemaKind::String { format } => match format.as_deref() {
                _ if schema.sensitive => RustType::SensitiveString,
                Some("uuid") => RustType::Uuid,
                Some("date-time") => RustType::DateTime,
                _ => RustType::String,
            },
            SchemaKind::Integer { format, minimum } => match (format.as_deref(), minimum) {
                (Some("int32"), _) => RustType::I32,
                (_, Some(m)) if *m >= 0.0 => RustType::U64,
                _ => RustType::I64,
            },
            SchemaKind::Number => RustType::F64,
            SchemaKind::Boolean => RustType::Bool,
            SchemaKind::Array(items) => RustType::Vec(Box::new(self.type_of(items, &format!("{inline_name}Item"))?)),
            SchemaKind::Any => RustType::Json,
        })
    }

    fn enum_variants(&self, name: &str) -> Option<&[Variant]> {
        match self.types.get(*self.type_index.get(name)?)? {
            TypeDef::Enum { variants, .. } => Some(variants.as_slice()),
            _ => None,
        }
    }

    fn alias_target(&self, name: &str) -> Option<&RustType> {
        match self.types.get(*self.type_index.get(name)?)? {
            TypeDef::Alias { ty, .. } => Some(ty),
            _ => None,
        }
    }

    fn default_for(&self, ty: &RustType, node: &Node) -> Result<DefaultValue, String> {
        let mismatch = || format!("a default of {} does not fit the type {}", node.type_name(), describe(ty));
        Ok(match (ty, &node.value) {
            (RustType::String | RustType::SensitiveString, Value::Str(s)) => DefaultValue::Str(s.clone()),
            (RustType::I64, Value::Int(i)) => DefaultValue::Int(*i),
            (RustType::I32, Value::Int(i)) if i32::try_from(*i).is_ok() => DefaultValue::Int(*i),
            (RustType::U64, Value::Int(i)) if *i >= 0 => DefaultValue::Int(*i),
            (RustType::F64, Value::Int(i)) => DefaultValue::Float(*i as f64),
            (RustType::F64, Value::Float(f)) if f.is_finite() => DefaultValue::Float(*f),
            (RustType::Bool, Value::Bool(b)) => DefaultValue::Bool(*b),
            (RustType::Json, _) => DefaultValue::Json(node.to_json()),
            (RustType::Vec(inner), Value::Seq(items)) => {
                DefaultValue::List(items.iter().map(|i| self.default_for(inner, i)).collect::<Result<_, _>>()?)
            }
            (RustType::Named(name), Value::Str(s)) if self.enum_variants(name).is_some() => {
                let variants = self.enum_variants(name).unwrap_or_default();
                match variants.iter().find(|v| &v.wire == s) {
                    Some(v) => DefaultValue::Variant(name.clone(), v.ident.clone()),
                    None => {
                        let wires: Vec<&str> = variants.iter().map(|v| v.wire.as_str()).collect();
                        return Err(format!("default `{s}` is not one of {name}'s values: {}", wires.join(", ")));
                    }
                }
            }
            (RustType::External(path), Value::Str(s)) => {
                DefaultValue::ExternalVariant { path: path.clone(), variant: variant_ident(s), wire: s.clone() }
            }
            (RustType::Named(name), _) if self.alias_target(name).is_some() => {
                let target = self.alias_target(name).cloned().unwrap_or(RustType::Json);
                self.default_for(&target, node)?
            }
            _ => return Err(mismatch()),
        })
    }
}

/// Boxes every field through which a struct contains itself (directly or through other
/// structs), so recursive schemas compile. Deterministic: types and fields are visited in order,
/// and a field boxed earlier no longer counts as a path for the fields after it (so a cycle is
/// broken once, at its first field in contract order).
///
/// A field `S.f` stores the struct `T` inline (directly or through aliases, not behind `Vec` or
/// a map, which already allocate) and needs a box when `T` reaches `S` through unboxed inline
/// fields. That can only happen when `T` and `S` are in one strongly connected component of the
/// inline-field graph (boxing only removes edges), so only fields inside a cycle search, and
/// only within their component: a contract with tens of thousands of structs and no cycle
/// (deep inline nesting, long chains of definitions) costs linear time, where a search from
/// every field over every type was quadratic to cubic.
fn box_cycles(types: &mut [TypeDef]) {
    let mut by_name: HashMap<&str, usize> = HashMap::with_capacity(types.len());
    for (i, t) in types.iter().enumerate() {
        by_name.entry(t.name()).or_insert(i);
    }
    // The struct a type stores inline, through aliases (bounded: an alias cycle stores none).
    let inline_target = |ty: &RustType| -> Option<usize> {
        let mut ty = ty;
        for _ in 0..=types.len() {
            let RustType::Named(name) = ty else { return None };
            let index = *by_name.get(name.as_str())?;
            match &types[index] {
                TypeDef::Alias { ty: next, .. } => ty = next,
                TypeDef::Struct { .. } => return Some(index),
                _ => return None,
            }
        }
        None
    };
    // Per type, per field: the inline target and whether the field is boxed.
    let mut edges: Vec<Vec<(Option<usize>, bool)>> = types
        .iter()
        .map(|t| match t {
            TypeDef::Struct { fields, .. } => fields.iter().map(|f| (inline_target(&f.ty), f.boxed)).collect(),
            _ => Vec::new(),
        })
        .collect();
    let component = components(&edges);
    // `mark[t] == search` when the current search has seen `t`; a new search takes a new
    // number, so the marks never need clearing.
    let (mut mark, mut search) = (vec![0usize; types.len()], 0usize);
    let mut stack = Vec::new();
    for source in 0..edges.len() {
        for field in 0..edges[source].len() {
            let Some(target) = edges[source][field].0 else { continue };
            if component[target] != component[source] {
                continue;
            }
            // Does `target` reach `source` over unboxed edges?
            search += 1;
            let mut reaches = false;
            stack.clear();
            stack.push(target);
            while let Some(current) = stack.pop() {
                if current == source {
                    reaches = true;
                    break;
                }
                if mark[current] == search {
                    continue;
                }
                mark[current] = search;
                stack.extend(
                    edges[current]
                        .iter()
                        .filter(|(to, boxed)| !boxed && to.is_some_and(|to| component[to] == component[source]))
                        .filter_map(|(to, _)| *to),
                );
            }
            if reaches {
                edges[source][field].1 = true;
            }
        }
    }
    for (t, fields) in types.iter_mut().zip(&edges) {
        if let TypeDef::Struct { fields: slots, .. } = t {
            for (slot, (_, boxed)) in slots.iter_mut().zip(fields) {
                slot.boxed = *boxed;
            }
        }
    }
}

/// The strongly connected component of each node of the graph `edges` (node → its fields'
/// targets, boxed ones left out), by Tarjan's algorithm with an explicit stack: the graph may
/// be tens of thousands of nodes deep.
fn components(edges: &[Vec<(Option<usize>, bool)>]) -> Vec<usize> {
    const NONE: usize = usize::MAX;
    let n = edges.len();
    let (mut index, mut low, mut component) = (vec![NONE; n], vec![0; n], vec![NONE; n]);
    let (mut on_stack, mut stack) = (vec![false; n], Vec::new());
    let mut next_index = 0;
    let mut next_component = 0;
    for root in 0..n {
        if index[root] != NONE {
            continue;
        }
        // (node, next field to look at)
        let mut work = vec![(root, 0usize)];
        index[root] = next_index;
        low[root] = next_index;
        next_index += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (node, ref mut field)) = work.last_mut() {
            let next = edges[node].get(*field).copied();
            *field += 1;
            match next {
                Some((Some(to), false)) => {
                    if index[to] == NONE {
                        index[to] = next_index;
                        low[to] = next_index;
                        next_index += 1;
                        stack.push(to);
                        on_stack[to] = true;
                        work.push((to, 0));
                    } else if on_stack[to] {
                        low[node] = low[node].min(index[to]);
                    }
                }
                Some(_) => {}
                None => {
                    work.pop();
                    if let Some(&(parent, _)) = work.last() {
                        low[parent] = low[parent].min(low[node]);
                    }
                    if low[node] == index[node] {
                        while let Some(member) = stack.pop() {
                            on_stack[member] = false;
                            component[member] = next_component;
                            if member == node {
                                break;
                            }
                        }
                        next_component += 1;
                    }
                }
            }
        }
    }
    component
}

fn describe(ty: &RustType) -> String {
    match ty {
        RustType::String => "string".into(),
        RustType::SensitiveString => "sensitive string".into(),
        RustType::I64 | RustType::I32 => "integer".into(),
        RustType::U64 => "non-negative integer".into(),
        RustType::F64 => "number".into(),
        RustType::Bool => "boolean".into(),
        RustType::Uuid => "uuid".into(),
        RustType::DateTime => "date-time".into(),
        RustType::Json => "JSON value".into(),
        RustType::JsonMap => "object".into(),
        RustType::Vec(inner) => format!("list of {}", describe(inner)),
        RustType::Map(inner) => format!("map of {}", describe(inner)),
        RustType::Named(n) => n.clone(),
        RustType::External(p) => p.clone(),
    }
}

/// The value of the single-value enum property `tag` of the object definition `def`.
fn tag_value(def: &crate::validate::Definition, tag: &str) -> Option<String> {
    let SchemaKind::Object { properties, .. } = &def.schema.kind else { return None };
    let prop = properties.iter().find(|p| p.name.value == tag)?;
    match &prop.schema.kind {
        SchemaKind::StringEnum(values) if values.len() == 1 => Some(values[0].value.clone()),
        _ => None,
    }
}
