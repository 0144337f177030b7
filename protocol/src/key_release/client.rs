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

pub use super::answer::{Answer, ReleaseClientError, Unauthenticated};
use super::answer::{check_signature, classify, hex_bytes, hex32};
pub use super::broker_info::{CheckedBrokerInfo, check_admin_answer, check_broker_info};
use super::hpke::{HpkeKeyPair, release_info};
use super::messages::{
    BindingKeys, ChallengeRequest, ChallengeResponse, Evidence, ReleaseRequest, ReleaseResponse,
};
use super::statement::{ReleaseStatement, Statement, request_digest};
use super::vocabulary::{BrokerKey, Nonce};
use super::{MAX_LEASE_SECS, NONCE_TTL_SECS};
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
