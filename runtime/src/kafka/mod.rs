//! The Kafka producer pool (issue 5 replaces this placeholder with the rdkafka pool).

/// The Kafka producer pool service that `node_kafka_producer_pool_effect` resolves from the
/// container.
#[derive(Debug, Default)]
pub struct KafkaProducerPool {}
