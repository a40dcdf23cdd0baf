//! The front end for one file of any dialect: parse, detect, normalize, validate, build the
//! model. Used by the CLI, the corpus tests, the fuzz target and the benchmark, so they all
//! read files the same way.

use crate::diagnostics::Diagnostic;
use crate::model::NodeModel;
use crate::read::SourceFile;

use super::{Dialect, Family, Normalized, Options, Outcome};

/// What one file turned into.
#[derive(Debug)]
pub enum FrontEnd {
    /// Not a node contract; skipped with a note.
    Skipped(Family),
    /// A node contract with errors (all in the diagnostics).
    Invalid,
    /// A node contract ready to emit.
    Model(Box<NodeModel>, Dialect),
}

/// Reads `source` through every stage; every problem goes to `diags`.
pub fn front_end(source: SourceFile, options: &Options, diags: &mut Vec<Diagnostic>) -> FrontEnd {
    let Some(tree) = crate::read::parse(&source.display, &source.text, diags) else { return FrontEnd::Invalid };
    let normalized: Normalized = match super::normalize(&source, tree, options, diags) {
        Outcome::Skipped(family) => return FrontEnd::Skipped(family),
        Outcome::Node(normalized) => *normalized,
    };
    let dialect = normalized.dialect;
    let contract = if dialect.is_foreign() {
        crate::validate::validate_foreign(source, &normalized.root, diags)
    } else {
        crate::validate::validate(source, &normalized.root, diags)
    };
    match contract.and_then(|c| crate::model::build(c, diags)) {
        Some(model) => FrontEnd::Model(Box::new(model), dialect),
        None => FrontEnd::Invalid,
    }
}

/// A source file made from text in memory (for fuzzing and property tests).
pub fn memory_source(display: &str, text: &str) -> SourceFile {
    SourceFile {
        abs_path: std::path::PathBuf::from(display),
        display: display.to_owned(),
        components: display.split('/').map(str::to_owned).collect(),
        text: text.to_owned(),
    }
}
