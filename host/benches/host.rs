//! The node host end to end, request topic → host → node → answer topic, side by side with
//! the same Kafka work done by a plain rdkafka loop, in one run:
//!
//! - `plain-threaded` (and `plain-async` when named in `HOST_BENCH_ONLY`): the plain loops of
//!   `host/baseline.rs`; the best of those run in a round is "the plain loop" of that round;
//! - `host`: one in-process [`onex_host::Host`] serving `node_event_bus_circuit_breaker_compute`
//!   (`get_state`: no I/O, so what is measured is the host's own cost);
//! - `two-hosts`: two in-process hosts in one consumer group, same node (3 partitions each);
//! - `host-postgres`: one host serving `node_postgres_adapter_effect`, a select by primary key
//!   on a table of the bench's own database (the adapter also publishes one
//!   `postgres.query.completed` event per request and waits for its acknowledgement, as it
//!   does in production). Only at the first in-flight bound: it is there for the database's
//!   cost at the host's default, not for the bound.
//!
//! Each runs at every in-flight bound of `HOST_BENCH_MAX_IN_FLIGHT` (default `64,1024`: the
//! host's default, where answers wait for the producer's 5 ms linger and the bound sets the
//! rate, then one where the cores do). The plain loops get the same bound.
//!
//! Each contender, each round, gets topics of its own (a fresh `OMNINODE_CONTEXT`, deleted
//! afterwards): a request topic of 6 partitions into which `HOST_BENCH_REQUESTS` requests are
//! pre-loaded before the contender starts. Its rate is the steady one: answers from the first
//! to the last read back, over the time between them (`wall_rps`, from the contender's start
//! to the last answer, adds joining the group, about 5 s on the test broker). Then
//! `HOST_BENCH_PACED_RATE` requests a second for `HOST_BENCH_PACED_SECONDS` go to the running
//! contender, and their latency runs from handing the request to the requester's producer to
//! the answer's arrival at the reader (one process, one clock). The CPU of this process, of
//! the broker, of PostgreSQL and of the whole machine is measured over the steady window.
//!
//! Rounds interleave the contenders in a rotating order (`HOST_BENCH_ROUNDS`, default 3); each
//! reports every round and the median, and ratios are taken round by round (the contender
//! against the plain loop of the same round) before their median.
//!
//! Run: `cargo bench -p onex-host --bench host` (needs the broker of `scripts/broker.sh` and
//! PostgreSQL, see `tests/support/postgres.rs`). Knobs: `HOST_BENCH_REQUESTS` (40000),
//! `HOST_BENCH_ROUNDS` (3), `HOST_BENCH_MAX_IN_FLIGHT` (`64,1024`), `HOST_BENCH_PACED_RATE`
//! (1000), `HOST_BENCH_PACED_SECONDS` (1), `HOST_BENCH_ONLY` (comma-separated contenders),
//! `HOST_BENCH_PROGRESS` (1: print progress every 250 ms), `HOST_BENCH_OUT`
//! (`target/bench/host.json`). Figures: docs/host.md, "Performance".

// The crate root looks for its modules beside it: they live in `host/` instead, out of cargo's
// search for bench targets.
#[path = "host/baseline.rs"]
mod baseline;
#[path = "host/load.rs"]
mod load;
#[path = "host/machine.rs"]
mod machine;
#[path = "host/reader.rs"]
mod reader;
#[path = "host/report.rs"]
mod report;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use onex_host::config::{HostConfig, NodeSelection};
use onex_host::routes::Routes;
use onex_host::{Host, HostCounters};
use onex_runtime::environment::MapEnv;
use onex_runtime::event::OnexEvent;
use onex_runtime::event_bus::TopicNamer;
use onex_tests::bench::{Only, env_usize, percentile_ms};
use onex_tests::host::{create_topics, host_env, routes_in};
use onex_tests::kafka::{bootstrap, ensure_topic};
use onex_tests::postgres::TestDatabase;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use serde_json::json;

use crate::baseline::{Plan, Variant};
use crate::reader::{Check, Reader};
use crate::report::{Report, Round};

const COMPUTE: &str = "node_event_bus_circuit_breaker_compute";
const ADAPTER: &str = "node_postgres_adapter_effect";
const PARTITIONS: i32 = 6;
/// Rows of the table the adapter selects from.
const ROWS: u64 = 10_000;
const SELECT: &str = "SELECT id, label FROM items WHERE id = $1";
/// What a contender gets to answer everything it was sent.
const CEILING: Duration = Duration::from_secs(180);
/// The size of the compute node's answer envelope (measured: 519 to 521 bytes), which the
/// plain loops answer with; the report gives every contender's mean answer size.
const ANSWER_BYTES: usize = 520;

const KINDS: [&str; 6] = ["plain-threaded", "plain-async", "two-plain", "host", "two-hosts", "host-postgres"];

/// Settings of the whole run.
pub struct Settings {
    pub requests: usize,
    pub rounds: usize,
    pub bounds: Vec<usize>,
    pub paced_rate: f64,
    pub paced_count: usize,
    pub progress: bool,
    pub answer_partitions: i32,
}

/// One contender: what runs, at which in-flight bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Contender {
    pub kind: &'static str,
    pub bound: usize,
}

impl Contender {
    pub fn name(&self) -> String {
        format!("{}@{}", self.kind, self.bound)
    }

    fn is_plain(&self) -> bool {
        matches!(self.kind, "plain-threaded" | "plain-async" | "two-plain")
    }
}

fn compute_payload(_: u64) -> serde_json::Value {
    json!({"operation_type": "get_state"})
}

fn select_payload(i: u64) -> serde_json::Value {
    json!({"operation_type": "query", "query_request": {"query": SELECT, "parameters": [i % ROWS + 1]}})
}

fn answer_of(value: &[u8], node: &str) -> Result<OnexEvent, String> {
    let event: OnexEvent = serde_json::from_slice(value).map_err(|e| format!("not an ONEX event: {e}"))?;
    if event.event_type != format!("{node}.completed") {
        return Err(format!("an answer of type {}: {}", event.event_type, event.payload));
    }
    Ok(event)
}

fn check_compute(value: &[u8]) -> Result<(), String> {
    let event = answer_of(value, COMPUTE)?;
    (event.payload["state"] == "closed").then_some(()).ok_or_else(|| format!("not a closed breaker: {}", event.payload))
}

fn check_select(value: &[u8]) -> Result<(), String> {
    let event = answer_of(value, ADAPTER)?;
    let one_row = event.payload["success"] == true && event.payload["query_result"]["row_count"] == 1;
    one_row.then_some(()).ok_or_else(|| format!("not one row: {}", event.payload))
}

fn check_plain(value: &[u8]) -> Result<(), String> {
    (value.len() == ANSWER_BYTES).then_some(()).ok_or_else(|| format!("an answer of {} bytes", value.len()))
}

fn serving(node: &str, max_in_flight: usize) -> HostConfig {
    let mut config = HostConfig::serving(vec![NodeSelection { name: node.to_owned(), version: None }]);
    config.group_id = format!("host-bench-{}", uuid::Uuid::new_v4().simple());
    config.max_in_flight = max_in_flight;
    config.http = None;
    config
}

/// What runs while a contender is measured.
enum Running {
    Hosts(Vec<Host>),
    Plain(Vec<baseline::Running>),
}

impl Running {
    fn counters(&self) -> Vec<HostCounters> {
        match self {
            Self::Hosts(hosts) => hosts.iter().map(|h| h.counters().clone()).collect(),
            Self::Plain(_) => Vec::new(),
        }
    }

    /// Stops it; checks that the hosts answered `expected` requests, none failed, and returns
    /// their counters.
    async fn stop(self, expected: usize) -> Option<String> {
        match self {
            Self::Hosts(hosts) => {
                let mut summaries = Vec::new();
                let (mut completed, mut unanswered) = (0, 0);
                for host in hosts {
                    let report = host.shutdown().await.expect("the host stops");
                    let counters = &report.counters;
                    assert_eq!(counters.failed.get() + counters.dead_lettered.get(), 0, "{}", counters.summary());
                    completed += counters.completed.get();
                    unanswered += report.unanswered;
                    summaries.push(counters.summary());
                }
                assert!(completed >= expected as u64, "{completed} of {expected} answered: {summaries:?}");
                assert_eq!(unanswered, 0);
                Some(summaries.join("; "))
            }
            Self::Plain(loops) => {
                for running in loops {
                    assert_eq!(running.stop().await, 0, "plain loop answers failed");
                }
                None
            }
        }
    }
}

/// The topics of one contender's run, created for it and deleted after it: the test broker
/// keeps every message in memory.
struct Topics {
    env: BTreeMap<String, String>,
    routes: Routes,
    extra: Vec<String>,
}

impl Topics {
    async fn create(node: &str, env: BTreeMap<String, String>, answer_partitions: i32) -> Self {
        let routes = routes_in(&env, &onex_generated::registry(), node);
        // Before `create_topics`, which gives answer topics one partition unless they exist.
        ensure_topic(&routes.completed, answer_partitions).await;
        create_topics(&routes, PARTITIONS).await;
        let mut extra = Vec::new();
        if node == ADAPTER {
            let namer = TopicNamer::from_env(&MapEnv(env.clone())).expect("topic namer");
            for event in ["postgres.query.completed", "postgres.query.failed"] {
                let topic = namer.topic_for(event).expect("event topic");
                ensure_topic(&topic, 1).await;
                extra.push(topic);
            }
        }
        Self { env, routes, extra }
    }

    async fn delete(self) {
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", bootstrap()).create().expect("admin client");
        let routes = &self.routes;
        let mut names: Vec<&str> = routes.requests.iter().map(String::as_str).collect();
        names.extend([routes.completed.as_str(), routes.failed.as_str(), routes.dead_letter.as_str()]);
        names.extend(self.extra.iter().map(String::as_str));
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        if let Err(e) = admin.delete_topics(&names, &options).await {
            eprintln!("warning: the run's topics were not deleted: {e}");
        }
    }
}

/// Prints the contender's progress every 250 ms until aborted.
fn progress(started: Instant, reader: &Reader, counters: Vec<HostCounters>) -> tokio::task::JoinHandle<()> {
    let seen = Arc::clone(&reader.seen);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let hosts: Vec<(u64, u64)> = counters.iter().map(|c| (c.received.get(), c.completed.get())).collect();
            let elapsed = started.elapsed().as_secs_f64();
            eprintln!(
                "{elapsed:6.2} s: {} answers read; hosts (received, completed): {hosts:?}",
                seen.load(Ordering::Relaxed)
            );
        }
    })
}

async fn start(contender: Contender, topics: &Topics, node: &str) -> Running {
    if contender.is_plain() {
        let variant = if contender.kind == "plain-async" { Variant::Async } else { Variant::Threaded };
        let group = format!("host-bench-{}", uuid::Uuid::new_v4().simple());
        let count = if contender.kind == "two-plain" { 2 } else { 1 };
        let loops = (0..count).map(|_| {
            let plan = Plan {
                env: MapEnv(topics.env.clone()),
                group: group.clone(),
                requests: topics.routes.requests[0].clone(),
                answers: topics.routes.completed.clone(),
                max_in_flight: contender.bound,
                answer_bytes: ANSWER_BYTES,
            };
            baseline::start(variant, plan)
        });
        return Running::Plain(loops.collect());
    }
    let count = if contender.kind == "two-hosts" { 2 } else { 1 };
    let config = serving(node, contender.bound);
    let registry = onex_generated::registry();
    let env = MapEnv(topics.env.clone());
    let starts = (0..count).map(|_| Host::start(config.clone(), &registry, &env));
    Running::Hosts(futures::future::try_join_all(starts).await.expect("the hosts start"))
}

async fn run(contender: Contender, round: usize, settings: &Settings, database: Option<&TestDatabase>) -> Round {
    let postgres = contender.kind == "host-postgres";
    let node = if postgres { ADAPTER } else { COMPUTE };
    let database_env: Vec<(String, String)> =
        database.filter(|_| postgres).map(|db| db.env().0.into_iter().collect()).unwrap_or_default();
    let pairs: Vec<(&str, &str)> = database_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let topics = Topics::create(node, host_env(&pairs), settings.answer_partitions).await;
    let (payload, check): (load::Payload, Check) = match contender.kind {
        "host-postgres" => (select_payload, check_select),
        _ if contender.is_plain() => (compute_payload, check_plain),
        _ => (compute_payload, check_compute),
    };
    let reader = Reader::start(&topics.routes.completed, check);
    let requests = topics.routes.requests[0].clone();
    load::preload(&load::producer(5), &requests, settings.requests as u64, payload).await;

    let started = Instant::now();
    let running = start(contender, &topics, node).await;
    let printer = settings.progress.then(|| progress(started, &reader, running.counters()));
    let saturated = reader.until(settings.requests, CEILING).await;
    let first = saturated.arrivals.first().expect("answers").at;
    let last = saturated.arrivals.last().expect("answers").at;
    let steady = last.duration_since(first).as_secs_f64().max(1e-9);

    let paced_producer = load::producer(0);
    let (first_paced, paced_count) = (settings.requests as u64, settings.paced_count as u64);
    let sent = load::paced(&paced_producer, &requests, first_paced, paced_count, settings.paced_rate, payload).await;
    let paced = reader.until(settings.requests + settings.paced_count, CEILING).await;
    if let Some(printer) = printer {
        printer.abort();
    }
    let mut latencies: Vec<u32> = paced
        .arrivals
        .iter()
        .filter_map(|a| sent.get(&a.key).map(|at| a.at.saturating_duration_since(*at).as_micros() as u32))
        .collect();
    latencies.sort_unstable();
    let counters = running.stop(settings.requests + settings.paced_count).await;
    drop(reader);
    topics.delete().await;
    if let Some(why) = &paced.first_wrong {
        eprintln!(
            "{}: {} of {} answers checked were wrong, the first: {why}",
            contender.name(),
            paced.wrong,
            paced.checked
        );
    }
    Round {
        round,
        rps: (saturated.arrivals.len() - 1) as f64 / steady,
        wall_rps: saturated.arrivals.len() as f64 / last.duration_since(started).as_secs_f64(),
        first_answer_s: first.duration_since(started).as_secs_f64(),
        p50_ms: percentile_ms(&latencies, 0.50).unwrap_or(f64::NAN),
        p99_ms: percentile_ms(&latencies, 0.99).unwrap_or(f64::NAN),
        usage: saturated.first.usage_until(&saturated.last),
        duplicates: paced.duplicates,
        mean_answer_bytes: saturated.mean_value_bytes,
        counters,
        checked: paced.checked,
        wrong: paced.wrong,
        first_wrong: paced.first_wrong,
    }
}

async fn prepare_database() -> TestDatabase {
    let db = TestDatabase::create("bench").await;
    let client = db.client().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE bench.items (id bigint PRIMARY KEY, label text NOT NULL);
             INSERT INTO bench.items SELECT i, 'item ' || i FROM generate_series(1, {ROWS}) AS i;
             ANALYZE bench.items;"
        ))
        .await
        .expect("create the table");
    db
}

/// The contenders of this run, in the order of the first round.
fn contenders(bounds: &[usize]) -> Vec<Contender> {
    let named = std::env::var("HOST_BENCH_ONLY").is_ok_and(|v| !v.trim().is_empty());
    let only = Only::from_env("HOST_BENCH_ONLY");
    // The async loop is the weaker of the two plain loops, and two plain loops only show
    // where two hosts' limit lies (see docs/host.md, "Performance"): they run when named.
    let wanted = |kind: &str| if named { only.wants(kind) } else { !matches!(kind, "plain-async" | "two-plain") };
    let mut all = Vec::new();
    for (i, &bound) in bounds.iter().enumerate() {
        for kind in KINDS.into_iter().filter(|k| wanted(k)) {
            if kind != "host-postgres" || i == 0 {
                all.push(Contender { kind, bound });
            }
        }
    }
    all
}

fn main() {
    let paced_rate = env_usize("HOST_BENCH_PACED_RATE", 1000).max(1);
    let default_bound = HostConfig::serving(Vec::new()).max_in_flight;
    let bounds: Vec<usize> = std::env::var("HOST_BENCH_MAX_IN_FLIGHT")
        .unwrap_or_else(|_| format!("{default_bound},1024"))
        .split(',')
        .filter_map(|b| b.trim().parse().ok())
        .filter(|b| *b > 0)
        .collect();
    assert!(!bounds.is_empty(), "HOST_BENCH_MAX_IN_FLIGHT is a comma-separated list of positive numbers");
    let settings = Settings {
        requests: env_usize("HOST_BENCH_REQUESTS", 40_000).max(2),
        rounds: env_usize("HOST_BENCH_ROUNDS", 3).max(1),
        paced_rate: paced_rate as f64,
        paced_count: (paced_rate * env_usize("HOST_BENCH_PACED_SECONDS", 1)).max(1),
        progress: env_usize("HOST_BENCH_PROGRESS", 0) == 1,
        answer_partitions: i32::try_from(env_usize("HOST_BENCH_ANSWER_PARTITIONS", 1).clamp(1, 64)).unwrap_or(1),
        bounds,
    };
    let contenders = contenders(&settings.bounds);
    assert!(!contenders.is_empty(), "HOST_BENCH_ONLY names none of {KINDS:?}");
    let description = format!(
        "requests={} partitions={PARTITIONS} answer_partitions={} rounds={} max_in_flight={:?} paced={}/s × {} cores={} allocator={}",
        settings.requests,
        settings.answer_partitions,
        settings.rounds,
        settings.bounds,
        settings.paced_rate,
        settings.paced_count,
        std::thread::available_parallelism().map_or(1, usize::from),
        onex_tests::bench::allocator(),
    );
    eprintln!("{description}");
    let bench_started = Instant::now();
    // As the host binary runs: tokio's default of one worker per core.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let report = runtime.block_on(async {
        let database =
            if contenders.iter().any(|c| c.kind == "host-postgres") { Some(prepare_database().await) } else { None };
        let mut rounds: BTreeMap<Contender, Vec<Round>> = BTreeMap::new();
        for round in 0..settings.rounds {
            for k in 0..contenders.len() {
                let contender = contenders[(round + k) % contenders.len()];
                let outcome = run(contender, round, &settings, database.as_ref()).await;
                eprintln!("round {round} {:<20} {}", contender.name(), outcome.line());
                rounds.entry(contender).or_default().push(outcome);
            }
        }
        drop(database);
        Report::new(description, &contenders, rounds)
    });
    let path = std::env::var_os("HOST_BENCH_OUT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench/host.json"));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("create the output directory");
    }
    std::fs::write(&path, serde_json::to_string_pretty(&report.json()).expect("report")).expect("write the report");
    report.print();
    println!(
        "\nthe run took {:.0} s; written to {}",
        bench_started.elapsed().as_secs_f64(),
        path.canonicalize().unwrap_or(path).display()
    );
}
