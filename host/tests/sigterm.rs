//! SIGTERM under load: an `onex-host` stopped mid-stream finishes, publishes and commits what it
//! has in flight and exits 0 within its shutdown timeout; a second host in the same group then
//! answers the rest. Since the first host committed exactly what it answered, every request is
//! answered once: none lost, none twice.

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
const REQUESTS: usize = 12_000;
const PARTITIONS: i32 = 3;
/// Answers after which the first host gets its SIGTERM.
const STOP_AFTER: usize = 4_000;
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
const SLACK: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_stopped_mid_stream_commits_what_it_answered_and_the_next_host_answers_the_rest_once() {
    let started = Instant::now();
    let scratch = Scratch::new("sigterm");
    let registry = onex_generated::registry();
    let env = host_env(&[]);
    let routes = routes_in(&env, &registry, NODE);
    create_topics(&routes, PARTITIONS).await;
    let answers = TopicLog::follow(&routes.completed);
    let failures = TopicLog::follow(&routes.failed);

    let group = unique_group("sigterm");
    let yaml = format!("nodes: [{NODE}]\nmax_in_flight: 32\nshutdown_timeout_ms: {}\n", SHUTDOWN_TIMEOUT.as_millis());
    let launch = |name| Launch { name, yaml: &yaml, env: &env, group: &group };
    let mut first = HostProcess::start(&scratch, &launch("host-1"));

    // Ready: the host holds the partitions once it answers a first request.
    let probe = request(json!({"operation_type": "get_state"}));
    Sender::default().send(&routes.requests[0], 0, &probe).await;
    let probed = || answers.with(|r| r.iter().any(|r| r.answer().correlation_id == probe.correlation_id));
    let Some(ready) = wait_serving(&mut [&mut first], Duration::from_secs(60), probed).await else {
        first.fail("did not answer a first request within 60 s");
    };

    let requests: Vec<(i32, OnexEvent)> = (0..REQUESTS)
        .map(|i| (i32::try_from(i).unwrap() % PARTITIONS, request(json!({"operation_type": "get_state"}))))
        .collect();
    let ids: Vec<Uuid> = requests.iter().map(|(_, e)| e.correlation_id).collect();
    // 4,000 a second for 3 s: the host is busy answering when the signal lands.
    let stream = Paced::start(&routes.requests[0], requests, 100, Duration::from_millis(25));

    let enough = || answers.len() > STOP_AFTER;
    if wait_serving(&mut [&mut first], Duration::from_secs(60), enough).await.is_none() {
        first.fail(&format!("answered only {} requests within 60 s ({} sent)", answers.len(), stream.sent()));
    }
    first.signal(libc::SIGTERM);
    let stopping = Instant::now();
    let (sent_at_stop, answered_at_stop) = (stream.sent(), answers.len());
    let Some(exit) = first.exit(SHUTDOWN_TIMEOUT + SLACK).await else {
        first.fail(&format!("still running {:?} after SIGTERM", SHUTDOWN_TIMEOUT + SLACK));
    };
    let shutdown = stopping.elapsed();
    eprintln!(
        "host-1 answered a first request {ready:?} after its start; got SIGTERM with {answered_at_stop} answers \
         read and {sent_at_stop} requests sent; exited {exit} after {shutdown:?}: {}",
        first.last_line()
    );
    assert!(exit.success(), "host-1 exited with {exit}:\n{}", first.stderr());
    assert!(stream.sent() < REQUESTS, "the stream ended before host-1 stopped: not a stop under load");

    let mut second = HostProcess::start(&scratch, &launch("host-2"));
    let wanted: HashSet<Uuid> = ids.iter().copied().collect();
    let answered_all = |r: &[Record]| {
        r.iter().map(|r| r.answer().correlation_id).filter(|id| wanted.contains(id)).collect::<HashSet<_>>().len()
            == REQUESTS
    };
    if wait_serving(&mut [&mut second], Duration::from_secs(90), || answers.with(answered_all)).await.is_none() {
        second.fail(&format!(
            "{} answers after 90 s, {} sent, {} failures",
            answers.len(),
            stream.sent(),
            failures.len()
        ));
    }
    stream.finish().await;
    // Stopped, it has published everything it will: the answer topic is complete.
    second.signal(libc::SIGTERM);
    let exit = second.exit(SHUTDOWN_TIMEOUT + SLACK).await;
    assert!(exit.is_some_and(|e| e.success()), "host-2 did not exit 0: {exit:?}\n{}", second.stderr());
    assert!(answers.drain(Duration::from_secs(30)).await, "the answer topic was not read to its end");

    let (first_source, second_source) = (first.source(), second.source());
    answers.with(|records| {
        let mut per_id: HashMap<Uuid, Vec<&str>> = HashMap::new();
        for record in records {
            let answer = record.answer();
            per_id.entry(answer.correlation_id).or_default().push(answer.source.as_str());
        }
        let by = |source: &str| records.iter().filter(|r| r.answer().source == source).count();
        let lost = ids.iter().filter(|id| !per_id.contains_key(id)).count();
        let twice: Vec<_> = per_id.iter().filter(|(_, sources)| sources.len() > 1).collect();
        eprintln!(
            "requests {REQUESTS} and a probe: answers {} (host-1 {}, host-2 {}), lost {lost}, answered twice {}; \
             shutdown took {shutdown:?} (timeout {SHUTDOWN_TIMEOUT:?}); whole run {:?}",
            records.len(),
            by(&first_source),
            by(&second_source),
            twice.len(),
            started.elapsed()
        );
        eprintln!("host-2: {}", second.last_line());
        assert_eq!(lost, 0, "requests never answered");
        assert!(twice.is_empty(), "{} requests answered twice, e.g. {:?}", twice.len(), twice.first());
        assert!(by(&first_source) > 0 && by(&second_source) > 0, "both hosts must have answered");
    });
    assert_eq!(failures.len(), 0, "get_state failed");
}
