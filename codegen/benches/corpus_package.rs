//! `cargo bench -p codegen --bench corpus_package`: a package from every node contract of the
//! ONEX corpus, as a user runs it and stage by stage. Prints a table and writes
//! `target/bench/codegen_corpus.json`; never asserts a time.
//!
//! The command line (`codegen generate`, the release binary, run as a child process so its
//! start-up counts):
//!
//! - full: a package into a fresh folder (every file and scaffold written);
//! - forced: `--force` over an up-to-date package (everything read and rendered, nothing
//!   written: what a re-run cost before the stamp);
//! - no change: a plain re-run, which the stamp turns into a skip;
//! - validate: `codegen validate` over the corpus.
//!
//! Wall time is what a user waits, and moves with the machine's load; CPU time (user + system,
//! from `getrusage` of the children) moves much less. Peak memory is the child's resident
//! high-water mark, which it prints with `CODEGEN_TIMINGS=1` (Linux; `validate` does not
//! print it). In-process, without start-up: the same stages as library calls.
//!
//! The corpus is `../shared/corpus` next to the repository (override with `ONEX_CORPUS`); when
//! it is absent the checked-in fixtures under `tests/fixtures/dialects` stand in.
//! `CORPUS_BENCH_RUNS` sets the runs per figure (default 15).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn corpus() -> PathBuf {
    if let Some(dir) = std::env::var_os("ONEX_CORPUS") {
        return PathBuf::from(dir);
    }
    let shared = workspace().join("../shared/corpus");
    if shared.is_dir() { shared } else { workspace().join("tests/fixtures/dialects") }
}

/// Median, min and max of samples in milliseconds.
#[derive(Debug, Clone, Copy)]
struct Summary {
    median: f64,
    min: f64,
    max: f64,
}

fn summary(mut samples: Vec<f64>) -> Summary {
    samples.sort_by(f64::total_cmp);
    Summary { median: samples[samples.len() / 2], min: samples[0], max: samples[samples.len() - 1] }
}

/// User plus system CPU time of every child process waited for so far, in milliseconds.
fn children_cpu_ms() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1000.0 + t.tv_usec as f64 / 1000.0;
    ms(usage.ru_utime) + ms(usage.ru_stime)
}

/// One run of the CLI: wall time and CPU time (ms), stdout, the child's peak memory (KB) when
/// it reports it.
struct CliRun {
    ms: f64,
    cpu_ms: f64,
    stdout: String,
    peak_kb: Option<u64>,
}

fn cli(args: &[&str]) -> CliRun {
    let cpu_before = children_cpu_ms();
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_codegen"))
        .args(args)
        .env("CODEGEN_TIMINGS", "1")
        .output()
        .expect("run the codegen binary");
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let cpu_ms = children_cpu_ms() - cpu_before;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "codegen {args:?} failed:\n{stdout}{stderr}");
    let peak_kb = stderr
        .lines()
        .find_map(|l| l.strip_prefix("timings: "))
        .and_then(|l| l.split("peak memory ").nth(1))
        .and_then(|kb| kb.trim_end_matches(" KB").parse().ok());
    CliRun { ms, cpu_ms, stdout, peak_kb }
}

/// What `runs` runs of one command line measured.
struct CliFigure {
    wall: Summary,
    cpu: Summary,
    /// The largest peak memory reported.
    peak_kb: Option<u64>,
    /// The last run's stdout.
    stdout: String,
}

fn cli_figure(runs: usize, mut f: impl FnMut() -> CliRun) -> CliFigure {
    let (mut wall, mut cpu) = (Vec::new(), Vec::new());
    let mut peak_kb = None;
    let mut stdout = String::new();
    for _ in 0..runs {
        let run = f();
        wall.push(run.ms);
        cpu.push(run.cpu_ms);
        peak_kb = peak_kb.max(run.peak_kb);
        stdout = run.stdout;
    }
    CliFigure { wall: summary(wall), cpu: summary(cpu), peak_kb, stdout }
}

fn args(owned: &[String]) -> Vec<&str> {
    owned.iter().map(String::as_str).collect()
}

fn time<T>(f: impl FnOnce() -> T) -> (f64, T) {
    let started = Instant::now();
    let value = f();
    (started.elapsed().as_secs_f64() * 1000.0, value)
}

fn main() {
    let corpus = corpus();
    let runs: usize = std::env::var("CORPUS_BENCH_RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(15).max(1);
    let scratch = workspace().join("target/codegen-corpus-bench");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let corpus_arg = corpus.to_str().unwrap();
    let runtime = workspace().join("runtime");
    let runtime_arg = runtime.to_str().unwrap();
    let generate_into = |dir: &Path| {
        let dir = dir.to_str().unwrap().to_owned();
        ["generate", "--contracts", corpus_arg, "--out", &dir, "--crate", "onex-corpus", "--runtime-path", runtime_arg]
            .map(str::to_owned)
    };

    // The command line. Each full run writes a folder never used before: creating files right
    // after deleting as many (ext4 mounted with `discard`) measures the file system, not us.
    let mut fresh = 0;
    let mut next_fresh = || {
        fresh += 1;
        scratch.join(format!("fresh-{fresh}"))
    };
    let full = cli_figure(runs, || cli(&args(&generate_into(&next_fresh()))));
    assert!(full.stdout.contains("generated package"), "{}", full.stdout);
    let package = scratch.join(format!("fresh-{runs}"));
    let generate = generate_into(&package);
    let generate = args(&generate);
    let forced_args = [&generate[..], &["--force"]].concat();
    let forced = cli_figure(runs, || cli(&forced_args));
    assert!(forced.stdout.contains(" 0 file(s) written"), "{}", forced.stdout);
    let no_change = cli_figure(runs, || cli(&generate));
    assert!(no_change.stdout.contains("is up to date"), "the stamp did not skip: {}", no_change.stdout);
    let validate = cli_figure(runs, || cli(&["validate", corpus_arg]));

    // In-process stages, as the CLI runs them (its options: subcontracts followed).
    let options = codegen::dialect::Options { load_subcontracts: true, ..Default::default() };
    let package_options = codegen::package::PackageOptions {
        crate_name: "onex-corpus".into(),
        runtime: codegen::package::RuntimeSource::Path(workspace().join("runtime")),
        standalone: true,
    };
    let templates = codegen::templates::Templates::builtin();
    let base = corpus.file_name().unwrap().to_string_lossy().into_owned();
    let (mut load, mut render, mut write, mut check) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut nodes = 0;
    for _ in 0..runs {
        let (ms, loaded) = time(|| codegen::load_with(&corpus, None, &options));
        load.push(ms);
        nodes = loaded.nodes.len();
        assert!(!loaded.has_errors(), "{}", loaded.render_diagnostics());
        let (ms, output) = time(|| codegen::emit::render(&base, &loaded.nodes).expect("the corpus renders"));
        render.push(ms);
        let in_process = next_fresh();
        let (ms, ()) = time(|| {
            let stamp = match codegen::package::freshness(
                &corpus,
                &in_process,
                &package_options,
                &options,
                &templates,
                false,
            ) {
                codegen::package::Freshness::Stale(stamp) => stamp,
                codegen::package::Freshness::UpToDate => unreachable!("a fresh folder has no stamp"),
            };
            codegen::package::write_stamped_package(&output, &in_process, &package_options, stamp, &loaded.files_read)
                .unwrap();
        });
        write.push(ms);
        let (ms, fresh) =
            time(|| codegen::package::freshness(&corpus, &in_process, &package_options, &options, &templates, false));
        assert!(matches!(fresh, codegen::package::Freshness::UpToDate));
        check.push(ms);
    }
    let validated = validate.stdout.lines().last().unwrap_or_default().to_owned();

    let cli_rows = [
        ("codegen generate, fresh folder (full)", full),
        ("codegen generate --force, nothing changed", forced),
        ("codegen generate, nothing changed (stamp)", no_change),
        ("codegen validate", validate),
    ];
    let stage_rows = [
        ("read + validate + model (load_with)", summary(load)),
        ("render (emit::render)", summary(render)),
        ("write package + stamp, fresh folder", summary(write)),
        ("stamp check, nothing changed", summary(check)),
    ];
    println!("corpus_package: {nodes} node contracts from {}; {validated}", corpus.display());
    println!(
        "{:<46} {:>9} {:>9} {:>9} {:>9} {:>10}",
        "command line (child process), wall", "median", "min", "max", "CPU med", "peak mem"
    );
    let kb = |peak: Option<u64>| peak.map_or_else(|| "n/a".to_owned(), |kb| format!("{:.1} MB", kb as f64 / 1024.0));
    for (name, f) in &cli_rows {
        let (w, c) = (f.wall, f.cpu);
        println!(
            "{name:<46} {:>6.1} ms {:>6.1} ms {:>6.1} ms {:>6.1} ms {:>10}",
            w.median,
            w.min,
            w.max,
            c.median,
            kb(f.peak_kb)
        );
    }
    println!("{:<46} {:>9} {:>9} {:>9}", "in process", "median", "min", "max");
    for (name, s) in &stage_rows {
        println!("{name:<46} {:>6.1} ms {:>6.1} ms {:>6.1} ms", s.median, s.min, s.max);
    }
    println!("({runs} runs each)");

    let figure = |s: &Summary| serde_json::json!({"median_ms": s.median, "min_ms": s.min, "max_ms": s.max});
    let json = serde_json::json!({
        "bench": "codegen_corpus",
        "corpus": corpus.display().to_string(),
        "node_contracts": nodes,
        "runs": runs,
        "cli": cli_rows.iter().map(|(name, f)| {
            let mut row = figure(&f.wall);
            row["name"] = (*name).into();
            row["cpu"] = figure(&f.cpu);
            row["peak_kb"] = serde_json::json!(f.peak_kb);
            row
        }).collect::<Vec<_>>(),
        "in_process": stage_rows.iter().map(|(name, s)| {
            let mut row = figure(s);
            row["name"] = (*name).into();
            row
        }).collect::<Vec<_>>(),
    });
    let out = workspace().join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let path = out.join("codegen_corpus.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    println!("wrote {}", path.display());
    let _ = std::fs::remove_dir_all(&scratch);
}
