//! An OTLP trace receiver on loopback: what a collector sees of the spans a test exports.
//!
//! [`OtlpReceiver`] speaks the real protocol, with the messages generated from the official
//! protobuf definitions (`opentelemetry-proto`):
//! - [`OtlpReceiver::start_grpc`]: the gRPC `TraceService/Export` method (tonic);
//! - [`OtlpReceiver::start_http`]: OTLP/HTTP with protobuf bodies, `POST /v1/traces` answered
//!   `200` with an empty `ExportTraceServiceResponse` (a small HTTP/1.1 server, keep-alive,
//!   `Content-Length` or chunked bodies; gzip bodies are refused with `415`);
//! - [`OtlpReceiver::start_blackhole`]: a collector that hangs: it accepts connections and
//!   never reads or answers.
//!
//! Invariants:
//! - Spans received are kept, flattened into [`ReceivedSpan`]s in arrival order, across
//!   [`OtlpReceiver::stop`] and [`OtlpReceiver::restart`] (until [`OtlpReceiver::clear`]).
//! - A request is counted (and its spans visible) before the exporter gets its answer, so
//!   after a successful flush the spans it sent are in [`OtlpReceiver::spans`].
//! - [`OtlpReceiver::wait_for`] wakes on every request, not on a timer.
//! - [`OtlpReceiver::stop`] closes the listener and every connection it accepted: the port
//!   refuses connections afterwards, as a collector that went down does.
//!   [`OtlpReceiver::restart`] binds the same port again, in the same mode
//!   ([`OtlpReceiver::restart_as`]: in another one).
//!
//! ```ignore
//! let receiver = OtlpReceiver::start_grpc().await;
//! let tracing = Tracing::with_limits(&receiver.trace_configuration(1.0), QueueLimits::default())?;
//! // ... record spans, tracing.flush() ...
//! let spans = receiver.wait_for(|spans| spans.len() >= 3, Duration::from_secs(10)).await?;
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use onex_runtime::models::tracing::{OtlpProtocol, TraceConfiguration};
use onex_runtime::sensitive::Sensitive;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{span, status};
use prost::Message as _;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

/// How an [`OtlpReceiver`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// OTLP/gRPC.
    Grpc,
    /// OTLP/HTTP with protobuf bodies.
    Http,
    /// Accepts connections, never reads nor answers (a hung collector).
    Blackhole,
}

/// One span as the collector received it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// 16 lowercase hex digits; `None` for a root span.
    pub parent_span_id: Option<String>,
    /// The span's name.
    pub name: String,
    /// `internal`, `server`, `client`, `producer`, `consumer` (or `unspecified`).
    pub kind: &'static str,
    /// `unset`, `ok` or `error`.
    pub status_code: &'static str,
    /// The status message (empty unless `error`).
    pub status_message: String,
    /// The span's attributes; arrays and maps become JSON arrays and objects, bytes become
    /// lowercase hex strings.
    pub attributes: BTreeMap<String, Value>,
    /// The span's events, in order.
    pub events: Vec<ReceivedEvent>,
    /// The attributes of the resource that sent it (`service.name`, ...).
    pub resource: BTreeMap<String, Value>,
    /// The instrumentation scope's name.
    pub scope: String,
    /// The W3C `tracestate` of the span.
    pub trace_state: String,
}

impl ReceivedSpan {
    /// The string attribute `key`, if it is a string.
    pub fn attribute_str(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).and_then(Value::as_str)
    }

    /// The string resource attribute `key`, if it is a string.
    pub fn resource_str(&self, key: &str) -> Option<&str> {
        self.resource.get(key).and_then(Value::as_str)
    }
}

/// One span event as the collector received it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedEvent {
    /// The event's name (`exception`, ...).
    pub name: String,
    /// Its attributes.
    pub attributes: BTreeMap<String, Value>,
}

/// What every protocol handler shares: the spans and requests received so far.
struct Shared {
    /// Whether spans are kept ([`OtlpReceiver::start_counting`] only counts them).
    keep: bool,
    spans: Mutex<Vec<ReceivedSpan>>,
    /// Spans received, kept or not.
    span_count: AtomicU64,
    /// The request headers (gRPC metadata) of every export request, in order.
    headers: Mutex<Vec<BTreeMap<String, String>>>,
    requests: AtomicU64,
    /// Bumped after each request is recorded; [`OtlpReceiver::wait_for`] waits on it.
    changed: watch::Sender<u64>,
}

impl Shared {
    fn record(&self, request: ExportTraceServiceRequest, headers: BTreeMap<String, String>) {
        if !self.keep {
            let spans: usize = request.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
            self.span_count.fetch_add(spans as u64, Ordering::SeqCst);
            let count = self.requests.fetch_add(1, Ordering::SeqCst) + 1;
            self.changed.send_replace(count);
            return;
        }
        let flattened = flatten(request);
        self.span_count.fetch_add(flattened.len() as u64, Ordering::SeqCst);
        self.spans.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).extend(flattened);
        self.headers.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(headers);
        let count = self.requests.fetch_add(1, Ordering::SeqCst) + 1;
        self.changed.send_replace(count);
    }
}

/// A running server and how to stop it.
struct Running {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// An OTLP trace collector on `127.0.0.1`, for one test.
pub struct OtlpReceiver {
    mode: Mode,
    addr: SocketAddr,
    shared: Arc<Shared>,
    running: Option<Running>,
}

impl fmt::Debug for OtlpReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpReceiver")
            .field("mode", &self.mode)
            .field("addr", &self.addr)
            .field("running", &self.running.is_some())
            .field("requests", &self.requests())
            .finish()
    }
}

impl OtlpReceiver {
    /// An OTLP/gRPC receiver on a free loopback port.
    pub async fn start_grpc() -> Self {
        Self::start(Mode::Grpc).await
    }

    /// An OTLP/HTTP (protobuf) receiver on a free loopback port.
    pub async fn start_http() -> Self {
        Self::start(Mode::Http).await
    }

    /// A hung collector on a free loopback port: connections are accepted, never answered.
    pub async fn start_blackhole() -> Self {
        Self::start(Mode::Blackhole).await
    }

    /// A receiver in `mode` that counts spans and requests without keeping them, for
    /// workloads too long to hold every span (benchmarks): [`Self::spans`] stays empty.
    pub async fn start_counting(mode: Mode) -> Self {
        Self::start_with(mode, false).await
    }

    /// A receiver in `mode` on a free loopback port.
    pub async fn start(mode: Mode) -> Self {
        Self::start_with(mode, true).await
    }

    async fn start_with(mode: Mode, keep: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port for the OTLP receiver");
        let addr = listener.local_addr().expect("the OTLP receiver's address");
        let (changed, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            keep,
            spans: Mutex::new(Vec::new()),
            span_count: AtomicU64::new(0),
            headers: Mutex::new(Vec::new()),
            requests: AtomicU64::new(0),
            changed,
        });
        let running = Some(serve(mode, listener, shared.clone()));
        Self { mode, addr, shared, running }
    }

    /// How this receiver answers.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT`, the value of `OTEL_EXPORTER_OTLP_ENDPOINT` for it.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The OTLP protocol that reaches it: gRPC for [`Mode::Grpc`] and [`Mode::Blackhole`].
    pub fn protocol(&self) -> OtlpProtocol {
        match self.mode {
            Mode::Http => OtlpProtocol::HttpProtobuf,
            Mode::Grpc | Mode::Blackhole => OtlpProtocol::Grpc,
        }
    }

    /// Tracing settings that export here with [`Self::protocol`] at `sample_rate` (see
    /// [`trace_configuration`]).
    pub fn trace_configuration(&self, sample_rate: f64) -> TraceConfiguration {
        trace_configuration(&self.endpoint(), self.protocol(), sample_rate)
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.shared.spans.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// How many spans were received, kept or not.
    pub fn span_count(&self) -> u64 {
        self.shared.span_count.load(Ordering::SeqCst)
    }

    /// How many export requests were received (answered or not yet).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// The headers (gRPC: metadata) of every export request, names in lowercase.
    pub fn request_headers(&self) -> Vec<BTreeMap<String, String>> {
        self.shared.headers.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Forgets what was received.
    pub fn clear(&self) {
        self.shared.spans.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clear();
        self.shared.headers.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clear();
    }

    /// Waits until `done` holds for the spans received so far, woken by each request, and
    /// returns them; `Err` (naming what arrived) when `timeout` passes first.
    pub async fn wait_for(
        &self,
        mut done: impl FnMut(&[ReceivedSpan]) -> bool,
        timeout: Duration,
    ) -> Result<Vec<ReceivedSpan>, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changed = self.shared.changed.subscribe();
        loop {
            // Mark the current value seen before looking, so a request that lands between the
            // look and the wait still wakes us.
            changed.borrow_and_update();
            let spans = self.spans();
            if done(&spans) {
                return Ok(spans);
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err("the OTLP receiver is gone".to_owned()),
                Err(_) => {
                    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).take(20).collect();
                    return Err(format!(
                        "not received within {timeout:?}: {} requests, {} spans (first names: {names:?})",
                        self.requests(),
                        spans.len()
                    ));
                }
            }
        }
    }

    /// Waits until at least `count` export requests arrived in total.
    pub async fn wait_for_requests(&self, count: u64, timeout: Duration) -> Result<u64, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changed = self.shared.changed.subscribe();
        loop {
            changed.borrow_and_update();
            let now = self.requests();
            if now >= count {
                return Ok(now);
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err("the OTLP receiver is gone".to_owned()),
                Err(_) => return Err(format!("{now} of {count} export requests within {timeout:?}")),
            }
        }
    }

    /// Stops serving: the listener and every accepted connection are closed, so the port
    /// refuses connections. Received spans are kept. A second call does nothing.
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.stop.send(());
            let _ = running.task.await;
        }
    }

    /// Serves again on the same port, in the same mode (a collector that came back).
    pub async fn restart(&mut self) {
        self.restart_as(self.mode).await;
    }

    /// Serves again on the same port in `mode` (a hung collector replaced by a working one).
    pub async fn restart_as(&mut self, mode: Mode) {
        self.stop().await;
        self.mode = mode;
        // The old listener is closed; the port can still be briefly held by a socket in
        // TIME_WAIT, which SO_REUSEADDR (set by tokio on Unix) lets us bind over. Another process
        // could take the port in between; retry a little before giving up.
        let mut attempt = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(e) if attempt < 50 => {
                    attempt += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot bind {} again for the OTLP receiver: {e}", self.addr),
            }
        };
        self.running = Some(serve(self.mode, listener, self.shared.clone()));
    }

    /// Whether it is serving now.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.stop.send(());
            running.task.abort();
        }
    }
}

/// Tracing settings exporting to `endpoint` over `protocol` at `sample_rate`, with the
/// resource a test can recognise: `service.name` `onex-test`, `service.version` `0.0.0-test`,
/// `deployment.environment` `test`, and no headers.
pub fn trace_configuration(endpoint: &str, protocol: OtlpProtocol, sample_rate: f64) -> TraceConfiguration {
    TraceConfiguration {
        otlp_endpoint: endpoint.to_owned(),
        otlp_protocol: protocol,
        otlp_headers: BTreeMap::new(),
        sample_rate,
        service_name: "onex-test".to_owned(),
        service_version: "0.0.0-test".to_owned(),
        environment: "test".to_owned(),
        instrument_database: true,
        instrument_kafka: true,
    }
}

/// `config` with header `name` set to `value` (a secret, as far as the runtime knows).
pub fn with_header(mut config: TraceConfiguration, name: &str, value: &str) -> TraceConfiguration {
    config.otlp_headers.insert(name.to_owned(), Sensitive::new(value.to_owned()));
    config
}

/// A loopback endpoint where nothing listens (a collector that is down): a port bound and
/// released again, so nothing else holds it just now.
pub async fn unused_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let addr = listener.local_addr().expect("its address");
    drop(listener);
    format!("http://{addr}")
}

fn serve(mode: Mode, listener: TcpListener, shared: Arc<Shared>) -> Running {
    let (stop, stopped) = oneshot::channel();
    let task = match mode {
        Mode::Grpc => tokio::spawn(serve_grpc(listener, shared, stopped)),
        Mode::Http => tokio::spawn(serve_connections(listener, stopped, move |stream| {
            let shared = shared.clone();
            async move { serve_http_connection(stream, shared).await }
        })),
        Mode::Blackhole => tokio::spawn(serve_connections(listener, stopped, |stream| async move {
            // Hold the connection open without reading: the client's request sits in the
            // socket buffers and no answer ever comes.
            let _held = stream;
            std::future::pending::<()>().await;
        })),
    };
    Running { stop, task }
}

/// Accepts connections until `stopped`, each handled by its own task; on stop, every
/// connection task is aborted, which closes its socket.
async fn serve_connections<F, Fut>(listener: TcpListener, mut stopped: oneshot::Receiver<()>, handle: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    connections.spawn(handle(stream));
                }
            }
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

async fn serve_grpc(listener: TcpListener, shared: Arc<Shared>, stopped: oneshot::Receiver<()>) {
    // Graceful shutdown sends GOAWAY on every connection and closes it once its requests are
    // answered, then drops the listener: the port refuses connections when this returns.
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let service = TraceServiceServer::new(Receiver { shared });
    let _ = tonic::transport::Server::builder()
        .serve_with_incoming_shutdown(service, incoming, async {
            let _ = stopped.await;
        })
        .await;
}

struct Receiver {
    shared: Arc<Shared>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let headers = request
            .metadata()
            .clone()
            .into_headers()
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
            .collect();
        self.shared.record(request.into_inner(), headers);
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// Serves OTLP/HTTP requests on one keep-alive connection until the client closes it.
async fn serve_http_connection(stream: TcpStream, shared: Arc<Shared>) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    loop {
        let request = match read_http_request(&mut read).await {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(problem) => {
                let _ = write_response(&mut write, "400 Bad Request", problem.as_bytes(), "text/plain").await;
                return;
            }
        };
        let (status, body): (&str, Vec<u8>) = if request.method != "POST" || request.path != "/v1/traces" {
            ("404 Not Found", format!("no {} {}", request.method, request.path).into_bytes())
        } else if request.headers.get("content-encoding").is_some_and(|e| e != "identity") {
            ("415 Unsupported Media Type", b"compressed bodies are not supported".to_vec())
        } else if request.headers.get("content-type").is_some_and(|t| !t.starts_with("application/x-protobuf")) {
            ("415 Unsupported Media Type", b"only application/x-protobuf".to_vec())
        } else {
            match ExportTraceServiceRequest::decode(request.body.as_slice()) {
                Ok(export) => {
                    shared.record(export, request.headers);
                    ("200 OK", ExportTraceServiceResponse { partial_success: None }.encode_to_vec())
                }
                Err(e) => ("400 Bad Request", format!("not an ExportTraceServiceRequest: {e}").into_bytes()),
            }
        };
        let content_type = if status.starts_with("200") { "application/x-protobuf" } else { "text/plain" };
        if write_response(&mut write, status, &body, content_type).await.is_err() {
            return;
        }
    }
}

struct HttpRequest {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// The largest body accepted: far above any batch a test exports.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// Reads one request; `Ok(None)` when the client closed the connection between requests.
async fn read_http_request<R: tokio::io::AsyncBufRead + Unpin>(read: &mut R) -> Result<Option<HttpRequest>, String> {
    let mut line = String::new();
    if read.read_line(&mut line).await.map_err(|e| e.to_string())? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return Err(format!("bad request line {line:?}"));
    };
    let (method, path) = (method.to_owned(), path.to_owned());
    let mut headers = BTreeMap::new();
    loop {
        line.clear();
        if read.read_line(&mut line).await.map_err(|e| e.to_string())? == 0 {
            return Err("connection closed inside the headers".to_owned());
        }
        let header = line.trim_end_matches(['\r', '\n']);
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            return Err(format!("bad header line {header:?}"));
        };
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let body = if headers.get("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        read_chunked(read).await?
    } else {
        let length: usize = match headers.get("content-length") {
            Some(length) => length.parse().map_err(|_| format!("bad content-length {length:?}"))?,
            None => 0,
        };
        if length > MAX_BODY {
            return Err(format!("body of {length} bytes is too large"));
        }
        let mut body = vec![0; length];
        read.read_exact(&mut body).await.map_err(|e| e.to_string())?;
        body
    };
    Ok(Some(HttpRequest { method, path, headers, body }))
}

async fn read_chunked<R: tokio::io::AsyncBufRead + Unpin>(read: &mut R) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        read.read_line(&mut line).await.map_err(|e| e.to_string())?;
        let size = line.trim_end_matches(['\r', '\n']).split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| format!("bad chunk size {size:?}"))?;
        if body.len() + size > MAX_BODY {
            return Err("chunked body too large".to_owned());
        }
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                line.clear();
                if read.read_line(&mut line).await.map_err(|e| e.to_string())? == 0
                    || line.trim_end_matches(['\r', '\n']).is_empty()
                {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        read.read_exact(&mut body[start..]).await.map_err(|e| e.to_string())?;
        let mut crlf = [0; 2];
        read.read_exact(&mut crlf).await.map_err(|e| e.to_string())?;
    }
}

async fn write_response<W: tokio::io::AsyncWrite + Unpin>(
    write: &mut W,
    status: &str,
    body: &[u8],
    content_type: &str,
) -> std::io::Result<()> {
    let head = format!("HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n", body.len());
    write.write_all(head.as_bytes()).await?;
    write.write_all(body).await?;
    write.flush().await
}

/// Every span of `request`, with its resource and scope.
fn flatten(request: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = attributes(resource_spans.resource.map(|r| r.attributes).unwrap_or_default());
        for scope_spans in resource_spans.scope_spans {
            let scope = scope_spans.scope.map(|s| s.name).unwrap_or_default();
            for span in scope_spans.spans {
                let status = span.status.unwrap_or_default();
                out.push(ReceivedSpan {
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: (!span.parent_span_id.is_empty()).then(|| hex(&span.parent_span_id)),
                    name: span.name,
                    kind: match span::SpanKind::try_from(span.kind).unwrap_or(span::SpanKind::Unspecified) {
                        span::SpanKind::Unspecified => "unspecified",
                        span::SpanKind::Internal => "internal",
                        span::SpanKind::Server => "server",
                        span::SpanKind::Client => "client",
                        span::SpanKind::Producer => "producer",
                        span::SpanKind::Consumer => "consumer",
                    },
                    status_code: match status::StatusCode::try_from(status.code).unwrap_or(status::StatusCode::Unset) {
                        status::StatusCode::Unset => "unset",
                        status::StatusCode::Ok => "ok",
                        status::StatusCode::Error => "error",
                    },
                    status_message: status.message,
                    attributes: attributes(span.attributes),
                    events: span
                        .events
                        .into_iter()
                        .map(|event| ReceivedEvent { name: event.name, attributes: attributes(event.attributes) })
                        .collect(),
                    resource: resource.clone(),
                    scope: scope.clone(),
                    trace_state: span.trace_state,
                });
            }
        }
    }
    out
}

fn attributes(pairs: Vec<KeyValue>) -> BTreeMap<String, Value> {
    pairs.into_iter().map(|pair| (pair.key, value(pair.value))).collect()
}

fn value(any: Option<AnyValue>) -> Value {
    match any.and_then(|v| v.value) {
        None | Some(any_value::Value::StringValueStrindex(_)) => Value::Null,
        Some(any_value::Value::StringValue(s)) => Value::String(s),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(b),
        Some(any_value::Value::IntValue(i)) => Value::from(i),
        Some(any_value::Value::DoubleValue(d)) => Value::from(d),
        Some(any_value::Value::ArrayValue(array)) => {
            Value::Array(array.values.into_iter().map(|v| value(Some(v))).collect())
        }
        Some(any_value::Value::KvlistValue(list)) => Value::Object(attributes(list.values).into_iter().collect()),
        Some(any_value::Value::BytesValue(bytes)) => Value::String(hex(&bytes)),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
