//! Golden diagnostics of `handler_routing`: one minimal contract per case under
//! `codegen/tests/routing/<case>/contract.yaml` and the exact output in `expected.txt` beside it:
//! every diagnostic but the unmapped-model warnings the minimal contracts share (CG0023), then
//! the generated `contract.rs` (timeouts) and `handler.rs` of an accepted contract.
//!
//! Set `UPDATE_GOLDENS=1` to rewrite the expected files after an intended change, then review
//! the diff.

use std::path::{Path, PathBuf};

mod common;
use common::compare_golden;

const SECTION: &str = "routing";
const EMITTED: &[&str] = &["contract.rs", "handler.rs"];

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join(SECTION);
    let mut cases: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("contract.yaml").is_file())
        .collect();
    cases.sort();
    cases
}

fn render_case(case: &Path) -> String {
    let (loaded, output) = codegen::generate_with(case, &codegen::dialect::Options::default());
    let shown: Vec<_> = loaded.diagnostics.iter().filter(|d| d.code.as_str() != "CG0023").collect();
    let mut out = format!("== diagnostics: {}\n", shown.len());
    for d in shown {
        assert!(d.pos.line >= 1 && d.pos.col >= 1, "{}: unlocated {d:?}", case.display());
        assert!(d.hint.is_some(), "{}: every diagnostic says what to do: {d:?}", case.display());
        out.push_str(&d.render(loaded.sources.get(&d.file).map(String::as_str)));
        out.push('\n');
    }
    for (path, text) in output.map(|o| o.generated).unwrap_or_default() {
        if EMITTED.iter().any(|e| path.ends_with(e)) {
            out.push_str(&format!("== {path}\n{text}"));
        }
    }
    out
}

#[test]
fn cases_match_their_goldens() {
    let cases = cases();
    assert!(cases.len() >= 5, "only {} cases", cases.len());
    for case in cases {
        compare_golden(&case.join("expected.txt"), &render_case(&case));
    }
}
