//! Benchmark: validate every file of the ONEX corpus (both dialects, 86 files) the way
//! `codegen validate ../shared/corpus` does: discover, read, parse, detect, normalize,
//! validate and build the models. Run with `cargo bench -p codegen --bench validate_corpus`;
//! the target is under 300 ms per run in release.
//!
//! The corpus is `../shared/corpus` next to the repository (override with `ONEX_CORPUS`); when
//! it is absent the checked-in fixtures under `tests/fixtures/dialects` stand in.

use std::path::PathBuf;
use std::time::{Duration, Instant};

fn corpus() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    if let Some(dir) = std::env::var_os("ONEX_CORPUS") {
        return PathBuf::from(dir);
    }
    let shared = root.join("../shared/corpus");
    if shared.is_dir() { shared } else { root.join("tests/fixtures/dialects") }
}

fn main() {
    let dir = corpus();
    let options = codegen::dialect::Options { load_subcontracts: true, ..Default::default() };
    let run = || {
        let started = Instant::now();
        let loaded = codegen::load_with(&dir, None, &options);
        (started.elapsed(), loaded)
    };
    let (_, first) = run();
    let errors = first.diagnostics.iter().filter(|d| d.is_error()).count();
    let mut times: Vec<Duration> = (0..20).map(|_| run().0).collect();
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "validate_corpus: {} files ({} node contracts valid, {} skipped, {errors} errors) from {}",
        first.files_read.len(),
        first.nodes.len(),
        first.skipped.len(),
        dir.display()
    );
    println!(
        "validate_corpus: min {:.1} ms, median {:.1} ms, max {:.1} ms over {} runs (target < 300 ms)",
        ms(times[0]),
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1]),
        times.len()
    );
}
