//! The generator never panics on bad input: mutated versions of our real contracts go through
//! every stage (read, validate, model, emit) and come out as output or diagnostics.

use std::path::{Path, PathBuf};

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

/// Runs every stage on `text` as if it were the contract at `path`.
fn pipeline(path: &Path, text: &str) -> usize {
    let source = SourceFile {
        abs_path: path.to_path_buf(),
        display: "contracts/nodes/x/v1_0_0/contract.yaml".into(),
        components: vec!["nodes".into(), "x".into(), "v1_0_0".into(), "contract.yaml".into()],
        text: text.to_owned(),
    };
    let mut diags = Vec::new();
    let Some(tree) = codegen::read::parse(&source.display, text, &mut diags) else { return diags.len() };
    let Some(contract) = codegen::validate::validate(source, &tree, &mut diags) else { return diags.len() };
    let Some(node) = codegen::model::build(contract, &mut diags) else { return diags.len() };
    match codegen::emit::render("contracts", std::slice::from_ref(&node)) {
        Ok(out) => out.generated.len(),
        Err(errors) => errors.len(),
    }
}

#[test]
fn real_contracts_pass_every_stage() {
    for (path, text) in contracts() {
        assert!(pipeline(&path, &text) > 0);
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
