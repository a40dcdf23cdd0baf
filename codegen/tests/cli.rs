//! The command line itself: help per command, `--version`, exit codes, global options before or
//! after the command, `--color`, crate name errors, and overriding the templates.

use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::{Scratch, workspace};

fn codegen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_codegen")).args(args).env_remove("NO_COLOR").output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A contract folder outside the workspace (a fixture of the project's dialect).
fn fixture_contracts() -> std::path::PathBuf {
    workspace().join("tests/fixtures/codegen/new_node/contracts")
}

/// This workspace's runtime, for `generate --runtime-path`.
fn runtime() -> String {
    workspace().join("runtime").to_str().unwrap().to_owned()
}

#[test]
fn help_lists_every_command_and_the_exit_codes() {
    let out = codegen(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    for command in ["regenerate", "check", "validate", "new", "codes", "explain", "generate", "schema", "breaking"] {
        assert!(text.contains(&format!("\n  {command} ")), "{command}: {text}");
    }
    for option in ["--root", "--format", "--map-type", "--type-map", "--templates", "--color", "--version"] {
        assert!(text.contains(option), "{option}: {text}");
    }
    assert!(text.contains("Exit codes:") && text.contains("2  usage error"), "{text}");
}

#[test]
fn each_command_has_its_own_help() {
    let validate = stdout(&codegen(&["validate", "--help"]));
    assert!(validate.contains("Usage: codegen validate") && validate.contains("[PATHS]..."), "{validate}");
    assert!(!validate.contains("--contracts"), "{validate}");
    assert!(validate.contains("--format"), "global options are listed too: {validate}");
    assert!(validate.contains("1  at least one error"), "{validate}");

    let generate = codegen(&["generate", "--help"]);
    assert_eq!(generate.status.code(), Some(0));
    let generate = stdout(&generate);
    for option in ["--contracts <DIR>", "--out <DIR>", "--crate <NAME>", "--runtime-path <PATH>", "--templates"] {
        assert!(generate.contains(option), "{option}: {generate}");
    }
    let check = stdout(&codegen(&["help", "check"]));
    assert!(check.contains("Usage: codegen check") && check.contains("1  stale files"), "{check}");
}

#[test]
fn version_prints_the_package_version() {
    let out = codegen(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), format!("codegen {}\n", env!("CARGO_PKG_VERSION")));
}

#[test]
fn usage_errors_exit_2_and_say_what_is_wrong() {
    for (args, expected) in [
        (&["chekc"][..], "unrecognized subcommand 'chekc'"),
        (&["check", "extra"], "unexpected argument 'extra'"),
        (&["--bogus"], "unexpected argument '--bogus'"),
        (&["--format", "yaml", "validate"], "invalid value 'yaml' for '--format <FORMAT>'"),
        (&["--color", "sometimes", "codes"], "invalid value 'sometimes' for '--color <WHEN>'"),
        (&["--map-type", "Foo=not a type", "validate"], "`not a type` is not a Rust type"),
        (&["--templates", "/no/such/templates", "check"], "not a directory"),
        (&["generate", "--contracts", "x", "--out", "y"], "--crate <NAME>"),
        (&["new"], "<NODE_NAME>"),
        (&["explain"], "<CODE>"),
    ] {
        let out = codegen(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(expected), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("\u{1b}["), "no color off a terminal: {}", stderr(&out));
    }
    assert_eq!(codegen(&["explain", "CG9999"]).status.code(), Some(2));
}

#[test]
fn a_crate_name_error_names_the_rule_broken() {
    let long = "a".repeat(70);
    let out = codegen(&["generate", "--contracts", "x", "--out", "y", "--crate", &long]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("is 70 characters long; a crate name has at most 64"), "{}", stderr(&out));
    let out = codegen(&["generate", "--contracts", "x", "--out", "y", "--crate", "my nodes"]);
    assert!(stderr(&out).contains("' ' (U+0020) at position 3"), "{}", stderr(&out));
    let out = codegen(&["generate", "--contracts", "x", "--out", "y", "--crate", "test"]);
    assert!(stderr(&out).contains("`test` is reserved"), "{}", stderr(&out));
}

#[test]
fn global_options_go_before_or_after_the_command() {
    let contracts = workspace().join("tests/fixtures/codegen/errors/ref_to_nothing/contracts");
    let before = codegen(&["--format", "json", "validate", path(&contracts)]);
    let after = codegen(&["validate", path(&contracts), "--format=json"]);
    assert_eq!(before.status.code(), Some(1));
    assert_eq!(after.status.code(), Some(1));
    assert_eq!(stdout(&before), stdout(&after));
    assert!(stdout(&after).starts_with("{\"code\":\"CG0011\""), "{}", stdout(&after));
}

#[test]
fn color_always_paints_severity_labels_and_never_or_no_color_does_not() {
    let contracts = workspace().join("tests/fixtures/codegen/errors/ref_to_nothing/contracts");
    let painted = stderr(&codegen(&["validate", path(&contracts), "--color", "always"]));
    assert!(painted.contains("error[CG0011]\u{1b}[0m: "), "{painted:?}");
    assert!(painted.contains("\u{1b}[0m: 1 error(s)"), "the summary too: {painted:?}");
    let plain = stderr(&codegen(&["validate", path(&contracts), "--color=never"]));
    assert!(!plain.contains('\u{1b}') && plain.contains("error[CG0011]: "), "{plain:?}");
    // NO_COLOR holds with `auto` (the default); off a terminal there is no color anyway.
    let out = Command::new(env!("CARGO_BIN_EXE_codegen"))
        .args(["validate", path(&contracts)])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!stderr(&out).contains('\u{1b}'));
    // Clap's own output follows --color as well.
    let help = stdout(&codegen(&["--color", "always", "--help"]));
    assert!(help.contains('\u{1b}'), "{help:?}");
    assert!(!stdout(&codegen(&["--color", "never", "--help"])).contains('\u{1b}'));
}

const MARKER: &str = "// Scaffolded from a custom template.";

/// A templates folder whose `node.rs.jinja` is the built-in one under a marker line.
fn custom_node_template(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("node.rs.jinja"), format!("{MARKER}\n{}", codegen::templates::BUILTIN_NODE)).unwrap();
}

#[test]
fn templates_override_the_scaffold_for_generate() {
    let scratch = Scratch::new("cli-templates-generate");
    let templates = scratch.0.join("templates");
    custom_node_template(&templates);
    let out_dir = scratch.0.join("pkg");
    let contracts = fixture_contracts();
    let runtime = runtime();
    let args = ["generate", "--contracts", path(&contracts), "--out", path(&out_dir), "--crate", "widgets"];
    let out = codegen(&[&args[..], &["--templates", path(&templates), "--runtime-path", &runtime]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let node = std::fs::read_to_string(out_dir.join("src/nodes/node_sample_widget_effect/v1_0_0/node.rs")).unwrap();
    assert!(node.starts_with(&format!("{MARKER}\n// The handler of `node_sample_widget_effect`")), "{node}");

    // Without --templates the built-in template applies (to a fresh package).
    let plain_dir = scratch.0.join("plain");
    let contracts = fixture_contracts();
    let out = codegen(&[
        "generate",
        "--contracts",
        path(&contracts),
        "--out",
        path(&plain_dir),
        "--crate",
        "w",
        "--runtime-path",
        &runtime,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let node = std::fs::read_to_string(plain_dir.join("src/nodes/node_sample_widget_effect/v1_0_0/node.rs")).unwrap();
    assert!(!node.contains(MARKER));
}

#[test]
fn templates_override_the_contract_and_scaffold_for_new() {
    let scratch = Scratch::new("cli-templates-new");
    let root = scratch.0.join("repo");
    std::fs::create_dir_all(root.join("contracts")).unwrap();
    std::fs::create_dir_all(root.join("generated")).unwrap();
    let templates = scratch.0.join("templates");
    custom_node_template(&templates);
    let contract = format!("# Our house contract for {{{{ node_name }}}}.\n{}", codegen::templates::BUILTIN_CONTRACT);
    std::fs::write(templates.join("contract.yaml.jinja"), contract).unwrap();

    let out = codegen(&["--root", path(&root), "new", "node_gadget_compute", "--templates", path(&templates)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let written =
        std::fs::read_to_string(root.join("contracts/nodes/node_gadget_compute/v1_0_0/contract.yaml")).unwrap();
    assert!(written.starts_with("# Our house contract for node_gadget_compute.\n"), "{written}");
    let node = root.join("generated/src/nodes/node_gadget_compute/v1_0_0/node.rs");
    assert!(std::fs::read_to_string(&node).unwrap().starts_with(MARKER));

    // check reads the same templates; `gen` is `regenerate`, and has nothing to write.
    let check = codegen(&["--root", path(&root), "--templates", path(&templates), "check"]);
    assert!(check.status.success(), "{}{}", stdout(&check), stderr(&check));
    let again = codegen(&["--root", path(&root), "gen", "--templates", path(&templates)]);
    assert!(stdout(&again).contains(": 0 file(s) written"), "{}", stdout(&again));
}

#[test]
fn a_broken_template_is_an_error_naming_the_file() {
    let scratch = Scratch::new("cli-templates-broken");
    let templates = scratch.0.join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    let file = templates.join("node.rs.jinja");
    let out_dir = scratch.0.join("pkg");
    let generate = |out_dir: &Path| {
        codegen(&[
            "generate",
            "--contracts",
            path(&fixture_contracts()),
            "--out",
            path(out_dir),
            "--crate",
            "w",
            "--templates",
            path(&templates),
            "--runtime-path",
            &runtime(),
        ])
    };

    // Does not parse.
    std::fs::write(&file, "{% for op in operations %}\nunclosed\n").unwrap();
    let out = generate(&out_dir);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.starts_with(&format!("error: template {}: syntax error", file.display())), "{err}");
    assert!(!out_dir.exists(), "nothing is written");

    // Fails to render.
    std::fs::write(&file, "{{ node_name + 1 }}\n").unwrap();
    let out = generate(&out_dir);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains(&format!("template {} (rendering `node_sample_widget_effect`)", file.display())), "{err}");
    assert!(!out_dir.exists(), "nothing is written");

    // Renders something that is not Rust.
    std::fs::write(&file, "fn {{ node_name }} {\n").unwrap();
    let out = generate(&out_dir);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains(&file.display().to_string()) && err.contains("does not parse"), "{err}");
}
