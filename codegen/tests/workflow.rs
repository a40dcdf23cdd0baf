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

/// Whether the graph `deps` (step → the steps it depends on) has a cycle, by depth-first search.
fn has_cycle(deps: &[Vec<usize>]) -> bool {
    fn visit(step: usize, deps: &[Vec<usize>], state: &mut [u8]) -> bool {
        match state[step] {
            1 => return true,
            2 => return false,
            _ => {}
        }
        state[step] = 1;
        let cyclic = deps[step].iter().any(|&d| visit(d, deps, state));
        state[step] = 2;
        cyclic
    }
    let mut state = vec![0u8; deps.len()];
    (0..deps.len()).any(|s| visit(s, deps, &mut state))
}

proptest::proptest! {
    /// Any graph of up to 12 steps either reads into layers that keep every invariant, or has
    /// a cycle and is refused with CG0040 naming one.
    #[test]
    fn layers_keep_their_invariants_or_the_cycle_is_named(
        deps in proptest::collection::vec(proptest::collection::vec(0usize..12, 0..4), 1..12)
    ) {
        let n = deps.len();
        let deps: Vec<Vec<usize>> = deps
            .into_iter()
            .map(|d| {
                let mut d: Vec<usize> = d.into_iter().map(|x| x % n).collect();
                d.dedup();
                d
            })
            .collect();
        let mut yaml = String::from("workflow_coordination:\n  workflow_definition:\n    execution_graph:\n      nodes:\n");
        for (i, d) in deps.iter().enumerate() {
            let names: Vec<String> = d.iter().map(|x| format!("s{x}")).collect();
            yaml.push_str(&format!("        - node_id: s{i}\n          depends_on: [{}]\n", names.join(", ")));
        }
        let mut diags = Vec::new();
        let root = codegen::read::parse("p.yaml", &yaml, &mut diags).unwrap();
        let workflow = codegen::behaviour::workflow::read("p.yaml", &root, &mut diags);
        match workflow {
            Some(w) => {
                proptest::prop_assert!(!has_cycle(&deps));
                proptest::prop_assert!(diags.is_empty(), "{diags:?}");
                let mut layer_of = vec![usize::MAX; n];
                for (l, layer) in w.layers.iter().enumerate() {
                    proptest::prop_assert!(layer.windows(2).all(|p| p[0] < p[1]), "contract order in a layer");
                    for &s in layer {
                        proptest::prop_assert_eq!(layer_of[s], usize::MAX, "listed once");
                        layer_of[s] = l;
                    }
                }
                for (s, d) in deps.iter().enumerate() {
                    proptest::prop_assert!(layer_of[s] != usize::MAX, "every step in a layer");
                    let deepest = d.iter().map(|&x| layer_of[x]).max();
                    // Each step sits in the first layer after all its dependencies.
                    proptest::prop_assert_eq!(layer_of[s], deepest.map_or(0, |l| l + 1));
                    let mut read: Vec<usize> = w.steps[s].depends_on.clone();
                    let mut want = d.clone();
                    read.sort();
                    want.sort();
                    want.dedup();
                    proptest::prop_assert_eq!(read, want);
                }
            }
            None => {
                proptest::prop_assert!(has_cycle(&deps), "refused without a cycle: {diags:?}");
                let cycle = diags.iter().find(|d| d.code == Code::WorkflowCycle);
                proptest::prop_assert!(cycle.is_some(), "{diags:?}");
                let message = &cycle.unwrap().message;
                // `a → b → … → a`: the named steps really depend on each other in that order.
                let names: Vec<usize> = message
                    .split(": ")
                    .nth(1)
                    .unwrap()
                    .split(" (")
                    .next()
                    .unwrap()
                    .split(" → ")
                    .map(|s| s.trim_start_matches('s').parse().unwrap())
                    .collect();
                proptest::prop_assert_eq!(names.first(), names.last());
                for pair in names.windows(2) {
                    proptest::prop_assert!(deps[pair[0]].contains(&pair[1]), "{message}");
                }
            }
        }
    }
}

#[test]
fn real_2026_workflows_read_with_their_coordination_rules() {
    // Copies of corpus contracts kept as dialect fixtures (see their case.txt).
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/dialects");
    let options = codegen::dialect::Options { load_subcontracts: true, ..Default::default() };
    let (loaded, _) = codegen::generate_with(&fixtures.join("n22_drifted_copies/contracts"), &options);
    let runtime = loaded
        .nodes
        .iter()
        .find(|n| n.contract.source.display.ends_with("node_runtime_orchestrator/contract.yaml"))
        .expect("the runtime orchestrator");
    let w = runtime.contract.behaviour.workflow.as_ref().expect("its workflow");
    assert_eq!(w.name.as_deref(), Some("runtime_lifecycle"));
    let ids: Vec<&str> = w.steps.iter().map(|s| s.id.value.as_str()).collect();
    assert_eq!(ids, ["contract_loader", "contract_registry", "node_graph", "event_bus_wiring"]);
    assert_eq!(w.layers, vec![vec![0], vec![1], vec![2], vec![3]]);
    // `execution_mode` only in workflow_metadata; `max_parallel_steps: 1`.
    assert_eq!((w.mode, w.max_concurrency), (ExecutionMode::Sequential, 1));
    // fail_fast, yet 3 retries with a 2 s pause doubling each time; 30 s per step, 120 s in all.
    assert_eq!(w.on_failure, OnFailure::FailFast);
    assert_eq!((w.max_retries, w.retry_backoff_ms, w.retry_backoff_multiplier), (3, 2000, 2.0));
    assert!(w.steps.iter().all(|s| s.timeout_ms == Some(30_000)));
    assert_eq!(w.timeout_ms, Some(120_000));
    assert_eq!(w.steps[0].target.as_deref(), Some("NodeContractLoaderEffect"));

    let (loaded, _) = codegen::generate_with(&fixtures.join("n25_nested_node_type/contracts"), &options);
    let chain = loaded.nodes.iter().find_map(|n| n.contract.behaviour.workflow.as_ref()).expect("the chain workflow");
    // Two independent chains: retrieve → replay and verify → store.
    assert_eq!(chain.layers, vec![vec![0, 2], vec![1, 3]]);
    assert_eq!((chain.mode, chain.max_concurrency, chain.max_retries), (ExecutionMode::Sequential, 1, 0));
    assert_eq!(chain.steps[2].kind, Some(codegen::validate::Kind::Reducer));
}
