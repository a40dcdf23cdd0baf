//! A thin client for Consul's HTTP API on hyper-util's pooled HTTP/1 client.
//!
//! - Bounded: at most `pool_size` requests in flight (a semaphore; the rest wait for a slot
//!   within their own timeout) and at most `pool_size` idle connections kept per host.
//! - Finite: every request, the wait for a slot and the connection included, ends within the
//!   request timeout; a blocking query within its wait plus Consul's jitter (a sixteenth of
//!   the wait) plus the request timeout.
//! - Every request names the configured datacenter (`dc=`). The ACL token travels only in the
//!   `X-Consul-Token` header (marked sensitive), never in a URL, an error or `Debug`.
//! - Keys and service ids are percent-encoded in paths (a key's `/` stays a separator).
//!
//! Errors: a refused connection or a timeout is `INTEGRATION_SERVICE_UNAVAILABLE`; a 5xx, a
//! body that is not the JSON Consul documents, or another unexpected status is
//! `INTEGRATION_SERVICE_ERROR` (a 403 says the token lacks permission); a 400 is a
//! `VALIDATION_ERROR` carrying Consul's reason. A missing key or unknown service is not an
//! error where Consul's answer is a value (`None`, an empty list) and `NOT_FOUND` where it is
//! not (deregistering an unknown service).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;

use super::config::ConsulConfig;
use super::types::{AgentServiceRegistration, CatalogServices, Indexed, KvPair, ServiceEntry};
use crate::environment::EnvSource;
use crate::error::{ErrorCode, OnexError};

/// The header carrying the ACL token.
pub const TOKEN_HEADER: &str = "X-Consul-Token";
/// The header carrying Consul's index of the data read.
pub const INDEX_HEADER: &str = "X-Consul-Index";
/// The longest wait Consul accepts for a blocking query; longer waits are capped to it.
pub const MAX_WAIT: Duration = Duration::from_secs(600);
/// The largest answer read (a recursive KV read of a big prefix); larger is an error, not an
/// unbounded allocation.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// How long an idle pooled connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How much of an error body an error message quotes.
const QUOTED_BODY_CHARS: usize = 200;

/// A blocking query: wait until Consul's index passes `index`, at most `wait`.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueryOptions {
    /// The `X-Consul-Index` of a previous answer; `None` reads without blocking.
    pub index: Option<u64>,
    /// The longest wait (Consul's default, 5 minutes, when `None`; capped to [`MAX_WAIT`]).
    pub wait: Option<Duration>,
}

impl QueryOptions {
    /// A blocking query on `index`, waiting at most `wait`.
    pub fn blocking(index: u64, wait: Duration) -> Self {
        Self { index: Some(index), wait: Some(wait) }
    }

    /// How long the server may hold the query: zero for a plain read.
    fn hold(&self) -> Duration {
        match self.index {
            None => Duration::ZERO,
            // Consul waits up to `wait` plus a random jitter of up to wait/16.
            Some(_) => {
                let wait = self.wait.unwrap_or(Duration::from_secs(300)).min(MAX_WAIT);
                wait + wait / 16
            }
        }
    }
}

/// The Consul client. Cheap to clone: clones share the connection pool and the slots.
#[derive(Clone)]
pub struct ConsulClient {
    inner: Arc<Inner>,
}

struct Inner {
    config: ConsulConfig,
    http: Client<HttpConnector, Full<Bytes>>,
    slots: Semaphore,
    authority: String,
    token: Option<HeaderValue>,
}

impl fmt::Debug for ConsulClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsulClient")
            .field("authority", &self.inner.authority)
            .field("datacenter", &self.inner.config.datacenter)
            .field("token", &self.inner.token.as_ref().map(|_| "***"))
            .field("pool_size", &self.inner.config.pool_size)
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

/// One answer: status, `X-Consul-Index` and body.
struct Answer {
    status: StatusCode,
    index: u64,
    body: Bytes,
}

/// What a request was waiting for when its time ran out.
#[derive(Clone, Copy)]
enum Stage {
    Slot,
    Consul,
}

impl ConsulClient {
    /// A client for `config`. Opens no connection: the first request does. A host that is not
    /// a valid URI authority, a zero pool size or a zero timeout is a `CONFIGURATION_ERROR`.
    pub fn new(config: ConsulConfig) -> Result<Self, OnexError> {
        let authority = config.authority();
        if config.host.trim().is_empty() || authority.parse::<hyper::http::uri::Authority>().is_err() {
            return Err(OnexError::configuration(format!(
                "{} must be a host name or IP address, got '{}'",
                super::config::HOST_VARIABLE,
                config.host
            ))
            .with_detail("variable", super::config::HOST_VARIABLE));
        }
        if config.pool_size == 0 {
            return Err(OnexError::configuration("the Consul pool size must be at least 1")
                .with_detail("variable", super::config::POOL_SIZE_VARIABLE));
        }
        if config.request_timeout.is_zero() || config.connect_timeout.is_zero() {
            return Err(OnexError::configuration("the Consul request and connect timeouts must be positive")
                .with_detail("variable", super::config::TIMEOUT_VARIABLE));
        }
        let token = match &config.token {
            None => None,
            Some(token) => {
                let mut value = HeaderValue::from_str(token.expose()).map_err(|_| {
                    OnexError::configuration(format!(
                        "{} holds characters an HTTP header cannot carry",
                        super::config::TOKEN_VARIABLE
                    ))
                    .with_detail("variable", super::config::TOKEN_VARIABLE)
                })?;
                // Keeps the value out of HPACK tables and hyper's debug output.
                value.set_sensitive(true);
                Some(value)
            }
        };
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_max_idle_per_host(config.pool_size)
            .build(connector);
        let slots = Semaphore::new(config.pool_size);
        Ok(Self { inner: Arc::new(Inner { config, http, slots, authority, token }) })
    }

    /// A client configured from the environment ([`ConsulConfig::from_env`]).
    pub fn from_env(env: &dyn EnvSource) -> Result<Self, OnexError> {
        Self::new(ConsulConfig::from_env(env)?)
    }

    /// The configuration.
    pub fn config(&self) -> &ConsulConfig {
        &self.inner.config
    }

    /// Requests in flight right now (at most the pool size).
    pub fn in_flight(&self) -> usize {
        self.inner.config.pool_size.saturating_sub(self.inner.slots.available_permits())
    }

    /// The entry of `key`; `None` when the key does not exist (404).
    pub async fn kv_get(&self, key: &str) -> Result<Option<KvPair>, OnexError> {
        validate_key(key, "kv_get")?;
        let path = format!("/v1/kv/{}", encode_key(key));
        let answer = self.send(Method::GET, &path, &[], None, QueryOptions::default()).await?;
        match answer.status {
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::OK => {
                // Consul answers a single-key read with a one-element array.
                let pairs: Vec<KvPair> = self.parse(&Method::GET, &path, &answer)?;
                Ok(pairs.into_iter().next())
            }
            _ => Err(self.status_error(&Method::GET, &path, &answer)),
        }
    }

    /// Every key under `prefix` (`?recurse`); an empty list when none (404).
    pub async fn kv_list(&self, prefix: &str, query: QueryOptions) -> Result<Indexed<Vec<KvPair>>, OnexError> {
        if prefix.starts_with('/') {
            return Err(leading_slash(prefix));
        }
        let path = format!("/v1/kv/{}", encode_key(prefix));
        let answer = self.send(Method::GET, &path, &[("recurse", "true")], None, query).await?;
        match answer.status {
            StatusCode::NOT_FOUND => Ok(Indexed { value: Vec::new(), index: answer.index }),
            StatusCode::OK => Ok(Indexed { value: self.parse(&Method::GET, &path, &answer)?, index: answer.index }),
            _ => Err(self.status_error(&Method::GET, &path, &answer)),
        }
    }

    /// Stores `value` under `key`; Consul's answer (`true` when written).
    pub async fn kv_put(&self, key: &str, value: &[u8]) -> Result<bool, OnexError> {
        validate_key(key, "kv_put")?;
        let path = format!("/v1/kv/{}", encode_key(key));
        let body = Some((Bytes::copy_from_slice(value), "application/octet-stream"));
        let answer = self.send(Method::PUT, &path, &[], body, QueryOptions::default()).await?;
        match answer.status {
            StatusCode::OK => self.parse(&Method::PUT, &path, &answer),
            _ => Err(self.status_error(&Method::PUT, &path, &answer)),
        }
    }

    /// Deletes one key, or every key under the prefix `key` in one request when `recurse`.
    /// Consul answers `true` whether or not the key existed.
    pub async fn kv_delete(&self, key: &str, recurse: bool) -> Result<bool, OnexError> {
        // An empty prefix with recurse would wipe the whole store: never by accident.
        validate_key(key, "kv_delete")?;
        let path = format!("/v1/kv/{}", encode_key(key));
        let params: &[(&str, &str)] = if recurse { &[("recurse", "true")] } else { &[] };
        let answer = self.send(Method::DELETE, &path, params, None, QueryOptions::default()).await?;
        match answer.status {
            StatusCode::OK => self.parse(&Method::DELETE, &path, &answer),
            _ => Err(self.status_error(&Method::DELETE, &path, &answer)),
        }
    }

    /// Registers a service with the local agent (replacing one with the same id).
    pub async fn service_register(&self, registration: &AgentServiceRegistration) -> Result<(), OnexError> {
        if registration.name.trim().is_empty() {
            return Err(OnexError::validation("a service registration needs a name").with_detail("field", "name"));
        }
        let path = "/v1/agent/service/register";
        let json = serde_json::to_vec(registration)
            .map_err(|e| OnexError::new(ErrorCode::InternalError, format!("cannot encode the registration: {e}")))?;
        let body = Some((Bytes::from(json), "application/json"));
        let answer = self.send(Method::PUT, path, &[], body, QueryOptions::default()).await?;
        match answer.status {
            StatusCode::OK => Ok(()),
            _ => Err(self.status_error(&Method::PUT, path, &answer)),
        }
    }

    /// Deregisters the service instance `service_id` from the local agent; `NOT_FOUND` when
    /// the agent does not know it.
    pub async fn service_deregister(&self, service_id: &str) -> Result<(), OnexError> {
        if service_id.trim().is_empty() {
            return Err(
                OnexError::validation("a service id is required to deregister").with_detail("field", "service_id")
            );
        }
        let path = format!("/v1/agent/service/deregister/{}", encode_segment(service_id));
        let answer = self.send(Method::PUT, &path, &[], None, QueryOptions::default()).await?;
        match answer.status {
            StatusCode::OK => Ok(()),
            StatusCode::NOT_FOUND => {
                Err(OnexError::new(ErrorCode::NotFound, format!("Consul knows no service with id '{service_id}'"))
                    .with_detail("service_id", service_id))
            }
            _ => Err(self.status_error(&Method::PUT, &path, &answer)),
        }
    }

    /// Every service of the datacenter with the union of its instances' tags.
    pub async fn catalog_services(&self, query: QueryOptions) -> Result<Indexed<CatalogServices>, OnexError> {
        let path = "/v1/catalog/services";
        let answer = self.send(Method::GET, path, &[], None, query).await?;
        match answer.status {
            StatusCode::OK => {
                // Older agents send `null` for a service without tags.
                let raw: std::collections::BTreeMap<String, Option<Vec<String>>> =
                    self.parse(&Method::GET, path, &answer)?;
                let value = raw.into_iter().map(|(name, tags)| (name, tags.unwrap_or_default())).collect();
                Ok(Indexed { value, index: answer.index })
            }
            _ => Err(self.status_error(&Method::GET, path, &answer)),
        }
    }

    /// Every instance of `service` with its node's and its own checks; an empty list for an
    /// unknown service (Consul answers 200 with `[]`).
    pub async fn health_service(
        &self,
        service: &str,
        query: QueryOptions,
    ) -> Result<Indexed<Vec<ServiceEntry>>, OnexError> {
        if service.trim().is_empty() {
            return Err(OnexError::validation("a service name is required").with_detail("field", "service_name"));
        }
        let path = format!("/v1/health/service/{}", encode_segment(service));
        let answer = self.send(Method::GET, &path, &[], None, query).await?;
        match answer.status {
            StatusCode::OK => Ok(Indexed { value: self.parse(&Method::GET, &path, &answer)?, index: answer.index }),
            StatusCode::NOT_FOUND => Ok(Indexed { value: Vec::new(), index: answer.index }),
            _ => Err(self.status_error(&Method::GET, &path, &answer)),
        }
    }

    /// Sends one request under the pool's bound and the request's time limit.
    async fn send(
        &self,
        method: Method,
        path: &str,
        params: &[(&str, &str)],
        body: Option<(Bytes, &'static str)>,
        query: QueryOptions,
    ) -> Result<Answer, OnexError> {
        let inner = &*self.inner;
        let mut uri = format!("http://{}{}?dc={}", inner.authority, path, encode_segment(&inner.config.datacenter));
        for (name, value) in params {
            uri.push('&');
            uri.push_str(name);
            uri.push('=');
            uri.push_str(&encode_segment(value));
        }
        if let Some(index) = query.index {
            let wait = query.wait.unwrap_or(Duration::from_secs(300)).min(MAX_WAIT);
            uri.push_str(&format!("&index={index}&wait={}ms", wait.as_millis().max(1)));
        }
        let mut request = Request::builder().method(method.clone()).uri(uri);
        if let Some(token) = &inner.token {
            request = request.header(TOKEN_HEADER, token.clone());
        }
        let request = match body {
            Some((bytes, content_type)) => {
                request.header(CONTENT_TYPE, HeaderValue::from_static(content_type)).body(Full::new(bytes))
            }
            None => request.body(Full::new(Bytes::new())),
        }
        .map_err(|e| {
            OnexError::new(ErrorCode::InternalError, format!("cannot build the request {method} {path}: {e}"))
        })?;

        let limit = inner.config.request_timeout + query.hold();
        let mut stage = Stage::Slot;
        let exchange = async {
            let _slot = inner.slots.acquire().await.map_err(|_| {
                OnexError::new(ErrorCode::InternalError, "the Consul client's request slots were closed")
            })?;
            stage = Stage::Consul;
            let response = inner.http.request(request).await.map_err(|e| self.unreachable(&method, path, &e))?;
            let status = response.status();
            let index = response
                .headers()
                .get(INDEX_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                        OnexError::new(
                            ErrorCode::IntegrationServiceError,
                            format!("Consul's answer to {method} {path} is larger than {MAX_BODY_BYTES} bytes"),
                        )
                    } else {
                        self.unreachable_text(&method, path, &error_chain(&*e))
                    }
                })?
                .to_bytes();
            Ok::<_, OnexError>(Answer { status, index, body })
        };
        match tokio::time::timeout(limit, exchange).await {
            Ok(result) => result,
            Err(_) => Err(match stage {
                Stage::Slot => OnexError::new(
                    ErrorCode::IntegrationServiceUnavailable,
                    format!(
                        "Consul at {} is unavailable: no request slot free within {limit:?} ({} requests in flight)",
                        inner.authority, inner.config.pool_size
                    ),
                ),
                Stage::Consul => self.unreachable_text(&method, path, &format!("no answer within {limit:?}")),
            }
            .with_detail("timeout_ms", u64::try_from(limit.as_millis()).unwrap_or(u64::MAX))),
        }
    }

    fn unreachable(&self, method: &Method, path: &str, error: &hyper_util::client::legacy::Error) -> OnexError {
        self.unreachable_text(method, path, &error_chain(error))
    }

    fn unreachable_text(&self, method: &Method, path: &str, cause: &str) -> OnexError {
        OnexError::new(
            ErrorCode::IntegrationServiceUnavailable,
            format!("Consul at {} is unreachable: {method} {path}: {}", self.inner.authority, self.redact(cause)),
        )
        .with_detail("consul", self.inner.authority.clone())
    }

    /// Parses a 200 body as `T`; anything else is Consul misbehaving.
    fn parse<T: DeserializeOwned>(&self, method: &Method, path: &str, answer: &Answer) -> Result<T, OnexError> {
        serde_json::from_slice(&answer.body).map_err(|e| {
            OnexError::new(
                ErrorCode::IntegrationServiceError,
                format!(
                    "Consul at {} answered {method} {path} with a body that is not the documented JSON ({e}): {}",
                    self.inner.authority,
                    self.quote(&answer.body)
                ),
            )
            .with_detail("consul", self.inner.authority.clone())
        })
    }

    /// The error of a status the caller did not expect.
    fn status_error(&self, method: &Method, path: &str, answer: &Answer) -> OnexError {
        let status = answer.status.as_u16();
        let reason = self.quote(&answer.body);
        let authority = &self.inner.authority;
        let (code, message) = match answer.status {
            StatusCode::BAD_REQUEST => {
                (ErrorCode::ValidationError, format!("Consul rejected {method} {path} as invalid: {reason}"))
            }
            StatusCode::FORBIDDEN if self.inner.token.is_none() => (
                ErrorCode::IntegrationServiceError,
                format!(
                    "Consul at {authority} refused {method} {path}: ACLs are on and no token is configured \
                     ({}): {reason}",
                    super::config::TOKEN_VARIABLE
                ),
            ),
            StatusCode::FORBIDDEN => (
                ErrorCode::IntegrationServiceError,
                format!(
                    "Consul at {authority} refused {method} {path}: the ACL token ({}) lacks permission: {reason}",
                    super::config::TOKEN_VARIABLE
                ),
            ),
            StatusCode::TOO_MANY_REQUESTS => (
                ErrorCode::IntegrationServiceUnavailable,
                format!("Consul at {authority} is rate limiting {method} {path}: {reason}"),
            ),
            _ => (
                ErrorCode::IntegrationServiceError,
                format!("Consul at {authority} answered {method} {path} with {status}: {reason}"),
            ),
        };
        OnexError::new(code, message).with_detail("consul", authority.clone()).with_detail("status", status)
    }

    /// A short, sanitized quote of a body for an error message.
    fn quote(&self, body: &[u8]) -> String {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        let mut quoted: String = text.chars().take(QUOTED_BODY_CHARS).collect();
        if text.chars().count() > QUOTED_BODY_CHARS {
            quoted.push('…');
        }
        if quoted.is_empty() {
            quoted.push_str("(empty body)");
        }
        self.redact(&quoted)
    }

    /// Masks the token and any credential pattern in text that came from outside.
    fn redact(&self, text: &str) -> String {
        let mut text = crate::sanitize::sanitize_message(text);
        if let Some(token) = &self.inner.config.token {
            let token = token.expose();
            if !token.is_empty() {
                text = text.replace(token.as_str(), "***");
            }
        }
        text
    }
}

/// The error and its sources, joined: hyper-util's own Display says only "client error
/// (Connect)", the cause (refused, timed out) is in the chain.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn leading_slash(key: &str) -> OnexError {
    OnexError::validation(format!("a Consul key does not start with '/', got '{key}'")).with_detail("field", "key")
}

fn validate_key(key: &str, operation: &str) -> Result<(), OnexError> {
    if key.is_empty() {
        return Err(OnexError::validation(format!("a key is required by {operation}")).with_detail("field", "key"));
    }
    if key.starts_with('/') {
        return Err(leading_slash(key));
    }
    Ok(())
}

/// Percent-encodes every byte outside RFC 3986's unreserved set, `/` included.
fn encode_segment(text: &str) -> String {
    encode(text, false)
}

/// Percent-encodes a KV key: as [`encode_segment`], but `/` stays a path separator.
fn encode_key(key: &str) -> String {
    encode(key, true)
}

fn encode(text: &str, keep_slash: bool) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len());
    for &byte in text.as_bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') || (keep_slash && byte == b'/') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_their_slashes_and_everything_else_unsafe_is_encoded() {
        assert_eq!(encode_key("app/config/db url"), "app/config/db%20url");
        assert_eq!(encode_key("a?b#c&d=e"), "a%3Fb%23c%26d%3De");
        assert_eq!(encode_key("ключ"), "%D0%BA%D0%BB%D1%8E%D1%87");
        assert_eq!(encode_segment("web/1 x"), "web%2F1%20x");
        assert_eq!(encode_segment("redis-1.prod_a~"), "redis-1.prod_a~");
    }

    #[test]
    fn a_blocking_query_may_be_held_for_its_wait_plus_consuls_jitter() {
        assert_eq!(QueryOptions::default().hold(), Duration::ZERO);
        assert_eq!(QueryOptions::blocking(5, Duration::from_secs(16)).hold(), Duration::from_secs(17));
        assert_eq!(QueryOptions::blocking(5, Duration::from_secs(3600)).hold(), MAX_WAIT + MAX_WAIT / 16);
    }

    #[test]
    fn bad_configurations_are_refused_before_any_request() {
        let err = ConsulClient::new(ConsulConfig::new("bad host/x", 8500, "dc1")).unwrap_err();
        assert_eq!(err.code(), ErrorCode::ConfigurationError);
        assert!(err.message().contains("CONSUL_HOST"), "{err}");
        let err = ConsulClient::new(ConsulConfig::new("h", 8500, "dc1").with_pool_size(0)).unwrap_err();
        assert_eq!(err.code(), ErrorCode::ConfigurationError);
        let err = ConsulClient::new(ConsulConfig::new("h", 8500, "dc1").with_token("line\nbreak")).unwrap_err();
        assert!(!err.to_string().contains("line"), "{err}");
    }

    #[tokio::test]
    async fn the_debug_view_never_shows_the_token() {
        let client = ConsulClient::new(ConsulConfig::new("127.0.0.1", 8500, "dc1").with_token("s3cr3t-acl")).unwrap();
        let shown = format!("{client:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("127.0.0.1:8500"), "{shown}");
    }

    #[tokio::test]
    async fn bad_keys_are_validation_errors_without_a_request() {
        // Port 9 on loopback: nothing listens; a request would be refused, not validated.
        let client = ConsulClient::new(ConsulConfig::new("127.0.0.1", 9, "dc1")).unwrap();
        for key in ["", "/leading"] {
            assert_eq!(client.kv_get(key).await.unwrap_err().code(), ErrorCode::ValidationError, "{key:?}");
            assert_eq!(client.kv_delete(key, true).await.unwrap_err().code(), ErrorCode::ValidationError);
        }
    }
}
