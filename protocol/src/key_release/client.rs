//! The client side of a key release, as one I/O-free state machine.
//!
//! The sentinel (async, through the relay's egress tunnel) and the blocking CLI client
//! both drive this engine; they only move bytes. Every check a client makes on the
//! broker's answers is here, once:
//!
//! ```text
//! ReleaseClient ──challenge()──▶ AwaitingChallenge ──answer()──▶ Challenged
//!      Challenged ──release()──▶ AwaitingRelease ──answer()──▶ Released
//! ```
//!
//! - Every answer the client acts on (a challenge, a release, a denial) must carry the
//!   pinned broker key's signature over its fields and the digest of the request it
//!   answers ([`super::statement`]). Anything else is
//!   [`ReleaseClientError::Unauthenticated`], whoever sent it: a relay that answers the
//!   `CONNECT` itself cannot forge a key, a manifest, a provider or a denial.
//! - A release must name the asset and contract asked for, and the provider key the
//!   client pins (if it pins one); the sealed key must open for this client's release key,
//!   asset and nonce, and be the key the broker named.
//! - Answers larger than [`MAX_ANSWER_BYTES`] are refused before they are parsed.
//! - 5xx and 429 answers are [`ReleaseClientError::Unavailable`] (worth retrying); nothing
//!   in them is believed.

use base64::Engine;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::hpke::{HpkeKeyPair, release_info};
use super::messages::{
    AdminAnswer, BindingKeys, BrokerInfo, ChallengeRequest, ChallengeResponse, ErrorBody, Evidence,
    ReleaseRequest, ReleaseResponse,
};
use super::statement::{Statement, request_digest};
use super::vocabulary::{BrokerKey, Nonce};
use super::{DenialCode, NONCE_TTL_SECS};
use crate::binding::EvidenceBinding;
use crate::sealed::DataKey;

/// Largest broker answer a client reads.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Path of the challenge request.
pub const CHALLENGE_PATH: &str = "/v1/key-release/challenge";
/// Path of the release request.
pub const RELEASE_PATH: &str = "/v1/key-release";
/// Path of the broker information.
pub const BROKER_INFO_PATH: &str = "/v1/broker";

/// Why a key release produced no key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReleaseClientError {
    /// The broker denied it; the denial is signed by the pinned broker key.
    #[error("denied: {code}: {detail}")]
    Denied {
        /// The reason code.
        code: DenialCode,
        /// The broker's detail.
        detail: String,
    },
    /// A 5xx or 429 answer, or no answer: worth retrying. Nothing in it is believed.
    #[error("broker unavailable (HTTP {status}): {detail}")]
    Unavailable {
        /// HTTP status.
        status: u16,
        /// What the answer said (unauthenticated, shortened).
        detail: String,
    },
    /// Another unsigned HTTP error (e.g. 400 for a malformed request): not worth retrying.
    #[error("the broker rejected the request (HTTP {status}): {detail}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// What the answer said (unauthenticated, shortened).
        detail: String,
    },
    /// An answer that the pinned broker key did not sign for this request.
    #[error("answer not authenticated by the pinned broker key: {0}")]
    Unauthenticated(String),
    /// A signed release for another provider than the one pinned.
    #[error("the broker names provider key {named}, but this client pins {pinned}")]
    WrongProvider {
        /// The pinned provider key (hex).
        pinned: String,
        /// The provider key the release names (hex).
        named: String,
    },
    /// A malformed or unusable answer, or a request that cannot be built.
    #[error("key release protocol error: {0}")]
    Protocol(String),
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
}

impl ReleaseClientError {
    /// The reason code (the broker's denial code for a denial).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Denied { code, .. } => code.as_str(),
            Self::Unavailable { .. } => "unavailable",
            Self::Rejected { .. } => "broker_rejected",
            Self::Unauthenticated(_) => "broker_unauthenticated",
            Self::WrongProvider { .. } => "wrong_provider",
            Self::Protocol(_) => "broker_protocol",
            Self::Random => "internal",
        }
    }

    /// Whether retrying may help (an unavailable broker).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// A request for the transport to send: `POST path` with this JSON body, exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The path.
    pub path: &'static str,
    /// The JSON body (its digest is what the broker's answer must cover).
    pub body: Vec<u8>,
}

/// The public keys of a sentinel (or a one-shot client) that its evidence binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundKeys {
    /// SHA-256 of the OHTTP gateway key configuration.
    pub ohttp_keys_sha256: [u8; 32],
    /// The Ed25519 receipt key.
    pub receipt_key: [u8; 32],
    /// The X25519 key the data key is sealed to.
    pub release_key: [u8; 32],
}

/// What a release yields, every field authenticated by the pinned broker key.
pub struct Released {
    /// The model's data key.
    pub key: DataKey,
    /// SHA-256 of the asset's `manifest.cose`.
    pub manifest_sha256: [u8; 32],
    /// The provider's Ed25519 public key.
    pub provider_key: [u8; 32],
    /// How long the release is good for: the sentinel must be authorized again within
    /// it or stop serving.
    pub lease: std::time::Duration,
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

/// A key release for one asset under one contract, from the broker whose identity key is
/// pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseClient {
    broker: BrokerKey,
    provider: Option<[u8; 32]>,
    asset: String,
    contract: String,
}

/// A challenge request is out; its answer is awaited.
#[derive(Debug)]
pub struct AwaitingChallenge {
    client: ReleaseClient,
    request_sha256: [u8; 32],
}

/// The broker issued a nonce.
#[derive(Debug)]
pub struct Challenged {
    client: ReleaseClient,
    nonce: Nonce,
}

/// A release request is out; its answer is awaited.
#[derive(Debug)]
pub struct AwaitingRelease {
    client: ReleaseClient,
    nonce: Nonce,
    release_key: [u8; 32],
    request_sha256: [u8; 32],
}

fn json<T: Serialize>(value: &T) -> Result<Vec<u8>, ReleaseClientError> {
    serde_json::to_vec(value).map_err(|e| ReleaseClientError::Protocol(e.to_string()))
}

fn hex32(field: &str, s: &str) -> Result<[u8; 32], ReleaseClientError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out)
        .map_err(|_| ReleaseClientError::Protocol(format!("{field} is not 32 bytes of hex")))?;
    Ok(out)
}

fn hex_bytes(field: &str, s: &str) -> Result<Vec<u8>, ReleaseClientError> {
    hex::decode(s).map_err(|_| ReleaseClientError::Protocol(format!("{field} is not hex")))
}

/// Text from an unauthenticated party, made safe to log: printable, at most 200 chars.
fn shorten(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect()
}

/// Sorts an answer: the 200 body to check, or the error it stands for. A 403 must be a
/// denial signed by `broker` for the request with digest `request_sha256`.
fn classify<T: DeserializeOwned>(
    status: u16,
    body: &[u8],
    broker: &BrokerKey,
    request_sha256: &[u8; 32],
) -> Result<T, ReleaseClientError> {
    if body.len() > MAX_ANSWER_BYTES {
        return Err(ReleaseClientError::Protocol(format!(
            "answer of {} bytes exceeds {MAX_ANSWER_BYTES}",
            body.len()
        )));
    }
    match status {
        200 => serde_json::from_slice(body).map_err(|e| {
            ReleaseClientError::Protocol(format!("answer is not the expected JSON: {e}"))
        }),
        403 => {
            let err: ErrorBody = serde_json::from_slice(body).map_err(|_| {
                ReleaseClientError::Unauthenticated(format!(
                    "HTTP 403 that is no signed denial: {}",
                    shorten(body)
                ))
            })?;
            let signature = err.signature.as_deref().ok_or_else(|| {
                ReleaseClientError::Unauthenticated(format!(
                    "unsigned denial {:?}",
                    shorten(err.error.as_bytes())
                ))
            })?;
            let statement = Statement::Denial {
                error: err.error.clone(),
                detail: err.detail.clone(),
            };
            let signature = hex::decode(signature).unwrap_or_default();
            statement
                .verify(broker, request_sha256, &signature)
                .map_err(|e| {
                    ReleaseClientError::Unauthenticated(format!(
                        "denial {:?}: {e}",
                        shorten(err.error.as_bytes())
                    ))
                })?;
            let code = err.error.parse().map_err(|_| {
                ReleaseClientError::Protocol(format!("unknown denial code {:?}", err.error))
            })?;
            Err(ReleaseClientError::Denied {
                code,
                detail: err.detail,
            })
        }
        429 | 500..=599 => Err(ReleaseClientError::Unavailable {
            status,
            detail: shorten(body),
        }),
        _ => Err(ReleaseClientError::Rejected {
            status,
            detail: shorten(body),
        }),
    }
}

impl ReleaseClient {
    /// A release of `asset` under `contract` from the broker with identity `broker`;
    /// `provider` pins the provider key the release must name.
    pub fn new(
        broker: BrokerKey,
        provider: Option<[u8; 32]>,
        asset: impl Into<String>,
        contract: impl Into<String>,
    ) -> Self {
        Self {
            broker,
            provider,
            asset: asset.into(),
            contract: contract.into(),
        }
    }

    /// The pinned broker key.
    pub fn broker_key(&self) -> &BrokerKey {
        &self.broker
    }

    /// The pinned provider key.
    pub fn provider_key(&self) -> Option<[u8; 32]> {
        self.provider
    }

    /// The evidence binding of `keys` and `nonce` with this client's pins: what its
    /// evidence must carry.
    pub fn binding(&self, keys: &BoundKeys, nonce: &[u8]) -> EvidenceBinding {
        EvidenceBinding {
            nonce: nonce.to_vec(),
            ohttp_keys_sha256: keys.ohttp_keys_sha256,
            receipt_key: keys.receipt_key,
            release_key: keys.release_key,
            broker_key: *self.broker.as_bytes(),
            provider_key: self.provider,
            manifest_sha256: None,
        }
    }

    /// Step 1: the challenge request, with a fresh client nonce.
    pub fn challenge(&self) -> Result<(Request, AwaitingChallenge), ReleaseClientError> {
        let body = json(&ChallengeRequest {
            asset: self.asset.clone(),
            contract: self.contract.clone(),
            client_nonce: Nonce::random().map_err(|_| ReleaseClientError::Random)?,
        })?;
        let request_sha256 = request_digest(&body);
        Ok((
            Request {
                path: CHALLENGE_PATH,
                body,
            },
            AwaitingChallenge {
                client: self.clone(),
                request_sha256,
            },
        ))
    }
}

impl AwaitingChallenge {
    /// Step 2: the broker's answer to the challenge request.
    pub fn answer(self, status: u16, body: &[u8]) -> Result<Challenged, ReleaseClientError> {
        let c = &self.client;
        let resp: ChallengeResponse = classify(status, body, &c.broker, &self.request_sha256)?;
        let statement = Statement::Challenge {
            asset: c.asset.clone(),
            contract: c.contract.clone(),
            nonce: resp.nonce.as_bytes().to_vec(),
            expires_in: resp.expires_in,
        };
        let signature = hex::decode(&resp.signature).unwrap_or_default();
        statement
            .verify(&c.broker, &self.request_sha256, &signature)
            .map_err(|e| ReleaseClientError::Unauthenticated(format!("challenge: {e}")))?;
        if resp.expires_in > NONCE_TTL_SECS {
            return Err(ReleaseClientError::Protocol(format!(
                "a challenge valid for {} s (at most {NONCE_TTL_SECS})",
                resp.expires_in
            )));
        }
        Ok(Challenged {
            client: self.client,
            nonce: resp.nonce,
        })
    }
}

impl Challenged {
    /// The broker's nonce.
    pub fn nonce(&self) -> &Nonce {
        &self.nonce
    }

    /// The evidence binding of `keys`, this nonce and the client's pins.
    pub fn binding(&self, keys: &BoundKeys) -> EvidenceBinding {
        self.client.binding(keys, self.nonce.as_bytes())
    }

    /// Step 3: the release request carrying `evidence`, which must carry `binding` (from
    /// [`Self::binding`]).
    pub fn release(
        self,
        binding: &EvidenceBinding,
        evidence: &Evidence,
    ) -> Result<(Request, AwaitingRelease), ReleaseClientError> {
        if binding.nonce != self.nonce.as_bytes() {
            return Err(ReleaseClientError::Protocol(
                "the binding does not carry the broker's nonce".into(),
            ));
        }
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let body = json(&ReleaseRequest {
            nonce: self.nonce,
            platform: evidence.platform,
            evidence: b64(&evidence.bytes),
            certificates: evidence.certificates.iter().map(|c| b64(c)).collect(),
            binding: BindingKeys::from_binding(binding),
        })?;
        let request_sha256 = request_digest(&body);
        Ok((
            Request {
                path: RELEASE_PATH,
                body,
            },
            AwaitingRelease {
                client: self.client,
                nonce: self.nonce,
                release_key: binding.release_key,
                request_sha256,
            },
        ))
    }
}

impl AwaitingRelease {
    /// Step 4: the broker's answer; opens the data key with `release_key` (the key whose
    /// public half the binding carries).
    pub fn answer(
        self,
        status: u16,
        body: &[u8],
        release_key: &HpkeKeyPair,
    ) -> Result<Released, ReleaseClientError> {
        let c = &self.client;
        let resp: ReleaseResponse = classify(status, body, &c.broker, &self.request_sha256)?;
        let statement = Statement::Release {
            asset: resp.asset.clone(),
            contract: resp.contract.clone(),
            nonce: self.nonce.as_bytes().to_vec(),
            release_key: self.release_key,
            manifest_sha256: hex32("manifest_sha256", &resp.manifest_sha256)?,
            provider_key: hex32("provider_key", &resp.provider_key)?,
            key_id: resp.key_id.clone(),
            enc: hex_bytes("enc", &resp.enc)?,
            ciphertext: hex_bytes("ciphertext", &resp.ciphertext)?,
            lease_secs: resp.lease_secs,
        };
        let signature = hex::decode(&resp.signature).unwrap_or_default();
        statement
            .verify(&c.broker, &self.request_sha256, &signature)
            .map_err(|e| ReleaseClientError::Unauthenticated(format!("release: {e}")))?;
        let Statement::Release {
            manifest_sha256,
            provider_key,
            enc,
            ciphertext,
            ..
        } = statement
        else {
            unreachable!("built as a release statement above")
        };
        if resp.lease_secs == 0 {
            return Err(ReleaseClientError::Protocol(
                "a release with a lease of 0 s".into(),
            ));
        }
        if resp.asset != c.asset || resp.contract != c.contract {
            return Err(ReleaseClientError::Protocol(format!(
                "the key was released for asset {} under contract {}, not {} under {}",
                resp.asset, resp.contract, c.asset, c.contract
            )));
        }
        if let Some(pinned) = c.provider {
            if pinned != provider_key {
                return Err(ReleaseClientError::WrongProvider {
                    pinned: hex::encode(pinned),
                    named: hex::encode(provider_key),
                });
            }
        }
        if release_key.public_key() != self.release_key {
            return Err(ReleaseClientError::Protocol(
                "the release key is not the one the binding carries".into(),
            ));
        }
        let key = release_key
            .open_data_key(
                &enc,
                &ciphertext,
                &release_info(&c.asset, self.nonce.as_bytes()),
            )
            .map_err(|e| ReleaseClientError::Protocol(format!("the sealed key: {e}")))?;
        if key.key_id().to_string() != resp.key_id {
            return Err(ReleaseClientError::Protocol(format!(
                "the sealed key has id {}, the broker named {}",
                key.key_id(),
                resp.key_id
            )));
        }
        Ok(Released {
            key,
            manifest_sha256,
            provider_key,
            lease: std::time::Duration::from_secs(resp.lease_secs),
        })
    }
}

/// The broker's public keys, authenticated by its identity key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckedBrokerInfo {
    /// The X25519 key providers seal data keys to at registration.
    pub registration_key: [u8; 32],
    /// The Ed25519 key that signs the decision log.
    pub decision_log_key: [u8; 32],
    /// Whether the policy accepts simulated evidence.
    pub simulation: bool,
}

/// Checks a `GET /v1/broker` answer against the pinned identity key `broker`.
pub fn check_broker_info(
    broker: &BrokerKey,
    status: u16,
    body: &[u8],
) -> Result<CheckedBrokerInfo, ReleaseClientError> {
    let request_sha256 = request_digest(b"");
    let info: BrokerInfo = classify(status, body, broker, &request_sha256)?;
    if info.identity_key != *broker {
        return Err(ReleaseClientError::Unauthenticated(format!(
            "the broker at this address has identity key {}, not the pinned {broker}",
            info.identity_key
        )));
    }
    let checked = CheckedBrokerInfo {
        registration_key: hex32("registration_key", &info.registration_key)?,
        decision_log_key: hex32("decision_log_key", &info.decision_log_key)?,
        simulation: info.simulation,
    };
    let statement = Statement::Broker {
        registration_key: checked.registration_key,
        decision_log_key: checked.decision_log_key,
        simulation: checked.simulation,
    };
    let signature = hex::decode(&info.signature).unwrap_or_default();
    statement
        .verify(broker, &request_sha256, &signature)
        .map_err(|e| ReleaseClientError::Unauthenticated(format!("broker information: {e}")))?;
    Ok(checked)
}

/// Checks the answer to an admin request (`method path` with body `body`): done only if
/// the broker with identity `broker` signed it for this very request.
pub fn check_admin_answer(
    broker: &BrokerKey,
    method: &str,
    path: &str,
    body: &[u8],
    status: u16,
    answer: &[u8],
) -> Result<(), ReleaseClientError> {
    if status != 200 {
        return Err(ReleaseClientError::Rejected {
            status,
            detail: shorten(answer),
        });
    }
    if answer.len() > MAX_ANSWER_BYTES {
        return Err(ReleaseClientError::Protocol(
            "admin answer too large".into(),
        ));
    }
    let done: AdminAnswer = serde_json::from_slice(answer)
        .map_err(|e| ReleaseClientError::Unauthenticated(format!("admin answer: {e}")))?;
    let signature = hex::decode(&done.signature).unwrap_or_default();
    Statement::Admin {
        method: method.to_owned(),
        path: path.to_owned(),
    }
    .verify(broker, &request_digest(body), &signature)
    .map_err(|e| ReleaseClientError::Unauthenticated(format!("admin answer: {e}")))?;
    if !done.ok {
        return Err(ReleaseClientError::Protocol(
            "admin answer says not ok".into(),
        ));
    }
    Ok(())
}
