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
  explain CODE              print the long explanation of a diagnostic code (e.g. CG0023)
  generate --contracts DIR --out DIR --crate NAME [--runtime-path PATH]
                            write a standalone Cargo package generated from the contracts in DIR
                            (any ONEX dialect; without --runtime-path it depends on onex-runtime by version)
  schema                    print the editor JSON Schema of the contract dialect

options:
  --root DIR                the workspace root (default: found from the current directory)
  --format human|json       diagnostics as text with snippets (at most 50, then a count), or one JSON
                            object per line with code, severity, file, line, column, path, message, hint
  --map-type NAME=PATH      map an external (Python) type to a Rust type, e.g.
                            --map-type ModelOnexEvent=onex_runtime::event::OnexEvent (repeatable)
  --type-map FILE           a YAML file with `types: {NAME: rust::Path, ...}`";

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
    let cli = match cli_options(&mut args) {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let _ = FORMAT.set(cli.format);
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let root = root.unwrap_or_else(find_root);
    let command = args.first().map(String::as_str);
    match command {
        None => regenerate(&root),
        Some("check") if args.len() == 1 => check(&root),
        Some("validate") => validate(&root, &args[1..], &cli),
        Some("generate") => generate_package(&args[1..], &cli),
        Some("explain") if args.len() == 2 => explain(&args[1]),
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

/// `--format`, set once from the command line.
static FORMAT: std::sync::OnceLock<codegen::report::Format> = std::sync::OnceLock::new();

/// Options shared by the commands.
struct Cli {
    format: codegen::report::Format,
    dialect: codegen::dialect::Options,
    /// Problems in the type map file.
    type_map_diagnostics: Vec<codegen::diagnostics::Diagnostic>,
}

/// Removes `--format`, `--map-type` and `--type-map` (each `--x VALUE` or `--x=VALUE`) from `args`.
fn cli_options(args: &mut Vec<String>) -> Result<Cli, String> {
    let mut cli = Cli {
        format: codegen::report::Format::Human,
        dialect: codegen::dialect::Options { load_subcontracts: true, ..Default::default() },
        type_map_diagnostics: Vec::new(),
    };
    let mut i = 0;
    while i < args.len() {
        let (flag, inline) = match args[i].split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (args[i].clone(), None),
        };
        if !["--format", "--map-type", "--type-map"].contains(&flag.as_str()) {
            i += 1;
            continue;
        }
        let value = match inline {
            Some(v) => {
                args.remove(i);
                v
            }
            None if i + 1 < args.len() => {
                args.remove(i);
                args.remove(i)
            }
            None => return Err(format!("{flag} needs a value")),
        };
        match flag.as_str() {
            "--format" => {
                cli.format = codegen::report::Format::parse(&value)
                    .ok_or_else(|| format!("--format must be `human` or `json`, not `{value}`"))?
            }
            "--map-type" => cli.dialect.type_map.insert_arg(&value)?,
            _ => cli.dialect.type_map.load_file(Path::new(&value), &mut cli.type_map_diagnostics),
        }
    }
    Ok(cli)
}

fn report(loaded: &codegen::Loaded) {
    let format = FORMAT.get().copied().unwrap_or_default();
    if format == codegen::report::Format::Json {
        print!("{}", codegen::report::json_lines(&loaded.diagnostics));
    } else if !loaded.diagnostics.is_empty() {
        eprint!("{}", codegen::report::human(&loaded.diagnostics, &loaded.sources, codegen::report::HUMAN_CAP));
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

fn validate(root: &Path, paths: &[String], cli: &Cli) -> ExitCode {
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
    let mut loaded = codegen::load_with(&contracts, if only.is_empty() { None } else { Some(&only) }, &cli.dialect);
    loaded.diagnostics.extend(cli.type_map_diagnostics.iter().cloned());
    codegen::diagnostics::sort(&mut loaded.diagnostics);
    report(&loaded);
    let counts = codegen::report::counts(&loaded.diagnostics);
    let summary = format!(
        "validated {} file(s): {} node contract(s) valid, {} other file(s) skipped, {} error(s), {} warning(s), {} note(s)",
        loaded.files_read.len(),
        loaded.nodes.len(),
        loaded.skipped.len(),
        counts.errors,
        counts.warnings,
        counts.notes
    );
    if cli.format == codegen::report::Format::Json {
        eprintln!("{summary}")
    } else {
        println!("{summary}")
    }
    if counts.errors > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

fn explain(code: &str) -> ExitCode {
    match codegen::explain::parse_code(code) {
        Some(code) => {
            print!("{}", codegen::explain::explain(code));
            ExitCode::SUCCESS
        }
        None => {
            eprintln!("error: `{code}` is not a diagnostic code; `cargo run -p codegen -- codes` lists them");
            ExitCode::from(2)
        }
    }
}

/// `generate --contracts DIR --out DIR --crate NAME [--runtime-path PATH]`.
fn generate_package(args: &[String], cli: &Cli) -> ExitCode {
    let mut contracts = None;
    let mut out = None;
    let mut crate_name = None;
    let mut runtime_path = None;
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let slot = match flag.as_str() {
            "--contracts" => &mut contracts,
            "--out" => &mut out,
            "--crate" => &mut crate_name,
            "--runtime-path" => &mut runtime_path,
            other => {
                eprintln!("error: unexpected argument `{other}` to generate\n\n{USAGE}");
                return ExitCode::from(2);
            }
        };
        let Some(value) = rest.next() else {
            eprintln!("error: {flag} needs a value\n\n{USAGE}");
            return ExitCode::from(2);
        };
        *slot = Some(value.clone());
    }
    let (Some(contracts), Some(out), Some(crate_name)) = (contracts, out, crate_name) else {
        eprintln!("error: generate needs --contracts DIR --out DIR --crate NAME\n\n{USAGE}");
        return ExitCode::from(2);
    };
    if let Err(e) = codegen::package::check_crate_name(&crate_name) {
        eprintln!("error: --crate {e}");
        return ExitCode::from(2);
    }
    let started = Instant::now();
    let (mut loaded, output) = codegen::generate_with(Path::new(&contracts), &cli.dialect);
    loaded.diagnostics.extend(cli.type_map_diagnostics.iter().cloned());
    report(&loaded);
    let Some(output) = output else { return ExitCode::FAILURE };
    if loaded.has_errors() {
        return ExitCode::FAILURE;
    }
    let options = codegen::package::PackageOptions {
        crate_name,
        runtime_path: runtime_path.map(PathBuf::from),
        standalone: true,
    };
    match codegen::package::write_package(&output, Path::new(&out), &options) {
        Ok(written) => {
            println!(
                "generated package `{}` in {out}: {} node(s), {} file(s) written, {} unchanged, {} scaffold(s) created, {} other file(s) skipped in {:.1} ms",
                options.crate_name,
                loaded.nodes.len(),
                written.written.len(),
                written.unchanged,
                written.scaffolds_created.len(),
                loaded.skipped.len(),
                started.elapsed().as_secs_f64() * 1000.0
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error[CG0017]: cannot write the package to {out}: {e}");
            ExitCode::FAILURE
        }
    }
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
