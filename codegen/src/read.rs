//! Stage 1: find contract files and parse each into a positioned document tree.
//!
//! YAML is read with `saphyr-parser` events (each with a span), folded into [`Node`]s by an
//! explicit stack, so nesting depth is bounded by a limit rather than by the call stack, and
//! every node and every key keeps its position. Plain scalars are resolved with the YAML 1.2
//! core schema; quoted and block scalars are always strings. Duplicate keys keep the last
//! value (as PyYAML does) and produce a warning naming both locations.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use saphyr_parser::{Event, Parser, ScalarStyle};

use crate::diagnostics::{Code, Diagnostic, Pos};

/// Files larger than this are refused (no contract comes close).
pub const MAX_FILE_BYTES: usize = 4 * 1024 * 1024;
/// Deeper nesting is refused (contracts nest about 8 levels).
pub const MAX_DEPTH: usize = 64;

/// A contract file read from disk.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Where it is on disk.
    pub abs_path: PathBuf,
    /// The path shown in diagnostics and generated headers: relative, `/`-separated, starting
    /// with the contracts folder's own name (e.g. `contracts/nodes/x/v1_0_0/contract.yaml`).
    pub display: String,
    /// The path components below the contracts folder (e.g. `["nodes", "x", "v1_0_0", "contract.yaml"]`).
    pub components: Vec<String>,
    /// The text, with CRLF normalized to LF.
    pub text: String,
}

impl SourceFile {
    /// A source made from text in memory (fuzzing, property tests): `display` stands in for the
    /// path on disk, and its `/`-separated parts for the components.
    pub fn in_memory(display: &str, text: &str) -> Self {
        SourceFile {
            abs_path: PathBuf::from(display),
            display: display.to_owned(),
            components: display.split('/').map(str::to_owned).collect(),
            text: text.to_owned(),
        }
    }
}

/// A mapping key with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// The key text (keys are scalars; their text is kept verbatim).
    pub name: String,
    /// Where the key starts.
    pub pos: Pos,
}

/// A YAML value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`, `~` or empty.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A plain integer.
    Int(i64),
    /// A plain float.
    Float(f64),
    /// Any other scalar.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in source order, duplicate keys removed (last wins).
    Map(Vec<(Key, Node)>),
}

/// A value and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Where it starts.
    pub pos: Pos,
}

impl Node {
    /// The entry `key` of a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    /// The entry `key` of a mapping, with the key's position.
    pub fn entry(&self, key: &str) -> Option<(&Key, &Node)> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(k, v)| (k, v)),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The mapping entries, if this is a mapping.
    pub fn as_map(&self) -> Option<&[(Key, Node)]> {
        match &self.value {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The items, if this is a sequence.
    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(items) => Some(items),
            _ => None,
        }
    }

    /// A short name of the value's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match &self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// The value as JSON (for defaults and examples).
    pub fn to_json(&self) -> serde_json::Value {
        match &self.value {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => (*b).into(),
            Value::Int(i) => (*i).into(),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into),
            Value::Str(s) => s.clone().into(),
            Value::Seq(items) => items.iter().map(Node::to_json).collect(),
            Value::Map(entries) => {
                entries.iter().map(|(k, v)| (k.name.clone(), v.to_json())).collect::<serde_json::Map<_, _>>().into()
            }
        }
    }
}

/// Every YAML file (`*.yaml`, `*.yml`) under `root` (or `root` itself when it is a file), sorted by path so
/// the order never depends on the file system.
pub fn discover(root: &Path) -> Result<Vec<PathBuf>, std::io::Error> {
    if root.is_file() {
        return Ok(vec![root.to_path_buf()]);
    }
    let mut found = Vec::new();
    for entry in walkdir::WalkDir::new(root).follow_links(false).sort_by_file_name() {
        let entry = entry.map_err(std::io::Error::other)?;
        // Every YAML file: what a file is is decided by its keys (crate::dialect::family), and
        // files of other families are skipped with a note.
        let is_yaml = entry.path().extension().is_some_and(|e| e == "yaml" || e == "yml");
        if entry.file_type().is_file() && is_yaml {
            found.push(entry.into_path());
        }
    }
    found.sort();
    Ok(found)
}

/// Reads `path`, which lies under `contracts_dir`.
pub fn read_source(contracts_dir: &Path, path: &Path) -> Result<SourceFile, Box<Diagnostic>> {
    let slashed = |p: &Path| p.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect::<Vec<_>>();
    let (components, display) = match path.strip_prefix(contracts_dir) {
        Ok(relative) if !relative.as_os_str().is_empty() => {
            let components = slashed(relative);
            let base = contracts_dir.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            let display =
                if base.is_empty() { components.join("/") } else { format!("{base}/{}", components.join("/")) };
            (components, display)
        }
        // Outside the contracts folder (e.g. `validate some/file.yaml`): show the path as given.
        _ => (slashed(path), path.display().to_string().replace('\\', "/")),
    };
    let io_error = |message: String| Box::new(Diagnostic::error(Code::Io, &display, Pos::new(1, 1), "", message));
    let bytes = std::fs::read(path).map_err(|e| io_error(format!("cannot read {}: {e}", path.display())))?;
    if bytes.len() > MAX_FILE_BYTES {
        return Err(Box::new(
            Diagnostic::error(
                Code::YamlLimit,
                &display,
                Pos::new(1, 1),
                "",
                format!("the file has {} bytes; contracts are limited to {MAX_FILE_BYTES}", bytes.len()),
            )
            .with_hint("split the contract or remove generated data from it"),
        ));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        io_error(format!("the file is not UTF-8 (invalid byte at offset {})", e.utf8_error().valid_up_to()))
    })?;
    let text = text.strip_prefix('\u{feff}').map(str::to_owned).unwrap_or(text).replace("\r\n", "\n");
    Ok(SourceFile { abs_path: path.to_path_buf(), display, components, text })
}

enum Frame {
    Seq { pos: Pos, items: Vec<Node> },
    Map { pos: Pos, entries: MapBuilder, pending_key: Option<Key> },
}

/// A mapping being read: its entries in source order, and an index from key to entry so that
/// finding a duplicate key costs the same for the 200,000th key as for the second (a scan of
/// the entries made reading quadratic in the keys of one mapping). An entry replaced by a later
/// duplicate is left as a hole and dropped when the mapping ends, so indices never shift.
#[derive(Default)]
struct MapBuilder {
    entries: Vec<Option<(Key, Node)>>,
    /// Key → index in `entries`; built only once the mapping grows past [`MapBuilder::SCAN`]
    /// keys, below which a scan is cheaper than hashing (nearly every mapping of a contract).
    index: Option<std::collections::HashMap<String, usize>>,
}

impl MapBuilder {
    const SCAN: usize = 16;

    /// The index of the live entry named `name`.
    fn find(&self, name: &str) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(name).copied(),
            None => self.entries.iter().position(|e| e.as_ref().is_some_and(|(k, _)| k.name == name)),
        }
    }

    /// Adds an entry; a live entry of the same name is removed and returned (last wins, and
    /// the entry takes the later place, as PyYAML does).
    fn insert(&mut self, key: Key, value: Node) -> Option<(Key, Node)> {
        let replaced = self.find(&key.name).and_then(|i| self.entries[i].take());
        let at = self.entries.len();
        match &mut self.index {
            Some(index) => {
                index.insert(key.name.clone(), at);
            }
            None if at >= Self::SCAN => {
                let mut index = std::collections::HashMap::with_capacity(at * 2);
                for (i, entry) in self.entries.iter().enumerate() {
                    if let Some((k, _)) = entry {
                        index.insert(k.name.clone(), i);
                    }
                }
                index.insert(key.name.clone(), at);
                self.index = Some(index);
            }
            None => {}
        }
        self.entries.push(Some((key, value)));
        replaced
    }

    fn finish(self) -> Vec<(Key, Node)> {
        self.entries.into_iter().flatten().collect()
    }
}

/// Parses one YAML document into a tree. Errors and warnings go to `diags`; `None` when the
/// document cannot be read at all.
pub fn parse(file: &str, text: &str, diags: &mut Vec<Diagnostic>) -> Option<Node> {
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Node> = None;
    let mut documents = 0usize;
    while let Some(event) = parser.next_event() {
        let (event, span) = match event {
            Ok(ok) => ok,
            Err(e) => {
                let m = e.marker();
                diags.push(
                    Diagnostic::error(
                        Code::YamlSyntax,
                        file,
                        Pos::new(to_u32(m.line()), to_u32(m.col() + 1)),
                        "",
                        format!("invalid YAML: {}", e.info()),
                    )
                    .with_hint("fix the YAML syntax at this position (check indentation, quotes and `:` after keys)"),
                );
                return None;
            }
        };
        let pos = Pos::new(to_u32(span.start.line()), to_u32(span.start.col() + 1));
        let complete = match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => continue,
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    diags.push(
                        Diagnostic::error(
                            Code::YamlSyntax,
                            file,
                            pos,
                            "",
                            "a contract file holds exactly one document",
                        )
                        .with_hint("remove the `---` and everything after it, or move it to its own file"),
                    );
                    return None;
                }
                continue;
            }
            Event::Alias(_) => {
                diags.push(
                    Diagnostic::error(Code::YamlSyntax, file, pos, &path_of(&stack), "YAML aliases are not supported")
                        .with_hint("write the value out instead of `*alias`"),
                );
                return None;
            }
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                if stack.len() >= MAX_DEPTH {
                    diags.push(
                        Diagnostic::error(
                            Code::YamlLimit,
                            file,
                            pos,
                            &path_of(&stack),
                            format!("the document nests deeper than {MAX_DEPTH} levels"),
                        )
                        .with_hint("flatten the schema, e.g. move inline objects into `definitions`"),
                    );
                    return None;
                }
                if matches!(event, Event::SequenceStart(..)) {
                    stack.push(Frame::Seq { pos, items: Vec::new() });
                } else {
                    stack.push(Frame::Map { pos, entries: MapBuilder::default(), pending_key: None });
                }
                continue;
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq { pos, items }) => Node { value: Value::Seq(items), pos },
                _ => return None,
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map { pos, entries, .. }) => Node { value: Value::Map(entries.finish()), pos },
                _ => return None,
            },
            Event::Scalar(text, style, _, tag) => {
                let value = if style == ScalarStyle::Plain && tag.is_none() {
                    resolve_plain(text)
                } else {
                    Value::Str(text.into_owned())
                };
                Node { value, pos }
            }
        };
        // Attach the completed node to its parent. The key path is only needed (and only built)
        // for a duplicate key's warning.
        let here = match stack.last() {
            Some(Frame::Map { entries, pending_key: Some(key), .. }) if entries.find(&key.name).is_some() => {
                path_of(&stack)
            }
            _ => String::new(),
        };
        match stack.last_mut() {
            None => root = Some(complete),
            Some(Frame::Seq { items, .. }) => items.push(complete),
            Some(Frame::Map { entries, pending_key, .. }) => match pending_key.take() {
                None => {
                    let name = match &complete.value {
                        Value::Str(s) => s.clone(),
                        Value::Null => "null".to_owned(),
                        Value::Bool(b) => b.to_string(),
                        Value::Int(i) => i.to_string(),
                        Value::Float(f) => f.to_string(),
                        Value::Seq(_) | Value::Map(_) => {
                            diags.push(
                                Diagnostic::error(
                                    Code::YamlSyntax,
                                    file,
                                    complete.pos,
                                    "",
                                    "mapping keys must be scalars",
                                )
                                .with_hint("use a plain string as the key"),
                            );
                            return None;
                        }
                    };
                    *pending_key = Some(Key { name, pos: complete.pos });
                }
                Some(key) => {
                    let (key_pos, name) = (key.pos, key.name.clone());
                    if let Some((first, _)) = entries.insert(key, complete) {
                        let path = here;
                        diags.push(
                            Diagnostic::warning(
                                Code::DuplicateKey,
                                file,
                                key_pos,
                                &path,
                                format!("duplicate key `{name}`; this value replaces the earlier one"),
                            )
                            .with_related(file, first.pos, "first defined here")
                            .with_hint("remove one of the two entries"),
                        );
                    }
                }
            },
        }
    }
    if root.is_none() {
        diags.push(
            Diagnostic::error(Code::YamlSyntax, file, Pos::new(1, 1), "", "the file is empty")
                .with_hint("a contract is a YAML mapping starting with `contract_version:`"),
        );
    }
    root
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn push_path(path: &mut String, segment: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(segment);
}

/// The YAML path of the value being built at the top of `stack`.
fn path_of(stack: &[Frame]) -> String {
    let mut path = String::new();
    for frame in stack {
        match frame {
            Frame::Seq { items, .. } => path.push_str(&format!("[{}]", items.len())),
            Frame::Map { pending_key: Some(key), .. } => push_path(&mut path, &key.name),
            Frame::Map { .. } => {}
        }
    }
    path
}

/// YAML 1.2 core schema resolution of a plain scalar. A string keeps the parser's own text
/// (the scanner gives each plain scalar an owned copy; a second one per scalar was a tenth of
/// reading a long list).
fn resolve_plain(scalar: Cow<'_, str>) -> Value {
    let text = scalar.as_ref();
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Value::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    let bytes = text.as_bytes();
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && let Ok(i) = text.parse::<i64>()
    {
        return Value::Int(i);
    }
    if let Some(hex) = text.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return Value::Int(i);
    }
    if let Some(oct) = text.strip_prefix("0o")
        && let Ok(i) = i64::from_str_radix(oct, 8)
    {
        return Value::Int(i);
    }
    let looks_float = bytes.iter().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
        && bytes.iter().any(u8::is_ascii_digit);
    if looks_float && let Ok(f) = text.parse::<f64>() {
        return Value::Float(f);
    }
    Value::Str(scalar.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> (Option<Node>, Vec<Diagnostic>) {
        let mut diags = Vec::new();
        let node = parse("t.yaml", text, &mut diags);
        (node, diags)
    }

    #[test]
    fn keeps_positions_and_core_schema() {
        let (node, diags) = parse_ok("a: 1\nb:\n  c: 'true'\n  d: true\n  e: 1.5\n  f: ~\n");
        assert!(diags.is_empty());
        let node = node.unwrap();
        assert_eq!(node.get("a").unwrap().value, Value::Int(1));
        let b = node.get("b").unwrap();
        assert_eq!(b.get("c").unwrap().value, Value::Str("true".into()));
        assert_eq!(b.get("d").unwrap().value, Value::Bool(true));
        assert_eq!(b.get("e").unwrap().value, Value::Float(1.5));
        assert_eq!(b.get("f").unwrap().value, Value::Null);
        assert_eq!(b.entry("d").unwrap().0.pos, Pos::new(4, 3));
        assert_eq!(b.get("d").unwrap().pos, Pos::new(4, 6));
    }

    #[test]
    fn duplicate_key_keeps_last_and_warns() {
        let (node, diags) = parse_ok("a: 1\na: 2\n");
        assert_eq!(node.unwrap().get("a").unwrap().value, Value::Int(2));
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].code, Code::DuplicateKey);
        assert_eq!(diags[0].related[0].pos, Pos::new(1, 1));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let text: String = (0..100).map(|depth| format!("{}a:\n", "  ".repeat(depth))).collect();
        let (node, diags) = parse_ok(&text);
        assert!(node.is_none());
        assert_eq!(diags[0].code, Code::YamlLimit);
        assert_eq!(diags[0].pos.line, MAX_DEPTH as u32 + 1, "the first mapping too deep");
        // Flow nesting is refused by the scanner itself; either way an error, never a crash.
        let (node, diags) = parse_ok(&"[".repeat(100_000));
        assert!(node.is_none());
        assert!(matches!(diags[0].code, Code::YamlLimit | Code::YamlSyntax), "{diags:?}");
    }

    #[test]
    fn syntax_error_is_located() {
        let (node, diags) = parse_ok("a: [1, 2\nb: 3\n");
        assert!(node.is_none());
        assert_eq!(diags[0].code, Code::YamlSyntax);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in "[ -~\n]{0,200}") {
            let mut diags = Vec::new();
            let _ = parse("p.yaml", &text, &mut diags);
        }
    }
}
