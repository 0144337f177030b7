//! A blocking client for the broker's API: what a sentinel, `trustbridge` and tests use.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde::Serialize;
use serde::de::DeserializeOwned;
use trustbridge_protocol::binding::EvidenceBinding;
pub use trustbridge_protocol::key_release::Evidence;
use trustbridge_protocol::key_release::{
    BindingKeys, ChallengeRequest, ChallengeResponse, ErrorBody, HpkeKeyPair, ReleaseRequest,
    ReleaseResponse, release_info,
};
use trustbridge_protocol::sealed::DataKey;

use crate::broker::admin_auth::sign_request;
use crate::broker::{BrokerInfo, ContractRequest, RegisterAssetRequest};

/// A broker call that produced no result.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The broker denied the request (HTTP 403) with a reason code.
    #[error("denied: {code}: {detail}")]
    Denied {
        /// The reason code, e.g. `measurement_mismatch`.
        code: String,
        /// The broker's detail.
        detail: String,
    },
    /// Any other HTTP error answer.
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
    Transport(String),
    /// The answer was not what the API promises.
    #[error("unexpected answer from the broker: {0}")]
    Protocol(String),
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

/// A client for one broker.
#[derive(Debug, Clone)]
pub struct KmsClient {
    base: String,
    agent: ureq::Agent,
}

impl KmsClient {
    /// A client for the broker at `base_url` (e.g. `http://127.0.0.1:7443`).
    pub fn new(base_url: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Self {
            base: base_url.trim_end_matches('/').to_owned(),
            agent,
        }
    }

    fn answer<T: DeserializeOwned>(
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T, ClientError> {
        let mut resp = resp.map_err(|e| ClientError::Transport(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .read_to_vec()
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        if status == 200 {
            return serde_json::from_slice(&body).map_err(|e| ClientError::Protocol(e.to_string()));
        }
        let err: ErrorBody = serde_json::from_slice(&body).unwrap_or_else(|_| ErrorBody {
            error: "unknown".into(),
            detail: String::from_utf8_lossy(&body).chars().take(200).collect(),
        });
        if status == 403 {
            return Err(ClientError::Denied {
                code: err.error,
                detail: err.detail,
            });
        }
        Err(ClientError::Http {
            status,
            code: err.error,
            detail: err.detail,
        })
    }

    fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Protocol(e.to_string()))?;
        Self::answer(
            self.agent
                .post(&format!("{}{path}", self.base))
                .header("content-type", "application/json")
                .send(&bytes[..]),
        )
    }

    /// `GET /v1/broker`.
    pub fn info(&self) -> Result<BrokerInfo, ClientError> {
        Self::answer(self.agent.get(&format!("{}/v1/broker", self.base)).call())
    }

    /// `POST /v1/key-release/challenge`.
    pub fn challenge(&self, asset: &str, contract: &str) -> Result<ChallengeResponse, ClientError> {
        self.post(
            "/v1/key-release/challenge",
            &ChallengeRequest {
                asset: asset.to_owned(),
                contract: contract.to_owned(),
            },
        )
    }

    /// `POST /v1/key-release`.
    pub fn release(&self, req: &ReleaseRequest) -> Result<ReleaseResponse, ClientError> {
        self.post("/v1/key-release", req)
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
        let headers = sign_request(&signer.public_key, &signer.sign, method, path, now, &body);
        let url = format!("{}{path}", self.base);
        let mut req = match method {
            "PUT" => self.agent.put(&url),
            _ => self.agent.post(&url),
        };
        for (name, value) in headers {
            req = req.header(name, value);
        }
        let _: serde_json::Value = Self::answer(req.send(&body[..]))?;
        Ok(())
    }

    /// Registers an asset: `manifest.cose` and its data key, sealed to the broker's
    /// registration key (fetched from the broker).
    pub fn register_asset(
        &self,
        asset: &str,
        manifest: &[u8],
        key: &DataKey,
        signer: &AdminSigner,
    ) -> Result<(), ClientError> {
        use trustbridge_protocol::key_release::{REGISTER_INFO_LABEL, hpke_info, seal_data_key};
        let info = self.info()?;
        let mut reg = [0u8; 32];
        hex::decode_to_slice(&info.registration_key, &mut reg)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, manifest);
        let (enc, ct) = seal_data_key(
            &reg,
            &hpke_info(REGISTER_INFO_LABEL, asset, digest.as_ref()),
            key,
        )
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
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

    /// Performs a key release exactly as a sentinel does: fresh key-release and receipt keys,
    /// a challenge, evidence that binds them (`evidence` builds it for the binding and
    /// returns the platform, the evidence and any certificates), the release, and opening
    /// the sealed key. Returns the data key and the broker's answer.
    pub fn release_with_evidence(
        &self,
        asset: &str,
        contract: &str,
        ohttp_keys_sha256: [u8; 32],
        evidence: impl FnOnce(&EvidenceBinding) -> Result<Evidence, String>,
    ) -> Result<(DataKey, ReleaseResponse), ClientError> {
        let release_key =
            HpkeKeyPair::generate().map_err(|e| ClientError::Protocol(e.to_string()))?;
        let mut receipt_key = [0u8; 32];
        aws_lc_rs::rand::fill(&mut receipt_key)
            .map_err(|_| ClientError::Protocol("random number generator failed".into()))?;
        let challenge = self.challenge(asset, contract)?;
        let nonce =
            hex::decode(&challenge.nonce).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let binding = EvidenceBinding {
            nonce: nonce.clone(),
            ohttp_keys_sha256,
            receipt_key,
            release_key: release_key.public_key(),
        };
        let Evidence {
            platform,
            bytes,
            certificates: certs,
        } = evidence(&binding).map_err(ClientError::Protocol)?;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let req = ReleaseRequest {
            nonce: challenge.nonce,
            platform,
            evidence: b64(&bytes),
            certificates: certs.iter().map(|c| b64(c)).collect(),
            binding: BindingKeys {
                ohttp_keys_sha256: hex::encode(ohttp_keys_sha256),
                receipt_key: hex::encode(receipt_key),
                release_key: hex::encode(release_key.public_key()),
            },
        };
        let resp = self.release(&req)?;
        if resp.asset != asset {
            return Err(ClientError::Protocol(format!(
                "released key is for asset {}, not {asset}",
                resp.asset
            )));
        }
        let enc = hex::decode(&resp.enc).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let ct = hex::decode(&resp.ciphertext).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let key = release_key
            .open_data_key(&enc, &ct, &release_info(asset, &nonce))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok((key, resp))
    }
}

fn json<T: Serialize>(v: &T) -> Result<Vec<u8>, ClientError> {
    serde_json::to_vec(v).map_err(|e| ClientError::Protocol(e.to_string()))
}
