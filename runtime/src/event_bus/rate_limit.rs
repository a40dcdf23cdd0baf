//! Per-caller rate limits: a token bucket per caller that starts full,
//! so a caller's first request always passes (the original started empty and dropped it).
//! A caller that empties its bucket is refused for the rule's penalty period.
//!
//! Batches (one request costing several tokens, from one caller or several):
//! - admission is all or nothing: a batch is admitted only if every caller in it is, and a
//!   refused batch takes no caller's tokens (the refused caller alone gets its penalty);
//! - a batch costing more than the burst is admitted when its caller's bucket is full and the
//!   cost is within one minute of the rate: the bucket goes below zero and the caller is
//!   admitted again only once the rate has paid it back, so the sustained rate still holds;
//! - a batch costing more than that is refused with a `VALIDATION_ERROR` that says how to split
//!   it; no wait would ever admit it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{ErrorCode, OnexError};

/// One rule: a sustained rate, a burst and a penalty.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitRule {
    /// Sustained requests per minute.
    pub per_minute: u32,
    /// Bucket size: requests allowed back to back.
    pub burst: u32,
    /// How long a caller that hit the limit is refused.
    pub penalty: Duration,
}

impl RateLimitRule {
    /// `event_publish`: 1000/min, burst 100, 30 s penalty.
    pub const EVENT_PUBLISH: Self = Self { per_minute: 1000, burst: 100, penalty: Duration::from_secs(30) };
    /// `database_query`: 500/min, burst 50, 60 s penalty.
    pub const DATABASE_QUERY: Self = Self { per_minute: 500, burst: 50, penalty: Duration::from_secs(60) };
    /// `health_check`: 120/min, burst 10, 5 s penalty.
    pub const HEALTH_CHECK: Self = Self { per_minute: 120, burst: 10, penalty: Duration::from_secs(5) };
    /// `admin_operation`: 10/min, burst 3, 300 s penalty.
    pub const ADMIN_OPERATION: Self = Self { per_minute: 10, burst: 3, penalty: Duration::from_secs(300) };
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    refilled_at: Instant,
    blocked_until: Option<Instant>,
}

/// Token buckets keyed by caller. Thread-safe; time is passed in so tests control it.
#[derive(Debug)]
pub struct RateLimiter {
    rule: RateLimitRule,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// Buckets kept before idle ones (full, not blocked) are pruned.
const PRUNE_ABOVE: usize = 10_000;

impl RateLimiter {
    /// A limiter applying `rule` to every caller.
    pub fn new(rule: RateLimitRule) -> Self {
        Self { rule, buckets: Mutex::default() }
    }

    /// The rule.
    pub fn rule(&self) -> RateLimitRule {
        self.rule
    }

    /// Takes `cost` tokens from `caller`'s bucket at `now`, or refuses with
    /// `INTEGRATION_SERVICE_UNAVAILABLE` (details: `reason = rate_limited`, `caller`,
    /// `retry_after_ms`); see [`RateLimiter::check_all`].
    ///
    /// One caller's request, the publish path of every event: judged in place, with one lookup
    /// and no allocation once the caller has a bucket. The rules are [`RateLimiter::check_all`]'s.
    pub fn check(&self, caller: &str, cost: u32, now: Instant) -> Result<(), OnexError> {
        let rule = self.rule;
        let cost = u64::from(cost.max(1));
        if cost > u64::from(self.max_cost()) {
            return Err(too_large(caller, cost, rule));
        }
        let mut buckets = self.buckets(now);
        let outcome = match buckets.get_mut(caller) {
            Some(bucket) => judge(bucket, cost, rule, now),
            None => {
                let mut bucket = Bucket::full(rule, now);
                let outcome = judge(&mut bucket, cost, rule, now);
                buckets.insert(caller.to_owned(), bucket);
                outcome
            }
        };
        outcome.map_err(|retry_after| refused(caller, retry_after))
    }

    /// The most one request of a caller may cost: a minute of the rate, or the burst if larger.
    pub fn max_cost(&self) -> u32 {
        self.rule.per_minute.max(self.rule.burst)
    }

    /// Takes each caller's cost (a caller named twice pays the sum) at `now`, all or nothing
    /// (see the module documentation). A cost above [`RateLimiter::max_cost`] is a
    /// `VALIDATION_ERROR` saying how to split the batch; a caller without the tokens is
    /// `INTEGRATION_SERVICE_UNAVAILABLE` as in [`RateLimiter::check`]. Either way no caller's
    /// tokens are taken.
    pub fn check_all<'a>(
        &self,
        costs: impl IntoIterator<Item = (&'a str, u32)>,
        now: Instant,
    ) -> Result<(), OnexError> {
        let rule = self.rule;
        let mut per_caller: BTreeMap<&str, u64> = BTreeMap::new();
        for (caller, cost) in costs {
            *per_caller.entry(caller).or_default() += u64::from(cost.max(1));
        }
        let max_cost = u64::from(self.max_cost());
        if let Some((caller, cost)) = per_caller.iter().find(|(_, cost)| **cost > max_cost) {
            return Err(too_large(caller, *cost, rule));
        }
        let mut buckets = self.buckets(now);
        // Every caller is judged on a copy; the copies replace the buckets only if all pass.
        let mut admitted = Vec::with_capacity(per_caller.len());
        for (caller, cost) in per_caller {
            let mut bucket = buckets.get(caller).copied().unwrap_or(Bucket::full(rule, now));
            if let Err(retry_after) = judge(&mut bucket, cost, rule, now) {
                // The refused caller alone keeps its judgement: the penalty.
                buckets.insert(caller.to_owned(), bucket);
                return Err(refused(caller, retry_after));
            }
            admitted.push((caller, bucket));
        }
        for (caller, bucket) in admitted {
            buckets.insert(caller.to_owned(), bucket);
        }
        Ok(())
    }

    /// The buckets, locked, with idle ones (full, not blocked at `now`) pruned once there are
    /// more than [`PRUNE_ABOVE`].
    fn buckets(&self, now: Instant) -> std::sync::MutexGuard<'_, HashMap<String, Bucket>> {
        let rule = self.rule;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            buckets.retain(|_, b| {
                let full = b.refilled(rule, now) >= f64::from(rule.burst);
                !(full && b.blocked_until.is_none_or(|until| until <= now))
            });
        }
        buckets
    }
}

impl Bucket {
    /// A new caller's bucket: full.
    fn full(rule: RateLimitRule, now: Instant) -> Self {
        Self { tokens: f64::from(rule.burst), refilled_at: now, blocked_until: None }
    }

    /// Its tokens at `now`: what it held, plus the rule's rate since it was last refilled
    /// (not yet capped at the burst).
    fn refilled(&self, rule: RateLimitRule, now: Instant) -> f64 {
        let rate_per_sec = f64::from(rule.per_minute) / 60.0;
        self.tokens + now.saturating_duration_since(self.refilled_at).as_secs_f64() * rate_per_sec
    }
}

/// Refills `bucket` to `now` and takes `cost` from it, or refuses: `Err` with how long the
/// caller must wait, the bucket then blocked for the rule's penalty (or still blocked, its
/// tokens untouched). A cost beyond the burst needs a full bucket and leaves it in debt.
fn judge(bucket: &mut Bucket, cost: u64, rule: RateLimitRule, now: Instant) -> Result<(), Duration> {
    if let Some(until) = bucket.blocked_until {
        if now < until {
            return Err(until - now);
        }
        bucket.blocked_until = None;
    }
    bucket.tokens = bucket.refilled(rule, now).min(f64::from(rule.burst));
    bucket.refilled_at = now;
    let cost = cost as f64;
    if bucket.tokens < cost.min(f64::from(rule.burst)) {
        bucket.blocked_until = Some(now + rule.penalty);
        return Err(rule.penalty);
    }
    bucket.tokens -= cost;
    Ok(())
}

/// A batch no wait would admit: says how to split it.
fn too_large(caller: &str, cost: u64, rule: RateLimitRule) -> OnexError {
    let most = rule.per_minute.max(rule.burst);
    OnexError::validation(format!(
        "a batch of {cost} events from caller '{caller}' is more than its rate limit admits at once \
         ({} a minute, bursts of {}): split it into batches of at most {most} events; batches of at most {} \
         go out back to back, a larger one uses up to a minute of the caller's rate",
        rule.per_minute, rule.burst, rule.burst
    ))
    .with_detail("caller", caller)
    .with_detail("cost", cost)
    .with_detail("max_batch", most)
}

fn refused(caller: &str, retry_after: Duration) -> OnexError {
    OnexError::new(ErrorCode::IntegrationServiceUnavailable, format!("rate limit exceeded for caller '{caller}'"))
        .with_detail("reason", "rate_limited")
        .with_detail("caller", caller)
        .with_detail("retry_after_ms", retry_after.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_request_passes_and_callers_are_independent() {
        let limiter = RateLimiter::new(RateLimitRule::EVENT_PUBLISH);
        let t0 = Instant::now();
        assert!(limiter.check("node-a", 1, t0).is_ok());
        for _ in 1..100 {
            limiter.check("node-a", 1, t0).unwrap();
        }
        let err = limiter.check("node-a", 1, t0).unwrap_err();
        assert_eq!(err.details()["reason"], "rate_limited");
        assert!(limiter.check("node-b", 1, t0).is_ok(), "another caller has its own bucket");
    }

    #[test]
    fn penalty_blocks_then_refill_resumes() {
        let limiter = RateLimiter::new(RateLimitRule::EVENT_PUBLISH);
        let t0 = Instant::now();
        for _ in 0..100 {
            limiter.check("c", 1, t0).unwrap();
        }
        assert!(limiter.check("c", 1, t0).is_err());
        // 29 s later the bucket would have refilled, but the 30 s penalty still holds.
        assert!(limiter.check("c", 1, t0 + Duration::from_secs(29)).is_err());
        assert!(limiter.check("c", 1, t0 + Duration::from_secs(31)).is_ok());
    }

    #[test]
    fn sustained_rate_is_per_minute() {
        let limiter = RateLimiter::new(RateLimitRule { per_minute: 60, burst: 1, penalty: Duration::ZERO });
        let t0 = Instant::now();
        limiter.check("c", 1, t0).unwrap();
        assert!(limiter.check("c", 1, t0 + Duration::from_millis(500)).is_err());
        assert!(limiter.check("c", 1, t0 + Duration::from_millis(1600)).is_ok());
        let err = limiter.check("c", 61, t0 + Duration::from_secs(60)).unwrap_err();
        assert_eq!(err.code(), ErrorCode::ValidationError);
    }

    #[test]
    fn a_batch_beyond_the_burst_is_admitted_from_a_full_bucket_and_paid_back_at_the_rate() {
        // 1000 a minute, bursts of 100: 500 tokens of debt take 24 s to pay back.
        let limiter = RateLimiter::new(RateLimitRule { penalty: Duration::ZERO, ..RateLimitRule::EVENT_PUBLISH });
        let t0 = Instant::now();
        limiter.check("c", 600, t0).expect("a full bucket admits up to a minute of the rate");
        assert!(limiter.check("c", 1, t0 + Duration::from_secs(29)).is_err(), "still paying back");
        limiter.check("c", 1, t0 + Duration::from_secs(31)).expect("paid back");
        // About 16 tokens left at 31 s, 33 at 32 s: not the full bucket a batch of 200 needs.
        let at = t0 + Duration::from_secs(32);
        assert!(limiter.check("c", 200, at).is_err(), "a batch beyond the burst waits for a full bucket");
        limiter.check("c", 200, at + Duration::from_secs(5)).expect("full again");
    }

    #[test]
    fn a_batch_no_wait_would_admit_is_refused_with_how_to_split_it() {
        let limiter = RateLimiter::new(RateLimitRule::EVENT_PUBLISH);
        let t0 = Instant::now();
        let err = limiter.check_all([("c", 700), ("d", 1), ("c", 301)], t0).unwrap_err();
        assert_eq!(err.code(), ErrorCode::ValidationError);
        assert!(err.message().contains("1001 events from caller 'c'"), "{err}");
        assert!(err.message().contains("split it into batches of at most 1000 events"), "{err}");
        assert_eq!(err.details()["max_batch"], 1000);
        limiter.check("c", 100, t0).expect("nothing was taken");
        limiter.check("d", 100, t0).expect("nothing was taken");
    }

    #[test]
    fn a_batch_refused_for_one_caller_takes_no_tokens_from_the_others() {
        let limiter = RateLimiter::new(RateLimitRule::EVENT_PUBLISH);
        let t0 = Instant::now();
        limiter.check("b", 95, t0).unwrap();
        let err = limiter.check_all([("a", 50), ("b", 10)], t0).unwrap_err();
        assert_eq!(
            (err.details()["reason"].as_str(), err.details()["caller"].as_str()),
            (Some("rate_limited"), Some("b"))
        );
        limiter.check("a", 100, t0).expect("a's tokens are all still there");
        assert!(limiter.check("b", 1, t0).is_err(), "b, refused, serves its penalty");
    }

    proptest::proptest! {
        /// `check` judges one caller in place, `check_all` on a copy: the same rules, so the
        /// same answers, request after request.
        #[test]
        fn one_caller_is_judged_alike_by_check_and_check_all(
            requests in proptest::collection::vec((0usize..3, 1u32..1_200, 0u64..5_000), 1..60),
        ) {
            let rule = RateLimitRule { per_minute: 600, burst: 20, penalty: Duration::from_secs(2) };
            let (single, batched) = (RateLimiter::new(rule), RateLimiter::new(rule));
            let mut now = Instant::now();
            for (caller, cost, advance_ms) in requests {
                now += Duration::from_millis(advance_ms);
                let caller = ["a", "b", "c"][caller];
                let answer = |r: Result<(), OnexError>| r.map_err(|e| (e.code(), e.message().to_owned(), e.details().clone()));
                proptest::prop_assert_eq!(
                    answer(single.check(caller, cost, now)),
                    answer(batched.check_all([(caller, cost)], now))
                );
            }
        }
    }
}
