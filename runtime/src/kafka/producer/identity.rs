//! Detects an idempotent producer that can no longer obtain a producer id while a broker
//! answers it, so the pool can replace it instead of failing every message until restart.
//!
//! An idempotent producer that lost messages (they timed out in an outage) must bump its
//! epoch before it may send again: it asks the broker for a new epoch of its producer id and
//! waits. librdkafka retries that request forever when the broker answers with a retriable
//! error, so a broker that never grants it wedges the producer: every later message times
//! out while the broker is up. tansu 0.6 is such a broker (it answers every epoch bump with
//! UNKNOWN_SERVER_ERROR); a Kafka broker whose coordinator is stuck is another.
//!
//! librdkafka reports its idempotence state in the statistics it emits every
//! `statistics.interval.ms`. The states in which it waits for a producer id from a reachable
//! broker run the stall clock; having an id (`Assigned`) or having no broker to ask
//! (`WaitTransport`: an outage, which a new producer would not end) stops it. A clock that
//! reaches the limit is a stall.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often librdkafka reports the state this module watches: the stall is seen at most
/// this late.
pub(super) const STATISTICS_INTERVAL: Duration = Duration::from_secs(1);

/// The stall clock of one producer.
#[derive(Debug)]
pub(super) struct IdentityWatch {
    limit: Duration,
    waiting_since: Mutex<Option<Instant>>,
}

impl IdentityWatch {
    pub(super) fn new(limit: Duration) -> Self {
        Self { limit, waiting_since: Mutex::new(None) }
    }

    /// Feeds one statistics report seen at `now`. Returns the reason to replace the producer
    /// once it has waited for a producer id for `limit` or longer.
    pub(super) fn observe(&self, statistics: &[u8], now: Instant) -> Option<String> {
        let state = idempotence_state(statistics)?;
        let mut since = self.waiting_since.lock().unwrap_or_else(|p| p.into_inner());
        if !waits_for_producer_id(state) {
            *since = None;
            return None;
        }
        let started = *since.get_or_insert(now);
        let waited = now.saturating_duration_since(started);
        (waited >= self.limit).then(|| {
            format!(
                "the idempotent producer has waited {}s for a producer id from a reachable broker \
                 (librdkafka state {state}); a new producer asks for a new one",
                waited.as_secs()
            )
        })
    }
}

/// States in which librdkafka asks a broker it can reach for a producer id (or drains before
/// asking). `WaitTransport` is left out: it has no broker to ask.
fn waits_for_producer_id(state: &str) -> bool {
    matches!(state, "RequestPID" | "WaitPID" | "DrainReset" | "DrainBump")
}

/// The `eos.idemp_state` of a librdkafka statistics report, found without parsing the whole
/// report (it lists every broker, topic and partition, and arrives every second).
fn idempotence_state(statistics: &[u8]) -> Option<&str> {
    const KEY: &[u8] = b"\"idemp_state\"";
    let after_key = statistics.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    // librdkafka writes `"idemp_state": "Assigned"`; any JSON whitespace is accepted.
    let rest = &statistics[after_key..];
    let colon = rest.iter().position(|b| !b.is_ascii_whitespace())?;
    if rest[colon] != b':' {
        return None;
    }
    let open = colon + 1 + rest[colon + 1..].iter().position(|b| !b.is_ascii_whitespace())?;
    if rest[open] != b'"' {
        return None;
    }
    let len = rest[open + 1..].iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&rest[open + 1..open + 1 + len]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(state: &str) -> Vec<u8> {
        // The layout librdkafka 2.12 writes.
        format!(r#"{{ "name": "p", "brokers":{{ }}, "eos": {{ "idemp_state": "{state}", "idemp_stateage": 12 }} }}"#)
            .into_bytes()
    }

    #[test]
    fn the_state_is_read_from_the_eos_section() {
        assert_eq!(idempotence_state(&report("WaitPID")), Some("WaitPID"));
        assert_eq!(idempotence_state(br#"{"name":"p","eos":{}}"#), None);
        assert_eq!(idempotence_state(br#"{"eos":{"idemp_state":"Assigned"}}"#), Some("Assigned"));
        assert_eq!(idempotence_state(br#"{"eos":{"idemp_state":"Wait"#), None);
        assert_eq!(idempotence_state(br#"{"eos":{"idemp_state": 3}}"#), None);
    }

    #[test]
    fn waiting_for_a_producer_id_past_the_limit_is_a_stall() {
        let watch = IdentityWatch::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(watch.observe(&report("RequestPID"), t0), None);
        assert_eq!(watch.observe(&report("WaitPID"), t0 + Duration::from_secs(9)), None);
        let reason = watch.observe(&report("RequestPID"), t0 + Duration::from_secs(10)).expect("stalled");
        assert!(reason.contains("10s") && reason.contains("RequestPID"), "{reason}");
    }

    #[test]
    fn an_assigned_id_or_an_unreachable_broker_stops_the_clock() {
        let watch = IdentityWatch::new(Duration::from_secs(10));
        let t0 = Instant::now();
        watch.observe(&report("DrainBump"), t0);
        watch.observe(&report("Assigned"), t0 + Duration::from_secs(5));
        assert_eq!(watch.observe(&report("WaitPID"), t0 + Duration::from_secs(12)), None);
        watch.observe(&report("WaitTransport"), t0 + Duration::from_secs(13));
        assert_eq!(watch.observe(&report("WaitPID"), t0 + Duration::from_secs(30)), None);
        assert!(watch.observe(&report("WaitPID"), t0 + Duration::from_secs(40)).is_some());
    }

    #[test]
    fn a_report_without_the_state_changes_nothing() {
        let watch = IdentityWatch::new(Duration::from_secs(1));
        let t0 = Instant::now();
        watch.observe(&report("WaitPID"), t0);
        assert_eq!(watch.observe(b"{}", t0 + Duration::from_secs(5)), None);
        assert!(watch.observe(&report("WaitPID"), t0 + Duration::from_secs(5)).is_some());
    }
}
