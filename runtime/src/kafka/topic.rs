//! librdkafka topic handles, kept per producer and looked up by name.
//!
//! Naming a message's topic by handle instead of by name spares every send two costs that
//! rdkafka's `BaseProducer::send` pays: a fresh C string of the name (an allocation and a scan
//! for NUL bytes), and librdkafka's lookup of the name, which takes the client's *write* lock on
//! each message, the lock librdkafka's own threads read under. Measured with callgrind
//! (`scripts/bench-kafka.sh --instructions`): about 600 instructions less per message through the
//! pool (6,475 → 5,876 on glibc's malloc).
//!
//! Invariant: every handle here was returned by `rd_kafka_topic_new` on the producer that owns
//! the cache and is destroyed exactly once, by [`TopicHandle`]'s `Drop`, which the owner runs
//! before destroying the producer (librdkafka requires topic handles to go first).

use std::collections::HashMap;
use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::{Arc, RwLock};

use rdkafka::bindings as rd;
use rustc_hash::FxBuildHasher;

use crate::error::{ErrorCode, OnexError};
use crate::kafka::metrics::{PoolMetrics, TopicRef};

/// An application reference to a librdkafka topic, released on drop.
pub(crate) struct TopicHandle(NonNull<rd::rd_kafka_topic_t>);

// SAFETY: librdkafka's topic handles are reference counted and safe to use from any thread;
// this type only hands the pointer to librdkafka calls.
unsafe impl Send for TopicHandle {}
// SAFETY: as above; no method mutates through a shared reference on the Rust side.
unsafe impl Sync for TopicHandle {}

impl TopicHandle {
    pub(crate) fn as_ptr(&self) -> *mut rd::rd_kafka_topic_t {
        self.0.as_ptr()
    }
}

impl Drop for TopicHandle {
    fn drop(&mut self) {
        // SAFETY: the handle came from `rd_kafka_topic_new` and is released once, here, while its
        // client is still alive (see the module's invariant). Messages in flight hold references
        // of their own inside librdkafka.
        unsafe { rd::rd_kafka_topic_destroy(self.0.as_ptr()) }
    }
}

/// What a send needs about its topic.
pub(crate) struct Topic {
    pub(crate) handle: TopicHandle,
    /// The pool's counters of the topic (valid while the producer's metrics are).
    pub(crate) counters: TopicRef,
}

/// One producer's topics by name.
#[derive(Default)]
pub(crate) struct TopicCache {
    /// FxHash: a send looks its topic up here, and topic names come from the deployment, so
    /// SipHash's resistance to crafted collisions would buy nothing.
    topics: RwLock<HashMap<Box<str>, Arc<Topic>, FxBuildHasher>>,
}

impl TopicCache {
    /// The topic named `name` on the client `rk`, created on first use.
    pub(crate) fn get(
        &self,
        rk: *mut rd::rd_kafka_t,
        name: &str,
        metrics: &PoolMetrics,
    ) -> Result<Arc<Topic>, OnexError> {
        if let Some(topic) = self.topics.read().unwrap_or_else(|p| p.into_inner()).get(name) {
            return Ok(Arc::clone(topic));
        }
        let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        if let Some(topic) = topics.get(name) {
            return Ok(Arc::clone(topic));
        }
        let c_name = CString::new(name).map_err(|_| {
            OnexError::validation(format!("topic name {name:?} contains a NUL byte; Kafka topic names cannot"))
        })?;
        // SAFETY: `rk` is the live client of the producer owning this cache; librdkafka copies the
        // name; a null configuration takes the client's defaults.
        let handle = NonNull::new(unsafe { rd::rd_kafka_topic_new(rk, c_name.as_ptr(), std::ptr::null_mut()) })
            .ok_or_else(|| {
                // SAFETY: reads the calling thread's last librdkafka error, set by the failed call.
                let code: rdkafka::error::RDKafkaErrorCode = unsafe { rd::rd_kafka_last_error() }.into();
                OnexError::new(ErrorCode::IntegrationServiceError, format!("librdkafka refused topic {name:?}: {code}"))
            })?;
        let topic = Arc::new(Topic { handle: TopicHandle(handle), counters: metrics.topic_ref(name) });
        topics.insert(name.into(), Arc::clone(&topic));
        Ok(topic)
    }

    /// Releases every handle (before the producer's client goes).
    pub(crate) fn clear(&self) {
        self.topics.write().unwrap_or_else(|p| p.into_inner()).clear();
    }
}
