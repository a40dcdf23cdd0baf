//! Golden diagnostics of `handler_routing`: one minimal contract per case under
//! `codegen/tests/routing/<case>/contract.yaml` and the exact output in `expected.txt` beside it:
//! every diagnostic but the unmapped-model warnings the minimal contracts share (CG0023), then
//! the generated `contract.rs` (timeouts) and `handler.rs` of an accepted contract.
//!
//! Set `UPDATE_GOLDENS=1` to rewrite the expected files after an intended change, then review
//! the diff.

mod common;
use common::{compare_golden, golden_cases, render_golden_case};

const SECTION: &str = "routing";
const EMITTED: &[&str] = &["contract.rs", "handler.rs"];

#[test]
fn cases_match_their_goldens() {
    let cases = golden_cases(SECTION);
    assert!(cases.len() >= 5, "only {} cases", cases.len());
    for case in cases {
        compare_golden(&case.join("expected.txt"), &render_golden_case(&case, EMITTED));
    }
}
