//! [`Deadline`]: `tokio::time::timeout_at` that creates its timer only when the call has to
//! wait. A call that completes on its first poll (a cached answer, a no-op, a refusal)
//! never touches tokio's timer, whose entry costs more than everything else on the closed
//! path; a call that waits registers one timer, like `timeout_at`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};

pin_project_lite::pin_project! {
    /// Resolves to `Some(output)` if `call` completes before `at`, else `None` (and `call`
    /// is dropped with this future).
    pub(super) struct Deadline<F> {
        #[pin]
        call: F,
        at: Instant,
        // Created by the first poll that finds `call` pending.
        #[pin]
        timer: Option<Sleep>,
    }
}

impl<F> Deadline<F> {
    pub(super) fn new(call: F, at: Instant) -> Self {
        Self { call, at, timer: None }
    }
}

impl<F: Future> Future for Deadline<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(output) = this.call.poll(cx) {
            return Poll::Ready(Some(output));
        }
        if this.timer.is_none() {
            this.timer.set(Some(tokio::time::sleep_until(*this.at)));
        }
        match this.timer.as_pin_mut().map(|timer| timer.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(None),
            _ => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_ready_call_completes_even_past_its_deadline() {
        let past = Instant::now() - Duration::from_secs(1);
        assert_eq!(Deadline::new(async { 7 }, past).await, Some(7));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_call_is_cut_at_the_deadline() {
        let at = Instant::now() + Duration::from_secs(5);
        let never = std::future::pending::<()>();
        assert_eq!(Deadline::new(never, at).await, None);
        assert_eq!(Instant::now(), at, "cut exactly at the deadline (paused clock)");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_call_that_finishes_in_time_keeps_its_output() {
        let at = Instant::now() + Duration::from_secs(5);
        let call = async {
            tokio::time::sleep(Duration::from_secs(4)).await;
            "done"
        };
        assert_eq!(Deadline::new(call, at).await, Some("done"));
    }
}
