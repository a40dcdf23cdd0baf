//! Any bytes through the whole front end (YAML reader, dialect detection and normalization,
//! validation, model building): it must never panic, and every diagnostic must be located.
//!
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run reader -- -max_total_time=600` (from the repository root).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The reader refuses non-UTF-8 files before parsing; lossy conversion keeps the rest.
    let text = String::from_utf8_lossy(data);
    if text.len() > codegen::read::MAX_FILE_BYTES {
        return;
    }
    let source = codegen::read::SourceFile::in_memory("fuzz/contract.yaml", &text);
    let options = codegen::dialect::Options::default();
    let mut diags = Vec::new();
    let _ = codegen::front_end::FrontEnd::new(&options).file(source, &mut diags);
    for d in &diags {
        assert!(d.pos.line >= 1 && d.pos.col >= 1, "unlocated diagnostic: {d:?}");
        assert!(!d.file.is_empty(), "diagnostic without a file: {d:?}");
    }
});
