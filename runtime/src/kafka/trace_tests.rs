//! Spans of the pool's messages, on rdkafka's in-process mock cluster, read back from an
//! in-memory exporter.

use std::time::{Duration, Instant};

use opentelemetry::trace::{SpanKind, Status, TraceContextExt as _};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Headers as _, Message as _, OwnedMessage};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{Offset, TopicPartitionList};

use super::*;
use crate::models::kafka::KafkaProducerConfig;
use crate::telemetry::capture::{SpanCapture, attribute};
use crate::telemetry::{OtelContext, Tracing, in_span};

type Mock = MockCluster<'static, rdkafka::producer::DefaultProducerContext>;

fn mock_with(topic: &str) -> Mock {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic(topic, 1, 1).unwrap();
    mock
}

fn pool_on(mock: &Mock, tracing: Tracing) -> KafkaProducerPool {
    let mut config = KafkaProducerConfig::new(mock.bootstrap_servers());
    config.delivery_timeout_ms = 10_000;
    KafkaProducerPool::new(KafkaPoolSettings::default(), config).unwrap().with_tracing(tracing)
}

/// The first `count` messages of partition 0 of `topic`.
async fn consume(mock: &Mock, topic: &str, count: usize) -> Vec<OwnedMessage> {
    let bootstrap = mock.bootstrap_servers();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "trace-tests")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut partitions = TopicPartitionList::new();
        partitions.add_partition_offset(&topic, 0, Offset::Beginning).unwrap();
        consumer.assign(&partitions).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut messages = Vec::new();
        while messages.len() < count {
            assert!(Instant::now() < deadline, "only {} of {count} messages arrived", messages.len());
            if let Some(message) = consumer.poll(Duration::from_millis(100)) {
                messages.push(message.unwrap().detach());
            }
        }
        messages
    })
    .await
    .unwrap()
}

fn header(message: &OwnedMessage, key: &str) -> Vec<String> {
    message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .filter(|h| h.key == key)
                .map(|h| String::from_utf8(h.value.unwrap_or_default().to_vec()).unwrap())
                .collect()
        })
        .unwrap_or_default()
}

fn traceparent_of(span: &opentelemetry_sdk::trace::SpanData) -> String {
    crate::telemetry::carrier::trace_context_of(&span.span_context).traceparent()
}

/// A parent span `request` and the context that has it active.
fn request_span(tracing: &Tracing) -> OtelContext {
    tracing.span_in("request", SpanKind::Server, &OtelContext::new()).into_context(&OtelContext::new())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sent_message_is_one_producer_span_under_the_caller_and_its_headers_name_it() {
    let mock = mock_with("traced");
    let capture = SpanCapture::new();
    let tracing = capture.tracing("pool-test").unwrap();
    let pool = pool_on(&mock, tracing.clone());
    let cx = request_span(&tracing);
    let record = ProduceRecord::new("traced", b"{\"n\":1}").key(b"key-1");
    let delivered = in_span(cx.clone(), pool.publish(record, None)).await.unwrap();
    let request_id = cx.span().span_context().span_id();
    drop(cx);
    tracing.flush().unwrap();

    let sends = capture.named("kafka.send");
    assert_eq!(sends.len(), 1, "one span per message: {:?}", capture.spans());
    let send = &sends[0];
    assert_eq!(send.span_kind, SpanKind::Producer);
    assert_eq!(send.parent_span_id, request_id, "a child of the caller's span");
    for (key, value) in [
        ("messaging.system", "kafka".to_owned()),
        ("messaging.operation.type", "send".to_owned()),
        ("messaging.operation.name", "send".to_owned()),
        ("messaging.destination.name", "traced".to_owned()),
        ("messaging.kafka.message.key", "key-1".to_owned()),
        ("messaging.message.body.size", "7".to_owned()),
        ("messaging.destination.partition.id", delivered.partition.to_string()),
        ("messaging.kafka.offset", delivered.offset.to_string()),
    ] {
        assert_eq!(attribute(send, key), Some(value), "{key}");
    }
    assert_eq!(send.status, Status::Unset);

    let message = &consume(&mock, "traced", 1).await[0];
    assert_eq!(header(message, "traceparent"), vec![traceparent_of(send)], "the header names the producer span");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_traceparent_in_the_headers_is_kept() {
    let mock = mock_with("own");
    let capture = SpanCapture::new();
    let tracing = capture.tracing("pool-test").unwrap();
    let pool = pool_on(&mock, tracing.clone());
    let own = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let headers = crate::kafka::headers([("traceparent", own), ("app", "x")]);
    pool.publish(ProduceRecord::new("own", b"v"), Some(headers)).await.unwrap();
    tracing.flush().unwrap();
    assert_eq!(capture.named("kafka.send").len(), 1, "the message still has its span");
    let message = &consume(&mock, "own", 1).await[0];
    assert_eq!(header(message, "traceparent"), vec![own.to_owned()]);
    assert_eq!(header(message, "app"), vec!["x".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_is_recorded_as_an_error_on_its_span() {
    let mock = mock_with("refused");
    let capture = SpanCapture::new();
    let tracing = capture.tracing("pool-test").unwrap();
    let pool = pool_on(&mock, tracing.clone());
    mock.request_errors(RDKafkaApiKey::Produce, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE]);
    let err = pool.publish(ProduceRecord::new("refused", b"v"), None).await.unwrap_err();
    tracing.flush().unwrap();
    let send = &capture.named("kafka.send")[0];
    assert!(matches!(&send.status, Status::Error { description } if !description.is_empty()), "{:?}", send.status);
    assert_eq!(attribute(send, "error.type"), Some(err.code().as_str().to_owned()));
    assert_eq!(attribute(send, "messaging.kafka.offset"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tracing_a_message_gets_no_trace_headers() {
    let mock = mock_with("plain");
    let pool = pool_on(&mock, Tracing::disabled());
    pool.publish(ProduceRecord::new("plain", b"v"), None).await.unwrap();
    pool.enqueue(ProduceRecord::new("plain", b"w"), None).await.unwrap();
    let messages = consume(&mock, "plain", 2).await;
    assert!(messages.iter().all(|m| m.headers().is_none()), "headers appeared without tracing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_one_producer_span_that_every_message_names() {
    let mock = mock_with("batched");
    let capture = SpanCapture::new();
    let tracing = capture.tracing("pool-test").unwrap();
    let pool = pool_on(&mock, tracing.clone());
    let cx = request_span(&tracing);
    let work = async {
        let batch = pool.batch(3).unwrap();
        for i in 0..3u8 {
            batch.send(usize::from(i), ProduceRecord::new("batched", &[i]), None).await.unwrap();
        }
        assert!(batch.wait(Duration::from_secs(10)).await);
    };
    in_span(cx.clone(), work).await;
    let request_id = cx.span().span_context().span_id();
    drop(cx);
    tracing.flush().unwrap();
    assert!(capture.named("kafka.send").is_empty(), "no span per message in a batch");
    let batches = capture.named("kafka.send_batch");
    assert_eq!(batches.len(), 1);
    let batch = &batches[0];
    assert_eq!((batch.span_kind.clone(), batch.parent_span_id), (SpanKind::Producer, request_id));
    assert_eq!(attribute(batch, "messaging.batch.message_count"), Some("3".to_owned()));
    let messages = consume(&mock, "batched", 3).await;
    for message in &messages {
        assert_eq!(header(message, "traceparent"), vec![traceparent_of(batch)]);
    }
}
