//! The README's "your own crate" section, followed to the letter: every block it marks with
//! `<!-- readme-crate: PATH -->` is written to PATH in a new crate outside this workspace, which
//! is then built (its build.rs generates the nodes and writes the `node.rs` scaffold), given the
//! README's `node.rs`, and tested with the README's test. A README that leaves a user stuck fails
//! here.
//!
//! The only edit made to the README's text is the path of this checkout: the README writes
//! `../onex`, the crate here depends on the real path. The crate builds offline against the
//! versions in this workspace's Cargo.lock, in its own target directory under `target/` (the
//! first run builds the runtime's dependencies once more, later runs reuse them).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The README's placeholder for where a user checked this repository out.
const CHECKOUT_PLACEHOLDER: &str = "../onex";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the repository").to_path_buf()
}

/// `(path, text)` for every block of `readme` marked `<!-- readme-crate: PATH -->`, in order.
fn marked_blocks(readme: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        let Some(path) = line.trim().strip_prefix("<!-- readme-crate:").and_then(|r| r.strip_suffix("-->")) else {
            continue;
        };
        let fence = lines.by_ref().find(|l| !l.trim().is_empty()).expect("a code block follows the marker");
        assert!(fence.starts_with("```"), "the marker for {path} is followed by `{fence}`, not a code block");
        let body: Vec<&str> = lines.by_ref().take_while(|l| !l.starts_with("```")).collect();
        blocks.push((path.trim().to_owned(), body.join("\n") + "\n"));
    }
    blocks
}

fn cargo(crate_dir: &Path, args: &[&str]) {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    // The outer `cargo test` describes its own package in CARGO_* variables; the user's build
    // must see none of them.
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("CARGO_") && k != "CARGO_HOME") {
            command.env_remove(key);
        }
    }
    // Captured, so the inner build's own test summary never reads as this suite's.
    let output = command
        .args(args)
        .arg("--offline")
        .current_dir(crate_dir)
        .env("CARGO_TARGET_DIR", repo_root().join("target").join("readme-crate"))
        // Debug info only makes this build slower; it changes nothing the test looks at.
        .env("CARGO_PROFILE_DEV_DEBUG", "false")
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "`cargo {}` failed in the crate made from the README ({}):\n{}{}",
        args.join(" "),
        crate_dir.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_crate_built_from_the_readme_alone_generates_and_runs_its_node() {
    let root = repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let blocks = marked_blocks(&readme);
    let paths: Vec<&str> = blocks.iter().map(|(p, _)| p.as_str()).collect();
    for needed in ["Cargo.toml", "build.rs", "src/lib.rs", "tests/greeter.rs"] {
        assert!(paths.contains(&needed), "the README shows no {needed} for a user's crate (marked: {paths:?})");
    }
    let contract = paths.iter().find(|p| p.ends_with("contract.yaml")).expect("the README shows a contract");
    let node_rs = paths.iter().find(|p| p.ends_with("node.rs")).expect("the README shows an implemented node.rs");

    // Outside the workspace: cargo must not find this repository's Cargo.toml above the crate.
    // One crate per checkout, so two checkouts testing at once do not share it.
    let checkout_id = {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        root.hash(&mut hasher);
        hasher.finish()
    };
    let crate_dir = std::env::temp_dir().join(format!("onex-readme-crate-{checkout_id:016x}"));
    let _ = std::fs::remove_dir_all(&crate_dir);
    let checkout = root.canonicalize().expect("the checkout exists").display().to_string();
    for (path, text) in &blocks {
        if path == node_rs {
            continue; // written after the first build, over the scaffold build.rs creates
        }
        let file = crate_dir.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, text.replace(CHECKOUT_PLACEHOLDER, &checkout)).unwrap();
    }
    // The same dependency versions as this workspace, so the build needs no registry.
    std::fs::copy(root.join("Cargo.lock"), crate_dir.join("Cargo.lock")).unwrap();

    cargo(&crate_dir, &["build"]);
    let scaffold = crate_dir.join(node_rs);
    let created = std::fs::read_to_string(&scaffold)
        .unwrap_or_else(|_| panic!("build.rs did not create the scaffold the README names: {node_rs}"));
    assert!(created.contains("not_implemented"), "a fresh scaffold answers NOT_IMPLEMENTED:\n{created}");
    assert!(crate_dir.join(contract).is_file());

    let implemented = &blocks.iter().find(|(p, _)| p == node_rs).unwrap().1;
    std::fs::write(&scaffold, implemented).unwrap();
    cargo(&crate_dir, &["test"]);
    // Regeneration never overwrites a human-owned node.rs.
    assert_eq!(&std::fs::read_to_string(&scaffold).unwrap(), implemented);
}
