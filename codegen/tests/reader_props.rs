//! Property test: real contracts (ours and the corpus fixtures of the other dialects), mutated
//! — truncated, lines deleted, values swapped for other types, nested past the depth limit,
//! huge strings, invalid UTF-8 — go through the whole front end without a panic, and every
//! diagnostic points at a real position of the file it names.
//!
//! The case count is modest so it runs in CI with `cargo test --workspace`; the fuzz target
//! (`fuzz/`) explores further.

use std::path::{Path, PathBuf};

use codegen::dialect::{Options, TypeMap};
use codegen::front_end::FrontEnd;
use codegen::read::SourceFile;
use proptest::prelude::*;

fn seeds() -> &'static [(String, String)] {
    static SEEDS: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();
    SEEDS.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut files: Vec<PathBuf> = Vec::new();
        for dir in ["contracts/nodes", "tests/fixtures/dialects"] {
            for entry in walkdir::WalkDir::new(root.join(dir)).sort_by_file_name() {
                let entry = entry.unwrap();
                if entry.path().extension().is_some_and(|e| e == "yaml") {
                    files.push(entry.into_path());
                }
            }
        }
        assert!(files.len() >= 20, "seed files missing: {}", files.len());
        files
            .into_iter()
            .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap()))
            .collect()
    })
}

/// Runs `text` through every stage and checks each diagnostic's location.
fn check(text: &str) -> Result<(), TestCaseError> {
    let source = SourceFile::in_memory("mutated/contract.yaml", text);
    let mut diags = Vec::new();
    let mut type_map = TypeMap::new();
    type_map.insert("ModelOnexEvent", "onex_runtime::event::OnexEvent").unwrap();
    let options = Options { type_map, load_subcontracts: false };
    let _ = FrontEnd::new(&options).file(source, &mut diags);
    let lines = text.split('\n').count() as u32;
    for d in &diags {
        prop_assert_eq!(d.file.as_str(), "mutated/contract.yaml", "{:?}", d);
        prop_assert!(d.pos.line >= 1 && d.pos.col >= 1, "unlocated: {:?}", d);
        prop_assert!(d.pos.line <= lines + 1, "line {} past the end ({} lines): {:?}", d.pos.line, lines, d);
        prop_assert!(d.hint.is_some(), "no hint: {:?}", d);
    }
    Ok(())
}

fn char_floor(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn replace_line(text: &str, line: usize, f: impl Fn(&str) -> String) -> String {
    let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    let i = line % lines.len();
    lines[i] = f(&lines[i]);
    lines.join("\n")
}

const VALUES: [&str; 10] =
    ["[]", "{}", "null", "42", "-1.5e300", "true", "\"str\"", "[a, {b: c}]", "~", "'#/definitions/Nowhere'"];

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn truncated(file in any::<prop::sample::Index>(), at in any::<prop::sample::Index>()) {
        let (_, text) = file.get(seeds());
        let cut = char_floor(text, at.index(text.len() + 1));
        check(&text[..cut])?;
    }

    #[test]
    fn lines_deleted(file in any::<prop::sample::Index>(), start in any::<usize>(), count in 1usize..12) {
        let (_, text) = file.get(seeds());
        let lines: Vec<&str> = text.split('\n').collect();
        let start = start % lines.len();
        let kept: Vec<&str> = lines.iter().enumerate().filter(|(i, _)| *i < start || *i >= start + count).map(|(_, l)| *l).collect();
        check(&kept.join("\n"))?;
    }

    #[test]
    fn values_swapped(file in any::<prop::sample::Index>(), lines in prop::collection::vec((any::<usize>(), 0usize..VALUES.len()), 1..6)) {
        let (_, text) = file.get(seeds());
        let mut text = text.clone();
        for (line, value) in lines {
            text = replace_line(&text, line, |l| match l.split_once(": ") {
                Some((key, _)) => format!("{key}: {}", VALUES[value]),
                None => l.to_owned(),
            });
        }
        check(&text)?;
    }

    #[test]
    fn deep_nesting(file in any::<prop::sample::Index>(), line in any::<usize>(), depth in 1usize..300, flow in any::<bool>()) {
        let (_, text) = file.get(seeds());
        let nested = if flow {
            format!("deep: {}{}", "[".repeat(depth), "]".repeat(depth))
        } else {
            let mut block = String::from("deep:");
            for i in 0..depth.min(120) {
                block.push('\n');
                block.push_str(&" ".repeat(i + 1));
                block.push_str("k:");
            }
            block
        };
        check(&replace_line(text, line, |l| if l.starts_with(' ') { l.to_owned() } else { nested.clone() }))?;
    }

    #[test]
    fn huge_strings(file in any::<prop::sample::Index>(), line in any::<usize>(), len in 1_000usize..200_000, as_key in any::<bool>()) {
        let (_, text) = file.get(seeds());
        let big = "x".repeat(len);
        let replaced = replace_line(text, line, |l| match l.split_once(": ") {
            Some((key, _)) if !as_key => format!("{key}: \"{big}\""),
            Some((key, value)) => format!("{}{big}: {value}", &key[..key.len() - key.trim_start().len()]),
            None => l.to_owned(),
        });
        check(&replaced)?;
    }

    #[test]
    fn invalid_utf8_and_random_bytes(file in any::<prop::sample::Index>(), edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let (name, text) = file.get(seeds());
        let mut bytes = text.clone().into_bytes();
        for (at, byte) in edits {
            let i = at.index(bytes.len() + 1);
            bytes.insert(i, byte | 0x80);
        }
        let dir = std::env::temp_dir().join(format!("codegen-props-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, &bytes).unwrap();
        match codegen::read::read_source(&dir, &path) {
            Ok(source) => check(&source.text)?,
            Err(d) => prop_assert!(d.pos.line >= 1 && d.pos.col >= 1 && d.hint.is_some() || d.code == codegen::diagnostics::Code::Io, "{:?}", d),
        }
        std::fs::remove_file(&path).unwrap();
        check(&String::from_utf8_lossy(&bytes))?;
    }
}

#[test]
fn seeds_are_read_cleanly() {
    // The unmutated seeds give no error, so the properties above start from valid input. (The
    // folder checks of our own dialect depend on where a file lies, which memory input fakes.)
    use codegen::diagnostics::Code;
    for (name, text) in seeds() {
        let source = SourceFile::in_memory("seed/contract.yaml", text);
        let mut diags = Vec::new();
        let _ = FrontEnd::new(&Options::default()).file(source, &mut diags);
        let errors: Vec<_> = diags
            .iter()
            .filter(|d| d.is_error() && !matches!(d.code, Code::FolderNameMismatch | Code::FolderVersionMismatch))
            .collect();
        assert!(errors.is_empty(), "{name}: {errors:?}");
    }
}
