//! Measuring helpers shared by the bench binaries (`tests/benches/`).

use std::time::Duration;

/// CPU time (user + system) this process has used, from `/proc/self/stat` (Linux; clock ticks
/// of 10 ms, fine over a window of a second or more). `None` where that file is missing.
pub fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// CPU time (user + system) the calling thread has used, from `/proc/thread-self/stat` (Linux;
/// clock ticks of 10 ms, fine over a window of a second or more). Unlike the wall clock it
/// leaves out the time the thread waited for a core, so on a busy machine it still shows what
/// the thread's own work cost (contention on shared cache lines included). `None` where that
/// file is missing.
pub fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Context switches (voluntary and involuntary) of this process's live threads, from
/// `/proc/self/task/*/status` (Linux). Threads that ended are not counted, so take both ends of
/// a window while the same threads run. `None` where those files are missing.
///
/// A switch is mostly a thread blocking on a lock or a wake-up; the Kafka bench reports them per
/// message because glibc's malloc shows up there (arena locks taken by librdkafka's threads
/// freeing what the caller's thread allocated), not in instruction counts.
pub fn context_switches() -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else { continue };
        total += status
            .lines()
            .filter(|line| {
                line.starts_with("voluntary_ctxt_switches:") || line.starts_with("nonvoluntary_ctxt_switches:")
            })
            .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    Some(total)
}

/// The C allocator this process runs on: `"jemalloc"` when a jemalloc library is mapped (the
/// bench scripts preload Debian's `libjemalloc.so.2`), else glibc's malloc: `"system-tcache"`
/// when `GLIBC_TUNABLES` sets its per-thread cache's size (glibc reads it at start-up), else
/// `"system"`. librdkafka and Rust's default allocator both call it, so it is a setting of
/// every contender alike, recorded beside each result.
pub fn allocator() -> &'static str {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    if maps.contains("libjemalloc") {
        "jemalloc"
    } else if std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc.tcache_count")) {
        "system-tcache"
    } else {
        "system"
    }
}

/// The `p` quantile (0..=1, nearest rank) of latencies sorted ascending in µs, in ms.
pub fn percentile_ms(sorted_us: &[u32], p: f64) -> Option<f64> {
    if sorted_us.is_empty() {
        return None;
    }
    let index = ((sorted_us.len() as f64 - 1.0) * p).round() as usize;
    Some(f64::from(sorted_us[index]) / 1000.0)
}

/// A contender's rate over the best baseline's, round by round. Bench rounds interleave the
/// contenders, so the two sides of one ratio ran seconds apart: drift in the machine's load over
/// the minutes of a run cancels out, where it stays in a ratio of medians taken over all rounds.
/// Empty unless every baseline has every round of the contender.
pub fn paired_ratios(contender: &[f64], baselines: &[&[f64]]) -> Vec<f64> {
    if baselines.is_empty() || baselines.iter().any(|rounds| rounds.len() != contender.len()) {
        return Vec::new();
    }
    contender
        .iter()
        .enumerate()
        .map(|(round, rate)| rate / baselines.iter().map(|rounds| rounds[round]).fold(f64::MIN, f64::max))
        .collect()
}

/// The median of `values` (the upper one of an even count); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let us: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile_ms(&us, 0.5), Some(51.0));
        assert_eq!(percentile_ms(&us, 0.99), Some(99.0));
        assert_eq!(percentile_ms(&[], 0.5), None);
    }

    #[test]
    fn median_takes_the_middle_value() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn paired_ratios_divide_each_round_by_that_round_s_best_baseline() {
        assert_eq!(paired_ratios(&[10.0, 20.0], &[&[5.0, 40.0], &[8.0, 10.0]]), vec![1.25, 0.5]);
        assert!(paired_ratios(&[10.0, 20.0], &[&[5.0]]).is_empty());
        assert!(paired_ratios(&[10.0], &[]).is_empty());
    }

    #[test]
    fn allocator_is_glibc_unless_jemalloc_is_preloaded() {
        let preloaded = std::env::var("LD_PRELOAD").is_ok_and(|p| p.contains("jemalloc"));
        let tuned = std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc.tcache_count"));
        let expected = match (preloaded, tuned) {
            (true, _) => "jemalloc",
            (false, true) => "system-tcache",
            (false, false) => "system",
        };
        assert_eq!(allocator(), expected);
    }

    #[test]
    fn a_sleep_is_a_context_switch() {
        let before = context_switches().expect("/proc/self/task");
        std::thread::sleep(Duration::from_millis(5));
        assert!(context_switches().unwrap() > before);
    }

    #[test]
    fn thread_cpu_grows_with_this_thread_s_work() {
        let before = thread_cpu().expect("/proc/thread-self/stat");
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(thread_cpu().unwrap() > before);
    }

    #[test]
    fn process_cpu_grows_with_work() {
        let before = process_cpu().expect("/proc/self/stat");
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(process_cpu().unwrap() > before);
    }
}

/// The number in the environment variable `key`, or `default` when it is unset or not a number.
pub fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

/// The names a bench's `*_ONLY` variable selects (sections or contenders, comma-separated);
/// none selected means all.
#[derive(Debug, Clone, Default)]
pub struct Only(Vec<String>);

impl Only {
    /// The selection in the environment variable `key`.
    pub fn from_env(key: &str) -> Self {
        Self(
            std::env::var(key)
                .unwrap_or_default()
                .split(',')
                .map(|name| name.trim().to_owned())
                .filter(|name| !name.is_empty())
                .collect(),
        )
    }

    /// Whether `name` is to run.
    pub fn wants(&self, name: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|o| o == name)
    }
}
