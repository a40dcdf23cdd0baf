//! Which operations a node has. The rule: the operations `handler_routing` routes to, when the
//! contract has that section ([`crate::behaviour::routing`]); otherwise the values of the input
//! model's `operation_type` property, when that property is a required string enum (inline or
//! through `$ref`) without a default; a node whose input has neither has the one operation
//! `process`.
//!
//! Two stages apply it: dialect normalization, on the raw tree, to match a foreign contract's
//! `io_operations` entries to operations ([`in_tree`]), and the model, on the built types, to
//! name the operations and report an `operation_type` that breaks the rule
//! ([`crate::model::Operation`]). Both decide through [`decide`].

use crate::read::{Node, Value};

/// The input model's property whose values are the node's operations.
pub const PROPERTY: &str = "operation_type";

/// The one operation of a node without [`PROPERTY`].
pub const SINGLE: &str = "process";

/// The input model's [`PROPERTY`], as one stage sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationType<V> {
    /// Whether a value is always present: required, or (for the model) not optional.
    pub required: bool,
    /// Whether it has a default (which would make dispatching on it meaningless).
    pub has_default: bool,
    /// Its string enum's values, when its schema is one.
    pub values: Option<V>,
}

/// What [`decide`] makes of the input model.
#[derive(Debug, Clone, PartialEq)]
pub enum Operations<V> {
    /// No [`PROPERTY`]: the one operation [`SINGLE`].
    Single,
    /// One operation per value of the enum.
    Dispatch(V),
    /// [`PROPERTY`] is optional or has a default: the node could not dispatch on it.
    NotRequired,
    /// [`PROPERTY`] is required but not a string enum.
    NotAnEnum,
}

/// The rule itself, on the input model's [`PROPERTY`] (`None` when the input has none).
pub fn decide<V>(operation_type: Option<OperationType<V>>) -> Operations<V> {
    match operation_type {
        None => Operations::Single,
        Some(OperationType { required: true, has_default: false, values }) => {
            values.map_or(Operations::NotAnEnum, Operations::Dispatch)
        }
        Some(_) => Operations::NotRequired,
    }
}

/// The operations of a node contract in our dialect's tree, before validation: where the
/// contract breaks the rule (which validation reports later), the node has [`SINGLE`].
pub fn in_tree(root: &Node) -> Vec<String> {
    if let Some(routed) = crate::behaviour::routing::operations_in_tree(root) {
        return routed;
    }
    let single = || vec![SINGLE.to_owned()];
    let Some(defs) = root.get("definitions") else { return single() };
    let Some(input) = root.get("input_model").and_then(Node::as_str).and_then(|m| defs.get(m)) else {
        return single();
    };
    let operation_type = input.get("properties").and_then(|p| p.get(PROPERTY)).map(|op| {
        let listed = input
            .get("required")
            .and_then(Node::as_seq)
            .is_some_and(|r| r.iter().any(|i| i.as_str() == Some(PROPERTY)));
        let flag = op.get("required").and_then(|f| if let Value::Bool(b) = f.value { Some(b) } else { None });
        let schema = match op.get("$ref").and_then(Node::as_str).and_then(|r| r.strip_prefix("#/definitions/")) {
            Some(name) => defs.get(name),
            None => Some(op),
        };
        OperationType {
            required: flag.unwrap_or(listed),
            has_default: op.get("default").is_some(),
            values: schema
                .and_then(|s| s.get("enum"))
                .and_then(Node::as_seq)
                .map(|items| items.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect::<Vec<String>>()),
        }
    });
    match decide(operation_type) {
        Operations::Dispatch(values) if !values.is_empty() => values,
        _ => single(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(text: &str) -> Node {
        let mut diags = Vec::new();
        crate::read::parse("c.yaml", text, &mut diags).expect("test YAML parses")
    }

    const HEAD: &str = "input_model: In\ndefinitions:\n  In:\n    type: object\n";

    #[test]
    fn the_rule() {
        let op = |required, has_default, values: Option<u8>| Some(OperationType { required, has_default, values });
        assert_eq!(decide::<u8>(None), Operations::Single);
        assert_eq!(decide(op(true, false, Some(1))), Operations::Dispatch(1));
        assert_eq!(decide(op(true, false, None)), Operations::NotAnEnum);
        assert_eq!(decide(op(false, false, Some(1))), Operations::NotRequired);
        assert_eq!(decide(op(true, true, Some(1))), Operations::NotRequired);
    }

    #[test]
    fn in_the_tree() {
        let ops = |rest: &str| in_tree(&tree(&format!("{HEAD}{rest}")));
        assert_eq!(ops(""), ["process"]);
        let inline =
            "    required: [operation_type]\n    properties:\n      operation_type: {type: string, enum: [a, b]}\n";
        assert_eq!(ops(inline), ["a", "b"]);
        let by_ref = "    required: [operation_type]\n    properties:\n      operation_type: {$ref: '#/definitions/Op'}\n  \
                      Op: {type: string, enum: [x]}\n";
        assert_eq!(ops(by_ref), ["x"]);
        let flagged = "    properties:\n      operation_type: {type: string, enum: [a], required: true}\n";
        assert_eq!(ops(flagged), ["a"]);
        let optional = "    properties:\n      operation_type: {type: string, enum: [a]}\n";
        assert_eq!(ops(optional), ["process"]);
        let defaulted = "    required: [operation_type]\n    properties:\n      operation_type: {type: string, enum: [a], default: a}\n";
        assert_eq!(ops(defaulted), ["process"]);
        let not_enum = "    required: [operation_type]\n    properties:\n      operation_type: {type: string}\n";
        assert_eq!(ops(not_enum), ["process"]);
        let routed = "handler_routing:\n  routing_strategy: operation_match\n  handlers:\n    - {operation: a.b, handler: {name: H}}\n    - {supported_operations: [c, d], handler: {name: H}}\n";
        assert_eq!(ops(&format!("{inline}{routed}")), ["a.b", "c", "d"], "routing wins over operation_type");
    }
}
