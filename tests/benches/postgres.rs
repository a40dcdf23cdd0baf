//! Select-by-primary-key throughput, side by side on one server: the connection manager
//! node, the connection manager's pool API, raw deadpool-postgres, raw bb8-postgres and
//! `pgbench -S -M prepared`, at 8, 32 and 128 concurrent clients; plus uncontended
//! checkout cost (get + drop) of each pool, each warmed by the same 10,000 checkouts. The
//! node runs twice more with tracing on (its operation span and the pool's statement span,
//! sampling 1.0 and 0.1, exported over OTLP/gRPC to a receiver in a child process on
//! loopback), to show what tracing costs.
//! The PostgreSQL adapter node (`adapter`) runs the same select through its query guard
//! (production profile), its database circuit breaker and one `postgres.query.completed` event
//! per statement, published to an in-process publisher that encodes the event as the Kafka bus
//! does (topic, key, JSON value, headers) and acknowledges at once: the adapter's own cost
//! beside the connection manager node. `adapter-quiet` is the adapter without an event
//! publisher (staging profile), which splits the event's cost from the guard's and breaker's.
//! `contract-floor` does what the node's contract asks of a `fetch_value` call (the request
//! built and dropped, the context, the deadline, the check, the stamped and timed answer)
//! straight on the pool API, without the generated node's layers: the node's own cost is
//! its distance from this row, the contract's is this row's distance from the pool API.
//!
//! Needs a database initialised with `pgbench -i -s 10` (scripts/bench-postgres.sh does it
//! all). Each point runs ONEX_BENCH_ROUNDS rounds (default 11) of ONEX_BENCH_SECONDS
//! (default 3) per contender, interleaved, and reports the median round. Rounds of one
//! contender spread by ±10 % on the 2-core machine (client and server share it); eleven
//! rounds keep the median's error near ±3 %, where five left the ratios between contenders
//! moving by ±10 % from run to run. Beside the ratio of medians it prints the node's ratio to
//! the best raw pool round by round (median and middle half), which cancels drift in the
//! machine's load between rounds. With ONEX_BENCH_SLICE_MS set, a round instead opens every
//! contender's pool at once (each an equal share of the server's connections, at most 50)
//! and lets the contenders take turns of that many milliseconds until each had
//! ONEX_BENCH_SECONDS: load from elsewhere on the machine then falls on all of them alike
//! within a round, and the per-round ratios tighten from ±10–20 % to ±2 % on a busy
//! machine. Traced contenders and pgbench cannot take turns (an exporter works on in the
//! others' turns; pgbench is a process of its own).
//! Environment: ONEX_BENCH_PG_DATABASE (default onex_bench), ONEX_BENCH_CLIENTS (default
//! 8,32,128), ONEX_BENCH_ONLY (comma-separated: node, node-metrics, node-traced-1.0, node-traced-0.1, node-traced-0.0, adapter, adapter-quiet, pool-api,
//! contract-floor, deadpool, deadpool-bounded, bb8, pgbench), ONEX_BENCH_OUT (default
//! <workspace>/target/bench/postgres.json), ONEX_TEST_PG_HOST / ONEX_TEST_PG_PORT.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use onex_generated::nodes::node_postgres_adapter_effect::v1_0_0::handler::NodePostgresAdapterEffect;
use onex_generated::nodes::node_postgres_adapter_effect::v1_0_0::models::{
    EnumPostgresAdapterOperation, ModelPostgresAdapterInput, ModelPostgresAdapterQueryRequest,
};
use onex_generated::nodes::node_postgres_adapter_effect::v1_0_0::node::PostgresAdapter;
use onex_generated::nodes::node_postgres_connection_manager_effect::v1_0_0::contract::OPERATION_FETCH_VALUE;
use onex_generated::nodes::node_postgres_connection_manager_effect::v1_0_0::handler::NodePostgresConnectionManagerEffect;
use onex_generated::nodes::node_postgres_connection_manager_effect::v1_0_0::models::{
    EnumPostgresConnectionManagerOperation, ModelPostgresConnectionManagerInput, ModelPostgresConnectionManagerOutput,
};
use onex_generated::nodes::node_postgres_connection_manager_effect::v1_0_0::node::PostgresConnectionManager as Handler;
use onex_runtime::environment::MapEnv;
use onex_runtime::event::OnexEvent;
use onex_runtime::event_bus::{EncodedEvent, EventPublisher, TopicNamer};
use onex_runtime::models::postgres::SslMode;
use onex_runtime::models::tracing::OtlpProtocol;
use onex_runtime::node::BoxFuture;
use onex_runtime::postgres::{PostgresConnectionManager, QueryOptions};
use onex_runtime::telemetry::{ExportStats, QueueLimits, Tracing};
use onex_runtime::{Container, Context, Node, OnexError};
use onex_tests::bench::{median, paired_ratios, percentile_ms, process_cpu};
use onex_tests::otlp::{Mode, trace_configuration};
use onex_tests::otlp_child::{ReceiverProcess, serve_if_child};
use onex_tests::postgres::{host, port};
use serde_json::{Value, json};

const SELECT: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
/// `pgbench -s 10` creates 100,000 accounts per scale unit.
const ACCOUNTS: i64 = 1_000_000;
const WARM_UP: Duration = Duration::from_millis(500);
const CHECKOUTS: u32 = 200_000;
/// Checkouts before each pool's measured ones, the same for every pool: connections opened,
/// caches and branch predictors warm, so that no pool's figure includes a cold start the
/// others skipped.
const CHECKOUT_WARM_UP: u32 = 10_000;

#[derive(Debug, Clone, serde::Serialize)]
struct Point {
    name: String,
    clients: usize,
    pool_size: Option<usize>,
    /// Median of the rounds.
    tps: Option<f64>,
    tps_rounds: Vec<f64>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    /// Median over the rounds of this process's CPU time per operation (not for pgbench).
    client_cpu_us_per_op: Option<f64>,
    /// Traced contenders: spans the receiver accepted, summed over the rounds.
    spans_exported: Option<u64>,
    /// Traced contenders: spans dropped (queue full or export failed), summed over the rounds.
    spans_dropped: Option<u64>,
    note: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
struct Checkout {
    name: String,
    checkout_ns: f64,
}

/// A small, fast per-task random source (xorshift64*), so key choice costs nothing.
struct Rng(u64);

impl Rng {
    fn next_aid(&mut self) -> i64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % ACCOUNTS as u64) as i64 + 1
    }
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty()).unwrap_or_else(|| default.to_owned())
}

/// What one measured window produced.
struct Window {
    tps: f64,
    latencies: Vec<u32>,
    /// Client-side CPU per operation (this process: pool, driver, node), in µs.
    cpu_us_per_op: Option<f64>,
    /// What the span export did in this window (traced contenders).
    spans: Option<ExportStats>,
}

/// One measured window of a round. Its contenders, each with its pool open and its clients
/// running, take turns of `slice`: only the contender whose turn it is runs statements, the
/// others' clients wait. Drift in the machine's load, which moves one contender's 3 s rounds
/// by a third on a busy machine, then falls on every contender alike within a round; a
/// contender's throughput is its statements over the sum of its turns. A contender measured
/// alone is one contender with one turn of the whole window ([`Turns::alone`]).
///
/// Invariants: a client starts a statement only in its contender's turn and counts it only
/// if it ends there (a statement still running when the turn ends finishes uncounted, as
/// the others' do at the end of theirs); a contender's CPU time is the process's over its
/// turns.
struct Turns {
    slice: Duration,
    seconds: f64,
    /// The contender whose turn it is; `usize::MAX` between turns.
    active: AtomicUsize,
    measuring: AtomicBool,
    stop: AtomicBool,
    /// Wakes a contender's waiting clients when its turn comes.
    turn: Vec<tokio::sync::Notify>,
    /// Every contender's clients running: the schedule starts.
    ready: tokio::sync::Barrier,
    /// The schedule is over: every contender collects its clients.
    done: tokio::sync::Barrier,
    /// Per contender: the length of its measured turns and the CPU time spent in them.
    spent: Vec<std::sync::Mutex<(Duration, Option<Duration>)>>,
}

impl Turns {
    fn new(contenders: usize, slice: Duration, seconds: f64) -> Arc<Self> {
        Arc::new(Self {
            slice,
            seconds,
            active: AtomicUsize::new(usize::MAX),
            measuring: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            turn: (0..contenders).map(|_| tokio::sync::Notify::new()).collect(),
            ready: tokio::sync::Barrier::new(contenders),
            done: tokio::sync::Barrier::new(contenders),
            spent: (0..contenders).map(|_| std::sync::Mutex::new((Duration::ZERO, Some(Duration::ZERO)))).collect(),
        })
    }

    /// One contender's window of `seconds`, measured in one turn.
    fn alone(seconds: f64) -> Arc<Self> {
        Self::new(1, Duration::from_secs_f64(seconds), seconds)
    }

    fn give_turn(&self, contender: usize) {
        self.active.store(contender, Relaxed);
        self.turn[contender].notify_waiters();
    }

    /// Runs `clients` tasks of contender `me`, each calling `op` in a loop in `me`'s turns;
    /// returns the throughput of the measured turns, their latencies (µs) and the client CPU
    /// per op. Generic over the operation, so each contender's future is polled in place: a
    /// boxed future per call would charge the harness's allocation to the contenders with
    /// larger futures.
    async fn drive<F, Fut>(self: &Arc<Self>, me: usize, clients: usize, op: F) -> Window
    where
        F: Fn(i64) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let tasks: Vec<_> = (0..clients)
            .map(|i| {
                let (op, turns) = (op.clone(), Arc::clone(self));
                tokio::spawn(async move {
                    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1).wrapping_mul(0x1000_0000_01b3));
                    let mut latencies: Vec<u32> = Vec::with_capacity(1 << 14);
                    while !turns.stop.load(Relaxed) {
                        if turns.active.load(Relaxed) != me {
                            // Registered before the check, so a turn given in between wakes it.
                            let notified = turns.turn[me].notified();
                            let mut notified = std::pin::pin!(notified);
                            notified.as_mut().enable();
                            if turns.active.load(Relaxed) != me && !turns.stop.load(Relaxed) {
                                notified.await;
                            }
                            continue;
                        }
                        let started = Instant::now();
                        op(rng.next_aid()).await;
                        if turns.measuring.load(Relaxed) && turns.active.load(Relaxed) == me {
                            latencies.push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
                        }
                    }
                    latencies
                })
            })
            .collect();
        if self.ready.wait().await.is_leader() {
            self.schedule().await;
        }
        self.done.wait().await;
        let mut all: Vec<u32> = Vec::new();
        for task in tasks {
            all.extend(task.await.expect("bench task panicked"));
        }
        let (elapsed, cpu) = *self.spent[me].lock().unwrap();
        let ops = all.len().max(1) as f64;
        Window {
            tps: all.len() as f64 / elapsed.as_secs_f64().max(f64::EPSILON),
            cpu_us_per_op: cpu.map(|c| c.as_secs_f64() * 1e6 / ops),
            latencies: all,
            spans: None,
        }
    }

    /// Warms every contender up in one turn each, then gives turns round-robin until each
    /// had `seconds`.
    async fn schedule(&self) {
        let contenders = self.turn.len();
        for contender in 0..contenders {
            self.give_turn(contender);
            tokio::time::sleep(WARM_UP).await;
        }
        self.measuring.store(true, Relaxed);
        let turns = (self.seconds / self.slice.as_secs_f64()).ceil().max(1.0) as usize;
        for _ in 0..turns {
            for contender in 0..contenders {
                let cpu_before = process_cpu();
                let started = Instant::now();
                self.give_turn(contender);
                tokio::time::sleep(self.slice).await;
                let elapsed = started.elapsed();
                let cpu = cpu_before.zip(process_cpu()).map(|(before, after)| after.saturating_sub(before));
                let mut spent = self.spent[contender].lock().unwrap();
                spent.0 += elapsed;
                spent.1 = spent.1.zip(cpu).map(|(sum, cpu)| sum + cpu);
            }
        }
        self.stop.store(true, Relaxed);
        self.active.store(usize::MAX, Relaxed);
        for turn in &self.turn {
            turn.notify_waiters();
        }
    }
}

/// Connections a round may open in all: the server's limit less the superuser's reserve and
/// two for the bench's own sessions.
async fn connection_budget(database: &str) -> usize {
    let (client, connection) = pg_config(database).connect(tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(connection);
    let setting = |row: tokio_postgres::Row| row.get::<_, String>(0).parse::<usize>().expect("a number");
    let max = setting(client.query_one("SHOW max_connections", &[]).await.expect("max_connections"));
    let reserved =
        setting(client.query_one("SHOW superuser_reserved_connections", &[]).await.expect("reserved connections"));
    max.saturating_sub(reserved + 2)
}

fn pg_config(database: &str) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config.host(host()).port(port()).user("postgres").dbname(database).application_name("onex-bench");
    config
}

async fn manager(database: &str, size: usize) -> PostgresConnectionManager {
    let mut config =
        onex_runtime::models::postgres::PostgresConnectionConfig::new(host(), port(), database, "postgres", "public");
    config.ssl_mode = SslMode::Disable;
    config.max_connections = u32::try_from(size).unwrap();
    config.min_connections = config.max_connections;
    config.wait_timeout_secs = 30.0;
    config.application_name = "onex-bench".into();
    PostgresConnectionManager::connect(config).await.expect("connection manager")
}

fn node_input(aid: i64) -> ModelPostgresConnectionManagerInput {
    ModelPostgresConnectionManagerInput {
        query: Some(SELECT.to_owned()),
        parameters: Some(vec![json!(aid)]),
        ..ModelPostgresConnectionManagerInput::new(EnumPostgresConnectionManagerOperation::FetchValue)
    }
}

/// The connection manager node over a fresh manager with `size` connections; both record
/// spans with `tracing`, and with `metered` both register their series in a registry of
/// their own.
async fn node_with_manager(
    database: &str,
    size: usize,
    tracing: &Tracing,
    metered: bool,
) -> (Arc<NodePostgresConnectionManagerEffect<Handler>>, Arc<PostgresConnectionManager>) {
    let mut pg = manager(database, size).await.with_tracing(tracing.clone());
    let mut container = Container::new();
    if metered {
        let registry = Arc::new(onex_runtime::metrics::MetricsRegistry::new("bench"));
        pg = pg.with_metrics(&registry).expect("the pool's series");
        container.register(registry);
    }
    let pg = Arc::new(pg);
    container.register(Arc::clone(&pg));
    container.register(Arc::new(tracing.clone()));
    let node = Arc::new(NodePostgresConnectionManagerEffect::<Handler>::new(&container).expect("node"));
    assert_eq!(node.instruments().has_metrics(), metered);
    (node, pg)
}

/// What the connection manager node's contract asks of a `fetch_value` call, written
/// straight on the pool API: the deadline narrowed to the operation's contract timeout, the
/// query checked, the answer stamped with the time, the correlation id and the elapsed time.
async fn contract_floor(
    pg: &PostgresConnectionManager,
    input: ModelPostgresConnectionManagerInput,
    ctx: Context,
) -> ModelPostgresConnectionManagerOutput {
    let started = Instant::now();
    let ctx = ctx.narrowed_from(OPERATION_FETCH_VALUE.timeout, started);
    let sql = input.query.as_deref().filter(|sql| !sql.chars().all(char::is_whitespace)).expect("a query");
    let options = QueryOptions { timeout: None, deadline: ctx.deadline(), record_metrics: input.record_metrics };
    let value = pg.fetch_value_with(sql, input.parameters.as_deref().unwrap_or_default(), options).await;
    let correlation_id = input.correlation_id.unwrap_or_else(|| ctx.correlation_id());
    let mut output =
        ModelPostgresConnectionManagerOutput::new(true, input.operation_type, correlation_id, chrono::Utc::now());
    output.execution_time_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
    output.value = value.expect("query");
    output
}

/// An event publisher that does what the Kafka bus does before the broker (topic from the
/// event type, key, JSON value, headers: `EncodedEvent::new`, which `KafkaEventBus::encode`
/// calls) and acknowledges at once.
struct EncodingPublisher {
    namer: TopicNamer,
    published: AtomicU64,
}

impl EventPublisher for EncodingPublisher {
    fn publish(&self, event: OnexEvent) -> BoxFuture<'_, Result<(), OnexError>> {
        let encoded = EncodedEvent::new(&self.namer, &event);
        let result = encoded.map(|encoded| {
            std::hint::black_box(encoded);
            self.published.fetch_add(1, Relaxed);
        });
        Box::pin(std::future::ready(result))
    }
}

fn adapter_input(aid: i64) -> ModelPostgresAdapterInput {
    ModelPostgresAdapterInput {
        query_request: Some(ModelPostgresAdapterQueryRequest {
            parameters: Some(vec![json!(aid)]),
            ..ModelPostgresAdapterQueryRequest::new(SELECT.to_owned())
        }),
        ..ModelPostgresAdapterInput::new(EnumPostgresAdapterOperation::Query)
    }
}

/// The adapter node over a fresh manager with `size` connections: with events, in the
/// production profile, publishing to an [`EncodingPublisher`]; without, in the staging
/// profile (production requires a publisher).
async fn adapter_with_manager(
    database: &str,
    size: usize,
    events: bool,
) -> (Arc<NodePostgresAdapterEffect<PostgresAdapter>>, Arc<PostgresConnectionManager>, Arc<EncodingPublisher>) {
    let pg = Arc::new(manager(database, size).await);
    let publisher = Arc::new(EncodingPublisher {
        namer: TopicNamer::new("dev", "omnibase", "onex").expect("topic namer"),
        published: AtomicU64::new(0),
    });
    let mut container = Container::new();
    container.register(Arc::clone(&pg));
    if events {
        container.register::<dyn EventPublisher>(publisher.clone());
    }
    let profile = if events { "production" } else { "staging" };
    let env = MapEnv::from_pairs([("DEPLOYMENT_ENVIRONMENT", profile)]);
    let handler = PostgresAdapter::with_env(&container, &env).expect("adapter");
    (Arc::new(NodePostgresAdapterEffect::with_handler(handler)), pg, publisher)
}

/// A deadpool of `size` connections whose checkouts wait at most `wait` for one (deadpool's
/// default, `None`, waits without limit).
fn deadpool(database: &str, size: usize, wait: Option<Duration>) -> deadpool_postgres::Pool {
    let manager = deadpool_postgres::Manager::from_config(
        pg_config(database),
        tokio_postgres::NoTls,
        deadpool_postgres::ManagerConfig { recycling_method: deadpool_postgres::RecyclingMethod::Fast },
    );
    deadpool_postgres::Pool::builder(manager)
        .max_size(size)
        .wait_timeout(wait)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .expect("deadpool")
}

async fn bb8(database: &str, size: usize) -> bb8::Pool<bb8_postgres::PostgresConnectionManager<tokio_postgres::NoTls>> {
    let manager = bb8_postgres::PostgresConnectionManager::new(pg_config(database), tokio_postgres::NoTls);
    bb8::Pool::builder()
        .max_size(u32::try_from(size).unwrap())
        .min_idle(u32::try_from(size).unwrap())
        .test_on_check_out(false)
        .build(manager)
        .await
        .expect("bb8")
}

/// `pgbench -S -M prepared` with `clients` clients; latency percentiles from its
/// per-transaction log (10 % sample).
fn run_pgbench(database: &str, clients: usize, seconds: f64) -> (Option<f64>, Vec<u32>, Option<String>) {
    let log_dir = std::env::temp_dir().join(format!("onex-pgbench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&log_dir);
    std::fs::create_dir_all(&log_dir).expect("pgbench log dir");
    let prefix = log_dir.join("tx");
    let output = Command::new("pgbench")
        .args(["-h", &host(), "-p", &port().to_string(), "-U", "postgres", "-n", "-S", "-M", "prepared"])
        .args(["-c", &clients.to_string(), "-j", "2", "-T", &format!("{}", seconds.ceil().max(1.0) as u64)])
        .args(["-l", "--sampling-rate", "0.1", "--log-prefix", prefix.to_str().unwrap(), database])
        .output()
        .expect("pgbench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let tps = stdout
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l["tps = ".len()..].split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok());
    let mut latencies: Vec<u32> = Vec::new();
    for entry in std::fs::read_dir(&log_dir).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        latencies.extend(text.lines().filter_map(|l| l.split_whitespace().nth(2)?.parse::<u32>().ok()));
    }
    let _ = std::fs::remove_dir_all(&log_dir);
    let note = if output.status.success() {
        None
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let error = stderr.lines().find(|l| l.contains("error") || l.contains("FATAL"));
        let last = stderr.lines().rev().find(|l| l.trim().len() > "pgbench:".len());
        Some(error.or(last).unwrap_or("pgbench failed").trim().to_owned())
    };
    (if note.is_none() { tps } else { None }, latencies, note)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contender {
    Node,
    /// The node and its pool recording their Prometheus series.
    NodeMetered,
    /// The node with tracing at sampling 1.0.
    NodeTracedAll,
    /// The node with tracing at sampling 0.1.
    NodeTracedTenth,
    /// The node with tracing at sampling 0.0: every operation's context is made and carried
    /// (what parent-based sampling needs), nothing is recorded. The floor of tracing's cost.
    NodeTracedNone,
    /// The PostgreSQL adapter node: guard, breaker, an event per statement.
    Adapter,
    /// The adapter without an event publisher.
    AdapterQuiet,
    PoolApi,
    /// The node's request and answer around the pool API, without the generated node: what
    /// the contract's typed request and answer cost on their own (the request built and dropped,
    /// a context with its correlation id, the contract timeout's deadline, the query checked,
    /// the answer stamped and timed). A reference row: the node's layer is the node's cost
    /// above it.
    ContractFloor,
    Deadpool,
    /// Deadpool with our pool's wait timeout (30 s): what bounding the wait for a connection
    /// costs it. A reference row, not a baseline: the best raw pool stays the fastest
    /// configuration of each.
    DeadpoolBounded,
    Bb8,
    Pgbench,
}

impl Contender {
    const ALL: [Self; 13] = [
        Self::Node,
        Self::NodeMetered,
        Self::NodeTracedAll,
        Self::NodeTracedTenth,
        Self::NodeTracedNone,
        Self::Adapter,
        Self::AdapterQuiet,
        Self::PoolApi,
        Self::ContractFloor,
        Self::Deadpool,
        Self::DeadpoolBounded,
        Self::Bb8,
        Self::Pgbench,
    ];

    /// The short name `ONEX_BENCH_ONLY` selects by.
    fn key(self) -> &'static str {
        match self {
            Self::Node => "node",
            Self::NodeMetered => "node-metrics",
            Self::NodeTracedAll => "node-traced-1.0",
            Self::NodeTracedTenth => "node-traced-0.1",
            Self::NodeTracedNone => "node-traced-0.0",
            Self::Adapter => "adapter",
            Self::AdapterQuiet => "adapter-quiet",
            Self::PoolApi => "pool-api",
            Self::ContractFloor => "contract-floor",
            Self::Deadpool => "deadpool",
            Self::DeadpoolBounded => "deadpool-bounded",
            Self::Bb8 => "bb8",
            Self::Pgbench => "pgbench",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Node => "onex node (fetch_value)",
            Self::NodeMetered => "node with Prometheus series",
            Self::NodeTracedAll => "traced node, sampling 1.0",
            Self::NodeTracedTenth => "traced node, sampling 0.1",
            Self::NodeTracedNone => "traced node, sampling 0.0",
            Self::Adapter => "adapter node (query, guard, breaker, event)",
            Self::AdapterQuiet => "adapter node without events",
            Self::PoolApi => "onex pool API (fetch_value)",
            Self::ContractFloor => "contract floor (node's request and answer, no node)",
            Self::Deadpool => "deadpool-postgres (prepare_cached)",
            // Not "deadpool…": rows are looked up by the start of their name.
            Self::DeadpoolBounded => "bounded-wait deadpool-postgres (30 s)",
            Self::Bb8 => "bb8-postgres (query_typed)",
            Self::Pgbench => "pgbench -S -M prepared",
        }
    }

    /// The sampling rate of a traced contender.
    fn sample_rate(self) -> Option<f64> {
        match self {
            Self::NodeTracedAll => Some(1.0),
            Self::NodeTracedTenth => Some(0.1),
            Self::NodeTracedNone => Some(0.0),
            _ => None,
        }
    }

    /// One round as contender `me` of `turns`: builds the contender's pool with `size`
    /// connections opened up front, drives it and closes it again. Alone, the contenders run
    /// one after another, so only one pool is open at a time (the server allows 100
    /// connections); in turns, every pool holds its share. Traced contenders export to `otlp`.
    async fn run(
        self,
        database: &str,
        clients: usize,
        size: usize,
        (turns, me): (Arc<Turns>, usize),
        otlp: Option<&str>,
    ) -> (Option<Window>, Option<String>) {
        let window = match self {
            Self::Pgbench => {
                let (tps, latencies, note) = run_pgbench(database, clients, turns.seconds);
                return (tps.map(|tps| Window { tps, latencies, cpu_us_per_op: None, spans: None }), note);
            }
            Self::Node | Self::NodeMetered | Self::NodeTracedAll | Self::NodeTracedTenth | Self::NodeTracedNone => {
                let tracing = match (self.sample_rate(), otlp) {
                    (None, _) => Tracing::disabled(),
                    (Some(rate), Some(endpoint)) => {
                        let config = trace_configuration(endpoint, OtlpProtocol::Grpc, rate);
                        Tracing::with_limits(&config, QueueLimits::default()).expect("tracing")
                    }
                    (Some(_), None) => return (None, Some("no OTLP receiver".into())),
                };
                let (node, pg) = node_with_manager(database, size, &tracing, self == Self::NodeMetered).await;
                let op = move |aid| {
                    let node = Arc::clone(&node);
                    async move {
                        let out = node.process(node_input(aid), Context::new()).await.expect("node call");
                        assert!(out.success && out.value.is_some(), "{:?}", out.error);
                    }
                };
                let mut result = turns.drive(me, clients, op).await;
                pg.close();
                if tracing.is_enabled() {
                    // Shut down after the window: what it exports then is not measured.
                    let _ = tracing.shutdown();
                    result.spans = Some(tracing.stats());
                }
                result
            }
            Self::Adapter | Self::AdapterQuiet => {
                let events = self == Self::Adapter;
                let (node, pg, publisher) = adapter_with_manager(database, size, events).await;
                let op = move |aid| {
                    let node = Arc::clone(&node);
                    async move {
                        let out = node.process(adapter_input(aid), Context::new()).await.expect("adapter call");
                        assert!(
                            out.success && out.query_result.is_some_and(|r| r.row_count == 1),
                            "{:?}",
                            out.error_message
                        );
                    }
                };
                let result = turns.drive(me, clients, op).await;
                pg.close();
                assert_eq!(publisher.published.load(Relaxed) > 0, events, "the adapter published its events");
                result
            }
            Self::PoolApi => {
                let pg = Arc::new(manager(database, size).await);
                let shared = Arc::clone(&pg);
                let op = move |aid| {
                    let pg = Arc::clone(&shared);
                    async move {
                        let value = pg.fetch_value(SELECT, &[Value::from(aid)]).await.expect("query");
                        assert!(value.is_some());
                    }
                };
                let result = turns.drive(me, clients, op).await;
                pg.close();
                result
            }
            Self::ContractFloor => {
                let pg = Arc::new(manager(database, size).await);
                let shared = Arc::clone(&pg);
                let op = move |aid| {
                    let pg = Arc::clone(&shared);
                    async move {
                        let out = contract_floor(&pg, node_input(aid), Context::new()).await;
                        assert!(out.success && out.value.is_some(), "{:?}", out.error);
                    }
                };
                let result = turns.drive(me, clients, op).await;
                pg.close();
                result
            }
            Self::Deadpool | Self::DeadpoolBounded => {
                let wait = (self == Self::DeadpoolBounded).then_some(Duration::from_secs(30));
                let pool = deadpool(database, size, wait);
                // Open every connection before measuring, as the other pools do.
                let objects = futures::future::join_all((0..size).map(|_| pool.get())).await;
                drop(objects);
                let shared = pool.clone();
                let op = move |aid| {
                    let pool = shared.clone();
                    async move {
                        let aid = i32::try_from(aid).expect("aid fits int4");
                        let client = pool.get().await.expect("deadpool get");
                        let statement = client.prepare_cached(SELECT).await.expect("prepare");
                        let row = client.query_one(&statement, &[&aid]).await.expect("query");
                        let _: i32 = row.get(0);
                    }
                };
                let result = turns.drive(me, clients, op).await;
                pool.close();
                result
            }
            Self::Bb8 => {
                let pool = bb8(database, size).await;
                let shared = pool.clone();
                let op = move |aid| {
                    let pool = shared.clone();
                    async move {
                        let aid = i32::try_from(aid).expect("aid fits int4");
                        let client = pool.get().await.expect("bb8 get");
                        // bb8 has no statement cache; query_typed sends Parse/Bind/Execute in
                        // one round trip.
                        let rows = client
                            .query_typed(SELECT, &[(&aid, tokio_postgres::types::Type::INT4)])
                            .await
                            .expect("query");
                        let _: i32 = rows[0].get(0);
                    }
                };
                let result = turns.drive(me, clients, op).await;
                drop(pool);
                result
            }
        };
        wait_for_backends_to_exit(database).await;
        (Some(window), None)
    }
}

/// Waits (at most 5 s) until no benchmark connection to `database` is left on the server.
async fn wait_for_backends_to_exit(database: &str) {
    let admin = onex_tests::postgres::admin_client("postgres").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let row = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'onex-bench'",
                &[&database],
            )
            .await
            .expect("count backends");
        if row.get::<_, i64>(0) == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn checkout_costs(database: &str) -> Vec<Checkout> {
    let mut results = Vec::new();
    let pg = manager(database, 4).await;
    for _ in 0..CHECKOUT_WARM_UP {
        drop(pg.acquire().await.unwrap());
    }
    let started = Instant::now();
    for _ in 0..CHECKOUTS {
        drop(pg.acquire().await.unwrap());
    }
    results.push(Checkout {
        name: "onex pool".into(),
        checkout_ns: started.elapsed().as_nanos() as f64 / f64::from(CHECKOUTS),
    });
    pg.close();

    let pool = deadpool(database, 4, None);
    for _ in 0..CHECKOUT_WARM_UP {
        drop(pool.get().await.unwrap());
    }
    let started = Instant::now();
    for _ in 0..CHECKOUTS {
        drop(pool.get().await.unwrap());
    }
    results.push(Checkout {
        name: "deadpool-postgres".into(),
        checkout_ns: started.elapsed().as_nanos() as f64 / f64::from(CHECKOUTS),
    });
    drop(pool);

    let pool = bb8(database, 4).await;
    for _ in 0..CHECKOUT_WARM_UP {
        drop(pool.get().await.unwrap());
    }
    let started = Instant::now();
    for _ in 0..CHECKOUTS {
        drop(pool.get().await.unwrap());
    }
    results.push(Checkout {
        name: "bb8-postgres".into(),
        checkout_ns: started.elapsed().as_nanos() as f64 / f64::from(CHECKOUTS),
    });
    results
}

/// The throughput rounds of the contender named `prefix…` at `clients`.
fn rounds_of<'a>(points: &'a [Point], clients: usize, prefix: &str) -> Option<&'a [f64]> {
    points.iter().find(|p| p.clients == clients && p.name.starts_with(prefix)).map(|p| p.tps_rounds.as_slice())
}

fn fmt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.decimals$}"))
}

fn main() {
    serve_if_child();
    // `cargo bench` passes `--bench`; this binary takes no arguments of its own.
    let database = env_or("ONEX_BENCH_PG_DATABASE", "onex_bench");
    let seconds: f64 = env_or("ONEX_BENCH_SECONDS", "3").parse().expect("ONEX_BENCH_SECONDS is a number");
    let rounds_per_point: usize = env_or("ONEX_BENCH_ROUNDS", "11").parse().expect("ONEX_BENCH_ROUNDS is a number");
    let clients: Vec<usize> = env_or("ONEX_BENCH_CLIENTS", "8,32,128")
        .split(',')
        .map(|c| c.trim().parse().expect("ONEX_BENCH_CLIENTS is a list of numbers"))
        .collect();
    let out = std::env::var("ONEX_BENCH_OUT").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("target").join("bench").join("postgres.json")
    });
    let only = env_or("ONEX_BENCH_ONLY", "");
    let contenders: Vec<Contender> = Contender::ALL
        .into_iter()
        .filter(|c| only.is_empty() || only.split(',').any(|o| o.trim() == c.key()))
        .collect();
    // Turns of this many milliseconds within a round instead of one window per contender.
    let slice = std::env::var("ONEX_BENCH_SLICE_MS")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| Duration::from_millis(v.trim().parse().expect("ONEX_BENCH_SLICE_MS is a number of milliseconds")))
        .filter(|slice| !slice.is_zero());
    if slice.is_some() {
        // A traced contender's exporter keeps working in the others' turns, and pgbench is a
        // process of its own: neither can take turns.
        let alone: Vec<_> = contenders
            .iter()
            .filter(|c| c.sample_rate().is_some() || **c == Contender::Pgbench)
            .map(|c| c.key())
            .collect();
        assert!(
            alone.is_empty(),
            "ONEX_BENCH_SLICE_MS: {} cannot take turns; leave them out of ONEX_BENCH_ONLY",
            alone.join(", ")
        );
    }
    let receiver = contenders
        .iter()
        .any(|c| c.sample_rate().is_some())
        .then(|| ReceiverProcess::start(Mode::Grpc).expect("start the OTLP receiver process"));
    let otlp = receiver.as_ref().map(|r| r.endpoint().to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut points = Vec::new();
    let checkout = runtime.block_on(async {
        // Taking turns, every contender's pool stays open through the round.
        let budget = match slice {
            Some(_) => connection_budget(&database).await / contenders.len().max(1),
            None => usize::MAX,
        };
        for &n in &clients {
            // Every pool gets as many connections as clients (pgbench's model), capped at the
            // connection manager's default maximum of 50 (and, taking turns, at an equal share
            // of what the server allows).
            let size = n.min(50).min(budget);
            assert!(size > 0, "the server allows too few connections for {} contenders", contenders.len());
            let mut spans: Vec<Vec<ExportStats>> = vec![Vec::new(); contenders.len()];
            let mut rounds: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
            let mut latencies: Vec<Vec<u32>> = vec![Vec::new(); contenders.len()];
            let mut notes: Vec<Option<String>> = vec![None; contenders.len()];
            let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
            // Rounds interleave the contenders (in a rotating order) so that background load
            // on the machine hits them alike; the median round is reported.
            for round in 0..rounds_per_point {
                let outcomes = match slice {
                    Some(slice) => {
                        let turns = Turns::new(contenders.len(), slice, seconds);
                        let runs = contenders
                            .iter()
                            .enumerate()
                            .map(|(i, c)| c.run(&database, n, size, (Arc::clone(&turns), i), otlp.as_deref()));
                        futures::future::join_all(runs).await.into_iter().enumerate().collect::<Vec<_>>()
                    }
                    None => {
                        let mut outcomes = Vec::new();
                        for k in 0..contenders.len() {
                            let i = (round + k) % contenders.len();
                            let alone = (Turns::alone(seconds), 0);
                            outcomes.push((i, contenders[i].run(&database, n, size, alone, otlp.as_deref()).await));
                        }
                        outcomes
                    }
                };
                for (i, (window, note)) in outcomes {
                    if let Some(window) = window {
                        spans[i].extend(window.spans);
                        rounds[i].push(window.tps);
                        latencies[i].extend(window.latencies);
                        cpu[i].extend(window.cpu_us_per_op);
                    }
                    notes[i] = notes[i].take().or(note);
                }
            }
            for (i, contender) in contenders.iter().enumerate() {
                latencies[i].sort_unstable();
                let point = Point {
                    name: contender.name().to_owned(),
                    clients: n,
                    pool_size: (!matches!(contender, Contender::Pgbench)).then_some(size),
                    tps: median(&rounds[i]),
                    tps_rounds: rounds[i].clone(),
                    p50_ms: percentile_ms(&latencies[i], 0.50),
                    p99_ms: percentile_ms(&latencies[i], 0.99),
                    client_cpu_us_per_op: median(&cpu[i]),
                    spans_exported: (!spans[i].is_empty()).then(|| spans[i].iter().map(|s| s.exported).sum()),
                    spans_dropped: (!spans[i].is_empty()).then(|| spans[i].iter().map(ExportStats::dropped).sum()),
                    note: notes[i].clone(),
                };
                eprintln!(
                    "{:>36} c={:<4} tps={:>9} rounds={:?} p50={} p99={} cpu/op={}us{}",
                    point.name,
                    n,
                    fmt(point.tps, 0),
                    point.tps_rounds.iter().map(|t| t.round()).collect::<Vec<_>>(),
                    fmt(point.p50_ms, 3),
                    fmt(point.p99_ms, 3),
                    fmt(point.client_cpu_us_per_op, 1),
                    point
                        .spans_exported
                        .map(|e| format!(" spans exported={e} dropped={}", point.spans_dropped.unwrap_or(0)))
                        .unwrap_or_default()
                );
                points.push(point);
            }
        }
        checkout_costs(&database).await
    });

    println!("\n| contender | clients | pool | TPS (median) | p50 ms | p99 ms | client CPU µs/op |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for p in &points {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |{}",
            p.name,
            p.clients,
            p.pool_size.map_or_else(|| "-".to_owned(), |s| s.to_string()),
            fmt(p.tps, 0),
            fmt(p.p50_ms, 3),
            fmt(p.p99_ms, 3),
            fmt(p.client_cpu_us_per_op, 1),
            p.note.as_deref().map(|n| format!(" {n}")).unwrap_or_default()
        );
    }
    println!("\n| pool | uncontended checkout (get + drop), mean ns |");
    println!("|---|---:|");
    for c in &checkout {
        println!("| {} | {:.0} |", c.name, c.checkout_ns);
    }
    let mut ratios = Vec::new();
    println!();
    for &n in &clients {
        let point = |prefix: &str| points.iter().find(|p| p.clients == n && p.name.starts_with(prefix));
        let tps = |prefix: &str| point(prefix).and_then(|p| p.tps);
        let node = tps("onex node");
        let best_raw = [tps("deadpool"), tps("bb8")]
            .into_iter()
            .flatten()
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
        let pgbench = tps("pgbench");
        // `a` against `b`, as a ratio of medians and round by round (rounds of one index ran
        // back to back, so they shared the machine's load).
        let versus = |a: &str, b: &str| {
            let ratio = tps(a).zip(tps(b)).map(|(a, b)| a / b);
            let per_round = rounds_of(&points, n, a)
                .zip(rounds_of(&points, n, b))
                .map(|(a, b)| paired_ratios(a, &[b]))
                .unwrap_or_default();
            (ratio, median(&per_round))
        };
        // The adapter against the node it wraps the same pool for; the node against the floor
        // of its contract.
        let pairs = [
            ("adapter_vs_node", "adapter / node", versus("adapter node (query", "onex node")),
            (
                "adapter_without_events_vs_node",
                "adapter without events / node",
                versus("adapter node without", "onex node"),
            ),
            ("node_vs_contract_floor", "node / contract floor", versus("onex node", "contract floor")),
        ];
        for (_, label, (ratio, per_round)) in &pairs {
            if ratio.is_some() {
                println!("clients {n}: {label} = {} (per round: median {})", fmt(*ratio, 3), fmt(*per_round, 3));
            }
        }
        let vs_raw = node.zip(best_raw).map(|(a, b)| a / b);
        let vs_pgbench = node.zip(pgbench).map(|(a, b)| a / b);
        let rounds = |prefix: &str| point(prefix).map(|p| p.tps_rounds.as_slice());
        // Round by round against the better of the raw pools in that round.
        let per_round_vs_raw = |prefix: &str| {
            rounds(prefix)
                .map(|a| {
                    paired_ratios(a, &[rounds("deadpool"), rounds("bb8")].into_iter().flatten().collect::<Vec<_>>())
                })
                .unwrap_or_default()
        };
        let per_round = per_round_vs_raw("onex node");
        let floor_vs_raw = tps("contract floor").zip(best_raw).map(|(a, b)| a / b);
        let floor_per_round_median = median(&per_round_vs_raw("contract floor"));
        if floor_vs_raw.is_some() {
            println!(
                "clients {n}: contract floor / best raw pool = {} (per round: median {})",
                fmt(floor_vs_raw, 3),
                fmt(floor_per_round_median, 3)
            );
        }
        let mut sorted = per_round.clone();
        sorted.sort_by(f64::total_cmp);
        let quartile = |q: usize| sorted.get((sorted.len().max(1) - 1) * q / 4).copied();
        let per_round_median = median(&per_round);
        // Tracing's cost: each traced contender against the untraced node, round by round
        // (rounds of one index ran back to back, so they shared the machine's load).
        let traced: Vec<Value> = Contender::ALL
            .into_iter()
            .filter_map(|c| Some((c.name(), c.sample_rate()?)))
            .filter_map(|(name, rate)| {
                let traced = rounds(name)?;
                let per_round = paired_ratios(traced, &[rounds("onex node")?]);
                let ratio = tps(name).zip(node).map(|(a, b)| a / b);
                println!(
                    "clients {n}: {name} / untraced node = {} (per round: median {})",
                    fmt(ratio, 3),
                    fmt(median(&per_round), 3)
                );
                Some(json!({
                    "sample_rate": rate,
                    "traced_vs_untraced_node": ratio,
                    "traced_vs_untraced_node_per_round_median": median(&per_round),
                }))
            })
            .collect();
        println!(
            "clients {n}: node / best raw pool = {} (per round: median {}, middle half {}..{}), node / pgbench prepared = {}",
            fmt(vs_raw, 3),
            fmt(per_round_median, 3),
            fmt(quartile(1), 3),
            fmt(quartile(3), 3),
            fmt(vs_pgbench, 3)
        );
        let mut entry = json!({
            "clients": n,
            "node_vs_best_raw_pool": vs_raw,
            "node_vs_best_raw_pool_per_round": per_round,
            "node_vs_best_raw_pool_per_round_median": per_round_median,
            "node_vs_pgbench_prepared": vs_pgbench,
            "contract_floor_vs_best_raw_pool": floor_vs_raw,
            "contract_floor_vs_best_raw_pool_per_round_median": floor_per_round_median,
            "tracing": traced,
        });
        for (key, _, (ratio, per_round)) in pairs {
            entry[key] = json!(ratio);
            entry[format!("{key}_per_round_median")] = json!(per_round);
        }
        ratios.push(entry);
    }
    let report = json!({
        "benchmark": "select by primary key (pgbench_accounts, scale 10)",
        "generated_at": chrono::Utc::now().to_rfc3339(),
        "seconds_per_round": seconds,
        "rounds_per_point": rounds_per_point,
        "results": points,
        "checkout": checkout,
        "ratios": ratios,
    });
    if let Some(spans) = receiver.and_then(ReceiverProcess::stop) {
        println!("the OTLP receiver received {spans} spans");
    }
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).expect("create the output directory");
    }
    std::fs::write(&out, serde_json::to_string_pretty(&report).unwrap()).expect("write the JSON report");
    println!("\nwrote {}", out.display());
}
