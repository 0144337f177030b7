//! The Authorize step: an attestation-gated key release from the broker, reached only
//! through the relay's egress tunnel (the sentinel has no network of its own).
//!
//! 1. Open a tunnel: connect to the egress endpoint, `CONNECT kms-host:port`.
//! 2. `POST /v1/key-release/challenge`: a single-use nonce.
//! 3. Evidence binding the nonce and the sentinel's keys, from the attestation provider.
//! 4. `POST /v1/key-release`: the data key, HPKE-sealed to the attested release key.
//!
//! The broker's denials (HTTP 403) are fatal with the broker's reason code; an egress
//! refusal is fatal (`egress_refused`, a deployment error); anything else (connection,
//! 5xx) is transient and retried by the caller.

use std::sync::Arc;

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trustbridge_protocol::key_release::{
    BindingKeys, ChallengeRequest, ChallengeResponse, ErrorBody, ReleaseRequest, ReleaseResponse,
    release_info,
};
use trustbridge_protocol::ohttp::ohttp_keys_sha256;
use trustbridge_protocol::sealed::DataKey;
use trustbridge_transport::{Endpoint, Stream};

use crate::attestation::AttestationProvider;
use crate::boot::StepError;
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

/// What a successful release yields.
pub struct Released {
    /// The model's data key.
    pub key: DataKey,
    /// SHA-256 of the asset's `manifest.cose`, as the broker registered it.
    pub manifest_sha256: [u8; 32],
    /// The provider's Ed25519 public key.
    pub provider_key: [u8; 32],
}

impl std::fmt::Debug for Released {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Released(key id {}, manifest {})",
            self.key.key_id(),
            hex::encode(self.manifest_sha256)
        )
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

fn fatal(code: &str, detail: impl Into<String>) -> StepError {
    StepError::Fatal {
        code: code.to_owned(),
        detail: detail.into(),
    }
}

/// Opens a tunnel to `kms` through the egress proxy at `egress`.
pub async fn egress_tunnel(egress: &Endpoint, kms: &KmsTarget) -> Result<Stream, StepError> {
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
        if head.len() > 8192
            || stream
                .read(&mut byte)
                .await
                .map_err(|e| transient("relay egress", e))?
                == 0
        {
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
            "egress_refused",
            format!(
                "the relay does not allow {}:{} on its egress allow-list",
                kms.host, kms.port
            ),
        )),
        other => Err(transient(
            "relay egress",
            format!("CONNECT answered {other}"),
        )),
    }
}

/// An HTTP/1.1 connection to the broker over an egress tunnel.
struct BrokerConnection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
}

impl BrokerConnection {
    async fn open(egress: &Endpoint, kms: &KmsTarget) -> Result<Self, StepError> {
        let stream = egress_tunnel(egress, kms).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| transient("broker", with_causes(&e)))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self {
            sender,
            host: format!("{}:{}", kms.host, kms.port),
        })
    }

    async fn post<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &mut self,
        path: &str,
        body: &B,
    ) -> Result<T, StepError> {
        let body = serde_json::to_vec(body).map_err(|e| fatal("internal", e.to_string()))?;
        let req = hyper::Request::post(path)
            .header(hyper::header::HOST, &self.host)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| fatal("internal", e.to_string()))?;
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
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| transient("broker", with_causes(&e)))?
            .to_bytes();
        match status {
            200 => {
                serde_json::from_slice(&bytes).map_err(|e| fatal("broker_protocol", e.to_string()))
            }
            403 => {
                let err: ErrorBody = serde_json::from_slice(&bytes)
                    .map_err(|e| fatal("broker_protocol", e.to_string()))?;
                Err(fatal(&err.error, err.detail))
            }
            s if s >= 500 => Err(transient("broker", format!("HTTP {s}"))),
            s => Err(fatal(
                "broker_rejected",
                format!(
                    "HTTP {s}: {}",
                    String::from_utf8_lossy(&bytes)
                        .chars()
                        .take(200)
                        .collect::<String>()
                ),
            )),
        }
    }
}

/// Runs the key release for (`asset`, `contract`) with evidence from `provider`.
pub async fn authorize(
    provider: Arc<dyn AttestationProvider>,
    keys: &SentinelKeys,
    egress: &Endpoint,
    kms: &KmsTarget,
    asset: &str,
    contract: &str,
) -> Result<Released, StepError> {
    let mut conn = BrokerConnection::open(egress, kms).await?;
    let challenge: ChallengeResponse = conn
        .post(
            "/v1/key-release/challenge",
            &ChallengeRequest {
                asset: asset.to_owned(),
                contract: contract.to_owned(),
            },
        )
        .await?;
    let nonce =
        hex::decode(&challenge.nonce).map_err(|e| fatal("broker_protocol", e.to_string()))?;
    let binding = keys.binding(nonce.clone());
    let evidence = {
        let binding = binding.clone();
        tokio::task::spawn_blocking(move || provider.evidence(&binding))
            .await
            .map_err(|e| fatal("attestation", e.to_string()))?
            .map_err(|e| fatal("attestation", e.to_string()))?
    };
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let request = ReleaseRequest {
        nonce: challenge.nonce,
        platform: evidence.platform,
        evidence: b64(&evidence.bytes),
        certificates: evidence.certificates.iter().map(|c| b64(c)).collect(),
        binding: BindingKeys {
            ohttp_keys_sha256: hex::encode(ohttp_keys_sha256(&keys.ohttp_keys)),
            receipt_key: hex::encode(binding.receipt_key),
            release_key: hex::encode(binding.release_key),
        },
    };
    let resp: ReleaseResponse = conn.post("/v1/key-release", &request).await?;
    if resp.asset != asset {
        return Err(fatal(
            "broker_protocol",
            format!("key released for asset {}, not {asset}", resp.asset),
        ));
    }
    let decode32 = |field: &str, s: &str| -> Result<[u8; 32], StepError> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out)
            .map_err(|e| fatal("broker_protocol", format!("{field}: {e}")))?;
        Ok(out)
    };
    let enc = hex::decode(&resp.enc).map_err(|e| fatal("broker_protocol", e.to_string()))?;
    let ct = hex::decode(&resp.ciphertext).map_err(|e| fatal("broker_protocol", e.to_string()))?;
    let key = keys
        .release
        .open_data_key(&enc, &ct, &release_info(asset, &nonce))
        .map_err(|e| fatal("broker_protocol", e.to_string()))?;
    Ok(Released {
        key,
        manifest_sha256: decode32("manifest_sha256", &resp.manifest_sha256)?,
        provider_key: decode32("provider_key", &resp.provider_key)?,
    })
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
        let mut conn = BrokerConnection::open(&egress, &kms).await.unwrap();
        for n in 0..500 {
            let back: Echo = conn.post("/echo", &Echo { n }).await.unwrap();
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
