//! The configuration file as a tree of located YAML values: every value knows its line and
//! column, so an error can point at the key that is wrong.

use saphyr_parser::{Event, Parser};

/// A line and column, both 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// One YAML value with where it starts. Scalars stay text: the reader converts them to the
/// type each key needs, so a type error names the key.
#[derive(Debug, Clone, PartialEq)]
pub enum Yaml {
    Scalar(String, Position),
    Seq(Vec<Yaml>, Position),
    Map(Vec<(String, Position, Yaml)>, Position),
}

impl Yaml {
    pub fn position(&self) -> Position {
        match self {
            Yaml::Scalar(_, p) | Yaml::Seq(_, p) | Yaml::Map(_, p) => *p,
        }
    }
}

/// The files are small and hand-written; a deeper one is a mistake.
const MAX_DEPTH: usize = 16;

enum Frame {
    Seq(Vec<Yaml>, Position),
    Map(Vec<(String, Position, Yaml)>, Position, Option<(String, Position)>),
}

/// Parses one YAML document. An empty document is an empty mapping.
pub fn parse(text: &str) -> Result<Yaml, (Position, String)> {
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut root = None;
    while let Some(event) = parser.next_event() {
        let (event, span) = event.map_err(|e| {
            let m = e.marker();
            (Position { line: m.line(), column: m.col() + 1 }, format!("invalid YAML: {}", e.info()))
        })?;
        let at = Position { line: span.start.line(), column: span.start.col() + 1 };
        let done = match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentStart(_) | Event::DocumentEnd | Event::Nothing => {
                continue;
            }
            Event::Alias(_) => return Err((at, "YAML aliases are not supported: write the value out".into())),
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                if stack.len() >= MAX_DEPTH {
                    return Err((at, format!("the file nests deeper than {MAX_DEPTH} levels")));
                }
                stack.push(match event {
                    Event::SequenceStart(..) => Frame::Seq(Vec::new(), at),
                    _ => Frame::Map(Vec::new(), at, None),
                });
                continue;
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq(items, p)) => Yaml::Seq(items, p),
                _ => return Err((at, "unbalanced sequence".into())),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map(entries, p, _)) => Yaml::Map(entries, p),
                _ => return Err((at, "unbalanced mapping".into())),
            },
            Event::Scalar(text, ..) => Yaml::Scalar(text.into_owned(), at),
        };
        match stack.last_mut() {
            None => {
                if root.is_some() {
                    return Err((at, "the file holds more than one document".into()));
                }
                root = Some(done);
            }
            Some(Frame::Seq(items, _)) => items.push(done),
            Some(Frame::Map(entries, _, pending)) => match pending.take() {
                Some((key, key_at)) => {
                    if entries.iter().any(|(k, ..)| *k == key) {
                        return Err((key_at, format!("`{key}` appears twice")));
                    }
                    entries.push((key, key_at, done));
                }
                None => match done {
                    Yaml::Scalar(key, p) => *pending = Some((key, p)),
                    other => return Err((other.position(), "mapping keys must be plain words".into())),
                },
            },
        }
    }
    Ok(root.unwrap_or(Yaml::Map(Vec::new(), Position { line: 1, column: 1 })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_keep_their_positions() {
        let tree = parse("group_id: g\nnodes:\n  - name: a\n").unwrap();
        let Yaml::Map(entries, _) = tree else { panic!("a mapping") };
        assert_eq!(entries[0].0, "group_id");
        assert_eq!(entries[1].1, Position { line: 2, column: 1 });
        let Yaml::Seq(items, _) = &entries[1].2 else { panic!("a sequence") };
        let Yaml::Map(node, _) = &items[0] else { panic!("a mapping") };
        assert_eq!(node[0].2, Yaml::Scalar("a".into(), Position { line: 3, column: 11 }));
    }

    #[test]
    fn duplicate_keys_and_syntax_errors_are_located() {
        assert_eq!(parse("a: 1\na: 2\n").unwrap_err().0, Position { line: 2, column: 1 });
        let (at, message) = parse("a: [1, 2\n").unwrap_err();
        assert!(message.starts_with("invalid YAML"), "{message}");
        assert!(at.line >= 1);
        assert_eq!(parse("").unwrap(), Yaml::Map(Vec::new(), Position { line: 1, column: 1 }));
    }
}
