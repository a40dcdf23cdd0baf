//! A plain HTTP GET for tests against servers on loopback (the process's observability
//! server, Prometheus): a few lines over a TCP stream, no client library.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one HTTP request to the server may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One GET of `path_and_query` over HTTP/1.0 (the server closes the connection after the
/// response), within [`REQUEST_TIMEOUT`]: status and body, or what went wrong.
pub async fn get(address: SocketAddr, path_and_query: &str) -> Result<(u16, String), String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        stream.write_all(format!("GET {path_and_query} HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("GET {path_and_query}: no answer within {REQUEST_TIMEOUT:?}"))?
        .map_err(|e| format!("GET {path_and_query}: {e}"))?;
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw.split_once("\r\n\r\n").ok_or_else(|| format!("GET {path_and_query}: no header end"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("GET {path_and_query}: bad status line in {head:?}"))?;
    Ok((status, body.to_owned()))
}
