//! Per-caller rate limits: a token bucket per caller that starts full,
//! so a caller's first request always passes (the original started empty and dropped it).
//! A caller that empties its bucket is refused for the rule's penalty period.

use std::collections::HashMap;
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
    /// `retry_after_ms`).
    pub fn check(&self, caller: &str, cost: u32, now: Instant) -> Result<(), OnexError> {
        let rule = self.rule;
        let rate_per_sec = f64::from(rule.per_minute) / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            buckets.retain(|_, b| {
                let full = b.tokens + now.saturating_duration_since(b.refilled_at).as_secs_f64() * rate_per_sec
                    >= f64::from(rule.burst);
                !(full && b.blocked_until.is_none_or(|until| until <= now))
            });
        }
        let bucket = buckets.entry(caller.to_owned()).or_insert(Bucket {
            tokens: f64::from(rule.burst),
            refilled_at: now,
            blocked_until: None,
        });
        if let Some(until) = bucket.blocked_until {
            if now < until {
                return Err(refused(caller, until - now));
            }
            bucket.blocked_until = None;
        }
        let elapsed = now.saturating_duration_since(bucket.refilled_at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate_per_sec).min(f64::from(rule.burst));
        bucket.refilled_at = now;
        let cost = f64::from(cost.max(1));
        if bucket.tokens >= cost {
            bucket.tokens -= cost;
            Ok(())
        } else if cost > f64::from(rule.burst) {
            Err(OnexError::validation(format!(
                "a batch of {cost} events exceeds the rate-limit burst of {} for one request",
                rule.burst
            ))
            .with_detail("caller", caller))
        } else {
            bucket.blocked_until = Some(now + rule.penalty);
            Err(refused(caller, rule.penalty))
        }
    }
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
        assert_eq!(limiter.check("c", 5, t0 + Duration::from_secs(60)).unwrap_err().code(), ErrorCode::ValidationError);
    }
}
