//! The connection pool.
//!
//! Invariants:
//! - A semaphore with `max` permits guards every connection that is checked out or being
//!   opened; idle connections hold none. Whoever opens a connection holds a permit while
//!   doing so, so open connections never exceed `max`.
//! - A permit comes back only after its connection is back on the idle stack (or closed),
//!   so the waiter it wakes finds that connection.
//! - Waiting is `Semaphore::acquire` under a timeout: dropping a waiter (timeout or a
//!   cancelled caller) removes it from the queue. The timeout's timer is taken from a stack
//!   of spare timers and put back after the wait (see [`WaitTimers`]).
//! - Expiry (idle lifetime, query count) and the minimum size are enforced by a background
//!   maintenance task every `maintenance_interval`, not lazily at checkout. The task holds
//!   only a `Weak` reference, so dropping the pool stops it.
//! - Idle connections are reused last-in first-out, which keeps the hot set small and lets
//!   the rest age out.

use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore, TryAcquireError};
use tokio::time::Sleep;

use super::config::secs;
use super::conn::Conn;
use super::connect::Connector;
use super::stats::{CloseReason, PoolCounters};
use crate::error::{ErrorCode, OnexError};
use crate::models::postgres::{ConnectionStats, PostgresConnectionConfig};

/// The longest pause between reconnect attempts of the maintenance task while the server
/// is unreachable (checkouts still connect on demand, so recovery does not wait for it).
const MAX_REPLENISH_BACKOFF: Duration = Duration::from_secs(5);

/// The most spare wait timers a pool keeps: more than waiters ever wait at once in any
/// sensible deployment, and each is only a few hundred bytes.
const MAX_SPARE_WAIT_TIMERS: usize = 1024;

/// Pool limits in the form the pool uses them.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub min: u32,
    pub max: u32,
    pub wait_timeout: Duration,
    pub recycle_timeout: Duration,
    pub idle_lifetime: Duration,
    pub max_queries: u64,
    pub maintenance_interval: Duration,
    pub statement_cache_size: usize,
}

impl Limits {
    pub(crate) fn from_config(config: &PostgresConnectionConfig) -> Self {
        Self {
            min: config.min_connections,
            max: config.max_connections,
            wait_timeout: secs(config.wait_timeout_secs),
            recycle_timeout: secs(config.recycle_timeout_secs),
            idle_lifetime: Duration::from_secs(config.max_inactive_connection_lifetime_secs),
            max_queries: config.max_queries,
            maintenance_interval: secs(config.maintenance_interval_secs),
            statement_cache_size: config.statement_cache_size,
        }
    }
}

/// The idle connections, most recently returned last.
#[allow(clippy::vec_box, reason = "a checkout moves the pointer, not the connection")]
type IdleStack = Vec<Box<Conn>>;

pub(crate) struct Shared {
    limits: Limits,
    pub(crate) connector: Connector,
    /// Boxed, so a checkout and its return move a pointer: a connection is a few hundred
    /// bytes, and it moved by value from the stack to the caller's guard and back.
    idle: Mutex<IdleStack>,
    permits: Semaphore,
    wait_timers: Mutex<WaitTimers>,
    pub(crate) counters: PoolCounters,
    closed: AtomicBool,
    shutdown: Arc<Notify>,
}

/// The pool; cloning shares it.
#[derive(Clone)]
pub(crate) struct Pool {
    shared: Arc<Shared>,
}

impl Pool {
    /// Opens `min` connections (concurrently) and starts the maintenance task. The first
    /// connection error aborts start-up.
    pub(crate) async fn start(limits: Limits, connector: Connector) -> Result<Self, OnexError> {
        let max = usize::try_from(limits.max).unwrap_or(usize::MAX).min(Semaphore::MAX_PERMITS);
        let shared = Arc::new(Shared {
            limits,
            connector,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(max),
            wait_timers: Mutex::default(),
            counters: PoolCounters::default(),
            closed: AtomicBool::new(false),
            shutdown: Arc::new(Notify::new()),
        });
        let opened = futures::future::join_all((0..shared.limits.min).map(|_| shared.open_into_idle(false))).await;
        if let Some(err) = opened.into_iter().find_map(Result::err) {
            shared.close_all();
            return Err(err);
        }
        tokio::spawn(maintain(Arc::downgrade(&shared)));
        Ok(Self { shared })
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The pool without keeping it open (a metrics collector must not outlive it).
    pub(crate) fn downgrade(&self) -> Weak<Shared> {
        Arc::downgrade(&self.shared)
    }

    /// Checks a connection out, waiting at most the wait timeout for a free slot.
    pub(crate) async fn get(&self) -> Result<PooledConn, OnexError> {
        self.get_by(None).await
    }

    /// [`Self::get`], waiting no later than `deadline` either.
    pub(crate) async fn get_by(&self, deadline: Option<Instant>) -> Result<PooledConn, OnexError> {
        let shared = &self.shared;
        match shared.permits.try_acquire() {
            Ok(permit) => {
                permit.forget();
                shared.counters.record_immediate_checkout();
            }
            Err(TryAcquireError::Closed) => return Err(closed_error()),
            Err(TryAcquireError::NoPermits) => self.wait_for_permit(deadline).await?,
        }
        let slot = PermitSlot { shared };
        let conn = match shared.pop_usable_idle() {
            Some(conn) => conn,
            None => {
                // Boxed: connecting is the rare path, and inline its state machine (TLS
                // included) would make every checkout future several kilobytes.
                let client = Box::pin(shared.connector.connect()).await.inspect_err(|_| {
                    shared.counters.failed_connections.fetch_add(1, Relaxed);
                })?;
                shared.counters.size.fetch_add(1, Relaxed);
                shared.counters.created.fetch_add(1, Relaxed);
                Box::new(Conn::new(client, shared.limits.statement_cache_size))
            }
        };
        std::mem::forget(slot);
        shared.counters.in_use.fetch_add(1, Relaxed);
        Ok(PooledConn { conn: Some(conn), shared: Arc::clone(&self.shared) })
    }

    async fn wait_for_permit(&self, deadline: Option<Instant>) -> Result<(), OnexError> {
        let shared = &self.shared;
        // One clock read for the timer and the wait's duration alike.
        let now = tokio::time::Instant::now();
        let started = now.into_std();
        let limit = super::cut_by(shared.limits.wait_timeout, deadline, started);
        let _waiting = WaitingGuard::enter(&shared.counters);
        let (runtime, mut timer) = shared.take_wait_timer(now.checked_add(limit).unwrap_or_else(far_future));
        let acquired = {
            // The permit first, as `tokio::time::timeout` does: one that is free when the timer
            // fires still counts.
            let mut acquire = std::pin::pin!(shared.permits.acquire());
            std::future::poll_fn(|cx| {
                if let Poll::Ready(result) = acquire.as_mut().poll(cx) {
                    return Poll::Ready(Some(result));
                }
                timer.as_mut().poll(cx).map(|()| None)
            })
            .await
        };
        shared.put_back_wait_timer(runtime, timer);
        match acquired {
            Some(Ok(permit)) => {
                permit.forget();
                shared.counters.record_waited_checkout(started.elapsed());
                Ok(())
            }
            Some(Err(_)) => Err(closed_error()),
            None => {
                shared.counters.wait_timeouts.fetch_add(1, Relaxed);
                shared.counters.failed_connections.fetch_add(1, Relaxed);
                let millis = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
                Err(OnexError::new(
                    ErrorCode::DatabaseOperationError,
                    format!(
                        "no PostgreSQL connection became free within {millis} ms (all {} in use)",
                        shared.limits.max
                    ),
                )
                .with_detail("wait_timeout_ms", millis)
                .with_detail("max_connections", shared.limits.max))
            }
        }
    }

    /// The live figures.
    pub(crate) fn stats(&self) -> ConnectionStats {
        let shared = &self.shared;
        shared.counters.snapshot(shared.idle_count(), shared.limits.min, shared.limits.max)
    }

    /// Whether [`Pool::close`] ran.
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.closed.load(Relaxed)
    }

    /// Stops the maintenance task, refuses new checkouts (waiters get an error) and closes
    /// idle connections; checked-out ones close when they come back.
    pub(crate) fn close(&self) {
        self.shared.closed.store(true, Relaxed);
        self.shared.permits.close();
        self.shared.shutdown.notify_waiters();
        self.shared.close_all();
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.close_all();
    }
}

impl Shared {
    /// Connections on the idle stack now.
    pub(crate) fn idle_count(&self) -> u32 {
        u32::try_from(self.lock_idle().len()).unwrap_or(u32::MAX)
    }

    fn lock_idle(&self) -> MutexGuard<'_, IdleStack> {
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_wait_timers(&self) -> MutexGuard<'_, WaitTimers> {
        self.wait_timers.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A timer due at `due` for a waiting checkout, with the runtime it belongs to: a spare
    /// one when there is one for the current runtime, else a new one.
    fn take_wait_timer(&self, due: tokio::time::Instant) -> (Option<tokio::runtime::Id>, Pin<Box<Sleep>>) {
        let runtime = tokio::runtime::Handle::try_current().ok().map(|handle| handle.id());
        let (spare, stale) = {
            let mut timers = self.lock_wait_timers();
            if timers.runtime == runtime {
                (timers.spare.pop(), Vec::new())
            } else {
                // Timers of another runtime: polling one after that runtime shut down panics.
                timers.runtime = runtime;
                (None, std::mem::take(&mut timers.spare))
            }
        };
        // Outside the lock: dropping a registered timer takes the timer driver's.
        drop(stale);
        match spare {
            Some(mut timer) => {
                // A later deadline than the timer's (the usual case: the previous waiter
                // started earlier with the same limit) is one compare-and-swap; tokio files
                // the timer anew only when the old deadline comes. An earlier one re-files
                // it now.
                timer.as_mut().reset(due);
                (runtime, timer)
            }
            None => (runtime, Box::pin(tokio::time::sleep_until(due))),
        }
    }

    /// Keeps a waiter's timer (still armed) for the next waiter of the same runtime.
    fn put_back_wait_timer(&self, runtime: Option<tokio::runtime::Id>, timer: Pin<Box<Sleep>>) {
        let mut timers = self.lock_wait_timers();
        if timers.runtime == runtime && timers.spare.len() < MAX_SPARE_WAIT_TIMERS {
            timers.spare.push(timer);
            return;
        }
        drop(timers);
        drop(timer);
    }

    /// The most recently returned idle connection whose socket is still open; closed ones
    /// met on the way are discarded.
    fn pop_usable_idle(&self) -> Option<Box<Conn>> {
        loop {
            let conn = self.lock_idle().pop()?;
            if conn.is_closed() {
                self.discard(conn, CloseReason::Broken);
                continue;
            }
            return Some(conn);
        }
    }

    fn discard(&self, conn: Box<Conn>, reason: CloseReason) {
        drop(conn);
        self.counters.record_closed(reason);
    }

    fn close_all(&self) {
        let drained: Vec<Box<Conn>> = std::mem::take(&mut *self.lock_idle());
        for conn in drained {
            self.discard(conn, CloseReason::Shutdown);
        }
    }

    /// Opens one connection and puts it on the idle stack, holding a permit meanwhile.
    /// `only_below_min` makes it a no-op once the pool has reached its minimum.
    async fn open_into_idle(&self, only_below_min: bool) -> Result<bool, OnexError> {
        let Ok(permit) = self.permits.try_acquire() else { return Ok(false) };
        if only_below_min && self.counters.size.load(Relaxed) >= self.limits.min {
            return Ok(false);
        }
        let client = self.connector.connect().await.inspect_err(|_| {
            self.counters.failed_connections.fetch_add(1, Relaxed);
        })?;
        self.counters.size.fetch_add(1, Relaxed);
        self.counters.created.fetch_add(1, Relaxed);
        self.lock_idle().push(Box::new(Conn::new(client, self.limits.statement_cache_size)));
        drop(permit);
        Ok(true)
    }

    /// Closes idle connections that expired or whose socket closed.
    fn reap(&self) {
        let now = Instant::now();
        let expired: Vec<(Box<Conn>, CloseReason)> = {
            let mut idle = self.lock_idle();
            let mut expired = Vec::new();
            let mut i = 0;
            while i < idle.len() {
                let conn = &idle[i];
                let reason = if conn.is_closed() {
                    Some(CloseReason::Broken)
                } else if conn.queries >= self.limits.max_queries {
                    Some(CloseReason::MaxQueries)
                } else if now.duration_since(conn.idle_since) >= self.limits.idle_lifetime {
                    Some(CloseReason::Idle)
                } else {
                    None
                };
                match reason {
                    Some(reason) => expired.push((idle.remove(i), reason)),
                    None => i += 1,
                }
            }
            expired
        };
        for (conn, reason) in expired {
            self.discard(conn, reason);
        }
    }

    /// Opens connections until the pool holds `min`; stops at the first error.
    async fn replenish(&self) -> Result<(), OnexError> {
        while !self.closed.load(Relaxed) && self.counters.size.load(Relaxed) < self.limits.min {
            if !self.open_into_idle(true).await? {
                break;
            }
        }
        Ok(())
    }

    /// Takes a connection back: it goes on the idle stack if still usable, else it is closed.
    fn give_back(self: &Arc<Self>, mut conn: Box<Conn>) {
        if conn.busy {
            // The caller was dropped mid-statement: stop the statement on the server (best
            // effort, in the background) and do not reuse the connection.
            conn.retire = Some(CloseReason::Cancelled);
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let token = conn.client().cancel_token();
                let shared = Arc::clone(self);
                runtime.spawn(async move { shared.connector.cancel(token).await });
            }
        }
        let retire = conn.retire.or_else(|| {
            if self.closed.load(Relaxed) {
                Some(CloseReason::Shutdown)
            } else if conn.is_closed() {
                Some(CloseReason::Broken)
            } else if conn.queries >= self.limits.max_queries {
                Some(CloseReason::MaxQueries)
            } else {
                None
            }
        });
        if retire.is_none() && conn.in_transaction {
            // The caller dropped an open transaction: roll it back before anyone reuses the
            // connection. The permit stays taken until that is done.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let shared = Arc::clone(self);
                runtime.spawn(async move {
                    let timeout = shared.limits.recycle_timeout;
                    match conn.control("ROLLBACK", timeout).await {
                        Ok(()) => {
                            conn.in_transaction = false;
                            shared.give_back(conn);
                        }
                        Err(_) => {
                            shared.discard(conn, CloseReason::RecycleFailed);
                            shared.counters.in_use.fetch_sub(1, Relaxed);
                            shared.permits.add_permits(1);
                        }
                    }
                });
                return;
            }
            conn.retire = Some(CloseReason::RecycleFailed);
        }
        match retire.or(conn.retire) {
            Some(reason) => self.discard(conn, reason),
            None => {
                conn.idle_since = Instant::now();
                self.lock_idle().push(conn);
            }
        }
        self.counters.in_use.fetch_sub(1, Relaxed);
        self.permits.add_permits(1);
    }
}

/// Background maintenance: reap, then replenish, every interval; backs off while the server
/// cannot be reached.
async fn maintain(shared: Weak<Shared>) {
    let mut backoff = Duration::ZERO;
    loop {
        // Only the Notify is kept across the sleep, so dropping the pool is never delayed.
        let (interval, shutdown) = {
            let Some(shared) = shared.upgrade() else { return };
            if shared.closed.load(Relaxed) {
                return;
            }
            (shared.limits.maintenance_interval.max(backoff), Arc::clone(&shared.shutdown))
        };
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.notified() => return,
        }
        let Some(shared) = shared.upgrade() else { return };
        if shared.closed.load(Relaxed) {
            return;
        }
        shared.reap();
        match shared.replenish().await {
            Ok(()) => backoff = Duration::ZERO,
            Err(e) => {
                backoff = (backoff * 2).max(shared.limits.maintenance_interval).min(MAX_REPLENISH_BACKOFF);
                let retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX);
                tracing::warn!(target: "onex::postgres", error = %e, retry_in_ms, "replenishing the pool failed");
            }
        }
    }
}

/// Spare timers for waiting checkouts. A timer registered in tokio's timer wheel for each
/// wait and removed after it cost a waited checkout ~450 instructions (callgrind, 128 clients
/// on 50 connections, where most checkouts wait; deadpool's bench pool waits without a
/// timer); a spare one stays registered, and moving its deadline later is one
/// compare-and-swap. A spare timer may wake the task that used it last when its old deadline
/// passes unused: a spurious wake-up, which tasks ignore.
#[derive(Default)]
struct WaitTimers {
    /// The runtime the spare timers belong to.
    runtime: Option<tokio::runtime::Id>,
    spare: Vec<Pin<Box<Sleep>>>,
}

/// A deadline no wait reaches, for a limit too large to add to the clock.
fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}

fn closed_error() -> OnexError {
    OnexError::new(ErrorCode::DatabaseOperationError, "the PostgreSQL connection pool is closed")
}

/// Returns a permit if checkout fails (or is cancelled) after the permit was taken.
struct PermitSlot<'a> {
    shared: &'a Shared,
}

impl Drop for PermitSlot<'_> {
    fn drop(&mut self) {
        self.shared.permits.add_permits(1);
    }
}

/// Counts a caller as waiting for as long as it is in the queue, cancellation included.
struct WaitingGuard<'a>(&'a PoolCounters);

impl<'a> WaitingGuard<'a> {
    fn enter(counters: &'a PoolCounters) -> Self {
        counters.waiting.fetch_add(1, Relaxed);
        Self(counters)
    }
}

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Relaxed);
    }
}

/// A checked-out connection; it goes back to the pool when dropped.
pub(crate) struct PooledConn {
    conn: Option<Box<Conn>>,
    shared: Arc<Shared>,
}

impl PooledConn {
    pub(crate) fn counters(&self) -> &PoolCounters {
        &self.shared.counters
    }
}

impl Deref for PooledConn {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        self.conn.as_ref().expect("a PooledConn holds its connection until dropped")
    }
}

impl DerefMut for PooledConn {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("a PooledConn holds its connection until dropped")
    }
}

impl Drop for PooledConn {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.shared.give_back(conn);
        }
    }
}
