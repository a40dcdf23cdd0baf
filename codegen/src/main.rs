//! `cargo run -p codegen [-- COMMAND]`: regenerate `generated/` from `contracts/` (the command
//! when none is given), or check it, validate contracts, create a contract, list and explain
//! diagnostic codes, write a standalone package, print the contract schema, or compare the
//! contracts with a baseline for breaking changes. `--help` after
//! any command lists its options.
//!
//! The options `--root`, `--format`, `--map-type`, `--type-map`, `--templates` and `--color`
//! mean the same for every command and may come before or after it.
//!
//! Exit codes: 0 success; 1 the contracts have errors, a template fails, `check` found
//! `generated/` stale, or writing failed; 2 a usage error (an unknown command or option, a
//! bad or missing value, an unknown diagnostic code).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::builder::styling::{AnsiColor, Style};
use clap::{ColorChoice, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use codegen::report::Format;
use codegen::templates::Templates;

/// The help heading of the options every command accepts.
const GLOBAL: &str = "Global options";

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the contracts have errors, a template fails, `check` found generated/ stale, or writing failed
  2  usage error: an unknown command or option, a bad or missing value, an unknown diagnostic code";

/// `generate` without `--runtime-path` or `--runtime-git`.
const NO_RUNTIME: &str = "generate needs to know where the package takes onex-runtime from, which is not \
published on any registry: pass --runtime-path DIR (the runtime/ folder of a checkout of the ONEX repository, \
absolute or relative to --out) or --runtime-git URL (with --runtime-rev REV for a branch, tag or commit)";

/// Reads ONEX contract.yaml files, validates them and writes Rust models, node scaffolds and
/// registries.
///
/// With no command, regenerates generated/ from contracts/. In this workspace run it as
/// `cargo run -p codegen [-- COMMAND]`.
#[derive(Debug, Parser)]
#[command(name = "codegen", version, after_help = EXIT_CODES, max_term_width = 100)]
struct Cli {
    #[command(flatten)]
    options: Options,
    #[command(subcommand)]
    command: Option<Command>,
}

/// The options every command accepts; each says which commands it affects.
#[derive(Debug, clap::Args)]
struct Options {
    /// The workspace root, holding contracts/ and generated/ (regenerate, check, validate, new)
    /// [default: the nearest ancestor of the current directory that has both]
    #[arg(long, global = true, help_heading = GLOBAL, value_name = "DIR")]
    root: Option<PathBuf>,

    /// Diagnostics as text with source snippets (at most 50, then a count), or one JSON object
    /// per line with code, severity, file, line, column, path, message, hint
    #[arg(long, global = true, help_heading = GLOBAL, value_enum, value_name = "FORMAT", default_value_t = FormatArg::Human)]
    format: FormatArg,

    /// Map an external (Python) type to a Rust type, e.g.
    /// `ModelOnexEvent=onex_runtime::event::OnexEvent` (repeatable; overrides --type-map)
    #[arg(long = "map-type", global = true, help_heading = GLOBAL, value_name = "NAME=PATH", value_parser = parse_map_type)]
    map_type: Vec<String>,

    /// A YAML file with `types: {NAME: rust::Path, ...}` (repeatable)
    #[arg(long = "type-map", global = true, help_heading = GLOBAL, value_name = "FILE")]
    type_map: Vec<PathBuf>,

    /// A folder whose node.rs.jinja and contract.yaml.jinja, where present, replace the
    /// built-in templates (regenerate, check, generate, new)
    #[arg(long, global = true, help_heading = GLOBAL, value_name = "DIR", value_parser = parse_dir)]
    templates: Option<PathBuf>,

    /// When to color help, errors and diagnostics; `auto` colors a terminal unless NO_COLOR
    /// is set
    #[arg(long, global = true, help_heading = GLOBAL, value_enum, value_name = "WHEN", default_value_t = ColorChoice::Auto)]
    color: ColorChoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FormatArg {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Regenerate generated/ from contracts/ (the default command)
    #[command(visible_alias = "gen", after_help = EXIT_CODES)]
    Regenerate,

    /// Exit 1 with a unified diff when generated/ is stale
    #[command(
        after_help = "Exit codes:\n  0  generated/ is up to date\n  1  stale files (listed), or contract errors\n  2  usage error"
    )]
    Check,

    /// Print the diagnostics of contracts; write nothing
    #[command(
        after_help = "Exit codes:\n  0  no errors (warnings and notes allowed)\n  1  at least one error\n  2  usage error"
    )]
    Validate {
        /// Contract files or folders [default: contracts/]
        #[arg(value_name = "PATHS")]
        paths: Vec<PathBuf>,
    },

    /// Write a new contract from the contract template, then regenerate
    #[command(after_help = EXIT_CODES)]
    New {
        /// The node's name: `node_<name>_<kind>` in lower snake case, where <kind> is effect,
        /// compute, reducer or orchestrator
        #[arg(value_name = "NODE_NAME")]
        name: String,
    },

    /// Print the table of diagnostic codes
    Codes,

    /// Print the long explanation of a diagnostic code
    #[command(after_help = "Exit codes:\n  0  explained\n  2  not a diagnostic code, or another usage error")]
    Explain {
        /// A diagnostic code, e.g. CG0023
        code: String,
    },

    /// Write a standalone Cargo package generated from a folder of contracts (any ONEX dialect);
    /// contracts with errors are reported and left out, the valid ones are generated
    #[command(
        after_help = "Exit codes:\n  0  the package holds every contract\n  1  contracts with errors (reported, left out of the package; the others are written), a failing template or a failed write\n  2  usage error, including neither --runtime-path nor --runtime-git"
    )]
    Generate {
        /// The folder holding the contracts
        #[arg(long, value_name = "DIR")]
        contracts: PathBuf,
        /// The package folder to write (created when missing)
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The package name
        #[arg(long = "crate", value_name = "NAME", value_parser = parse_crate_name)]
        crate_name: String,
        /// Depend on onex-runtime by this path: the runtime/ folder of a checkout of the ONEX
        /// repository, absolute or relative to the package folder (--out). onex-runtime is not
        /// published on a registry: give this or --runtime-git
        #[arg(long, value_name = "PATH", conflicts_with = "runtime_git")]
        runtime_path: Option<PathBuf>,
        /// Depend on onex-runtime from this git repository (the ONEX repository)
        #[arg(long, value_name = "URL")]
        runtime_git: Option<String>,
        /// The branch, tag or commit of --runtime-git [default: its default branch]
        #[arg(long, value_name = "REV")]
        runtime_rev: Option<String>,
        /// Regenerate even when nothing changed since the last run (the package's
        /// `.codegen-stamp` says what was read and written)
        #[arg(long)]
        force: bool,
    },

    /// Print the editor JSON Schema of the contract dialect
    Schema,

    /// Compare contracts/ with a baseline and report what breaks their consumers
    #[command(
        after_help = "Exit codes:\n  0  nothing breaks (warnings and notes allowed)\n  1  a breaking change inside one major version, or contracts/ has errors\n  2  usage error, including a baseline that is neither a directory nor a git revision\n\nIn CI, against the merge base of the branch:\n  cargo run -p codegen -- breaking --against \"$(git merge-base origin/main HEAD)\""
    )]
    Breaking {
        /// The baseline: a git revision of this repository (read from git, not checked out), or a
        /// contracts directory
        #[arg(long, value_name = "REV|DIR", required_unless_present = "previous", conflicts_with = "previous")]
        against: Option<String>,
        /// Instead of a baseline, compare each node's previous version directory with its newest
        #[arg(long)]
        previous: bool,
        /// `wire`: what a consumer of the JSON sees; `source`: that and what a Rust caller of the
        /// generated code sees
        #[arg(long, value_enum, value_name = "LEVEL", default_value_t = LevelArg::Source)]
        level: LevelArg,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LevelArg {
    Wire,
    Source,
}

fn parse_map_type(arg: &str) -> Result<String, String> {
    codegen::dialect::TypeMap::new().insert_arg(arg).map_err(|e| {
        // Clap already names the option and the value.
        e.strip_prefix(&format!("--map-type {arg}: ")).unwrap_or(&e).to_owned()
    })?;
    Ok(arg.to_owned())
}

fn parse_dir(arg: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(arg);
    if path.is_dir() { Ok(path) } else { Err("not a directory".to_owned()) }
}

fn parse_crate_name(arg: &str) -> Result<String, String> {
    codegen::package::check_crate_name(arg)?;
    Ok(arg.to_owned())
}

/// The value of `--color` on the command line, read before parsing so that clap's own help
/// and errors honour it; a bad value is left for clap to report.
fn color_from_args(args: &[std::ffi::OsString]) -> ColorChoice {
    let mut choice = ColorChoice::Auto;
    let mut args = args.iter().skip(1).map(|a| a.to_string_lossy());
    while let Some(arg) = args.next() {
        let value = match arg.as_ref() {
            "--" => break,
            "--color" => args.next().map(|v| v.into_owned()),
            other => other.strip_prefix("--color=").map(str::to_owned),
        };
        if let Some(parsed) = value.and_then(|v| ColorChoice::from_str(&v, false).ok()) {
            choice = parsed;
        }
    }
    choice
}

/// Whether diagnostics on stderr get colored severity labels: `auto` colors a terminal unless
/// NO_COLOR is set to anything but the empty string.
fn colors_stderr(choice: ColorChoice) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let color = color_from_args(&args);
    let matches = Cli::command().color(color).get_matches_from(&args);
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let run = match Run::new(&cli.options) {
        Ok(run) => run,
        Err(e) => {
            run_error(&e, colors_stderr(cli.options.color));
            return ExitCode::FAILURE;
        }
    };
    let root = || cli.options.root.clone().unwrap_or_else(find_root);
    match cli.command {
        None | Some(Command::Regenerate) => regenerate(&root(), &run),
        Some(Command::Check) => check(&root(), &run),
        Some(Command::Validate { paths }) => validate(&root(), &paths, &run),
        Some(Command::New { name }) => new(&root(), &name, &run),
        Some(Command::Codes) => {
            print!("{}", codegen::diagnostics::codes_table());
            ExitCode::SUCCESS
        }
        Some(Command::Explain { code }) => explain(&code, run.color),
        Some(Command::Generate { contracts, out, crate_name, runtime_path, runtime_git, runtime_rev, force }) => {
            use codegen::package::RuntimeSource;
            if runtime_rev.is_some() && runtime_git.is_none() {
                run_error("--runtime-rev names a revision of --runtime-git, which is not given", run.color);
                return ExitCode::from(2);
            }
            let runtime = match (runtime_path, runtime_git) {
                (Some(path), _) => RuntimeSource::Path(path),
                (None, Some(url)) => RuntimeSource::Git { url, rev: runtime_rev },
                (None, None) => {
                    run_error(NO_RUNTIME, run.color);
                    return ExitCode::from(2);
                }
            };
            if let Err(e) = runtime.check(&out) {
                run_error(&e, run.color);
                return ExitCode::from(2);
            }
            let options = codegen::package::PackageOptions { crate_name, runtime, standalone: true };
            generate_package(&contracts, &out, options, force, &run)
        }
        Some(Command::Schema) => {
            print!("{}", codegen::CONTRACT_SCHEMA);
            ExitCode::SUCCESS
        }
        Some(Command::Breaking { against, previous: _, level }) => {
            let level = match level {
                LevelArg::Wire => codegen::breaking::Level::Wire,
                LevelArg::Source => codegen::breaking::Level::Source,
            };
            breaking(&root(), against.as_deref(), level, &run)
        }
    }
}

/// The nearest ancestor of the current directory with `contracts/` and `generated/`; else the
/// workspace this binary was built in.
fn find_root() -> PathBuf {
    let looks_like_root = |p: &Path| p.join("contracts").is_dir() && p.join("generated").is_dir();
    if let Ok(cwd) = std::env::current_dir()
        && let Some(found) = cwd.ancestors().find(|p| looks_like_root(p))
    {
        return found.to_path_buf();
    }
    let built_in = Path::new(env!("CARGO_MANIFEST_DIR"));
    built_in.parent().unwrap_or(built_in).to_path_buf()
}

/// What the options resolve to, shared by the commands.
struct Run {
    format: Format,
    dialect: codegen::dialect::Options,
    /// Problems in the type map files.
    type_map_diagnostics: Vec<codegen::diagnostics::Diagnostic>,
    templates: Templates,
    /// Whether stderr gets colored severity labels.
    color: bool,
}

impl Run {
    /// Reads the type map files and the templates. Type map problems are diagnostics reported
    /// with the contracts'; a template that cannot be read or parsed is an error.
    fn new(options: &Options) -> Result<Run, String> {
        let mut run = Run {
            format: match options.format {
                FormatArg::Human => Format::Human,
                FormatArg::Json => Format::Json,
            },
            dialect: codegen::dialect::Options { load_subcontracts: true, ..Default::default() },
            type_map_diagnostics: Vec::new(),
            templates: Templates::load(options.templates.as_deref())?,
            color: colors_stderr(options.color),
        };
        for file in &options.type_map {
            run.dialect.type_map.load_file(file, &mut run.type_map_diagnostics);
        }
        for arg in &options.map_type {
            run.dialect.type_map.insert_arg(arg)?;
        }
        Ok(run)
    }

    /// Prints the diagnostics of `loaded` (human on stderr, JSON on stdout) and, when there
    /// are errors, a count saying nothing was written.
    fn report(&self, loaded: &codegen::Loaded) {
        self.report_diagnostics(loaded);
        let errors = loaded.diagnostics.iter().filter(|d| d.is_error()).count();
        let warnings = loaded.diagnostics.len() - errors;
        if errors > 0 {
            let line = format!("error: {errors} error(s), {warnings} warning(s); nothing was written");
            eprintln!("{}", paint(&line, self.color));
        }
    }

    /// Prints the diagnostics of `loaded`: human on stderr, JSON on stdout.
    fn report_diagnostics(&self, loaded: &codegen::Loaded) {
        if self.format == Format::Json {
            print!("{}", codegen::report::json_lines(&loaded.diagnostics));
        } else if !loaded.diagnostics.is_empty() {
            let text = codegen::report::human(&loaded.diagnostics, &loaded.sources, codegen::report::HUMAN_CAP);
            eprint!("{}", paint(&text, self.color));
        }
    }

    /// Loads and renders the contracts under `contracts` with the type map and the templates,
    /// reporting every diagnostic; `None` when anything is an error.
    fn generate(&self, contracts: &Path) -> Option<(codegen::Loaded, codegen::Output)> {
        let (mut loaded, output) = codegen::generate_with(contracts, &self.dialect);
        if !self.type_map_diagnostics.is_empty() {
            loaded.diagnostics.extend(self.type_map_diagnostics.iter().cloned());
            codegen::diagnostics::sort(&mut loaded.diagnostics);
        }
        self.report(&loaded);
        let mut output = output?;
        if loaded.has_errors() {
            return None;
        }
        if let Err(e) = self.templates.apply(&loaded.nodes, &mut output) {
            run_error(&e, self.color);
            return None;
        }
        Some((loaded, output))
    }

    /// [`Run::generate`] for a package: renders every valid contract even when others have
    /// errors, reporting those. `None` when nothing can be written (no valid contract, a
    /// failing template or rendering), after saying so.
    fn generate_valid(&self, contracts: &Path) -> Option<(codegen::Loaded, codegen::Output)> {
        let (mut loaded, output) = codegen::generate_valid_with(contracts, &self.dialect);
        if !self.type_map_diagnostics.is_empty() {
            loaded.diagnostics.extend(self.type_map_diagnostics.iter().cloned());
            codegen::diagnostics::sort(&mut loaded.diagnostics);
        }
        let Some(mut output) = output else {
            self.report(&loaded);
            return None;
        };
        self.report_diagnostics(&loaded);
        if let Err(e) = self.templates.apply(&loaded.nodes, &mut output) {
            run_error(&e, self.color);
            return None;
        }
        Some((loaded, output))
    }
}

/// The contract files with errors, each once, in the order of the (sorted) diagnostics.
fn files_with_errors(loaded: &codegen::Loaded) -> Vec<&str> {
    let mut files: Vec<&str> = Vec::new();
    for d in loaded.diagnostics.iter().filter(|d| d.is_error()) {
        if !files.contains(&d.file.as_str()) {
            files.push(&d.file);
        }
    }
    files
}

/// Colors the severity label at the start of each line of rendered diagnostics (`error[..]`,
/// `warning[..]`, `note[..]`, `note:`, `help:`, `error:`); other lines are source snippets and
/// locations, left as they are.
fn paint(text: &str, color: bool) -> String {
    if !color {
        return text.to_owned();
    }
    let labels = [
        ("error", AnsiColor::BrightRed),
        ("warning", AnsiColor::BrightYellow),
        ("note", AnsiColor::BrightGreen),
        ("help", AnsiColor::BrightCyan),
    ];
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.split_inclusive('\n') {
        let painted = labels.iter().find_map(|&(label, color)| {
            let rest = line.strip_prefix(label)?;
            let end = if rest.starts_with('[') { label.len() + rest.find(']')? + 1 } else { label.len() };
            line[end..].starts_with(':').then_some((end, color))
        });
        match painted {
            Some((end, color)) => {
                let style = Style::new().bold().fg_color(Some(color.into()));
                out.push_str(&format!("{style}{}{style:#}{}", &line[..end], &line[end..]));
            }
            None => out.push_str(line),
        }
    }
    out
}

/// Prints a one-line error on stderr.
fn run_error(message: &str, color: bool) {
    eprintln!("{}", paint(&format!("error: {message}"), color));
}

fn regenerate(root: &Path, run: &Run) -> ExitCode {
    let started = Instant::now();
    let Some((loaded, output)) = run.generate(&root.join("contracts")) else { return ExitCode::FAILURE };
    let src = root.join("generated").join("src");
    let written = match codegen::write_tree(&output, &src, None) {
        Ok(written) => written,
        Err(e) => {
            eprintln!("{}", paint(&format!("error[CG0017]: cannot write {}: {e}", src.display()), run.color));
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

fn check(root: &Path, run: &Run) -> ExitCode {
    let Some((loaded, output)) = run.generate(&root.join("contracts")) else { return ExitCode::FAILURE };
    let report = match codegen::check_tree(&output, &root.join("generated").join("src")) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("{}", paint(&format!("error[CG0017]: cannot read generated/: {e}"), run.color));
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

fn validate(root: &Path, paths: &[PathBuf], run: &Run) -> ExitCode {
    // Canonical paths, so a PATH inside contracts/ is shown relative to it however it was typed.
    let canonical = |p: PathBuf| std::fs::canonicalize(&p).unwrap_or(p);
    let contracts = canonical(root.join("contracts"));
    let only: Vec<PathBuf> = paths
        .iter()
        .map(|p| {
            let full = canonical(p.clone());
            if full.starts_with(&contracts) { full } else { p.clone() }
        })
        .collect();
    let mut loaded = codegen::load_with(&contracts, if only.is_empty() { None } else { Some(&only) }, &run.dialect);
    loaded.diagnostics.extend(run.type_map_diagnostics.iter().cloned());
    codegen::diagnostics::sort(&mut loaded.diagnostics);
    run.report(&loaded);
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
    if run.format == Format::Json {
        eprintln!("{summary}")
    } else {
        println!("{summary}")
    }
    if counts.errors > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// `breaking`: contracts/ against `against` (a directory or a git revision), or each node's
/// previous version against its newest when `against` is `None`.
fn breaking(root: &Path, against: Option<&str>, level: codegen::breaking::Level, run: &Run) -> ExitCode {
    let contracts = root.join("contracts");
    let new = codegen::load_with(&contracts, None, &run.dialect);
    if new.has_errors() {
        run.report_diagnostics(&new);
        run_error(
            "contracts/ has errors (above); fix them first: a contract that cannot be read would look removed",
            run.color,
        );
        return ExitCode::FAILURE;
    }
    let (report, baseline, unreadable) = match against {
        Some(against) => match codegen::breaking::baseline::load(&contracts, against, &run.dialect) {
            Ok(old) => {
                let unreadable = files_with_errors(&old).len();
                (codegen::breaking::compare(&old, &new, level), format!("`{against}`"), unreadable)
            }
            Err(e) => {
                run_error(&e, run.color);
                return ExitCode::from(2);
            }
        },
        None => (codegen::breaking::compare_previous(&new, level), "their previous versions".to_owned(), 0),
    };
    if run.format == Format::Json {
        print!("{}", codegen::report::json_lines_with_related(&report.diagnostics));
    } else if !report.diagnostics.is_empty() {
        let text = codegen::report::human(&report.diagnostics, &report.sources, codegen::report::HUMAN_CAP);
        eprint!("{}", paint(&text, run.color));
    }
    let counts = codegen::report::counts(&report.diagnostics);
    let mut summary = format!(
        "compared {} contract(s) with {baseline} at the {} level: {} error(s), {} warning(s), {} note(s)",
        report.pairs,
        level.as_str(),
        counts.errors,
        counts.warnings,
        counts.notes
    );
    if unreadable > 0 {
        summary.push_str(&format!(
            "; {unreadable} baseline file(s) have errors and were left out (their nodes count as new)"
        ));
    }
    if run.format == Format::Json {
        eprintln!("{summary}")
    } else {
        println!("{summary}")
    }
    if counts.errors > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

fn explain(code: &str, color: bool) -> ExitCode {
    match codegen::explain::parse_code(code) {
        Some(code) => {
            print!("{}", codegen::explain::explain(code));
            ExitCode::SUCCESS
        }
        None => {
            run_error(&format!("`{code}` is not a diagnostic code; `cargo run -p codegen -- codes` lists them"), color);
            ExitCode::from(2)
        }
    }
}

fn generate_package(
    contracts: &Path,
    out: &Path,
    options: codegen::package::PackageOptions,
    force: bool,
    run: &Run,
) -> ExitCode {
    use codegen::package::{Freshness, freshness};
    let started = Instant::now();
    let mut timings = Timings::new();
    let ms = |started: Instant| started.elapsed().as_secs_f64() * 1000.0;
    let freshness = freshness(contracts, out, &options, &run.dialect, &run.templates, force);
    timings.stage("stamp check");
    let stamp = match freshness {
        Freshness::UpToDate => {
            println!(
                "package `{}` in {} is up to date: no contract, option or generated file changed since the last run ({:.1} ms; --force regenerates)",
                options.crate_name,
                out.display(),
                ms(started)
            );
            timings.report();
            return ExitCode::SUCCESS;
        }
        Freshness::Stale(stamp) => stamp,
    };
    let Some((loaded, output)) = run.generate_valid(contracts) else { return ExitCode::FAILURE };
    timings.stage("read, validate, render");
    // A run with errors saves no stamp: the next run must report them again, never skip.
    let invalid = files_with_errors(&loaded);
    let stamp = if invalid.is_empty() { stamp } else { None };
    match codegen::package::write_stamped_package(&output, out, &options, stamp, &loaded.files_read) {
        Ok(written) if !invalid.is_empty() => {
            let errors = loaded.diagnostics.iter().filter(|d| d.is_error()).count();
            let line = format!(
                "error: {errors} error(s) in {} file(s), left out of package `{}` in {}: {}; the package holds the {} valid node(s) ({} file(s) written, {} unchanged)",
                invalid.len(),
                options.crate_name,
                out.display(),
                invalid.join(", "),
                loaded.nodes.len(),
                written.written.len(),
                written.unchanged,
            );
            eprintln!("{}", paint(&line, run.color));
            ExitCode::FAILURE
        }
        Ok(written) => {
            timings.stage("write");
            println!(
                "generated package `{}` in {}: {} node(s), {} file(s) written, {} unchanged, {} scaffold(s) created, {} other file(s) skipped in {:.1} ms",
                options.crate_name,
                out.display(),
                loaded.nodes.len(),
                written.written.len(),
                written.unchanged,
                written.scaffolds_created.len(),
                loaded.skipped.len(),
                ms(started)
            );
            // The process ends here: returning the models' and files' memory piece by piece
            // would only delay the exit.
            std::mem::forget((loaded, output));
            timings.report();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "{}",
                paint(&format!("error[CG0017]: cannot write the package to {}: {e}", out.display()), run.color)
            );
            ExitCode::FAILURE
        }
    }
}

/// With `CODEGEN_TIMINGS` set in the environment, `generate` prints one line on stderr with the
/// time of each stage and the process's peak memory, for the corpus benchmark and profiling.
struct Timings {
    on: bool,
    last: Instant,
    stages: Vec<(&'static str, f64)>,
}

impl Timings {
    fn new() -> Self {
        Self { on: std::env::var_os("CODEGEN_TIMINGS").is_some(), last: Instant::now(), stages: Vec::new() }
    }

    /// Ends the stage called `name`.
    fn stage(&mut self, name: &'static str) {
        if self.on {
            let now = Instant::now();
            self.stages.push((name, (now - self.last).as_secs_f64() * 1000.0));
            self.last = now;
        }
    }

    fn report(&self) {
        if !self.on {
            return;
        }
        let stages: Vec<String> = self.stages.iter().map(|(name, ms)| format!("{name} {ms:.2} ms")).collect();
        // Linux: the resident set's high-water mark. Elsewhere it is left out.
        let peak = std::fs::read_to_string("/proc/self/status").ok().and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        });
        let peak = peak.map_or_else(|| "n/a".to_owned(), |kb| format!("{kb} KB"));
        eprintln!("timings: {}; peak memory {peak}", stages.join(", "));
    }
}

fn new(root: &Path, name: &str, run: &Run) -> ExitCode {
    let contracts = root.join("contracts");
    match codegen::new_node::create_with(&contracts, name, &run.templates) {
        Ok(path) => println!("created {}", path.display()),
        Err(e) => {
            eprintln!("{}", paint(&format!("error[CG0007]: {e}"), run.color));
            return ExitCode::FAILURE;
        }
    }
    regenerate(root, run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn color_is_read_before_parsing() {
        let args = |list: &[&str]| list.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        assert_eq!(color_from_args(&args(&["codegen", "--color", "never", "check"])), ColorChoice::Never);
        assert_eq!(color_from_args(&args(&["codegen", "check", "--color=always"])), ColorChoice::Always);
        assert_eq!(color_from_args(&args(&["codegen", "--color", "bogus"])), ColorChoice::Auto);
        assert_eq!(color_from_args(&args(&["codegen", "--", "--color=always"])), ColorChoice::Auto);
    }

    #[test]
    fn paint_colors_only_severity_labels() {
        let text = "error[CG0011]: bad\n --> a.yaml:1:2\n3 | error: in a snippet\nhelp: do this\nerrors: not a label\n";
        assert_eq!(paint(text, false), text);
        let painted = paint(text, true);
        assert!(painted.starts_with("\u{1b}["), "{painted:?}");
        assert!(painted.contains("error[CG0011]\u{1b}[0m: bad\n"), "{painted:?}");
        assert!(painted.contains("\n3 | error: in a snippet\n"), "{painted:?}");
        assert!(painted.contains("help\u{1b}[0m: do this\n"), "{painted:?}");
        assert!(painted.ends_with("\nerrors: not a label\n"), "{painted:?}");
    }
}
