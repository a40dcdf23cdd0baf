//! The front end: one contract file through every stage before emission (parse, detect its
//! family and dialect, normalize, validate, check its node name against the rest of the run,
//! build the model). [`crate::load_with`] drives it over the files it discovers, for the CLI, the
//! [`crate::Builder`] and the benchmarks; the fuzz target and the property tests call the same
//! [`FrontEnd::file`] on text in memory, so every caller reads a file the same way.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::diagnostics::{Code, Diagnostic, Pos};
use crate::dialect::{self, Dialect, Family, Options};
use crate::model::{self, NodeModel};
use crate::read::{self, SourceFile};
use crate::validate::{self, Contract};

/// What one file turned into.
#[derive(Debug)]
pub enum FileOutcome {
    /// Not a node contract; skipped with a note.
    Skipped(Family),
    /// A node contract with errors (all in the diagnostics).
    Invalid {
        /// Subcontract files it lists that were read (see [`dialect::Normalized::subcontracts`]).
        subcontracts: Vec<PathBuf>,
    },
    /// A node contract ready to emit.
    Model {
        /// The model.
        model: Box<NodeModel>,
        /// The dialect the contract is written in.
        dialect: Dialect,
        /// Subcontract files it lists that were read.
        subcontracts: Vec<PathBuf>,
    },
}

impl FileOutcome {
    /// The subcontract files read for this file.
    pub fn subcontracts(&self) -> &[PathBuf] {
        match self {
            FileOutcome::Skipped(_) => &[],
            FileOutcome::Invalid { subcontracts } | FileOutcome::Model { subcontracts, .. } => subcontracts,
        }
    }
}

/// (node name, version): one node version, which exactly one contract of a run defines.
type NodeKey = (String, (u32, u32, u32));

/// The front end of one run: the options for foreign dialects and the node names the run's
/// files have defined so far.
#[derive(Debug)]
pub struct FrontEnd<'o> {
    options: &'o Options,
    /// Node version → where it was first defined.
    seen: BTreeMap<NodeKey, (String, Pos)>,
}

impl<'o> FrontEnd<'o> {
    /// A run that has read no file yet.
    pub fn new(options: &'o Options) -> Self {
        Self { options, seen: BTreeMap::new() }
    }

    /// Reads `source` through every stage; every problem goes to `diags`.
    pub fn file(&mut self, source: SourceFile, diags: &mut Vec<Diagnostic>) -> FileOutcome {
        let tree = read::parse(&source.display, &source.text, diags);
        self.parsed(source, tree, diags)
    }

    /// [`FrontEnd::file`] after the parse: `tree` is what [`read::parse`] made of `source`
    /// (its diagnostics already in `diags`), so a caller can parse the next file meanwhile.
    pub fn parsed(&mut self, source: SourceFile, tree: Option<read::Node>, diags: &mut Vec<Diagnostic>) -> FileOutcome {
        let Some(tree) = tree else {
            return FileOutcome::Invalid { subcontracts: Vec::new() };
        };
        let normalized = match dialect::normalize(&source, tree, self.options, diags) {
            dialect::Outcome::Skipped(family) => return FileOutcome::Skipped(family),
            dialect::Outcome::Node(normalized) => *normalized,
        };
        let dialect = normalized.dialect;
        let subcontracts = normalized.subcontracts;
        let contract = if dialect.is_foreign() {
            validate::validate_foreign(source, &normalized.root, diags)
        } else {
            validate::validate(source, &normalized.root, diags)
        };
        let Some(mut contract) = contract else { return FileOutcome::Invalid { subcontracts } };
        if !self.claim_name(&mut contract, dialect.is_foreign(), diags) {
            return FileOutcome::Invalid { subcontracts };
        }
        match model::build(contract, diags) {
            Some(model) => FileOutcome::Model { model: Box::new(model), dialect, subcontracts },
            None => FileOutcome::Invalid { subcontracts },
        }
    }

    /// Records the contract's node version for this run. A foreign contract whose name an
    /// earlier file (in path order) already uses is renamed to the next free `_2`, `_3`, …
    /// name, with a warning: foreign contracts reuse names (two `postgres_adapter`s, drifted
    /// copies). Any other second definition is an error, and `false`.
    fn claim_name(&mut self, contract: &mut Contract, foreign: bool, diags: &mut Vec<Diagnostic>) -> bool {
        let mut key = (contract.name.value.clone(), contract.version.value);
        if let (true, Some((first_file, first_pos))) = (foreign, self.seen.get(&key)) {
            let renamed = crate::naming::unique_node_name(&contract.name.value, contract.kind.suffix(), |candidate| {
                self.seen.contains_key(&(candidate.to_owned(), key.1))
            });
            diags.push(
                Diagnostic::warning(
                    Code::Renamed,
                    &contract.source.display,
                    contract.name.pos,
                    "node_name",
                    format!(
                        "`{}` v{}.{}.{} is also defined by another contract; this one becomes `{renamed}`",
                        key.0, key.1.0, key.1.1, key.1.2
                    ),
                )
                .with_related(first_file, *first_pos, "first defined here")
                .with_hint("give each contract its own node_name to silence this"),
            );
            contract.name.value = renamed;
            key.0 = contract.name.value.clone();
        }
        if let Some((first_file, first_pos)) = self.seen.get(&key) {
            diags.push(
                Diagnostic::error(
                    Code::DuplicateName,
                    &contract.source.display,
                    contract.name.pos,
                    "node_name",
                    format!("`{}` v{}.{}.{} is defined twice", key.0, key.1.0, key.1.1, key.1.2),
                )
                .with_related(first_file, *first_pos, "first defined here")
                .with_hint("each node version has exactly one contract"),
            );
            return false;
        }
        self.seen.insert(key, (contract.source.display.clone(), contract.name.pos));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: &str = "contract_version: {major: 1, minor: 0, patch: 0}\nnode_name: node_x_compute\n\
                        node_type: COMPUTE\ndescription: d\ninput_model: In\noutput_model: In\n\
                        definitions:\n  In:\n    type: object\n";
    const FOREIGN: &str = "contract_version: \"1.0.0\"\nnode_name: x\nnode_type: COMPUTE_GENERIC\n\
                           description: d\ninput_model: In\noutput_model: In\ndefinitions:\n  In:\n    type: object\n";

    fn node_name(outcome: &FileOutcome) -> Option<&str> {
        match outcome {
            FileOutcome::Model { model, .. } => Some(&model.contract.name.value),
            _ => None,
        }
    }

    #[test]
    fn a_second_contract_of_our_dialect_with_the_same_name_is_an_error() {
        let options = Options::default();
        let mut front_end = FrontEnd::new(&options);
        let mut diags = Vec::new();
        let path = "contracts/nodes/node_x_compute/v1_0_0/contract.yaml";
        let first = front_end.file(SourceFile::in_memory(path, OURS), &mut diags);
        assert_eq!(node_name(&first), Some("node_x_compute"), "{diags:?}");
        assert!(diags.is_empty(), "{diags:?}");
        let second = front_end.file(SourceFile::in_memory(path, OURS), &mut diags);
        assert!(matches!(second, FileOutcome::Invalid { .. }), "{second:?}");
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!(diags[0].code, Code::DuplicateName);
        assert_eq!(diags[0].related.len(), 1, "{diags:?}");
    }

    #[test]
    fn a_foreign_contract_reusing_a_name_gets_the_next_free_one() {
        let options = Options::default();
        let mut front_end = FrontEnd::new(&options);
        let mut diags = Vec::new();
        let names: Vec<Option<String>> = (0..3)
            .map(|i| {
                let source = SourceFile::in_memory(&format!("c{i}/contract.yaml"), FOREIGN);
                node_name(&front_end.file(source, &mut diags)).map(str::to_owned)
            })
            .collect();
        let expected = ["node_x_compute", "node_x_2_compute", "node_x_3_compute"];
        assert_eq!(names, expected.map(|n| Some(n.to_owned())), "{diags:?}");
        let reused: Vec<_> = diags.iter().filter(|d| d.code == Code::Renamed && !d.related.is_empty()).collect();
        assert_eq!(reused.len(), 2, "{diags:?}");
        assert!(reused[1].message.ends_with("this one becomes `node_x_3_compute`"), "{}", reused[1].message);
        assert!(!diags.iter().any(Diagnostic::is_error), "{diags:?}");
    }

    #[test]
    fn repeated_enum_values_and_variants_are_each_reported_at_the_later_value() {
        let summary = |values: &str| -> Vec<String> {
            let text = format!("{OURS}    properties:\n      kind:\n        type: string\n        enum: [{values}]\n");
            let options = Options::default();
            let mut diags = Vec::new();
            let path = "contracts/nodes/node_x_compute/v1_0_0/contract.yaml";
            let _ = FrontEnd::new(&options).file(SourceFile::in_memory(path, &text), &mut diags);
            diags
                .iter()
                .map(|d| {
                    let related: Vec<String> =
                        d.related.iter().map(|r| format!("{}:{}", r.pos.line, r.pos.col)).collect();
                    format!(
                        "{:?} {}:{} {} | {} | {}",
                        d.code,
                        d.pos.line,
                        d.pos.col,
                        d.path,
                        d.message,
                        related.join(",")
                    )
                })
                .collect()
        };
        assert_eq!(
            summary("a, b, a, V1, v1, \"2\", b, a"),
            [
                "DuplicateName 13:22 definitions.In.properties.kind.enum[2] | enum value `a` is listed twice | 13:16",
                "DuplicateName 13:38 definitions.In.properties.kind.enum[6] | enum value `b` is listed twice | 13:19",
                "DuplicateName 13:41 definitions.In.properties.kind.enum[7] | enum value `a` is listed twice | 13:16",
            ]
        );
        // The variant a later value collides with is always the first value that became it.
        let collide = |at: &str, value: &str, variant: &str, first: &str| {
            format!(
                "NameCollision 13:{at} definitions.In.properties.kind | enum values of `InKind` collide: \
                 `{value}` becomes the variant `{variant}` twice | 13:{first}"
            )
        };
        assert_eq!(
            summary("V1, v1, \"2\", v2, v_1, b, Self, self_value, SelfValue, x"),
            [
                collide("20", "v1", "V1", "16"),
                collide("29", "v2", "V2", "24"),
                collide("33", "v_1", "V1", "16"),
                collide("47", "self_value", "SelfValue", "41"),
                collide("59", "SelfValue", "SelfValue", "41"),
            ]
        );
    }

    #[test]
    fn a_new_front_end_forgets_the_names_of_another_run() {
        let options = Options::default();
        let path = "contracts/nodes/node_x_compute/v1_0_0/contract.yaml";
        for _ in 0..2 {
            let mut diags = Vec::new();
            let outcome = FrontEnd::new(&options).file(SourceFile::in_memory(path, OURS), &mut diags);
            assert_eq!(node_name(&outcome), Some("node_x_compute"), "{diags:?}");
        }
    }
}
