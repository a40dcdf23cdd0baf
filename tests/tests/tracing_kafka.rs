//! Trace propagation through the event bus on rdkafka's in-process mock cluster: the
//! `kafka.publish` span, the envelope and headers that carry it, and the subscriber's
//! `kafka.process` span continuing it; read back from an in-memory exporter.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use onex_runtime::event::OnexEvent;
use onex_runtime::event_bus::{ContextEventHandler, KafkaEventBus, SubscriptionOptions, TopicNamer};
use onex_runtime::kafka::{KafkaPoolSettings, KafkaProducerPool, ProduceRecord};
use onex_runtime::models::kafka::KafkaProducerConfig;
use onex_runtime::telemetry::capture::{SpanCapture, attribute};
use onex_runtime::telemetry::{OtelContext, SpanKind, in_span};
use onex_runtime::{Context, ErrorCode, OnexError, TraceContext};
use opentelemetry::trace::{SpanId, Status, TraceContextExt as _};
use opentelemetry_sdk::trace::SpanData;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Headers as _, Message as _, OwnedMessage};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{Offset, TopicPartitionList};
use uuid::Uuid;

type Mock = MockCluster<'static, DefaultProducerContext>;

const EVENT_TYPE: &str = "traced.happened";
const TOPIC: &str = "dev.omnibase.onex.evt.traced-happened.v1";

fn mock() -> Mock {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic(TOPIC, 1, 1).unwrap();
    mock
}

fn pool(mock: &Mock) -> KafkaProducerPool {
    KafkaProducerPool::new(KafkaPoolSettings::default(), KafkaProducerConfig::new(mock.bootstrap_servers())).unwrap()
}

fn event() -> OnexEvent {
    OnexEvent::new(EVENT_TYPE, "trace-test", Uuid::new_v4(), serde_json::json!({"n": 1}))
}

/// What a handler saw: the context it was given and the span current while it ran.
#[derive(Debug, Clone)]
struct Seen {
    trace: Option<TraceContext>,
    current_span: SpanId,
    correlation_id: Uuid,
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn recording(log: Log, fail: bool) -> ContextEventHandler {
    Arc::new(move |ctx: Context, _event: OnexEvent| {
        let log = Arc::clone(&log);
        Box::pin(async move {
            let current_span = OtelContext::map_current(|cx| cx.span().span_context().span_id());
            log.lock().unwrap().push(Seen {
                trace: ctx.trace().cloned(),
                current_span,
                correlation_id: ctx.correlation_id(),
            });
            if fail { Err(OnexError::new(ErrorCode::IntegrationServiceError, "handler refused")) } else { Ok(()) }
        })
    })
}

async fn wait_for(log: &Log, count: usize) -> Vec<Seen> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = log.lock().unwrap().clone();
        if seen.len() >= count {
            return seen;
        }
        assert!(Instant::now() < deadline, "the handler ran {} of {count} times", seen.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The first message of the topic, as the broker holds it.
async fn stored_message(mock: &Mock) -> OwnedMessage {
    let bootstrap = mock.bootstrap_servers();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "trace-reader")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut partitions = TopicPartitionList::new();
        partitions.add_partition_offset(TOPIC, 0, Offset::Beginning).unwrap();
        consumer.assign(&partitions).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(Instant::now() < deadline, "no message arrived");
            if let Some(message) = consumer.poll(Duration::from_millis(100)) {
                return message.unwrap().detach();
            }
        }
    })
    .await
    .unwrap()
}

fn header(message: &OwnedMessage, key: &str) -> Option<String> {
    let headers = message.headers()?;
    headers.iter().find(|h| h.key == key).map(|h| String::from_utf8(h.value.unwrap().to_vec()).unwrap())
}

fn traceparent_of(span: &SpanData) -> String {
    onex_runtime::telemetry::carrier::trace_context_of(&span.span_context).traceparent()
}

fn only(capture: &SpanCapture, name: &str) -> SpanData {
    let spans = capture.named(name);
    assert_eq!(spans.len(), 1, "one {name} span expected: {:#?}", capture.spans());
    spans.into_iter().next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_event_carries_its_producer_span_and_the_consumer_span_continues_it() {
    let mock = mock();
    let capture = SpanCapture::new();
    let tracing = capture.tracing("bus-test").unwrap();
    let pool = pool(&mock).with_tracing(tracing.clone());
    let bus = KafkaEventBus::new(Arc::new(pool), TopicNamer::default());
    assert!(bus.tracing().is_enabled(), "the bus takes the pool's tracing");

    let request = tracing.span_in("request", SpanKind::Server, &OtelContext::new()).into_context(&OtelContext::new());
    let request_id = request.span().span_context().span_id();
    let sent = event();
    let delivered = in_span(request.clone(), bus.publish_event(&sent)).await.unwrap();
    drop(request);

    let log: Log = Arc::default();
    let group = format!("g-{}", Uuid::new_v4().simple());
    let subscription = bus
        .subscribe_with_context(&[TOPIC], SubscriptionOptions::new(&group), recording(Arc::clone(&log), false))
        .unwrap();
    let seen = wait_for(&log, 1).await;
    subscription.stop().await.unwrap();
    tracing.flush().unwrap();

    assert!(capture.named("kafka.send").is_empty(), "the bus sends without a second PRODUCER span");
    let publish = only(&capture, "kafka.publish");
    assert_eq!(publish.span_kind, SpanKind::Producer);
    assert_eq!(publish.parent_span_id, request_id);
    for (key, value) in [
        ("messaging.system", "kafka".to_owned()),
        ("messaging.operation.type", "send".to_owned()),
        ("messaging.operation.name", "publish".to_owned()),
        ("messaging.destination.name", TOPIC.to_owned()),
        ("messaging.destination.partition.id", delivered.partition.to_string()),
        ("messaging.kafka.offset", delivered.offset.to_string()),
        ("messaging.kafka.message.key", sent.correlation_id.to_string()),
        ("onex.event.id", sent.event_id.to_string()),
        ("onex.publish.attempts", "1".to_owned()),
    ] {
        assert_eq!(attribute(&publish, key), Some(value), "{key}");
    }
    // Started with room for every attribute: growing the vector past 1 KiB cost about 9,000
    // instructions a span in glibc's malloc.
    let (attributes, room) = capture.attribute_room("kafka.publish")[0];
    assert_eq!(room, attributes, "the publish span's attribute vector grew while it was recorded");

    let message = stored_message(&mock).await;
    assert_eq!(header(&message, "traceparent"), Some(traceparent_of(&publish)), "the headers name the producer span");
    let stored: OnexEvent = serde_json::from_slice(message.payload().unwrap()).unwrap();
    assert_eq!(
        stored.metadata.trace_context.get("traceparent"),
        Some(&traceparent_of(&publish)),
        "so does the envelope"
    );
    assert_eq!(stored.metadata.trace_service.as_deref(), Some("bus-test"));
    assert_eq!(stored.metadata.trace_environment.as_deref(), Some("test"));
    assert_eq!(
        attribute(&publish, "messaging.message.body.size"),
        Some(message.payload().unwrap().len().to_string()),
        "the body size is that of the envelope sent"
    );

    let consume = only(&capture, "kafka.process");
    assert_eq!(consume.span_kind, SpanKind::Consumer);
    assert_eq!(consume.parent_span_id, publish.span_context.span_id(), "the consumer span is the producer's child");
    assert_eq!(consume.span_context.trace_id(), publish.span_context.trace_id());
    for (key, value) in [
        ("messaging.system", "kafka".to_owned()),
        ("messaging.operation.type", "process".to_owned()),
        ("messaging.destination.name", TOPIC.to_owned()),
        ("messaging.destination.partition.id", delivered.partition.to_string()),
        ("messaging.kafka.offset", delivered.offset.to_string()),
        ("messaging.consumer.group.name", group.clone()),
    ] {
        assert_eq!(attribute(&consume, key), Some(value), "{key}");
    }
    assert_eq!(consume.status, Status::Unset);

    let handler = &seen[0];
    let consumer_id = consume.span_context.span_id();
    assert_eq!(handler.current_span, consumer_id, "the handler runs inside the consumer span");
    assert_eq!(
        handler.trace.as_ref().map(|t| t.span_id),
        Some(consumer_id.to_bytes()),
        "and its context's trace is it"
    );
    assert_eq!(handler.correlation_id, sent.correlation_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_trace_headers_the_consumer_span_continues_the_envelope() {
    let mock = mock();
    let capture = SpanCapture::new();
    let tracing = capture.tracing("bus-test").unwrap();
    // Sent by a process that writes no headers: the only context is the envelope's.
    let upstream = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut sent = event();
    sent.metadata.trace_context.insert("traceparent".into(), upstream.into());
    let plain = pool(&mock);
    let value = serde_json::to_vec(&sent).unwrap();
    plain.publish(ProduceRecord::new(TOPIC, &value), None).await.unwrap();
    assert_eq!(header(&stored_message(&mock).await, "traceparent"), None);

    let bus = KafkaEventBus::new(Arc::new(pool(&mock)), TopicNamer::default()).with_tracing(tracing.clone());
    let log: Log = Arc::default();
    let group = format!("g-{}", Uuid::new_v4().simple());
    let subscription = bus
        .subscribe_with_context(&[TOPIC], SubscriptionOptions::new(&group), recording(Arc::clone(&log), false))
        .unwrap();
    wait_for(&log, 1).await;
    subscription.stop().await.unwrap();
    tracing.flush().unwrap();

    let consume = only(&capture, "kafka.process");
    let parent = TraceContext::parse_traceparent(upstream).unwrap();
    assert_eq!(consume.parent_span_id.to_bytes(), parent.span_id);
    assert_eq!(consume.span_context.trace_id().to_bytes(), parent.trace_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_gives_up_records_its_error_on_the_consumer_span() {
    let mock = mock();
    let capture = SpanCapture::new();
    let tracing = capture.tracing("bus-test").unwrap();
    let bus = KafkaEventBus::new(Arc::new(pool(&mock)), TopicNamer::default()).with_tracing(tracing.clone());
    bus.publish_event(&event()).await.unwrap();
    let log: Log = Arc::default();
    let mut options = SubscriptionOptions::new(format!("g-{}", Uuid::new_v4().simple()));
    options.max_handler_attempts = 2;
    options.handler_backoff.base_delay = Duration::from_millis(1);
    let subscription = bus.subscribe_with_context(&[TOPIC], options, recording(Arc::clone(&log), true)).unwrap();
    let seen = wait_for(&log, 2).await;
    // It goes to the bus's dead-letter topic, and the subscription goes on.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while subscription.counters().dead_lettered() == 0 {
        assert!(std::time::Instant::now() < deadline, "never dead-lettered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    subscription.stop().await.unwrap();
    tracing.flush().unwrap();
    let consume = only(&capture, "kafka.process");
    assert!(
        matches!(&consume.status, Status::Error { description } if description.contains("handler refused")),
        "{:?}",
        consume.status
    );
    assert_eq!(attribute(&consume, "error.type"), Some("INTEGRATION_SERVICE_ERROR".to_owned()));
    assert!(seen.iter().all(|s| s.current_span == consume.span_context.span_id()), "both attempts ran in the one span");
    let publish = only(&capture, "kafka.publish");
    assert_eq!(publish.parent_span_id, SpanId::INVALID, "published outside any request: a root span");
    assert_eq!(consume.parent_span_id, publish.span_context.span_id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tracing_nothing_is_added_and_the_handler_sees_the_envelope_trace() {
    let mock = mock();
    let bus = KafkaEventBus::new(Arc::new(pool(&mock)), TopicNamer::default());
    assert!(!bus.tracing().is_enabled());
    let plain = event();
    bus.publish_event(&plain).await.unwrap();
    let message = stored_message(&mock).await;
    assert_eq!(header(&message, "traceparent"), None, "no trace header appears");
    let stored: OnexEvent = serde_json::from_slice(message.payload().unwrap()).unwrap();
    assert!(stored.metadata.trace_context.is_empty() && stored.metadata.trace_service.is_none());

    let upstream = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut carried = event();
    carried.metadata.trace_context.insert("traceparent".into(), upstream.into());
    bus.publish_event(&carried).await.unwrap();
    let log: Log = Arc::default();
    let subscription = bus
        .subscribe_with_context(
            &[TOPIC],
            SubscriptionOptions::new(format!("g-{}", Uuid::new_v4().simple())),
            recording(Arc::clone(&log), false),
        )
        .unwrap();
    let seen = wait_for(&log, 2).await;
    subscription.stop().await.unwrap();
    assert_eq!(seen[0].trace, None);
    assert_eq!(seen[1].trace.as_ref().map(TraceContext::traceparent), Some(upstream.to_owned()));
    assert_eq!(seen[1].correlation_id, carried.correlation_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_events_is_one_publish_span_per_event() {
    let mock = mock();
    let capture = SpanCapture::new();
    let tracing = capture.tracing("bus-test").unwrap();
    let bus = KafkaEventBus::new(Arc::new(pool(&mock)), TopicNamer::default()).with_tracing(tracing.clone());
    let request = tracing.span_in("request", SpanKind::Server, &OtelContext::new()).into_context(&OtelContext::new());
    let request_id = request.span().span_context().span_id();
    let events = [event(), event()];
    let delivered = in_span(request.clone(), bus.publish_events(&events)).await.unwrap();
    drop(request);
    tracing.flush().unwrap();
    let spans = capture.named("kafka.publish");
    assert_eq!(spans.len(), 2, "{:#?}", capture.spans());
    for (event, landed) in events.iter().zip(&delivered) {
        let span = spans
            .iter()
            .find(|s| attribute(s, "onex.event.id") == Some(event.event_id.to_string()))
            .expect("a span per event");
        assert_eq!(span.parent_span_id, request_id);
        assert_eq!(attribute(span, "messaging.kafka.offset"), Some(landed.offset.to_string()));
    }
    assert_ne!(spans[0].span_context.span_id(), spans[1].span_context.span_id());
}
