//! Done-means 2 of issue 3: every node contract of the ONEX corpus either generates a package
//! that passes `cargo check`, or gets a located error saying why; at least 95% compile.
//!
//! All packages go into one temporary Cargo workspace (one package per contract, depending on
//! the runtime by path) checked by a single `cargo check --workspace --offline --keep-going`
//! with a target directory that persists between runs, so only the first run pays for the
//! runtime's dependencies. The corpus is `../shared/corpus` next to the repository (override
//! with `ONEX_CORPUS`); without it the test fails, saying where it looked.
//!
//! Every generated `state_machine.rs` is also compiled into one more package that depends only on
//! serde, whose `cargo test` runs the tests generated into each state machine (issue 19).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn corpus() -> PathBuf {
    onex_tests::corpus::corpus()
}

/// Display paths of the files whose keys make them node contracts.
fn node_contract_files(loaded: &codegen::Loaded) -> BTreeSet<String> {
    loaded
        .sources
        .iter()
        .filter(|(_, text)| {
            let mut ignored = Vec::new();
            codegen::read::parse("x", text, &mut ignored)
                .is_some_and(|root| codegen::dialect::family::detect(&root) == codegen::dialect::Family::NodeContract)
        })
        .map(|(file, _)| file.clone())
        .collect()
}

#[test]
fn corpus_node_contracts_generate_compiling_packages_or_located_errors() {
    let corpus = corpus();
    let options = codegen::dialect::Options { load_subcontracts: true, ..Default::default() };
    let loaded = codegen::load_with(&corpus, None, &options);
    let node_files = node_contract_files(&loaded);
    assert!(!node_files.is_empty(), "no node contract under {}", corpus.display());

    // Files that did not become a model must say why, at a location in that file.
    let modelled: BTreeSet<String> = loaded.nodes.iter().map(|n| n.contract.source.display.clone()).collect();
    let mut rejected = BTreeSet::new();
    for file in node_files.difference(&modelled) {
        let located =
            loaded.diagnostics.iter().any(|d| d.is_error() && &d.file == file && d.pos.line >= 1 && d.pos.col >= 1);
        assert!(located, "{file} generated nothing and has no located error");
        rejected.insert(file.clone());
    }

    // One package per node contract, all in one workspace.
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("corpus-packages");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let base = corpus.file_name().unwrap().to_string_lossy().into_owned();
    let mut members = Vec::new();
    for node in &loaded.nodes {
        let name = format!("corpus-{}-{}", node.contract.name.value, node.contract.version_module()).replace('_', "-");
        let output =
            codegen::emit::render(&base, std::slice::from_ref(node)).unwrap_or_else(|d| panic!("{name}: {d:?}"));
        let options = codegen::package::PackageOptions {
            crate_name: name.clone(),
            runtime: codegen::package::RuntimeSource::Path(workspace().join("runtime")),
            standalone: false,
        };
        codegen::package::write_package(&output, &root.join(&name), &options).unwrap();
        members.push(name);
    }
    // Every corpus contract with a `workflow_coordination` that became a node has a typed step
    // graph (`workflow.rs`), and the accepted workflow golden compiles too.
    let with_workflow: BTreeSet<&String> = loaded
        .sources
        .iter()
        .filter(|(file, text)| {
            node_files.contains(*file) && text.lines().any(|l| l.starts_with("workflow_coordination:"))
        })
        .map(|(file, _)| file)
        .collect();
    let workflows = loaded.nodes.iter().filter(|n| n.contract.behaviour.workflow.is_some()).count();
    for node in &loaded.nodes {
        let file = &node.contract.source.display;
        assert_eq!(
            node.contract.behaviour.workflow.is_some(),
            with_workflow.contains(file),
            "{file}: a workflow_coordination section and a step graph go together"
        );
    }
    let workflow_case = workspace().join("codegen/tests/workflow/accepted_parallel_diamond/contracts");
    let (workflow_loaded, workflow_output) = codegen::generate_with(&workflow_case, &options);
    let workflow_output = workflow_output.unwrap_or_else(|| panic!("{}", workflow_loaded.render_diagnostics()));
    let workflow_options = codegen::package::PackageOptions {
        crate_name: "workflow-diamond".to_owned(),
        runtime: codegen::package::RuntimeSource::Path(workspace().join("runtime")),
        standalone: false,
    };
    codegen::package::write_package(&workflow_output, &root.join("workflow-diamond"), &workflow_options).unwrap();

    // The naming fixture (every Rust keyword and prelude name as a name) must compile too.
    let naming_contracts = workspace().join("tests/fixtures/dialects/_naming/contracts");
    let (naming, naming_output) = codegen::generate_with(&naming_contracts, &options);
    let naming_output = naming_output.unwrap_or_else(|| panic!("{}", naming.render_diagnostics()));
    let naming_options = codegen::package::PackageOptions {
        crate_name: "naming-keywords".to_owned(),
        runtime: codegen::package::RuntimeSource::Path(workspace().join("runtime")),
        standalone: false,
    };
    codegen::package::write_package(&naming_output, &root.join("naming-keywords"), &naming_options).unwrap();
    // What `codegen new` writes for each kind (a REDUCER with a state machine, an ORCHESTRATOR
    // with a workflow) generates and compiles as it comes.
    let new_contracts = root.join("new-templates-contracts");
    for name in
        ["node_new_sink_effect", "node_new_score_compute", "node_new_tally_reducer", "node_new_flow_orchestrator"]
    {
        codegen::new_node::create(&new_contracts, name).unwrap();
    }
    let (new_loaded, new_output) = codegen::generate_with(&new_contracts, &options);
    let new_output = new_output.unwrap_or_else(|| panic!("{}", new_loaded.render_diagnostics()));
    assert!(new_loaded.diagnostics.is_empty(), "{}", new_loaded.render_diagnostics());
    for file in ["node_new_tally_reducer/v1_0_0/state_machine.rs", "node_new_flow_orchestrator/v1_0_0/workflow.rs"] {
        assert!(new_output.generated.contains_key(&format!("nodes/{file}")), "`codegen new` gives no {file}");
    }
    let new_options = codegen::package::PackageOptions {
        crate_name: "new-templates".to_owned(),
        runtime: codegen::package::RuntimeSource::Path(workspace().join("runtime")),
        standalone: false,
    };
    codegen::package::write_package(&new_output, &root.join("new-templates"), &new_options).unwrap();
    // Every generated state machine again in one small package that depends only on serde,
    // so its generated tests run without building the runtime.
    let machines = write_state_machine_package(&root, &loaded.nodes, &members);
    // The state-machine golden with every condition form, actions and a guard: its scaffold
    // implements `StateMachineActions` with all three kinds of method.
    write_state_machine_golden_package(&root.join(STATE_MACHINE_GOLDEN));
    let mut extra = vec![
        "naming-keywords".to_owned(),
        "workflow-diamond".to_owned(),
        "new-templates".to_owned(),
        STATE_MACHINE_GOLDEN.to_owned(),
    ];
    if !machines.is_empty() {
        extra.push(STATE_MACHINES.to_owned());
    }
    let list = members.iter().chain(&extra).map(|m| format!("\"{m}\"")).collect::<Vec<_>>().join(", ");
    std::fs::write(root.join("Cargo.toml"), format!("[workspace]\nresolver = \"3\"\nmembers = [{list}]\n")).unwrap();
    // The repository's lock file pins the same dependency versions, so `--offline` works.
    std::fs::copy(workspace().join("Cargo.lock"), root.join("Cargo.lock")).unwrap();

    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("corpus-check-target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args(["check", "--workspace", "--offline", "--keep-going", "--quiet"])
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let failed: BTreeSet<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("error: could not compile `"))
        .filter_map(|l| l.split('`').next())
        .collect();
    assert!(out.status.success() || !failed.is_empty(), "cargo check failed before compiling any package:\n{stderr}");
    assert!(!failed.contains("naming-keywords"), "the keyword/prelude-name fixture does not compile:\n{stderr}");
    assert!(!failed.contains("workflow-diamond"), "the workflow golden does not compile:\n{stderr}");
    assert!(!failed.contains("new-templates"), "what `codegen new` writes does not compile:\n{stderr}");
    let workflow_failed: Vec<&&str> = failed
        .iter()
        .filter(|f| {
            loaded.nodes.iter().any(|n| {
                n.contract.behaviour.workflow.is_some()
                    && format!("corpus-{}-{}", n.contract.name.value, n.contract.version_module()).replace('_', "-")
                        == **f
            })
        })
        .collect();
    println!(
        "corpus: {} contracts have workflow_coordination; {workflows} became typed step graphs, {} of which fail cargo check",
        with_workflow.len(),
        workflow_failed.len()
    );
    assert!(workflow_failed.is_empty(), "generated workflows that do not compile: {workflow_failed:?}");
    assert_eq!(workflows, with_workflow.len(), "every corpus workflow becomes a typed step graph");
    assert!(!failed.contains(STATE_MACHINE_GOLDEN), "the state-machine golden does not compile:\n{stderr}");
    let compiled = members.len() - failed.len();
    let total = node_files.len();
    println!(
        "corpus: {total} node contracts: {compiled} generate a package that passes cargo check, {} fail cargo check ({failed:?}), {} rejected with located errors",
        failed.len(),
        rejected.len()
    );
    // What the behaviour stage made of handler_routing and event_bus.
    let routed: Vec<_> = loaded.nodes.iter().filter_map(|n| n.contract.behaviour.routing.as_ref()).collect();
    let mut strategies = std::collections::BTreeMap::new();
    for routing in &routed {
        *strategies.entry(routing.strategy.as_str()).or_insert(0) += 1;
    }
    let operations: usize = routed.iter().map(|r| r.operations().len()).sum();
    let with_topics: Vec<_> = loaded.nodes.iter().filter_map(|n| n.contract.behaviour.topics.as_ref()).collect();
    let topics: usize = with_topics.iter().map(|t| t.distinct().len()).sum();
    let topic_errors = loaded.diagnostics.iter().filter(|d| d.code.as_str() == "CG0052").count();
    // Nothing is silently dropped: a modelled contract with either section has it read.
    for node in &loaded.nodes {
        let file = &node.contract.source.display;
        let mut ignored = Vec::new();
        let Some(root) = codegen::read::parse(file, &loaded.sources[file], &mut ignored) else { continue };
        let behaviour = &node.contract.behaviour;
        assert!(
            root.get("handler_routing").is_none() || behaviour.routing.is_some(),
            "{file}: handler_routing was not read"
        );
        let lists = ["subscribe_topics", "publish_topics", "dlq_topics"];
        let has_topics = root.get("event_bus").is_some_and(|b| lists.iter().any(|l| b.get(l).is_some()));
        assert!(!has_topics || behaviour.topics.is_some(), "{file}: event_bus topics were not read");
    }
    println!(
        "corpus: {} contracts route {operations} operations ({strategies:?}); {} have topic constants ({topics} topics accepted, {topic_errors} rejected)",
        routed.len(),
        with_topics.len()
    );
    assert_eq!(compiled + failed.len() + rejected.len(), total);
    assert!(failed.is_empty(), "generated code that does not compile is a generator bug:\n{stderr}");
    assert!(compiled * 100 >= total * 95, "only {compiled} of {total} node contracts compile");
    run_state_machine_tests(&root, &target, &loaded.nodes, &machines);
}

/// The package generated from `codegen/tests/state_machine/valid_every_form/contract.yaml`.
const STATE_MACHINE_GOLDEN: &str = "state-machine-golden";

fn write_state_machine_golden_package(dir: &Path) {
    let file = workspace().join("codegen/tests/state_machine/valid_every_form/contract.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let mut source = codegen::read::SourceFile::in_memory("state_machine/valid_every_form/contract.yaml", &text);
    // The folders our dialect expects, so only the contract itself is checked.
    source.abs_path = PathBuf::from("nodes/node_order_reducer/v1_0_0/contract.yaml");
    let options = codegen::dialect::Options::default();
    let mut diags = Vec::new();
    let outcome = codegen::front_end::FrontEnd::new(&options).file(source, &mut diags);
    let codegen::front_end::FileOutcome::Model { model, .. } = outcome else { panic!("{diags:?}") };
    let output = codegen::emit::render("state_machine", std::slice::from_ref(&*model)).unwrap();
    let options = codegen::package::PackageOptions {
        crate_name: STATE_MACHINE_GOLDEN.to_owned(),
        runtime: codegen::package::RuntimeSource::Path(workspace().join("runtime")),
        standalone: false,
    };
    codegen::package::write_package(&output, dir, &options).unwrap();
}

/// The package holding every generated `state_machine.rs`.
const STATE_MACHINES: &str = "corpus-state-machines";

/// Writes [`STATE_MACHINES`]: one module per node with a state machine, the generated file
/// itself by `#[path]`. Returns the modules' names.
fn write_state_machine_package(root: &Path, nodes: &[codegen::model::NodeModel], members: &[String]) -> Vec<String> {
    let mut modules = Vec::new();
    let mut lib = String::from(
        "//! The generated state machines of the corpus, with their generated tests.\n#![deny(warnings)]\n",
    );
    for (node, member) in nodes.iter().zip(members) {
        if node.contract.behaviour.state_machine.is_none() {
            continue;
        }
        let file = root.join(member).join("src").join(codegen::emit::node_dir(node)).join("state_machine.rs");
        assert!(file.is_file(), "{member}: no {}", file.display());
        let module = member.replace('-', "_");
        lib.push_str(&format!("#[path = {:?}]\npub mod {module};\n", file.display().to_string()));
        modules.push(module);
    }
    if modules.is_empty() {
        return modules;
    }
    let dir = root.join(STATE_MACHINES);
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"{STATE_MACHINES}\"\nversion = \"0.0.0\"\nedition = \"2024\"\npublish = false\n\n\
             [dependencies]\nserde = {{ version = \"1\", features = [\"derive\"] }}\nserde_json = \"1\"\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("src/lib.rs"), lib).unwrap();
    modules
}

/// Runs the tests generated into every state machine and reports what became code.
fn run_state_machine_tests(root: &Path, target: &Path, nodes: &[codegen::model::NodeModel], modules: &[String]) {
    let machines: Vec<_> = nodes.iter().filter_map(|n| n.contract.behaviour.state_machine.as_ref()).collect();
    let conditions: Vec<_> = machines.iter().flat_map(|m| m.transitions.iter().flat_map(|t| &t.conditions)).collect();
    let checked = conditions
        .iter()
        .filter(|c| matches!(c.test, codegen::behaviour::state_machine::ConditionTest::Check(_)))
        .count();
    let guards: usize = machines.iter().map(|m| m.guards.len()).sum();
    let transitions: usize = machines.iter().map(|m| m.transitions.len()).sum();
    if modules.is_empty() {
        println!("corpus: no state machine");
        return;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args(["test", "--offline", "--quiet", "-p", STATE_MACHINES])
        .current_dir(root)
        .env("CARGO_TARGET_DIR", target)
        .env_remove("RUSTFLAGS")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the generated state-machine tests fail:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passed: usize = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("test result: ok. "))
        .filter_map(|l| l.split(' ').next()?.parse::<usize>().ok())
        .sum();
    // Three tests per state machine: declared transitions taken, undeclared pairs refused, names;
    // a fourth where a transition leads to a state that requires data none of its conditions
    // reads (entering without it is refused).
    let missing_data_tests = machines
        .iter()
        .filter(|m| {
            m.transitions.iter().any(|t| {
                m.states[t.to].required_data.iter().any(|field| {
                    !t.conditions.iter().any(|c| {
                        matches!(&c.test, codegen::behaviour::state_machine::ConditionTest::Check(check)
                            if check.field.first() == Some(field))
                    })
                })
            })
        })
        .count();
    assert_eq!(
        passed,
        3 * modules.len() + missing_data_tests,
        "expected three generated tests per state machine, four with required data:\n{stdout}"
    );
    println!(
        "corpus: {} state machines became code ({transitions} transitions); {} conditions: {checked} checked by generated code, {} by {guards} guard methods; {passed} generated tests passed",
        modules.len(),
        conditions.len(),
        conditions.len() - checked,
    );
}
