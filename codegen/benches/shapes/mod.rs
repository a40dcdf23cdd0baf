//! The worst shapes of a contract at the size limit, shared by the `scale` benchmark and the
//! `reader_scale` test: each is a valid contract of our dialect grown, in one direction, until
//! the next step would pass `target` bytes (normally [`codegen::read::MAX_FILE_BYTES`]).
//!
//! - `top-level keys`: the top-level mapping with hundreds of thousands of extra keys (the
//!   issue's case: unknown keys are kept and never errors);
//! - `definitions`: as many definitions, each a `$ref` target of a property of the input;
//! - `properties`: one object with as many properties, every one listed in `required`;
//! - `enum values`: one enum with as many values (a long sequence);
//! - `sequence`: an extra top-level key holding one long flow sequence of integers;
//! - `long scalar`: the description, one scalar of nearly the whole file;
//! - `deep nesting`: inline objects nested to just under [`codegen::read::MAX_DEPTH`], repeated
//!   as separate definitions.
#![allow(dead_code)]

use std::fmt::Write as _;

/// Where the contracts of the shapes sit, below a `contracts` folder (the path is checked).
pub const PATH: &str = "contracts/nodes/node_scale_compute/v1_0_0/contract.yaml";

/// The contract every shape grows from: `input_tail` ends the input model's properties (or
/// adds its `required`), `extra_definitions` follow it, `top_level_tail` ends the file.
fn base(description: &str, extra_definitions: &str, input_tail: &str, top_level_tail: &str) -> String {
    format!(
        "contract_version: {{major: 1, minor: 0, patch: 0}}\n\
         node_name: node_scale_compute\n\
         node_type: COMPUTE\n\
         description: {description}\n\
         input_model: ModelScaleInput\n\
         output_model: ModelScaleOutput\n\
         definitions:\n\
         \x20 ModelScaleOutput:\n\
         \x20   type: object\n\
         \x20   properties:\n\
         \x20     ok: {{type: boolean}}\n\
         \x20 ModelScaleInput:\n\
         \x20   type: object\n\
         \x20   properties:\n\
         \x20     name: {{type: string}}\n\
         {input_tail}\
         {extra_definitions}\
         {top_level_tail}"
    )
}

/// `item(0) + item(1) + …` for as long as `fixed` bytes plus the text stay within `target`;
/// returns the text and the number of items.
fn grow(fixed: usize, target: usize, mut item: impl FnMut(usize) -> String) -> (String, usize) {
    let mut text = String::new();
    let mut i = 0;
    loop {
        let next = item(i);
        if fixed + text.len() + next.len() > target {
            return (text, i);
        }
        text.push_str(&next);
        i += 1;
    }
}

/// One shape: its name, what grows, how many of it, and the contract text.
pub struct Shape {
    pub name: &'static str,
    pub unit: &'static str,
    pub count: usize,
    pub text: String,
}

/// `count` top-level keys beyond the contract's own (`x_k0000000: 0`, …): the case.
pub fn top_level_keys(count: usize) -> String {
    let mut tail = String::with_capacity(count * 16);
    for i in 0..count {
        let _ = writeln!(tail, "x_k{i:07}: {i}");
    }
    base("Scale.", "", "", &tail)
}

/// Every shape, each grown to just under `target` bytes.
pub fn all(target: usize) -> Vec<Shape> {
    let mut shapes = Vec::new();
    let fixed = base("Scale.", "", "", "").len();

    let (tail, count) = grow(fixed, target, |i| format!("x_k{i:07}: {i}\n"));
    shapes.push(Shape { name: "top-level keys", unit: "keys", count, text: base("Scale.", "", "", &tail) });

    // Each definition costs its own entry and a property referring to it.
    let (pairs, count) = grow(fixed, target, |i| {
        format!("      d{i}: {{$ref: \"#/definitions/ModelD{i}\"}}\n  ModelD{i}: {{type: string}}\n")
    });
    let (props, defs): (Vec<&str>, Vec<&str>) = pairs.lines().partition(|l| l.starts_with("      "));
    let props = props.iter().map(|l| format!("{l}\n")).collect::<String>();
    let defs = defs.iter().map(|l| format!("{l}\n")).collect::<String>();
    shapes.push(Shape { name: "definitions", unit: "definitions", count, text: base("Scale.", &defs, &props, "") });

    let (mut props, mut required, mut count) = (String::new(), String::from("    required: [name"), 0);
    loop {
        let (prop, req) = (format!("      p{count}: {{type: string}}\n"), format!(", p{count}"));
        if fixed + props.len() + required.len() + prop.len() + req.len() + 2 > target {
            break;
        }
        props.push_str(&prop);
        required.push_str(&req);
        count += 1;
    }
    required.push_str("]\n");
    let text = base("Scale.", "", &format!("{props}{required}"), "");
    shapes.push(Shape { name: "properties", unit: "properties", count, text });

    let head = "      kind:\n        type: string\n        enum: [";
    let (values, count) = grow(fixed + head.len() + 3, target, |i| format!("v{i}, "));
    let input = format!("{head}{}v_last]\n", values);
    shapes.push(Shape { name: "enum values", unit: "values", count: count + 1, text: base("Scale.", "", &input, "") });

    let head = "x_numbers: [";
    let (items, count) = grow(fixed + head.len() + 3, target, |i| format!("{i}, "));
    let tail = format!("{head}{items}0]\n");
    shapes.push(Shape { name: "sequence", unit: "items", count: count + 1, text: base("Scale.", "", "", &tail) });

    let words = "a long description of the node, ".repeat((target - fixed - 16) / 32);
    let count = words.len();
    shapes.push(Shape { name: "long scalar", unit: "bytes", count, text: base(&format!("\"{words}\""), "", "", "") });

    // Each definition nests inline objects as deep as the depth limit allows: the document
    // (1) → definitions (2) → the definition (3) → then two mappings per level.
    let levels = (codegen::read::MAX_DEPTH - 4) / 2;
    let nested = |i: usize| {
        let mut text = format!("  ModelDeep{i}:\n    type: object\n");
        for level in 0..levels {
            let indent = "  ".repeat(2 + 2 * level);
            let _ = write!(text, "{indent}properties:\n{indent}  l{level}:\n{indent}    type: object\n");
        }
        text
    };
    let (defs, count) = grow(fixed, target, nested);
    let text = base("Scale.", &defs, "", "");
    shapes.push(Shape { name: "deep nesting", unit: "definitions", count, text });
    shapes
}
