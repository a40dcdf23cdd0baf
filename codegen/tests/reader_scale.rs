//! Reading stays near-linear in the size of one contract (issue 24): a contract whose top-level
//! mapping has 200,000 keys validates, and for every worst shape of `benches/shapes` four times
//! the contract is far from sixteen times the work. Before, finding a duplicate key scanned the
//! mapping, `$ref`s and `required` scanned the definitions and properties, and boxing
//! recursive fields searched every type from every field: 200,000 keys ran past 20 s.
//!
//! Times are compared within one run (the smallest of three rounds of each size, interleaved),
//! so a loaded machine slows both sizes alike; sizes four times apart make linear work about 4
//! times and quadratic work about 16 times as long, and the bound of 8 between them leaves a
//! loaded machine twice its noise either way. The ceilings are generous for a debug build and
//! far below what the quadratic code took. `cargo bench -p codegen --bench scale` has the
//! figures at the size limit.

mod common;
#[path = "../benches/shapes/mod.rs"]
mod shapes;

use std::time::{Duration, Instant};

use common::Scratch;

/// Loads `text` as the only contract of a folder, like `codegen validate`; the time and the
/// number of errors.
fn load(scratch: &Scratch, text: &str) -> (Duration, usize, String) {
    let file = scratch.0.join(shapes::PATH);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, text).unwrap();
    let options = codegen::dialect::Options { load_subcontracts: true, ..Default::default() };
    let started = Instant::now();
    let loaded = codegen::load_with(&scratch.0.join("contracts"), None, &options);
    let elapsed = started.elapsed();
    let errors = loaded.diagnostics.iter().filter(|d| d.is_error()).count();
    let first = loaded.diagnostics.iter().find(|d| d.is_error()).map(|d| format!("{d:?}")).unwrap_or_default();
    (elapsed, errors, first)
}

/// Sizes compared are this many times apart.
const FACTOR: f64 = 4.0;
/// The time ratio above which the work is not near-linear: between `FACTOR` (linear) and
/// `FACTOR²` (quadratic).
const BOUND: f64 = 8.0;

/// The smallest of three interleaved rounds of each text.
fn best_of_three(scratch: &Scratch, small: &str, big: &str) -> (Duration, Duration) {
    let (mut s, mut b) = (Duration::MAX, Duration::MAX);
    for _ in 0..3 {
        let (t, errors, first) = load(scratch, small);
        assert_eq!(errors, 0, "{first}");
        s = s.min(t);
        let (t, errors, first) = load(scratch, big);
        assert_eq!(errors, 0, "{first}");
        b = b.min(t);
    }
    (s, b)
}

#[test]
fn a_contract_with_200000_top_level_keys_validates_and_four_times_the_keys_is_not_sixteen_times_the_work() {
    let scratch = Scratch::new("scale-keys");
    let (quarter, full) = (shapes::top_level_keys(50_000), shapes::top_level_keys(200_000));
    assert!(full.len() < codegen::read::MAX_FILE_BYTES, "{} bytes", full.len());
    let (t_quarter, t_full) = best_of_three(&scratch, &quarter, &full);
    let ratio = t_full.as_secs_f64() / t_quarter.as_secs_f64();
    println!("200,000 top-level keys ({} bytes): {t_full:?}; 50,000: {t_quarter:?}; ratio {ratio:.2}", full.len());
    assert!(t_full < Duration::from_secs(20), "200,000 keys took {t_full:?}");
    assert!(
        ratio < BOUND,
        "{FACTOR} times the keys multiplied the time by {ratio:.2} (linear is about {FACTOR}, quadratic {})",
        FACTOR * FACTOR
    );
}

#[test]
fn every_worst_shape_at_a_sixteenth_and_a_quarter_of_the_limit_scales_near_linearly() {
    let scratch = Scratch::new("scale-shapes");
    let limit = codegen::read::MAX_FILE_BYTES;
    let (sixteenth, quarter) = (shapes::all(limit / 16), shapes::all(limit / 4));
    let mut failures = Vec::new();
    for (small, big) in sixteenth.iter().zip(&quarter) {
        let (t_small, t_big) = best_of_three(&scratch, &small.text, &big.text);
        let ratio = t_big.as_secs_f64() / t_small.as_secs_f64().max(1e-6);
        println!(
            "{}: {} {} in {t_big:?}, {} in {t_small:?}: ratio {ratio:.2}",
            big.name, big.count, big.unit, small.count
        );
        // Below a few milliseconds the ratio is noise; the quadratic code took seconds here.
        if t_big > Duration::from_millis(50) && ratio >= BOUND || t_big > Duration::from_secs(20) {
            failures.push(format!("{}: {t_big:?}, ratio {ratio:.2}", big.name));
        }
    }
    assert!(failures.is_empty(), "not near-linear: {failures:?}");
}
