//! What a caller sends: one message's fields, borrowed, and its headers.
//!
//! Invariant: a record only borrows its bytes; the one copy a message costs is librdkafka's
//! own (`RD_KAFKA_MSG_F_COPY` in [`super::ffi`]), so nothing here allocates per message except
//! the headers, which librdkafka takes over.

use rdkafka::message::OwnedHeaders;

/// One message to produce. Borrowed, so producing copies the bytes once (into librdkafka).
#[derive(Debug, Clone, Copy)]
pub struct ProduceRecord<'a> {
    /// Destination topic.
    pub topic: &'a str,
    /// Partitioning key; `None` lets librdkafka spread messages over partitions.
    pub key: Option<&'a [u8]>,
    /// Message value; `None` is a tombstone (a null value, for compacted topics).
    pub payload: Option<&'a [u8]>,
    /// Explicit partition; `None` uses the partitioner.
    pub partition: Option<i32>,
}

impl<'a> ProduceRecord<'a> {
    /// A record for `topic` with `payload`, no key.
    pub fn new(topic: &'a str, payload: &'a [u8]) -> Self {
        Self { topic, key: None, payload: Some(payload), partition: None }
    }

    /// A record for `topic` with a null value (a tombstone).
    pub fn tombstone(topic: &'a str) -> Self {
        Self { topic, key: None, payload: None, partition: None }
    }

    /// Sets the key.
    pub fn key(mut self, key: &'a [u8]) -> Self {
        self.key = Some(key);
        self
    }

    /// Sets the partition.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }
}

/// Message headers from `(name, value)` pairs, in order (names may repeat).
pub fn headers<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> OwnedHeaders {
    pairs.into_iter().fold(OwnedHeaders::new(), |headers, (key, value)| {
        headers.insert(rdkafka::message::Header { key, value: Some(value.as_bytes()) })
    })
}
