//! An OTLP receiver in a process of its own, for benchmarks: the collector's CPU is not charged
//! to the process being measured, as with a collector beside a real service.
//!
//! The bench binary runs itself again as the receiver: [`serve_if_child`] at the top of its
//! `main` turns the child into a counting [`OtlpReceiver`] that
//! prints its endpoint, serves until its stdin closes, and prints how many spans it received.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use crate::otlp::{Mode, OtlpReceiver};

const CHILD_VAR: &str = "ONEX_OTLP_RECEIVER_CHILD";

/// In the child (started by [`ReceiverProcess::start`]): serves until stdin closes, then exits
/// the process. In any other process: returns at once.
pub fn serve_if_child() {
    let Ok(mode) = std::env::var(CHILD_VAR) else { return };
    let mode = if mode == "http" { Mode::Http } else { Mode::Grpc };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("receiver runtime");
    runtime.block_on(async {
        let receiver = OtlpReceiver::start_counting(mode).await;
        println!("{}", receiver.endpoint());
        std::io::stdout().flush().expect("stdout");
        // Closed stdin (the parent ended or dropped us) ends the receiver.
        tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        })
        .await
        .expect("stdin watcher");
        println!("{}", receiver.span_count());
    });
    std::process::exit(0);
}

/// A receiver running in a child process.
pub struct ReceiverProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    endpoint: String,
}

impl ReceiverProcess {
    /// Starts this executable again as a counting receiver speaking `mode` (gRPC or HTTP).
    pub fn start(mode: Mode) -> std::io::Result<Self> {
        let mode = if mode == Mode::Http { "http" } else { "grpc" };
        let mut child = Command::new(std::env::current_exe()?)
            .env(CHILD_VAR, mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut endpoint = String::new();
        stdout.read_line(&mut endpoint)?;
        let endpoint = endpoint.trim().to_owned();
        if !endpoint.starts_with("http://") {
            let _ = child.kill();
            return Err(std::io::Error::other(format!("the receiver process printed '{endpoint}', not its endpoint")));
        }
        Ok(Self { child, stdin, stdout, endpoint })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Stops the receiver; returns how many spans it received.
    pub fn stop(mut self) -> Option<u64> {
        self.stdin.take();
        let mut count = String::new();
        let read = self.stdout.read_line(&mut count).ok();
        let _ = self.child.wait();
        read.and_then(|_| count.trim().parse().ok())
    }
}

impl Drop for ReceiverProcess {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
