//! A TCP proxy between Kafka clients and a broker that injects the faults an unreliable
//! network or a broker restart causes, while the broker keeps everything it stored:
//!
//! - [`Fault::HoldAnswers`]: requests still reach the broker (which stores the messages) but
//!   its answers are withheld, so the client's requests time out and it retries them;
//! - [`Fault::Down`]: every connection is cut (withheld answers are lost) and new ones are
//!   refused, as when the broker stops; [`Fault::None`] brings it back.
//!
//! The broker must advertise the proxy's address, so that clients reach it through the proxy
//! after the bootstrap too: bind the proxy first, then start the broker with
//! `--advertised-listener-url tcp://<proxy address>`.
//!
//! The proxy counts what tests wait for: produce requests forwarded and answers withheld while
//! holding, connections the client closed, connections refused.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The fault the proxy injects now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Bytes pass both ways.
    None,
    /// Requests pass; answers wait until the fault changes (and are lost if it becomes `Down`).
    HoldAnswers,
    /// Connections are cut and refused.
    Down,
}

/// What the proxy saw (see the module documentation).
#[derive(Debug, Default)]
pub struct ProxyCounters {
    /// Produce requests (Kafka API key 0) forwarded to the broker while answers were held.
    pub produce_requests_held: AtomicU64,
    /// Chunks of answers withheld.
    pub answers_held: AtomicU64,
    /// Connections the client closed (librdkafka closes one whose request timed out).
    pub closed_by_client: AtomicU64,
    /// Connections refused while down.
    pub refused: AtomicU64,
}

/// A running proxy; stops accepting when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    address: SocketAddr,
    fault: watch::Sender<Fault>,
    counters: Arc<ProxyCounters>,
    accept: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on an ephemeral loopback port and forwards to `upstream` (which may start later).
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the fault proxy");
        let address = listener.local_addr().expect("proxy address");
        let (fault, _) = watch::channel(Fault::None);
        let counters = Arc::new(ProxyCounters::default());
        let (faults, shared) = (fault.clone(), Arc::clone(&counters));
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let fault = faults.subscribe();
                if *fault.borrow() == Fault::Down {
                    shared.refused.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                tokio::spawn(serve(client, upstream, fault, Arc::clone(&shared)));
            }
        });
        Self { address, fault, counters, accept }
    }

    /// The address clients (and the broker's advertised listener) use.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Injects `fault` from now on.
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    /// The counters.
    pub fn counters(&self) -> &ProxyCounters {
        &self.counters
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.fault.send_replace(Fault::Down);
        self.accept.abort();
    }
}

async fn serve(client: TcpStream, upstream: SocketAddr, fault: watch::Receiver<Fault>, counters: Arc<ProxyCounters>) {
    let Ok(server) = TcpStream::connect(upstream).await else { return };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let requests = {
        let (fault, counters) = (fault.clone(), Arc::clone(&counters));
        async move {
            let mut frames = FrameCounter::default();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match client_read.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        counters.closed_by_client.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Ok(n) => n,
                };
                let produce = frames.produce_requests(&buf[..n]);
                if produce > 0 && *fault.borrow() == Fault::HoldAnswers {
                    counters.produce_requests_held.fetch_add(produce, Ordering::Relaxed);
                }
                if server_write.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    };
    let answers = {
        let (mut fault, counters) = (fault.clone(), Arc::clone(&counters));
        async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match server_read.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if *fault.borrow() == Fault::HoldAnswers {
                    counters.answers_held.fetch_add(1, Ordering::Relaxed);
                    if fault.wait_for(|f| *f != Fault::HoldAnswers).await.is_err() {
                        return;
                    }
                }
                if *fault.borrow() == Fault::Down || client_write.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    };
    let mut down = fault;
    tokio::select! {
        () = requests => {}
        () = answers => {}
        _ = down.wait_for(|f| *f == Fault::Down) => {}
    }
}

/// Splits the client's byte stream into Kafka request frames (a 4-byte length, then the
/// request: API key first) to count the produce requests.
#[derive(Debug, Default)]
struct FrameCounter {
    /// Bytes of the frame being read that are still to come.
    remaining: usize,
    /// The start of a frame, up to its length and API key (6 bytes).
    header: Vec<u8>,
}

impl FrameCounter {
    fn produce_requests(&mut self, mut bytes: &[u8]) -> u64 {
        let mut produce = 0;
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let skip = self.remaining.min(bytes.len());
                self.remaining -= skip;
                bytes = &bytes[skip..];
                continue;
            }
            let take = (6 - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.header.len() == 6 {
                let len = u32::from_be_bytes([self.header[0], self.header[1], self.header[2], self.header[3]]) as usize;
                if i16::from_be_bytes([self.header[4], self.header[5]]) == 0 {
                    produce += 1;
                }
                self.remaining = len.saturating_sub(2);
                self.header.clear();
            }
        }
        produce
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn produce_requests_are_counted_across_chunk_boundaries() {
        let frame = |api_key: i16, body: usize| {
            let mut f = ((2 + body) as u32).to_be_bytes().to_vec();
            f.extend_from_slice(&api_key.to_be_bytes());
            f.extend(std::iter::repeat_n(7u8, body));
            f
        };
        let stream: Vec<u8> = [frame(0, 40), frame(3, 10), frame(0, 0), frame(18, 5)].concat();
        for chunk in [1, 3, 5, 7, stream.len()] {
            let mut counter = FrameCounter::default();
            let counted: u64 = stream.chunks(chunk).map(|c| counter.produce_requests(c)).sum();
            assert_eq!(counted, 2, "chunks of {chunk}");
        }
    }
}
