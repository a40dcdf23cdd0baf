//! Printing diagnostics for people and for tools.
//!
//! Human output renders each diagnostic with its source line and a caret, at most
//! [`HUMAN_CAP`] of them, then says how many more there are, so a run over a whole
//! repository stays readable while still reporting every problem in the count.
//! `--format json` prints every diagnostic as one JSON object per line with the keys
//! `code`, `severity`, `file`, `line`, `column`, `path`, `message`, `hint`; `breaking`, whose
//! findings always name the baseline too, adds `related` ([`json_lines_with_related`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::diagnostics::{Diagnostic, Severity};

/// How many diagnostics the human output shows before summarizing the rest.
pub const HUMAN_CAP: usize = 50;

/// The output format of `validate`/`generate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Rendered with snippets, for terminals.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

impl Format {
    /// `human` or `json`.
    pub fn parse(text: &str) -> Option<Format> {
        match text {
            "human" => Some(Format::Human),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

/// Counts by severity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Errors.
    pub errors: usize,
    /// Warnings.
    pub warnings: usize,
    /// Notes.
    pub notes: usize,
}

/// Counts `diagnostics` by severity.
pub fn counts(diagnostics: &[Diagnostic]) -> Counts {
    let mut c = Counts::default();
    for d in diagnostics {
        match d.severity {
            Severity::Error => c.errors += 1,
            Severity::Warning => c.warnings += 1,
            Severity::Note => c.notes += 1,
        }
    }
    c
}

/// Errors first, then warnings, then notes (each in file and position order), the first `cap`
/// rendered with their source lines, then a line counting the rest.
pub fn human(diagnostics: &[Diagnostic], sources: &BTreeMap<String, String>, cap: usize) -> String {
    let mut ordered: Vec<&Diagnostic> = diagnostics.iter().collect();
    ordered.sort_by_key(|d| match d.severity {
        Severity::Error => 0,
        Severity::Warning => 1,
        Severity::Note => 2,
    });
    let mut out = String::new();
    for d in ordered.iter().take(cap) {
        out.push_str(&d.render(sources.get(&d.file).map(String::as_str)));
        out.push('\n');
    }
    if ordered.len() > cap {
        let rest = counts(&ordered[cap..].iter().map(|d| (*d).clone()).collect::<Vec<_>>());
        let _ = writeln!(
            out,
            "... and {} more diagnostic(s) not shown ({} error(s), {} warning(s), {} note(s)); `--format json` lists them all",
            ordered.len() - cap,
            rest.errors,
            rest.warnings,
            rest.notes
        );
    }
    out
}

/// One JSON object per diagnostic, one per line.
pub fn json_lines(diagnostics: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diagnostics {
        out.push_str(&json(d).to_string());
        out.push('\n');
    }
    out
}

/// The JSON object of one diagnostic.
pub fn json(d: &Diagnostic) -> serde_json::Value {
    let severity = match d.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Note => "note",
    };
    serde_json::json!({
        "code": d.code.as_str(),
        "severity": severity,
        "file": d.file,
        "line": d.pos.line,
        "column": d.pos.col,
        "path": d.path,
        "message": d.message,
        "hint": d.hint,
    })
}

/// [`json_lines`] with one more key, `related`: the other locations of each diagnostic, as
/// objects with `file`, `line`, `column` and `message` (for `breaking`).
pub fn json_lines_with_related(diagnostics: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diagnostics {
        let mut value = json(d);
        let related: Vec<serde_json::Value> = d
            .related
            .iter()
            .map(|r| serde_json::json!({"file": r.file, "line": r.pos.line, "column": r.pos.col, "message": r.message}))
            .collect();
        if let Some(object) = value.as_object_mut() {
            object.insert("related".to_owned(), related.into());
        }
        out.push_str(&value.to_string());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostics::{Code, Pos};

    fn sample(n: usize) -> Vec<Diagnostic> {
        (0..n)
            .map(|i| {
                Diagnostic::error(Code::MissingKey, "c.yaml", Pos::new(1, 1), "a", format!("problem {i}"))
                    .with_hint("fix")
            })
            .collect()
    }

    #[test]
    fn human_output_is_capped_with_a_count() {
        let mut diags = sample(53);
        diags.push(Diagnostic::note(Code::NotANodeContract, "t.yaml", Pos::new(1, 1), "", "skipped"));
        let text = human(&diags, &BTreeMap::new(), HUMAN_CAP);
        assert_eq!(text.matches("error[CG0004]").count(), 50);
        assert!(
            text.contains("... and 4 more diagnostic(s) not shown (3 error(s), 0 warning(s), 1 note(s))"),
            "{text}"
        );
    }

    #[test]
    fn json_has_exactly_the_documented_keys() {
        let text = json_lines(&sample(2));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let value: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        let keys: Vec<&str> = value.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["code", "column", "file", "hint", "line", "message", "path", "severity"]);
        assert_eq!(value["code"], "CG0004");
        assert_eq!(value["line"], 1);
        assert_eq!(value["message"], "problem 1");
    }
}
