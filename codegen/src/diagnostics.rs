//! Located diagnostics: every problem the generator finds in a contract, with a stable code,
//! the file, a 1-based line and column, the YAML path, what is wrong and how to fix it.
//!
//! The table of codes lives here and only here ([`Code`]), so the codes stay stable.

use std::fmt::Write as _;

/// Whether a diagnostic stops generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Generation fails (exit code 1).
    Error,
    /// Reported, generation continues.
    Warning,
    /// Information (e.g. a file that is skipped because it is not a node contract).
    Note,
}

/// The stable diagnostic codes. Never renumber; add new ones at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Code {
    /// CG0001: the file is not valid YAML.
    YamlSyntax,
    /// CG0002: the file is too large or nested too deeply to be a contract.
    YamlLimit,
    /// CG0003: a mapping has the same key twice (the last value wins).
    DuplicateKey,
    /// CG0004: a required key is missing.
    MissingKey,
    /// CG0005: a value has the wrong YAML type.
    WrongType,
    /// CG0006: `node_type` is not one of the four kinds.
    UnknownNodeType,
    /// CG0007: a name breaks the naming convention.
    NamingConvention,
    /// CG0008: the version folder does not match `contract_version`.
    FolderVersionMismatch,
    /// CG0009: the node folder does not match `node_name`.
    FolderNameMismatch,
    /// CG0010: `node_type` does not match the kind suffix of `node_name`.
    KindMismatch,
    /// CG0011: a `$ref` (or `input_model`/`output_model`) points to nothing.
    UnresolvedRef,
    /// CG0012: two types (or fields, or variants) get the same Rust name.
    NameCollision,
    /// CG0013: an EFFECT contract has no `io_operations`.
    MissingIoOperations,
    /// CG0014: a schema uses something the generator cannot turn into Rust.
    UnsupportedSchema,
    /// CG0015: an `io_operations` entry names an operation the input does not have.
    UnknownOperation,
    /// CG0016: a name is declared twice in a list (dependencies, operations, enum values).
    DuplicateName,
    /// CG0017: a file cannot be read.
    Io,
    /// CG0018: the input model has no usable `operation_type`.
    InvalidOperationType,
    /// CG0019: a `rust_type` is not a valid Rust type.
    InvalidRustType,
    /// CG0020: a `default` does not fit its schema.
    InvalidDefault,
    /// CG0021: no contract was found.
    NoContracts,
    /// CG0022: the file is not a node contract and is skipped.
    NotANodeContract,
    /// CG0023: an external type has no Rust mapping and becomes `serde_json::Value`.
    UnmappedExternalType,
    /// CG0024: a name was converted or renamed to valid, unique Rust.
    Renamed,
    /// CG0025: a construct of another dialect is read approximately or not used.
    DialectApproximation,
    /// CG0030: a `state_machine` transition or list names a state that is not declared.
    StateMachineUnknownState,
    /// CG0031: a `state_machine` has no `initial_state`, or it names no declared state.
    StateMachineInitialState,
    /// CG0032: two transitions leave one state on one trigger with nothing to choose between them.
    StateMachineAmbiguousTransition,
    /// CG0033: a state cannot be reached from the initial state.
    StateMachineUnreachableState,
    /// CG0034: a terminal state has outgoing transitions.
    StateMachineTerminalTransition,
    /// CG0035: a transition condition is not understood and becomes a guard method.
    StateMachineGuard,
    /// CG0040: workflow steps depend on each other in a cycle.
    WorkflowCycle,
    /// CG0041: a workflow step depends on a step that does not exist.
    WorkflowUnknownStep,
    /// CG0042: two workflow steps have the same id.
    WorkflowDuplicateStep,
    /// CG0043: a workflow coordination rule is unknown, out of range or contradicts another.
    WorkflowRule,
    /// CG0044: a workflow has no steps.
    WorkflowNoSteps,
    /// CG0050: `handler_routing` cannot route (strategy, handler list, entry key, default handler).
    InvalidRouting,
    /// CG0051: two routes of `handler_routing` accept the same key.
    DuplicateRoute,
    /// CG0052: an `event_bus` topic breaks the topic grammar.
    InvalidTopic,
    /// CG0053: `event_bus` or one of its topic lists has the wrong shape.
    InvalidEventBus,
    /// CG0060: a field was removed or renamed (breaking check).
    FieldRemoved,
    /// CG0061: a field or item changed its type or format.
    TypeChanged,
    /// CG0062: an enum lost a value, or a tagged union an arm.
    EnumNarrowed,
    /// CG0063: an optional field became required.
    MadeRequired,
    /// CG0064: a required field became optional.
    MadeOptional,
    /// CG0065: a new field is required and has no default.
    NewRequiredField,
    /// CG0066: an operation of the node was removed.
    OperationRemoved,
    /// CG0067: an operation's timeout changed beyond the threshold (halved or doubled).
    TimeoutChanged,
    /// CG0068: an event_bus topic was removed or renamed.
    TopicRemoved,
    /// CG0069: a state machine lost a state.
    StateRemoved,
    /// CG0070: a state machine lost a trigger.
    TriggerRemoved,
    /// CG0071: the node kind (node_type) changed.
    NodeKindChanged,
    /// CG0072: a protocol or service dependency the node type exposes was removed.
    DependencyRemoved,
    /// CG0073: a node contract (or its newest version) was removed.
    NodeRemoved,
    /// CG0074: a contract's content changed but its contract_version did not.
    VersionNotBumped,
    /// CG0075: breaking changes made under a new major version: allowed, reported.
    MajorVersionBreak,
    /// CG0076: a compatible change: a new optional field, operation, enum value, topic, state or node.
    SafeAddition,
    /// CG0077: the node now requires a dependency its callers did not have to provide.
    DependencyRequired,
    /// CG0078: `handler_routing` no longer routes requests it routed (a key or the strategy changed).
    RoutingNarrowed,
}

impl Code {
    /// Every code, in order, for the table in the docs and the tests.
    pub const ALL: [Code; 59] = [
        Code::YamlSyntax,
        Code::YamlLimit,
        Code::DuplicateKey,
        Code::MissingKey,
        Code::WrongType,
        Code::UnknownNodeType,
        Code::NamingConvention,
        Code::FolderVersionMismatch,
        Code::FolderNameMismatch,
        Code::KindMismatch,
        Code::UnresolvedRef,
        Code::NameCollision,
        Code::MissingIoOperations,
        Code::UnsupportedSchema,
        Code::UnknownOperation,
        Code::DuplicateName,
        Code::Io,
        Code::InvalidOperationType,
        Code::InvalidRustType,
        Code::InvalidDefault,
        Code::NoContracts,
        Code::NotANodeContract,
        Code::UnmappedExternalType,
        Code::Renamed,
        Code::DialectApproximation,
        Code::StateMachineUnknownState,
        Code::StateMachineInitialState,
        Code::StateMachineAmbiguousTransition,
        Code::StateMachineUnreachableState,
        Code::StateMachineTerminalTransition,
        Code::StateMachineGuard,
        Code::WorkflowCycle,
        Code::WorkflowUnknownStep,
        Code::WorkflowDuplicateStep,
        Code::WorkflowRule,
        Code::WorkflowNoSteps,
        Code::InvalidRouting,
        Code::DuplicateRoute,
        Code::InvalidTopic,
        Code::InvalidEventBus,
        Code::FieldRemoved,
        Code::TypeChanged,
        Code::EnumNarrowed,
        Code::MadeRequired,
        Code::MadeOptional,
        Code::NewRequiredField,
        Code::OperationRemoved,
        Code::TimeoutChanged,
        Code::TopicRemoved,
        Code::StateRemoved,
        Code::TriggerRemoved,
        Code::NodeKindChanged,
        Code::DependencyRemoved,
        Code::NodeRemoved,
        Code::VersionNotBumped,
        Code::MajorVersionBreak,
        Code::SafeAddition,
        Code::DependencyRequired,
        Code::RoutingNarrowed,
    ];

    /// `CG0001`…
    pub fn as_str(self) -> &'static str {
        match self {
            Code::YamlSyntax => "CG0001",
            Code::YamlLimit => "CG0002",
            Code::DuplicateKey => "CG0003",
            Code::MissingKey => "CG0004",
            Code::WrongType => "CG0005",
            Code::UnknownNodeType => "CG0006",
            Code::NamingConvention => "CG0007",
            Code::FolderVersionMismatch => "CG0008",
            Code::FolderNameMismatch => "CG0009",
            Code::KindMismatch => "CG0010",
            Code::UnresolvedRef => "CG0011",
            Code::NameCollision => "CG0012",
            Code::MissingIoOperations => "CG0013",
            Code::UnsupportedSchema => "CG0014",
            Code::UnknownOperation => "CG0015",
            Code::DuplicateName => "CG0016",
            Code::Io => "CG0017",
            Code::InvalidOperationType => "CG0018",
            Code::InvalidRustType => "CG0019",
            Code::InvalidDefault => "CG0020",
            Code::NoContracts => "CG0021",
            Code::NotANodeContract => "CG0022",
            Code::UnmappedExternalType => "CG0023",
            Code::Renamed => "CG0024",
            Code::DialectApproximation => "CG0025",
            Code::StateMachineUnknownState => "CG0030",
            Code::StateMachineInitialState => "CG0031",
            Code::StateMachineAmbiguousTransition => "CG0032",
            Code::StateMachineUnreachableState => "CG0033",
            Code::StateMachineTerminalTransition => "CG0034",
            Code::StateMachineGuard => "CG0035",
            Code::WorkflowCycle => "CG0040",
            Code::WorkflowUnknownStep => "CG0041",
            Code::WorkflowDuplicateStep => "CG0042",
            Code::WorkflowRule => "CG0043",
            Code::WorkflowNoSteps => "CG0044",
            Code::InvalidRouting => "CG0050",
            Code::DuplicateRoute => "CG0051",
            Code::InvalidTopic => "CG0052",
            Code::InvalidEventBus => "CG0053",
            Code::FieldRemoved => "CG0060",
            Code::TypeChanged => "CG0061",
            Code::EnumNarrowed => "CG0062",
            Code::MadeRequired => "CG0063",
            Code::MadeOptional => "CG0064",
            Code::NewRequiredField => "CG0065",
            Code::OperationRemoved => "CG0066",
            Code::TimeoutChanged => "CG0067",
            Code::TopicRemoved => "CG0068",
            Code::StateRemoved => "CG0069",
            Code::TriggerRemoved => "CG0070",
            Code::NodeKindChanged => "CG0071",
            Code::DependencyRemoved => "CG0072",
            Code::NodeRemoved => "CG0073",
            Code::VersionNotBumped => "CG0074",
            Code::MajorVersionBreak => "CG0075",
            Code::SafeAddition => "CG0076",
            Code::DependencyRequired => "CG0077",
            Code::RoutingNarrowed => "CG0078",
        }
    }

    /// The code's number (`CG0050` → 50).
    pub fn number(self) -> u32 {
        self.as_str()[2..].parse().unwrap_or_default()
    }

    /// One line on what the code means.
    pub fn summary(self) -> &'static str {
        match self {
            Code::YamlSyntax => "the file is not valid YAML",
            Code::YamlLimit => "the file is too large or nested too deeply",
            Code::DuplicateKey => "a mapping has the same key twice; the last value wins",
            Code::MissingKey => "a required key is missing",
            Code::WrongType => "a value has the wrong type",
            Code::UnknownNodeType => "node_type is not EFFECT, COMPUTE, REDUCER or ORCHESTRATOR",
            Code::NamingConvention => "a name breaks the naming convention",
            Code::FolderVersionMismatch => "the version folder does not match contract_version",
            Code::FolderNameMismatch => "the node folder does not match node_name",
            Code::KindMismatch => "node_type does not match the kind suffix of node_name",
            Code::UnresolvedRef => "a reference points to nothing",
            Code::NameCollision => "two items get the same Rust name",
            Code::MissingIoOperations => "an EFFECT contract has no io_operations",
            Code::UnsupportedSchema => "a schema cannot be turned into Rust",
            Code::UnknownOperation => "an io_operations entry names an unknown operation",
            Code::DuplicateName => "a name is declared twice",
            Code::Io => "a file cannot be read or written",
            Code::InvalidOperationType => "the input model has no usable operation_type",
            Code::InvalidRustType => "rust_type is not a valid Rust type",
            Code::InvalidDefault => "a default does not fit its schema",
            Code::NoContracts => "no contract was found",
            Code::NotANodeContract => "the file is not a node contract and is skipped",
            Code::UnmappedExternalType => "an external type has no Rust mapping and becomes serde_json::Value",
            Code::Renamed => "a name was converted or renamed to valid, unique Rust",
            Code::DialectApproximation => "a construct of another dialect is read approximately or not used",
            Code::StateMachineUnknownState => "a state machine names a state it does not declare",
            Code::StateMachineInitialState => "a state machine has no initial state, or an unknown one",
            Code::StateMachineAmbiguousTransition => "two transitions on one state and trigger cannot be told apart",
            Code::StateMachineUnreachableState => "a state cannot be reached from the initial state",
            Code::StateMachineTerminalTransition => "a terminal state has outgoing transitions",
            Code::StateMachineGuard => "a transition condition is not understood and becomes a guard method",
            Code::WorkflowCycle => "workflow steps depend on each other in a cycle",
            Code::WorkflowUnknownStep => "a workflow step depends on a step that does not exist",
            Code::WorkflowDuplicateStep => "two workflow steps have the same id",
            Code::WorkflowRule => "a workflow coordination rule is unknown, out of range or contradicts another",
            Code::WorkflowNoSteps => "a workflow has no steps",
            Code::InvalidRouting => "handler_routing cannot route requests",
            Code::DuplicateRoute => "two routes of handler_routing accept the same key",
            Code::InvalidTopic => "an event_bus topic breaks the topic grammar",
            Code::InvalidEventBus => "event_bus or one of its topic lists has the wrong shape",
            Code::FieldRemoved => "a field was removed or renamed",
            Code::TypeChanged => "a field or item changed its type or format",
            Code::EnumNarrowed => "an enum lost a value, or a union an arm",
            Code::MadeRequired => "an optional field became required",
            Code::MadeOptional => "a required field became optional",
            Code::NewRequiredField => "a new field is required and has no default",
            Code::OperationRemoved => "an operation was removed",
            Code::TimeoutChanged => "an operation's timeout changed beyond the threshold",
            Code::TopicRemoved => "an event_bus topic was removed or renamed",
            Code::StateRemoved => "a state machine lost a state",
            Code::TriggerRemoved => "a state machine lost a trigger",
            Code::NodeKindChanged => "the node kind changed",
            Code::DependencyRemoved => "a dependency the node type exposes was removed",
            Code::NodeRemoved => "a node contract was removed",
            Code::VersionNotBumped => "a contract changed without a new contract_version",
            Code::MajorVersionBreak => "breaking changes allowed by a new major version",
            Code::SafeAddition => "a compatible addition",
            Code::DependencyRequired => "the node requires a dependency it did not require",
            Code::RoutingNarrowed => "handler_routing no longer routes requests it routed",
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A 1-based position in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub col: u32,
}

impl Pos {
    /// The position `line`:`col` (both 1-based).
    pub const fn new(line: u32, col: u32) -> Self {
        Self { line, col }
    }
}

/// A second location that belongs to a diagnostic (e.g. the other half of a collision).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Related {
    /// Display path of the file.
    pub file: String,
    /// Where.
    pub pos: Pos,
    /// What is there.
    pub message: String,
}

/// One problem, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Stable code.
    pub code: Code,
    /// Error or warning.
    pub severity: Severity,
    /// Display path of the file (relative, `/`-separated).
    pub file: String,
    /// Where in the file.
    pub pos: Pos,
    /// YAML path, e.g. `definitions.ModelX.properties.url.type` (empty for the document).
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
    /// Other locations involved.
    pub related: Vec<Related>,
}

impl Diagnostic {
    /// An error.
    pub fn error(code: Code, file: &str, pos: Pos, path: &str, message: impl Into<String>) -> Self {
        Self {
            code,
            severity: Severity::Error,
            file: file.to_owned(),
            pos,
            path: path.to_owned(),
            message: message.into(),
            hint: None,
            related: Vec::new(),
        }
    }

    /// A warning.
    pub fn warning(code: Code, file: &str, pos: Pos, path: &str, message: impl Into<String>) -> Self {
        Self { severity: Severity::Warning, ..Self::error(code, file, pos, path, message) }
    }

    /// A note.
    pub fn note(code: Code, file: &str, pos: Pos, path: &str, message: impl Into<String>) -> Self {
        Self { severity: Severity::Note, ..Self::error(code, file, pos, path, message) }
    }

    /// Adds how to fix it.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Adds another location.
    pub fn with_related(mut self, file: &str, pos: Pos, message: impl Into<String>) -> Self {
        self.related.push(Related { file: file.to_owned(), pos, message: message.into() });
        self
    }

    /// Whether this is an error.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// `file:line:col`.
    pub fn location(&self) -> String {
        format!("{}:{}:{}", self.file, self.pos.line, self.pos.col)
    }

    /// The human rendering: `error[CG0004]: message`, ` --> file:line:col`, the source line
    /// with a caret under the column, related locations and `help: hint`.
    /// `source` is the text of `self.file`, when it could be read.
    pub fn render(&self, source: Option<&str>) -> String {
        let mut out = String::new();
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        };
        let _ = writeln!(out, "{level}[{}]: {}", self.code, self.message);
        let _ = writeln!(out, " --> {}", self.location());
        if !self.path.is_empty() {
            let _ = writeln!(out, "  = at: {}", self.path);
        }
        if let Some(line) = source.and_then(|s| source_line(s, self.pos.line)) {
            let gutter = self.pos.line.to_string();
            let pad = " ".repeat(gutter.len());
            let caret_pad: String = line
                .chars()
                .take(self.pos.col.saturating_sub(1) as usize)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let _ = writeln!(out, "{pad} |");
            let _ = writeln!(out, "{gutter} | {line}");
            let _ = writeln!(out, "{pad} | {caret_pad}^");
        }
        for related in &self.related {
            let _ =
                writeln!(out, "note: {} ({}:{}:{})", related.message, related.file, related.pos.line, related.pos.col);
        }
        if let Some(hint) = &self.hint {
            let _ = writeln!(out, "help: {hint}");
        }
        out
    }

    /// The build-script rendering: one `cargo::error=` (or `cargo::warning=`) line.
    pub fn render_cargo(&self) -> String {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        };
        let mut line = format!("cargo::{level}={}: {}[{}]: {}", self.location(), level, self.code, self.message);
        for related in &self.related {
            let _ = write!(line, "; {} at {}:{}:{}", related.message, related.file, related.pos.line, related.pos.col);
        }
        if let Some(hint) = &self.hint {
            let _ = write!(line, "; help: {hint}");
        }
        line.replace(['\n', '\r'], " ")
    }
}

fn source_line(source: &str, line: u32) -> Option<&str> {
    source.lines().nth(line.checked_sub(1)? as usize).map(|l| l.trim_end_matches('\r'))
}

/// Sorts diagnostics by file, position and code, so output order never depends on
/// discovery or hash order.
pub fn sort(diagnostics: &mut [Diagnostic]) {
    diagnostics.sort_by(|a, b| {
        (&a.file, a.pos, a.code, &a.path, &a.message).cmp(&(&b.file, b.pos, b.code, &b.path, &b.message))
    });
}

/// The Markdown table of codes (for docs and `codegen codes`).
pub fn codes_table() -> String {
    let mut out = String::from("| code | meaning |\n|---|---|\n");
    for code in Code::ALL {
        let _ = writeln!(out, "| {} | {} |", code.as_str(), code.summary());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_in_order() {
        // Numbers are reserved in ranges per area, so the list has gaps but never goes back.
        let numbers: Vec<u32> = Code::ALL.iter().map(|c| c.number()).collect();
        assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
        for code in Code::ALL {
            assert_eq!(code.as_str(), format!("CG{:04}", code.number()));
        }
    }

    #[test]
    fn renders_with_caret_and_help() {
        let d = Diagnostic::error(Code::MissingKey, "c.yaml", Pos::new(2, 3), "a.b", "missing key `x`")
            .with_hint("add `x: 1`");
        let text = d.render(Some("a:\n  b: 1\n"));
        assert_eq!(
            text,
            "error[CG0004]: missing key `x`\n --> c.yaml:2:3\n  = at: a.b\n  |\n2 |   b: 1\n  |   ^\nhelp: add `x: 1`\n"
        );
        assert_eq!(d.render_cargo(), "cargo::error=c.yaml:2:3: error[CG0004]: missing key `x`; help: add `x: 1`");
    }
}
