//! `codegen generate` skips a package whose stamp says nothing changed, and regenerates after
//! any change to a contract, an option, the templates or a file of the package, or with
//! `--force`. What is observed is the command's report (and the files), never timing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{Scratch, workspace};

const UP_TO_DATE: &str = "is up to date";
const GENERATED: &str = "generated package `widgets`";

fn codegen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_codegen")).args(args).output().unwrap()
}

/// A copy of a one-node contract folder (so the test may edit it) and the package folder.
fn setup(scratch: &Scratch) -> (PathBuf, PathBuf) {
    let from = workspace().join("tests/fixtures/codegen/new_node/contracts/nodes/node_sample_widget_effect/v1_0_0");
    let contracts = scratch.0.join("contracts");
    let to = contracts.join("nodes/node_sample_widget_effect/v1_0_0");
    std::fs::create_dir_all(&to).unwrap();
    std::fs::copy(from.join("contract.yaml"), to.join("contract.yaml")).unwrap();
    (contracts, scratch.0.join("pkg"))
}

/// `generate` of `contracts` into `out`, from this workspace's runtime unless `extra` names
/// another.
fn generate_args(contracts: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> =
        ["generate", "--contracts", contracts.to_str().unwrap(), "--out", out.to_str().unwrap(), "--crate", "widgets"]
            .map(str::to_owned)
            .to_vec();
    if !extra.iter().any(|a| a.starts_with("--runtime-")) {
        args.extend(["--runtime-path".to_owned(), workspace().join("runtime").to_str().unwrap().to_owned()]);
    }
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    args
}

/// Runs `generate` and returns its stdout, asserting success.
fn generate(contracts: &Path, out: &Path, extra: &[&str]) -> String {
    let args = generate_args(contracts, out, extra);
    let result = codegen(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let stdout = String::from_utf8_lossy(&result.stdout).into_owned();
    assert!(result.status.success(), "{stdout}{}", String::from_utf8_lossy(&result.stderr));
    stdout
}

fn assert_skipped(stdout: &str) {
    assert!(stdout.contains(UP_TO_DATE) && !stdout.contains(GENERATED), "expected a skip: {stdout}");
}

fn assert_generated(stdout: &str) {
    assert!(stdout.contains(GENERATED) && !stdout.contains(UP_TO_DATE), "expected a full run: {stdout}");
}

fn contract_file(contracts: &Path) -> PathBuf {
    contracts.join("nodes/node_sample_widget_effect/v1_0_0/contract.yaml")
}

#[test]
fn an_unchanged_package_is_skipped_and_force_regenerates_it() {
    let scratch = Scratch::new("stamp-unchanged");
    let (contracts, out) = setup(&scratch);
    assert_generated(&generate(&contracts, &out, &[]));
    assert!(out.join(".codegen-stamp").is_file());
    assert_skipped(&generate(&contracts, &out, &[]));
    assert_skipped(&generate(&contracts, &out, &[]));

    let forced = generate(&contracts, &out, &["--force"]);
    assert_generated(&forced);
    assert!(forced.contains("0 file(s) written"), "nothing differed: {forced}");
    assert_skipped(&generate(&contracts, &out, &[]));
}

#[test]
fn an_edited_contract_is_regenerated() {
    let scratch = Scratch::new("stamp-contract");
    let (contracts, out) = setup(&scratch);
    assert_generated(&generate(&contracts, &out, &[]));
    let file = contract_file(&contracts);
    let text = std::fs::read_to_string(&file).unwrap();
    let edited = text.replace("describe what this node does.", "counts widgets.");
    assert_ne!(text, edited);
    std::fs::write(&file, edited).unwrap();

    let stdout = generate(&contracts, &out, &[]);
    assert_generated(&stdout);
    let module = std::fs::read_to_string(out.join("src/nodes/node_sample_widget_effect/v1_0_0/mod.rs")).unwrap();
    assert!(module.contains("counts widgets."), "{module}");
    assert_skipped(&generate(&contracts, &out, &[]));

    // A new contract file (even one that is not a node contract) changes the list read.
    std::fs::write(contracts.join("notes.yaml"), "title: not a contract\n").unwrap();
    assert_generated(&generate(&contracts, &out, &[]));
}

#[test]
fn a_deleted_or_edited_package_file_is_regenerated() {
    let scratch = Scratch::new("stamp-output");
    let (contracts, out) = setup(&scratch);
    assert_generated(&generate(&contracts, &out, &[]));
    let models = out.join("src/nodes/node_sample_widget_effect/v1_0_0/models.rs");
    let original = std::fs::read_to_string(&models).unwrap();

    std::fs::remove_file(&models).unwrap();
    let stdout = generate(&contracts, &out, &[]);
    assert_generated(&stdout);
    assert!(stdout.contains("1 file(s) written"), "{stdout}");
    assert_eq!(std::fs::read_to_string(&models).unwrap(), original);

    std::fs::write(&models, "// edited by hand\n").unwrap();
    assert_generated(&generate(&contracts, &out, &[]));
    assert_eq!(std::fs::read_to_string(&models).unwrap(), original);

    std::fs::remove_file(out.join("Cargo.toml")).unwrap();
    assert_generated(&generate(&contracts, &out, &[]));
    assert!(out.join("Cargo.toml").is_file());

    // The scaffold is people's: an edit is kept and skipped over, a deletion is written again.
    let scaffold = out.join("src/nodes/node_sample_widget_effect/v1_0_0/node.rs");
    std::fs::write(&scaffold, "// my handler\n").unwrap();
    assert_skipped(&generate(&contracts, &out, &[]));
    std::fs::remove_file(&scaffold).unwrap();
    let stdout = generate(&contracts, &out, &[]);
    assert!(stdout.contains("1 scaffold(s) created"), "{stdout}");
    assert_skipped(&generate(&contracts, &out, &[]));
}

#[test]
fn different_options_or_templates_regenerate() {
    let scratch = Scratch::new("stamp-options");
    let (contracts, out) = setup(&scratch);
    assert_generated(&generate(&contracts, &out, &[]));

    let runtime = workspace().join("runtime");
    let with_path = ["--runtime-path", runtime.to_str().unwrap()];
    assert_skipped(&generate(&contracts, &out, &with_path));
    let with_git = ["--runtime-git", "https://example.com/onex.git"];
    assert_generated(&generate(&contracts, &out, &with_git));
    assert_generated(&generate(&contracts, &out, &[&with_git[..], &["--runtime-rev", "v1"]].concat()));
    assert_generated(&generate(&contracts, &out, &with_path));
    assert_skipped(&generate(&contracts, &out, &with_path));

    assert_generated(&generate(&contracts, &out, &[&with_path[..], &["--map-type", "ModelX=my::X"]].concat()));
    assert_generated(&generate(&contracts, &out, &with_path));

    let templates = scratch.0.join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    let with_templates = [&with_path[..], &["--templates", templates.to_str().unwrap()]].concat();
    assert_skipped(&generate(&contracts, &out, &with_templates));
    std::fs::write(templates.join("node.rs.jinja"), codegen::templates::BUILTIN_NODE).unwrap();
    assert_generated(&generate(&contracts, &out, &with_templates));
    assert_skipped(&generate(&contracts, &out, &with_templates));
}

#[test]
fn a_run_with_errors_leaves_the_next_run_to_regenerate() {
    let scratch = Scratch::new("stamp-errors");
    let (contracts, out) = setup(&scratch);
    assert_generated(&generate(&contracts, &out, &[]));
    let file = contract_file(&contracts);
    let good = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, good.replace("node_type: EFFECT", "node_type: WHATEVER")).unwrap();
    let args = generate_args(&contracts, &out, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(codegen(&args).status.code(), Some(1));
    assert_eq!(codegen(&args).status.code(), Some(1), "an error is reported again, never skipped");
    // With no valid contract the runs wrote nothing: the package of the last good run is
    // still current. (A run that leaves some contracts out keeps no stamp: generate_package.rs.)
    std::fs::write(&file, good).unwrap();
    assert_skipped(&generate(&contracts, &out, &[]));
}
