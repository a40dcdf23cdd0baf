//! Golden tests for the hard cases of the original dialects: real contracts of the other
//! ONEX dialects (copied byte for byte from the corpus, see each case's `case.txt`) and the
//! exact diagnostics and models the generator produces for them.
//!
//! Set `UPDATE_GOLDENS=1` to rewrite the expected files after an intended change, then review
//! the diff.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

mod common;
use common::compare_golden;

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/dialects")
}

fn cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("case.txt").is_file())
        .collect();
    cases.sort();
    cases
}

/// Diagnostics (every one, rendered with its snippet), then each node's models.
fn render_case(case: &Path) -> String {
    let options = codegen::dialect::Options { load_subcontracts: true, ..Default::default() };
    let (loaded, output) = codegen::generate_with(&case.join("contracts"), &options);
    let mut out = format!("== diagnostics: {}\n", loaded.diagnostics.len());
    for d in &loaded.diagnostics {
        assert!(d.pos.line >= 1 && d.pos.col >= 1, "{}: unlocated {d:?}", case.display());
        assert!(d.hint.is_some(), "{}: every diagnostic says what to do: {d:?}", case.display());
        out.push_str(&d.render(loaded.sources.get(&d.file).map(String::as_str)));
        out.push('\n');
    }
    if let Some(output) = output {
        for (path, text) in &output.generated {
            if path.ends_with("/models.rs") {
                out.push_str(&format!("== {path}\n{text}"));
            }
        }
    }
    out
}

#[test]
fn nasty_cases_match_their_goldens() {
    for case in cases() {
        compare_golden(&case.join("expected.txt"), &render_case(&case));
    }
}

#[test]
fn every_case_names_its_source_files_and_they_are_the_fixtures() {
    let mut nasty = BTreeSet::new();
    for case in cases() {
        let text = std::fs::read_to_string(case.join("case.txt")).unwrap();
        let sources: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("source: corpus/")).collect();
        assert!(!sources.is_empty(), "{} names no source file", case.display());
        for source in sources {
            assert!(case.join("contracts").join(source).is_file(), "{}: {source} is not in contracts/", case.display());
        }
        for word in text.split(|c: char| !c.is_ascii_alphanumeric()) {
            if word.len() >= 2 && word.starts_with('N') && word[1..].chars().all(|c| c.is_ascii_digit()) {
                nasty.insert(word.to_owned());
            }
        }
    }
    assert!(nasty.len() >= 20, "only {} nasty cases covered: {nasty:?}", nasty.len());
}

#[test]
fn goldens_are_deterministic() {
    for case in cases().iter().take(3) {
        assert_eq!(render_case(case), render_case(case));
    }
}

#[test]
fn hook_node_models_are_checked_in_for_the_tagged_union_round_trip() {
    // tests/tests/corpus_tagged_union.rs `include!`s these models (minus the inner doc comment
    // and attributes, which include! does not allow) and round-trips the tagged union through serde.
    let case = cases_dir().join("n06_grouped_definitions");
    let options = codegen::dialect::Options { load_subcontracts: true, ..Default::default() };
    let (loaded, output) = codegen::generate_with(&case.join("contracts"), &options);
    let output = output.unwrap_or_else(|| panic!("{}", loaded.render_diagnostics()));
    let models = &output.generated["nodes/node_hook_node_effect/v1_0_0/models.rs"];
    let body: String =
        models.lines().filter(|l| !l.starts_with("//!") && !l.starts_with("#![")).map(|l| format!("{l}\n")).collect();
    compare_golden(&case.join("models.rs.in"), &body);
}
