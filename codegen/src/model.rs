//! Stage 3: the type space of one run. Resolves `$ref`s, names every Rust item (identifiers,
//! keyword escapes, collisions reported with both locations) and decides each Rust type.
//!
//! Each contract becomes its own Rust module, so names only have to be unique within one
//! contract; the crate-level registry refers to nodes by module path.

use std::collections::BTreeMap;

use crate::diagnostics::{Code, Diagnostic, Pos};
use crate::read::{Node, Value};
use crate::validate::{Contract, DependencyKind, Kind, RefTarget, Schema, SchemaKind};

/// Seconds an operation gets when neither its io_operation nor the contract says.
pub const DEFAULT_TIMEOUT_SECONDS: f64 = 30.0;

/// Type names that would shadow a prelude item the generated code uses.
const RESERVED_TYPE_NAMES: [&str; 11] =
    ["Box", "Err", "None", "Ok", "Option", "Result", "Self", "Some", "String", "Vec", "Sized"];

/// A Rust type the generator writes.
#[derive(Debug, Clone, PartialEq)]
pub enum RustType {
    /// `String`
    String,
    /// `onex_runtime::Sensitive<String>`
    SensitiveString,
    /// `i64`
    I64,
    /// `i32`
    I32,
    /// `u64`
    U64,
    /// `f64`
    F64,
    /// `bool`
    Bool,
    /// `uuid::Uuid`
    Uuid,
    /// `chrono::DateTime<chrono::Utc>`
    DateTime,
    /// `serde_json::Value`
    Json,
    /// `serde_json::Map<String, serde_json::Value>`
    JsonMap,
    /// `Vec<T>`
    Vec(Box<RustType>),
    /// `BTreeMap<String, T>`
    Map(Box<RustType>),
    /// A type of this module.
    Named(String),
    /// A path from a dependency's `rust_type`.
    External(String),
}

/// A default value, checked against its type.
#[derive(Debug, Clone, PartialEq)]
pub enum DefaultValue {
    /// A string (also for `Sensitive<String>`).
    Str(String),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A bool.
    Bool(bool),
    /// `Enum::Variant`.
    Variant(String, String),
    /// `path::Variant` of a shared enum; the wire string is checked by a generated test.
    ExternalVariant {
        /// The enum's Rust path.
        path: String,
        /// The variant (PascalCase of the wire string).
        variant: String,
        /// The string the contract wrote.
        wire: String,
    },
    /// A list.
    List(Vec<DefaultValue>),
    /// Any JSON (for `serde_json::Value` fields).
    Json(serde_json::Value),
}

/// A doc comment: the contract's description plus the line it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    /// The description, if the contract gives one.
    pub text: Option<String>,
    /// The 1-based line it cites.
    pub line: u32,
}

/// A struct field.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// The Rust identifier (may be `r#type`).
    pub ident: String,
    /// The JSON name.
    pub wire: String,
    /// Whether the ident differs from the wire name (needs `#[serde(rename)]`).
    pub rename: bool,
    /// The type (without the `Option`).
    pub ty: RustType,
    /// `Option<T>`, skipped when absent.
    pub optional: bool,
    /// Filled with this when absent.
    pub default: Option<DefaultValue>,
    /// `Box<T>`: the field closes a cycle of structs that would otherwise have infinite size,
    /// or its schema says `x-boxed: true`.
    pub boxed: bool,
    /// Doc.
    pub doc: Doc,
}

/// An enum variant.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// The Rust identifier.
    pub ident: String,
    /// The JSON string.
    pub wire: String,
}

/// A type of the node's models module.
#[derive(Debug, Clone, PartialEq)]
pub enum TypeDef {
    /// A struct.
    Struct {
        /// Name.
        name: String,
        /// Doc.
        doc: Doc,
        /// Fields.
        fields: Vec<Field>,
    },
    /// A string enum.
    Enum {
        /// Name.
        name: String,
        /// Doc.
        doc: Doc,
        /// Variants.
        variants: Vec<Variant>,
    },
    /// A tagged union: `#[serde(tag = "<tag>")]` with one newtype variant per arm. The arms'
    /// structs leave out the tag property, which the enum reads and writes.
    Tagged {
        /// Name.
        name: String,
        /// Doc.
        doc: Doc,
        /// The discriminating property.
        tag: String,
        /// One per arm: the variant, its tag value and the arm's type.
        variants: Vec<TaggedVariant>,
    },
    /// `pub type Name = T;`
    Alias {
        /// Name.
        name: String,
        /// Doc.
        doc: Doc,
        /// Target.
        ty: RustType,
    },
}

/// An arm of a tagged union.
#[derive(Debug, Clone, PartialEq)]
pub struct TaggedVariant {
    /// The Rust variant.
    pub ident: String,
    /// The tag's value on the wire.
    pub wire: String,
    /// The arm's type (a struct of this module).
    pub ty: String,
}

impl TypeDef {
    /// The type's name.
    pub fn name(&self) -> &str {
        match self {
            TypeDef::Struct { name, .. }
            | TypeDef::Enum { name, .. }
            | TypeDef::Tagged { name, .. }
            | TypeDef::Alias { name, .. } => name,
        }
    }
}

/// One operation of the node.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    /// The wire name (`execute_query`).
    pub wire: String,
    /// The handler method (`execute_query`, or `r#match`).
    pub method: String,
    /// The operation enum's variant, when the input has an `operation_type`.
    pub variant: Option<String>,
    /// The const in contract.rs (`OPERATION_EXECUTE_QUERY`).
    pub const_name: String,
    /// Timeout in seconds.
    pub timeout_seconds: f64,
    /// What it does.
    pub description: String,
    /// Where the operation is declared (enum value line).
    pub line: u32,
}

/// A dependency the node resolves from the container.
#[derive(Debug, Clone, PartialEq)]
pub struct DependencyField {
    /// Field name in `Dependencies`.
    pub ident: String,
    /// The `rust_type`.
    pub rust_type: String,
    /// Whether a missing one fails `new`.
    pub required: bool,
    /// Doc.
    pub doc: Doc,
}

/// Everything the emitter needs for one contract.
#[derive(Debug, Clone)]
pub struct NodeModel {
    /// The contract.
    pub contract: Contract,
    /// Types of models.rs, in contract order (inline types right after their parent).
    pub types: Vec<TypeDef>,
    /// The Rust name of `input_model`.
    pub input_type: String,
    /// The Rust name of `output_model`.
    pub output_type: String,
    /// The operation enum, when the input has `operation_type`.
    pub operation_enum: Option<String>,
    /// The operations, in enum order.
    pub operations: Vec<Operation>,
    /// Container-resolved dependencies.
    pub dependencies: Vec<DependencyField>,
    /// `NodePostgresConnectionManagerEffect`.
    pub node_type: String,
    /// `PostgresConnectionManagerHandler`.
    pub handler_trait: String,
    /// `PostgresConnectionManager` (the scaffold struct).
    pub scaffold_type: String,
}

/// `foo_barBaz-qux` → `FooBarBazQux`.
pub fn to_pascal_case(name: &str) -> String {
    words(name)
        .iter()
        .map(|w| {
            let mut chars = w.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase(),
                None => String::new(),
            }
        })
        .collect()
}

/// `FooBar-baz` → `foo_bar_baz`.
pub fn to_snake_case(name: &str) -> String {
    words(name).iter().map(|w| w.to_ascii_lowercase()).collect::<Vec<_>>().join("_")
}

/// Splits at non-alphanumerics and at lower→upper and acronym→word boundaries.
fn words(name: &str) -> Vec<String> {
    let chars: Vec<char> = name.chars().collect();
    let mut words = Vec::new();
    let mut current = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_ascii_alphanumeric() {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            continue;
        }
        let prev = i.checked_sub(1).map(|p| chars[p]);
        let next = chars.get(i + 1).copied();
        let boundary = c.is_ascii_uppercase()
            && prev.is_some_and(|p| {
                p.is_ascii_lowercase()
                    || p.is_ascii_digit()
                    || (p.is_ascii_uppercase() && next.is_some_and(|n| n.is_ascii_lowercase()))
            });
        if boundary && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        current.push(c);
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

const KEYWORDS: &[&str] = &[
    "abstract", "as", "async", "await", "become", "box", "break", "const", "continue", "crate", "do", "dyn", "else",
    "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl", "in", "let", "loop", "macro", "match", "mod",
    "move", "mut", "override", "priv", "pub", "ref", "return", "self", "Self", "static", "struct", "super", "trait",
    "true", "try", "type", "typeof", "union", "unsafe", "unsized", "use", "virtual", "where", "while", "yield",
];

/// A snake_case identifier for `wire`: keywords become raw identifiers (`r#type`), the few that
/// cannot be raw get a `_` suffix, and a leading digit gets a `_` prefix.
pub fn field_ident(wire: &str) -> String {
    let mut ident = to_snake_case(wire);
    if ident.is_empty() {
        ident = "field".to_owned();
    }
    if ident.starts_with(|c: char| c.is_ascii_digit()) {
        ident.insert(0, '_');
    }
    escape_keyword(ident)
}

fn escape_keyword(ident: String) -> String {
    if ["crate", "self", "super", "Self", "_"].contains(&ident.as_str()) {
        format!("{ident}_")
    } else if KEYWORDS.contains(&ident.as_str()) {
        format!("r#{ident}")
    } else {
        ident
    }
}

/// Whether an identifier produced by [`field_ident`] is a raw identifier.
pub fn unraw(ident: &str) -> &str {
    ident.strip_prefix("r#").unwrap_or(ident)
}

/// A PascalCase variant for an enum value.
pub fn variant_ident(wire: &str) -> String {
    let mut ident = to_pascal_case(wire);
    if ident.is_empty() {
        ident = "Empty".to_owned();
    }
    if ident.starts_with(|c: char| c.is_ascii_digit()) {
        ident.insert(0, 'V');
    }
    if ident == "Self" {
        ident = "SelfValue".to_owned();
    }
    ident
}

struct Builder<'a> {
    contract: &'a Contract,
    file: &'a str,
    diags: &'a mut Vec<Diagnostic>,
    types: Vec<TypeDef>,
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
        if RESERVED_TYPE_NAMES.contains(&name) {
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

    fn doc(schema: &Schema) -> Doc {
        Doc { text: schema.description.clone(), line: schema.pos.line }
    }

    /// Adds the named type for `schema` and returns its name.
    fn add_named(&mut self, name: &str, schema: &Schema, what: String) -> Option<String> {
        if !self.claim(name, schema.pos, what, &schema.path) {
            return None;
        }
        let doc = Self::doc(schema);
        match &schema.kind {
            SchemaKind::Object { properties, required } => {
                let index = self.types.len();
                self.types.push(TypeDef::Struct { name: name.to_owned(), doc, fields: Vec::new() });
                let mut fields: Vec<Field> = Vec::new();
                let mut idents: BTreeMap<String, Pos> = BTreeMap::new();
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
                    let in_required = required.iter().any(|r| r.value == prop.name.value);
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
                let mut variants: Vec<Variant> = Vec::new();
                let mut seen: BTreeMap<String, Pos> = BTreeMap::new();
                for value in values {
                    let ident = variant_ident(&value.value);
                    if let Some(first) = seen.get(&ident) {
                        self.diags.push(
                            Diagnostic::error(
                                Code::NameCollision,
                                self.file,
                                value.pos,
                                &schema.path,
                                format!(
                                    "enum values of `{name}` collide: `{}` becomes the variant `{ident}` twice",
                                    value.value
                                ),
                            )
                            .with_related(self.file, *first, "the other value is here")
                            .with_hint("make the values differ by more than case or punctuation"),
                        );
                        continue;
                    }
                    seen.insert(ident.clone(), value.pos);
                    variants.push(Variant { ident, wire: value.value.clone() });
                }
                self.types.push(TypeDef::Enum { name: name.to_owned(), doc, variants });
            }
            SchemaKind::Tagged { tag, arms } => {
                let mut variants: Vec<TaggedVariant> = Vec::new();
                for arm in arms {
                    let Some(ty) = self.def_names.get(&arm.value).cloned() else { continue };
                    let wire = tag_value(self.contract, &arm.value, tag);
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
                self.types.push(TypeDef::Tagged { name: name.to_owned(), doc, tag: tag.clone(), variants });
            }
            _ => {
                let index = self.types.len();
                self.types.push(TypeDef::Alias { name: name.to_owned(), doc, ty: RustType::Json });
                let ty = self.type_of(schema, &format!("{name}Item"))?;
                if let Some(TypeDef::Alias { ty: slot, .. }) = self.types.get_mut(index) {
                    *slot = ty;
                }
            }
        }
        Some(name.to_owned())
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
        self.types.iter().find_map(|t| match t {
            TypeDef::Enum { name: n, variants, .. } if n == name => Some(variants.as_slice()),
            _ => None,
        })
    }

    fn alias_target(&self, name: &str) -> Option<&RustType> {
        self.types.iter().find_map(|t| match t {
            TypeDef::Alias { name: n, ty, .. } if n == name => Some(ty),
            _ => None,
        })
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

/// The struct or alias a field stores inline (not behind `Vec` or a map, which already
/// allocate), resolving aliases.
fn inline_target<'t>(types: &'t [TypeDef], ty: &'t RustType) -> Option<&'t str> {
    match ty {
        RustType::Named(name) => match types.iter().find(|t| t.name() == name) {
            Some(TypeDef::Alias { ty, .. }) => inline_target(types, ty),
            Some(TypeDef::Struct { name, .. }) => Some(name),
            _ => None,
        },
        _ => None,
    }
}

/// Boxes every field through which a struct contains itself (directly or through other
/// structs), so recursive schemas compile. Deterministic: types and fields are visited in order.
fn box_cycles(types: &mut [TypeDef]) {
    let reaches = |types: &[TypeDef], from: &str, to: &str| -> bool {
        let mut stack = vec![from.to_owned()];
        let mut seen = std::collections::BTreeSet::new();
        while let Some(current) = stack.pop() {
            if current == to {
                return true;
            }
            if !seen.insert(current.clone()) {
                continue;
            }
            if let Some(TypeDef::Struct { fields, .. }) = types.iter().find(|t| t.name() == current) {
                stack.extend(
                    fields.iter().filter(|f| !f.boxed).filter_map(|f| inline_target(types, &f.ty)).map(str::to_owned),
                );
            }
        }
        false
    };
    for index in 0..types.len() {
        let TypeDef::Struct { name, fields, .. } = &types[index] else { continue };
        let name = name.clone();
        for field_index in 0..fields.len() {
            let target = match &types[index] {
                TypeDef::Struct { fields, .. } => inline_target(types, &fields[field_index].ty).map(str::to_owned),
                _ => None,
            };
            if let Some(target) = target {
                if reaches(types, &target, &name) {
                    if let TypeDef::Struct { fields, .. } = &mut types[index] {
                        fields[field_index].boxed = true;
                    }
                }
            }
        }
    }
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
fn tag_value(contract: &Contract, def: &str, tag: &str) -> Option<String> {
    let schema = &contract.definitions.iter().find(|d| d.name.value == def)?.schema;
    let SchemaKind::Object { properties, .. } = &schema.kind else { return None };
    let prop = properties.iter().find(|p| p.name.value == tag)?;
    match &prop.schema.kind {
        SchemaKind::StringEnum(values) if values.len() == 1 => Some(values[0].value.clone()),
        _ => None,
    }
}

/// Builds the model of one validated contract; `None` (with diagnostics) when it cannot.
pub fn build(contract: Contract, diags: &mut Vec<Diagnostic>) -> Option<NodeModel> {
    let file = contract.source.display.clone();
    let errors_before = diags.iter().filter(|d| d.is_error()).count();
    let mut b = Builder {
        contract: &contract,
        file: &file,
        diags,
        types: Vec::new(),
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
        let mut schema = def.schema.clone();
        schema.pos = def.name.pos;
        let _ = b.add_named(&name, &schema, what);
    }
    for (type_index, field_index, node, path) in std::mem::take(&mut b.pending_defaults) {
        let ty = match b.types.get(type_index) {
            Some(TypeDef::Struct { fields, .. }) => fields.get(field_index).map(|f| f.ty.clone()),
            _ => None,
        };
        let Some(ty) = ty else { continue };
        match b.default_for(&ty, &node) {
            Ok(value) => {
                if let Some(TypeDef::Struct { fields, .. }) = b.types.get_mut(type_index) {
                    if let Some(field) = fields.get_mut(field_index) {
                        field.default = Some(value);
                    }
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
    let mut types = std::mem::take(&mut b.types);
    box_cycles(&mut types);
    let input_type = to_pascal_case(&contract.input_model.value);
    let output_type = to_pascal_case(&contract.output_model.value);
    let (operation_enum, operations) = operations(&contract, &types, b.diags);
    let dependencies = contract
        .dependencies
        .iter()
        .filter(|d| matches!(d.kind, DependencyKind::Protocol | DependencyKind::Service))
        .filter_map(|d| {
            Some(DependencyField {
                ident: field_ident(&d.name.value),
                rust_type: d.rust_type.as_ref()?.value.clone(),
                required: d.required,
                doc: Doc { text: d.description.clone(), line: d.name.pos.line },
            })
        })
        .collect();
    let errors_after = diags.iter().filter(|d| d.is_error()).count();
    if errors_after > errors_before {
        return None;
    }
    let base = contract.name.value.strip_prefix("node_").unwrap_or(&contract.name.value);
    let base = base.strip_suffix(&format!("_{}", contract.kind.suffix())).unwrap_or(base);
    let scaffold_type = to_pascal_case(base);
    Some(NodeModel {
        node_type: to_pascal_case(&contract.name.value),
        handler_trait: format!("{scaffold_type}Handler"),
        scaffold_type,
        types,
        input_type,
        output_type,
        operation_enum,
        operations,
        dependencies,
        contract,
    })
}

fn operations(contract: &Contract, types: &[TypeDef], diags: &mut Vec<Diagnostic>) -> (Option<String>, Vec<Operation>) {
    let file = contract.source.display.as_str();
    let input = to_pascal_case(&contract.input_model.value);
    let timeout_for = |wire: &str| {
        contract
            .io_operations
            .iter()
            .find(|o| o.operation.value == wire)
            .and_then(|o| o.timeout_seconds)
            .or(contract.default_timeout_seconds)
            .unwrap_or(DEFAULT_TIMEOUT_SECONDS)
    };
    let description_for = |wire: &str| {
        contract.io_operations.iter().find(|o| o.operation.value == wire).and_then(|o| o.description.clone())
    };
    let input_def = types.iter().find(|t| t.name() == input);
    let (enum_name, field) = match input_def {
        Some(TypeDef::Struct { fields, .. }) => match fields.iter().find(|f| f.wire == "operation_type") {
            Some(f) => (
                match &f.ty {
                    RustType::Named(n) => Some(n.clone()),
                    _ => None,
                },
                Some(f),
            ),
            None => (None, None),
        },
        _ => (None, None),
    };
    let def_pos = contract.definitions.iter().find(|d| to_pascal_case(&d.name.value) == input).map(|d| d.name.pos);
    let pos = def_pos.unwrap_or(contract.input_model.pos);
    let mut ops = Vec::new();
    let mut enum_type = None;
    match (field, &enum_name) {
        (None, _) => ops.push(Operation {
            wire: "process".to_owned(),
            method: "process".to_owned(),
            variant: None,
            const_name: "OPERATION_PROCESS".to_owned(),
            timeout_seconds: timeout_for("process"),
            description: description_for("process").unwrap_or_else(|| contract.description.value.clone()),
            line: contract.description.pos.line,
        }),
        (Some(field), Some(name)) if !field.optional && field.default.is_none() => {
            let variants = types.iter().find_map(|t| match t {
                TypeDef::Enum { name: n, variants, .. } if n == name => Some(variants),
                _ => None,
            });
            if let Some(variants) = variants {
                enum_type = Some(name.clone());
                // Cite the io_operations entry (where the description comes from), else the enum value.
                let line_of = |wire: &str| {
                    contract
                        .io_operations
                        .iter()
                        .find(|o| o.operation.value == wire)
                        .map(|o| o.operation.pos.line)
                        .or_else(|| find_enum_value_line(contract, name, wire))
                        .unwrap_or(pos.line)
                };
                for v in variants {
                    let method = field_ident(&v.wire);
                    if unraw(&method) == "new" {
                        diags.push(
                            Diagnostic::error(
                                Code::NameCollision,
                                file,
                                pos,
                                "",
                                format!("operation `{}` would clash with the handler's `new`", v.wire),
                            )
                            .with_hint("rename the operation"),
                        );
                        continue;
                    }
                    ops.push(Operation {
                        const_name: format!("OPERATION_{}", to_snake_case(&v.wire).to_ascii_uppercase()),
                        wire: v.wire.clone(),
                        method,
                        variant: Some(v.ident.clone()),
                        timeout_seconds: timeout_for(&v.wire),
                        description: description_for(&v.wire).unwrap_or_else(|| format!("The `{}` operation.", v.wire)),
                        line: line_of(&v.wire),
                    });
                }
            } else {
                invalid_operation_type(diags, file, pos, &input);
            }
        }
        (Some(field), _) if field.optional || field.default.is_some() => {
            diags.push(
                Diagnostic::error(
                    Code::InvalidOperationType,
                    file,
                    pos,
                    &format!("definitions.{}.required", contract.input_model.value),
                    format!(
                        "`operation_type` of `{}` must be required: the node dispatches on it",
                        contract.input_model.value
                    ),
                )
                .with_hint("add `operation_type` to the input model's `required` list"),
            );
        }
        _ => invalid_operation_type(diags, file, pos, &input),
    }
    for io in &contract.io_operations {
        if !ops.iter().any(|o| o.wire == io.operation.value) {
            let known: Vec<&str> = ops.iter().map(|o| o.wire.as_str()).collect();
            diags.push(
                Diagnostic::error(
                    Code::UnknownOperation,
                    file,
                    io.operation.pos,
                    "io_operations",
                    format!(
                        "io_operations configures `{}`, which is not an operation of this node",
                        io.operation.value
                    ),
                )
                .with_hint(format!("use one of: {}, or add the value to the operation_type enum", known.join(", "))),
            );
        }
    }
    (enum_type, ops)
}

fn invalid_operation_type(diags: &mut Vec<Diagnostic>, file: &str, pos: Pos, input: &str) {
    diags.push(
        Diagnostic::error(
            Code::InvalidOperationType,
            file,
            pos,
            "",
            format!("`operation_type` of `{input}` must be a string enum: its values are the node's operations"),
        )
        .with_hint("write `operation_type: {type: string, enum: [op_a, op_b]}` (inline or through `$ref`)"),
    );
}

fn find_enum_value_line(contract: &Contract, enum_name: &str, wire: &str) -> Option<u32> {
    fn search(schema: &Schema, wire: &str) -> Option<u32> {
        match &schema.kind {
            SchemaKind::StringEnum(values) => values.iter().find(|v| v.value == wire).map(|v| v.pos.line),
            SchemaKind::Object { properties, .. } => properties.iter().find_map(|p| search(&p.schema, wire)),
            _ => None,
        }
    }
    let _ = enum_name;
    let input = contract.definitions.iter().find(|d| d.name.value == contract.input_model.value)?;
    if let SchemaKind::Object { properties, .. } = &input.schema.kind {
        let op = properties.iter().find(|p| p.name.value == "operation_type")?;
        if let SchemaKind::Ref(target) = &op.schema.kind {
            if let RefTarget::Definition(name) = &target.value {
                let def = contract.definitions.iter().find(|d| &d.name.value == name)?;
                return search(&def.schema, wire);
            }
        }
        return search(&op.schema, wire);
    }
    None
}

/// The crate-level view of one run: every node, sorted by name then version.
pub fn sort_nodes(nodes: &mut [NodeModel]) {
    nodes.sort_by(|a, b| {
        (&a.contract.name.value, a.contract.version.value).cmp(&(&b.contract.name.value, b.contract.version.value))
    });
}

impl NodeModel {
    /// The node kind.
    pub fn kind(&self) -> Kind {
        self.contract.kind
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_keyword_becomes_a_usable_identifier() {
        for kw in KEYWORDS.iter().chain(&["_", "r#type", "Self"]) {
            let ident = field_ident(kw);
            assert!(syn::parse_str::<syn::Ident>(&ident).is_ok(), "{kw} -> {ident}");
            let variant = variant_ident(kw);
            assert!(syn::parse_str::<syn::Ident>(&variant).is_ok(), "{kw} -> {variant}");
        }
    }

    #[test]
    fn prelude_type_names_are_refused_with_both_names_in_the_message() {
        let text = "contract_version: {major: 1, minor: 0, patch: 0}\nnode_name: node_x_compute\nnode_type: COMPUTE\n\
                    description: d\ninput_model: Option\noutput_model: Option\ndefinitions:\n  Option:\n    type: object\n";
        let source = crate::read::SourceFile {
            abs_path: "contracts/nodes/node_x_compute/v1_0_0/contract.yaml".into(),
            display: "c.yaml".into(),
            components: Vec::new(),
            text: text.into(),
        };
        let mut diags = Vec::new();
        let tree = crate::read::parse("c.yaml", text, &mut diags).unwrap();
        let contract = crate::validate::validate(source, &tree, &mut diags).unwrap();
        assert!(build(contract, &mut diags).is_none());
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!(diags[0].code, Code::NameCollision);
        assert!(diags[0].message.contains("shadow Rust's own `Option`"), "{}", diags[0].message);
    }

    #[test]
    fn names() {
        assert_eq!(to_pascal_case("node_postgres_connection_manager_effect"), "NodePostgresConnectionManagerEffect");
        assert_eq!(to_pascal_case("HTTPServer"), "HttpServer");
        assert_eq!(to_snake_case("camelCaseID"), "camel_case_id");
        assert_eq!(to_snake_case("ModelXInput"), "model_x_input");
        assert_eq!(field_ident("type"), "r#type");
        assert_eq!(field_ident("self"), "self_");
        assert_eq!(field_ident("gen"), "r#gen");
        assert_eq!(field_ident("2fa"), "_2fa");
        assert_eq!(variant_ident("read-only"), "ReadOnly");
        assert_eq!(variant_ident("5xx"), "V5xx");
        assert_eq!(variant_ident("Self"), "SelfValue");
    }
}
