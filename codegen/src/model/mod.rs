//! Stage 3: the type space of one contract. Resolves `$ref`s, names every Rust item (through
//! [`crate::naming`], collisions reported with both locations), decides each Rust type (the
//! `types` submodule) and names the node's operations (the `operations` submodule, by the rule
//! of [`crate::operations`]).
//!
//! Each contract becomes its own Rust module, so names only have to be unique within one
//! contract; the crate-level registry refers to nodes by module path. The model reads the
//! validated [`Contract`]; validation knows nothing of the model.

mod operations;
mod types;

use crate::diagnostics::Diagnostic;
use crate::naming::{field_ident, node_core, to_pascal_case};
use crate::validate::{Contract, DependencyKind, Kind};

/// Seconds an operation gets when neither its io_operation nor the contract says.
pub const DEFAULT_TIMEOUT_SECONDS: f64 = 30.0;

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

/// Builds the model of one validated contract; `None` (with diagnostics) when it cannot.
pub fn build(contract: Contract, diags: &mut Vec<Diagnostic>) -> Option<NodeModel> {
    let errors_before = diags.iter().filter(|d| d.is_error()).count();
    let types = types::build(&contract, diags);
    let input_type = to_pascal_case(&contract.input_model.value);
    let output_type = to_pascal_case(&contract.output_model.value);
    let (operation_enum, operations) = operations::build(&contract, &types, diags);
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
    let scaffold_type = to_pascal_case(node_core(&contract.name.value, contract.kind.suffix()));
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
    use crate::diagnostics::Code;

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
}
