//! Done-means 1 of issue 3: validating every file of the ONEX corpus never crashes and every
//! diagnostic is located (file, 1-based line and column inside that file, a hint). The CLI's
//! exit code over the corpus is checked in `codegen/tests/dialect_cli.rs`.
//!
//! The corpus is `../shared/corpus` next to the repository (override with `ONEX_CORPUS`);
//! without it the test fails, saying where it looked.

use std::path::PathBuf;

fn corpus() -> PathBuf {
    onex_tests::corpus::corpus()
}

#[test]
fn every_corpus_file_is_read_with_located_diagnostics_only() {
    let corpus = corpus();
    let options = codegen::dialect::Options { load_subcontracts: true, ..Default::default() };
    let loaded = codegen::load_with(&corpus, None, &options);
    assert!(loaded.sources.len() >= 20, "{} files under {}", loaded.sources.len(), corpus.display());
    for d in &loaded.diagnostics {
        let text = loaded.sources.get(&d.file).unwrap_or_else(|| panic!("diagnostic names an unread file: {d:?}"));
        let lines = text.split('\n').count() as u32;
        assert!(d.pos.line >= 1 && d.pos.line <= lines && d.pos.col >= 1, "not located inside the file: {d:?}");
        assert!(d.hint.is_some(), "no hint: {d:?}");
    }
    // Every file is either a node contract (valid or rejected with an error) or skipped with a note.
    let noted: std::collections::BTreeSet<&str> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.code == codegen::diagnostics::Code::NotANodeContract)
        .map(|d| d.file.as_str())
        .collect();
    assert_eq!(noted.len(), loaded.skipped.len());
    println!(
        "corpus: {} files: {} node contracts valid, {} skipped as other families, {} errors, {} warnings",
        loaded.sources.len(),
        loaded.nodes.len(),
        loaded.skipped.len(),
        loaded.diagnostics.iter().filter(|d| d.is_error()).count(),
        loaded
            .diagnostics
            .iter()
            .filter(|d| !d.is_error() && d.code != codegen::diagnostics::Code::NotANodeContract)
            .count()
    );
}
