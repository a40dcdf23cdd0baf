//! The rules of the breaking-change check: each one's code, default severity and the level at
//! which it breaks, in one table ([`RULES`]) that `codegen explain` and the README follow.
//!
//! Two levels, as buf's categories: **wire** — what a consumer reading or writing the JSON sees
//! (a field it reads is gone, a value it sends is refused); **source** — what a Rust caller of
//! the generated code sees, which includes every wire break plus changes the JSON does not
//! show (a field's Rust type turning from `Option<T>` into `T`, a dependency field gone from
//! the node's `Dependencies`). `--level wire` reports wire breaks only; `--level source` (the
//! default) both. Notes (compatible additions) are reported at either level.

use crate::diagnostics::{Code, Severity};

/// Timeouts: a new timeout at most this fraction of the old one is an error (calls that
/// used to finish now time out); at least its inverse (twice the old one) a warning (callers
/// whose own deadline is shorter give up before the node does). Smaller changes are tuning.
pub const TIMEOUT_SHRINK_RATIO: f64 = 0.5;

/// The level at which a finding breaks consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// A consumer of the JSON on the event bus breaks.
    Wire,
    /// A Rust caller of the generated code breaks (every wire break is one too).
    Source,
}

impl Level {
    /// `wire` or `source`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Wire => "wire",
            Level::Source => "source",
        }
    }

    /// `wire` or `source`, as the command line writes them.
    pub fn parse(text: &str) -> Option<Level> {
        match text {
            "wire" => Some(Level::Wire),
            "source" => Some(Level::Source),
            _ => None,
        }
    }

    /// Whether a run at this level reports a finding that breaks at `finding`.
    pub fn includes(self, finding: Level) -> bool {
        match self {
            Level::Source => true,
            Level::Wire => finding == Level::Wire,
        }
    }
}

/// One rule: its code, default severity, and when it is a wire or a source break.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// The diagnostic code.
    pub code: Code,
    /// Its severity inside one major version.
    pub severity: Severity,
    /// When it is a wire break and when only a source break.
    pub level: &'static str,
}

/// Every rule of the check.
pub const RULES: [Rule; 19] = [
    Rule { code: Code::FieldRemoved, severity: Severity::Error, level: "wire" },
    Rule { code: Code::TypeChanged, severity: Severity::Error, level: "wire" },
    Rule {
        code: Code::EnumNarrowed,
        severity: Severity::Error,
        level: "wire when the enum is read from an input; source when only outputs carry it",
    },
    Rule {
        code: Code::MadeRequired,
        severity: Severity::Error,
        level: "wire on an input without a default; source otherwise (the Rust field loses its Option)",
    },
    Rule {
        code: Code::MadeOptional,
        severity: Severity::Error,
        level: "wire on an output (consumers may now miss it); source otherwise (the Rust field gains an Option)",
    },
    Rule {
        code: Code::NewRequiredField,
        severity: Severity::Error,
        level: "wire on an input; source on an output (the generated `new` takes it)",
    },
    Rule { code: Code::OperationRemoved, severity: Severity::Error, level: "wire" },
    Rule { code: Code::RoutingNarrowed, severity: Severity::Error, level: "wire" },
    Rule {
        code: Code::TimeoutChanged,
        severity: Severity::Error,
        level: "wire (error when halved or worse, warning when doubled or more)",
    },
    Rule { code: Code::TopicRemoved, severity: Severity::Error, level: "wire" },
    Rule { code: Code::StateRemoved, severity: Severity::Error, level: "wire" },
    Rule { code: Code::TriggerRemoved, severity: Severity::Error, level: "wire" },
    Rule { code: Code::NodeKindChanged, severity: Severity::Error, level: "wire" },
    Rule { code: Code::DependencyRemoved, severity: Severity::Error, level: "source" },
    Rule { code: Code::DependencyRequired, severity: Severity::Error, level: "source" },
    Rule { code: Code::NodeRemoved, severity: Severity::Error, level: "wire (a note when a newer version remains)" },
    Rule { code: Code::VersionNotBumped, severity: Severity::Warning, level: "version rule" },
    Rule { code: Code::MajorVersionBreak, severity: Severity::Note, level: "version rule" },
    Rule { code: Code::SafeAddition, severity: Severity::Note, level: "compatible" },
];

/// The default severity of the rule of `code` (an error for codes of no rule).
pub fn severity(code: Code) -> Severity {
    RULES.iter().find(|r| r.code == code).map_or(Severity::Error, |r| r.severity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_has_its_own_code_in_the_breaking_range() {
        let mut codes: Vec<u32> = RULES.iter().map(|r| r.code.number()).collect();
        codes.dedup();
        assert_eq!(codes.len(), RULES.len());
        assert!(codes.iter().all(|n| (60..80).contains(n)), "{codes:?}");
    }

    #[test]
    fn a_wire_run_leaves_out_source_breaks_and_a_source_run_keeps_both() {
        assert!(Level::Wire.includes(Level::Wire));
        assert!(!Level::Wire.includes(Level::Source));
        assert!(Level::Source.includes(Level::Wire) && Level::Source.includes(Level::Source));
    }
}
