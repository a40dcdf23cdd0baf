//! `cargo bench -p codegen --bench scale`: the worst shapes of one contract at the size limit
//! (`shapes/mod.rs`: hundreds of thousands of keys, definitions, properties, enum values or
//! sequence items, one scalar of 4 MiB, nesting just under the depth limit), each read,
//! validated and modelled the way `codegen validate` does (`codegen::load_with` over a folder
//! holding the one file), then rendered (`codegen::emit::render`).
//!
//! Every stage must stay near-linear: each round runs the shape at half the limit and at the
//! limit, interleaved, and the table gives the median per-round ratio full / half, about 2 for
//! linear work and 4 for quadratic. The goal is under 1 s per shape at the limit (release); the
//! bench prints the figures and never asserts a time. `SCALE_BENCH_RUNS` sets the rounds
//! (default 5), `SCALE_BENCH_SHAPE` runs only the shapes whose name contains it.

mod shapes;

use std::path::Path;
use std::time::Instant;

/// One measurement of one contract: load (read, parse, normalize, validate, model) and render.
struct Sample {
    load: f64,
    render: f64,
}

fn measure(dir: &Path, text: &str, options: &codegen::dialect::Options) -> (Sample, String) {
    let file = dir.join(shapes::PATH);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, text).unwrap();
    let contracts = dir.join("contracts");
    let started = Instant::now();
    let loaded = codegen::load_with(&contracts, None, options);
    let load = started.elapsed().as_secs_f64() * 1000.0;
    let errors = loaded.diagnostics.iter().filter(|d| d.is_error()).count();
    let started = Instant::now();
    let rendered = if errors == 0 { codegen::emit::render("contracts", &loaded.nodes).ok() } else { None };
    let render = started.elapsed().as_secs_f64() * 1000.0;
    let outcome = match (&rendered, loaded.nodes.len()) {
        (Some(out), 1) => format!("valid, {} types, {} files", loaded.nodes[0].types.len(), out.generated.len()),
        _ => format!("{errors} errors, {} diagnostics", loaded.diagnostics.len()),
    };
    (Sample { load, render }, outcome)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::var("SCALE_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5).max(1);
    let only = std::env::var("SCALE_BENCH_SHAPE").ok();
    let options = codegen::dialect::Options { load_subcontracts: true, ..Default::default() };
    let dir = std::env::temp_dir().join(format!("codegen-scale-bench-{}", std::process::id()));
    let limit = codegen::read::MAX_FILE_BYTES;
    let full = shapes::all(limit);
    let half = shapes::all(limit / 2);
    println!("scale: {rounds} rounds per shape, half ({} bytes) and full ({limit} bytes) interleaved", limit / 2);
    println!(
        "| shape | at the limit | load median (ms) | render median (ms) | load full/half | render full/half | outcome |"
    );
    println!("|---|---:|---:|---:|---:|---:|---|");
    for (full, half) in full.iter().zip(&half) {
        if only.as_deref().is_some_and(|o| !full.name.contains(o)) {
            continue;
        }
        let (mut loads, mut renders, mut load_ratios, mut render_ratios) = (vec![], vec![], vec![], vec![]);
        let mut outcome = String::new();
        for _ in 0..rounds {
            let (small, _) = measure(&dir, &half.text, &options);
            let (big, said) = measure(&dir, &full.text, &options);
            load_ratios.push(big.load / small.load);
            render_ratios.push(big.render / small.render.max(1e-3));
            loads.push(big.load);
            renders.push(big.render);
            outcome = said;
        }
        println!(
            "| {} | {} {} ({} bytes) | {:.0} | {:.0} | {:.2} | {:.2} | {outcome} |",
            full.name,
            full.count,
            full.unit,
            full.text.len(),
            median(loads),
            median(renders),
            median(load_ratios),
            median(render_ratios),
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
