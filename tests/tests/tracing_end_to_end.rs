//! One request traced end to end, exported over OTLP/gRPC to a receiver on loopback: a
//! generated node publishes an event through the circuit breaker and the event bus (real
//! broker), a subscriber consumes it and calls the PostgreSQL node, which runs a statement on
//! the real server. The receiver must hold one trace in which every span hangs off the one
//! before: node → `kafka.publish` → `kafka.process` → node → `postgres.query`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use onex_runtime::environment::Environment;
use onex_runtime::event::OnexEvent;
use onex_runtime::event_bus::{ContextEventHandler, EventPublisher, KafkaEventBus, SubscriptionOptions, TopicNamer};
use onex_runtime::kafka::{KafkaPoolSettings, KafkaProducerPool};
use onex_runtime::models::circuit_breaker::CircuitBreakerConfig;
use onex_runtime::models::kafka::KafkaProducerConfig;
use onex_runtime::postgres::PostgresConnectionManager;
use onex_runtime::telemetry::{QueueLimits, Tracing};
use onex_runtime::{Container, Context, DynNode, OnexError};
use onex_tests::kafka::{bootstrap, create_topic};
use onex_tests::otlp::{OtlpReceiver, ReceivedSpan};
use onex_tests::postgres::TestDatabase;
use serde_json::{Value, json};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);
const PUBLISHER_NODE: &str = "node_event_bus_circuit_breaker_compute";
const POSTGRES_NODE: &str = "node_postgres_connection_manager_effect";
const STATEMENT: &str = "SELECT COUNT(*) FROM orders WHERE status = 'secret-status' AND total > 1000";

fn span<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    let named: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(named.len(), 1, "one {name} span expected among {:?}", names(spans));
    named[0]
}

fn names(spans: &[ReceivedSpan]) -> Vec<&str> {
    spans.iter().map(|s| s.name.as_str()).collect()
}

fn assert_child(child: &ReceivedSpan, parent: &ReceivedSpan) {
    assert_eq!(
        child.parent_span_id.as_deref(),
        Some(parent.span_id.as_str()),
        "{} must be a child of {}",
        child.name,
        parent.name
    );
    assert_eq!(child.trace_id, parent.trace_id, "{} is in the trace of {}", child.name, parent.name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_one_trace_from_the_publishing_node_to_the_consumers_statement() {
    let receiver = OtlpReceiver::start_grpc().await;
    let tracing = Tracing::with_limits(&receiver.trace_configuration(1.0), QueueLimits::default()).unwrap();

    // The database, set up outside the traced services so that nothing else is exported.
    let db = TestDatabase::create("shop").await;
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE shop.orders (status text, total int); INSERT INTO shop.orders VALUES ('secret-status', 5000)",
        )
        .await
        .unwrap();
    let pg = Arc::new(PostgresConnectionManager::connect(db.config()).await.unwrap().with_tracing(tracing.clone()));

    // The bus, traced through its pool; its topic unique to this test.
    let pool = KafkaProducerPool::new(KafkaPoolSettings::default(), KafkaProducerConfig::new(bootstrap()))
        .unwrap()
        .with_tracing(tracing.clone());
    let namer = TopicNamer::new("dev", &format!("t{}", Uuid::new_v4().simple()), "onex").unwrap();
    let topic = namer.topic_for("order.placed").unwrap();
    create_topic(&topic, 1).await;
    let bus = Arc::new(KafkaEventBus::new(Arc::new(pool), namer));

    // Each node finds the tracing in its container.
    let mut publishing = Container::new();
    publishing.register::<dyn EventPublisher>(bus.clone());
    publishing.register(Arc::new(CircuitBreakerConfig::for_environment(Environment::Development)));
    publishing.register(Arc::new(tracing.clone()));
    let publisher = onex_generated::registry().build(PUBLISHER_NODE, None, &publishing).unwrap();
    let mut querying = Container::new();
    querying.register(pg.clone());
    querying.register(Arc::new(tracing.clone()));
    let postgres_node: Arc<dyn DynNode> =
        onex_generated::registry().build(POSTGRES_NODE, None, &querying).unwrap().into();

    // The subscriber runs the statement through the PostgreSQL node, in the context it is given.
    let answers: Arc<Mutex<Vec<Value>>> = Arc::default();
    let handler: ContextEventHandler = {
        let answers = Arc::clone(&answers);
        Arc::new(move |ctx: Context, _event: OnexEvent| {
            let node = Arc::clone(&postgres_node);
            let answers = Arc::clone(&answers);
            Box::pin(async move {
                let out =
                    node.process_json(json!({"operation_type": "execute_query", "query": STATEMENT}), ctx).await?;
                answers.lock().unwrap().push(out);
                Ok::<(), OnexError>(())
            })
        })
    };
    let group = format!("e2e-{}", Uuid::new_v4().simple());
    let subscription =
        bus.subscribe_with_context(&[topic.as_str()], SubscriptionOptions::new(&group), handler).unwrap();

    let correlation = Uuid::new_v4();
    let event = OnexEvent::new("order.placed", "e2e-test", correlation, json!({"order": 1}));
    let out = publisher
        .process_json(
            json!({"operation_type": "publish_event", "event": event}),
            Context::for_request(Some(correlation)).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(out["circuit_action_taken"], "published", "{out}");

    let deadline = tokio::time::Instant::now() + WAIT;
    while answers.lock().unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the subscriber never ran the statement");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    subscription.stop().await.unwrap();
    let answer = answers.lock().unwrap()[0].clone();
    assert_eq!(answer["success"], true, "{answer}");
    assert_eq!(answer["rows"], json!([{"count": 1}]), "{answer}");

    let flushing = tracing.clone();
    tokio::task::spawn_blocking(move || flushing.flush()).await.unwrap().unwrap();
    let spans = receiver
        .wait_for(|spans| spans.iter().any(|s| s.name == "postgres.query"), WAIT)
        .await
        .expect("the statement's span reaches the receiver");

    let publishing = span(&spans, &format!("{PUBLISHER_NODE}.publish_event"));
    let producer = span(&spans, "kafka.publish");
    let consumer = span(&spans, "kafka.process");
    let querying = span(&spans, &format!("{POSTGRES_NODE}.execute_query"));
    let statement = span(&spans, "postgres.query");

    assert_eq!(publishing.parent_span_id, None, "the request starts the trace");
    assert_child(producer, publishing);
    assert_child(consumer, producer);
    assert_child(querying, consumer);
    assert_child(statement, querying);
    assert!(
        spans.iter().all(|s| s.trace_id == publishing.trace_id),
        "the receiver holds one trace: {:?}",
        spans.iter().map(|s| (&s.name, &s.trace_id)).collect::<Vec<_>>()
    );
    assert!(spans.iter().all(|s| s.status_code != "error"), "nothing failed");

    assert_eq!((producer.kind, consumer.kind, statement.kind), ("producer", "consumer", "client"));
    assert_eq!(publishing.attribute_str("correlation_id"), Some(correlation.to_string().as_str()));
    for (span, key, value) in [
        (producer, "messaging.system", "kafka"),
        (producer, "messaging.operation.type", "send"),
        (producer, "messaging.destination.name", topic.as_str()),
        (consumer, "messaging.system", "kafka"),
        (consumer, "messaging.operation.type", "process"),
        (consumer, "messaging.destination.name", topic.as_str()),
        (consumer, "messaging.consumer.group.name", group.as_str()),
        (statement, "db.system.name", "postgresql"),
        (statement, "db.namespace", db.name.as_str()),
        (statement, "db.operation.name", "SELECT"),
        (statement, "db.query.text", "SELECT COUNT(*) FROM orders WHERE status = ? AND total > ?"),
    ] {
        assert_eq!(span.attribute_str(key), Some(value), "{} {key}", span.name);
    }
    assert!(producer.attributes.contains_key("messaging.kafka.offset"), "{:?}", producer.attributes);
    assert!(consumer.attributes.contains_key("messaging.kafka.offset"), "{:?}", consumer.attributes);
    assert_eq!(statement.attribute_str("correlation_id"), Some(correlation.to_string().as_str()));
    assert!(!format!("{spans:?}").contains("secret-status"), "the literal never leaves the process");
    assert_eq!(statement.resource_str("service.name"), receiver.trace_configuration(1.0).service_name.as_str().into());

    pg.close();
    let stopping = tracing.clone();
    tokio::task::spawn_blocking(move || stopping.shutdown()).await.unwrap().unwrap();
}
