//! `state_machine.rs` of a node whose contract has a `state_machine` section
//! ([`crate::behaviour::state_machine`]): the `State` and `Trigger` enums, the transition table,
//! the pure transition function, the `StateMachineActions` trait people implement for actions
//! and guards, and tests over the table.
//!
//! The file uses only `serde` and `serde_json`, so it can be compiled and tested on its own.

use std::collections::BTreeMap;

use proc_macro2::{Literal, TokenStream};
use quote::quote;

use super::tokens::{Item, SharedItem, ident, inner_doc, plain_doc, render_unformatted_file, version_text};
use crate::behaviour::state_machine::condition::{self, Test};
use crate::behaviour::state_machine::{Check, ConditionTest, Source, StateMachine, Transition};
use crate::model::NodeModel;

/// The file's text.
pub(super) fn file(node: &NodeModel, m: &StateMachine) -> Result<String, String> {
    let c = &node.contract;
    let machine = m.name.as_deref().unwrap_or("state_machine");
    let inner = inner_doc(&format!(
        "The state machine `{machine}` of `{}` v{}: its states, triggers and transitions.",
        c.name.value,
        version_text(node)
    ));
    let mut helpers = Helpers::default();
    let transition_fn = transition_fn(m, &mut helpers)?;
    let error_type = if checks_data(m) { &ERROR_TYPE_CHECKING_DATA } else { &ERROR_TYPE };
    let mut items: Vec<Item> = vec![
        USES.item()?,
        state_enum(m, machine)?.into(),
        state_impl(m)?.into(),
        trigger_enum(m, machine)?.into(),
        DISPLAY_IMPLS.item()?,
        error_type.item()?,
        transition_table(m)?.into(),
        actions_trait(m, machine)?.into(),
        transition_fn.into(),
    ];
    items.push(action_runner(m, true)?.into());
    items.push(action_runner(m, false)?.into());
    items.push(STEP_FN.item()?);
    items.extend(helpers.items().into_iter().map(Item::from));
    items.push(tests(m)?.into());
    render_unformatted_file(&c.source.display, &inner, items)
}

/// What the scaffold template (`node.rs.jinja`) gets as `state_machine`: the trait methods to
/// write, `actions` (`method`, `wire`) and `guards` (`method`, `text`).
pub(super) fn scaffold_context(m: &StateMachine) -> BTreeMap<&'static str, Vec<BTreeMap<&'static str, String>>> {
    let actions =
        m.actions.iter().map(|a| BTreeMap::from([("method", a.method.clone()), ("wire", a.wire.clone())])).collect();
    let guards = m
        .guards
        .iter()
        .map(|g| {
            BTreeMap::from([
                ("method", g.method.clone()),
                ("text", g.text.split_whitespace().collect::<Vec<_>>().join(" ")),
            ])
        })
        .collect();
    BTreeMap::from([("actions", actions), ("guards", guards)])
}

fn state_ident(m: &StateMachine, i: usize) -> Result<proc_macro2::Ident, String> {
    ident(&m.states[i].variant)
}

fn trigger_ident(m: &StateMachine, i: usize) -> Result<proc_macro2::Ident, String> {
    ident(&m.triggers[i].variant)
}

fn state_enum(m: &StateMachine, machine: &str) -> Result<TokenStream, String> {
    let doc = plain_doc(&format!("A state of `{machine}`; serialized as the contract's state name."));
    let machine_doc = m.description.as_deref().map(plain_doc).unwrap_or_default();
    let variants = m
        .states
        .iter()
        .map(|s| {
            let v = ident(&s.variant)?;
            let wire = &s.name.value;
            let doc = plain_doc(s.description.as_deref().unwrap_or(&format!("`{wire}`.")));
            Ok(quote! { #doc #[serde(rename = #wire)] #v, })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(quote! {
        #doc
        #machine_doc
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum State { #(#variants)* }
    })
}

fn state_impl(m: &StateMachine) -> Result<TokenStream, String> {
    let all = (0..m.states.len()).map(|i| state_ident(m, i)).collect::<Result<Vec<_>, _>>()?;
    let count = Literal::usize_unsuffixed(all.len());
    let initial = state_ident(m, m.initial)?;
    let wires = m.states.iter().map(|s| s.name.value.as_str());
    let terminal = m
        .states
        .iter()
        .enumerate()
        .filter(|(_, s)| s.terminal)
        .map(|(i, _)| state_ident(m, i))
        .collect::<Result<Vec<_>, _>>()?;
    let is_terminal = if terminal.is_empty() {
        quote! { let _ = self; false }
    } else {
        quote! { matches!(self, #(State::#terminal)|*) }
    };
    let required = m.states.iter().map(|s| {
        let fields = &s.required_data;
        quote! { &[#(#fields),*] }
    });
    Ok(quote! {
        impl State {
            /// Where the state machine starts (`initial_state`).
            pub const INITIAL: State = State::#initial;

            /// Every state, in contract order.
            pub const ALL: [State; #count] = [#(State::#all),*];

            /// The contract's name of the state.
            pub const fn as_str(self) -> &'static str {
                match self { #(State::#all => #wires,)* }
            }

            /// Whether the state machine is done in this state (`is_terminal`, `terminal_states`).
            pub const fn is_terminal(self) -> bool {
                #is_terminal
            }

            /// The fields the data must have in this state (`required_data`).
            pub const fn required_data(self) -> &'static [&'static str] {
                match self { #(State::#all => #required,)* }
            }

            /// The fields of [`State::required_data`] that `data` lacks or has as null.
            pub fn missing_data(self, data: &Value) -> Vec<&'static str> {
                self.required_data().iter().copied().filter(|f| data.get(f).is_none_or(Value::is_null)).collect()
            }
        }
    })
}

fn trigger_enum(m: &StateMachine, machine: &str) -> Result<TokenStream, String> {
    let doc = plain_doc(&format!("A trigger of `{machine}`; serialized as the contract's trigger name."));
    let all = (0..m.triggers.len()).map(|i| trigger_ident(m, i)).collect::<Result<Vec<_>, _>>()?;
    let wires: Vec<&str> = m.triggers.iter().map(|t| t.wire.as_str()).collect();
    let docs = wires.iter().map(|w| plain_doc(&format!("`{w}`.")));
    let count = Literal::usize_unsuffixed(all.len());
    // A state machine without transitions has no trigger: an enum without variants, whose
    // `match self {}` is total.
    Ok(quote! {
        #doc
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum Trigger { #( #docs #[serde(rename = #wires)] #all, )* }

        impl Trigger {
            /// Every trigger, in order of first use in the contract.
            pub const ALL: [Trigger; #count] = [#(Trigger::#all),*];

            /// The contract's name of the trigger.
            pub const fn as_str(self) -> &'static str {
                match self { #(Trigger::#all => #wires,)* }
            }
        }
    })
}

// Items that name nothing of a machine, printed once per run ([`SharedItem`]).

static USES: SharedItem = SharedItem::new(|| {
    quote! {
        use serde::{Deserialize, Serialize};
        use serde_json::Value;
    }
});

static DISPLAY_IMPLS: SharedItem = SharedItem::new(|| {
    quote! {
        impl std::fmt::Display for State {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::fmt::Display for Trigger {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    }
});

/// Whether some state requires data, which [`transition`] then checks on entering it.
fn checks_data(m: &StateMachine) -> bool {
    m.states.iter().any(|s| !s.required_data.is_empty())
}

static ERROR_TYPE: SharedItem = SharedItem::new(|| error_type(false));
static ERROR_TYPE_CHECKING_DATA: SharedItem = SharedItem::new(|| error_type(true));

fn error_type(checks_data: bool) -> TokenStream {
    let missing_variant = checks_data.then(|| {
        quote! {
            /// The transition leads to `to`, but the data lacks `field`, which `to` requires.
            MissingData {
                /// The state the trigger came in.
                state: State,
                /// The trigger.
                trigger: Trigger,
                /// The state the transition leads to.
                to: State,
                /// The first of `to`'s required fields the data lacks (or has as null).
                field: &'static str,
            },
        }
    });
    let missing_display = checks_data.then(|| {
        quote! {
            TransitionError::MissingData { state, trigger, to, field } => write!(
                f,
                "trigger `{trigger}` in state `{state}` leads to `{to}`, which requires `{field}`: the data lacks it"
            ),
        }
    });
    quote! {
        /// Why [`transition`] refused a trigger.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum TransitionError {
            /// No transition leaves `state` on `trigger`.
            NoTransition {
                /// The state the trigger came in.
                state: State,
                /// The trigger.
                trigger: Trigger,
            },
            /// Transitions leave `state` on `trigger`, but a condition of each does not hold.
            ConditionRefused {
                /// The state the trigger came in.
                state: State,
                /// The trigger.
                trigger: Trigger,
                /// The condition (of the first such transition) that does not hold, as written.
                condition: &'static str,
            },
            #missing_variant
        }

        impl std::fmt::Display for TransitionError {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self {
                    TransitionError::NoTransition { state, trigger } => {
                        write!(f, "no transition leaves state `{state}` on trigger `{trigger}`")
                    }
                    TransitionError::ConditionRefused { state, trigger, condition } => write!(
                        f,
                        "trigger `{trigger}` in state `{state}` is refused: condition `{condition}` does not hold"
                    ),
                    #missing_display
                }
            }
        }

        impl std::error::Error for TransitionError {}
    }
}

fn transition_table(m: &StateMachine) -> Result<TokenStream, String> {
    let rows = m
        .transitions
        .iter()
        .map(|t| {
            let from = match t.from {
                Source::Any => quote!(None),
                Source::State(i) => {
                    let s = state_ident(m, i)?;
                    quote!(Some(State::#s))
                }
            };
            let trigger = trigger_ident(m, t.trigger)?;
            let to = state_ident(m, t.to)?;
            let checked = t.conditions.iter().filter(|c| c.required).map(|c| c.text.as_str());
            let unchecked = t.conditions.iter().filter(|c| !c.required).map(|c| c.text.as_str());
            let actions = &t.actions;
            Ok(quote! {
                TransitionSpec {
                    from: #from,
                    trigger: Trigger::#trigger,
                    to: State::#to,
                    conditions: &[#(#checked),*],
                    unchecked_conditions: &[#(#unchecked),*],
                    actions: &[#(#actions),*],
                },
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(quote! {
        /// One row of [`TRANSITIONS`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct TransitionSpec {
            /// `from_state`; `None` for `*`: any state without a transition of its own on the trigger.
            pub from: Option<State>,
            /// `trigger`.
            pub trigger: Trigger,
            /// `to_state`.
            pub to: State,
            /// The conditions that must all hold, as written.
            pub conditions: &'static [&'static str],
            /// Conditions marked `required: false`: listed, not evaluated.
            pub unchecked_conditions: &'static [&'static str],
            /// The `actions` of the transition, by name.
            pub actions: &'static [&'static str],
        }

        /// Every transition of the contract, in contract order. On one state and trigger the
        /// first row whose conditions hold is taken.
        pub const TRANSITIONS: &[TransitionSpec] = &[#(#rows)*];
    })
}

fn actions_trait(m: &StateMachine, machine: &str) -> Result<TokenStream, String> {
    let doc = plain_doc(&format!(
        "What people write for `{machine}`, in the node's `node.rs`: the states' entry and exit actions and the transition conditions the generator cannot evaluate (guards)."
    ));
    let mut methods = Vec::new();
    for (i, action) in m.actions.iter().enumerate() {
        let method = ident(&action.method)?;
        let role = |pick: fn(&crate::behaviour::state_machine::State) -> &Vec<usize>, what: &str| {
            m.states
                .iter()
                .filter(|s| pick(s).contains(&i))
                .map(|s| format!("{what} of `{}`", s.name.value))
                .collect::<Vec<_>>()
        };
        let mut roles = role(|s| &s.entry_actions, "entry action");
        roles.extend(role(|s| &s.exit_actions, "exit action"));
        let doc = plain_doc(&format!("`{}`: {}.", action.wire, roles.join(", ")));
        methods.push(quote! {
            #doc
            fn #method(&self, data: &Value) -> Result<(), Self::Error>;
        });
    }
    for guard in &m.guards {
        let method = ident(&guard.method)?;
        let doc = plain_doc(&format!(
            "Whether the condition `{}` holds for `data`; the generator cannot evaluate it. A transition with this condition is taken only when this returns true.",
            guard.text.replace('\n', " ")
        ));
        methods.push(quote! {
            #doc
            fn #method(&self, data: &Value) -> bool;
        });
    }
    Ok(quote! {
        #doc
        pub trait StateMachineActions {
            /// What a failed action returns.
            type Error;

            #(#methods)*
        }
    })
}

/// The generated helpers the checks use; each is emitted only when used.
#[derive(Default)]
struct Helpers {
    field: bool,
    equals: bool,
    number: bool,
    length: bool,
    contains: bool,
}

impl Helpers {
    fn items(&self) -> Vec<TokenStream> {
        let mut items = Vec::new();
        if self.field {
            items.push(quote! {
                /// The value at `path` in `data`, when every key on the way is there.
                fn field<'a>(data: &'a Value, path: &[&str]) -> Option<&'a Value> {
                    path.iter().try_fold(data, |value, key| value.get(key))
                }
            });
        }
        if self.equals {
            items.push(quote! {
                /// Whether `value` is `expected`: a string as is, a number by value, a boolean in any case.
                fn equals(value: &Value, expected: &str) -> bool {
                    match value {
                        Value::String(s) => s == expected,
                        Value::Number(n) => n.as_f64().zip(expected.parse::<f64>().ok()).is_some_and(|(a, b)| a == b),
                        Value::Bool(b) => expected.eq_ignore_ascii_case(if *b { "true" } else { "false" }),
                        _ => false,
                    }
                }
            });
        }
        if self.number {
            items.push(quote! {
                /// A number, or a string that holds one.
                fn number(value: &Value) -> Option<f64> {
                    match value {
                        Value::Number(n) => n.as_f64(),
                        Value::String(s) => s.trim().parse().ok(),
                        _ => None,
                    }
                }
            });
        }
        if self.length {
            items.push(quote! {
                /// The length of a string (in characters), list or mapping.
                fn length(value: &Value) -> Option<usize> {
                    match value {
                        Value::String(s) => Some(s.chars().count()),
                        Value::Array(items) => Some(items.len()),
                        Value::Object(entries) => Some(entries.len()),
                        _ => None,
                    }
                }
            });
        }
        if self.contains {
            items.push(quote! {
                /// Whether a string contains `part`, or a list has `part` as an item.
                fn contains(value: &Value, part: &str) -> bool {
                    match value {
                        Value::String(s) => s.contains(part),
                        Value::Array(items) => items.iter().any(|item| item.as_str() == Some(part)),
                        _ => false,
                    }
                }
            });
        }
        items
    }

    /// The boolean expression of `check` on `data`.
    fn check(&mut self, check: &Check) -> TokenStream {
        self.field = true;
        let path = &check.field;
        let value = quote!(field(data, &[#(#path),*]));
        match &check.test {
            Test::Exists => quote!(#value.is_some()),
            Test::NotExists => quote!(#value.is_none()),
            Test::Present => quote!(#value.is_some_and(|v| !v.is_null())),
            Test::Absent => quote!(#value.is_none_or(Value::is_null)),
            Test::Equals(expected) => {
                self.equals = true;
                quote!(#value.is_some_and(|v| equals(v, #expected)))
            }
            Test::NotEquals(expected) => {
                self.equals = true;
                quote!(#value.is_none_or(|v| !equals(v, #expected)))
            }
            Test::In(list) => {
                self.equals = true;
                quote!(#value.is_some_and(|v| [#(#list),*].iter().any(|e| equals(v, e))))
            }
            Test::NotIn(list) => {
                self.equals = true;
                quote!(#value.is_none_or(|v| ![#(#list),*].iter().any(|e| equals(v, e))))
            }
            Test::Compare(op, bound) => {
                self.number = true;
                let op: TokenStream = op.symbol().parse().unwrap_or_default();
                let bound = float(*bound);
                quote!(#value.and_then(number).is_some_and(|x| x #op #bound))
            }
            Test::MinLength(n) => {
                self.length = true;
                let n = Literal::usize_unsuffixed(*n);
                quote!(#value.and_then(length).is_some_and(|n| n >= #n))
            }
            Test::MaxLength(n) => {
                self.length = true;
                let n = Literal::usize_unsuffixed(*n);
                quote!(#value.and_then(length).is_some_and(|n| n <= #n))
            }
            Test::Contains(part) => {
                self.contains = true;
                quote!(#value.is_some_and(|v| contains(v, #part)))
            }
        }
    }
}

/// An `f64` literal (negative numbers as a negated literal: a literal token cannot be negative).
fn float(n: f64) -> TokenStream {
    let lit = Literal::f64_suffixed(n.abs());
    if n < 0.0 { quote!(-#lit) } else { quote!(#lit) }
}

/// The checks of a transition's required conditions, with their texts.
fn condition_exprs(
    m: &StateMachine,
    t: &Transition,
    helpers: &mut Helpers,
) -> Result<Vec<(TokenStream, String)>, String> {
    t.conditions
        .iter()
        .filter(|c| c.required)
        .map(|c| {
            let expr = match &c.test {
                ConditionTest::Check(check) => helpers.check(check),
                ConditionTest::Guard(g) => {
                    let method = ident(&m.guards[*g].method)?;
                    quote!(actions.#method(data))
                }
            };
            Ok((expr, c.text.clone()))
        })
        .collect()
}

fn transition_fn(m: &StateMachine, helpers: &mut Helpers) -> Result<TokenStream, String> {
    // Rows grouped by (from, trigger), exact sources before `*`, each group in contract order.
    let mut groups: Vec<((Source, usize), Vec<&Transition>)> = Vec::new();
    for t in &m.transitions {
        match groups.iter_mut().find(|(key, _)| *key == (t.from, t.trigger)) {
            Some((_, rows)) => rows.push(t),
            None => groups.push(((t.from, t.trigger), vec![t])),
        }
    }
    groups.sort_by_key(|((from, _), _)| matches!(from, Source::Any));
    let exact =
        |state: usize, trigger: usize| groups.iter().any(|((f, t), _)| *f == Source::State(state) && *t == trigger);
    let mut arms = Vec::new();
    let mut uses_data = false;
    let mut uses_actions = false;
    let mut negates = false;
    let mut covered = 0usize;
    for ((from, trigger), rows) in &groups {
        let pattern_state = match from {
            Source::State(i) => {
                covered += 1;
                let s = state_ident(m, *i)?;
                quote!(State::#s)
            }
            Source::Any => {
                let open = (0..m.states.len()).filter(|s| !exact(*s, *trigger)).count();
                if open == 0 {
                    // Every state has its own transition on this trigger: `*` never applies.
                    continue;
                }
                covered += open;
                quote!(_)
            }
        };
        let trigger_ident = trigger_ident(m, *trigger)?;
        let mut body = Vec::new();
        let mut refused: Option<TokenStream> = None;
        let mut ends_unconditionally = false;
        let last_has_conditions = rows.last().is_some_and(|t| t.conditions.iter().any(|c| c.required));
        for t in rows {
            let to = state_ident(m, t.to)?;
            let conditions = condition_exprs(m, t, helpers)?;
            uses_data |= !conditions.is_empty();
            uses_actions |= t.conditions.iter().any(|c| c.required && matches!(c.test, ConditionTest::Guard(_)));
            if conditions.is_empty() {
                body.push(quote!(Ok(State::#to)));
                ends_unconditionally = true;
                break;
            }
            if refused.is_none() && last_has_conditions {
                // The first conditional row names the condition that refused it, for the error.
                let tests = conditions.iter().map(|(expr, text)| quote!(if !(#expr) { #text }));
                body.push(quote!(let refused = #(#tests)else* else { return Ok(State::#to); };));
                negates = true;
                refused = Some(quote!(refused));
            } else {
                let all = match conditions.as_slice() {
                    [(single, _)] => single.clone(),
                    several => several
                        .iter()
                        .map(|(e, _)| quote!((#e)))
                        .reduce(|a, b| quote!(#a && #b))
                        .unwrap_or_else(|| quote!(true)),
                };
                body.push(quote!(if #all { return Ok(State::#to); }));
            }
        }
        if !ends_unconditionally {
            let condition = refused.ok_or("internal: a conditional transition without a refused condition")?;
            body.push(quote!(Err(TransitionError::ConditionRefused { state, trigger, condition: #condition })));
        }
        arms.push(quote!((#pattern_state, Trigger::#trigger_ident) => { #(#body)* }));
    }
    let refuse = quote!(Err(TransitionError::NoTransition { state, trigger }));
    let body = if arms.is_empty() {
        refuse
    } else {
        if covered < m.states.len() * m.triggers.len() {
            arms.push(quote!(_ => #refuse));
        }
        quote!(match (state, trigger) { #(#arms)* })
    };
    // The refusal tests read as the contract's conditions (`!(check)`), not as clippy's
    // simplification of them.
    let allow = negates.then(|| quote!(#[allow(clippy::nonminimal_bool)]));
    let data = if uses_data { quote!(data) } else { quote!(_data) };
    let actions = if uses_actions { quote!(actions) } else { quote!(_actions) };
    if !checks_data(m) {
        return Ok(quote! {
            /// The state after `trigger` in `state`. Transitions on one state and trigger are tried in
            /// contract order, and the first whose conditions hold for `data` is taken; a transition
            /// from `*` applies to states without one of their own. Guard conditions are asked of
            /// `actions`; nothing else runs (see [`run_exit_actions`] and [`run_entry_actions`]).
            #allow
            pub fn transition<A: StateMachineActions + ?Sized>(
                state: State,
                trigger: Trigger,
                #data: &Value,
                #actions: &A,
            ) -> Result<State, TransitionError> {
                #body
            }
        });
    }
    Ok(quote! {
        /// The state after `trigger` in `state`. Transitions on one state and trigger are tried in
        /// contract order, and the first whose conditions hold for `data` is taken; a transition
        /// from `*` applies to states without one of their own. The state it leads to must find
        /// its required data in `data` ([`State::required_data`]). Guard conditions are asked of
        /// `actions`; nothing else runs (see [`run_exit_actions`] and [`run_entry_actions`]).
        pub fn transition<A: StateMachineActions + ?Sized>(
            state: State,
            trigger: Trigger,
            data: &Value,
            actions: &A,
        ) -> Result<State, TransitionError> {
            let to = next_state(state, trigger, data, actions)?;
            match to.missing_data(data).first() {
                None => Ok(to),
                Some(&field) => Err(TransitionError::MissingData { state, trigger, to, field }),
            }
        }

        /// [`transition`] before the required data of the state it leads to is checked.
        #allow
        fn next_state<A: StateMachineActions + ?Sized>(
            state: State,
            trigger: Trigger,
            #data: &Value,
            #actions: &A,
        ) -> Result<State, TransitionError> {
            #body
        }
    })
}

/// `step`: a transition with its exit and entry actions, and its error type.
static STEP_FN: SharedItem = SharedItem::new(|| {
    quote! {
        /// Why [`step`] did not complete.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum StepError<E> {
            /// [`transition`] refused the trigger; no action ran.
            Refused(TransitionError),
            /// An exit action of the state being left failed; the state is unchanged.
            Exit(E),
            /// An entry action of `to` failed, after every exit action of the state left ran.
            Entry {
                /// The state being entered.
                to: State,
                /// The action's error.
                error: E,
            },
        }

        impl<E: std::fmt::Display> std::fmt::Display for StepError<E> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self {
                    StepError::Refused(refused) => refused.fmt(f),
                    StepError::Exit(error) => write!(f, "an exit action failed: {error}"),
                    StepError::Entry { to, error } => write!(f, "an entry action of `{to}` failed: {error}"),
                }
            }
        }

        impl<E: std::fmt::Debug + std::fmt::Display> std::error::Error for StepError<E> {}

        /// Moves from `state` on `trigger`: [`transition`] decides the next state, then the exit
        /// actions of `state` and the entry actions of the next state run in contract order (also
        /// when the transition leads back to `state`). A refused trigger runs no action.
        pub fn step<A: StateMachineActions + ?Sized>(
            state: State,
            trigger: Trigger,
            data: &Value,
            actions: &A,
        ) -> Result<State, StepError<A::Error>> {
            let to = transition(state, trigger, data, actions).map_err(StepError::Refused)?;
            run_exit_actions(state, data, actions).map_err(StepError::Exit)?;
            run_entry_actions(to, data, actions).map_err(|error| StepError::Entry { to, error })?;
            Ok(to)
        }
    }
});

fn action_runner(m: &StateMachine, entry: bool) -> Result<TokenStream, String> {
    let (name, key) = if entry { ("run_entry_actions", "entry_actions") } else { ("run_exit_actions", "exit_actions") };
    let name = ident(name)?;
    let mut arms = Vec::new();
    for (i, state) in m.states.iter().enumerate() {
        let list = if entry { &state.entry_actions } else { &state.exit_actions };
        if list.is_empty() {
            continue;
        }
        let s = state_ident(m, i)?;
        let calls = list.iter().map(|a| ident(&m.actions[*a].method)).collect::<Result<Vec<_>, _>>()?;
        arms.push((s, quote!(#(actions.#calls(data)?;)*)));
    }
    let doc = plain_doc(&format!("Runs the `{key}` of `state` in contract order; the first error stops them."));
    let body = if arms.is_empty() {
        quote! { let _ = (state, data, actions); }
    } else {
        match arms.as_slice() {
            [(only, calls)] if m.states.len() > 1 => quote! { if state == State::#only { #calls } },
            _ => {
                let arms = arms.iter().map(|(s, calls)| quote!(State::#s => { #calls }));
                let rest = (arms.len() < m.states.len()).then(|| quote!(_ => {}));
                quote! { match state { #(#arms)* #rest } }
            }
        }
    };
    Ok(quote! {
        #doc
        pub fn #name<A: StateMachineActions + ?Sized>(state: State, data: &Value, actions: &A) -> Result<(), A::Error> {
            #body
            Ok(())
        }
    })
}

/// Data under which every required check of `t` holds (guards are accepted by the test's
/// actions) and the `required` fields of the state it leads to are present, as JSON text.
/// Checks on one field get a value that satisfies all of them, when one of their own
/// witnesses does.
fn witness(t: &Transition, required: &[String]) -> String {
    let mut by_field: Vec<(&[String], Vec<&Test>)> = Vec::new();
    for c in t.conditions.iter().filter(|c| c.required) {
        if let ConditionTest::Check(check) = &c.test {
            match by_field.iter_mut().find(|(field, _)| *field == check.field.as_slice()) {
                Some((_, tests)) => tests.push(&check.test),
                None => by_field.push((&check.field, vec![&check.test])),
            }
        }
    }
    let mut root = serde_json::Map::new();
    for (field, tests) in by_field {
        let value =
            condition::witness_of_all(&tests).unwrap_or_else(|| tests.last().and_then(|t| condition::witness(t)));
        set_field(&mut root, field, value);
    }
    for field in required {
        root.entry(field.clone()).or_insert_with(|| serde_json::Value::from("present"));
    }
    serde_json::Value::Object(root).to_string()
}

/// Sets (or, for `None`, removes) the field at `path` below `map`, making mappings on the way.
fn set_field(map: &mut serde_json::Map<String, serde_json::Value>, path: &[String], value: Option<serde_json::Value>) {
    match path {
        [] => {}
        [last] => match value {
            Some(value) => {
                map.insert(last.clone(), value);
            }
            None => {
                map.remove(last);
            }
        },
        [first, rest @ ..] => {
            let entry = map.entry(first.clone()).or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
            if !entry.is_object() {
                *entry = serde_json::Value::Object(serde_json::Map::new());
            }
            if let serde_json::Value::Object(next) = entry {
                set_field(next, rest, value);
            }
        }
    }
}

fn tests(m: &StateMachine) -> Result<TokenStream, String> {
    let has_guards = !m.guards.is_empty();
    let mut methods = Vec::new();
    for action in &m.actions {
        let method = ident(&action.method)?;
        methods.push(quote! {
            fn #method(&self, _data: &Value) -> Result<(), ()> { Ok(()) }
        });
    }
    for guard in &m.guards {
        let method = ident(&guard.method)?;
        let text = &guard.text;
        methods.push(quote! {
            fn #method(&self, _data: &Value) -> bool { self.0.contains(&#text) }
        });
    }
    let guards_type = if has_guards {
        quote! {
            /// Holds the guards it lists, runs every action successfully.
            struct Guards(&'static [&'static str]);
        }
    } else {
        quote! {
            /// Runs every action successfully.
            struct Guards;
        }
    };
    let witnesses = m.transitions.iter().map(|t| {
        let data = witness(t, &m.states[t.to].required_data);
        let guards = t
            .conditions
            .iter()
            .filter(|c| c.required && matches!(c.test, ConditionTest::Guard(_)))
            .map(|c| c.text.as_str());
        quote!((#data, &[#(#guards),*]))
    });
    let count = Literal::usize_unsuffixed(m.transitions.len());
    // Rows whose target requires a field none of their conditions reads: without that field
    // the transition must be refused with `MissingData`.
    let without_required: Vec<TokenStream> = m
        .transitions
        .iter()
        .enumerate()
        .filter_map(|(row, t)| {
            let read = |field: &String| {
                t.conditions
                    .iter()
                    .any(|c| matches!(&c.test, ConditionTest::Check(check) if check.field.first() == Some(field)))
            };
            let field = m.states[t.to].required_data.iter().find(|f| !read(f))?;
            let required: Vec<String> = m.states[t.to].required_data.iter().filter(|f| *f != field).cloned().collect();
            let data = witness(t, &required);
            let row = Literal::usize_unsuffixed(row);
            Some(quote!((#row, #data, #field)))
        })
        .collect();
    let missing_data_test = (!without_required.is_empty()).then(|| {
        let rows = Literal::usize_unsuffixed(without_required.len());
        let guards_of_row = if has_guards { quote!(Guards(WITNESSES[row].1)) } else { quote!(Guards) };
        quote! {
            /// Rows whose target state requires a field none of their conditions reads: the row,
            /// its witness data without that field, and the field.
            const WITHOUT_REQUIRED: [(usize, &str, &str); #rows] = [#(#without_required),*];

            #[test]
            fn entering_a_state_without_its_required_data_is_refused() {
                for (row, data, field) in WITHOUT_REQUIRED {
                    let spec = &TRANSITIONS[row];
                    let data: Value = serde_json::from_str(data).unwrap();
                    for state in sources(spec) {
                        let refused = transition(state, spec.trigger, &data, &#guards_of_row);
                        let expected = TransitionError::MissingData { state, trigger: spec.trigger, to: spec.to, field };
                        assert_eq!(refused, Err(expected));
                    }
                }
            }
        }
    });
    let (guards_pat, guards_of, guards_none) = if has_guards {
        (quote!(guards), quote!(Guards(guards)), quote!(Guards(&[])))
    } else {
        (quote!(_guards), quote!(Guards), quote!(Guards))
    };
    // Without transitions `Trigger` has no value, and code after making one is unreachable.
    let trigger_names = (!m.triggers.is_empty()).then(|| {
        quote! {
            for trigger in Trigger::ALL {
                let wire = Value::from(trigger.as_str());
                let parsed: Trigger = serde_json::from_value(wire.clone()).unwrap();
                assert_eq!(parsed, trigger);
                assert_eq!(serde_json::to_value(trigger).unwrap(), wire);
            }
        }
    });
    Ok(quote! {
        #[cfg(test)]
        mod tests {
            use super::*;

            #guards_type

            impl StateMachineActions for Guards {
                type Error = ();

                #(#methods)*
            }

            /// For each row of `TRANSITIONS`: data and guards under which its conditions hold.
            const WITNESSES: [(&str, &[&str]); #count] = [#(#witnesses),*];

            /// The states a row applies to.
            fn sources(row: &TransitionSpec) -> Vec<State> {
                match row.from {
                    Some(state) => vec![state],
                    None => State::ALL
                        .into_iter()
                        .filter(|s| !TRANSITIONS.iter().any(|t| t.from == Some(*s) && t.trigger == row.trigger))
                        .collect(),
                }
            }

            #[test]
            fn every_declared_transition_is_taken() {
                for (row, (data, #guards_pat)) in TRANSITIONS.iter().zip(WITNESSES) {
                    let data: Value = serde_json::from_str(data).unwrap();
                    for state in sources(row) {
                        let taken = transition(state, row.trigger, &data, &#guards_of);
                        assert_eq!(taken, Ok(row.to), "{state} on {}", row.trigger);
                    }
                }
            }

            #missing_data_test

            #[test]
            fn every_undeclared_pair_is_refused() {
                for state in State::ALL {
                    for trigger in Trigger::ALL {
                        let declared = TRANSITIONS.iter().any(|t| t.trigger == trigger && sources(t).contains(&state));
                        let result = transition(state, trigger, &Value::Null, &#guards_none);
                        if declared {
                            assert_ne!(result, Err(TransitionError::NoTransition { state, trigger }));
                        } else {
                            assert_eq!(result, Err(TransitionError::NoTransition { state, trigger }));
                        }
                    }
                }
            }

            #[test]
            fn names_are_the_contracts() {
                for state in State::ALL {
                    let wire = Value::from(state.as_str());
                    let parsed: State = serde_json::from_value(wire.clone()).unwrap();
                    assert_eq!(parsed, state);
                    assert_eq!(serde_json::to_value(state).unwrap(), wire);
                }
                #trigger_names
                let initial_is_declared = State::ALL.contains(&State::INITIAL);
                assert!(initial_is_declared);
            }
        }
    })
}
