//! Hand-written tests of the state machine generated from `valid_every_form/contract.yaml`
//! (`valid_every_form/expected.rs`): what the generated tests cannot say on their own, such as
//! which condition a refusal names, the order of actions and the fallback after a refusal.
//! Compiled next to the emitted files by `codegen/tests/state_machine.rs`.

use std::cell::RefCell;

use serde_json::{Value, json};

use super::valid_every_form::{
    State, StateMachineActions, StepError, TRANSITIONS, TransitionError, Trigger, run_entry_actions, run_exit_actions,
    step, transition,
};

/// Records the actions it runs; the warehouse guard answers `capacity`.
struct Recorder {
    capacity: bool,
    ran: RefCell<Vec<&'static str>>,
}

impl Recorder {
    fn new(capacity: bool) -> Self {
        Self { capacity, ran: RefCell::new(Vec::new()) }
    }

    fn record(&self, action: &'static str) -> Result<(), String> {
        self.ran.borrow_mut().push(action);
        if action == "send_receipt" { Err("mail server down".to_owned()) } else { Ok(()) }
    }
}

impl StateMachineActions for Recorder {
    type Error = String;

    fn reserve_stock(&self, _data: &Value) -> Result<(), String> {
        self.record("reserve_stock")
    }

    fn send_receipt(&self, _data: &Value) -> Result<(), String> {
        self.record("send_receipt")
    }

    fn notify_warehouse(&self, _data: &Value) -> Result<(), String> {
        self.record("notify_warehouse")
    }

    fn guard_warehouse_has_capacity(&self, _data: &Value) -> bool {
        self.capacity
    }
}

fn ship_data() -> Value {
    json!({"address": {"country": "DE"}, "items": [1, 2], "tags": ["express"], "weight": "12.5", "status": "open"})
}

#[test]
fn conditions_are_checked_in_order_and_a_refusal_names_the_first_that_fails() {
    let actions = Recorder::new(false);
    assert_eq!(transition(State::Paid, Trigger::Ship, &ship_data(), &actions), Ok(State::Shipped));
    let mut data = ship_data();
    data["items"] = json!([]);
    assert_eq!(
        transition(State::Paid, Trigger::Ship, &data, &actions),
        Err(TransitionError::ConditionRefused {
            state: State::Paid,
            trigger: Trigger::Ship,
            condition: "items min_length 1"
        })
    );
    data["hold"] = Value::Null;
    data["items"] = json!([1]);
    let refused = transition(State::Paid, Trigger::Ship, &data, &actions).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "trigger `ship` in state `paid` is refused: condition `hold not_exists` does not hold"
    );
}

#[test]
fn a_refused_transition_falls_through_to_the_next_on_the_same_trigger() {
    // `items` fails the first transition; the guard decides the second.
    let data = json!({"items": []});
    assert_eq!(transition(State::Paid, Trigger::Ship, &data, &Recorder::new(true)), Ok(State::ShippedLate));
    // Without conditions, the second payment transition is the fallback of the first.
    let paid = json!({"amount": 3, "currency": "EUR", "payment": {"method": null}, "order_id": "o-1"});
    assert_eq!(transition(State::Placed, Trigger::PaymentReceived, &paid, &Recorder::new(false)), Ok(State::Paid));
    let unpaid = json!({"amount": "0", "currency": "EUR", "payment": {"method": "card"}});
    assert_eq!(transition(State::Placed, Trigger::PaymentReceived, &unpaid, &Recorder::new(false)), Ok(State::Review));
}

#[test]
fn numbers_compare_by_value_and_equality_reads_numbers_and_strings() {
    let approve = |mut data: Value| {
        // `paid` requires both.
        data["order_id"] = json!("o-1");
        data["amount"] = json!(3);
        transition(State::Review, Trigger::Approve, &data, &Recorder::new(false))
    };
    assert_eq!(approve(json!({"approved_by": "ann", "priority": -1, "risk": 0.5, "attempt": 1.0})), Ok(State::Paid));
    assert_eq!(approve(json!({"approved_by": "ann", "priority": "2", "risk": "0.1", "attempt": "1"})), Ok(State::Paid));
    let refused = approve(json!({"approved_by": null, "priority": 0, "risk": 0, "attempt": 1}));
    assert_eq!(
        refused,
        Err(TransitionError::ConditionRefused {
            state: State::Review,
            trigger: Trigger::Approve,
            condition: "approved_by is_present"
        })
    );
    let risky = approve(json!({"approved_by": "ann", "priority": 0, "risk": 0.75, "attempt": 1}));
    assert!(matches!(risky, Err(TransitionError::ConditionRefused { condition: "risk < 0.75", .. })));
}

#[test]
fn the_wildcard_applies_to_every_state_and_undeclared_pairs_are_refused() {
    let none = Recorder::new(false);
    for state in State::ALL {
        assert_eq!(transition(state, Trigger::Cancel, &Value::Null, &none), Ok(State::Cancelled));
    }
    let refused = transition(State::Delivered, Trigger::Ship, &Value::Null, &none).unwrap_err();
    assert_eq!(refused, TransitionError::NoTransition { state: State::Delivered, trigger: Trigger::Ship });
    assert_eq!(refused.to_string(), "no transition leaves state `delivered` on trigger `ship`");
    assert!(TRANSITIONS.iter().any(|row| row.from.is_none() && row.trigger == Trigger::Cancel));
}

#[test]
fn actions_run_in_contract_order_and_stop_at_the_first_error() {
    let actions = Recorder::new(false);
    assert_eq!(run_exit_actions(State::Placed, &Value::Null, &actions), Ok(()));
    assert_eq!(run_entry_actions(State::Paid, &Value::Null, &actions), Err("mail server down".to_owned()));
    assert_eq!(run_entry_actions(State::Shipped, &Value::Null, &actions), Ok(()));
    assert_eq!(run_entry_actions(State::Review, &Value::Null, &actions), Ok(()));
    assert_eq!(*actions.ran.borrow(), ["reserve_stock", "send_receipt", "notify_warehouse"]);
}

#[test]
fn states_know_their_flags_and_data() {
    assert_eq!(State::INITIAL, State::Placed);
    let terminal: Vec<State> = State::ALL.into_iter().filter(|s| s.is_terminal()).collect();
    assert_eq!(terminal, [State::Delivered, State::Cancelled]);
    assert_eq!(State::Paid.required_data(), ["order_id", "amount"]);
    assert_eq!(State::Paid.missing_data(&json!({"order_id": 7, "amount": null})), ["amount"]);
    assert_eq!(serde_json::to_string(&State::ShippedLate).unwrap(), "\"shipped_late\"");
    assert_eq!(serde_json::from_str::<Trigger>("\"payment_received\"").unwrap(), Trigger::PaymentReceived);
    let unchecked = TRANSITIONS[0].unchecked_conditions;
    assert_eq!(unchecked, ["note max_length 200"]);
}

#[test]
fn entering_a_state_needs_its_required_data() {
    let approval = json!({"approved_by": "ann", "priority": 0, "risk": 0.1, "attempt": 1, "amount": 3});
    assert_eq!(
        transition(State::Review, Trigger::Approve, &approval, &Recorder::new(false)),
        Err(TransitionError::MissingData {
            state: State::Review,
            trigger: Trigger::Approve,
            to: State::Paid,
            field: "order_id"
        })
    );
    let mut complete = approval.clone();
    complete["order_id"] = json!(null);
    assert!(transition(State::Review, Trigger::Approve, &complete, &Recorder::new(false)).is_err(), "null is missing");
    complete["order_id"] = json!("o-1");
    assert_eq!(transition(State::Review, Trigger::Approve, &complete, &Recorder::new(false)), Ok(State::Paid));
}

#[test]
fn a_step_runs_the_exit_actions_then_the_entry_actions() {
    let paid = json!({"amount": 3, "currency": "EUR", "payment": {"method": "card"}, "order_id": "o-1"});
    let actions = Recorder::new(false);
    // `paid`'s entry actions: `send_receipt` fails (the mail server is down), after `reserve_stock`
    // (exit of `placed`) ran.
    assert_eq!(
        step(State::Placed, Trigger::PaymentReceived, &paid, &actions),
        Err(StepError::Entry { to: State::Paid, error: "mail server down".to_owned() })
    );
    assert_eq!(*actions.ran.borrow(), ["reserve_stock", "send_receipt"]);
    // A refused trigger runs nothing.
    let actions = Recorder::new(false);
    assert_eq!(
        step(State::Delivered, Trigger::PaymentReceived, &paid, &actions),
        Err(StepError::Refused(TransitionError::NoTransition { state: State::Delivered, trigger: Trigger::PaymentReceived }))
    );
    assert!(actions.ran.borrow().is_empty());
    // `shipped` has `notify-warehouse` as entry action and `paid` no exit action.
    let actions = Recorder::new(true);
    assert_eq!(step(State::Paid, Trigger::Ship, &ship_data(), &actions), Ok(State::Shipped));
    assert_eq!(*actions.ran.borrow(), ["notify_warehouse"]);
}
