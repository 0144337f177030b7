//! A blocking client for the broker's API: what `trustbridge`, the demo and tests use.
//!
//! It pins the broker's identity key ([`KmsClient::new`]) and drives the one key-release
//! engine ([`trustbridge_protocol::key_release::client`]), so it makes exactly the checks
//! the sentinel makes. Admin requests are signed for the pinned broker; the registration
//! key a data key is sealed to is believed only when the identity key signs it.

use std::io::Read;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde::Serialize;
use trustbridge_protocol::binding::EvidenceBinding;
use trustbridge_protocol::key_release::client::{
    BROKER_INFO_PATH, BoundKeys, Challenged, CheckedBrokerInfo, MAX_ANSWER_BYTES, Request,
    check_admin_answer, check_broker_info,
};
pub use trustbridge_protocol::key_release::{BrokerKey, Evidence, ReleaseClientError, Released};
use trustbridge_protocol::key_release::{
    ErrorBody, HpkeKeyPair, REGISTER_INFO_LABEL, ReleaseClient, hpke_info, seal_data_key,
};
use trustbridge_protocol::sealed::DataKey;

use crate::broker::admin_auth::{sign_request, signing_message};
use crate::broker::{ContractRequest, RegisterAssetRequest};

/// A broker call that produced no result.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The key-release exchange failed: a (signed) denial, an unauthenticated answer, an
    /// unavailable broker, ...
    #[error(transparent)]
    Release(#[from] ReleaseClientError),
    /// An admin request was refused (the answer is unauthenticated).
    #[error("broker answered HTTP {status}: {code}: {detail}")]
    Http {
        /// HTTP status.
        status: u16,
        /// Error code from the body.
        code: String,
        /// Detail from the body.
        detail: String,
    },
    /// The broker could not be reached.
    #[error("cannot reach the broker: {0}")]
    Transport(#[source] Box<ureq::Error>),
    /// The broker's answer could not be read.
    #[error("cannot read the broker's answer: {0}")]
    Read(#[source] std::io::Error),
    /// The evidence producer failed (its own message).
    #[error("evidence: {0}")]
    Evidence(String),
    /// The data key could not be sealed to the registration key.
    #[error("cannot seal the data key to the broker: {0}")]
    Seal(#[from] trustbridge_protocol::key_release::HpkeError),
    /// A request body could not be encoded.
    #[error("cannot encode the request: {0}")]
    Encoding(#[from] serde_json::Error),
}

impl ClientError {
    /// The broker's reason code when it denied the request (a signed denial).
    pub fn denial_code(&self) -> Option<&'static str> {
        match self {
            Self::Release(ReleaseClientError::Denied { code, .. }) => Some(code.as_str()),
            _ => None,
        }
    }
}

/// Produces an Ed25519 signature over a message.
pub type SignFn = Box<dyn Fn(&[u8]) -> [u8; 64] + Send + Sync>;

/// Signs admin requests with an Ed25519 key.
pub struct AdminSigner {
    /// The admin public key.
    pub public_key: [u8; 32],
    /// Produces an Ed25519 signature.
    pub sign: SignFn,
}

impl std::fmt::Debug for AdminSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AdminSigner({})", hex::encode(self.public_key))
    }
}

/// A client for one broker, whose identity key it pins.
#[derive(Debug, Clone)]
pub struct KmsClient {
    base: String,
    agent: ureq::Agent,
    broker: BrokerKey,
    provider: Option<[u8; 32]>,
}

impl KmsClient {
    /// A client for the broker at `base_url` (e.g. `http://127.0.0.1:7443`) whose identity
    /// key is `broker` (`tb-kms identity`, `GET /v1/broker` of a broker you trust).
    pub fn new(base_url: &str, broker: BrokerKey) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Self {
            base: base_url.trim_end_matches('/').to_owned(),
            agent,
            broker,
            provider: None,
        }
    }

    /// Also pins the provider key a release must name.
    pub fn pin_provider(mut self, provider: [u8; 32]) -> Self {
        self.provider = Some(provider);
        self
    }

    /// The pinned broker identity key.
    pub fn broker_key(&self) -> &BrokerKey {
        &self.broker
    }

    fn read(
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let mut resp = resp.map_err(|e| ClientError::Transport(Box::new(e)))?;
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        // One byte past the limit, so an oversized answer is seen as such.
        resp.body_mut()
            .as_reader()
            .take(MAX_ANSWER_BYTES as u64 + 1)
            .read_to_end(&mut body)
            .map_err(ClientError::Read)?;
        Ok((status, body))
    }

    /// `POST path` with a JSON `body`: the status and up to [`MAX_ANSWER_BYTES`] (plus
    /// one) of the answer, unchecked. The building block of every call.
    pub fn send(&self, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>), ClientError> {
        Self::read(
            self.agent
                .post(&format!("{}{path}", self.base))
                .header("content-type", "application/json")
                .send(body),
        )
    }

    fn send_request(&self, request: &Request) -> Result<(u16, Vec<u8>), ClientError> {
        self.send(request.path, &request.body)
    }

    /// `GET /v1/broker`, checked against the pinned identity key.
    pub fn info(&self) -> Result<CheckedBrokerInfo, ClientError> {
        let (status, body) = Self::read(
            self.agent
                .get(&format!("{}{BROKER_INFO_PATH}", self.base))
                .call(),
        )?;
        Ok(check_broker_info(&self.broker, status, &body)?)
    }

    fn release_client(&self, asset: &str, contract: &str) -> ReleaseClient {
        ReleaseClient::new(self.broker, self.provider, asset, contract)
    }

    /// `POST /v1/key-release/challenge`: a nonce signed by the pinned broker for this
    /// request.
    pub fn challenge(&self, asset: &str, contract: &str) -> Result<Challenged, ClientError> {
        let (request, awaiting) = self.release_client(asset, contract).challenge()?;
        let (status, body) = self.send_request(&request)?;
        Ok(awaiting.answer(status, &body)?)
    }

    /// Performs a key release exactly as a sentinel does: fresh key-release and receipt
    /// keys, a challenge, evidence that binds them and the pins (`evidence` builds it for
    /// the binding), the release, and every check on the answers. Returns the released
    /// key, manifest digest and provider key.
    pub fn release_with_evidence(
        &self,
        asset: &str,
        contract: &str,
        ohttp_keys_sha256: [u8; 32],
        evidence: impl FnOnce(&EvidenceBinding) -> Result<Evidence, String>,
    ) -> Result<Released, ClientError> {
        let release_key = HpkeKeyPair::generate().map_err(|_| ReleaseClientError::Random)?;
        let mut receipt_key = [0u8; 32];
        aws_lc_rs::rand::fill(&mut receipt_key).map_err(|_| ReleaseClientError::Random)?;
        let challenged = self.challenge(asset, contract)?;
        let binding = challenged.binding(&BoundKeys {
            ohttp_keys_sha256,
            receipt_key,
            release_key: release_key.public_key(),
        });
        let evidence = evidence(&binding).map_err(ClientError::Evidence)?;
        let (request, awaiting) = challenged.release(&binding, &evidence)?;
        let (status, body) = self.send_request(&request)?;
        Ok(awaiting.answer(status, &body, &release_key)?)
    }

    fn admin(
        &self,
        method: &'static str,
        path: &str,
        body: Vec<u8>,
        signer: &AdminSigner,
    ) -> Result<(), ClientError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let headers = sign_request(
            &self.broker,
            &signer.public_key,
            &signer.sign,
            method,
            path,
            now,
            &body,
        );
        let url = format!("{}{path}", self.base);
        let mut req = match method {
            "PUT" => self.agent.put(&url),
            _ => self.agent.post(&url),
        };
        for (name, value) in headers {
            req = req.header(name, value);
        }
        let (status, answer) = Self::read(req.send(&body[..]))?;
        if status == 200 {
            // Done only if the broker says so, signed for this request (its signed
            // message, time included): a network that drops the request cannot answer in
            // its place, not even with the answer to an earlier request with this body.
            let signed = signing_message(&self.broker, method, path, now, &body);
            return Ok(check_admin_answer(
                &self.broker,
                method,
                path,
                &signed,
                status,
                &answer,
            )?);
        }
        let err: ErrorBody = serde_json::from_slice(&answer).unwrap_or_else(|_| ErrorBody {
            error: "unknown".into(),
            detail: String::from_utf8_lossy(&answer).chars().take(200).collect(),
            signature: None,
        });
        Err(ClientError::Http {
            status,
            code: err.error,
            detail: err.detail,
        })
    }

    /// Registers an asset: `manifest.cose` and its data key, sealed to the broker's
    /// registration key, which the pinned identity key must vouch for.
    pub fn register_asset(
        &self,
        asset: &str,
        manifest: &[u8],
        key: &DataKey,
        signer: &AdminSigner,
    ) -> Result<(), ClientError> {
        let info = self.info()?;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, manifest);
        let (enc, ct) = seal_data_key(
            &info.registration_key,
            &hpke_info(REGISTER_INFO_LABEL, asset, digest.as_ref()),
            key,
        )?;
        let body = RegisterAssetRequest {
            asset: asset.to_owned(),
            manifest: base64::engine::general_purpose::STANDARD.encode(manifest),
            enc: hex::encode(enc),
            ciphertext: hex::encode(ct),
        };
        self.admin("POST", "/v1/admin/assets", json(&body)?, signer)
    }

    /// Adds a contract.
    pub fn add_contract(
        &self,
        contract: &ContractRequest,
        signer: &AdminSigner,
    ) -> Result<(), ClientError> {
        self.admin("POST", "/v1/admin/contracts", json(contract)?, signer)
    }

    /// Revokes a contract.
    pub fn revoke_contract(&self, id: &str, signer: &AdminSigner) -> Result<(), ClientError> {
        self.admin(
            "POST",
            &format!("/v1/admin/contracts/{id}/revoke"),
            Vec::new(),
            signer,
        )
    }

    /// Replaces the broker's policy.
    pub fn replace_policy(&self, toml: &str, signer: &AdminSigner) -> Result<(), ClientError> {
        self.admin("PUT", "/v1/admin/policy", toml.as_bytes().to_vec(), signer)
    }
}

fn json<T: Serialize>(v: &T) -> Result<Vec<u8>, ClientError> {
    Ok(serde_json::to_vec(v)?)
}
