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
//!   client pins (if it pins one), and a lease of 1 s to [`MAX_LEASE_SECS`]; the sealed
//!   key must open for this client's release key, asset and nonce, and be the key the
//!   broker named.
//! - Answers larger than [`MAX_ANSWER_BYTES`] are refused before they are parsed.
//! - 5xx and 429 answers are [`ReleaseClientError::Unavailable`] (worth retrying); nothing
//!   in them is believed. A signed denial of the nonce is worth retrying too
//!   ([`ReleaseClientError::is_transient`]).

use base64::Engine;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::denial::UnknownDenialCode;
use super::hpke::HpkeError;
use super::hpke::{HpkeKeyPair, release_info};
use super::messages::{
    AdminAnswer, BindingKeys, BrokerInfo, ChallengeRequest, ChallengeResponse, ErrorBody, Evidence,
    ReleaseRequest, ReleaseResponse,
};
use super::statement::{ReleaseStatement, Statement, request_digest};
use super::vocabulary::{BrokerKey, Nonce, parse32};
use super::{DenialCode, MAX_LEASE_SECS, NONCE_TTL_SECS};
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

/// Which broker answer an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The answer to a challenge request.
    Challenge,
    /// The answer to a release request.
    Release,
    /// A 403 denial.
    Denial,
    /// `GET /v1/broker`.
    BrokerInfo,
    /// The answer to an admin request.
    Admin,
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Challenge => "challenge",
            Self::Release => "release",
            Self::Denial => "denial",
            Self::BrokerInfo => "broker information",
            Self::Admin => "admin",
        })
    }
}

/// Why an answer is not believed: nothing in it is vouched for by the pinned broker key.
/// Whoever sent it (the relay answering a `CONNECT` itself, a stale or forged answer), it
/// is the same refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unauthenticated {
    /// Larger than [`MAX_ANSWER_BYTES`]: refused unread.
    #[error("an answer of {len} bytes, more than {MAX_ANSWER_BYTES}")]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// Not the JSON (or the hex inside it) that a signed answer of this kind has.
    #[error("the {answer} answer is malformed: {field}")]
    Malformed {
        /// The answer.
        answer: Answer,
        /// What is wrong with it.
        field: &'static str,
    },
    /// An HTTP 403 without a signature.
    #[error("an unsigned denial {error:?}")]
    UnsignedDenial {
        /// The reason it claims (unauthenticated, shortened).
        error: String,
    },
    /// The signature does not verify for this request under the pinned key.
    #[error("the {answer} answer is not signed by the pinned broker key {pinned} for this request")]
    BadSignature {
        /// The answer.
        answer: Answer,
        /// The pinned key.
        pinned: BrokerKey,
    },
    /// The broker information names another identity than the pinned one.
    #[error("the broker at this address has identity key {named}, not the pinned {pinned}")]
    OtherIdentity {
        /// The key it names.
        named: BrokerKey,
        /// The pinned key.
        pinned: BrokerKey,
    },
}

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
    Unauthenticated(#[from] Unauthenticated),
    /// A signed release for another provider than the one pinned.
    #[error("the broker names provider key {named}, but this client pins {pinned}")]
    WrongProvider {
        /// The pinned provider key (hex).
        pinned: String,
        /// The provider key the release names (hex).
        named: String,
    },
    /// A signed release of another asset or contract than asked for.
    #[error(
        "the key was released for {named_asset} under {named_contract}, not for {asset} under {contract}"
    )]
    WrongAsset {
        /// The asset asked for.
        asset: String,
        /// The contract asked for.
        contract: String,
        /// The asset the release names.
        named_asset: String,
        /// The contract the release names.
        named_contract: String,
    },
    /// A signed challenge that lives longer than a nonce may.
    #[error("a challenge valid for {secs} s (at most {NONCE_TTL_SECS})")]
    ChallengeTooLong {
        /// Its lifetime.
        secs: u64,
    },
    /// A signed release whose lease is 0 or longer than [`MAX_LEASE_SECS`].
    #[error("a release with a lease of {secs} s (1 to {MAX_LEASE_SECS})")]
    LeaseOutOfRange {
        /// The lease it names.
        secs: u64,
    },
    /// A signed denial with a reason code this version does not know.
    #[error("a signed denial with {0}")]
    UnknownDenialCode(#[from] UnknownDenialCode),
    /// The sealed key does not open for this client's release key, asset and nonce.
    #[error("the sealed key: {0}")]
    SealedKey(#[from] HpkeError),
    /// The sealed key opens, but is not the key the broker names.
    #[error("the sealed key has id {opened}, the broker named {named}")]
    KeyIdMismatch {
        /// The id of the key that opened.
        opened: String,
        /// The id the release names.
        named: String,
    },
    /// The caller's binding or release key is not the one this exchange needs (a bug in
    /// the caller, not the broker's doing).
    #[error("the evidence binding does not carry {0}")]
    BindingMismatch(&'static str),
    /// A request body could not be encoded.
    #[error("a request cannot be encoded as JSON")]
    RequestEncoding,
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
            Self::WrongAsset { .. }
            | Self::ChallengeTooLong { .. }
            | Self::LeaseOutOfRange { .. }
            | Self::UnknownDenialCode(_)
            | Self::SealedKey(_)
            | Self::KeyIdMismatch { .. } => "broker_protocol",
            Self::BindingMismatch(_) | Self::RequestEncoding | Self::Random => "internal",
        }
    }

    /// Whether a new attempt may succeed: an unavailable broker, or a signed denial of
    /// the nonce (`nonce_unknown_or_used`, `nonce_expired`), which the relay can cause by
    /// replaying or delaying a request, and which a fresh challenge answers.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { .. }
                | Self::Denied {
                    code: DenialCode::NonceUnknownOrUsed | DenialCode::NonceExpired,
                    ..
                }
        )
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
    /// SHA-256 of the key-release policy the broker decided under.
    pub policy_sha256: [u8; 32],
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
    serde_json::to_vec(value).map_err(|_| ReleaseClientError::RequestEncoding)
}

/// A 32-byte hex field of an answer not yet verified.
fn hex32(answer: Answer, field: &'static str, s: &str) -> Result<[u8; 32], Unauthenticated> {
    parse32(s, field).map_err(|_| Unauthenticated::Malformed { answer, field })
}

/// A hex field of an answer not yet verified.
fn hex_bytes(answer: Answer, field: &'static str, s: &str) -> Result<Vec<u8>, Unauthenticated> {
    hex::decode(s).map_err(|_| Unauthenticated::Malformed { answer, field })
}

/// Checks the hex `signature` of `answer` saying `statement`, by `broker`, for the
/// request with digest `request_sha256`.
fn check_signature(
    answer: Answer,
    statement: &Statement,
    broker: &BrokerKey,
    request_sha256: &[u8; 32],
    signature: &str,
) -> Result<(), Unauthenticated> {
    let bad = || Unauthenticated::BadSignature {
        answer,
        pinned: *broker,
    };
    let signature = hex::decode(signature).map_err(|_| bad())?;
    statement
        .verify(broker, request_sha256, &signature)
        .map_err(|_| bad())
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
    answer: Answer,
    status: u16,
    body: &[u8],
    broker: &BrokerKey,
    request_sha256: &[u8; 32],
) -> Result<T, ReleaseClientError> {
    if body.len() > MAX_ANSWER_BYTES {
        return Err(Unauthenticated::TooLarge { len: body.len() }.into());
    }
    match status {
        200 => serde_json::from_slice(body).map_err(|_| {
            Unauthenticated::Malformed {
                answer,
                field: "not the JSON of a signed answer",
            }
            .into()
        }),
        403 => {
            let err: ErrorBody =
                serde_json::from_slice(body).map_err(|_| Unauthenticated::Malformed {
                    answer: Answer::Denial,
                    field: "not the JSON of a signed denial",
                })?;
            let signature =
                err.signature
                    .as_deref()
                    .ok_or_else(|| Unauthenticated::UnsignedDenial {
                        error: shorten(err.error.as_bytes()),
                    })?;
            let statement = Statement::Denial {
                error: err.error.clone(),
                detail: err.detail.clone(),
            };
            check_signature(
                Answer::Denial,
                &statement,
                broker,
                request_sha256,
                signature,
            )?;
            Err(ReleaseClientError::Denied {
                code: err.error.parse()?,
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
        let resp: ChallengeResponse = classify(
            Answer::Challenge,
            status,
            body,
            &c.broker,
            &self.request_sha256,
        )?;
        let statement = Statement::Challenge {
            asset: c.asset.clone(),
            contract: c.contract.clone(),
            nonce: resp.nonce.as_bytes().to_vec(),
            expires_in: resp.expires_in,
        };
        check_signature(
            Answer::Challenge,
            &statement,
            &c.broker,
            &self.request_sha256,
            &resp.signature,
        )?;
        if resp.expires_in > NONCE_TTL_SECS {
            return Err(ReleaseClientError::ChallengeTooLong {
                secs: resp.expires_in,
            });
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
    /// [`Self::binding`]: this nonce and this client's pins).
    pub fn release(
        self,
        binding: &EvidenceBinding,
        evidence: &Evidence,
    ) -> Result<(Request, AwaitingRelease), ReleaseClientError> {
        if binding.nonce != self.nonce.as_bytes() {
            return Err(ReleaseClientError::BindingMismatch("the broker's nonce"));
        }
        if binding.broker_key != *self.client.broker.as_bytes()
            || binding.provider_key != self.client.provider
        {
            return Err(ReleaseClientError::BindingMismatch("this client's pins"));
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
        if release_key.public_key() != self.release_key {
            return Err(ReleaseClientError::BindingMismatch("this release key"));
        }
        let resp: ReleaseResponse = classify(
            Answer::Release,
            status,
            body,
            &c.broker,
            &self.request_sha256,
        )?;
        let a = Answer::Release;
        let release = ReleaseStatement {
            asset: resp.asset,
            contract: resp.contract,
            nonce: self.nonce.as_bytes().to_vec(),
            release_key: self.release_key,
            manifest_sha256: hex32(a, "manifest_sha256", &resp.manifest_sha256)?,
            provider_key: hex32(a, "provider_key", &resp.provider_key)?,
            key_id: resp.key_id,
            enc: hex_bytes(a, "enc", &resp.enc)?,
            ciphertext: hex_bytes(a, "ciphertext", &resp.ciphertext)?,
            lease_secs: resp.lease_secs,
            policy_sha256: hex32(a, "policy_sha256", &resp.policy_sha256)?,
        };
        check_signature(
            a,
            &Statement::Release(release.clone()),
            &c.broker,
            &self.request_sha256,
            &resp.signature,
        )?;
        // Signed, so everything below is the broker's own word.
        if !(1..=MAX_LEASE_SECS).contains(&release.lease_secs) {
            return Err(ReleaseClientError::LeaseOutOfRange {
                secs: release.lease_secs,
            });
        }
        if release.asset != c.asset || release.contract != c.contract {
            return Err(ReleaseClientError::WrongAsset {
                asset: c.asset.clone(),
                contract: c.contract.clone(),
                named_asset: release.asset,
                named_contract: release.contract,
            });
        }
        if let Some(pinned) = c.provider
            && pinned != release.provider_key
        {
            return Err(ReleaseClientError::WrongProvider {
                pinned: hex::encode(pinned),
                named: hex::encode(release.provider_key),
            });
        }
        let key = release_key.open_data_key(
            &release.enc,
            &release.ciphertext,
            &release_info(&c.asset, self.nonce.as_bytes()),
        )?;
        if key.key_id().to_string() != release.key_id {
            return Err(ReleaseClientError::KeyIdMismatch {
                opened: key.key_id().to_string(),
                named: release.key_id,
            });
        }
        Ok(Released {
            key,
            manifest_sha256: release.manifest_sha256,
            provider_key: release.provider_key,
            lease: std::time::Duration::from_secs(release.lease_secs),
            policy_sha256: release.policy_sha256,
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
///
/// The answer is a standing statement, signed once for every reader (it answers no
/// request of the reader's, so it carries no freshness): the keys it names are derived
/// from the broker's KEK and do not change; `simulation` is as of some moment and is only
/// shown, never acted on.
pub fn check_broker_info(
    broker: &BrokerKey,
    status: u16,
    body: &[u8],
) -> Result<CheckedBrokerInfo, ReleaseClientError> {
    let a = Answer::BrokerInfo;
    let request_sha256 = request_digest(b"");
    let info: BrokerInfo = classify(a, status, body, broker, &request_sha256)?;
    if info.identity_key != *broker {
        return Err(Unauthenticated::OtherIdentity {
            named: info.identity_key,
            pinned: *broker,
        }
        .into());
    }
    let checked = CheckedBrokerInfo {
        registration_key: hex32(a, "registration_key", &info.registration_key)?,
        decision_log_key: hex32(a, "decision_log_key", &info.decision_log_key)?,
        simulation: info.simulation,
    };
    let statement = Statement::Broker {
        registration_key: checked.registration_key,
        decision_log_key: checked.decision_log_key,
        simulation: checked.simulation,
    };
    check_signature(a, &statement, broker, &request_sha256, &info.signature)?;
    Ok(checked)
}

/// Checks the answer to an admin request `method path` whose signed message (what the
/// admin key signed: broker, method, path, time and body digest) is `signed_request`:
/// the request was carried out only if the broker with identity `broker` signed that it
/// was, for this very request. An answer to an earlier request, even one with the same
/// body, does not verify.
pub fn check_admin_answer(
    broker: &BrokerKey,
    method: &str,
    path: &str,
    signed_request: &[u8],
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
        return Err(Unauthenticated::TooLarge { len: answer.len() }.into());
    }
    let done: AdminAnswer =
        serde_json::from_slice(answer).map_err(|_| Unauthenticated::Malformed {
            answer: Answer::Admin,
            field: "not the JSON of a signed admin answer",
        })?;
    let statement = Statement::Admin {
        method: method.to_owned(),
        path: path.to_owned(),
    };
    check_signature(
        Answer::Admin,
        &statement,
        broker,
        &request_digest(signed_request),
        &done.signature,
    )?;
    Ok(())
}
