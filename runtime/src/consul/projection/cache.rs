//! A bounded cache of projections that Consul's blocking queries keep honest.
//!
//! - **Age.** A request says the oldest projection it accepts (`max_age`); a cached projection
//!   read from Consul longer ago than that is read again. `max_age` zero forces a read that
//!   starts after the request arrived.
//! - **Invalidation.** Every projection remembers the reads it was built from ([`Source`]s)
//!   and the `X-Consul-Index` of each. For every source some cached projection depends on, one
//!   watcher task holds a blocking query open ([`Watcher::watch`]); when Consul answers with
//!   another index, the projections built at the old index are dropped at once, so a change
//!   in Consul is seen by the next request, not after the age runs out. The watchers share
//!   sources: any number of projections over the same service cost one open query.
//! - **No stale answers on failure.** A read that fails drops the projection it would have
//!   replaced, and a watcher that cannot reach Consul drops every projection of its source:
//!   while Consul is unreachable the cache does not pretend to know its state.
//! - **Coalescing.** Concurrent requests for the same projection share one read: the first
//!   reads, the others wait for it and take its result (or its error) when the read started
//!   after they arrived, or when its age suits them. A request arriving while an older read
//!   is under way and wanting a fresh one reads again after it, one at a time: an outage
//!   costs one failed read per wave of requests, not one per request.
//! - **Bounds.** At most `capacity` projections: past it the least recently used one that no
//!   request is reading goes, with its watchers when nothing else depends on them. At most
//!   `max_watched` sources are watched (each watcher holds a connection to Consul): a
//!   projection whose reads would take more is not kept for later requests (a projection is
//!   only cached while a change would drop it); it is still shared with the requests that
//!   waited for its read. A projection nobody asked for during `idle` is dropped when a watcher
//!   next wakes, so forgotten projections do not keep queries open on Consul forever.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use tokio::task::AbortHandle;

use crate::error::OnexError;

/// One read from Consul a projection was built from; a blocking query on it tells when the
/// data changed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// `/v1/catalog/services`: which services exist.
    Catalog,
    /// `/v1/health/service/:name`: one service's instances and checks.
    Health(String),
    /// `/v1/kv/:prefix?recurse`: the keys under a prefix.
    Kv(String),
}

/// Waits for Consul's data to change.
pub trait Watcher: Send + Sync + 'static {
    /// A blocking query on `source`: answers Consul's index once it differs from `index`, or the
    /// same index when Consul's wait ended without a change.
    fn watch(&self, source: &Source, index: u64) -> BoxFuture<'static, Result<u64, OnexError>>;
}

/// What a read produced: the projection and the index of every source it read.
#[derive(Debug, Clone)]
pub struct Built<V> {
    /// The projection.
    pub value: V,
    /// Each source read, with the `X-Consul-Index` of its answer.
    pub sources: Vec<(Source, u64)>,
}

/// A projection as the cache hands it out.
#[derive(Debug, Clone)]
pub struct Projected<V> {
    /// The projection.
    pub value: Arc<V>,
    /// When its read from Consul started: the data is at least this recent.
    pub projected_at: DateTime<Utc>,
    /// Whether it was read before the request arrived (a cache hit); a read shared with a
    /// concurrent request that started after this one arrived is not.
    pub from_cache: bool,
    /// Whether this request's read built it (exactly one request per read, where the other
    /// requests sharing the read have it `false`).
    pub read_here: bool,
}

/// How the cache is bounded.
#[derive(Debug, Clone, Copy)]
pub struct CacheLimits {
    /// Most projections kept.
    pub capacity: usize,
    /// Most sources watched at once: the most blocking queries held open on Consul.
    pub max_watched: usize,
    /// A projection not asked for during this long is dropped.
    pub idle: Duration,
    /// Least time between two blocking queries of a watcher when the previous one ended without
    /// a change: a server that answers at once instead of blocking is not polled in a loop.
    pub min_poll: Duration,
}

impl Default for CacheLimits {
    /// 256 projections over at most 64 watched sources, dropped after 15 minutes unused; a
    /// watcher polls at most once a second.
    fn default() -> Self {
        Self { capacity: 256, max_watched: 64, idle: Duration::from_secs(15 * 60), min_poll: Duration::from_secs(1) }
    }
}

/// Projections per key, kept fresh by watchers on the sources they were read from.
pub struct ProjectionCache<K, V> {
    shared: Arc<Shared<K, V>>,
}

impl<K, V> std::fmt::Debug for ProjectionCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("ProjectionCache")
            .field("entries", &state.entries.len())
            .field("watched_sources", &state.watches.len())
            .field("limits", &self.shared.limits)
            .finish()
    }
}

struct Shared<K, V> {
    state: Mutex<State<K, V>>,
    watcher: Arc<dyn Watcher>,
    limits: CacheLimits,
}

struct State<K, V> {
    entries: HashMap<K, Entry<V>>,
    watches: HashMap<Source, Watch<K>>,
}

struct Entry<V> {
    ready: Option<Ready<V>>,
    /// The last read's error and when that read started, for the requests that waited on it.
    failed: Option<(Instant, OnexError)>,
    /// Held by the request reading this projection; the others wait on it.
    flight: Arc<tokio::sync::Mutex<()>>,
    used: Instant,
}

struct Ready<V> {
    value: Arc<V>,
    projected_at: DateTime<Utc>,
    read_at: Instant,
    sources: Vec<(Source, u64)>,
    /// Whether watchers hold its sources; an unwatched projection serves only the requests
    /// that arrived before its read started.
    watched: bool,
}

struct Watch<K> {
    dependents: HashSet<K>,
    task: AbortHandle,
}

impl<K, V> ProjectionCache<K, V>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// An empty cache whose watchers wait on `watcher`.
    pub fn new(watcher: Arc<dyn Watcher>, limits: CacheLimits) -> Self {
        let limits = CacheLimits { capacity: limits.capacity.max(1), ..limits };
        let state = State { entries: HashMap::new(), watches: HashMap::new() };
        Self { shared: Arc::new(Shared { state: Mutex::new(state), watcher, limits }) }
    }

    /// The projection under `key`: the cached one when it is no older than `max_age` (and no
    /// change in Consul dropped it), else what `read` builds. `arrival` is when the request
    /// arrived: a read that started after it is fresh for it whatever `max_age` says.
    /// Watchers are spawned on the current tokio runtime.
    pub async fn get<F>(&self, key: K, max_age: Duration, arrival: Instant, read: F) -> Result<Projected<V>, OnexError>
    where
        F: Future<Output = Result<Built<V>, OnexError>>,
    {
        let flight = {
            let mut state = self.shared.lock();
            if let Some(answer) = state.answer(&key, max_age, arrival) {
                return answer;
            }
            state.entry(&key, self.shared.limits.capacity).flight.clone()
        };
        let _turn = flight.lock().await;
        if let Some(answer) = self.shared.lock().answer(&key, max_age, arrival) {
            return answer;
        }
        let read_at = Instant::now();
        let projected_at = Utc::now();
        let result = read.await;
        let mut state = self.shared.lock();
        match result {
            Ok(built) => {
                let value = Arc::new(built.value);
                let ready =
                    Ready { value: Arc::clone(&value), projected_at, read_at, sources: built.sources, watched: false };
                state.store(&key, ready, &self.shared);
                Ok(Projected { value, projected_at, from_cache: false, read_here: true })
            }
            Err(err) => {
                state.fail(&key, read_at, err.clone());
                Err(err)
            }
        }
    }

    /// Whether a projection is cached under `key`.
    pub fn contains(&self, key: &K) -> bool {
        self.shared.lock().entries.get(key).is_some_and(|entry| entry.ready.is_some())
    }

    /// How many projections are cached.
    pub fn len(&self) -> usize {
        self.shared.lock().entries.values().filter(|entry| entry.ready.is_some()).count()
    }

    /// Whether no projection is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many sources the watchers hold blocking queries on.
    pub fn watched_sources(&self) -> usize {
        self.shared.lock().watches.len()
    }

    /// Drops every projection (their watchers stop).
    pub fn clear(&self) {
        let mut state = self.shared.lock();
        let keys: Vec<K> = state.entries.keys().cloned().collect();
        for key in keys {
            state.drop_ready(&key);
        }
        state.entries.retain(|_, entry| Arc::strong_count(&entry.flight) > 1);
    }
}

impl<K, V> Shared<K, V> {
    fn lock(&self) -> MutexGuard<'_, State<K, V>> {
        // Nothing in a critical section panics on purpose; should something, its state is
        // still a valid cache.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K, V> Drop for Shared<K, V> {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        for watch in state.watches.values() {
            watch.task.abort();
        }
    }
}

impl<K, V> State<K, V>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// The answer for a request, when the cache has one: a projection young enough (or read
    /// since the request arrived), or the error of a read that started after it arrived.
    fn answer(&mut self, key: &K, max_age: Duration, arrival: Instant) -> Option<Result<Projected<V>, OnexError>> {
        let entry = self.entries.get_mut(key)?;
        entry.used = Instant::now();
        if let Some(ready) = &entry.ready {
            let read_since_arrival = ready.read_at >= arrival;
            let young = ready.watched && !max_age.is_zero() && ready.read_at.elapsed() <= max_age;
            if read_since_arrival || young {
                return Some(Ok(Projected {
                    value: Arc::clone(&ready.value),
                    projected_at: ready.projected_at,
                    from_cache: !read_since_arrival,
                    read_here: false,
                }));
            }
        }
        match &entry.failed {
            Some((started, err)) if *started >= arrival => Some(Err(err.clone())),
            _ => None,
        }
    }

    /// The entry under `key`, made (and room made for it) when missing.
    fn entry(&mut self, key: &K, capacity: usize) -> &mut Entry<V> {
        if !self.entries.contains_key(key) {
            while self.entries.len() >= capacity {
                // Least recently used among the entries no request holds: a read under way
                // keeps its entry, and when every entry is being read the cache overflows by
                // the requests in flight rather than block them.
                let victim = self
                    .entries
                    .iter()
                    .filter(|(_, entry)| Arc::strong_count(&entry.flight) == 1)
                    .min_by_key(|(_, entry)| entry.used)
                    .map(|(key, _)| key.clone());
                let Some(victim) = victim else { break };
                self.drop_ready(&victim);
                self.entries.remove(&victim);
            }
        }
        self.entries.entry(key.clone()).or_insert_with(|| Entry {
            ready: None,
            failed: None,
            flight: Arc::new(tokio::sync::Mutex::new(())),
            used: Instant::now(),
        })
    }

    fn store(&mut self, key: &K, mut ready: Ready<V>, shared: &Arc<Shared<K, V>>) {
        let unwatched: HashSet<&Source> = ready
            .sources
            .iter()
            .map(|(source, _)| source)
            .filter(|source| !self.watches.contains_key(*source))
            .collect();
        if self.watches.len() + unwatched.len() > shared.limits.max_watched {
            tracing::debug!(
                target: "onex::consul",
                sources = ready.sources.len(),
                watched = self.watches.len(),
                "too many sources to watch; the projection is not cached"
            );
            self.drop_ready(key);
            self.entry(key, shared.limits.capacity).ready = Some(ready);
            return;
        }
        ready.watched = true;
        let old = self.entry(key, shared.limits.capacity).ready.take();
        for (source, index) in &ready.sources {
            let watch = self.watches.entry(source.clone()).or_insert_with(|| Watch {
                dependents: HashSet::new(),
                task: tokio::spawn(watch(Arc::downgrade(shared), source.clone(), *index)).abort_handle(),
            });
            watch.dependents.insert(key.clone());
        }
        // A source read again keeps its watcher; only the ones this read no longer needs go.
        for (source, _) in old.iter().filter(|old| old.watched).flat_map(|old| &old.sources) {
            if !ready.sources.iter().any(|(read, _)| read == source) {
                self.unwatch(key, source);
            }
        }
        let entry = self.entry(key, shared.limits.capacity);
        entry.failed = None;
        entry.ready = Some(ready);
    }

    /// `key` no longer depends on `source`; its watcher stops when nothing else does.
    fn unwatch(&mut self, key: &K, source: &Source) {
        if let Some(watch) = self.watches.get_mut(source) {
            watch.dependents.remove(key);
            if watch.dependents.is_empty() {
                watch.task.abort();
                self.watches.remove(source);
            }
        }
    }

    fn fail(&mut self, key: &K, started: Instant, err: OnexError) {
        self.drop_ready(key);
        if let Some(entry) = self.entries.get_mut(key) {
            entry.failed = Some((started, err));
        }
    }

    /// Forgets the projection under `key` and stops the watchers nothing else depends on.
    fn drop_ready(&mut self, key: &K) {
        let Some(ready) = self.entries.get_mut(key).and_then(|entry| entry.ready.take()) else { return };
        if !ready.watched {
            return;
        }
        for (source, _) in &ready.sources {
            self.unwatch(key, source);
        }
    }

    /// Drops the projections of `source` whose index for it `stale` says is out of date.
    fn invalidate(&mut self, source: &Source, stale: impl Fn(u64) -> bool) {
        let Some(watch) = self.watches.get(source) else { return };
        let doomed: Vec<K> = watch
            .dependents
            .iter()
            .filter(|key| {
                let recorded =
                    self.entries.get(*key).and_then(|entry| entry.ready.as_ref()).and_then(|ready| {
                        ready.sources.iter().find(|(read, _)| read == source).map(|(_, index)| *index)
                    });
                recorded.is_none_or(&stale)
            })
            .cloned()
            .collect();
        for key in doomed {
            self.drop_ready(&key);
        }
    }

    /// Drops the projections nobody asked for during `idle`.
    fn drop_idle(&mut self, idle: Duration) {
        let doomed: Vec<K> = self
            .entries
            .iter()
            .filter(|(_, entry)| entry.ready.is_some() && entry.used.elapsed() > idle)
            .map(|(key, _)| key.clone())
            .collect();
        for key in doomed {
            self.drop_ready(&key);
            self.entries.remove(&key);
        }
    }
}

/// A watcher: blocking queries on `source` from `index` until no projection depends on it.
async fn watch<K, V>(shared: Weak<Shared<K, V>>, source: Source, mut index: u64)
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    loop {
        // Only a weak reference across the query: dropping the cache ends its watchers.
        let Some((watcher, limits)) = shared.upgrade().map(|s| (Arc::clone(&s.watcher), s.limits)) else { return };
        let started = Instant::now();
        let result = watcher.watch(&source, index).await;
        let Some(strong) = shared.upgrade() else { return };
        let unchanged = {
            let mut state = strong.lock();
            let unchanged = match result {
                Ok(now) if now == index => {
                    state.drop_idle(limits.idle);
                    true
                }
                Ok(now) => {
                    // Consul's index may also go backwards (a restored snapshot): any other
                    // index means the data may differ.
                    state.invalidate(&source, |recorded| recorded != now);
                    index = now;
                    false
                }
                Err(err) => {
                    tracing::warn!(
                        target: "onex::consul",
                        source = ?source,
                        error = %err,
                        "watching Consul failed; the projections read from it are dropped"
                    );
                    state.invalidate(&source, |_| true);
                    return;
                }
            };
            if !state.watches.contains_key(&source) {
                return;
            }
            unchanged
        };
        drop(strong);
        if unchanged {
            tokio::time::sleep_until((started + limits.min_poll).into()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::Notify;

    use super::*;
    use crate::error::ErrorCode;

    /// Consul's indexes per source, moved by the test; a watch blocks until its source's index
    /// differs, or fails while the fake is "down".
    #[derive(Default)]
    struct FakeConsul {
        indexes: Mutex<HashMap<Source, u64>>,
        down: Mutex<bool>,
        changed: Notify,
        watches: AtomicUsize,
    }

    impl FakeConsul {
        fn index(&self, source: &Source) -> u64 {
            *self.indexes.lock().unwrap().get(source).unwrap_or(&1)
        }
        fn bump(&self, source: Source) {
            *self.indexes.lock().unwrap().entry(source).or_insert(1) += 1;
            self.changed.notify_waiters();
        }
        fn go_down(&self) {
            *self.down.lock().unwrap() = true;
            self.changed.notify_waiters();
        }
    }

    impl Watcher for Arc<FakeConsul> {
        fn watch(&self, source: &Source, index: u64) -> BoxFuture<'static, Result<u64, OnexError>> {
            let fake = Arc::clone(self);
            let source = source.clone();
            Box::pin(async move {
                fake.watches.fetch_add(1, Ordering::SeqCst);
                loop {
                    let changed = fake.changed.notified();
                    if *fake.down.lock().unwrap() {
                        return Err(OnexError::new(ErrorCode::IntegrationServiceUnavailable, "down"));
                    }
                    let now = fake.index(&source);
                    if now != index {
                        return Ok(now);
                    }
                    changed.await;
                }
            })
        }
    }

    type Cache = ProjectionCache<&'static str, u64>;

    fn cache(fake: &Arc<FakeConsul>, capacity: usize) -> Cache {
        ProjectionCache::new(Arc::new(Arc::clone(fake)), CacheLimits { capacity, ..CacheLimits::default() })
    }

    /// A read of `sources` at the fake's current indexes, counted in `reads`; the value is the
    /// number of reads so far.
    fn read(
        fake: &Arc<FakeConsul>,
        reads: &Arc<AtomicUsize>,
        sources: &[Source],
    ) -> impl Future<Output = Result<Built<u64>, OnexError>> + use<> {
        let sources: Vec<_> = sources.iter().map(|source| (source.clone(), fake.index(source))).collect();
        let reads = Arc::clone(reads);
        async move { Ok(Built { value: reads.fetch_add(1, Ordering::SeqCst) as u64 + 1, sources }) }
    }

    const MINUTE: Duration = Duration::from_secs(60);

    async fn until(what: &str, mut condition: impl FnMut() -> bool) {
        let started = Instant::now();
        while !condition() {
            assert!(started.elapsed() < Duration::from_secs(10), "waited 10 s for {what}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        println!("{what} after {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_second_request_within_the_age_is_served_from_the_cache_without_a_read() {
        let fake = Arc::new(FakeConsul::default());
        let cache = cache(&fake, 8);
        let reads = Arc::new(AtomicUsize::new(0));
        let health = [Source::Health("web".into())];
        let first = cache.get("web", MINUTE, Instant::now(), read(&fake, &reads, &health)).await.unwrap();
        let second = cache.get("web", MINUTE, Instant::now(), read(&fake, &reads, &health)).await.unwrap();
        assert!(!first.from_cache);
        assert!(second.from_cache);
        assert_eq!((*first.value, *second.value), (1, 1));
        assert_eq!(second.projected_at, first.projected_at);
        assert_eq!(reads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_zero_age_reads_again() {
        let fake = Arc::new(FakeConsul::default());
        let cache = cache(&fake, 8);
        let reads = Arc::new(AtomicUsize::new(0));
        cache.get("web", MINUTE, Instant::now(), read(&fake, &reads, &[Source::Catalog])).await.unwrap();
        let fresh =
            cache.get("web", Duration::ZERO, Instant::now(), read(&fake, &reads, &[Source::Catalog])).await.unwrap();
        assert!(!fresh.from_cache);
        assert_eq!(*fresh.value, 2);
        // The fresh read replaced the old one: the next request within the age gets it.
        let again = cache.get("web", MINUTE, Instant::now(), read(&fake, &reads, &[Source::Catalog])).await.unwrap();
        assert_eq!((*again.value, again.from_cache), (2, true));
    }

    #[tokio::test]
    async fn a_change_in_consul_drops_the_projections_read_before_it() {
        let fake = Arc::new(FakeConsul::default());
        let cache = cache(&fake, 8);
        let reads = Arc::new(AtomicUsize::new(0));
        let web = [Source::Catalog, Source::Health("web".into())];
        let db = [Source::Catalog, Source::Health("db".into())];
        cache.get("web", MINUTE, Instant::now(), read(&fake, &reads, &web)).await.unwrap();
        cache.get("db", MINUTE, Instant::now(), read(&fake, &reads, &db)).await.unwrap();
        assert_eq!(cache.watched_sources(), 3, "catalog, web and db, each watched once");
        until("three watches open", || fake.watches.load(Ordering::SeqCst) == 3).await;

        fake.bump(Source::Health("web".into()));
        until("the web projection dropped", || !cache.contains(&"web")).await;
        assert!(cache.contains(&"db"), "a change in another service leaves db alone");
        let after = cache.get("web", MINUTE, Instant::now(), read(&fake, &reads, &web)).await.unwrap();
        assert!(!after.from_cache);
        assert_eq!(*after.value, 3);

        fake.bump(Source::Catalog);
        until("every projection over the catalog dropped", || cache.is_empty()).await;
        assert_eq!(cache.watched_sources(), 0, "no projection left, no query left open");
    }

    #[tokio::test]
    async fn a_watcher_that_loses_consul_drops_its_projections() {
        let fake = Arc::new(FakeConsul::default());
        let cache = cache(&fake, 8);
        let reads = Arc::new(AtomicUsize::new(0));
        cache.get("kv", MINUTE, Instant::now(), read(&fake, &reads, &[Source::Kv("app/".into())])).await.unwrap();
        until("the watch open", || fake.watches.load(Ordering::SeqCst) == 1).await;
        fake.go_down();
        until("the projection dropped", || !cache.contains(&"kv")).await;
        assert_eq!(cache.watched_sources(), 0);
    }

    #[tokio::test]
    async fn a_failed_read_drops_the_projection_it_would_have_replaced() {
        let fake = Arc::new(FakeConsul::default());
        let cache = cache(&fake, 8);
        let reads = Arc::new(AtomicUsize::new(0));
        cache.get("web", MINUTE, Instant::now(), read(&fake, &reads, &[Source::Catalog])).await.unwrap();
        let down = async { Err(OnexError::new(ErrorCode::IntegrationServiceUnavailable, "Consul is unreachable")) };
        let err = cache.get("web", Duration::ZERO, Instant::now(), down).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::IntegrationServiceUnavailable);
        assert!(!cache.contains(&"web"), "the old projection is not served after a failed read");
    }

    #[tokio::test]
    async fn concurrent_identical_requests_share_one_read_and_one_failure() {
        let fake = Arc::new(FakeConsul::default());
        let cache = Arc::new(cache(&fake, 8));
        let reads = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Notify::new());
        let arrival = Instant::now();
        let mut requests = Vec::new();
        for _ in 0..10 {
            let (cache, reads, release, fake) =
                (Arc::clone(&cache), Arc::clone(&reads), Arc::clone(&release), Arc::clone(&fake));
            requests.push(tokio::spawn(async move {
                let slow = async move {
                    release.notified().await;
                    read(&fake, &reads, &[Source::Catalog]).await
                };
                cache.get("all", Duration::ZERO, arrival, slow).await
            }));
        }
        until("one read under way", || {
            cache.shared.lock().entries.get("all").is_some_and(|e| Arc::strong_count(&e.flight) == 11)
        })
        .await;
        release.notify_one();
        let mut readers = 0;
        for request in requests {
            let projected = request.await.unwrap().unwrap();
            assert_eq!(*projected.value, 1);
            assert!(!projected.from_cache, "the shared read started after every request arrived");
            readers += usize::from(projected.read_here);
        }
        assert_eq!(readers, 1);
        assert_eq!(reads.load(Ordering::SeqCst), 1);

        let failures = Arc::new(AtomicUsize::new(0));
        let arrival = Instant::now();
        let mut requests = Vec::new();
        for _ in 0..10 {
            let (cache, failures, release) = (Arc::clone(&cache), Arc::clone(&failures), Arc::clone(&release));
            requests.push(tokio::spawn(async move {
                let failing = async move {
                    release.notified().await;
                    failures.fetch_add(1, Ordering::SeqCst);
                    Err(OnexError::new(ErrorCode::IntegrationServiceUnavailable, "down"))
                };
                cache.get("all", Duration::ZERO, arrival, failing).await
            }));
        }
        until("one failing read under way", || {
            cache.shared.lock().entries.get("all").is_some_and(|e| Arc::strong_count(&e.flight) == 11)
        })
        .await;
        release.notify_one();
        for request in requests {
            assert_eq!(request.await.unwrap().unwrap_err().code(), ErrorCode::IntegrationServiceUnavailable);
        }
        assert_eq!(
            failures.load(Ordering::SeqCst),
            1,
            "the waiting requests took the failure of the read they waited on"
        );
    }

    #[tokio::test]
    async fn a_request_wanting_a_fresh_read_does_not_take_one_started_before_it_arrived() {
        let fake = Arc::new(FakeConsul::default());
        let cache = cache(&fake, 8);
        let reads = Arc::new(AtomicUsize::new(0));
        let before = Instant::now();
        cache.get("web", MINUTE, before, read(&fake, &reads, &[Source::Catalog])).await.unwrap();
        let fresh =
            cache.get("web", Duration::ZERO, Instant::now(), read(&fake, &reads, &[Source::Catalog])).await.unwrap();
        assert_eq!(*fresh.value, 2);
    }

    #[tokio::test]
    async fn the_cache_keeps_at_most_its_capacity_dropping_the_least_recently_used() {
        let fake = Arc::new(FakeConsul::default());
        let cache = cache(&fake, 2);
        let reads = Arc::new(AtomicUsize::new(0));
        for key in ["a", "b"] {
            cache.get(key, MINUTE, Instant::now(), read(&fake, &reads, &[Source::Health(key.into())])).await.unwrap();
        }
        // `a` is used again, so `b` is the least recently used when `c` comes.
        assert!(cache.get("a", MINUTE, Instant::now(), read(&fake, &reads, &[])).await.unwrap().from_cache);
        cache.get("c", MINUTE, Instant::now(), read(&fake, &reads, &[Source::Health("c".into())])).await.unwrap();
        assert_eq!(cache.len(), 2);
        assert!(cache.contains(&"a") && cache.contains(&"c") && !cache.contains(&"b"));
        assert_eq!(cache.watched_sources(), 2, "b's watcher went with it");
    }

    #[tokio::test]
    async fn a_projection_over_more_sources_than_can_be_watched_is_not_kept_for_later_requests() {
        let fake = Arc::new(FakeConsul::default());
        let cache = ProjectionCache::new(
            Arc::new(Arc::clone(&fake)) as Arc<dyn Watcher>,
            CacheLimits { max_watched: 2, ..CacheLimits::default() },
        );
        let reads = Arc::new(AtomicUsize::new(0));
        let two = [Source::Catalog, Source::Health("web".into())];
        let three = [Source::Catalog, Source::Health("web".into()), Source::Health("db".into())];
        cache.get("two", MINUTE, Instant::now(), read(&fake, &reads, &two)).await.unwrap();
        let first = cache.get("three", MINUTE, Instant::now(), read(&fake, &reads, &three)).await.unwrap();
        let second = cache.get("three", MINUTE, Instant::now(), read(&fake, &reads, &three)).await.unwrap();
        assert!(!first.from_cache && !second.from_cache, "an unwatched projection could go stale unseen");
        assert_eq!(*second.value, 3);
        assert_eq!(cache.watched_sources(), 2);
        assert!(cache.get("two", MINUTE, Instant::now(), read(&fake, &reads, &two)).await.unwrap().from_cache);
    }

    #[tokio::test]
    async fn dropping_the_cache_ends_its_watchers() {
        let fake = Arc::new(FakeConsul::default());
        let cache = cache(&fake, 8);
        let reads = Arc::new(AtomicUsize::new(0));
        cache.get("web", MINUTE, Instant::now(), read(&fake, &reads, &[Source::Catalog])).await.unwrap();
        until("the watch open", || fake.watches.load(Ordering::SeqCst) == 1).await;
        // The watch future holds a clone of the fake: its count drops back when the task ends.
        drop(cache);
        until("the watcher ended", || Arc::strong_count(&fake) == 1).await;
    }
}
