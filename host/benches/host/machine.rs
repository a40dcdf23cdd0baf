//! CPU time of this process, of the broker and of PostgreSQL, and how busy the whole machine
//! was, between two snapshots: tells which of them ran out of cores when a contender stopped
//! getting faster. Linux `/proc`, clock ticks of 10 ms (fine over a window of a second or more).

use std::time::{Duration, Instant};

use onex_tests::bench::process_cpu;

/// One reading of every clock.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    at: Instant,
    process: Option<Duration>,
    broker: Option<Duration>,
    postgres: Option<Duration>,
    /// Busy and total jiffies of all cores (`/proc/stat`).
    machine: Option<(u64, u64)>,
}

/// The CPU used between two snapshots, in cores (1.0 = one core busy all the time).
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// This process: the host(s) or the plain loop, plus the bench's reader thread.
    pub process_cores: Option<f64>,
    /// The broker (`tansu`).
    pub broker_cores: Option<f64>,
    /// Every `postgres` process (the server is shared: other tests' queries count too).
    pub postgres_cores: Option<f64>,
    /// Every process on the machine, out of `cores`.
    pub machine_cores: Option<f64>,
    /// Cores of the machine.
    pub cores: usize,
}

impl Usage {
    /// As JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "process_cores": self.process_cores,
            "broker_cores": self.broker_cores,
            "postgres_cores": self.postgres_cores,
            "machine_cores": self.machine_cores,
            "cores": self.cores,
        })
    }
}

impl Snapshot {
    /// Reads every clock now.
    pub fn take() -> Self {
        Self {
            at: Instant::now(),
            process: process_cpu(),
            broker: cpu_of("tansu"),
            postgres: cpu_of("postgres"),
            machine: machine_jiffies(),
        }
    }

    /// What ran between `self` and `later`.
    pub fn usage_until(&self, later: &Snapshot) -> Usage {
        let wall = later.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let cores =
            |a: Option<Duration>, b: Option<Duration>| a.zip(b).map(|(a, b)| b.saturating_sub(a).as_secs_f64() / wall);
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        Usage {
            process_cores: cores(self.process, later.process),
            broker_cores: cores(self.broker, later.broker),
            postgres_cores: cores(self.postgres, later.postgres),
            machine_cores: self.machine.zip(later.machine).and_then(|((busy0, total0), (busy1, total1))| {
                let total = total1.checked_sub(total0).filter(|t| *t > 0)?;
                Some(busy1.saturating_sub(busy0) as f64 / total as f64 * cpus as f64)
            }),
            cores: cpus,
        }
    }
}

/// CPU time of every process whose command is `name`; `None` when none runs.
fn cpu_of(name: &str) -> Option<Duration> {
    let mut ticks = 0u64;
    let mut found = false;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name.to_str().filter(|s| s.bytes().all(|b| b.is_ascii_digit())) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some((head, tail)) = stat.rsplit_once(')') else { continue };
        if head.split_once('(').map(|(_, comm)| comm) != Some(name) {
            continue;
        }
        let fields: Vec<&str> = tail.split_whitespace().collect();
        let used =
            fields.get(11).and_then(|u| u.parse::<u64>().ok()).zip(fields.get(12).and_then(|s| s.parse::<u64>().ok()));
        if let Some((user, system)) = used {
            ticks += user + system;
            found = true;
        }
    }
    found.then(|| Duration::from_millis(ticks * 10))
}

/// Busy and total jiffies over all cores, from the first line of `/proc/stat`.
fn machine_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let values: Vec<u64> = line.split_whitespace().filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user already).
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}
