//! Poison and malformed requests sent to an `onex-host` process, on one partition: what is not a
//! request goes to the dead-letter topic with its reason, an envelope whose payload does not
//! decode is answered VALIDATION_ERROR, a request that keeps failing with a retriable error is
//! dead-lettered after `max_attempts`, and in every case the partition moves on: the requests
//! behind are answered and the group's committed offset passes the poison.

mod common;

use std::collections::HashSet;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::kafka::{Record, Sender, TopicLog, committed, end_offsets};
use common::process::{HostProcess, Launch, Scratch, unique_group, wait_serving};
use onex_runtime::event::OnexEvent;
use onex_tests::host::{create_topics, host_env, request, routes_in};
use serde_json::json;
use uuid::Uuid;

const STOP_WITHIN: Duration = Duration::from_secs(20);

/// What the test sends, in partition order.
enum Sent {
    Request(OnexEvent),
    Raw { key: &'static [u8], value: Vec<u8> },
}

fn by_request<'a>(records: &'a [Record], event: &OnexEvent) -> Vec<&'a Record> {
    let id = event.event_id.to_string();
    records
        .iter()
        .filter(|r| r.answer().metadata.extra.get("request_event_id").and_then(|v| v.as_str()) == Some(&id))
        .collect()
}

/// Waits until the group committed the end of every partition of `topic`: nothing left behind.
async fn wait_committed(group: &str, topic: &str, within: Duration) -> Vec<(i32, Option<i64>)> {
    let ends = end_offsets(topic).await;
    let started = Instant::now();
    loop {
        let now = committed(group, topic).await;
        let done = ends.iter().all(|(p, end)| now.iter().any(|(q, c)| q == p && *c == Some(*end)));
        if done || started.elapsed() >= within {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_dead_lettered_and_the_requests_behind_them_are_answered() {
    let node = "node_event_bus_circuit_breaker_compute";
    let scratch = Scratch::new("poison");
    let registry = onex_generated::registry();
    let env = host_env(&[]);
    let routes = routes_in(&env, &registry, node);
    create_topics(&routes, 1).await;
    let (answers, failures, dead) =
        (TopicLog::follow(&routes.completed), TopicLog::follow(&routes.failed), TopicLog::follow(&routes.dead_letter));
    let group = unique_group("poison");
    let yaml = format!("nodes: [{node}]\nmax_in_flight: 8\nshutdown_timeout_ms: 5000\n");
    let mut host = HostProcess::start(&scratch, &Launch { name: "host", yaml: &yaml, env: &env, group: &group });

    let normal = || Sent::Request(request(json!({"operation_type": "get_state"})));
    let not_json = b"{\"event_id\": this is not JSON".to_vec();
    let mut nil = request(json!({"operation_type": "get_state"}));
    nil.correlation_id = Uuid::nil();
    let nil_bytes = serde_json::to_vec(&nil).unwrap();
    // The field is `operation_type`: the payload names another, so the input does not decode.
    let undecodable = request(json!({"operation": "get_state"}));
    let mut stream: Vec<Sent> = (0..5).map(|_| normal()).collect();
    stream.push(Sent::Raw { key: b"not-json", value: not_json.clone() });
    stream.extend((0..5).map(|_| normal()));
    stream.push(Sent::Raw { key: b"nil-correlation", value: nil_bytes.clone() });
    stream.extend((0..5).map(|_| normal()));
    stream.push(Sent::Request(undecodable.clone()));
    stream.extend((0..50).map(|_| normal()));
    let normals: Vec<&OnexEvent> = stream
        .iter()
        .filter_map(|s| match s {
            Sent::Request(e) if e.event_id != undecodable.event_id => Some(e),
            _ => None,
        })
        .collect();

    // One at a time, so each message's offset is its index.
    let sender = Sender::default();
    let topic = &routes.requests[0];
    for sent in &stream {
        match sent {
            Sent::Request(event) => sender.send(topic, 0, event).await,
            Sent::Raw { key, value } => sender.send_raw(topic, 0, Some(key), value).await,
        }
    }
    let offset_of = |value: &[u8]| {
        stream.iter().position(|s| matches!(s, Sent::Raw { value: v, .. } if v == value)).unwrap().to_string()
    };

    let ids: HashSet<Uuid> = normals.iter().map(|e| e.correlation_id).collect();
    let answered = |r: &[Record]| r.iter().filter(|r| ids.contains(&r.answer().correlation_id)).count();
    if wait_serving(&mut [&mut host], Duration::from_secs(60), || answers.with(|r| answered(r) == normals.len()))
        .await
        .is_none()
    {
        host.fail(&format!("{} of {} normal requests answered within 60 s", answers.with(answered), normals.len()));
    }
    if wait_serving(&mut [&mut host], Duration::from_secs(30), || dead.with(|r| r.len() >= 2)).await.is_none() {
        host.fail(&format!("{} dead letters within 30 s, expected 2", dead.len()));
    }
    if wait_serving(&mut [&mut host], Duration::from_secs(30), || failures.with(|r| !r.is_empty())).await.is_none() {
        host.fail("the undecodable payload was not answered within 30 s");
    }
    let commits = wait_committed(&group, topic, Duration::from_secs(30)).await;

    host.signal(libc::SIGTERM);
    let exit = host.exit(STOP_WITHIN).await;
    assert!(exit.is_some_and(|e| e.success()), "the host did not exit 0: {exit:?}\n{}", host.stderr());
    for log in [&answers, &failures, &dead] {
        assert!(log.drain(Duration::from_secs(30)).await, "a topic was not read to its end");
    }
    eprintln!("host: {}; committed {commits:?} of {} messages", host.last_line(), stream.len());

    dead.with(|records| {
        for r in records {
            eprintln!(
                "dead letter at offset {:?}: reason {:?}",
                r.header("onex-dlq-offset"),
                r.header("onex-dlq-reason")
            );
        }
        assert_eq!(records.len(), 2, "exactly the two messages that are not requests are dead-lettered");
        for (value, reason) in [(&not_json, "not an ONEX event envelope"), (&nil_bytes, "nil UUID")] {
            let letter = records.iter().find(|r| &r.value == value).expect("the original bytes are dead-lettered");
            let said = letter.header("onex-dlq-reason").expect("a reason header");
            assert!(said.contains(reason), "reason {said:?} should say {reason:?}");
            assert_eq!(letter.header("onex-dlq-node"), Some(node));
            assert_eq!(letter.header("onex-dlq-attempts"), Some("0"));
            assert_eq!(letter.header("onex-dlq-topic"), Some(topic.as_str()));
            assert_eq!(letter.header("onex-dlq-partition"), Some("0"));
            assert_eq!(letter.header("onex-dlq-offset"), Some(offset_of(value).as_str()));
        }
    });
    failures.with(|records| {
        let answer = records[0].answer();
        eprintln!("undecodable payload answered: {}", answer.payload);
        assert_eq!(records.len(), 1, "only the undecodable payload fails");
        assert_eq!(answer.correlation_id, undecodable.correlation_id);
        assert_eq!(answer.event_type, format!("{node}.failed"));
        assert_eq!(answer.payload["error_code"], "VALIDATION_ERROR", "{}", answer.payload);
        let message = answer.payload["message"].as_str().unwrap_or_default();
        assert!(message.contains("operation_type"), "the message should name the field: {message}");
    });
    answers.with(|records| {
        for event in &normals {
            assert_eq!(by_request(records, event).len(), 1, "request {} answered once", event.event_id);
        }
        assert_eq!(records.len(), normals.len(), "nothing but the normal requests is answered as completed");
    });
    let end = i64::try_from(stream.len()).unwrap();
    assert_eq!(commits, vec![(0, Some(end))], "the group's offset passes every message");
    let summary = host.last_line();
    assert!(summary.contains("invalid 2") && summary.contains("dead-lettered 2"), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_failing_retriably_is_dead_lettered_after_max_attempts_and_its_key_moves_on() {
    let node = "node_consul_effect";
    // A Consul that accepts connections and never answers: every read runs into the node's
    // contract timeout (10 s), OPERATION_TIMEOUT, which the host retries. (Consul refusing the
    // connection is no such case: the node answers that in its output, `success: false`.)
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind a silent Consul");
    let port = silent.local_addr().unwrap().port().to_string();
    let scratch = Scratch::new("retriable");
    let registry = onex_generated::registry();
    let env = host_env(&[
        ("CONSUL_HOST", "127.0.0.1"),
        ("CONSUL_PORT", &port),
        ("CONSUL_DATACENTER", "dc1"),
        // Longer than the node's timeout, so the node's timer ends the read.
        ("CONSUL_TIMEOUT_SECONDS", "60"),
    ]);
    let routes = routes_in(&env, &registry, node);
    create_topics(&routes, 1).await;
    let (answers, failures, dead) =
        (TopicLog::follow(&routes.completed), TopicLog::follow(&routes.failed), TopicLog::follow(&routes.dead_letter));
    let group = unique_group("retriable");
    let yaml = format!("nodes: [{node}]\nmax_attempts: 2\nretry_backoff_ms: 100\nshutdown_timeout_ms: 5000\n");
    let mut host = HostProcess::start(&scratch, &Launch { name: "host", yaml: &yaml, env: &env, group: &group });

    let poison = request(json!({"operation_type": "kv_get", "key": "onex/host-test"}));
    // Behind it with its key (its correlation id): waits until the poison is done with.
    let mut behind = request(json!({"operation_type": "kv_get"}));
    behind.correlation_id = poison.correlation_id;
    // Another key on the same partition: not held up by the poison.
    let other = request(json!({"operation_type": "kv_get"}));
    let sender = Sender::default();
    let topic = &routes.requests[0];
    let sent_at = Instant::now();
    for event in [&poison, &behind, &other] {
        sender.send(topic, 0, event).await;
    }

    if wait_serving(&mut [&mut host], Duration::from_secs(90), || dead.with(|r| !r.is_empty())).await.is_none() {
        host.fail("the retriably failing request was not dead-lettered within 90 s");
    }
    let dead_lettered_in = sent_at.elapsed();
    if wait_serving(&mut [&mut host], Duration::from_secs(30), || answers.with(|r| r.len() >= 2)).await.is_none() {
        host.fail(&format!("{} of the 2 requests behind the poison answered within 30 s", answers.len()));
    }
    let commits = wait_committed(&group, topic, Duration::from_secs(30)).await;
    host.signal(libc::SIGTERM);
    let exit = host.exit(STOP_WITHIN).await;
    assert!(exit.is_some_and(|e| e.success()), "the host did not exit 0: {exit:?}\n{}", host.stderr());
    for log in [&answers, &failures, &dead] {
        assert!(log.drain(Duration::from_secs(30)).await, "a topic was not read to its end");
    }
    eprintln!("dead-lettered {dead_lettered_in:?} after sending; host: {}; committed {commits:?}", host.last_line());

    let failed = failures.with(|records| {
        assert_eq!(records.len(), 1, "one failure answer");
        let answer = records[0].answer().clone();
        eprintln!("poison answered: {}", answer.payload);
        assert_eq!(answer.correlation_id, poison.correlation_id);
        assert_eq!(answer.payload["error_code"], "OPERATION_TIMEOUT", "{}", answer.payload);
        assert_eq!(answer.payload["attempts"], 2, "{}", answer.payload);
        answer
    });
    dead.with(|records| {
        assert_eq!(records.len(), 1, "one dead letter");
        let letter = &records[0];
        let value = serde_json::from_slice::<OnexEvent>(&letter.value).expect("the request as it came");
        assert_eq!(value.event_id, poison.event_id);
        let reason = letter.header("onex-dlq-reason").unwrap_or_default();
        eprintln!("dead letter reason: {reason}");
        assert!(reason.contains("OPERATION_TIMEOUT"), "{reason}");
        assert_eq!(letter.header("onex-dlq-attempts"), Some("2"));
        assert_eq!(letter.header("onex-dlq-offset"), Some("0"));
    });
    answers.with(|records| {
        let behind_answer = by_request(records, &behind);
        let other_answer = by_request(records, &other);
        assert_eq!((behind_answer.len(), other_answer.len()), (1, 1), "each request behind answered once");
        let (behind_answer, other_answer) = (behind_answer[0].answer(), other_answer[0].answer());
        // Answer timestamps come from the one host's clock: they order its answers.
        assert!(
            behind_answer.timestamp > failed.timestamp,
            "the request with the poison's key ran only after the poison was given up"
        );
        assert!(other_answer.timestamp < failed.timestamp, "another key did not wait for the poison");
        assert_eq!(behind_answer.payload["error"]["code"], "VALIDATION_ERROR", "{}", behind_answer.payload);
    });
    assert_eq!(commits, vec![(0, Some(3))], "the group's offset passes the poison and the requests behind it");
    let summary = host.last_line();
    assert!(summary.contains("retried 1") && summary.contains("dead-lettered 1"), "{summary}");
    drop(silent);
}
