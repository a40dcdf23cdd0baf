//! Small edits on the positioned YAML tree. Every node built here carries the position of the
//! source node it was derived from, so diagnostics about normalized values still point at the
//! text the author wrote.

use crate::diagnostics::Pos;
use crate::read::{Key, Node, Value};

/// A string node at `pos`.
pub fn string(text: &str, pos: Pos) -> Node {
    Node { value: Value::Str(text.to_owned()), pos }
}

/// An integer node at `pos`.
pub fn int(value: i64, pos: Pos) -> Node {
    Node { value: Value::Int(value), pos }
}

/// A boolean node at `pos`.
pub fn boolean(value: bool, pos: Pos) -> Node {
    Node { value: Value::Bool(value), pos }
}

/// A mapping node at `pos` with `entries` (keys positioned at `pos` too).
pub fn map(entries: Vec<(&str, Node)>, pos: Pos) -> Node {
    let entries = entries.into_iter().map(|(k, v)| (Key { name: k.to_owned(), pos }, v)).collect();
    Node { value: Value::Map(entries), pos }
}

/// A sequence node at `pos`.
pub fn seq(items: Vec<Node>, pos: Pos) -> Node {
    Node { value: Value::Seq(items), pos }
}

/// The mutable value of `key`, when `node` is a mapping that has it.
pub fn get_mut<'a>(node: &'a mut Node, key: &str) -> Option<&'a mut Node> {
    match &mut node.value {
        Value::Map(entries) => entries.iter_mut().find(|(k, _)| k.name == key).map(|(_, v)| v),
        _ => None,
    }
}

/// Removes `key` from the mapping `node`, returning the entry.
pub fn remove(node: &mut Node, key: &str) -> Option<(Key, Node)> {
    match &mut node.value {
        Value::Map(entries) => {
            let index = entries.iter().position(|(k, _)| k.name == key)?;
            Some(entries.remove(index))
        }
        _ => None,
    }
}

/// Sets `key` of the mapping `node` to `value`: an existing entry keeps its place and key
/// position; a new one is appended with its key at `key_pos`.
pub fn set(node: &mut Node, key: &str, value: Node, key_pos: Pos) {
    if let Value::Map(entries) = &mut node.value {
        match entries.iter_mut().find(|(k, _)| k.name == key) {
            Some((_, slot)) => *slot = value,
            None => entries.push((Key { name: key.to_owned(), pos: key_pos }, value)),
        }
    }
}

/// Renames the key `from` to `to` in place (order and positions kept). Does nothing when
/// `from` is absent; when `to` already exists, the renamed entry replaces it.
pub fn rename(node: &mut Node, from: &str, to: &str) {
    if from == to {
        return;
    }
    if let Value::Map(entries) = &mut node.value {
        let Some(index) = entries.iter().position(|(k, _)| k.name == from) else { return };
        if let Some(existing) = entries.iter().position(|(k, _)| k.name == to) {
            let (key, value) = entries.remove(index);
            let existing = if existing > index { existing - 1 } else { existing };
            entries[existing] = (Key { name: to.to_owned(), pos: key.pos }, value);
        } else {
            entries[index].0.name = to.to_owned();
        }
    }
}

/// The string value of `key`, if `node` is a mapping whose `key` is a string.
pub fn str_of<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    node.get(key).and_then(Node::as_str)
}

/// Whether `node` is a mapping with `key`.
pub fn has(node: &Node, key: &str) -> bool {
    node.get(key).is_some()
}

/// The keys of a mapping, in order (empty for anything else).
pub fn keys(node: &Node) -> Vec<String> {
    node.as_map().map(|entries| entries.iter().map(|(k, _)| k.name.clone()).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_keeps_order_and_replaces_existing() {
        let p = Pos::new(1, 1);
        let mut m = map(vec![("a", int(1, p)), ("b", int(2, p)), ("c", int(3, p))], p);
        rename(&mut m, "a", "c");
        assert_eq!(keys(&m), vec!["b", "c"]);
        assert_eq!(m.get("c").unwrap().value, Value::Int(1));
        rename(&mut m, "b", "z");
        assert_eq!(keys(&m), vec!["z", "c"]);
    }

    #[test]
    fn set_and_remove() {
        let p = Pos::new(2, 3);
        let mut m = map(vec![("a", int(1, p))], p);
        set(&mut m, "a", string("x", p), Pos::new(9, 9));
        set(&mut m, "b", boolean(true, p), Pos::new(9, 9));
        assert_eq!(str_of(&m, "a"), Some("x"));
        assert_eq!(m.entry("b").unwrap().0.pos, Pos::new(9, 9));
        assert!(remove(&mut m, "a").is_some());
        assert!(!has(&m, "a"));
    }
}
