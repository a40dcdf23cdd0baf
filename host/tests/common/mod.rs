//! What the process-level tests of the `onex-host` binary share: host processes started from a
//! YAML file in a scratch directory ([`process`]), requests sent to chosen partitions and the
//! topics the hosts write read back as they fill ([`kafka`]).
//!
//! Each test binary uses its own part of these helpers.
#![allow(dead_code)]

pub mod kafka;
pub mod process;

use std::time::{Duration, Instant};

/// Checks `ready` every 20 ms until it holds or `within` passed; how long it took, or `None`.
pub async fn wait_for(within: Duration, mut ready: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    loop {
        if ready() {
            return Some(started.elapsed());
        }
        if started.elapsed() >= within {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
