//! Publish retries: up to `max_retries` more attempts after the first,
//! waiting `base_delay × 2^n` before retry n (n from 0), for retriable errors only.

use std::future::Future;
use std::time::Duration;

use crate::environment::{self, EnvSource};
use crate::error::OnexError;
use crate::kafka::error::onex_error_is_retriable;

/// Retry rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts after the first (`REDPANDA_MAX_RETRIES`, 3).
    pub max_retries: u32,
    /// Delay before the first retry (`REDPANDA_BASE_DELAY_SECONDS`, 0.1 s); doubles each time.
    pub base_delay: Duration,
    /// Upper bound of one delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_retries: 3, base_delay: Duration::from_millis(100), max_delay: Duration::from_secs(30) }
    }
}

impl RetryPolicy {
    /// Reads `REDPANDA_MAX_RETRIES` and `REDPANDA_BASE_DELAY_SECONDS`.
    pub fn from_env(env: &dyn EnvSource) -> Result<Self, OnexError> {
        let d = Self::default();
        let max_retries = environment::parse_or(env, "REDPANDA_MAX_RETRIES", d.max_retries)?;
        let seconds = environment::parse_or(env, "REDPANDA_BASE_DELAY_SECONDS", d.base_delay.as_secs_f64())?;
        if !(0.0..=60.0).contains(&seconds) {
            return Err(OnexError::configuration(format!(
                "REDPANDA_BASE_DELAY_SECONDS must be between 0 and 60, got {seconds}"
            )));
        }
        if max_retries > 20 {
            return Err(OnexError::configuration(format!(
                "REDPANDA_MAX_RETRIES must be at most 20, got {max_retries}"
            )));
        }
        Ok(Self { max_retries, base_delay: Duration::from_secs_f64(seconds), ..d })
    }

    /// The delay before retry `n` (0-based): `base_delay × 2^n`, capped at `max_delay`.
    pub fn delay(&self, n: u32) -> Duration {
        self.base_delay.saturating_mul(1u32.checked_shl(n).unwrap_or(u32::MAX)).min(self.max_delay)
    }
}

/// Waits between attempts. Production uses [`TokioSleeper`]; tests record the delays.
pub trait Sleeper: Send + Sync {
    /// Waits for `delay`.
    fn sleep(&self, delay: Duration) -> crate::node::BoxFuture<'_, ()>;
}

/// Sleeps on the tokio timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioSleeper;

impl Sleeper for TokioSleeper {
    fn sleep(&self, delay: Duration) -> crate::node::BoxFuture<'_, ()> {
        Box::pin(tokio::time::sleep(delay))
    }
}

/// The outcome of [`retry`]: the result and how many attempts it took.
#[derive(Debug)]
pub struct Retried<T> {
    /// Result of the last attempt.
    pub result: Result<T, OnexError>,
    /// Attempts made (1 = no retry).
    pub attempts: u32,
}

/// Runs `attempt` until it succeeds, fails with a non-retriable error (see
/// [`crate::kafka::error::onex_error_is_retriable`]) or `policy.max_retries` retries are spent.
pub async fn retry<T, F, Fut>(policy: &RetryPolicy, sleeper: &dyn Sleeper, mut attempt: F) -> Retried<T>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, OnexError>>,
{
    let mut n = 0;
    loop {
        let result = attempt(n).await;
        match result {
            Err(e) if n < policy.max_retries && onex_error_is_retriable(&e) => {
                tracing::debug!(attempt = n + 1, "retriable publish failure: {e}");
                sleeper.sleep(policy.delay(n)).await;
                n += 1;
            }
            result => return Retried { result, attempts: n + 1 },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::error::ErrorCode;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<Duration>>);

    impl Sleeper for Recorder {
        fn sleep(&self, delay: Duration) -> crate::node::BoxFuture<'_, ()> {
            self.0.lock().unwrap().push(delay);
            Box::pin(async {})
        }
    }

    fn transient() -> OnexError {
        OnexError::new(ErrorCode::OperationTimeout, "timed out").with_detail("retriable", true)
    }

    #[tokio::test]
    async fn retriable_errors_back_off_exponentially_then_give_up() {
        let sleeper = Recorder::default();
        let out = retry(&RetryPolicy::default(), &sleeper, |_| async { Err::<(), _>(transient()) }).await;
        assert_eq!(out.attempts, 4);
        assert!(out.result.is_err());
        let ms: Vec<u128> = sleeper.0.lock().unwrap().iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [100, 200, 400]);
    }

    #[tokio::test]
    async fn non_retriable_errors_fail_at_once_and_success_stops() {
        let sleeper = Recorder::default();
        let out = retry(&RetryPolicy::default(), &sleeper, |_| async {
            Err::<(), _>(OnexError::validation("too large").with_detail("retriable", false))
        })
        .await;
        assert_eq!(out.attempts, 1);
        assert!(sleeper.0.lock().unwrap().is_empty());
        let out =
            retry(&RetryPolicy::default(), &sleeper, |n| async move { if n < 2 { Err(transient()) } else { Ok(n) } })
                .await;
        assert_eq!((out.attempts, out.result.unwrap()), (3, 2));
    }

    #[test]
    fn policy_reads_the_environment_and_caps_delays() {
        let env = crate::environment::MapEnv::from_pairs([
            ("REDPANDA_MAX_RETRIES", "5"),
            ("REDPANDA_BASE_DELAY_SECONDS", "0.25"),
        ]);
        let p = RetryPolicy::from_env(&env).unwrap();
        assert_eq!((p.max_retries, p.delay(0), p.delay(2)), (5, Duration::from_millis(250), Duration::from_secs(1)));
        assert_eq!(p.delay(40), p.max_delay);
        let bad = crate::environment::MapEnv::from_pairs([("REDPANDA_BASE_DELAY_SECONDS", "-1")]);
        assert!(RetryPolicy::from_env(&bad).is_err());
    }
}
