//! `codegen generate` as a user runs it (issue 24): contracts with errors are reported and left
//! out while every valid one is generated, the exit code says something was left out, the
//! package names where `onex-runtime` comes from (a path or a git repository; neither is a
//! usage error), and what the command writes compiles.
//!
//! The corpus run needs the ONEX corpus (`../shared/corpus` next to the repository, or
//! `ONEX_CORPUS`) and fails without it. The compile runs `cargo check --offline` on the written
//! package in the target directory the corpus test (`tests/tests/corpus_generate.rs`) uses, so
//! the runtime's dependencies are built once for both.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{Scratch, corpus, workspace};

fn codegen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_codegen")).args(args).env("NO_COLOR", "1").output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn runtime() -> String {
    workspace().join("runtime").to_str().unwrap().to_owned()
}

/// `codegen generate` of `contracts` into `out` as crate `name`, on this workspace's runtime.
fn generate_on_this_runtime(contracts: &Path, out: &Path, name: &str) -> Output {
    codegen(&[
        "generate",
        "--contracts",
        contracts.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--crate",
        name,
        "--runtime-path",
        &runtime(),
    ])
}

/// Copies every file under `from` to `to`.
fn copy_tree(from: &Path, to: &Path) {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.unwrap();
        let target = to.join(entry.path().strip_prefix(from).unwrap());
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
        } else if entry.file_type().is_file() {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A contract folder: the one-node fixture plus a copy of it under another name with an
/// unknown `node_type`, so one contract is valid and one is not.
fn valid_and_invalid(scratch: &Scratch) -> PathBuf {
    let contracts = scratch.0.join("contracts");
    copy_tree(&workspace().join("tests/fixtures/codegen/new_node/contracts"), &contracts);
    let good = std::fs::read_to_string(contracts.join("nodes/node_sample_widget_effect/v1_0_0/contract.yaml")).unwrap();
    let broken = contracts.join("nodes/node_broken_widget_effect/v1_0_0/contract.yaml");
    std::fs::create_dir_all(broken.parent().unwrap()).unwrap();
    let bad = good.replace("node_sample_widget_effect", "node_broken_widget_effect").replace("EFFECT\n", "EFECT\n");
    std::fs::write(&broken, bad).unwrap();
    contracts
}

#[test]
fn generate_without_a_runtime_source_is_a_usage_error_naming_both_options() {
    let scratch = Scratch::new("generate-no-runtime");
    let contracts = workspace().join("tests/fixtures/codegen/new_node/contracts");
    let out_dir = scratch.0.join("pkg");
    let base = ["generate", "--contracts", contracts.to_str().unwrap(), "--out", out_dir.to_str().unwrap()];
    let out = codegen(&[&base[..], &["--crate", "widgets"]].concat());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("onex-runtime from, which is not published on any registry"), "{stderr}");
    assert!(stderr.contains("--runtime-path DIR") && stderr.contains("--runtime-git URL"), "{stderr}");
    assert!(!out_dir.exists(), "nothing is written");

    // A path that does not hold the runtime is refused before anything is written.
    let out = codegen(&[&base[..], &["--crate", "widgets", "--runtime-path", "runtime"]].concat());
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("holds no Cargo.toml of `onex-runtime`"), "{stderr}");
    assert!(stderr.contains("relative path is taken from the package folder"), "{stderr}");
    assert!(!out_dir.exists(), "nothing is written");

    // Both at once, or a revision without a repository, do not parse.
    let runtime = runtime();
    let both = [&base[..], &["--crate", "w", "--runtime-path", &runtime, "--runtime-git", "https://x"]].concat();
    assert_eq!(codegen(&both).status.code(), Some(2));
    let rev_only = [&base[..], &["--crate", "w", "--runtime-rev", "v1", "--runtime-path", &runtime]].concat();
    assert_eq!(codegen(&rev_only).status.code(), Some(2));
}

#[test]
fn the_corpus_with_one_broken_contract_generates_every_valid_node_and_exits_1() {
    let corpus = corpus();
    let scratch = Scratch::new("generate-corpus-partial");
    let contracts = scratch.0.join("corpus");
    copy_tree(&corpus, &contracts);
    // One more contract, broken: a copy of the fixture with an unknown node_type.
    let broken_dir = contracts.join("zz_broken/nodes/node_broken_widget_effect/v1_0_0");
    std::fs::create_dir_all(&broken_dir).unwrap();
    let fixture = workspace()
        .join("tests/fixtures/codegen/new_node/contracts/nodes/node_sample_widget_effect/v1_0_0/contract.yaml");
    let good = std::fs::read_to_string(fixture).unwrap();
    std::fs::write(broken_dir.join("contract.yaml"), good.replace("node_type: EFFECT", "node_type: EFECT")).unwrap();

    let options = codegen::dialect::Options { load_subcontracts: true, ..Default::default() };
    let expected = codegen::load_with(&corpus, None, &options);
    assert!(!expected.nodes.is_empty(), "no valid node in the corpus at {}", corpus.display());

    let out_dir = scratch.0.join("pkg");
    let out = generate_on_this_runtime(&contracts, &out_dir, "onex-corpus");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error[CG0") && stderr.contains("EFECT"), "the broken contract's diagnostic: {stderr}");
    let summary = stderr.lines().last().unwrap_or_default();
    assert!(summary.contains("left out of package `onex-corpus`"), "{summary}");
    assert!(summary.contains("corpus/zz_broken/nodes/node_broken_widget_effect/v1_0_0/contract.yaml"), "{summary}");
    assert!(summary.contains(&format!("the package holds the {} valid node(s)", expected.nodes.len())), "{summary}");
    // Every valid node of the corpus is in the package, the broken one is not, and no stamp is
    // kept: the next run reports the error again.
    for node in &expected.nodes {
        let dir = out_dir.join("src").join(codegen::emit::node_dir(node));
        assert!(dir.join("mod.rs").is_file(), "{} is missing", dir.display());
    }
    assert!(!out_dir.join("src/nodes/node_broken_widget_effect").exists());
    assert!(!out_dir.join(".codegen-stamp").exists());
}

#[test]
fn what_generate_writes_compiles_with_the_invalid_contract_left_out() {
    let scratch = Scratch::new("generate-compiles");
    let contracts = valid_and_invalid(&scratch);
    let out_dir = scratch.0.join("pkg");
    let out = generate_on_this_runtime(&contracts, &out_dir, "widgets");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("node_broken_widget_effect"), "{stderr}");
    assert!(out_dir.join("src/nodes/node_sample_widget_effect/v1_0_0/node.rs").is_file());

    // The workspace's lock file pins the versions its registry cache holds, so `--offline` works.
    std::fs::copy(workspace().join("Cargo.lock"), out_dir.join("Cargo.lock")).unwrap();
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("corpus-check-target");
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    // The outer `cargo test` describes its own package in CARGO_* variables; this build must
    // see none of them.
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("CARGO_") && k != "CARGO_HOME") {
            cargo.env_remove(key);
        }
    }
    let out = cargo
        .args(["check", "--offline", "--quiet", "--all-targets"])
        .current_dir(&out_dir)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .output()
        .unwrap();
    assert!(out.status.success(), "the package `codegen generate` wrote does not compile:\n{}", text(&out.stderr));
}
