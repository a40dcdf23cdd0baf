//! Golden tests of `workflow_coordination`: one minimal contract per case under
//! `tests/workflow/<case>/contracts/`, and beside it `expected.txt` with every diagnostic
//! (rendered with its snippet) and, when the contract is accepted, the generated `workflow.rs`.
//!
//! Set `UPDATE_GOLDENS=1` to rewrite the expected files after an intended change, then review
//! the diff.

use std::path::{Path, PathBuf};

mod common;
use codegen::behaviour::workflow::{ExecutionMode, OnFailure};
use codegen::diagnostics::Code;
use common::compare_golden;

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/workflow");
    let mut cases: Vec<PathBuf> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.join("case.txt").is_file()).collect();
    cases.sort();
    cases
}

fn render_case(case: &Path) -> (String, codegen::Loaded) {
    let (loaded, output) = codegen::generate_with(&case.join("contracts"), &Default::default());
    let mut out = format!("== diagnostics: {}\n", loaded.diagnostics.len());
    for d in &loaded.diagnostics {
        assert!(d.pos.line >= 1 && d.pos.col >= 1, "{}: unlocated {d:?}", case.display());
        assert!(d.hint.is_some(), "{}: every diagnostic says what to do: {d:?}", case.display());
        out.push_str(&d.render(loaded.sources.get(&d.file).map(String::as_str)));
        out.push('\n');
    }
    if let Some(output) = output {
        for (path, text) in &output.generated {
            if path.ends_with("/workflow.rs") {
                out.push_str(&format!("== {path}\n{text}"));
            }
        }
    }
    (out, loaded)
}

#[test]
fn workflow_cases_match_their_goldens() {
    let cases = cases();
    assert!(cases.len() >= 8, "only {} cases", cases.len());
    for case in cases {
        let (text, loaded) = render_case(&case);
        compare_golden(&case.join("expected.txt"), &text);
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("accepted") {
            assert!(!loaded.has_errors(), "{name}:\n{}", loaded.render_diagnostics());
            assert!(text.contains("/workflow.rs"), "{name} generated no workflow.rs");
        } else {
            assert!(loaded.has_errors(), "{name} was accepted");
            // Every rejection carries a workflow code or a general one the section uses.
            let workflow_codes = [
                Code::WorkflowCycle,
                Code::WorkflowUnknownStep,
                Code::WorkflowDuplicateStep,
                Code::WorkflowRule,
                Code::WorkflowNoSteps,
                Code::NameCollision,
            ];
            assert!(
                loaded.diagnostics.iter().any(|d| workflow_codes.contains(&d.code)),
                "{name}: {}",
                loaded.render_diagnostics()
            );
        }
    }
}

#[test]
fn the_diamond_reads_into_layers_in_contract_order() {
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/workflow/accepted_parallel_diamond/contracts");
    let (loaded, _) = codegen::generate_with(&case, &Default::default());
    let workflow = loaded.nodes[0].contract.behaviour.workflow.as_ref().expect("a workflow");
    let ids: Vec<&str> = workflow.steps.iter().map(|s| s.id.value.as_str()).collect();
    assert_eq!(ids, ["fetch", "check_schema", "check_policy", "audit", "publish"]);
    assert_eq!(workflow.layers, vec![vec![0, 3], vec![1, 2], vec![4]]);
    // `edges` added audit to publish's dependencies, after the ones `depends_on` names.
    assert_eq!(workflow.steps[4].depends_on, [1, 2, 3]);
    assert_eq!(workflow.mode, ExecutionMode::Parallel);
    assert_eq!(workflow.max_concurrency, 2);
    assert_eq!(workflow.on_failure, OnFailure::ContinueIndependent);
    assert_eq!((workflow.max_retries, workflow.retry_backoff_ms), (2, 500));
    assert_eq!(workflow.steps[2].timeout_ms, Some(5000), "a step's own timeout wins");
    assert_eq!(workflow.steps[0].timeout_ms, Some(10000), "else step_timeout_ms");
}

#[test]
fn goldens_are_deterministic() {
    for case in cases() {
        assert_eq!(render_case(&case).0, render_case(&case).0);
    }
}

#[test]
fn the_diamond_graph_is_checked_in_for_the_runtime_test() {
    // runtime/tests/workflow_generated.rs `include!`s this (minus the inner doc comment and
    // attributes, which include! does not allow) and runs the generated graph.
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/workflow/accepted_parallel_diamond");
    let (loaded, output) = codegen::generate_with(&case.join("contracts"), &Default::default());
    let output = output.unwrap_or_else(|| panic!("{}", loaded.render_diagnostics()));
    let file = &output.generated["nodes/node_pipeline_orchestrator/v1_0_0/workflow.rs"];
    let body: String =
        file.lines().filter(|l| !l.starts_with("//!") && !l.starts_with("#![")).map(|l| format!("{l}\n")).collect();
    compare_golden(&case.join("workflow.rs.in"), &body);
}
