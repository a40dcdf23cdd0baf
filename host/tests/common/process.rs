//! `onex-host` child processes: each reads a YAML file written into a scratch directory that
//! the test owns, and writes its stderr to a file there, printed when the test fails.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use uuid::Uuid;

/// A directory of one test, removed with everything in it when dropped.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// A new empty directory under the system's temporary directory.
    pub fn new(test: &str) -> Self {
        let path = std::env::temp_dir().join(format!("onex-host-{test}-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        Self { path }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A unique consumer group, so no earlier run's committed offsets apply.
pub fn unique_group(test: &str) -> String {
    format!("host-{test}-{}", Uuid::new_v4().simple())
}

/// How a host is started.
#[derive(Debug, Clone)]
pub struct Launch<'a> {
    /// A name for its files and messages.
    pub name: &'a str,
    /// The configuration file's text.
    pub yaml: &'a str,
    /// The environment (the host gets nothing else from this process's environment).
    pub env: &'a BTreeMap<String, String>,
    /// `ONEX_HOST_GROUP_ID`.
    pub group: &'a str,
}

/// A running `onex-host`. Dropped while running, it is killed; dropped during a panic, its
/// stderr is printed.
#[derive(Debug)]
pub struct HostProcess {
    name: String,
    child: Child,
    stderr: PathBuf,
    exited: Option<ExitStatus>,
}

impl HostProcess {
    /// Starts the binary on `launch` with `--config` in `scratch`, without HTTP.
    pub fn start(scratch: &Scratch, launch: &Launch<'_>) -> Self {
        let config = scratch.path().join(format!("{}.yaml", launch.name));
        std::fs::write(&config, launch.yaml).expect("write the host configuration");
        let stderr = scratch.path().join(format!("{}.stderr", launch.name));
        let log = File::create(&stderr).expect("create the host's stderr file");
        let child = Command::new(env!("CARGO_BIN_EXE_onex-host"))
            .arg("--config")
            .arg(&config)
            .env_clear()
            .envs(launch.env)
            .env("ONEX_HOST_GROUP_ID", launch.group)
            .env("ONEX_HOST_HTTP", "off")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start onex-host");
        eprintln!("{}: started onex-host, pid {}", launch.name, child.id());
        Self { name: launch.name.to_owned(), child, stderr, exited: None }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The `source` of the answers it publishes.
    pub fn source(&self) -> String {
        format!("onex-host/{}", self.pid())
    }

    /// Sends `signal` (`libc::SIGTERM`, `libc::SIGKILL`, …).
    pub fn signal(&self, signal: i32) {
        let pid = libc::pid_t::try_from(self.pid()).expect("a pid fits pid_t");
        // SAFETY: kill(2) only reads its two integer arguments; the pid is our own child,
        // not yet reaped (so not reused).
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(sent, 0, "kill({pid}, {signal}) failed: {}", std::io::Error::last_os_error());
    }

    /// Waits until it exits, at most `within`; its status, or `None` if it still runs.
    pub async fn exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.exited {
                return Some(status);
            }
            if let Some(status) = self.child.try_wait().expect("wait for onex-host") {
                self.exited = Some(status);
                continue;
            }
            if started.elapsed() >= within {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Fails the test, with its stderr, if it has exited.
    fn check_running(&mut self) {
        if self.exited.is_none()
            && let Some(status) = self.child.try_wait().expect("wait for onex-host")
        {
            self.exited = Some(status);
        }
        if let Some(status) = self.exited {
            self.fail(&format!("exited ({status}) while it should serve"));
        }
    }

    /// What it wrote on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr)
            .unwrap_or_else(|e| format!("(cannot read {}: {e})", self.stderr.display()))
    }

    /// Its last stderr line (the summary, once it stopped).
    pub fn last_line(&self) -> String {
        self.stderr().lines().last().unwrap_or_default().to_owned()
    }

    /// Panics with its stderr, saying `what` went wrong.
    pub fn fail(&self, what: &str) -> ! {
        panic!("{}: {what}\n--- stderr of {} ---\n{}", self.name, self.name, self.stderr());
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        if self.exited.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- stderr of {} (pid {}) ---\n{}", self.name, self.child.id(), self.stderr());
        }
    }
}

/// Waits until `ready` holds, at most `within`, checking every 20 ms; fails at once if one of
/// `hosts` exits meanwhile. How long it took, or `None`.
pub async fn wait_serving(
    hosts: &mut [&mut HostProcess],
    within: Duration,
    mut ready: impl FnMut() -> bool,
) -> Option<Duration> {
    let started = Instant::now();
    loop {
        if ready() {
            return Some(started.elapsed());
        }
        for host in hosts.iter_mut() {
            host.check_running();
        }
        if started.elapsed() >= within {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
