//! The Authorize step: an attestation-gated key release from the broker, reached only
//! through the relay's egress tunnel (the sentinel has no network of its own).
//!
//! 1. Open a tunnel: connect to the egress endpoint, `CONNECT kms-host:port`.
//! 2. `POST /v1/key-release/challenge`: a single-use nonce.
//! 3. Evidence binding the nonce, the sentinel's keys and its pins, from the attestation
//!    provider.
//! 4. `POST /v1/key-release`: the data key, HPKE-sealed to the attested release key.
//!
//! The relay is untrusted and may answer the `CONNECT` itself. Every check on the broker's
//! answers is the one key-release engine's ([`ReleaseClient`]): an answer the pinned broker
//! key does not sign for this request fails with `broker_unauthenticated`. The broker's
//! signed denials are fatal with its reason code; an egress refusal is fatal
//! (`egress_refused`, a deployment error); an unavailable broker (no answer, 5xx, a
//! timeout) is transient and retried by the caller. Every operation has a time limit and
//! every answer a size limit ([`EgressLimits`]).

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trustbridge_protocol::key_release::client::{MAX_ANSWER_BYTES, Request};
pub use trustbridge_protocol::key_release::{BrokerKey, Released};
use trustbridge_protocol::key_release::{ReleaseClient, ReleaseClientError};
use trustbridge_transport::{Endpoint, Stream};

use crate::attestation::AttestationProvider;
use crate::boot::StepError;
use crate::failure::{FailureCode, fatal};
use crate::keys::SentinelKeys;

/// Where the key broker is, as the egress allow-list names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KmsTarget {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl std::str::FromStr for KmsTarget {
    type Err = String;
    /// `http://host:port` or `host:port`.
    fn from_str(s: &str) -> Result<Self, String> {
        let rest = s.strip_prefix("http://").unwrap_or(s).trim_end_matches('/');
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?}: expected http://HOST:PORT"))?;
        let port = port.parse().map_err(|_| format!("{s:?}: bad port"))?;
        if host.is_empty() || host.contains('/') {
            return Err(format!("{s:?}: expected http://HOST:PORT"));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

/// What the sentinel trusts: the broker's identity key (required) and, optionally, the
/// provider whose models alone it serves. Both go into the evidence binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pins {
    /// The key broker's identity key (`--kms-key`, `TB_KMS_KEY`).
    pub broker: BrokerKey,
    /// The provider key (`--provider-key`, `TB_PROVIDER_KEY`).
    pub provider: Option<[u8; 32]>,
}

/// Time limits of a key release through the relay. Whatever the relay does (answer
/// slowly, hold a tunnel open, trickle bytes) and however the TEE's attestation device
/// behaves, a key release ends within `connect` (tunnel) + `connect` (HTTP handshake) +
/// 2 × `exchange` + `evidence`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EgressLimits {
    /// To reach the relay and have the `CONNECT` answered, and again for the HTTP
    /// handshake through the tunnel.
    pub connect: Duration,
    /// For one request and its whole answer.
    pub exchange: Duration,
    /// For the attestation provider to produce evidence.
    pub evidence: Duration,
}

impl Default for EgressLimits {
    /// 10 s to connect, 30 s per exchange, 60 s for evidence.
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            exchange: Duration::from_secs(30),
            evidence: Duration::from_secs(60),
        }
    }
}

fn transient(what: &str, e: impl std::fmt::Display) -> StepError {
    StepError::Transient(format!("{what}: {e}"))
}

/// `e` followed by its chain of causes, which hyper keeps out of its `Display`.
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// The boot step's view of an engine error: what the engine calls transient (an
/// unavailable broker, a signed denial of the nonce, which the relay can provoke) is
/// retried; anything else (a signed denial, an unauthenticated answer) is fatal with its
/// code.
fn step_error(e: ReleaseClientError) -> StepError {
    if e.is_transient() {
        StepError::Transient(e.to_string())
    } else {
        fatal(FailureCode::of_release(&e), e.to_string())
    }
}

/// Largest `CONNECT` answer head the sentinel reads.
const MAX_CONNECT_HEAD: usize = 8192;

/// Opens a tunnel to `kms` through the egress proxy at `egress`, within `limit`.
pub async fn egress_tunnel(
    egress: &Endpoint,
    kms: &KmsTarget,
    limit: Duration,
) -> Result<Stream, StepError> {
    tokio::time::timeout(limit, connect_tunnel(egress, kms))
        .await
        .map_err(|_| {
            transient(
                "relay egress",
                format!("no tunnel within {} ms", limit.as_millis()),
            )
        })?
}

async fn connect_tunnel(egress: &Endpoint, kms: &KmsTarget) -> Result<Stream, StepError> {
    let mut stream = trustbridge_transport::connect(egress)
        .await
        .map_err(|e| transient("relay egress", e))?;
    let request = format!(
        "CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n",
        host = kms.host,
        port = kms.port
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| transient("relay egress", e))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > MAX_CONNECT_HEAD {
            return Err(transient(
                "relay egress",
                format!("a CONNECT answer longer than {MAX_CONNECT_HEAD} bytes"),
            ));
        }
        let read = stream
            .read(&mut byte)
            .await
            .map_err(|e| transient("relay egress", e))?;
        if read == 0 {
            return Err(transient("relay egress", "closed during CONNECT"));
        }
        head.push(byte[0]);
    }
    let status = String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    match status.as_str() {
        "200" => Ok(stream),
        "403" => Err(fatal(
            FailureCode::EgressRefused,
            format!(
                "the relay does not allow {}:{} on its egress allow-list",
                kms.host, kms.port
            ),
        )),
        other => Err(transient(
            "relay egress",
            format!(
                "CONNECT answered {:?}",
                other.chars().take(16).collect::<String>()
            ),
        )),
    }
}

/// An HTTP/1.1 connection to the broker over an egress tunnel.
struct BrokerConnection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
    exchange: Duration,
}

impl BrokerConnection {
    async fn open(
        egress: &Endpoint,
        kms: &KmsTarget,
        limits: &EgressLimits,
    ) -> Result<Self, StepError> {
        let stream = egress_tunnel(egress, kms, limits.connect).await?;
        let (sender, conn) = tokio::time::timeout(
            limits.connect,
            hyper::client::conn::http1::handshake(TokioIo::new(stream)),
        )
        .await
        .map_err(|_| transient("broker", "HTTP handshake timed out"))?
        .map_err(|e| transient("broker", with_causes(&e)))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self {
            sender,
            host: format!("{}:{}", kms.host, kms.port),
            exchange: limits.exchange,
        })
    }

    /// Sends `request` and returns the status and body (at most [`MAX_ANSWER_BYTES`]),
    /// within the exchange limit.
    async fn send(&mut self, request: &Request) -> Result<(u16, Vec<u8>), StepError> {
        let limit = self.exchange;
        tokio::time::timeout(limit, self.exchange(request))
            .await
            .map_err(|_| {
                transient(
                    "broker",
                    format!("no complete answer within {} ms", limit.as_millis()),
                )
            })?
    }

    async fn exchange(&mut self, request: &Request) -> Result<(u16, Vec<u8>), StepError> {
        let req = hyper::Request::post(request.path)
            .header(hyper::header::HOST, &self.host)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(request.body.clone())))
            .map_err(|e| fatal(FailureCode::Internal, e.to_string()))?;
        // After a response the HTTP/1.1 connection may still be finishing the previous
        // exchange; a request sent before it is ready is refused ("connection was not ready").
        self.sender
            .ready()
            .await
            .map_err(|e| transient("broker", with_causes(&e)))?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| transient("broker", with_causes(&e)))?;
        let status = resp.status().as_u16();
        let bytes = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    // Unread, so unauthenticated: whoever sent it, it is no broker answer.
                    fatal(
                        FailureCode::BrokerUnauthenticated,
                        format!("an answer larger than {MAX_ANSWER_BYTES} bytes"),
                    )
                } else {
                    transient("broker", e)
                }
            })?
            .to_bytes();
        Ok((status, bytes.to_vec()))
    }
}

/// Runs the key release for (`asset`, `contract`) with evidence from `provider`, trusting
/// only answers signed by the pinned broker.
#[allow(clippy::too_many_arguments)] // the release's inputs, each distinct
pub async fn authorize(
    provider: Arc<dyn AttestationProvider>,
    keys: &SentinelKeys,
    egress: &Endpoint,
    kms: &KmsTarget,
    pins: &Pins,
    limits: &EgressLimits,
    asset: &str,
    contract: &str,
) -> Result<Released, StepError> {
    let client = ReleaseClient::new(pins.broker, pins.provider, asset, contract);
    let mut conn = BrokerConnection::open(egress, kms, limits).await?;
    let (request, awaiting) = client.challenge().map_err(step_error)?;
    let (status, body) = conn.send(&request).await?;
    let challenged = awaiting.answer(status, &body).map_err(step_error)?;
    let binding = challenged.binding(&keys.bound_keys());
    let evidence = {
        let binding = binding.clone();
        let produce = tokio::task::spawn_blocking(move || provider.evidence(&binding));
        tokio::time::timeout(limits.evidence, produce)
            .await
            .map_err(|_| {
                transient(
                    "attestation",
                    format!("no evidence within {} ms", limits.evidence.as_millis()),
                )
            })?
            .map_err(|e| fatal(FailureCode::Attestation, e.to_string()))?
            .map_err(|e| fatal(FailureCode::Attestation, e.to_string()))?
    };
    let (request, awaiting) = challenged
        .release(&binding, &evidence)
        .map_err(step_error)?;
    let (status, body) = conn.send(&request).await?;
    awaiting
        .answer(status, &body, &keys.release)
        .map_err(step_error)
}

/// The binding of a sentinel's keys and pins with `nonce`, outside a key release (the
/// attestation probe at boot).
pub fn binding_for(
    keys: &SentinelKeys,
    pins: &Pins,
    nonce: &[u8],
) -> trustbridge_protocol::binding::EvidenceBinding {
    ReleaseClient::new(pins.broker, pins.provider, "", "").binding(&keys.bound_keys(), nonce)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code
    use super::*;
    use trustbridge_relay::egress::{AllowList, EgressConfig, serve_egress};
    use trustbridge_transport::Listener;

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Echo {
        n: u32,
    }

    /// Many requests back to back on one broker connection: each waits until the
    /// connection has finished the previous exchange instead of failing as "not ready".
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_reuse_one_connection_back_to_back() {
        let dir = tempfile::tempdir().unwrap();
        let app = axum::Router::new().route(
            "/echo",
            axum::routing::post(|axum::Json(e): axum::Json<Echo>| async move { axum::Json(e) }),
        );
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = tcp.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(tcp, app).await });
        let egress = Endpoint::Unix(dir.path().join("egress.sock"));
        let allow = AllowList::parse(&[format!("127.0.0.1:{port}")]).unwrap();
        tokio::spawn(serve_egress(
            Listener::bind(&egress).await.unwrap(),
            EgressConfig::new(allow),
        ));
        let kms = KmsTarget {
            host: "127.0.0.1".into(),
            port,
        };
        let mut conn = BrokerConnection::open(&egress, &kms, &EgressLimits::default())
            .await
            .unwrap();
        for n in 0..500 {
            let request = Request {
                path: "/echo",
                body: serde_json::to_vec(&Echo { n }).unwrap(),
            };
            let (status, body) = conn.send(&request).await.unwrap();
            assert_eq!(status, 200);
            let back: Echo = serde_json::from_slice(&body).unwrap();
            assert_eq!(back, Echo { n });
        }
    }

    #[test]
    fn causes_are_kept() {
        let e = Wrapped(std::io::Error::other("connection reset"));
        assert_eq!(with_causes(&e), "wrapped: connection reset");
    }

    #[derive(Debug)]
    struct Wrapped(std::io::Error);
    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("wrapped")
        }
    }
    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
}
