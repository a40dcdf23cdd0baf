//! The command line over contracts of every dialect: `validate` over the corpus (exit code,
//! located human output, JSON lines), the cap of 50, `explain`, `schema`, `generate` with
//! `--map-type`, and the naming policy for keywords and prelude names.

use std::path::PathBuf;
use std::process::{Command, Output};

mod common;
use common::{Scratch, corpus, workspace};

fn fixtures() -> PathBuf {
    workspace().join("tests/fixtures/dialects")
}

fn codegen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_codegen")).arg("--root").arg(workspace()).args(args).output().unwrap()
}

#[test]
fn validate_over_the_corpus_exits_0_or_1_with_located_diagnostics() {
    let corpus = corpus();
    let out = codegen(&["validate", corpus.to_str().unwrap()]);
    assert!(matches!(out.status.code(), Some(0 | 1)), "status {:?}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let mut headers = 0;
    for (i, line) in lines.iter().enumerate() {
        let is_header = ["error[", "warning[", "note["].iter().any(|p| line.starts_with(p));
        if is_header {
            headers += 1;
            let location = lines.get(i + 1).copied().unwrap_or_default();
            let parts: Vec<&str> = location.trim_start_matches(" --> ").rsplitn(3, ':').collect();
            assert!(location.starts_with(" --> ") && parts.len() == 3, "not located: {line}\n{location}");
            assert!(parts[0].parse::<u32>().unwrap() >= 1 && parts[1].parse::<u32>().unwrap() >= 1, "{location}");
        }
    }
    assert!(headers > 0 && headers <= codegen::report::HUMAN_CAP, "{headers} diagnostics shown");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("node contract(s) valid"), "{stdout}");
}

#[test]
fn json_format_is_one_object_per_line_with_the_documented_keys() {
    let corpus = corpus();
    let out = codegen(&["--format", "json", "validate", corpus.to_str().unwrap()]);
    assert!(matches!(out.status.code(), Some(0 | 1)));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut count = 0;
    for line in stdout.lines() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let object = value.as_object().unwrap();
        let keys: Vec<&str> = object.keys().map(String::as_str).collect();
        assert_eq!(keys, ["code", "column", "file", "hint", "line", "message", "path", "severity"]);
        assert!(value["code"].as_str().unwrap().starts_with("CG"));
        assert!(value["line"].as_u64().unwrap() >= 1 && value["column"].as_u64().unwrap() >= 1);
        assert!(["error", "warning", "note"].contains(&value["severity"].as_str().unwrap()));
        count += 1;
    }
    assert!(count > codegen::report::HUMAN_CAP, "JSON lists every diagnostic, uncapped: {count}");
}

#[test]
fn human_output_is_capped_at_50_then_counts_the_rest() {
    let scratch = Scratch::new("cap");
    let dir = scratch.0.join("contracts/nodes/node_many_errors_compute/v1_0_0");
    std::fs::create_dir_all(&dir).unwrap();
    let mut text = String::from(
        "contract_version: {major: 1, minor: 0, patch: 0}\nnode_name: node_many_errors_compute\nnode_type: COMPUTE\n\
         description: d\ninput_model: ModelIn\noutput_model: ModelIn\ndefinitions:\n  ModelIn:\n    type: object\n    properties:\n",
    );
    for i in 0..60 {
        text.push_str(&format!("      p{i}: {{$ref: '#/definitions/Missing{i}'}}\n"));
    }
    std::fs::write(dir.join("contract.yaml"), text).unwrap();
    let out = codegen(&["validate", scratch.0.join("contracts").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("error[CG0011]").count(), 50, "{stderr}");
    assert!(
        stderr.contains("... and 10 more diagnostic(s) not shown (10 error(s), 0 warning(s), 0 note(s))"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("60 error(s)"));
}

#[test]
fn explain_prints_the_long_text_and_rejects_unknown_codes() {
    let out = codegen(&["explain", "CG0023"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("CG0023: ") && text.contains("--map-type"), "{text}");
    let out = codegen(&["explain", "CG9999"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn schema_prints_the_checked_in_schema() {
    let out = codegen(&["schema"]);
    assert!(out.status.success());
    let checked_in = std::fs::read_to_string(workspace().join("schema/contract.schema.json")).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), checked_in);
    let schema: serde_json::Value = serde_json::from_str(&checked_in).unwrap();
    for key in
        ["contract_version", "node_name", "node_type", "description", "input_model", "output_model", "definitions"]
    {
        assert!(schema["required"].as_array().unwrap().iter().any(|k| k == key), "{key} not required");
        assert!(schema["properties"].get(key).is_some(), "{key} not described");
    }
}

#[test]
fn our_contracts_name_the_schema_by_a_path_that_resolves() {
    let nodes = workspace().join("contracts/nodes");
    let mut checked = 0;
    for entry in walkdir::WalkDir::new(&nodes) {
        let entry = entry.unwrap();
        if entry.file_name() != "contract.yaml" {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let first = text.lines().next().unwrap_or_default();
        let relative = first
            .strip_prefix("# yaml-language-server: $schema=")
            .unwrap_or_else(|| panic!("{}", entry.path().display()));
        let target = entry.path().parent().unwrap().join(relative);
        assert!(target.is_file(), "{} names {}, which does not exist", entry.path().display(), target.display());
        assert_eq!(
            target.canonicalize().unwrap(),
            workspace().join("schema/contract.schema.json").canonicalize().unwrap()
        );
        checked += 1;
    }
    assert!(checked >= 9);
}

#[test]
fn generate_writes_a_package_from_git_or_path_and_maps_types() {
    let scratch = Scratch::new("generate");
    let contracts = fixtures().join("n03_string_versions/contracts");
    let out_dir = scratch.0.join("pkg");
    let out = codegen(&[
        "generate",
        "--contracts",
        contracts.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--crate",
        "tracing-nodes",
        "--map-type",
        "ModelOnexEvent=onex_runtime::event::OnexEvent",
        "--runtime-git",
        "https://example.com/onex.git",
        "--runtime-rev",
        "v1.2",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("`ModelOnexEvent`"), "a mapped type is not reported: {stderr}");
    let manifest = std::fs::read_to_string(out_dir.join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains("name = \"tracing-nodes\"")
            && manifest.contains("onex-runtime = { git = \"https://example.com/onex.git\", rev = \"v1.2\" }"),
        "{manifest}"
    );
    assert!(manifest.contains("\n[workspace]\n"), "standalone: {manifest}");
    let models =
        std::fs::read_to_string(out_dir.join("src/nodes/node_distributed_tracing_compute/v1_0_0/models.rs")).unwrap();
    assert!(models.contains("pub type ModelOnexEvent = onex_runtime::event::OnexEvent;"), "{models}");
    assert!(
        out_dir.join("src/lib.rs").is_file()
            && out_dir.join("src/nodes/node_distributed_tracing_compute/v1_0_0/node.rs").is_file()
    );

    let runtime = workspace().join("runtime");
    let out = codegen(&[
        "generate",
        "--contracts",
        contracts.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--crate",
        "tracing-nodes",
        "--runtime-path",
        runtime.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let manifest = std::fs::read_to_string(out_dir.join("Cargo.toml")).unwrap();
    assert!(manifest.contains(&format!("onex-runtime = {{ path = {:?} }}", runtime.to_str().unwrap())), "{manifest}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("external type `ModelOnexEvent`"), "unmapped now: {stderr}");

    let out = codegen(&["generate", "--contracts", contracts.to_str().unwrap(), "--out", "x", "--crate", "2bad"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn type_map_file_maps_types_and_reports_bad_entries_located() {
    let scratch = Scratch::new("typemap");
    let map = scratch.0.join("types.yaml");
    std::fs::write(&map, "types:\n  ModelOnexEvent: onex_runtime::event::OnexEvent\n  ModelBad: 'not a type'\n")
        .unwrap();
    let contracts = fixtures().join("n03_string_versions/contracts");
    let out = codegen(&["--type-map", map.to_str().unwrap(), "validate", contracts.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error[CG0019]") && stderr.contains("types.yaml:3:13"), "{stderr}");
    assert!(!stderr.contains("external type `ModelOnexEvent`"), "{stderr}");
}

#[test]
fn keywords_and_prelude_names_are_converted_predictably() {
    let scratch = Scratch::new("naming");
    let out_dir = scratch.0.join("pkg");
    let contracts = fixtures().join("_naming/contracts");
    let out = codegen(&[
        "generate",
        "--contracts",
        contracts.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--crate",
        "kw",
        "--runtime-path",
        workspace().join("runtime").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for prelude in ["Result", "Option", "String", "Box", "Vec"] {
        assert!(
            stderr.contains(&format!("definition `{prelude}` becomes the type `Model{prelude}`")),
            "{prelude}: {stderr}"
        );
    }
    let dir = out_dir.join("src/nodes/node_keywords_compute/v1_0_0");
    let models = std::fs::read_to_string(dir.join("models.rs")).unwrap();
    let handler = std::fs::read_to_string(dir.join("handler.rs")).unwrap();
    let strict = "as break const continue else enum extern false fn for if impl in let loop match mod move mut pub ref return \
                  static struct trait true type unsafe use where while async await dyn abstract become box do final macro \
                  override priv typeof unsized virtual yield try gen union";
    for keyword in strict.split_whitespace() {
        assert!(models.contains(&format!("pub r#{keyword}: Option<String>")), "field {keyword}");
        assert!(handler.contains(&format!("fn r#{keyword}(")), "method {keyword}");
    }
    for (wire, ident) in [("self", "self_"), ("crate", "crate_"), ("super", "super_")] {
        assert!(models.contains(&format!("pub {ident}: Option<String>")), "{wire}");
        assert!(handler.contains(&format!("fn {ident}(")), "{wire}");
    }
    for weak in ["macro_rules", "raw", "safe"] {
        assert!(models.contains(&format!("pub {weak}: Option<String>")), "{weak}");
    }
    for variant in ["Some,", "None,", "SelfValue,", "Ok,", "Err,", "Gen,", "Type,"] {
        assert!(models.contains(variant), "variant {variant}:\n{models}");
    }
    assert!(models.contains("pub struct ModelResult") && models.contains("pub enum ModelOption"));
    assert!(models.contains("pub type ModelBox = Vec<ModelVec>;"), "{models}");
}
