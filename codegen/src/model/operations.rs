//! The node's operations as the generated code names them (handler method, enum variant,
//! `OPERATION_*` const, timeout, description, the line to cite), decided by the rule of
//! [`crate::operations`]: the routes of `handler_routing`, else the input model's built
//! `operation_type`; an `operation_type` that breaks the rule, two operations with one method
//! name, and `io_operations` entries that configure no operation, are reported here.

use super::{DEFAULT_TIMEOUT_SECONDS, Operation, RustType, TypeDef, Variant};
use crate::behaviour::routing::{FALLBACK, Fallback, Routing};
use crate::diagnostics::{Code, Diagnostic, Pos};
use crate::naming::{field_ident, operation_const, to_pascal_case, unraw};
use crate::operations::{OperationType, Operations, PROPERTY, SINGLE, decide};
use crate::validate::{Contract, RefTarget, Schema, SchemaKind};

/// The operation enum (when the node dispatches on one) and the operations, in enum order.
pub(super) fn build(
    contract: &Contract,
    types: &[TypeDef],
    diags: &mut Vec<Diagnostic>,
) -> (Option<String>, Vec<Operation>) {
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
    let field = match types.iter().find(|t| t.name() == input) {
        Some(TypeDef::Struct { fields, .. }) => fields.iter().find(|f| f.wire == PROPERTY),
        _ => None,
    };
    // The enum the field names, with its variants.
    let enum_of = |ty: &RustType| -> Option<(String, &[Variant])> {
        let RustType::Named(name) = ty else { return None };
        types.iter().find_map(|t| match t {
            TypeDef::Enum { name: n, variants, .. } if n == name => Some((name.clone(), variants.as_slice())),
            _ => None,
        })
    };
    if let Some(routing) = &contract.behaviour.routing {
        let ops = routed(contract, routing, &timeout_for, &description_for, diags);
        report_unconfigured(contract, &ops, diags);
        return (None, ops);
    }
    let rule = decide(field.map(|f| OperationType {
        required: !f.optional,
        has_default: f.default.is_some(),
        values: enum_of(&f.ty),
    }));
    let def_pos = contract.definitions.iter().find(|d| to_pascal_case(&d.name.value) == input).map(|d| d.name.pos);
    let pos = def_pos.unwrap_or(contract.input_model.pos);
    let mut ops = Vec::new();
    let mut enum_type = None;
    match rule {
        Operations::Single => ops.push(Operation {
            wire: SINGLE.to_owned(),
            method: SINGLE.to_owned(),
            variant: None,
            const_name: operation_const(SINGLE),
            timeout_seconds: timeout_for(SINGLE),
            description: description_for(SINGLE).unwrap_or_else(|| contract.description.value.clone()),
            line: contract.description.pos.line,
        }),
        Operations::Dispatch((name, variants)) => {
            // Cite the io_operations entry (where the description comes from), else the enum value.
            let line_of = |wire: &str| {
                contract
                    .io_operations
                    .iter()
                    .find(|o| o.operation.value == wire)
                    .map(|o| o.operation.pos.line)
                    .or_else(|| find_enum_value_line(contract, wire))
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
                    const_name: operation_const(&v.wire),
                    wire: v.wire.clone(),
                    method,
                    variant: Some(v.ident.clone()),
                    timeout_seconds: timeout_for(&v.wire),
                    description: description_for(&v.wire).unwrap_or_else(|| format!("The `{}` operation.", v.wire)),
                    line: line_of(&v.wire),
                });
            }
            enum_type = Some(name);
        }
        Operations::NotRequired => {
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
        Operations::NotAnEnum => invalid_operation_type(diags, file, pos, &input),
    }
    report_unconfigured(contract, &ops, diags);
    (enum_type, ops)
}

/// One operation per route (and the default handler's own [`FALLBACK`]); two that get one
/// method name, or a method name the handler trait already has, are reported with both places.
fn routed(
    contract: &Contract,
    routing: &Routing,
    timeout_for: &dyn Fn(&str) -> f64,
    description_for: &dyn Fn(&str) -> Option<String>,
    diags: &mut Vec<Diagnostic>,
) -> Vec<Operation> {
    let file = contract.source.display.as_str();
    let configured =
        |wire: &str| contract.io_operations.iter().any(|o| o.operation.value == wire && o.timeout_seconds.is_some());
    let timeout = |wire: &str| match routing.max_timeout_seconds {
        Some(max) if !configured(wire) => max,
        _ => timeout_for(wire),
    };
    let mut ops: Vec<Operation> = Vec::new();
    let mut places: Vec<Pos> = Vec::new();
    let mut candidates: Vec<(String, String, String, Pos)> = routing
        .routes
        .iter()
        .map(|r| {
            let description = description_for(&r.operation)
                .or_else(|| r.description.clone())
                .unwrap_or_else(|| format!("The `{}` route, handled by `{}`.", r.operation, r.handler));
            (r.operation.clone(), field_ident(&r.method_base), description, r.pos)
        })
        .collect();
    if let Some(Fallback::Own { handler, pos }) = &routing.fallback {
        let description = format!("The default handler `{handler}`: requests that match no route.");
        candidates.push((FALLBACK.to_owned(), FALLBACK.to_owned(), description, *pos));
    }
    for (wire, method, description, pos) in candidates {
        if matches!(unraw(&method), "new" | "times_itself") {
            diags.push(
                Diagnostic::error(
                    Code::NameCollision,
                    file,
                    pos,
                    "handler_routing",
                    format!(
                        "route `{wire}` would be the handler method `{method}`, which the handler trait already has"
                    ),
                )
                .with_hint("rename the route's key"),
            );
            continue;
        }
        if let Some(i) = ops.iter().position(|o| o.method == method) {
            diags.push(
                Diagnostic::error(
                    Code::NameCollision,
                    file,
                    pos,
                    "handler_routing",
                    format!("routes `{}` and `{wire}` both become the handler method `{method}`", ops[i].wire),
                )
                .with_related(file, places[i], "the first route is here")
                .with_hint("rename one of the routes' keys"),
            );
            continue;
        }
        ops.push(Operation {
            const_name: operation_const(unraw(&method)),
            timeout_seconds: timeout(&wire),
            wire,
            method,
            variant: None,
            description,
            line: pos.line,
        });
        places.push(pos);
    }
    ops
}

/// `io_operations` entries that configure no operation of the node.
fn report_unconfigured(contract: &Contract, ops: &[Operation], diags: &mut Vec<Diagnostic>) {
    let file = contract.source.display.as_str();
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

/// The line of the enum value `wire` of the input model's `operation_type` (inline or the
/// definition it refers to).
fn find_enum_value_line(contract: &Contract, wire: &str) -> Option<u32> {
    fn search(schema: &Schema, wire: &str) -> Option<u32> {
        match &schema.kind {
            SchemaKind::StringEnum(values) => values.iter().find(|v| v.value == wire).map(|v| v.pos.line),
            SchemaKind::Object { properties, .. } => properties.iter().find_map(|p| search(&p.schema, wire)),
            _ => None,
        }
    }
    let input = contract.definitions.iter().find(|d| d.name.value == contract.input_model.value)?;
    if let SchemaKind::Object { properties, .. } = &input.schema.kind {
        let op = properties.iter().find(|p| p.name.value == PROPERTY)?;
        if let SchemaKind::Ref(target) = &op.schema.kind
            && let RefTarget::Definition(name) = &target.value
        {
            let def = contract.definitions.iter().find(|d| &d.name.value == name)?;
            return search(&def.schema, wire);
        }
        return search(&op.schema, wire);
    }
    None
}
