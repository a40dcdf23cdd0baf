//! Helpers shared by the generator's integration tests (each test file uses a subset).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The workspace root (the codegen crate's parent).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The ONEX corpus: `ONEX_CORPUS`, else `../shared/corpus` next to the repository. A test over
/// the corpus fails when it is missing, saying where it looked (as `onex_tests::corpus` does
/// for the tests of `tests/`), rather than passing on a few fixtures.
pub fn corpus() -> PathBuf {
    let (dir, from) = match std::env::var_os("ONEX_CORPUS") {
        Some(dir) => (PathBuf::from(dir), "named by ONEX_CORPUS"),
        None => (workspace().join("../shared/corpus"), "`../shared/corpus` next to the repository"),
    };
    assert!(
        dir.is_dir(),
        "the ONEX corpus is missing: no folder at {} ({from}); put the corpus there or set ONEX_CORPUS to its \
         folder. The corpus tests check the generator against every contract of it and cannot pass without it",
        dir.display()
    );
    dir
}

/// A fresh directory under cargo's temporary dir for integration tests, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("codegen-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Asserts that `actual` equals the golden file at `expected_path`, showing a unified diff when
/// not. With `UPDATE_GOLDENS=1` set it rewrites the file instead (review the diff afterwards).
pub fn compare_golden(expected_path: &Path, actual: &str) {
    if std::env::var_os("UPDATE_GOLDENS").is_some() {
        std::fs::write(expected_path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(expected_path)
        .unwrap_or_else(|e| panic!("{}: {e}; run with UPDATE_GOLDENS=1 to create it", expected_path.display()))
        .replace("\r\n", "\n");
    if expected != actual {
        let diff = similar::TextDiff::from_lines(expected.as_str(), actual).unified_diff().to_string();
        panic!("{} differs from the output:\n{diff}", expected_path.display());
    }
}

/// The golden cases of `codegen/tests/<section>/`: every folder holding a `contract.yaml`, sorted.
pub fn golden_cases(section: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join(section);
    let mut cases: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("contract.yaml").is_file())
        .collect();
    cases.sort();
    cases
}

/// What a golden case of a behaviour section shows: every diagnostic but the unmapped-model
/// warnings the minimal contracts share (CG0023), each located and with a hint, then the
/// generated files whose names end with one of `emitted`.
pub fn render_golden_case(case: &Path, emitted: &[&str]) -> String {
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
        if emitted.iter().any(|e| path.ends_with(e)) {
            out.push_str(&format!("== {path}\n{text}"));
        }
    }
    out
}
