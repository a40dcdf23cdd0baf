//! `state_machine` (also spelt `state_transitions`): the states a node moves through, the
//! triggers that move it and the conditions that must hold. Read into a [`StateMachine`] whose
//! states, triggers and transitions keep contract order, checked so the generated transition
//! function is total and deterministic:
//!
//! - every state a transition, `initial_state` or `terminal_states` names is declared
//!   (CG0030, CG0031);
//! - two transitions leaving one state on one trigger can be told apart: the earlier one has
//!   conditions, and not the same ones as the later (CG0032);
//! - warnings for states the initial state cannot reach (CG0033), terminal states with outgoing
//!   transitions (CG0034) and conditions the generator cannot evaluate, which become guard
//!   methods (CG0035).

pub mod condition;

use std::collections::{BTreeMap, BTreeSet};

use crate::diagnostics::{Code, Diagnostic, Pos};
use crate::naming::{field_ident, first_free, guard_method, variant_ident};
use crate::read::{Node, Value};
use crate::validate::Spanned;
pub use condition::Check;

/// What `state_machine` says.
#[derive(Debug, Clone, PartialEq)]
pub struct StateMachine {
    /// `state_machine_name`.
    pub name: Option<String>,
    /// `description`.
    pub description: Option<String>,
    /// The initial state (an index into `states`).
    pub initial: usize,
    /// `states`, in contract order.
    pub states: Vec<State>,
    /// Every trigger, in order of first use.
    pub triggers: Vec<Trigger>,
    /// `transitions`, in contract order.
    pub transitions: Vec<Transition>,
    /// The conditions the generator cannot evaluate, one per distinct text, in order of first use.
    pub guards: Vec<Guard>,
    /// Entry and exit actions, one per distinct name, in order of first use.
    pub actions: Vec<Action>,
}

/// One state.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    /// `state_name` (the wire name).
    pub name: Spanned<String>,
    /// The `State` variant.
    pub variant: String,
    /// `description`.
    pub description: Option<String>,
    /// `is_terminal: true`, or listed in `terminal_states`.
    pub terminal: bool,
    /// `required_data`: the fields the data must have in this state.
    pub required_data: Vec<String>,
    /// `entry_actions` (indexes into [`StateMachine::actions`]).
    pub entry_actions: Vec<usize>,
    /// `exit_actions` (indexes into [`StateMachine::actions`]).
    pub exit_actions: Vec<usize>,
}

/// One trigger.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    /// The wire name.
    pub wire: String,
    /// The `Trigger` variant.
    pub variant: String,
    /// Where the trigger is first used.
    pub pos: Pos,
}

/// Where a transition may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// `from_state: "*"`: any state without a transition of its own on the trigger.
    Any,
    /// One state (an index into [`StateMachine::states`]).
    State(usize),
}

/// One transition.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// `from_state`.
    pub from: Source,
    /// `to_state` (an index into [`StateMachine::states`]).
    pub to: usize,
    /// `trigger` (an index into [`StateMachine::triggers`]).
    pub trigger: usize,
    /// `transition_name`.
    pub name: Option<String>,
    /// `description`.
    pub description: Option<String>,
    /// `conditions`, in contract order.
    pub conditions: Vec<Condition>,
    /// The `action_name`s of `actions`, kept for the transition table.
    pub actions: Vec<String>,
}

/// One transition condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// The expression as written (or the condition's name when it has no expression).
    pub text: String,
    /// `required` (default true); a condition that is not required is listed but not evaluated.
    pub required: bool,
    /// How it is evaluated.
    pub test: ConditionTest,
}

/// How a condition is evaluated.
#[derive(Debug, Clone, PartialEq)]
pub enum ConditionTest {
    /// By the generated code.
    Check(Check),
    /// By a guard method (an index into [`StateMachine::guards`]).
    Guard(usize),
}

/// A condition people implement.
#[derive(Debug, Clone, PartialEq)]
pub struct Guard {
    /// The condition's text.
    pub text: String,
    /// The method of the actions trait.
    pub method: String,
}

/// An entry or exit action.
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    /// The action's name in the contract.
    pub wire: String,
    /// The method of the actions trait.
    pub method: String,
}

/// Reads `state_machine` from `root`, if present. `None` also when it has errors (reported).
pub fn read(file: &str, root: &Node, diags: &mut Vec<Diagnostic>) -> Option<StateMachine> {
    let (key, section) = ["state_machine", "state_transitions"].iter().find_map(|k| root.entry(k))?;
    // `state_machine:` with nothing after it says there is none.
    if section.value == Value::Null {
        return None;
    }
    let mut r = Reader { file, diags, errors: 0 };
    let machine = r.section(&key.name, section);
    if r.errors > 0 { None } else { machine }
}

struct Reader<'a> {
    file: &'a str,
    diags: &'a mut Vec<Diagnostic>,
    errors: usize,
}

/// The parts of a transition still named by their wire strings.
struct RawTransition<'n> {
    path: String,
    from: Spanned<String>,
    to: Spanned<String>,
    trigger: Spanned<String>,
    node: &'n Node,
}

impl Reader<'_> {
    fn error(&mut self, code: Code, pos: Pos, path: &str, message: String, hint: String) {
        self.errors += 1;
        self.diags.push(Diagnostic::error(code, self.file, pos, path, message).with_hint(hint));
    }

    fn warning(&mut self, code: Code, pos: Pos, path: &str, message: String, hint: String) {
        self.diags.push(Diagnostic::warning(code, self.file, pos, path, message).with_hint(hint));
    }

    fn wrong_type(&mut self, node: &Node, path: &str, expected: &str, example: &str) {
        self.error(
            Code::WrongType,
            node.pos,
            path,
            format!("`{path}` must be {expected}, found {}", node.type_name()),
            format!("write it as {example}"),
        );
    }

    fn string(&mut self, map: &Node, parent: &str, key: &str, example: &str) -> Option<Spanned<String>> {
        let node = map.get(key)?;
        match &node.value {
            Value::Str(s) => Some(Spanned { value: s.clone(), pos: node.pos }),
            _ => {
                self.wrong_type(node, &format!("{parent}.{key}"), "a string", example);
                None
            }
        }
    }

    fn required_string(&mut self, map: &Node, parent: &str, key: &str, example: &str) -> Option<Spanned<String>> {
        if map.get(key).is_none() {
            self.error(
                Code::MissingKey,
                map.pos,
                &format!("{parent}.{key}"),
                format!("`{parent}` has no `{key}`"),
                format!("add `{key}: {example}`"),
            );
        }
        self.string(map, parent, key, example)
    }

    fn bool(&mut self, map: &Node, parent: &str, key: &str) -> Option<bool> {
        let node = map.get(key)?;
        match node.value {
            Value::Bool(b) => Some(b),
            _ => {
                self.wrong_type(node, &format!("{parent}.{key}"), "true or false", "`true` or `false`");
                None
            }
        }
    }

    /// A list of strings (absent or null: empty).
    fn strings(&mut self, map: &Node, parent: &str, key: &str) -> Vec<Spanned<String>> {
        let path = format!("{parent}.{key}");
        let items = match map.get(key) {
            None => return Vec::new(),
            Some(node) => match &node.value {
                Value::Null => return Vec::new(),
                Value::Seq(items) => items,
                _ => {
                    self.wrong_type(node, &path, "a list of names", "`[name_a, name_b]`");
                    return Vec::new();
                }
            },
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match &item.value {
                Value::Str(s) => out.push(Spanned { value: s.clone(), pos: item.pos }),
                _ => self.wrong_type(item, &format!("{path}[{i}]"), "a name", "`name`"),
            }
        }
        out
    }

    fn seq<'n>(&mut self, map: &'n Node, parent: &str, key: &str) -> &'n [Node] {
        match map.get(key) {
            None => &[],
            Some(node) => match &node.value {
                Value::Null => &[],
                Value::Seq(items) => items,
                _ => {
                    self.wrong_type(node, &format!("{parent}.{key}"), "a list", "a `- ` item per entry");
                    &[]
                }
            },
        }
    }

    fn section(&mut self, at: &str, section: &Node) -> Option<StateMachine> {
        if section.as_map().is_none() {
            self.wrong_type(section, at, "a mapping", "`{initial_state: …, states: […], transitions: […]}`");
            return None;
        }
        let name = self.string(section, at, "state_machine_name", "order_fsm").map(|s| s.value);
        let description = self.string(section, at, "description", "\"…\"").map(|s| s.value);
        let mut actions: Vec<Action> = Vec::new();
        let mut states = self.states(at, section, &mut actions);
        let by_name: BTreeMap<String, usize> =
            states.iter().enumerate().map(|(i, s)| (s.name.value.clone(), i)).collect();
        let declared = || -> String {
            let names: Vec<&str> = states.iter().map(|s| s.name.value.as_str()).collect();
            if names.is_empty() { "(none declared)".to_owned() } else { names.join(", ") }
        };
        let declared = declared();

        for terminal in self.strings(section, at, "terminal_states") {
            match by_name.get(&terminal.value) {
                Some(&i) => states[i].terminal = true,
                None => self.error(
                    Code::StateMachineUnknownState,
                    terminal.pos,
                    &format!("{at}.terminal_states"),
                    format!("`terminal_states` names `{}`, which is not a declared state", terminal.value),
                    format!("declare it under `states`, or use one of: {declared}"),
                ),
            }
        }

        let initial = self.initial(at, section, &states, &by_name, &declared);

        // Transitions: resolve names to indexes.
        let mut raw = Vec::new();
        for (i, node) in self.seq(section, at, "transitions").iter().enumerate() {
            let path = format!("{at}.transitions[{i}]");
            if node.as_map().is_none() {
                self.wrong_type(node, &path, "a mapping", "`{from_state: a, to_state: b, trigger: go}`");
                continue;
            }
            let from = self.required_string(node, &path, "from_state", "pending");
            let to = self.required_string(node, &path, "to_state", "done");
            let trigger = self.required_string(node, &path, "trigger", "finish");
            if let (Some(from), Some(to), Some(trigger)) = (from, to, trigger) {
                raw.push(RawTransition { path, from, to, trigger, node });
            }
        }
        let mut triggers: Vec<Trigger> = Vec::new();
        let mut trigger_pos: Vec<Pos> = Vec::new();
        let mut guards: Vec<Guard> = Vec::new();
        let mut transitions = Vec::new();
        for t in &raw {
            let from = if t.from.value == "*" {
                Some(Source::Any)
            } else {
                self.state_ref(&by_name, &t.from, &format!("{}.from_state", t.path), &declared).map(Source::State)
            };
            let to = self.state_ref(&by_name, &t.to, &format!("{}.to_state", t.path), &declared);
            let trigger = match triggers.iter().position(|x| x.wire == t.trigger.value) {
                Some(i) => i,
                None => {
                    triggers.push(Trigger {
                        wire: t.trigger.value.clone(),
                        variant: variant_ident(&t.trigger.value),
                        pos: t.trigger.pos,
                    });
                    trigger_pos.push(t.trigger.pos);
                    triggers.len() - 1
                }
            };
            let conditions = self.conditions(t.node, &t.path, &mut guards, &actions);
            let transition_actions = self.transition_actions(t.node, &t.path);
            let (Some(from), Some(to)) = (from, to) else { continue };
            transitions.push(Transition {
                from,
                to,
                trigger,
                name: self.string(t.node, &t.path, "transition_name", "finish_order").map(|s| s.value),
                description: self.string(t.node, &t.path, "description", "\"…\"").map(|s| s.value),
                conditions,
                actions: transition_actions,
            });
        }
        self.variant_collisions(at, "state", states.iter().map(|s| (&s.variant, &s.name.value, s.name.pos)));
        self.variant_collisions(
            at,
            "trigger",
            triggers.iter().zip(&trigger_pos).map(|(t, pos)| (&t.variant, &t.wire, *pos)),
        );
        if self.errors > 0 {
            return None;
        }
        let initial = initial?;
        let machine = StateMachine { name, description, initial, states, triggers, transitions, guards, actions };
        self.check_choices(&machine, &raw);
        self.check_reachable(at, &machine);
        self.check_terminal(&machine, &raw);
        if self.errors > 0 { None } else { Some(machine) }
    }

    fn states(&mut self, at: &str, section: &Node, actions: &mut Vec<Action>) -> Vec<State> {
        let path = format!("{at}.states");
        if section.get("states").is_none() {
            self.error(
                Code::MissingKey,
                section.pos,
                &path,
                format!("`{at}` has no `states`"),
                "add `states:` with a `- state_name: …` item per state".to_owned(),
            );
        }
        let mut states: Vec<State> = Vec::new();
        for (i, node) in self.seq(section, at, "states").iter().enumerate() {
            let item = format!("{path}[{i}]");
            // A bare name is a state with nothing else to say.
            let (name, has_fields) = match &node.value {
                Value::Str(s) => (Some(Spanned { value: s.clone(), pos: node.pos }), false),
                Value::Map(_) => (self.required_string(node, &item, "state_name", "pending"), true),
                _ => {
                    self.wrong_type(node, &item, "a mapping", "`{state_name: pending, description: …}`");
                    continue;
                }
            };
            let Some(name) = name else { continue };
            if let Some(first) = states.iter().find(|s| s.name.value == name.value) {
                let first_pos = first.name.pos;
                self.errors += 1;
                self.diags.push(
                    Diagnostic::error(
                        Code::DuplicateName,
                        self.file,
                        name.pos,
                        &item,
                        format!("state `{}` is declared twice", name.value),
                    )
                    .with_related(self.file, first_pos, "first declared here")
                    .with_hint("remove one of the two states, or rename it"),
                );
                continue;
            }
            let mut state = State {
                variant: variant_ident(&name.value),
                name,
                description: None,
                terminal: false,
                required_data: Vec::new(),
                entry_actions: Vec::new(),
                exit_actions: Vec::new(),
            };
            if has_fields {
                state.description = self.string(node, &item, "description", "\"…\"").map(|s| s.value);
                state.terminal = self.bool(node, &item, "is_terminal").unwrap_or(false);
                state.required_data = self.strings(node, &item, "required_data").into_iter().map(|s| s.value).collect();
                for (key, list) in
                    [("entry_actions", &mut state.entry_actions), ("exit_actions", &mut state.exit_actions)]
                {
                    for action in self.strings(node, &item, key) {
                        list.push(action_index(actions, &action.value));
                    }
                }
            }
            states.push(state);
        }
        states
    }

    fn initial(
        &mut self,
        at: &str,
        section: &Node,
        states: &[State],
        by_name: &BTreeMap<String, usize>,
        declared: &str,
    ) -> Option<usize> {
        let path = format!("{at}.initial_state");
        match self.string(section, at, "initial_state", "pending") {
            Some(initial) => match by_name.get(&initial.value) {
                Some(&i) => Some(i),
                None => {
                    self.error(
                        Code::StateMachineInitialState,
                        initial.pos,
                        &path,
                        format!("`initial_state` is `{}`, which is not a declared state", initial.value),
                        format!("use one of: {declared}"),
                    );
                    None
                }
            },
            None if section.get("initial_state").is_some() => None,
            None => {
                let first = states.first().map_or("pending", |s| s.name.value.as_str());
                self.error(
                    Code::StateMachineInitialState,
                    section.pos,
                    &path,
                    format!("`{at}` has no `initial_state`"),
                    format!("add `initial_state: {first}` (one of: {declared})"),
                );
                None
            }
        }
    }

    fn state_ref(
        &mut self,
        by_name: &BTreeMap<String, usize>,
        name: &Spanned<String>,
        path: &str,
        declared: &str,
    ) -> Option<usize> {
        let found = by_name.get(&name.value).copied();
        if found.is_none() {
            let key = path.rsplit('.').next().unwrap_or(path);
            self.error(
                Code::StateMachineUnknownState,
                name.pos,
                path,
                format!("`{key}` is `{}`, which is not a declared state", name.value),
                format!("declare it under `states`, or use one of: {declared}"),
            );
        }
        found
    }

    fn conditions(&mut self, node: &Node, path: &str, guards: &mut Vec<Guard>, actions: &[Action]) -> Vec<Condition> {
        let mut out = Vec::new();
        for (i, item) in self.seq(node, path, "conditions").iter().enumerate() {
            let item_path = format!("{path}.conditions[{i}]");
            let (text, text_pos, required, name) = match &item.value {
                Value::Str(s) => (s.clone(), item.pos, true, None),
                Value::Map(_) => {
                    let expression = self.string(item, &item_path, "expression", "\"field equals value\"");
                    let name = self.string(item, &item_path, "condition_name", "has_results").map(|n| n.value);
                    let required = self.bool(item, &item_path, "required").unwrap_or(true);
                    let text =
                        expression.or_else(|| name.as_ref().map(|n| Spanned { value: n.clone(), pos: item.pos }));
                    match text {
                        Some(text) => (text.value, text.pos, required, name),
                        None => {
                            self.error(
                                Code::MissingKey,
                                item.pos,
                                &format!("{item_path}.expression"),
                                format!("`{item_path}` has no `expression`"),
                                "add `expression: \"<field> <operator> <value>\"`".to_owned(),
                            );
                            continue;
                        }
                    }
                }
                _ => {
                    self.wrong_type(item, &item_path, "a mapping", "`{expression: \"field equals value\"}`");
                    continue;
                }
            };
            let test = match condition::parse(&text) {
                Some(check) => ConditionTest::Check(check),
                None => {
                    let index = match guards.iter().position(|g| g.text == text) {
                        Some(index) => index,
                        None => {
                            let method = first_free(&guard_method(name.as_deref().unwrap_or(&text)), |m| {
                                guards.iter().any(|g| g.method == m) || actions.iter().any(|a| a.method == m)
                            });
                            guards.push(Guard { text: text.clone(), method });
                            guards.len() - 1
                        }
                    };
                    let method = &guards[index].method;
                    self.warning(
                        Code::StateMachineGuard,
                        text_pos,
                        &item_path,
                        format!(
                            "condition `{text}` is not understood; it becomes the guard method `{method}` of `StateMachineActions`"
                        ),
                        "write it as `<field> <operator> <value>` (see `codegen explain CG0035`), or implement the method in node.rs".to_owned(),
                    );
                    ConditionTest::Guard(index)
                }
            };
            out.push(Condition { text, required, test });
        }
        out
    }

    fn transition_actions(&mut self, node: &Node, path: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (i, item) in self.seq(node, path, "actions").iter().enumerate() {
            let item_path = format!("{path}.actions[{i}]");
            match &item.value {
                Value::Str(s) => out.push(s.clone()),
                Value::Map(_) => {
                    if let Some(name) = self.required_string(item, &item_path, "action_name", "update_totals") {
                        out.push(name.value);
                    }
                }
                _ => self.wrong_type(item, &item_path, "a mapping", "`{action_name: update_totals}`"),
            }
        }
        out
    }

    /// Two names that become one Rust variant (`cmd-received`, `cmd_received`).
    fn variant_collisions<'s>(
        &mut self,
        at: &str,
        what: &str,
        items: impl Iterator<Item = (&'s String, &'s String, Pos)>,
    ) {
        let mut seen: BTreeMap<&String, (&String, Pos)> = BTreeMap::new();
        for (variant, wire, pos) in items {
            if let Some((first, first_pos)) = seen.get(variant) {
                self.errors += 1;
                self.diags.push(
                    Diagnostic::error(
                        Code::NameCollision,
                        self.file,
                        pos,
                        at,
                        format!("{what} `{wire}` and {what} `{first}` both become the Rust variant `{variant}`"),
                    )
                    .with_related(self.file, *first_pos, format!("{what} `{first}`"))
                    .with_hint(format!("rename one of the two {what}s")),
                );
            } else {
                seen.insert(variant, (wire, pos));
            }
        }
    }

    /// CG0032: on one state and trigger, every transition but the last needs conditions, and
    /// different ones from each later transition.
    fn check_choices(&mut self, m: &StateMachine, raw: &[RawTransition<'_>]) {
        let mut groups: BTreeMap<(Source, usize), Vec<usize>> = BTreeMap::new();
        for (i, t) in m.transitions.iter().enumerate() {
            groups.entry((t.from, t.trigger)).or_default().push(i);
        }
        for indexes in groups.values() {
            for (k, &later) in indexes.iter().enumerate() {
                for &earlier in &indexes[..k] {
                    let conditions = |i: usize| -> BTreeSet<&str> {
                        m.transitions[i].conditions.iter().filter(|c| c.required).map(|c| c.text.as_str()).collect()
                    };
                    let (a, b) = (conditions(earlier), conditions(later));
                    let why = if a.is_empty() {
                        "the earlier one has no condition, so this one is never taken"
                    } else if a == b {
                        "both have the same conditions, so this one is never taken"
                    } else {
                        continue;
                    };
                    let (t, first) = (&raw[later], &raw[earlier]);
                    self.errors += 1;
                    self.diags.push(
                        Diagnostic::error(
                            Code::StateMachineAmbiguousTransition,
                            self.file,
                            t.trigger.pos,
                            &format!("{}.trigger", t.path),
                            format!(
                                "two transitions leave `{}` on trigger `{}`: {why}",
                                t.from.value, t.trigger.value
                            ),
                        )
                        .with_related(self.file, first.trigger.pos, "the earlier transition")
                        .with_hint("use different triggers, or add `conditions` to the earlier transition that tell them apart"),
                    );
                    break;
                }
            }
        }
    }

    fn check_reachable(&mut self, at: &str, m: &StateMachine) {
        let mut reached = vec![false; m.states.len()];
        reached[m.initial] = true;
        let mut queue = vec![m.initial];
        while let Some(state) = queue.pop() {
            for t in &m.transitions {
                let leaves = match t.from {
                    Source::Any => true,
                    Source::State(from) => from == state,
                };
                if leaves && !reached[t.to] {
                    reached[t.to] = true;
                    queue.push(t.to);
                }
            }
        }
        let initial = &m.states[m.initial].name.value;
        for (i, state) in m.states.iter().enumerate() {
            if !reached[i] {
                self.warning(
                    Code::StateMachineUnreachableState,
                    state.name.pos,
                    &format!("{at}.states[{i}]"),
                    format!("state `{}` cannot be reached from the initial state `{initial}`", state.name.value),
                    "add a transition into it, or remove it".to_owned(),
                );
            }
        }
    }

    fn check_terminal(&mut self, m: &StateMachine, raw: &[RawTransition<'_>]) {
        for (t, r) in m.transitions.iter().zip(raw) {
            if let Source::State(from) = t.from
                && m.states[from].terminal
            {
                self.warning(
                    Code::StateMachineTerminalTransition,
                    r.from.pos,
                    &format!("{}.from_state", r.path),
                    format!("state `{}` is terminal but this transition leaves it", r.from.value),
                    "remove the terminal flag if the state can be left, or remove the transition".to_owned(),
                );
            }
        }
    }
}

fn action_index(actions: &mut Vec<Action>, wire: &str) -> usize {
    if let Some(i) = actions.iter().position(|a| a.wire == wire) {
        return i;
    }
    let method = first_free(&field_ident(wire), |m| actions.iter().any(|a| a.method == m));
    actions.push(Action { wire: wire.to_owned(), method });
    actions.len() - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_text(text: &str) -> (Option<StateMachine>, Vec<Diagnostic>) {
        let mut diags = Vec::new();
        let root = crate::read::parse("c.yaml", text, &mut diags).unwrap();
        let machine = read("c.yaml", &root, &mut diags);
        (machine, diags)
    }

    fn codes(diags: &[Diagnostic]) -> Vec<&str> {
        diags.iter().map(|d| d.code.as_str()).collect()
    }

    #[test]
    fn no_section_is_none_without_diagnostics() {
        assert_eq!(read_text("node_name: x\n"), (None, Vec::new()));
        assert_eq!(read_text("state_machine:\n"), (None, Vec::new()));
    }

    #[test]
    fn reads_states_triggers_transitions_and_actions_in_order() {
        let (m, diags) = read_text(
            "state_transitions:\n  state_machine_name: fsm\n  initial_state: a\n  terminal_states: [c]\n  states:\n    \
             - state_name: a\n      entry_actions: [log-it]\n      exit_actions: [log_it, save]\n      required_data: [id]\n    \
             - b\n    - state_name: c\n  transitions:\n    \
             - {from_state: a, to_state: b, trigger: go, conditions: [\"n > 2\", {expression: \"x magic\", condition_name: Magic}, {expression: \"y exists\", required: false}]}\n    \
             - {from_state: a, to_state: c, trigger: go}\n    \
             - {from_state: \"*\", to_state: c, trigger: stop-now, actions: [{action_name: tidy}, cleanup]}\n",
        );
        let m = m.unwrap();
        assert_eq!(codes(&diags), ["CG0035"]);
        assert_eq!(m.name.as_deref(), Some("fsm"));
        assert_eq!(m.states.iter().map(|s| s.variant.as_str()).collect::<Vec<_>>(), ["A", "B", "C"]);
        assert_eq!(m.states.iter().map(|s| s.terminal).collect::<Vec<_>>(), [false, false, true]);
        assert_eq!(m.states[0].required_data, ["id"]);
        // `log-it` and `log_it` are two actions; the second gets a free method name.
        let methods: Vec<&str> = m.actions.iter().map(|a| a.method.as_str()).collect();
        assert_eq!(methods, ["log_it", "log_it_2", "save"]);
        assert_eq!(m.states[0].entry_actions, [0]);
        assert_eq!(m.states[0].exit_actions, [1, 2]);
        assert_eq!(m.triggers.iter().map(|t| t.variant.as_str()).collect::<Vec<_>>(), ["Go", "StopNow"]);
        assert_eq!(m.transitions[2].from, Source::Any);
        assert_eq!(m.transitions[2].actions, ["tidy", "cleanup"]);
        let conditions = &m.transitions[0].conditions;
        assert!(matches!(conditions[0].test, ConditionTest::Check(_)));
        assert_eq!(conditions[1].test, ConditionTest::Guard(0));
        assert_eq!(m.guards[0].method, "guard_magic", "named from condition_name");
        assert!(!conditions[2].required);
    }

    #[test]
    fn errors_make_no_state_machine() {
        let (m, diags) = read_text("state_machine: [a]\n");
        assert_eq!((m, codes(&diags)), (None, vec!["CG0005"]));
        let (m, diags) = read_text(
            "state_machine:\n  initial_state: a\n  states: [a, a, b]\n  transitions: [{from_state: a, to_state: b}]\n",
        );
        assert!(m.is_none());
        assert_eq!(codes(&diags), ["CG0016", "CG0004"]);
        let (m, diags) = read_text("state_machine:\n  initial_state: a\n  states: [a, cmd-x, cmd_x]\n");
        assert!(m.is_none());
        assert_eq!(codes(&diags), ["CG0012"]);
    }

    #[test]
    fn a_fallback_after_a_conditional_transition_is_no_ambiguity() {
        let (m, diags) = read_text(
            "state_machine:\n  initial_state: a\n  states: [a, b, c]\n  transitions:\n    \
             - {from_state: a, to_state: b, trigger: go, conditions: [\"n > 1\"]}\n    \
             - {from_state: a, to_state: c, trigger: go, conditions: [\"n > 0\"]}\n    \
             - {from_state: a, to_state: a, trigger: go}\n",
        );
        assert!(m.is_some(), "{diags:?}");
        assert!(diags.is_empty(), "{diags:?}");
    }

    #[test]
    fn reachability_follows_wildcards() {
        let (m, diags) = read_text(
            "state_machine:\n  initial_state: a\n  states: [a, b, c]\n  transitions:\n    \
             - {from_state: \"*\", to_state: b, trigger: go}\n",
        );
        assert!(m.is_some());
        assert_eq!(codes(&diags), ["CG0033"]);
        assert!(diags[0].message.contains("`c`"), "{}", diags[0].message);
    }
}
