//! The embedded HTTP server of a process: `/metrics`, `/health/live` and `/health/ready`.
//!
//! One call starts it ([`ObservabilityServer::start`]); it serves HTTP/1 on its own tokio task
//! until [`ObservabilityServer::shutdown`] or until it is dropped.
//!
//! - `GET /metrics`: the registry as OpenMetrics text.
//! - `GET /health/live`: 200 while the process answers; it touches no dependency.
//! - `GET /health/ready`: 200 when the process is ready, 503 when it is not, with the
//!   per-probe report as JSON either way. Every probe has its own timeout, so the answer never
//!   waits longer than the slowest probe's timeout.
//!
//! Anything else is 404; a method other than GET or HEAD on a known path is 405.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::environment::EnvSource;
use crate::error::{ErrorCode, OnexError};
use crate::health::HealthChecker;
use crate::metrics::{MetricsRegistry, OPENMETRICS_CONTENT_TYPE};

/// The variable naming the address the server listens on.
pub const ADDRESS_VARIABLE: &str = "ONEX_OBSERVABILITY_ADDR";

/// The address when [`ADDRESS_VARIABLE`] is not set: loopback, the port OpenTelemetry's
/// Prometheus exporters use.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:9464";

/// Where the server listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObservabilityServerConfig {
    /// The listening address; port 0 picks a free port.
    pub address: SocketAddr,
}

impl ObservabilityServerConfig {
    /// The address from [`ADDRESS_VARIABLE`], else [`DEFAULT_ADDRESS`]. A value that is not a
    /// socket address is a `CONFIGURATION_ERROR` naming the variable.
    pub fn from_env(env: &dyn EnvSource) -> Result<Self, OnexError> {
        let raw = env.var(ADDRESS_VARIABLE).unwrap_or_else(|| DEFAULT_ADDRESS.to_owned());
        let address = raw.trim().parse().map_err(|_| {
            OnexError::new(
                ErrorCode::ConfigurationError,
                format!("{ADDRESS_VARIABLE} must be a socket address such as {DEFAULT_ADDRESS}, got '{raw}'"),
            )
            .with_detail("variable", ADDRESS_VARIABLE)
        })?;
        Ok(Self { address })
    }
}

/// A running server; stops when shut down or dropped.
#[derive(Debug)]
pub struct ObservabilityServer {
    address: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

struct Shared {
    metrics: Arc<MetricsRegistry>,
    health: Arc<HealthChecker>,
}

impl ObservabilityServer {
    /// Binds `config.address` and serves `metrics` and `health` from a task of the current
    /// tokio runtime. Fails when the address cannot be bound.
    pub async fn start(
        config: ObservabilityServerConfig,
        metrics: Arc<MetricsRegistry>,
        health: Arc<HealthChecker>,
    ) -> Result<Self, OnexError> {
        let listener = TcpListener::bind(config.address).await.map_err(|e| {
            OnexError::new(
                ErrorCode::ConfigurationError,
                format!("the observability server cannot listen on {}: {e}", config.address),
            )
        })?;
        let address = listener.local_addr().map_err(|e| {
            OnexError::new(ErrorCode::InternalError, format!("the observability server has no local address: {e}"))
        })?;
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(Shared { metrics, health });
        let task = tokio::spawn(accept_loop(listener, shared, stopped));
        Ok(Self { address, stop, task: Some(task) })
    }

    /// The address it listens on (with the port picked when the configuration said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// Stops accepting, and waits for the accept loop to end. Connections in progress finish
    /// their current request.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ObservabilityServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stopped: watch::Receiver<bool>) {
    loop {
        let stream = tokio::select! {
            _ = stopped.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of descriptors or a connection reset before accept: keep serving.
                Err(_) => continue,
            },
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, Infallible>(route(&shared, &request).await) }
            });
            // A client that goes away mid-request is its own problem, not the server's.
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn route(shared: &Shared, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if !matches!(path, "/metrics" | "/health/live" | "/health/ready") {
        return text(StatusCode::NOT_FOUND, "not found: try /metrics, /health/live or /health/ready\n");
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD are served\n");
    }
    match path {
        "/metrics" => match shared.metrics.encode() {
            Ok(body) => respond(StatusCode::OK, OPENMETRICS_CONTENT_TYPE, body),
            Err(error) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{error}\n")),
        },
        "/health/live" => json(StatusCode::OK, &shared.health.liveness()),
        _ => {
            let report = shared.health.readiness().await;
            let status = if report.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            json(status, &report)
        }
    }
}

fn json(status: StatusCode, body: &impl serde::Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_string(body) {
        Ok(body) => respond(status, "application/json", body),
        Err(error) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("cannot write the report: {error}\n")),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    respond(status, "text/plain; charset=utf-8", body.to_owned())
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::environment::MapEnv;

    #[test]
    fn the_address_comes_from_the_environment_and_a_bad_one_names_the_variable() {
        let env = MapEnv::default();
        assert_eq!(ObservabilityServerConfig::from_env(&env).unwrap().address.to_string(), DEFAULT_ADDRESS);
        let env = MapEnv::from_pairs([(ADDRESS_VARIABLE, "127.0.0.1:0")]);
        assert_eq!(ObservabilityServerConfig::from_env(&env).unwrap().address.port(), 0);
        let env = MapEnv::from_pairs([(ADDRESS_VARIABLE, "nowhere")]);
        let err = ObservabilityServerConfig::from_env(&env).unwrap_err();
        assert_eq!(err.code(), ErrorCode::ConfigurationError);
        assert!(err.message().contains(ADDRESS_VARIABLE), "{err}");
    }

    #[tokio::test]
    async fn it_serves_metrics_liveness_and_readiness() {
        let metrics = Arc::new(MetricsRegistry::new("dev"));
        metrics.register("onex_up", "Always one.", crate::metrics::Gauge::<i64>::default()).unwrap();
        let config = ObservabilityServerConfig { address: "127.0.0.1:0".parse().unwrap() };
        let server = ObservabilityServer::start(config, metrics, Arc::new(HealthChecker::new())).await.unwrap();
        let address = server.local_addr();
        let (status, body) = get(address, "/metrics").await;
        assert_eq!(status, 200);
        assert!(body.contains("onex_up{environment=\"dev\"} 0"), "{body}");
        assert_eq!(get(address, "/health/live").await.0, 200);
        let (status, body) = get(address, "/health/ready").await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"status\":\"healthy\""), "{body}");
        assert_eq!(get(address, "/nope").await.0, 404);
        server.shutdown().await;
    }

    /// A minimal HTTP/1.0 GET: status and body.
    async fn get(address: SocketAddr, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await.unwrap();
        let status = raw.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        (status, body)
    }
}
