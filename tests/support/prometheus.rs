//! A real Prometheus server for one test, and `promtool check metrics`.
//!
//! The binaries are Debian's, unpacked by `scripts/prometheus.sh install` into
//! `.prometheus/usr/bin` (or the directory `ONEX_PROMETHEUS_BIN_DIR` names); [`bin_dir`] runs
//! that install when they are missing, so a single test binary works on its own.
//!
//! [`PrometheusServer::start`] runs a server on a loopback port of 19130–19138 with its own data
//! directory and a configuration that scrapes one target every second; dropping it kills the
//! process and removes the directory. The server is asked over its HTTP API with a minimal
//! HTTP/1.0 client (one connection per request), so the tests need no HTTP client crate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use uuid::Uuid;

use crate::kafka::repo_root;

/// The ports a test server may listen on (the last of the range, 19139, is the default of
/// `scripts/prometheus.sh start`).
const PORTS: std::ops::RangeInclusive<u16> = 19130..=19138;
/// How long a server may take to answer `/-/ready` after it was spawned.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The directory holding `prometheus` and `promtool`, installed by `scripts/prometheus.sh
/// install` on first use when missing.
pub fn bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("ONEX_PROMETHEUS_BIN_DIR").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir);
        }
        let dir = repo_root().join(".prometheus/usr/bin");
        if !dir.join("prometheus").is_file() || !dir.join("promtool").is_file() {
            let out = Command::new(repo_root().join("scripts/prometheus.sh"))
                .arg("install")
                .output()
                .expect("run scripts/prometheus.sh install");
            assert!(
                out.status.success(),
                "scripts/prometheus.sh install failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        dir
    })
    .clone()
}

/// A Prometheus server scraping one target; killed, and its data removed, when dropped.
#[derive(Debug)]
pub struct PrometheusServer {
    child: Child,
    address: SocketAddr,
    target: SocketAddr,
    dir: PathBuf,
}

/// The state of the server's one scrape target, from `/api/v1/targets`.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetState {
    /// `up`, `down` or `unknown` (not scraped yet).
    pub health: String,
    /// Why the last scrape failed; empty when it succeeded.
    pub last_error: String,
}

impl PrometheusServer {
    /// Starts a server scraping `http://{target}/metrics` every second and waits until it
    /// answers `/-/ready`. Panics (with the server's log) when no port of the range is free
    /// or the server does not come up.
    pub async fn start(target: SocketAddr) -> Self {
        let bin = bin_dir().join("prometheus");
        let dir = std::env::temp_dir().join(format!("onex-prometheus-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join("data")).expect("create the server's data directory");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: onex-test\n    metrics_path: /metrics\n    \
                 static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .expect("write prometheus.yml");
        let mut failures = Vec::new();
        for port in PORTS {
            // Taken already (another test's server, or anything else): the next one.
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
                continue;
            }
            let address: SocketAddr = ([127, 0, 0, 1], port).into();
            let log = dir.join(format!("prometheus-{port}.log"));
            let mut child = Command::new(&bin)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
                .arg(format!("--web.listen-address={address}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("create the server's log"))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
            match wait_ready(&mut child, address).await {
                Ok(()) => return Self { child, address, target, dir },
                Err(reason) => {
                    failures.push(format!("port {port}: {reason}\n{}", tail(&log, 20)));
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        panic!("no Prometheus server came up on ports {PORTS:?}:\n{}", failures.join("\n"));
    }

    /// The address of the server's HTTP API and web UI.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The state of the scrape target, once the server has discovered it.
    pub async fn target_state(&self) -> Option<TargetState> {
        let body = self.api("/api/v1/targets?state=active").await.ok()?;
        let targets = body.pointer("/data/activeTargets")?.as_array()?;
        let wanted = format!("//{}/", self.target);
        targets.iter().find(|t| t["scrapeUrl"].as_str().is_some_and(|url| url.contains(&wanted))).map(|t| TargetState {
            health: t["health"].as_str().unwrap_or_default().to_owned(),
            last_error: t["lastError"].as_str().unwrap_or_default().to_owned(),
        })
    }

    /// Waits until the target has been scraped successfully; returns how long that took.
    /// Panics after `within`, with the last state seen. Prometheus applies a new target
    /// about 5 s after it starts, so allow well over that.
    pub async fn wait_until_up(&self, within: Duration) -> Duration {
        let started = Instant::now();
        let mut last = None;
        loop {
            let state = self.target_state().await;
            if state.as_ref().is_some_and(|s| s.health == "up") {
                return started.elapsed();
            }
            if state.is_some() {
                last = state;
            }
            assert!(started.elapsed() < within, "the target {} was not up within {within:?}: {last:?}", self.target);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Evaluates the PromQL `expr` now: the value of its one sample (an instant vector of one
    /// element, or a scalar), `None` when the vector is empty. Panics when the query fails or
    /// the vector has more than one element (aggregate with `sum(...)` to get one).
    pub async fn query(&self, expr: &str) -> Option<f64> {
        let samples = self.query_vector(expr).await;
        assert!(samples.len() <= 1, "`{expr}` has {} samples, expected at most one: {samples:?}", samples.len());
        samples.into_iter().next().map(|(_, value)| value)
    }

    /// Evaluates the PromQL `expr` now: every sample as (labels, value). Panics when the query
    /// fails.
    pub async fn query_vector(&self, expr: &str) -> Vec<(serde_json::Map<String, Value>, f64)> {
        let body = self
            .api(&format!("/api/v1/query?query={}", percent_encode(expr)))
            .await
            .unwrap_or_else(|e| panic!("query `{expr}` failed: {e}"));
        let data = &body["data"];
        let value = |pair: &Value| -> f64 {
            let text = pair.get(1).and_then(Value::as_str).unwrap_or_default();
            text.parse().unwrap_or_else(|_| panic!("`{expr}` gave a value that is not a number: {pair}"))
        };
        match data["resultType"].as_str() {
            Some("vector") => data["result"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|sample| (sample["metric"].as_object().cloned().unwrap_or_default(), value(&sample["value"])))
                .collect(),
            Some("scalar") => vec![(serde_json::Map::new(), value(&data["result"]))],
            other => panic!("`{expr}` gave a {other:?} result, expected a vector or a scalar: {body}"),
        }
    }

    /// Polls `expr` until its value satisfies `accept`; returns the value and how long it
    /// took. Panics after `within`, with the last value seen.
    pub async fn wait_for(&self, expr: &str, within: Duration, accept: impl Fn(f64) -> bool) -> (f64, Duration) {
        let started = Instant::now();
        let mut last = None;
        loop {
            last = self.query(expr).await.or(last);
            if let Some(value) = last.filter(|v| accept(*v)) {
                return (value, started.elapsed());
            }
            assert!(started.elapsed() < within, "`{expr}` was not as expected within {within:?}; last value {last:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A GET of the API path `path_and_query`: the JSON body when its status is `success`.
    async fn api(&self, path_and_query: &str) -> Result<Value, String> {
        let (status, body) = crate::http::get(self.address, path_and_query).await?;
        let json: Value =
            serde_json::from_str(&body).map_err(|e| format!("HTTP {status}, body is not JSON ({e}): {body}"))?;
        if json["status"] != "success" {
            return Err(format!("HTTP {status}: {} {}", json["errorType"], json["error"]));
        }
        Ok(json)
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits until the server `child` answers `/-/ready` on `address`.
async fn wait_ready(child: &mut Child, address: SocketAddr) -> Result<(), String> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("exited with {status}"));
        }
        if let Ok((200, _)) = crate::http::get(address, "/-/ready").await {
            return Ok(());
        }
        if started.elapsed() > READY_TIMEOUT {
            return Err(format!("not ready within {READY_TIMEOUT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `text` as a URL query value: unreserved characters as they are, everything else as
/// `%XX` bytes.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// What `promtool check metrics` said about an exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct PromtoolCheck {
    /// promtool's exit code: 0 clean, 3 lint findings, 1 the text could not be parsed.
    pub exit_code: i32,
    /// One per lint finding: (metric name, problem), e.g.
    /// `("onex_x", "counter metrics should have \"_total\" suffix")`.
    pub findings: Vec<(String, String)>,
    /// Any other line promtool printed (a parse error says `error while linting: ...`).
    pub errors: Vec<String>,
}

/// Runs `promtool check metrics` on `exposition` (given on stdin).
///
/// promtool parses the classic Prometheus text format, not OpenMetrics: a counter family
/// `x` whose sample is `x_total` reads to it as an untyped `x_total` without help, so every
/// counter of an OpenMetrics exposition comes back as `x_total no help text`.
pub fn promtool_check_metrics(exposition: &str) -> PromtoolCheck {
    use std::io::Write;

    let bin = bin_dir().join("promtool");
    let mut child = Command::new(&bin)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    let mut stdin = child.stdin.take().expect("promtool's stdin");
    let text = exposition.to_owned();
    // Written from another thread: promtool may print before reading everything, and both
    // pipes have bounded buffers.
    let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let out = child.wait_with_output().expect("promtool ran");
    writer.join().expect("stdin writer").expect("write the exposition to promtool");
    let mut check =
        PromtoolCheck { exit_code: out.status.code().unwrap_or(-1), findings: Vec::new(), errors: Vec::new() };
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    for line in printed.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match line.split_once(' ') {
            Some((metric, problem)) if check.exit_code == 3 && is_metric_name(metric) => {
                check.findings.push((metric.to_owned(), problem.to_owned()));
            }
            _ => check.errors.push(line.to_owned()),
        }
    }
    check
}

fn is_metric_name(word: &str) -> bool {
    let mut chars = word.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_text_is_percent_encoded() {
        assert_eq!(percent_encode("sum(x{a=\"b c\"})"), "sum%28x%7Ba%3D%22b%20c%22%7D%29");
    }

    #[test]
    fn promtool_names_a_counter_without_total_and_refuses_broken_text() {
        let check = promtool_check_metrics("# HELP onex_x Things.\n# TYPE onex_x counter\nonex_x 1\n");
        assert_eq!(check.exit_code, 3, "{check:?}");
        assert!(check.findings.iter().any(|(m, p)| m == "onex_x" && p.contains("_total")), "{check:?}");
        let check =
            promtool_check_metrics("# HELP onex_x_total Things.\n# TYPE onex_x_total counter\nonex_x_total 1\n");
        assert_eq!(check, PromtoolCheck { exit_code: 0, findings: Vec::new(), errors: Vec::new() });
        let check = promtool_check_metrics("onex_x{\n");
        assert_eq!(check.exit_code, 1, "{check:?}");
        assert!(check.errors.iter().any(|e| e.contains("error while linting")), "{check:?}");
    }
}
