//! The breaking-change check (`codegen breaking`): one golden case per rule under
//! `codegen/tests/breaking/<case>/` — the baseline `old.yaml`, the edited `new.yaml` (absent
//! when the edit deletes the contract) and the exact findings in `expected.txt` beside them —
//! then the corpus compared with itself, this repository's own contract history revision by
//! revision, and the command line against a directory and a git revision.
//!
//! Set `UPDATE_GOLDENS=1` to rewrite the expected files after an intended change, then review
//! the diff.

use std::path::{Path, PathBuf};
use std::process::Command;

use codegen::Loaded;
use codegen::breaking::{self, Level};
use codegen::diagnostics::{Code, Severity};
use codegen::front_end::{FileOutcome, FrontEnd};
use codegen::read::SourceFile;

mod common;
use common::{Scratch, compare_golden, corpus, workspace};

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/breaking");
    let mut cases: Vec<PathBuf> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.join("old.yaml").is_file()).collect();
    cases.sort();
    cases
}

/// One contract read by the front end from text, as `display`; a side with no file is empty.
fn side(case: &Path, file: &str, display: &str) -> Loaded {
    let mut loaded = Loaded::default();
    let Ok(text) = std::fs::read_to_string(case.join(file)) else { return loaded };
    let options = codegen::dialect::Options::default();
    let outcome = FrontEnd::new(&options).file(SourceFile::in_memory(display, &text), &mut loaded.diagnostics);
    loaded.sources.insert(display.to_owned(), text);
    if let FileOutcome::Model { model, .. } = outcome {
        loaded.nodes.push(*model);
    }
    assert!(!loaded.has_errors(), "{}/{file} must be a valid contract: {:?}", case.display(), loaded.diagnostics);
    loaded
}

fn render(report: &breaking::Report) -> String {
    let mut out = format!("== findings: {}\n", report.diagnostics.len());
    for d in &report.diagnostics {
        out.push_str(&d.render(report.sources.get(&d.file).map(String::as_str)));
        out.push('\n');
    }
    out
}

#[test]
fn every_rule_has_a_golden_case_that_shows_its_code() {
    let cases = cases();
    let mut shown = std::collections::BTreeSet::new();
    for case in &cases {
        let report = breaking::compare(
            &side(case, "old.yaml", "old/contract.yaml"),
            &side(case, "new.yaml", "new/contract.yaml"),
            Level::Source,
        );
        shown.extend(report.diagnostics.iter().map(|d| d.code));
    }
    for rule in breaking::rules::RULES {
        assert!(shown.contains(&rule.code), "no golden case shows {} ({})", rule.code, rule.code.summary());
    }
}

#[test]
fn cases_match_their_goldens() {
    let cases = cases();
    assert!(cases.len() >= 17, "only {} cases", cases.len());
    for case in cases {
        let old = side(&case, "old.yaml", "old/contract.yaml");
        let new = side(&case, "new.yaml", "new/contract.yaml");
        let report = breaking::compare(&old, &new, Level::Source);
        for d in &report.diagnostics {
            assert!(d.pos.line >= 1 && d.pos.col >= 1, "{}: unlocated {d:?}", case.display());
            assert!(d.hint.as_ref().is_some_and(|h| !h.is_empty()), "{}: no hint {d:?}", case.display());
            if d.severity != Severity::Note && d.code != Code::NodeRemoved {
                assert!(!d.related.is_empty(), "{}: a break names the old side {d:?}", case.display());
            }
        }
        compare_golden(&case.join("expected.txt"), &render(&report));
    }
}

#[test]
fn a_wire_level_run_leaves_out_source_level_breaks() {
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/breaking/dependency_removed");
    let (old, new) = (side(&case, "old.yaml", "old/contract.yaml"), side(&case, "new.yaml", "new/contract.yaml"));
    let source = breaking::compare(&old, &new, Level::Source);
    assert!(source.diagnostics.iter().any(|d| d.code == Code::DependencyRemoved), "{:?}", source.diagnostics);
    let wire = breaking::compare(&old, &new, Level::Wire);
    assert!(!wire.diagnostics.iter().any(|d| d.code == Code::DependencyRemoved), "{:?}", wire.diagnostics);
}

#[test]
fn every_corpus_contract_compared_with_itself_gives_no_finding() {
    let corpus = corpus();
    let options = codegen::dialect::Options { load_subcontracts: true, ..Default::default() };
    let loaded = codegen::load_with(&corpus, None, &options);
    assert!(loaded.nodes.len() > 50, "only {} node contracts read from {}", loaded.nodes.len(), corpus.display());
    let report = breaking::compare(&loaded, &loaded, Level::Source);
    println!("{} corpus contract(s) compared with themselves", report.pairs);
    assert_eq!(report.pairs, loaded.nodes.len());
    assert!(report.diagnostics.is_empty(), "{}", render(&report));
}

fn git(args: &[&str]) -> String {
    let out = Command::new("git").arg("-C").arg(workspace()).args(args).output().expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// This repository's contracts, from each revision that touched them to the next: no crash,
/// every finding located on a file of one of the two revisions, with a hint.
#[test]
fn the_repository_history_of_contracts_compares_revision_by_revision() {
    // A shallow clone has no history to walk; every other clone (CI's included) has it all.
    if git(&["rev-parse", "--is-shallow-repository"]).trim() == "true" {
        println!("a shallow clone: no history of contracts/ to compare");
        return;
    }
    let revisions: Vec<String> = git(&["rev-list", "--reverse", "--first-parent", "HEAD", "--", "contracts"])
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(revisions.len() >= 5, "the history of contracts/ has only {} revision(s)", revisions.len());
    let contracts = workspace().join("contracts");
    let options = codegen::dialect::Options { load_subcontracts: true, ..Default::default() };
    let mut total = 0;
    for pair in revisions.windows(2) {
        let old = breaking::baseline::load(&contracts, &pair[0], &options).unwrap();
        let new = breaking::baseline::load(&contracts, &pair[1], &options).unwrap();
        let report = breaking::compare(&old, &new, Level::Source);
        let count = |s: Severity| report.diagnostics.iter().filter(|d| d.severity == s).count();
        println!(
            "{}..{}: {} pair(s), {} error(s), {} warning(s), {} note(s)",
            &pair[0][..9],
            &pair[1][..9],
            report.pairs,
            count(Severity::Error),
            count(Severity::Warning),
            count(Severity::Note)
        );
        for d in &report.diagnostics {
            assert!(d.pos.line >= 1 && d.pos.col >= 1, "unlocated {d:?}");
            assert!(d.file.starts_with(&pair[0]) || d.file.starts_with(&pair[1]), "{d:?}");
            assert!(report.sources.contains_key(&d.file), "no source for {d:?}");
            if d.severity != Severity::Note {
                println!("  {} {} {}", d.code, d.location(), d.message);
            }
        }
        total += report.diagnostics.len();
    }
    println!("{} revision pair(s), {total} finding(s)", revisions.len() - 1);
}

fn codegen_cli(root: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_codegen")).arg("--root").arg(root).args(args).output().unwrap()
}

/// The text of `file` of golden case `case`.
fn case_text(case: &str, file: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/breaking").join(case).join(file)).unwrap()
}

/// Writes `text` as the contract of node_case_compute in the version folder its
/// `contract_version: {major: A, minor: B, patch: C}` names, replacing `contracts/nodes`;
/// returns the file.
fn put_contract(root: &Path, text: &str) -> PathBuf {
    let line = text.lines().find(|l| l.starts_with("contract_version:")).unwrap();
    let numbers: Vec<&str> = line.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).collect();
    let dir = root.join(format!("contracts/nodes/node_case_compute/v{}_{}_{}", numbers[0], numbers[1], numbers[2]));
    let _ = std::fs::remove_dir_all(root.join("contracts/nodes"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(root.join("generated")).unwrap();
    std::fs::write(dir.join("contract.yaml"), text).unwrap();
    dir.join("contract.yaml")
}

/// A workspace `name` with `contracts/` holding the contract `file` of golden case `case`.
fn workspace_with(scratch: &Scratch, name: &str, case: &str, file: &str) -> PathBuf {
    let root = scratch.0.join(name);
    put_contract(&root, &case_text(case, file));
    root
}

#[test]
fn the_cli_against_a_directory_exits_1_with_located_findings_in_both_formats() {
    let scratch = Scratch::new("breaking-dir");
    let old = workspace_with(&scratch, "old", "field_removed", "old.yaml");
    let new = workspace_with(&scratch, "new", "field_removed", "new.yaml");
    let baseline = old.join("contracts");
    let out = codegen_cli(&new, &["--color", "never", "breaking", "--against", baseline.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error[CG0060]: field `ModelOut.total` was removed"), "{stderr}");
    assert!(stderr.contains("contracts/nodes/node_case_compute/v1_0_0/contract.yaml"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 error(s)"), "{}", String::from_utf8_lossy(&out.stdout));

    let out = codegen_cli(&new, &["--format", "json", "breaking", "--against", baseline.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let first: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(first["code"], "CG0060");
    assert!(first["related"][0]["file"].as_str().unwrap().starts_with(baseline.to_str().unwrap()), "{first}");

    let out = codegen_cli(&new, &["breaking", "--against", "no-such-revision-or-dir"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_cli_against_a_git_revision_reads_it_without_checking_it_out() {
    let scratch = Scratch::new("breaking-git");
    let root = workspace_with(&scratch, "repo", "operation_removed", "old.yaml");
    let git_in = |args: &[&str]| {
        let out = Command::new("git").arg("-C").arg(&root).args(args).output().unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    git_in(&["init", "-q"]);
    git_in(&["add", "."]);
    git_in(&["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base"]);
    let text = case_text("operation_removed", "new.yaml");
    let contract = put_contract(&root, &text);
    let out = codegen_cli(&root, &["--color", "never", "breaking", "--against", "HEAD"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error[CG0066]: operation `put` was removed"), "{stderr}");
    assert!(stderr.contains("(HEAD:contracts/nodes/node_case_compute/v1_0_0/contract.yaml:"), "{stderr}");
    assert!(stderr.contains(" --> contracts/nodes/node_case_compute/v1_1_0/contract.yaml:"), "{stderr}");
    // The working tree is untouched.
    assert_eq!(std::fs::read_to_string(&contract).unwrap(), text);

    let out = codegen_cli(&root, &["breaking", "--level", "wire", "--against", "HEAD"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("at the wire level"));
}

#[test]
fn the_cli_compares_previous_version_directories_within_one_tree() {
    let scratch = Scratch::new("breaking-previous");
    let root = workspace_with(&scratch, "tree", "major_version_allows_breaks", "old.yaml");
    let v2 = root.join("contracts/nodes/node_case_compute/v2_0_0");
    std::fs::create_dir_all(&v2).unwrap();
    std::fs::write(v2.join("contract.yaml"), case_text("major_version_allows_breaks", "new.yaml")).unwrap();
    let out = codegen_cli(&root, &["--color", "never", "breaking", "--previous"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("note[CG0075]"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("compared 1 contract(s)"));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() { copy_dir(&path, &target) } else { std::fs::copy(&path, &target).map(|_| ()).unwrap() }
    }
}

/// Both dialects of the original project go through the same front end: a topic removed from a
/// 2026 contract and an operation removed from a September-2025 one are found and located.
#[test]
fn edits_of_both_original_dialects_are_found() {
    let corpus = corpus();
    let scratch = Scratch::new("breaking-dialects");
    let nodes = [
        "head2026/src/omnibase_infra/nodes/node_validation_orchestrator",
        "sept2025/src/omnibase_infra/nodes/node_postgres_adapter_effect",
    ];
    for side in ["old", "new"] {
        for node in nodes {
            let name = Path::new(node).file_name().unwrap();
            copy_dir(&corpus.join(node), &scratch.0.join(side).join(name));
        }
    }
    // Every occurrence: the September-2025 file states its models twice (input_state and definitions).
    let edit = |file: &str, from: &str, to: &str| {
        let path = scratch.0.join("new").join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file} no longer holds {from:?}");
        std::fs::write(&path, text.replace(from, to)).unwrap();
    };
    edit(
        "node_validation_orchestrator/contract.yaml",
        "    - \"onex.evt.platform.validation-execution-requested.v1\"\n",
        "",
    );
    edit(
        "node_postgres_adapter_effect/v1_0_0/contract.yaml",
        "enum: [\"query\", \"health_check\"]",
        "enum: [\"query\"]",
    );
    let options = codegen::dialect::Options { load_subcontracts: true, ..Default::default() };
    let old =
        breaking::baseline::load(&scratch.0.join("new"), scratch.0.join("old").to_str().unwrap(), &options).unwrap();
    let new = codegen::load_with(&scratch.0.join("new"), None, &options);
    let report = breaking::compare(&old, &new, Level::Source);
    println!("{}", render(&report));
    assert_eq!(report.pairs, 2);
    let found = |code: Code, text: &str| {
        report
            .diagnostics
            .iter()
            .any(|d| d.code == code && d.is_error() && d.message.contains(text) && !d.related.is_empty())
    };
    assert!(found(Code::TopicRemoved, "`onex.evt.platform.validation-execution-requested.v1`"));
    assert!(found(Code::OperationRemoved, "`health_check`"));
    assert!(found(Code::EnumNarrowed, "`ModelPostgresAdapterInput.operation_type` lost the value `health_check`"));
    assert_eq!(report.diagnostics.iter().filter(|d| d.code == Code::VersionNotBumped).count(), 2);
}
