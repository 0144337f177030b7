//! Runtime-proxy mode: the decapsulated request goes to an external runtime (vLLM's
//! OpenAI server in a confidential GPU VM) on the TEE's own loopback, and its answer comes
//! back, streamed, to be encapsulated. [`RuntimeEngine`] is this mode's [`Engine`].

use std::str::FromStr;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt, TryStreamExt};
use http_body_util::{BodyExt, Full};
use trustbridge_transport::Endpoint;
use trustbridge_transport::http1::{Http1Pool, PoolConfig, PooledBody};

use super::{ApiAnswer, ApiRequest, Cut, Engine, Fields};
use crate::engine::openai::ApiError;

/// Where the runtime listens, inside the TEE: `http://IP:PORT` with a loopback IP literal
/// (127.0.0.0/8 or `[::1]`), or `unix:///ABSOLUTE/PATH`, a Unix socket.
///
/// Plain HTTP is fine only because both stay inside the trust boundary. On SEV-SNP and
/// Azure the host writes the sentinel's configuration, so a host name (resolved through
/// files the host controls) or any other address would let the host receive every
/// decrypted prompt; anything else is refused. A Unix socket's peer is always a process
/// of the same (guest) kernel, whatever file system holds the path, so the host cannot be
/// it either. The host chooses the path, though, so it could name a socket that another
/// user or service of the guest bound: the sentinel talks only to a peer that runs under
/// its own user id (`SO_PEERCRED`, `PoolConfig::unix_peer_uid`), which a loopback port
/// cannot tell. It is also the faster hop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeUrl(Where);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Where {
    Tcp { host: String, port: u16 },
    Unix(std::path::PathBuf),
}

/// A runtime URL that is neither `http://IP:PORT` on the loopback nor
/// `unix:///ABSOLUTE/PATH`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "runtime URL {0:?} must be http://IP:PORT with a loopback IP (127.0.0.0/8 or [::1]) and no path, e.g. http://127.0.0.1:8081, or unix:///ABSOLUTE/PATH (plain, at most 107 bytes): the runtime must run inside the TEE"
)]
pub struct BadRuntimeUrl(pub String);

/// Longest Unix socket path (`sun_path` holds 108 bytes with its terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

impl FromStr for RuntimeUrl {
    type Err = BadRuntimeUrl;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadRuntimeUrl(s.to_owned());
        if let Some(path) = s.strip_prefix("unix://") {
            // An absolute path to a file, spelt plainly: no `.` or `..` component, no
            // trailing or doubled slash, no NUL (an abstract socket), short enough for
            // sun_path.
            let plain = path.len() > 1
                && path.starts_with('/')
                && !path.contains('\0')
                && path
                    .split('/')
                    .skip(1)
                    .all(|c| !matches!(c, "" | "." | ".."));
            if !plain || path.len() > MAX_SOCKET_PATH {
                return Err(bad());
            }
            return Ok(Self(Where::Unix(path.into())));
        }
        let rest = s.strip_prefix("http://").ok_or_else(bad)?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
        let ip: std::net::IpAddr = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .parse()
            .map_err(|_| bad())?;
        if !ip.is_loopback() {
            return Err(bad());
        }
        Ok(Self(Where::Tcp {
            host: host.to_owned(),
            port: port.parse().map_err(|_| bad())?,
        }))
    }
}

/// The default runtime URL (`TB_RUNTIME_URL`).
pub const DEFAULT_RUNTIME: &str = "http://127.0.0.1:8081";

impl Default for RuntimeUrl {
    /// [`DEFAULT_RUNTIME`]: vLLM's OpenAI server on the loopback.
    fn default() -> Self {
        Self(Where::Tcp {
            host: "127.0.0.1".to_owned(),
            port: 8081,
        })
    }
}

impl std::fmt::Display for RuntimeUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Where::Tcp { host, port } => write!(f, "http://{host}:{port}"),
            Where::Unix(path) => write!(f, "unix://{}", path.display()),
        }
    }
}

/// The runtime did not answer usefully.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// Nothing listens there, or the connection failed.
    #[error("the runtime at {url} is unreachable: {detail}")]
    Unreachable {
        /// The runtime.
        url: String,
        /// Why.
        detail: String,
    },
    /// The request cannot be expressed as HTTP/1.1 (a bad method, path or header).
    #[error("the request is not valid HTTP: {0}")]
    BadRequest(String),
}

/// Header fields that describe one hop, or that this hop sets itself.
pub(crate) fn is_hop_field(name: &[u8]) -> bool {
    const HOP: [&[u8]; 9] = [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
    ];
    HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// Requests to the runtime over kept-alive connections (one TCP connection per request
/// at a time, reused afterwards).
#[derive(Clone, Debug)]
pub struct RuntimeClient {
    url: RuntimeUrl,
    pool: Http1Pool<Full<Bytes>>,
}

impl RuntimeClient {
    /// A client of the runtime at `url`.
    pub fn new(url: RuntimeUrl) -> Self {
        let localhost = || hyper::header::HeaderValue::from_static("localhost");
        let (endpoint, host) = match &url.0 {
            Where::Tcp { host, port } => (
                Endpoint::Tcp {
                    host: host.clone(),
                    port: *port,
                },
                // An IP literal and a port: a valid Host value.
                hyper::header::HeaderValue::from_str(&format!("{host}:{port}"))
                    .unwrap_or_else(|_| localhost()),
            ),
            Where::Unix(path) => (Endpoint::Unix(path.clone()), localhost()),
        };
        let config = match &url.0 {
            // Only a runtime of the sentinel's own user may have the plaintext.
            Where::Unix(_) => PoolConfig {
                unix_peer_uid: Some(rustix::process::geteuid().as_raw()),
                ..PoolConfig::default()
            },
            Where::Tcp { .. } => PoolConfig::default(),
        };
        let pool = Http1Pool::new(endpoint, host, config);
        Self { url, pool }
    }

    /// The runtime's URL.
    pub fn url(&self) -> &RuntimeUrl {
        &self.url
    }

    /// Sends one request and returns the answer's head with its body still to read (for
    /// streamed answers; the caller bounds time and size).
    pub async fn open(
        &self,
        method: &[u8],
        path: &[u8],
        headers: &[(Vec<u8>, Vec<u8>)],
        body: Vec<u8>,
    ) -> Result<StreamedAnswer, RuntimeError> {
        let url = &self.url;
        let path = std::str::from_utf8(path)
            .ok()
            .filter(|p| p.starts_with('/'))
            .ok_or_else(|| {
                RuntimeError::BadRequest("the path is not an absolute UTF-8 path".into())
            })?;
        let mut req = hyper::Request::builder()
            .method(
                hyper::Method::from_bytes(method)
                    .map_err(|e| RuntimeError::BadRequest(e.to_string()))?,
            )
            .uri(path);
        for (name, value) in headers {
            if !is_hop_field(name) {
                req = req.header(name.as_slice(), value.as_slice());
            }
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| RuntimeError::BadRequest(e.to_string()))?;
        let resp = self
            .pool
            .send(req)
            .await
            .map_err(|e| RuntimeError::Unreachable {
                url: url.to_string(),
                detail: e.to_string(),
            })?;
        let (parts, body) = resp.into_parts();
        let headers = parts
            .headers
            .iter()
            .filter(|(n, _)| !is_hop_field(n.as_str().as_bytes()))
            .map(|(n, v)| (n.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        Ok(StreamedAnswer {
            status: parts.status.as_u16(),
            headers,
            body,
        })
    }
}

/// An answer of the runtime whose body is still to be read.
#[derive(Debug)]
pub struct StreamedAnswer {
    /// Its status.
    pub status: u16,
    /// Its header fields, hop-by-hop ones removed.
    pub headers: Fields,
    /// Its body.
    pub body: PooledBody<Full<Bytes>>,
}

/// The runtime-proxy engine: every API request goes to the runtime, its answer comes
/// back as the runtime streams it.
#[derive(Clone, Debug)]
pub struct RuntimeEngine {
    client: RuntimeClient,
}

impl RuntimeEngine {
    /// The engine for the runtime at `url`.
    pub fn new(url: RuntimeUrl) -> Self {
        Self {
            client: RuntimeClient::new(url),
        }
    }
}

impl Engine for RuntimeEngine {
    fn answer(&self, request: ApiRequest) -> BoxFuture<'_, ApiAnswer> {
        async move {
            let opened = tokio::time::timeout_at(
                request.deadline,
                self.client.open(
                    &request.method,
                    &request.path,
                    &request.headers,
                    request.body,
                ),
            )
            .await;
            match opened {
                Err(_) => ApiAnswer::error(&ApiError {
                    status: 504,
                    kind: "runtime_error",
                    code: Some("timeout"),
                    param: None,
                    message: "the runtime did not answer in time".into(),
                }),
                Ok(Err(e @ RuntimeError::BadRequest(_))) => {
                    ApiAnswer::error(&ApiError::invalid(None, e.to_string()))
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "runtime request failed");
                    ApiAnswer::error(&ApiError {
                        status: 502,
                        kind: "runtime_error",
                        code: None,
                        param: None,
                        message: e.to_string(),
                    })
                }
                Ok(Ok(a)) => ApiAnswer {
                    status: a.status,
                    headers: from_runtime(a.headers),
                    body: a
                        .body
                        .into_data_stream()
                        .map_err(|e| {
                            tracing::warn!(error = %e, "the runtime's stream broke off");
                            Cut { status: 502 }
                        })
                        .boxed(),
                    usage: None,
                },
            }
        }
        .boxed()
    }
}

/// Runtime header fields a client may see: the runtime cannot speak for the sentinel.
fn from_runtime(headers: Fields) -> Fields {
    headers
        .into_iter()
        .filter(|(n, _)| !n.to_ascii_lowercase().starts_with(b"trustbridge-"))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn runtime_urls_are_plain_http_on_the_loopback_or_a_unix_socket() {
        let u: RuntimeUrl = "http://127.0.0.1:8081".parse().unwrap();
        assert_eq!(u.to_string(), "http://127.0.0.1:8081");
        assert_eq!(RuntimeUrl::default(), DEFAULT_RUNTIME.parse().unwrap());
        assert_eq!(
            "http://127.0.0.1:9/"
                .parse::<RuntimeUrl>()
                .unwrap()
                .to_string(),
            "http://127.0.0.1:9"
        );
        let u: RuntimeUrl = "unix:///run/tb/runtime.sock".parse().unwrap();
        assert_eq!(u.to_string(), "unix:///run/tb/runtime.sock");
        assert_eq!(u.0, Where::Unix("/run/tb/runtime.sock".into()));
        let longest = format!("unix:///{}", "a".repeat(106));
        assert!(longest.parse::<RuntimeUrl>().is_ok(), "107 bytes fit");
        assert!("http://[::1]:8081".parse::<RuntimeUrl>().is_ok());
        assert!("http://127.8.9.10:1".parse::<RuntimeUrl>().is_ok());
        for bad in [
            "https://127.0.0.1:8081",
            "127.0.0.1:8081",
            "http://127.0.0.1",
            "http://127.0.0.1:8081/v1",
            "http://user@host:1",
            "http://:80",
            // Not inside the TEE, or resolved through files the host controls.
            "http://localhost:8081",
            "http://10.0.0.5:8081",
            "http://192.168.1.1:8081",
            "http://[2001:db8::1]:8081",
            "http://runtime.internal:8081",
            // A Unix socket: an absolute path that fits in sun_path.
            "unix://run/tb/runtime.sock",
            "unix://",
            "unix:/run/tb/runtime.sock",
            "unix:///run/tb/\0.sock",
            "unix:///",
            "unix:///run/tb/",
            "unix:///run/tb/../tb/runtime.sock",
            "unix:///run/./runtime.sock",
            "unix:///run//runtime.sock",
            &format!("unix:///{}", "a".repeat(107)),
        ] {
            assert!(bad.parse::<RuntimeUrl>().is_err(), "{bad}");
        }
    }
}
