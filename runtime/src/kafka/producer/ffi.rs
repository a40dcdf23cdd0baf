//! The unsafe librdkafka calls of a producer, each with the reasoning that makes it sound.
//!
//! Invariants:
//! - a call is made only through a live client and live topic handle (the [`ManagedProducer`]
//!   owns both for the duration of the call);
//! - `rd_kafka_producev` (used for messages with headers; `rd_kafka_produce` for the others)
//!   gets each variadic argument with the C type its tag announces, in the order rdkafka's own
//!   `BaseProducer::send` passes them;
//! - ownership of a message's ticket and headers passes to librdkafka only when it accepts the
//!   message; a refused message's ticket is taken back exactly once and its headers returned.
//! - the headers' native pointer is read through `OwnedHeaders::as_borrowed`, which is that
//!   pointer only by rdkafka's private layout: the workspace pins rdkafka to the exact version
//!   checked.

use rdkafka::bindings as rd;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{BorrowedMessage, OwnedHeaders};
use rdkafka::producer::Producer;
use rdkafka::util::IntoOpaque;

use super::ManagedProducer;
use super::record::ProduceRecord;
use super::ticket::Ticket;
use crate::kafka::topic::Topic;

/// librdkafka's `RD_KAFKA_PARTITION_UA` (a C macro, not in the bindings): the partitioner picks.
const PARTITION_UNASSIGNED: i32 = -1;

impl ManagedProducer {
    /// Hands one message to librdkafka, which copies its key and value; on success librdkafka
    /// owns the ticket (handed back in the delivery report) and the headers. On failure both
    /// come back with the error, as rdkafka's `BaseProducer::send` does, which this replaces
    /// only to name the topic by handle (see [`crate::kafka::topic`]).
    pub(super) fn produce(
        &self,
        topic: &Topic,
        record: &ProduceRecord<'_>,
        ticket: Ticket,
        headers: Option<OwnedHeaders>,
    ) -> Result<(), (RDKafkaErrorCode, Ticket, Option<OwnedHeaders>)> {
        fn bytes(field: Option<&[u8]>) -> (*mut std::ffi::c_void, usize) {
            field.map_or((std::ptr::null_mut(), 0), |b| (b.as_ptr().cast_mut().cast(), b.len()))
        }
        let (value, value_len) = bytes(record.payload);
        let (key, key_len) = bytes(record.key);
        let opaque = ticket.into_ptr();
        let partition = record.partition.unwrap_or(PARTITION_UNASSIGNED);
        let error = match &headers {
            // Without headers, the plain call: `rd_kafka_producev` parses its variadic
            // arguments and takes and releases a reference to the topic on every message,
            // about 260 instructions that `rd_kafka_produce` does without (callgrind).
            None => {
                // SAFETY: the topic handle (and so its client) is alive for the call (`self` owns
                // both); the key and value are valid for their lengths and copied
                // (`RD_KAFKA_MSG_F_COPY`).
                let status = unsafe {
                    rd::rd_kafka_produce(
                        topic.handle.as_ptr(),
                        partition,
                        rd::RD_KAFKA_MSG_F_COPY,
                        value,
                        value_len,
                        key,
                        key_len,
                        opaque,
                    )
                };
                if status == 0 {
                    rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
                } else {
                    // SAFETY: reads this thread's last librdkafka error, which the failed call
                    // just set (nothing ran on this thread in between).
                    unsafe { rd::rd_kafka_last_error() }
                }
            }
            Some(headers) => {
                // rdkafka keeps `OwnedHeaders::ptr` to itself; `as_borrowed` is that same native
                // pointer cast to a reference (rdkafka 0.39, message.rs), so this recovers it.
                // The test `kafka_pool::a_message_keeps_its_key_value_partition_and_headers`
                // reads headers back.
                let headers_ptr = std::ptr::from_ref(headers.as_borrowed()).cast_mut().cast::<rd::rd_kafka_headers_t>();
                use rd::rd_kafka_vtype_t::*;
                // SAFETY: the client and the topic handle are alive for the call (`self` owns
                // both); the key and value are valid for their lengths and copied
                // (`RD_KAFKA_MSG_F_COPY`); each variadic argument has the C type its tag
                // announces, in the order rdkafka's own `BaseProducer::send` passes them.
                unsafe {
                    rd::rd_kafka_producev(
                        self.producer.client().native_ptr(),
                        RD_KAFKA_VTYPE_RKT,
                        topic.handle.as_ptr(),
                        RD_KAFKA_VTYPE_PARTITION,
                        partition,
                        RD_KAFKA_VTYPE_MSGFLAGS,
                        rd::RD_KAFKA_MSG_F_COPY,
                        RD_KAFKA_VTYPE_VALUE,
                        value,
                        value_len,
                        RD_KAFKA_VTYPE_KEY,
                        key,
                        key_len,
                        RD_KAFKA_VTYPE_OPAQUE,
                        opaque,
                        RD_KAFKA_VTYPE_HEADERS,
                        headers_ptr,
                        RD_KAFKA_VTYPE_END,
                    )
                }
            }
        };
        if error == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            // librdkafka now owns the headers (and frees them with the message).
            std::mem::forget(headers);
            Ok(())
        } else {
            // SAFETY: librdkafka refused the message, so the opaque is still ours, exactly once.
            let ticket = unsafe { Ticket::from_ptr(opaque) };
            Err((error.into(), ticket, headers))
        }
    }

    #[cfg(test)]
    pub(crate) fn inject_fatal_error(&self) {
        let reason = std::ffi::CString::new("injected by a test").expect("no NUL");
        // SAFETY: the producer handle is alive for the duration of the call; librdkafka copies
        // the reason.
        unsafe {
            rdkafka::bindings::rd_kafka_test_fatal_error(
                self.producer.client().native_ptr(),
                rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                reason.as_ptr(),
            );
        }
    }
}

/// Microseconds since librdkafka took `message` in (by its monotonic clock, read now), or
/// `None` when it does not know. Read in a delivery report, it is the message's delivery
/// latency without a clock read of our own: librdkafka stamped the message when it took it.
pub(super) fn latency_us(message: &BorrowedMessage<'_>) -> Option<u64> {
    // SAFETY: `message` is a live message (a delivery report's), borrowed for the call, and
    // librdkafka only reads it.
    let latency = unsafe { rd::rd_kafka_message_latency(message.ptr()) };
    u64::try_from(latency).ok()
}
