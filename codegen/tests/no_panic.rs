//! The generator never panics on bad input: mutated versions of our real contracts go through
//! every stage (the production front end — read, dialect detection and normalization,
//! validation, model — then emit) and come out as output or diagnostics.

use std::path::{Path, PathBuf};

use codegen::diagnostics::Diagnostic;
use codegen::dialect::Options;
use codegen::front_end::{FileOutcome, FrontEnd};
use codegen::read::SourceFile;
use proptest::prelude::*;

fn contracts() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contracts");
    codegen::read::discover(&root)
        .unwrap()
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect()
}

/// What every stage made of one file.
struct Run {
    outcome: FileOutcome,
    /// The emitted files, or the emitter's errors (`None` when no model reached the emitter).
    emitted: Option<Result<codegen::Output, Vec<Diagnostic>>>,
    diagnostics: Vec<Diagnostic>,
}

/// Runs every stage on `text` as if it were the contract at `path` (whose folders the
/// layout checks of our dialect read).
fn pipeline(path: &Path, text: &str) -> Run {
    let source = SourceFile {
        abs_path: path.to_path_buf(),
        display: "contracts/nodes/x/v1_0_0/contract.yaml".into(),
        components: vec!["nodes".into(), "x".into(), "v1_0_0".into(), "contract.yaml".into()],
        text: text.to_owned(),
    };
    let options = Options::default();
    let mut diagnostics = Vec::new();
    let outcome = FrontEnd::new(&options).file(source, &mut diagnostics);
    let emitted = match &outcome {
        FileOutcome::Model { model, .. } => Some(codegen::emit::render("contracts", std::slice::from_ref(&**model))),
        _ => None,
    };
    Run { outcome, emitted, diagnostics }
}

#[test]
fn real_contracts_pass_every_stage() {
    let all = contracts();
    assert!(!all.is_empty(), "no contract found");
    for (path, text) in all {
        let run = pipeline(&path, &text);
        let errors: Vec<&Diagnostic> = run.diagnostics.iter().filter(|d| d.is_error()).collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
        assert!(matches!(run.outcome, FileOutcome::Model { .. }), "{}: no model ({:?})", path.display(), run.outcome);
        match run.emitted {
            Some(Ok(out)) => assert!(!out.generated.is_empty(), "{}: nothing emitted", path.display()),
            Some(Err(errors)) => panic!("{}: the emitter failed: {errors:#?}", path.display()),
            None => unreachable!("a model always reaches the emitter"),
        }
    }
}

fn mutation() -> impl Strategy<Value = (usize, Vec<(usize, u8)>, Vec<usize>)> {
    let replacements =
        prop::collection::vec((any::<usize>(), prop::sample::select(b" :-[]{}\"'#\n\tax1.".to_vec())), 0..6);
    let deletions = prop::collection::vec(any::<usize>(), 0..4);
    (any::<usize>(), replacements, deletions)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn mutated_contracts_never_panic((which, replacements, deletions) in mutation()) {
        let all = contracts();
        let (path, text) = &all[which % all.len()];
        let mut bytes = text.clone().into_bytes();
        for (at, byte) in replacements {
            let at = at % bytes.len();
            bytes[at] = byte;
        }
        let mut lines: Vec<String> = String::from_utf8_lossy(&bytes).lines().map(str::to_owned).collect();
        for at in deletions {
            if !lines.is_empty() {
                let at = at % lines.len();
                lines.remove(at);
            }
        }
        let _ = pipeline(path, &lines.join("\n"));
    }
}
