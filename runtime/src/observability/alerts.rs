//! The alert book: raised alerts, de-duplicated by name while unresolved, resolved by id.
//!
//! Rules:
//! - While an alert of a name is unresolved, raising the name again updates that alert (its
//!   severity, message and details become the new ones; `last_seen_at` and `occurrences`
//!   advance) and adds none. Once it is resolved, the next raise adds a new alert.
//! - Ids are `{name}_{epoch seconds}_{sequence}`, unique within the book.
//! - Resolving marks the alert resolved (kept, for the record); resolving a resolved alert
//!   again is harmless and returns it unchanged; an unknown id is `NOT_FOUND`.
//! - Alerts are listed newest first (by when they were raised).
//! - Retention: an alert whose last activity (its resolution, or else its last raise) is
//!   older than the retention is dropped; so an unresolved alert whose condition has not been
//!   seen for that long goes too. Pruning happens on every raise and every read.
//! - The collector never resolves an alert itself: a condition that came and went stays on
//!   record until someone resolves it.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Map, Value};

use super::clock::Clock;
use crate::error::{ErrorCode, OnexError};
use crate::models::observability::{Alert, AlertSeverity};

/// An alert to raise.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertSpec {
    /// The name alerts are de-duplicated by.
    pub name: String,
    /// How bad.
    pub severity: AlertSeverity,
    /// What happened.
    pub message: String,
    /// The figures behind it.
    pub details: Map<String, Value>,
}

impl AlertSpec {
    /// An alert named `name` without details.
    pub fn new(name: impl Into<String>, severity: AlertSeverity, message: impl Into<String>) -> Self {
        Self { name: name.into(), severity, message: message.into(), details: Map::new() }
    }

    /// Adds one figure to the details.
    pub fn with_detail(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.details.insert(key.into(), value.into());
        self
    }
}

/// What a raise did.
#[derive(Debug, Clone, PartialEq)]
pub enum Raised {
    /// A new alert.
    New(Alert),
    /// The unresolved alert of that name, updated.
    Updated(Alert),
}

impl Raised {
    /// The alert, new or updated.
    pub fn alert(&self) -> &Alert {
        match self {
            Self::New(alert) | Self::Updated(alert) => alert,
        }
    }
}

/// The alerts of one observability instance.
pub struct AlertBook {
    clock: Arc<dyn Clock>,
    retention: TimeDelta,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// In the order they were raised (oldest first).
    alerts: Vec<Alert>,
    /// The next id's sequence number.
    next: u64,
}

impl AlertBook {
    /// An empty book keeping alerts for `retention`.
    pub fn new(clock: Arc<dyn Clock>, retention: TimeDelta) -> Self {
        Self { clock, retention, state: Mutex::new(State::default()) }
    }

    /// Raises `spec`: a new alert, or the update of the unresolved one of its name.
    pub fn raise(&self, spec: AlertSpec) -> Raised {
        let now = self.clock.now();
        let mut state = self.lock(now);
        if let Some(alert) = state.alerts.iter_mut().find(|a| !a.resolved && a.name == spec.name) {
            alert.severity = spec.severity;
            alert.message = spec.message;
            alert.details = spec.details;
            alert.last_seen_at = now;
            alert.occurrences += 1;
            return Raised::Updated(alert.clone());
        }
        let sequence = state.next;
        state.next += 1;
        let alert = Alert {
            id: format!("{}_{}_{sequence}", spec.name, now.timestamp()),
            name: spec.name,
            severity: spec.severity,
            message: spec.message,
            details: spec.details,
            created_at: now,
            last_seen_at: now,
            occurrences: 1,
            resolved: false,
            resolved_at: None,
        };
        state.alerts.push(alert.clone());
        Raised::New(alert)
    }

    /// Resolves the alert `id`; `NOT_FOUND` when the book has none of that id.
    pub fn resolve(&self, id: &str) -> Result<Alert, OnexError> {
        let now = self.clock.now();
        let mut state = self.lock(now);
        let Some(alert) = state.alerts.iter_mut().find(|a| a.id == id) else {
            return Err(OnexError::new(
                ErrorCode::NotFound,
                format!("no alert has the id '{}' (it may have passed its retention)", super::names::shorten(id)),
            )
            .with_detail("field", "alert_id"));
        };
        if !alert.resolved {
            alert.resolved = true;
            alert.resolved_at = Some(now);
        }
        Ok(alert.clone())
    }

    /// The alerts of `severity` (all when `None`), only the unresolved ones when
    /// `active_only`, newest first.
    pub fn alerts(&self, severity: Option<AlertSeverity>, active_only: bool) -> Vec<Alert> {
        let state = self.lock(self.clock.now());
        state
            .alerts
            .iter()
            .rev()
            .filter(|a| severity.is_none_or(|s| a.severity == s) && (!active_only || !a.resolved))
            .cloned()
            .collect()
    }

    /// Unresolved alerts.
    pub fn active_count(&self) -> usize {
        self.lock(self.clock.now()).alerts.iter().filter(|a| !a.resolved).count()
    }

    /// The state, with alerts past their retention at `now` dropped.
    fn lock(&self, now: DateTime<Utc>) -> MutexGuard<'_, State> {
        // Every change is made whole under the lock: a panic elsewhere cannot leave it torn.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let cutoff = now - self.retention;
        state.alerts.retain(|a| a.resolved_at.unwrap_or(a.last_seen_at) >= cutoff);
        state
    }
}

impl std::fmt::Debug for AlertBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("AlertBook")
            .field("retention", &self.retention)
            .field("alerts", &state.alerts.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observability::clock::ManualClock;

    fn book() -> (Arc<ManualClock>, AlertBook) {
        let clock = Arc::new(ManualClock::new(DateTime::from_timestamp(1_700_000_000, 0).unwrap()));
        let book = AlertBook::new(clock.clone(), TimeDelta::hours(24));
        (clock, book)
    }

    #[test]
    fn a_second_raise_of_an_unresolved_name_updates_the_alert() {
        let (clock, book) = book();
        let first = book.raise(AlertSpec::new("queue_high", AlertSeverity::Medium, "queue at 85 %"));
        assert!(matches!(first, Raised::New(_)));
        clock.advance(TimeDelta::seconds(30));
        let second = book.raise(AlertSpec::new("queue_high", AlertSeverity::Medium, "queue at 95 %"));
        let Raised::Updated(updated) = second else { panic!("a duplicate was added: {second:?}") };
        assert_eq!(updated.id, first.alert().id);
        assert_eq!(updated.occurrences, 2);
        assert_eq!(updated.message, "queue at 95 %");
        assert_eq!(updated.last_seen_at, clock.now());
        assert_eq!(updated.created_at, first.alert().created_at);
        assert_eq!(book.alerts(None, false).len(), 1);
    }

    #[test]
    fn after_resolution_the_same_name_raises_a_new_alert_with_a_new_id() {
        let (_clock, book) = book();
        let first = book.raise(AlertSpec::new("x", AlertSeverity::High, "m")).alert().clone();
        let resolved = book.resolve(&first.id).unwrap();
        assert!(resolved.resolved && resolved.resolved_at.is_some());
        // Same second: the sequence keeps the ids apart.
        let second = book.raise(AlertSpec::new("x", AlertSeverity::High, "m"));
        assert!(matches!(second, Raised::New(_)));
        assert_ne!(second.alert().id, first.id);
        assert_eq!(book.alerts(None, true).len(), 1);
        assert_eq!(book.alerts(None, false).len(), 2);
        assert_eq!(book.active_count(), 1);
    }

    #[test]
    fn resolving_an_unknown_id_is_not_found_and_resolving_twice_is_harmless() {
        let (clock, book) = book();
        let error = book.resolve("nope").unwrap_err();
        assert_eq!(error.code(), ErrorCode::NotFound);
        let id = book.raise(AlertSpec::new("x", AlertSeverity::Low, "m")).alert().id.clone();
        let once = book.resolve(&id).unwrap();
        clock.advance(TimeDelta::seconds(5));
        assert_eq!(book.resolve(&id).unwrap(), once);
    }

    #[test]
    fn alerts_are_listed_newest_first_and_filtered_by_severity() {
        let (clock, book) = book();
        for (name, severity) in
            [("a", AlertSeverity::Critical), ("b", AlertSeverity::High), ("c", AlertSeverity::Critical)]
        {
            book.raise(AlertSpec::new(name, severity, "m"));
            clock.advance(TimeDelta::seconds(1));
        }
        let names = |alerts: Vec<Alert>| alerts.into_iter().map(|a| a.name).collect::<Vec<_>>();
        assert_eq!(names(book.alerts(None, true)), ["c", "b", "a"]);
        assert_eq!(names(book.alerts(Some(AlertSeverity::Critical), true)), ["c", "a"]);
        assert_eq!(names(book.alerts(Some(AlertSeverity::Low), true)), Vec::<String>::new());
    }

    #[test]
    fn alerts_past_their_retention_are_dropped() {
        let (clock, book) = book();
        let stale = book.raise(AlertSpec::new("stale", AlertSeverity::High, "m")).alert().id.clone();
        let resolved = book.raise(AlertSpec::new("resolved", AlertSeverity::High, "m")).alert().id.clone();
        clock.advance(TimeDelta::hours(20));
        book.resolve(&resolved).unwrap();
        book.raise(AlertSpec::new("fresh", AlertSeverity::High, "m"));
        clock.advance(TimeDelta::hours(5));
        // 25 h after its last raise the stale one is gone; the resolution 5 h ago keeps the other.
        let names: Vec<_> = book.alerts(None, false).into_iter().map(|a| a.name).collect();
        assert_eq!(names, ["fresh", "resolved"]);
        assert_eq!(book.resolve(&stale).unwrap_err().code(), ErrorCode::NotFound);
    }
}
