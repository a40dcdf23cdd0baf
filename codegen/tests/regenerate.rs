//! The checked-in `generated/src` can always be rebuilt from nothing but the contracts, and
//! generated code depends on what a contract says, not on where in the file it says it.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{Scratch, workspace};

/// Every file under `root`, as `/`-separated relative paths, sorted.
fn files_under(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e.path().strip_prefix(root).unwrap();
            rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
        })
        .collect();
    out.sort();
    out
}

fn copy_dir(from: &Path, to: &Path) {
    for rel in files_under(from) {
        let target = to.join(&rel);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(from.join(&rel), target).unwrap();
    }
}

/// The workspace manifests and every member's files, outside `target/`.
fn copy_workspace(to: &Path) {
    let root = workspace();
    for file in ["Cargo.toml", "Cargo.lock"] {
        std::fs::copy(root.join(file), to.join(file)).unwrap();
    }
    for member in ["codegen", "runtime", "generated", "host", "tests", "contracts"] {
        copy_dir(&root.join(member), &to.join(member));
    }
}

#[test]
fn regenerating_from_scratch_gives_the_checked_in_tree() {
    let scratch = Scratch::new("from-scratch");
    copy_workspace(&scratch.0);
    let src = scratch.0.join("generated/src");
    for rel in files_under(&src) {
        let path = src.join(&rel);
        if std::fs::read_to_string(&path).unwrap().starts_with(codegen::GENERATED_MARKER) {
            std::fs::remove_file(path).unwrap();
        }
    }
    assert!(!src.join("lib.rs").exists(), "lib.rs is generated too");

    // Cargo still loads the workspace (`cargo run -p codegen` needs that) while the generated
    // crate's lib.rs is missing.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args(["metadata", "--no-deps", "--offline", "--format-version", "1", "--manifest-path"])
        .arg(scratch.0.join("Cargo.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));

    let (loaded, output) = codegen::generate(&scratch.0.join("contracts"));
    let output = output.unwrap_or_else(|| panic!("{}", loaded.render_diagnostics()));
    let report = codegen::write_tree(&output, &src, None).unwrap();
    assert!(report.scaffolds_created.is_empty(), "the scaffolds were kept: {:?}", report.scaffolds_created);

    let checked_in = workspace().join("generated/src");
    assert_eq!(files_under(&src), files_under(&checked_in));
    for rel in files_under(&checked_in) {
        let (a, b) = (std::fs::read(checked_in.join(&rel)).unwrap(), std::fs::read(src.join(&rel)).unwrap());
        assert!(a == b, "{rel} differs from the checked-in file after regenerating from scratch");
    }
}

const CONTRACT: &str = "nodes/node_postgres_adapter_effect/v1_0_0/contract.yaml";

/// Renders a copy of the project's contracts with `edit` applied to one contract's text.
fn render_edited(name: &str, edit: impl FnOnce(&str) -> String) -> codegen::Output {
    let scratch = Scratch::new(name);
    let contracts: PathBuf = scratch.0.join("contracts");
    copy_dir(&workspace().join("contracts"), &contracts);
    let path = contracts.join(CONTRACT);
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = edit(&text);
    assert_ne!(edited, text, "the edit changes the contract");
    std::fs::write(&path, edited).unwrap();
    let (loaded, output) = codegen::generate(&contracts);
    output.unwrap_or_else(|| panic!("{}", loaded.render_diagnostics()))
}

fn render_project() -> codegen::Output {
    let (loaded, output) = codegen::generate(&workspace().join("contracts"));
    output.unwrap_or_else(|| panic!("{}", loaded.render_diagnostics()))
}

#[test]
fn inserting_a_contract_line_changes_no_generated_byte() {
    let edited = render_edited("inserted-line", |text| {
        let (first, rest) = text.split_once('\n').unwrap();
        format!("{first}\n# A comment moves every line below it down by one.\n{rest}")
    });
    assert_eq!(edited, render_project());
}

#[test]
fn a_one_line_description_change_is_a_one_line_diff() {
    let old = "description: The statement to run; required by query.";
    let edited = render_edited("description", |text| {
        assert_eq!(text.matches(old).count(), 1);
        text.replace(old, "description: The statement to run (query only).")
    });
    let before = render_project();
    assert_eq!(edited.generated.keys().collect::<Vec<_>>(), before.generated.keys().collect::<Vec<_>>());
    let mut changed = Vec::new();
    for (path, text) in &edited.generated {
        let diff = similar::TextDiff::from_lines(before.generated[path].as_str(), text.as_str());
        for change in diff.iter_all_changes().filter(|c| c.tag() != similar::ChangeTag::Equal) {
            changed.push(format!("{path}: {}{}", change.tag(), change.value().trim_end()));
        }
    }
    assert_eq!(
        changed,
        [
            "nodes/node_postgres_adapter_effect/v1_0_0/models.rs: -    /// The statement to run; required by query.",
            "nodes/node_postgres_adapter_effect/v1_0_0/models.rs: +    /// The statement to run (query only).",
        ]
    );
    assert_eq!(edited.scaffolds, before.scaffolds);
}
