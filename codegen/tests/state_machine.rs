//! Golden tests of `state_machine` sections: each folder under `tests/state_machine/` holds one
//! contract (`contract.yaml`; its first line says what it shows), the diagnostics it gets
//! (`expected.txt`) and, when it generates, the emitted `state_machine.rs` (`expected.rs`).
//! `corpus_validation_adjudicator` is a corpus contract of the 2026 dialect, copied byte for byte
//! from `head2026/src/omnibase_infra/nodes/node_validation_adjudicator/contract.yaml`.
//!
//! Set `UPDATE_GOLDENS=1` to rewrite the expected files after an intended change, then review
//! the diff. The emitted files are also compiled and their generated tests run, with the
//! hand-written tests of `by_hand.rs` against the `valid_every_form` one.

use std::path::{Path, PathBuf};
use std::process::Command;

use codegen::front_end::{FileOutcome, FrontEnd};
use codegen::read::SourceFile;

mod common;
use common::{compare_golden, golden_cases, workspace};

/// The case's diagnostics, rendered, and its `state_machine.rs` when one is generated.
fn run_case(case: &Path) -> (String, Option<String>) {
    let text = std::fs::read_to_string(case.join("contract.yaml")).unwrap();
    let name = case.file_name().unwrap().to_string_lossy().into_owned();
    let display = format!("state_machine/{name}/contract.yaml");
    // Our dialect's contracts live at nodes/<node_name>/v<version>/: the folders are given as
    // that layout, so only the state machine is under test.
    let mut source = SourceFile::in_memory(&display, &text);
    source.abs_path = PathBuf::from("nodes/node_order_reducer/v1_0_0/contract.yaml");
    let options = codegen::dialect::Options::default();
    let mut diags = Vec::new();
    let outcome = FrontEnd::new(&options).file(source, &mut diags);
    codegen::diagnostics::sort(&mut diags);
    let mut rendered = format!("== diagnostics: {}\n", diags.len());
    for d in &diags {
        assert!(d.pos.line >= 1 && d.pos.col >= 1, "{name}: unlocated {d:?}");
        assert!(d.hint.is_some(), "{name}: every diagnostic says what to do: {d:?}");
        rendered.push_str(&d.render(Some(&text)));
        rendered.push('\n');
    }
    let emitted = match outcome {
        FileOutcome::Model { model, .. } => {
            let output = codegen::emit::render("state_machine", std::slice::from_ref(&*model))
                .unwrap_or_else(|d| panic!("{name}: {d:?}"));
            let dir = codegen::emit::node_dir(&model);
            output.generated.get(&format!("{dir}/state_machine.rs")).cloned()
        }
        _ => None,
    };
    (rendered, emitted)
}

#[test]
fn cases_match_their_goldens() {
    let cases = golden_cases("state_machine");
    assert!(cases.len() >= 8, "only {} cases", cases.len());
    for case in &cases {
        let (diagnostics, emitted) = run_case(case);
        compare_golden(&case.join("expected.txt"), &diagnostics);
        let golden_rs = case.join("expected.rs");
        match emitted {
            Some(text) => compare_golden(&golden_rs, &text),
            None => assert!(!golden_rs.exists(), "{}: nothing is generated but expected.rs exists", case.display()),
        }
    }
}

/// Each rejected or warned case shows the code it is about, and only rejected cases generate nothing.
#[test]
fn each_case_shows_its_code() {
    let expect = [
        ("unknown_state", "error[CG0030]", false),
        ("missing_initial_state", "error[CG0031]", false),
        ("unknown_initial_state", "error[CG0031]", false),
        ("ambiguous_transitions", "error[CG0032]", false),
        ("unreachable_state", "warning[CG0033]", true),
        ("terminal_with_exit", "warning[CG0034]", true),
        ("guard_condition", "warning[CG0035]", true),
        ("valid_every_form", "warning[CG0035]", true),
        ("corpus_validation_adjudicator", "== diagnostics", true),
    ];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/state_machine");
    for (case, code, generates) in expect {
        let (diagnostics, emitted) = run_case(&dir.join(case));
        assert!(diagnostics.contains(code), "{case}: no {code} in\n{diagnostics}");
        assert_eq!(emitted.is_some(), generates, "{case}:\n{diagnostics}");
        if !generates {
            assert!(!diagnostics.contains("warning[CG0033]"), "{case}: no reachability warning after an error");
        }
    }
}

#[test]
fn emission_is_deterministic() {
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/state_machine/valid_every_form");
    assert_eq!(run_case(&case), run_case(&case));
}

/// Compiles every emitted `state_machine.rs` (warnings are errors) in a package that depends
/// only on serde, and runs the tests generated into them.
#[test]
fn emitted_state_machines_pass_their_generated_tests() {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("state-machine-goldens");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("src")).unwrap();
    let mut lib = String::from("#![deny(warnings)]\n");
    let mut modules = 0;
    // Machines whose states require data get a fourth test, of entering without it.
    let mut missing_data_tests = 0;
    for case in golden_cases("state_machine") {
        let file = case.join("expected.rs");
        if file.is_file() {
            missing_data_tests += std::fs::read_to_string(&file)
                .unwrap()
                .matches("fn entering_a_state_without_its_required_data_is_refused")
                .count();
            let module = case.file_name().unwrap().to_string_lossy().into_owned();
            lib.push_str(&format!("#[path = {:?}]\npub mod {module};\n", file.display().to_string()));
            modules += 1;
        }
    }
    let by_hand = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/state_machine/by_hand.rs");
    lib.push_str(&format!("#[cfg(test)]\n#[path = {:?}]\nmod by_hand;\n", by_hand.display().to_string()));
    let by_hand_tests = std::fs::read_to_string(&by_hand).unwrap().matches("#[test]").count();
    std::fs::write(root.join("src/lib.rs"), lib).unwrap();
    std::fs::write(
        root.join("Cargo.toml"),
        "[package]\nname = \"state-machine-goldens\"\nversion = \"0.0.0\"\nedition = \"2024\"\npublish = false\n\n\
         [dependencies]\nserde = { version = \"1\", features = [\"derive\"] }\nserde_json = \"1\"\n\n[workspace]\n",
    )
    .unwrap();
    std::fs::copy(workspace().join("Cargo.lock"), root.join("Cargo.lock")).unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args(["test", "--offline", "--quiet"])
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("state-machine-goldens-target"))
        .env_remove("RUSTFLAGS")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let passed: usize = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("test result: ok. "))
        .filter_map(|l| l.split(' ').next()?.parse::<usize>().ok())
        .sum();
    assert_eq!(
        passed,
        3 * modules + missing_data_tests + by_hand_tests,
        "three generated tests per state machine, four with required data:\n{stdout}"
    );
}

/// Every line of the state machine of `valid_every_form` deleted, or its value replaced by
/// something of another shape or an undeclared name: never a panic, always either located
/// diagnostics or a `state_machine.rs` that parses as Rust.
#[test]
fn mutated_state_machines_never_panic() {
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/state_machine/valid_every_form");
    let text = std::fs::read_to_string(case.join("contract.yaml")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.iter().position(|l| *l == "state_machine:").unwrap();
    let mut generated = 0;
    for i in start + 1..lines.len() {
        let line = lines[i];
        let key_end = line.find(": ").map(|k| k + 2);
        let mut variants = vec![None];
        if let Some(end) = key_end {
            for value in ["[x]", "\"*\"", "{a: 1}", "cancelled", "42", "\"\""] {
                variants.push(Some(format!("{}{value}", &line[..end])));
            }
        }
        for variant in variants {
            let mut mutated: Vec<&str> = lines.clone();
            match &variant {
                None => {
                    mutated.remove(i);
                }
                Some(replaced) => mutated[i] = replaced,
            }
            let text = mutated.join("\n") + "\n";
            let mut source = SourceFile::in_memory("state_machine/mutated/contract.yaml", &text);
            source.abs_path = PathBuf::from("nodes/node_order_reducer/v1_0_0/contract.yaml");
            let options = codegen::dialect::Options::default();
            let mut diags = Vec::new();
            let outcome = FrontEnd::new(&options).file(source, &mut diags);
            assert!(diags.iter().all(|d| d.pos.line >= 1 && d.hint.is_some()), "line {i}: {diags:?}");
            match outcome {
                FileOutcome::Model { model, .. } => {
                    let output = codegen::emit::render("state_machine", std::slice::from_ref(&*model))
                        .unwrap_or_else(|d| panic!("line {i} {variant:?}: {d:?}"));
                    let file = format!("{}/state_machine.rs", codegen::emit::node_dir(&model));
                    if let Some(rust) = output.generated.get(&file) {
                        syn::parse_file(rust).unwrap_or_else(|e| panic!("line {i} {variant:?}: {e}\n{rust}"));
                        generated += 1;
                    }
                }
                _ => assert!(diags.iter().any(|d| d.is_error()), "line {i} {variant:?}: rejected without an error"),
            }
        }
    }
    assert!(generated > 10, "only {generated} mutations generated code");
}
