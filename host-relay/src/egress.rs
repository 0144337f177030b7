//! Egress for the sentinel: an HTTP `CONNECT` proxy that tunnels only to an allow-list of
//! `host:port` destinations.
//!
//! The sentinel has no network of its own. Every outbound connection (to the key broker,
//! say) goes to the relay's egress listener, which, like AWS's vsock-proxy but concurrent:
//!
//! - accepts `CONNECT host:port HTTP/1.1` and nothing else (`400` otherwise);
//! - refuses, with `403` and a log line, any destination not on the allow-list (exact
//!   host and port; host names compare case-insensitively);
//! - limits concurrent tunnels (`503` beyond the limit), the time to send the request
//!   header and to connect (`504`/`502`), and a tunnel's lifetime.
//!
//! The relay sees only ciphertext: the sentinel's traffic inside the tunnel is its own
//! (HPKE-sealed key releases, TLS).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use trustbridge_transport::{Listener, Stream};

/// Longest accepted request header.
const MAX_HEADER: usize = 8192;

/// An allow-list entry that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("egress allow-list entry {0:?} is not HOST:PORT")]
pub struct AllowListError(pub String);

/// The destinations the sentinel may reach.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList(HashSet<(String, u16)>);

impl AllowList {
    /// Parses `HOST:PORT` entries.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, AllowListError> {
        entries
            .iter()
            .map(|e| {
                parse_destination(e.as_ref()).ok_or_else(|| AllowListError(e.as_ref().to_owned()))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Whether `host:port` is allowed.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        self.0.contains(&(host.to_ascii_lowercase(), port))
    }
}

fn parse_destination(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.trim().rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let valid = !host.is_empty()
        && port != 0
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-[]:".contains(c));
    valid.then(|| (host.to_ascii_lowercase(), port))
}

/// Egress limits and the allow-list.
#[derive(Clone, Debug)]
pub struct EgressConfig {
    /// Allowed destinations.
    pub allow: AllowList,
    /// Most concurrent tunnels.
    pub max_connections: usize,
    /// Time allowed to send the request header.
    pub header_timeout: Duration,
    /// Time allowed to connect to the destination.
    pub connect_timeout: Duration,
    /// Longest lifetime of a tunnel.
    pub max_tunnel_lifetime: Duration,
}

impl EgressConfig {
    /// Defaults: 64 tunnels, 10 s for the header and the connection, tunnels up to 1 h.
    pub fn new(allow: AllowList) -> Self {
        Self {
            allow,
            max_connections: 64,
            header_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            max_tunnel_lifetime: Duration::from_secs(3600),
        }
    }
}

/// Serves egress on `listener` until the task is dropped.
pub async fn serve_egress(listener: Listener, config: EgressConfig) -> std::io::Result<()> {
    let config = Arc::new(config);
    let slots = Arc::new(Semaphore::new(config.max_connections));
    loop {
        let (stream, peer) = listener.accept_stream().await?;
        let permit = slots.clone().try_acquire_owned();
        let config = config.clone();
        tokio::spawn(async move {
            match permit {
                Ok(permit) => {
                    tunnel(stream, &peer, &config).await;
                    drop(permit);
                }
                Err(_) => {
                    tracing::warn!(
                        peer,
                        limit = config.max_connections,
                        "egress refused: too many tunnels"
                    );
                    respond(stream, 503, "too many tunnels").await;
                }
            }
        });
    }
}

async fn respond(mut stream: Stream, status: u16, reason: &str) {
    let text = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Gateway Timeout",
    };
    let body = format!(
        "HTTP/1.1 {status} {text}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reason}",
        reason.len()
    );
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Reads the request header; returns it and any bytes read past it.
async fn read_header(stream: &mut Stream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf[end + 4..].to_vec();
            return String::from_utf8(buf[..end].to_vec())
                .ok()
                .map(|h| (h, rest));
        }
        if buf.len() > MAX_HEADER {
            return None;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn tunnel(mut client: Stream, peer: &str, config: &EgressConfig) {
    let Ok(header) = tokio::time::timeout(config.header_timeout, read_header(&mut client)).await
    else {
        return respond(client, 504, "request header timeout").await;
    };
    let Some((header, early_data)) = header else {
        return respond(client, 400, "malformed request").await;
    };
    let mut words = header.lines().next().unwrap_or_default().split_whitespace();
    let (method, target, version) = (words.next(), words.next(), words.next());
    if method != Some("CONNECT") || !version.is_some_and(|v| v.starts_with("HTTP/1.")) {
        return respond(client, 400, "only CONNECT host:port is accepted").await;
    }
    let Some((host, port)) = target.and_then(parse_destination) else {
        return respond(client, 400, "CONNECT target is not host:port").await;
    };
    if !config.allow.allows(&host, port) {
        tracing::warn!(peer, destination = %format!("{host}:{port}"), "egress refused: destination not on the allow-list");
        return respond(client, 403, "destination not on the egress allow-list").await;
    }
    let addr = (
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
    );
    let upstream = match tokio::time::timeout(config.connect_timeout, TcpStream::connect(addr))
        .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(peer, destination = %format!("{host}:{port}"), error = %e, "egress connect failed");
            return respond(client, 502, "cannot reach the destination").await;
        }
        Err(_) => return respond(client, 504, "destination connect timeout").await,
    };
    let mut upstream = upstream;
    if client
        .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    if !early_data.is_empty() && upstream.write_all(&early_data).await.is_err() {
        return;
    }
    tracing::info!(peer, destination = %format!("{host}:{port}"), "egress tunnel open");
    let copied = tokio::time::timeout(
        config.max_tunnel_lifetime,
        tokio::io::copy_bidirectional(&mut client, &mut upstream),
    )
    .await;
    match copied {
        Ok(Ok((up, down))) => {
            tracing::info!(peer, destination = %format!("{host}:{port}"), bytes_out = up, bytes_in = down, "egress tunnel closed")
        }
        Ok(Err(e)) => tracing::info!(peer, error = %e, "egress tunnel ended"),
        Err(_) => tracing::warn!(peer, "egress tunnel closed at its maximum lifetime"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_is_exact() {
        let a = AllowList::parse(&["kms.internal:443", "127.0.0.1:7443", "[::1]:80"]).unwrap();
        assert!(a.allows("kms.internal", 443));
        assert!(a.allows("KMS.Internal", 443));
        assert!(!a.allows("kms.internal", 80));
        assert!(!a.allows("evil.kms.internal", 443));
        assert!(a.allows("127.0.0.1", 7443));
        assert!(a.allows("[::1]", 80));
        for bad in ["kms", "kms:0", "kms:x", ":443", "a b:1", "kms:70000"] {
            assert!(AllowList::parse(&[bad]).is_err(), "{bad}");
        }
    }
}
