//! `onex-host --config host.yaml`: serves the configured nodes until SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;

use onex_host::Host;
use onex_host::config::HostConfig;
use onex_runtime::environment::ProcessEnv;

const USAGE: &str = "usage: onex-host --config FILE

Serves the configured ONEX nodes behind Kafka until SIGTERM or Ctrl-C.
Logs go to stderr at the level ONEX_LOG names (error|warn|info|debug|trace; info).
FILE is YAML; see the README for its keys. The broker and databases come from
the environment (REDPANDA_BOOTSTRAP_SERVERS, POSTGRES_*, CONSUL_*, OMNINODE_ENV, ...).";

fn config_path() -> Result<PathBuf, String> {
    let mut args = std::env::args().skip(1);
    let mut path = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" | "-c" => path = Some(args.next().ok_or("--config needs a file")?),
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    path.map(PathBuf::from).ok_or_else(|| "--config FILE is required".to_owned())
}

/// Log lines (warnings about dead letters, retries, consume errors, …) to stderr at the level
/// `ONEX_LOG` names: `error`, `warn`, `info` (the default), `debug` or `trace`.
fn init_logging() -> Result<(), String> {
    let level = match std::env::var("ONEX_LOG").as_deref().map(str::trim) {
        Err(_) | Ok("") | Ok("info") => tracing::Level::INFO,
        Ok("error") => tracing::Level::ERROR,
        Ok("warn") => tracing::Level::WARN,
        Ok("debug") => tracing::Level::DEBUG,
        Ok("trace") => tracing::Level::TRACE,
        Ok(other) => return Err(format!("ONEX_LOG='{other}' is not error, warn, info, debug or trace")),
    };
    tracing_subscriber::fmt().with_max_level(level).with_writer(std::io::stderr).with_ansi(false).init();
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    if let Err(message) = init_logging() {
        eprintln!("onex-host: {message}");
        return ExitCode::from(2);
    }
    let path = match config_path() {
        Ok(path) => path,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("onex-host: {message}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let registry = onex_generated::registry();
    let config = match HostConfig::load(&path, &ProcessEnv, &registry) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("onex-host: {e}");
            return ExitCode::from(2);
        }
    };
    let host = match Host::start(config, &registry, &ProcessEnv).await {
        Ok(host) => host,
        Err(e) => {
            eprintln!("onex-host: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    for (node, routes) in host.routes() {
        eprintln!(
            "onex-host: serving {node}: requests {:?} -> {} / {}",
            routes.requests, routes.completed, routes.failed
        );
    }
    if let Some(address) = host.http_address() {
        eprintln!("onex-host: metrics and health on http://{address}");
    }
    wait_for_signal().await;
    eprintln!("onex-host: stopping");
    match host.shutdown().await {
        Ok(report) => {
            eprintln!("onex-host: stopped ({}; unanswered {})", report.counters.summary(), report.unanswered);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("onex-host: shutdown failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
