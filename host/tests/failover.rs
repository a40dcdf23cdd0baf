//! Scale-out and failover of `onex-host` processes: two hosts share a 6-partition request topic
//! in one consumer group; mid-stream one is SIGKILLed, and the survivor must take over its
//! partitions and answer every request the dead host left unanswered or uncommitted.
//!
//! Each request goes to an explicit partition, so an answer tells which host (its `source`,
//! `onex-host/<pid>`) served which partition. Delivery is at least once: requests the killed
//! host answered but had not committed are answered again, and counted as duplicates.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::kafka::{Paced, Record, Sender, TopicLog};
use common::process::{HostProcess, Launch, Scratch, unique_group, wait_serving};
use onex_runtime::event::OnexEvent;
use onex_tests::host::{create_topics, host_env, request, routes_in};
use serde_json::json;
use uuid::Uuid;

const NODE: &str = "node_event_bus_circuit_breaker_compute";
const REQUESTS: usize = 20_000;
const PARTITIONS: i32 = 6;
/// Requests sent before the kill.
const KILL_AFTER: usize = 4_000;
/// The whole run, from creating the topics to the survivor's exit.
const CEILING: Duration = Duration::from_secs(120);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// For each partition, the source of the latest answer to a request sent there.
fn holders(records: &[Record], partition_of: &HashMap<Uuid, i32>) -> HashMap<i32, String> {
    let mut holders = HashMap::new();
    for record in records {
        let answer = record.answer();
        if let Some(&partition) = partition_of.get(&answer.correlation_id) {
            holders.insert(partition, answer.source.clone());
        }
    }
    holders
}

/// Whether both hosts are among the sources of the latest `window` answers.
fn both_answering(records: &[Record], sources: &[String; 2], window: usize) -> bool {
    let recent = &records[records.len().saturating_sub(window)..];
    sources.iter().all(|s| recent.iter().any(|r| &r.answer().source == s))
}

/// How many of the requests in `partition_of` were answered.
fn distinct_answered(records: &[Record], partition_of: &HashMap<Uuid, i32>) -> usize {
    records
        .iter()
        .map(|r| r.answer().correlation_id)
        .filter(|id| partition_of.contains_key(id))
        .collect::<HashSet<_>>()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_host_s_partitions_move_to_the_survivor_and_every_request_is_answered() {
    let started = Instant::now();
    let scratch = Scratch::new("failover");
    let registry = onex_generated::registry();
    let env = host_env(&[]);
    let routes = routes_in(&env, &registry, NODE);
    create_topics(&routes, PARTITIONS).await;
    let answers = TopicLog::follow(&routes.completed);
    let failures = TopicLog::follow(&routes.failed);

    let group = unique_group("failover");
    let yaml = format!("nodes: [{NODE}]\nmax_in_flight: 64\nshutdown_timeout_ms: {}\n", SHUTDOWN_TIMEOUT.as_millis());
    let launch = |name| Launch { name, yaml: &yaml, env: &env, group: &group };
    let mut victim = HostProcess::start(&scratch, &launch("host-a"));
    let mut survivor = HostProcess::start(&scratch, &launch("host-b"));
    let sources = [victim.source(), survivor.source()];

    // Ready: both hosts joined the group and each holds partitions.
    let sender = Sender::default();
    let mut probes = HashSet::new();
    let mut rounds = 0;
    let ready = loop {
        rounds += 1;
        let round: Vec<(i32, OnexEvent)> =
            (0..PARTITIONS).map(|p| (p, request(json!({"operation_type": "get_state"})))).collect();
        sender.send_all(&routes.requests[0], &round).await;
        let ids: HashSet<Uuid> = round.iter().map(|(_, e)| e.correlation_id).collect();
        probes.extend(ids.iter().copied());
        let answered = || answers.with(|r| r.iter().filter(|r| ids.contains(&r.answer().correlation_id)).count());
        let left = Duration::from_secs(60).saturating_sub(started.elapsed());
        if wait_serving(&mut [&mut victim, &mut survivor], left, || answered() == ids.len()).await.is_none() {
            panic!("the hosts did not answer {rounds} rounds of probes within 60 s");
        }
        let answering: HashSet<String> = answers.with(|r| {
            r.iter().filter(|r| ids.contains(&r.answer().correlation_id)).map(|r| r.answer().source.clone()).collect()
        });
        if answering.len() == 2 {
            break started.elapsed();
        }
    };
    eprintln!("both hosts answer after {rounds} rounds of probes, {ready:?} into the run");

    let requests: Vec<(i32, OnexEvent)> = (0..REQUESTS)
        .map(|i| (i32::try_from(i).unwrap() % PARTITIONS, request(json!({"operation_type": "get_state"}))))
        .collect();
    let partition_of: HashMap<Uuid, i32> = requests.iter().map(|(p, e)| (e.correlation_id, *p)).collect();
    // 1,000 a second: the stream runs on while the group notices the kill and rebalances.
    let stream = Paced::start(&routes.requests[0], requests, 50, Duration::from_millis(50));

    // Killed mid-stream, answering live requests: it holds answered but uncommitted ones.
    let steady = || stream.sent() >= KILL_AFTER && answers.with(|r| both_answering(r, &sources, 300));
    if wait_serving(&mut [&mut victim, &mut survivor], Duration::from_secs(60), steady).await.is_none() {
        panic!("the stream did not reach {KILL_AFTER} requests answered by both hosts within 60 s");
    }
    let held: HashSet<i32> = answers
        .with(|r| holders(r, &partition_of).into_iter().filter(|(_, s)| *s == sources[0]).map(|(p, _)| p).collect());
    eprintln!(
        "killing {} holding partitions {held:?} with {} requests sent and {} answered",
        sources[0],
        stream.sent(),
        answers.with(|r| distinct_answered(r, &partition_of))
    );
    assert!(!held.is_empty(), "the host to kill holds no partition");

    victim.signal(libc::SIGKILL);
    let killed_at = Instant::now();
    let status = victim.exit(Duration::from_secs(10)).await.expect("a SIGKILLed host exits");
    eprintln!("{} killed: {status}", sources[0]);

    let left = CEILING.saturating_sub(started.elapsed());
    let all = || answers.with(|r| distinct_answered(r, &partition_of)) == REQUESTS;
    if wait_serving(&mut [&mut survivor], left, all).await.is_none() {
        survivor.fail(&format!(
            "only {} of {REQUESTS} requests answered within the ceiling ({} sent, {} failure answers)",
            answers.with(|r| distinct_answered(r, &partition_of)),
            stream.sent(),
            failures.len()
        ));
    }
    let all_answered = killed_at.elapsed();
    stream.finish().await;

    survivor.signal(libc::SIGTERM);
    let stopping = Instant::now();
    let Some(exit) = survivor.exit(SHUTDOWN_TIMEOUT + Duration::from_secs(20)).await else {
        survivor.fail("did not exit within its shutdown timeout plus 20 s of SIGTERM");
    };
    let stopped_in = stopping.elapsed();
    assert!(exit.success(), "the survivor exited with {exit}:\n{}", survivor.stderr());
    assert!(answers.drain(Duration::from_secs(30)).await, "the answer topic was not read to its end");

    answers.with(|records| {
        let mut per_id: HashMap<Uuid, usize> = HashMap::new();
        let mut per_source: HashMap<&str, usize> = HashMap::new();
        let mut strangers = 0;
        for record in records {
            let answer = record.answer();
            if partition_of.contains_key(&answer.correlation_id) {
                *per_id.entry(answer.correlation_id).or_default() += 1;
                *per_source.entry(answer.source.as_str()).or_default() += 1;
            } else if !probes.contains(&answer.correlation_id) {
                strangers += 1;
            }
        }
        let lost: Vec<_> = partition_of.keys().filter(|id| !per_id.contains_key(id)).collect();
        let duplicates = per_id.values().filter(|&&n| n > 1).count();
        // The survivor's first answer, after the kill, to a request on a partition the killed host held.
        let mut taken_over: HashMap<i32, Duration> = HashMap::new();
        for record in records.iter().filter(|r| r.at > killed_at && r.answer().source == sources[1]) {
            let partition = partition_of.get(&record.answer().correlation_id);
            if let Some(&partition) = partition.filter(|p| held.contains(p)) {
                taken_over.entry(partition).or_insert(record.at - killed_at);
            }
        }
        let first = taken_over.values().min().copied();
        let last = taken_over.values().max().copied();
        eprintln!(
            "requests {REQUESTS} (and {} probes), answers {} ({per_source:?}), distinct {}, lost {}, duplicates \
             {duplicates}, failures {}",
            probes.len(),
            per_source.values().sum::<usize>(),
            per_id.len(),
            lost.len(),
            failures.len()
        );
        eprintln!(
            "failover: first answer by the survivor on a killed host's partition {first:?} after the kill, \
             all its partitions {last:?} ({taken_over:?}); every request answered {all_answered:?} after the kill; \
             survivor stopped in {stopped_in:?}; whole run {:?}",
            started.elapsed()
        );
        eprintln!("survivor: {}", survivor.last_line());
        assert!(lost.is_empty(), "{} requests were never answered, e.g. {:?}", lost.len(), lost.first());
        assert_eq!(strangers, 0, "answers to requests this test did not send");
        assert_eq!(taken_over.len(), held.len(), "the survivor did not answer on every partition the killed host held");
    });
    assert_eq!(
        failures.len(),
        0,
        "get_state failed: {:?}",
        failures.with(|r| r.first().map(|r| r.answer().payload.clone()))
    );
    assert!(started.elapsed() < CEILING, "the run took {:?}, over {CEILING:?}", started.elapsed());
}
