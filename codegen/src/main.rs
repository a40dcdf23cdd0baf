//! `cargo run -p codegen [-- COMMAND]`: regenerate `generated/` from `contracts/`, or check,
//! validate, create a contract, or list diagnostic codes. Arguments are parsed by hand to keep
//! the dependency tree small.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

const USAGE: &str = "\
usage: cargo run -p codegen [-- [--root DIR] COMMAND]

commands:
  (none)                    regenerate generated/ from contracts/
  check                     exit 1 with a diff when generated/ is stale
  validate [PATHS...]       diagnostics only (default: contracts/)
  new node_<name>_<kind>    write a new contract from templates/contract.yaml.jinja, then regenerate
  codes                     print the table of diagnostic codes
  schema                    print the editor JSON Schema of the contract dialect

options:
  --root DIR                the workspace root (default: found from the current directory)";

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut root: Option<PathBuf> = None;
    if let Some(i) = args.iter().position(|a| a == "--root") {
        if i + 1 >= args.len() {
            eprintln!("error: --root needs a directory\n\n{USAGE}");
            return ExitCode::from(2);
        }
        root = Some(PathBuf::from(args.remove(i + 1)));
        args.remove(i);
    }
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let root = root.unwrap_or_else(find_root);
    let command = args.first().map(String::as_str);
    match command {
        None => regenerate(&root),
        Some("check") if args.len() == 1 => check(&root),
        Some("validate") => validate(&root, &args[1..]),
        Some("new") if args.len() == 2 => new(&root, &args[1]),
        Some("schema") => {
            print!("{}", codegen::CONTRACT_SCHEMA);
            ExitCode::SUCCESS
        }
        Some("codes") => {
            print!("{}", codegen::diagnostics::codes_table());
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("error: unexpected arguments starting at `{other}`\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// The nearest ancestor of the current directory with `contracts/` and `generated/`; else the
/// workspace this binary was built in.
fn find_root() -> PathBuf {
    let looks_like_root = |p: &Path| p.join("contracts").is_dir() && p.join("generated").is_dir();
    if let Ok(cwd) = std::env::current_dir() {
        if let Some(found) = cwd.ancestors().find(|p| looks_like_root(p)) {
            return found.to_path_buf();
        }
    }
    let built_in = Path::new(env!("CARGO_MANIFEST_DIR"));
    built_in.parent().unwrap_or(built_in).to_path_buf()
}

fn report(loaded: &codegen::Loaded) {
    if !loaded.diagnostics.is_empty() {
        eprintln!("{}", loaded.render_diagnostics());
    }
    let errors = loaded.diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = loaded.diagnostics.len() - errors;
    if errors > 0 {
        eprintln!("error: {errors} error(s), {warnings} warning(s); nothing was written");
    }
}

fn regenerate(root: &Path) -> ExitCode {
    let started = Instant::now();
    let (loaded, output) = codegen::generate(&root.join("contracts"));
    report(&loaded);
    let Some(output) = output else { return ExitCode::FAILURE };
    let src = root.join("generated").join("src");
    let written = match codegen::write_tree(&output, &src, None) {
        Ok(written) => written,
        Err(e) => {
            eprintln!("error[CG0017]: cannot write {}: {e}", src.display());
            return ExitCode::FAILURE;
        }
    };
    for node in &loaded.nodes {
        let dir = codegen::emit::node_dir(node);
        let changed = written.written.iter().filter(|f| f.starts_with(&format!("{dir}/"))).count();
        let scaffold = if written.scaffolds_created.iter().any(|f| f.starts_with(&format!("{dir}/"))) {
            ", scaffold created"
        } else {
            ""
        };
        let (a, b, c) = node.contract.version.value;
        println!(
            "{} v{a}.{b}.{c} ({}): {} types, {} operations, {} dependencies; {changed} file(s) changed{scaffold}",
            node.contract.name.value,
            node.contract.kind.upper(),
            node.types.len(),
            node.operations.len(),
            node.contract.dependencies.len(),
        );
    }
    for removed in &written.removed {
        println!("removed stale generated/src/{removed}");
    }
    println!(
        "generated {} node(s): {} file(s) written, {} unchanged, {} scaffold(s) created in {:.1} ms",
        loaded.nodes.len(),
        written.written.len(),
        written.unchanged,
        written.scaffolds_created.len(),
        started.elapsed().as_secs_f64() * 1000.0
    );
    ExitCode::SUCCESS
}

fn check(root: &Path) -> ExitCode {
    let (loaded, output) = codegen::generate(&root.join("contracts"));
    report(&loaded);
    let Some(output) = output else { return ExitCode::FAILURE };
    let report = match codegen::check_tree(&output, &root.join("generated").join("src")) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("error[CG0017]: cannot read generated/: {e}");
            return ExitCode::FAILURE;
        }
    };
    for missing in &report.missing_scaffolds {
        println!("note: scaffold generated/src/{missing} does not exist yet; `cargo run -p codegen` creates it");
    }
    if report.stale.is_empty() {
        println!("generated/ is up to date ({} node(s))", loaded.nodes.len());
        return ExitCode::SUCCESS;
    }
    for stale in &report.stale {
        print!("{}", stale.diff);
    }
    println!("\nerror: {} generated file(s) are stale:", report.stale.len());
    for stale in &report.stale {
        println!("  generated/src/{}", stale.path);
    }
    println!("run `cargo run -p codegen` to update");
    ExitCode::FAILURE
}

fn validate(root: &Path, paths: &[String]) -> ExitCode {
    // Canonical paths, so a PATH inside contracts/ is shown relative to it however it was typed.
    let canonical = |p: PathBuf| std::fs::canonicalize(&p).unwrap_or(p);
    let contracts = canonical(root.join("contracts"));
    let only: Vec<PathBuf> = paths
        .iter()
        .map(|p| {
            let full = canonical(PathBuf::from(p));
            if full.starts_with(&contracts) { full } else { PathBuf::from(p) }
        })
        .collect();
    let loaded = codegen::load(&contracts, if only.is_empty() { None } else { Some(&only) });
    report(&loaded);
    let errors = loaded.diagnostics.iter().filter(|d| d.is_error()).count();
    println!(
        "validated {} contract file(s): {} valid, {errors} error(s), {} warning(s)",
        loaded.files_read.len(),
        loaded.nodes.len(),
        loaded.diagnostics.len() - errors
    );
    if errors > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

fn new(root: &Path, name: &str) -> ExitCode {
    let contracts = root.join("contracts");
    match codegen::new_node::create(&contracts, name) {
        Ok(path) => println!("created {}", path.display()),
        Err(e) => {
            eprintln!("error[CG0007]: {e}");
            return ExitCode::FAILURE;
        }
    }
    regenerate(root)
}
