//! Golden tests: the exact diagnostics for each contract error the issue lists, and the exact
//! models for property names that are Rust keywords (handled, not an error).
//!
//! Set `UPDATE_GOLDENS=1` to rewrite the expected files after an intended change, then review
//! the diff.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::compare_golden;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/codegen")
}

fn error_cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(fixtures().join("errors"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    cases
}

#[test]
fn every_listed_error_has_a_golden() {
    let names: Vec<String> =
        error_cases().iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for wanted in [
        "yaml_syntax",
        "missing_required_key",
        "unknown_node_type",
        "ref_to_nothing",
        "naming_convention",
        "folder_version_mismatch",
        "folder_name_mismatch",
        "type_name_collision",
        "effect_without_io_operations",
        "every_error_of_the_run",
    ] {
        assert!(names.iter().any(|n| n == wanted), "missing golden case {wanted}");
    }
}

#[test]
fn contract_errors_match_their_goldens() {
    for case in error_cases() {
        let (loaded, output) = codegen::generate(&case.join("contracts"));
        assert!(output.is_none(), "{}: expected errors, got output", case.display());
        assert!(loaded.has_errors(), "{}", case.display());
        for d in &loaded.diagnostics {
            assert!(d.pos.line >= 1 && d.pos.col >= 1, "{d:?}");
            assert!(d.hint.is_some(), "every diagnostic says how to fix it: {d:?}");
        }
        compare_golden(&case.join("expected.txt"), &loaded.render_diagnostics());
    }
}

#[test]
fn collision_names_both_locations() {
    let (loaded, _) = codegen::generate(&fixtures().join("errors/type_name_collision/contracts"));
    let d = loaded.diagnostics.iter().find(|d| d.code == codegen::diagnostics::Code::NameCollision).unwrap();
    assert_eq!(d.related.len(), 1);
    assert_ne!(d.pos, d.related[0].pos);
}

#[test]
fn one_run_reports_every_error_and_the_cli_exits_1() {
    let case = fixtures().join("errors/every_error_of_the_run");
    let (loaded, _) = codegen::generate(&case.join("contracts"));
    let files: std::collections::BTreeSet<&str> = loaded.diagnostics.iter().map(|d| d.file.as_str()).collect();
    assert_eq!(files.len(), 3, "errors from all three files: {files:?}");

    let out = Command::new(env!("CARGO_BIN_EXE_codegen")).args(["--root"]).arg(&case).arg("validate").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = std::fs::read_to_string(case.join("expected.txt")).unwrap().replace("\r\n", "\n");
    assert!(stderr.contains(expected.trim_end()), "stderr:\n{stderr}");
    assert!(stderr.contains("contracts/nodes/node_alpha_effect/v1_0_0/contract.yaml:1:1"), "{stderr}");
}

#[test]
fn keyword_property_names_are_escaped_not_errors() {
    let case = fixtures().join("keyword_fields");
    let (loaded, output) = codegen::generate(&case.join("contracts"));
    assert!(loaded.diagnostics.is_empty(), "{}", loaded.render_diagnostics());
    let output = output.unwrap();
    let models = &output.generated["nodes/node_keyword_fields_compute/v1_0_0/models.rs"];
    for needle in ["pub r#type: String", "pub r#match:", "pub self_:", "#[serde(rename = \"self\")]", "pub r#gen:"] {
        assert!(models.contains(needle), "{needle} missing from:\n{models}");
    }
    compare_golden(&case.join("expected_models.rs"), models);
}
