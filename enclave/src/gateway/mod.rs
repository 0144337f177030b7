//! The sentinel as an Oblivious HTTP gateway (RFC 9458, RFC 9292, RFC 9540).
//!
//! - `GET /.well-known/ohttp-gateway`: the key configuration (`application/ohttp-keys`);
//! - `POST /.well-known/ohttp-gateway` (`message/ohttp-req`): a request encapsulated to
//!   that key. Inside is a Binary HTTP request for the sentinel's API (`/v1/...`), which
//!   the serving [`Engine`] answers (the built-in engine, or runtime-proxy mode's external
//!   runtime: [`crate::engine`]). The answer goes back as a
//!   Binary HTTP response, encapsulated (`message/ohttp-res`), with a signed receipt
//!   (header `trustbridge-receipt`, base64url) and the salt of its digests
//!   (`trustbridge-receipt-salt`, hex) inside the encryption;
//! - `GET /.well-known/trustbridge-attestation[?nonce=HEX]`: the attestation bundle
//!   ([`attestation`]).
//!
//! The relay sees ciphertext and sizes. What it gets in the clear is the receipt, on the
//! outer response (`trustbridge-receipt-log`), for its public receipt log: a receipt's
//! digests are salted with a salt only the client receives, so the log reveals nothing
//! testable about what was asked or answered.

pub mod attestation;
mod chunked;
pub mod replay;
pub mod routes;

use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures_util::StreamExt;
use trustbridge_protocol::receipt::{SALT_LEN, SaltedDigest, Usage, salted_digest};

use crate::attestation::AttestationProvider;
use crate::authorize::Pins;
use crate::engine::{ApiRequest, Engine, EngineChoice, Fields};
use crate::hydrate::Model;
use crate::keys::SentinelKeys;
use crate::receipts::{ReceiptFacts, ReceiptSigner};
use attestation::{AttestationConfig, Publisher};

/// Inner response header: the receipt (base64url, no padding).
pub const RECEIPT_HEADER: &str = "trustbridge-receipt";
/// Inner response header: the salt of the receipt's digests (hex).
pub const SALT_HEADER: &str = "trustbridge-receipt-salt";
/// Inner request header: a client nonce (hex, 8 to 64 bytes) the receipt must carry.
pub const NONCE_HEADER: &str = "trustbridge-receipt-nonce";
pub use trustbridge_protocol::ohttp::RECEIPT_LOG_HEADER;

/// Most bytes of receipts in one outer `trustbridge-receipt-log` header.
const LOG_HEADER_BUDGET: usize = 48 << 10;

/// The gateway's limits and what answers its requests.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// The engine that answers API requests: built in, or an external runtime.
    pub engine: EngineChoice,
    /// Attestation bundle publishing.
    pub attestation: AttestationConfig,
    /// Requests handled at once; beyond it, 503 with `retry-after`.
    pub max_concurrent: usize,
    /// Time for one request: reading it, the engine's work, writing the answer.
    pub request_timeout: Duration,
    /// Largest answer.
    pub max_response_len: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            engine: EngineChoice::default(),
            attestation: AttestationConfig::default(),
            max_concurrent: 64,
            request_timeout: Duration::from_secs(290),
            max_response_len: 16 << 20,
        }
    }
}

/// Why an encapsulated request got no encapsulated answer (the outer HTTP status).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OuterError {
    /// Not decapsulable with this gateway's key (or malformed): 400.
    #[error("the request cannot be decapsulated")]
    Decapsulate,
    /// A request answered before, sent again (by the relay): 400.
    #[error("the request was answered before")]
    Replayed,
    /// Too many requests at once: 503, retry.
    #[error("too many requests at once")]
    Busy,
    /// No receipt can be signed (no attestation, or the chain failed): 503. An answer
    /// without its receipt is never sent.
    #[error("no receipt can be signed: {0}")]
    NoReceipt(String),
    /// The request did not arrive in time: 408.
    #[error("the request did not arrive in time")]
    RequestTimeout,
    /// The answer could not be encapsulated: 500.
    #[error("the answer cannot be encapsulated")]
    Encapsulate,
}

/// An answered request: the encapsulated response and, for the public log, its receipt.
#[derive(Debug)]
pub struct Exchange {
    /// `message/ohttp-res` body.
    pub encapsulated: Vec<u8>,
    /// The receipt's bytes.
    pub receipt: Vec<u8>,
    /// The outer `trustbridge-receipt-log` value: this receipt and any that waited.
    pub log: String,
}

/// The gateway: keys, receipt chain, attestation publisher, limits.
pub struct Gateway {
    keys: Arc<SentinelKeys>,
    receipts: ReceiptSigner,
    publisher: Publisher,
    config: GatewayConfig,
    permits: Arc<tokio::sync::Semaphore>,
    /// Receipts signed for streamed answers whose trailer never reached the relay; they
    /// go out with the next answer, so the relay's log has no gap.
    outbox: std::sync::Mutex<Vec<Vec<u8>>>,
    /// The requests answered already.
    replays: replay::ReplayGuard,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gateway({:?}, {:?})", self.config.engine, self.receipts)
    }
}

/// The inner answer before its receipt: status, fields, content, token counts.
struct Inner {
    status: u16,
    headers: Fields,
    body: Vec<u8>,
    usage: Option<Usage>,
}

impl Inner {
    /// An OpenAI-shaped error.
    fn error(status: u16, kind: &str, message: &str) -> Self {
        let body = serde_json::json!({"error": {"message": message, "type": kind, "code": status}});
        Self {
            status,
            headers: vec![(b"content-type".to_vec(), b"application/json".to_vec())],
            body: body.to_string().into_bytes(),
            usage: None,
        }
    }
}

impl Gateway {
    /// A gateway for the boot's keys.
    pub fn new(
        keys: Arc<SentinelKeys>,
        pins: Pins,
        provider: Arc<dyn AttestationProvider>,
        config: GatewayConfig,
    ) -> Self {
        Self {
            receipts: ReceiptSigner::new(keys.receipt.clone()),
            publisher: Publisher::new(keys.clone(), pins, provider, config.attestation),
            permits: Arc::new(tokio::sync::Semaphore::new(config.max_concurrent.max(1))),
            outbox: std::sync::Mutex::new(Vec::new()),
            replays: replay::ReplayGuard::default(),
            keys,
            config,
        }
    }

    /// The `application/ohttp-keys` body.
    pub fn ohttp_keys(&self) -> &[u8] {
        self.keys.gateway.keys()
    }

    /// The attestation publisher.
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// Answers one encapsulated request with `engine` serving `model`, released under
    /// the policy whose SHA-256 is `policy_digest`.
    pub async fn answer(
        &self,
        encapsulated: &[u8],
        model: &Model,
        engine: &dyn Engine,
        policy_digest: [u8; 32],
    ) -> Result<Exchange, OuterError> {
        let _permit = self.permits.try_acquire().map_err(|_| OuterError::Busy)?;
        let (plain, response) = self
            .keys
            .gateway
            .decapsulate(encapsulated)
            .map_err(|_| OuterError::Decapsulate)?;
        // Decapsulated, so a real request of a client: once only.
        let enc = replay::ReplayGuard::enc_of(encapsulated).ok_or(OuterError::Decapsulate)?;
        if !self.replays.first_time(enc) {
            return Err(OuterError::Replayed);
        }
        let model_digest = model.manifest.digest();
        // The evidence the receipt names, before any work: no receipt, no answer.
        let published = self
            .publisher
            .published(Some(model_digest))
            .await
            .map_err(|e| OuterError::NoReceipt(e.to_string()))?;
        let mut salt = [0u8; SALT_LEN];
        aws_lc_rs::rand::fill(&mut salt)
            .map_err(|_| OuterError::NoReceipt("no randomness".into()))?;
        let (nonce, inner) = match parse_request(&plain) {
            Err(inner) => (None, inner),
            Ok((nonce, m)) => (nonce, self.forward(engine, m).await),
        };
        let request_digest = salted_digest(&salt, &plain);
        let mut response_digest = SaltedDigest::new(&salt);
        response_digest.update(&inner.body);
        let receipt = self
            .receipts
            .sign(ReceiptFacts {
                nonce,
                model: model_digest,
                request_digest,
                response_digest: response_digest.finish(),
                evidence_digest: published.evidence_digest,
                measurements: published.measurements.clone(),
                policy_digest,
                status: inner.status,
                usage: inner.usage,
            })
            .map_err(|e| OuterError::NoReceipt(e.to_string()))?;
        let receipt_bytes = receipt.as_bytes().to_vec();
        let status =
            bhttp::StatusCode::try_from(inner.status).map_err(|_| OuterError::Encapsulate)?;
        let mut message = bhttp::Message::response(status);
        for (name, value) in inner.headers {
            message.put_header(name, value);
        }
        // One encoding for both: the client's header and the relay's log field.
        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&receipt_bytes);
        message.put_header(RECEIPT_HEADER, encoded.as_bytes());
        message.put_header(SALT_HEADER, hex::encode(salt));
        message.write_content(&inner.body);
        let mut bhttp_response = Vec::with_capacity(inner.body.len() + 512);
        message
            .write_bhttp(bhttp::Mode::KnownLength, &mut bhttp_response)
            .map_err(|_| OuterError::Encapsulate)?;
        let encapsulated = response
            .encapsulate(&bhttp_response)
            .map_err(|_| OuterError::Encapsulate)?;
        Ok(Exchange {
            encapsulated,
            log: self.log_value(encoded, LOG_HEADER_BUDGET),
            receipt: receipt_bytes,
        })
    }

    /// The value of a whole answer's outer receipt-log field: the receipt (`encoded`,
    /// base64url) and as many receipts waiting in the outbox as fit in `budget` bytes
    /// (base64url, comma-separated); the others wait for the next answer.
    fn log_value(&self, encoded: String, budget: usize) -> String {
        let engine = &base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut value = encoded;
        let mut outbox = self.outbox.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(next) = outbox.first() {
            if value.len() + 1 + next.len().div_ceil(3) * 4 > budget {
                break;
            }
            value.push(',');
            value.push_str(&engine.encode(outbox.remove(0)));
        }
        value
    }

    /// Keeps a receipt the relay did not get, for the next answer (at most 1024 wait).
    fn postpone(&self, receipt: Vec<u8>) {
        let mut outbox = self.outbox.lock().unwrap_or_else(|p| p.into_inner());
        if outbox.len() < 1024 {
            outbox.push(receipt);
        } else {
            tracing::error!("receipt outbox full: a receipt will be missing from the relay's log");
        }
    }

    /// The request to the engine, its whole answer back (within the time and size
    /// limits).
    async fn forward(&self, engine: &dyn Engine, m: bhttp::Message) -> Inner {
        let deadline = tokio::time::Instant::now() + self.config.request_timeout;
        let request = match api_request(&m, deadline) {
            Ok(r) => r,
            Err(inner) => return inner,
        };
        let max = self.config.max_response_len;
        let answered = tokio::time::timeout_at(deadline, async {
            let answer = engine.answer(request).await;
            let mut body = Vec::new();
            let mut pieces = answer.body;
            while let Some(piece) = pieces.next().await {
                let piece = match piece {
                    Ok(piece) => piece,
                    Err(cut) => {
                        drop(pieces);
                        return Err(Inner {
                            usage: counted(answer.usage).await,
                            ..Inner::error(cut.status, "server_error", "the answer broke off")
                        });
                    }
                };
                if body.len() + piece.len() > max {
                    return Err(Inner::error(
                        502,
                        "server_error",
                        &format!("the answer is larger than {max} bytes"),
                    ));
                }
                body.extend_from_slice(&piece);
            }
            let usage = match answer.usage {
                Some(mut counted) => counted.try_recv().ok(),
                None => usage(&body),
            };
            Ok(Inner {
                status: answer.status,
                headers: answer.headers,
                body,
                usage,
            })
        })
        .await;
        match answered {
            Ok(Ok(inner) | Err(inner)) => inner,
            Err(_) => Inner::error(504, "server_error", "the answer did not come in time"),
        }
    }
}

/// How long a stopped engine has to report what it spent.
const USAGE_WAIT: Duration = Duration::from_secs(2);

/// The tokens an engine counted for an answer, once it has stopped (it reports them at its
/// next step; at most [`USAGE_WAIT`]).
async fn counted(usage: Option<tokio::sync::oneshot::Receiver<Usage>>) -> Option<Usage> {
    tokio::time::timeout(USAGE_WAIT, usage?)
        .await
        .ok()
        .and_then(Result::ok)
}

/// The decapsulated request as Binary HTTP and its receipt nonce, or the error answer.
fn parse_request(plain: &[u8]) -> Result<(Option<Vec<u8>>, bhttp::Message), Inner> {
    match bhttp::Message::read_bhttp(&mut Cursor::new(plain)) {
        Err(_) => Err(Inner::error(
            400,
            "invalid_request_error",
            "not a Binary HTTP message",
        )),
        Ok(m) if !m.control().is_request() => Err(Inner::error(
            400,
            "invalid_request_error",
            "not a Binary HTTP request",
        )),
        Ok(m) => match client_nonce(&m) {
            Err(e) => Err(Inner::error(400, "invalid_request_error", e)),
            Ok(nonce) => Ok((nonce, m)),
        },
    }
}

/// The engine's request: method, path, header fields (the nonce field removed) and
/// content, or the error answer for a request no engine may see.
fn api_request(m: &bhttp::Message, deadline: tokio::time::Instant) -> Result<ApiRequest, Inner> {
    let (Some(method), Some(path)) = (m.control().method(), m.control().path()) else {
        return Err(Inner::error(
            400,
            "invalid_request_error",
            "the request has no method or path",
        ));
    };
    if !api_endpoint(method, path) {
        return Err(Inner::error(
            404,
            "invalid_request_error",
            "no such endpoint: GET /v1/models, POST /v1/chat/completions, /v1/completions or /v1/embeddings",
        ));
    }
    let headers = m
        .header()
        .iter()
        .filter(|f| !f.name().eq_ignore_ascii_case(NONCE_HEADER.as_bytes()))
        .map(|f| (f.name().to_vec(), f.value().to_vec()))
        .collect();
    Ok(ApiRequest {
        method: method.to_vec(),
        path: path.to_vec(),
        headers,
        body: m.content().to_vec(),
        deadline,
    })
}

/// The client's receipt nonce, if it sent one (the field name in any case, at most once).
fn client_nonce(m: &bhttp::Message) -> Result<Option<Vec<u8>>, &'static str> {
    let mut values = m
        .header()
        .iter()
        .filter(|f| f.name().eq_ignore_ascii_case(NONCE_HEADER.as_bytes()));
    let Some(v) = values.next().map(bhttp::Field::value) else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err("trustbridge-receipt-nonce may be sent once");
    }
    let nonce = std::str::from_utf8(v)
        .ok()
        .and_then(|s| hex::decode(s.trim()).ok())
        .filter(|n| trustbridge_protocol::receipt::NONCE_LEN.contains(&n.len()))
        .ok_or("trustbridge-receipt-nonce must be 8 to 64 bytes, hex")?;
    Ok(Some(nonce))
}

/// The inference API a client may reach: what answers requests, not what administers the
/// runtime (vLLM serves adapter loading and other administration under `/v1` too, which
/// would change what serves everyone while receipts name only the base model).
fn api_endpoint(method: &[u8], path: &[u8]) -> bool {
    let path = path.split(|b| *b == b'?').next().unwrap_or(path);
    matches!(
        (method, path),
        (b"GET", b"/v1/models")
            | (b"POST", b"/v1/chat/completions")
            | (b"POST", b"/v1/completions")
            | (b"POST", b"/v1/embeddings")
    )
}

/// Token counts from an OpenAI-shaped JSON answer (`usage.prompt_tokens`,
/// `usage.completion_tokens`), when it has them.
fn usage(body: &[u8]) -> Option<Usage> {
    if body.first() != Some(&b'{') {
        return None;
    }
    let u = trustbridge_protocol::json_member::top_level_member(body, "usage")?;
    Some(Usage {
        prompt_tokens: u.get("prompt_tokens")?.as_u64()?,
        // Embeddings generate nothing and report no completion tokens; a value that is
        // there must be a count.
        completion_tokens: match u.get("completion_tokens") {
            None => 0,
            Some(c) => c.as_u64()?,
        },
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn request(path: &str, headers: &[(&str, &str)]) -> bhttp::Message {
        let mut m = bhttp::Message::request(
            b"POST".to_vec(),
            b"https".to_vec(),
            b"s".to_vec(),
            path.as_bytes().to_vec(),
        );
        for (n, v) in headers {
            m.put_header(*n, *v);
        }
        m
    }

    #[test]
    fn only_the_inference_api_reaches_the_runtime() {
        assert!(api_endpoint(b"POST", b"/v1/chat/completions"));
        assert!(api_endpoint(b"POST", b"/v1/embeddings?x=1"));
        assert!(api_endpoint(b"GET", b"/v1/models"));
        for (m, p) in [
            (&b"POST"[..], &b"/v1/load_lora_adapter"[..]),
            (b"POST", b"/v1/unload_lora_adapter"),
            (b"DELETE", b"/v1/models"),
            (b"GET", b"/metrics"),
            (b"POST", b"/v1/chat/completions/../../admin"),
        ] {
            assert!(!api_endpoint(m, p), "{}", String::from_utf8_lossy(p));
        }
    }

    #[test]
    fn the_receipt_nonce_is_read_in_any_case_and_once() {
        let m = request(
            "/v1/models",
            &[("Trustbridge-Receipt-Nonce", "0011223344556677")],
        );
        assert_eq!(
            client_nonce(&m),
            Ok(Some(hex::decode("0011223344556677").unwrap()))
        );
        let twice = request(
            "/v1/models",
            &[
                ("trustbridge-receipt-nonce", "0011223344556677"),
                ("TRUSTBRIDGE-RECEIPT-NONCE", "8899aabbccddeeff"),
            ],
        );
        assert!(client_nonce(&twice).is_err());
        assert!(client_nonce(&request("/v1/models", &[(NONCE_HEADER, "00")])).is_err());
        assert_eq!(client_nonce(&request("/v1/models", &[])), Ok(None));
    }

    #[test]
    fn usage_is_taken_only_as_reported() {
        let u = usage(br#"{"usage":{"prompt_tokens":3,"completion_tokens":4}}"#).unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (3, 4));
        assert_eq!(
            usage(br#"{"usage":{"prompt_tokens":3}}"#)
                .unwrap()
                .completion_tokens,
            0
        );
        assert!(usage(br#"{"usage":{"prompt_tokens":3,"completion_tokens":"x"}}"#).is_none());
        assert!(usage(b"data: {}").is_none());
        assert!(usage(br#"{"usage":null,"id":"x"}"#).is_none());
        assert!(usage(br#"{"usage":{"prompt_tokens":-1}}"#).is_none());
        assert!(usage(br#"{"usage":{"prompt_tokens":2.5}}"#).is_none());
        assert!(usage(br#"{"usage":[3,4]}"#).is_none());
        let u = usage(br#"{"id":"x","choices":[{"a":[1,{"b":null}]}],"usage":{"completion_tokens":1,"prompt_tokens":2,"total_tokens":3}}"#).unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (2, 1));
    }
}
