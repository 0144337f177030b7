//! The JSON bodies of the key-release API. Hex and base64 fields are decoded and checked
//! by [`super::client::ReleaseClient`] (client side) and [`BindingKeys::to_binding`] (both
//! sides), never ad hoc.

use serde::{Deserialize, Serialize};

use super::vocabulary::{BadHex32, BrokerKey, Nonce, parse32};
use crate::binding::EvidenceBinding;
use crate::platform::Platform;

/// `POST /v1/key-release/challenge` request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengeRequest {
    /// The asset whose key is wanted.
    pub asset: String,
    /// The contract under which it is wanted.
    pub contract: String,
    /// A fresh random nonce of the client's: the broker's signed answer covers this
    /// request, so an old answer replayed by the relay does not verify.
    pub client_nonce: Nonce,
}

/// `POST /v1/key-release/challenge` response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengeResponse {
    /// The single-use nonce.
    pub nonce: Nonce,
    /// Seconds until it expires.
    pub expires_in: u64,
    /// The broker's signature (hex) over the challenge statement.
    pub signature: String,
}

/// The public keys the sentinel bound into its evidence (hex), besides the nonce.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingKeys {
    /// SHA-256 of the OHTTP gateway key configuration.
    pub ohttp_keys_sha256: String,
    /// Ed25519 receipt-signing public key.
    pub receipt_key: String,
    /// X25519 key-release public key (the HPKE recipient).
    pub release_key: String,
    /// The broker identity key the sentinel pins.
    pub broker_key: BrokerKey,
    /// The provider key the sentinel pins, if it pins one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_key: Option<String>,
    /// The manifest of the model the sentinel serves, once it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_sha256: Option<String>,
}

impl BindingKeys {
    /// The keys of `binding`, as a release request carries them.
    pub fn from_binding(binding: &EvidenceBinding) -> Self {
        Self {
            ohttp_keys_sha256: hex::encode(binding.ohttp_keys_sha256),
            receipt_key: hex::encode(binding.receipt_key),
            release_key: hex::encode(binding.release_key),
            broker_key: BrokerKey::from_bytes(binding.broker_key),
            provider_key: binding.provider_key.map(hex::encode),
            manifest_sha256: binding.manifest_sha256.map(hex::encode),
        }
    }

    /// The evidence binding these keys and `nonce` make: the one the evidence must carry.
    pub fn to_binding(&self, nonce: &Nonce) -> Result<EvidenceBinding, BadHex32> {
        let hex32 = parse32;
        Ok(EvidenceBinding {
            nonce: nonce.as_bytes().to_vec(),
            ohttp_keys_sha256: hex32(&self.ohttp_keys_sha256, "binding.ohttp_keys_sha256")?,
            receipt_key: hex32(&self.receipt_key, "binding.receipt_key")?,
            release_key: hex32(&self.release_key, "binding.release_key")?,
            broker_key: *self.broker_key.as_bytes(),
            provider_key: self
                .provider_key
                .as_deref()
                .map(|p| hex32(p, "binding.provider_key"))
                .transpose()?,
            manifest_sha256: self
                .manifest_sha256
                .as_deref()
                .map(|m| hex32(m, "binding.manifest_sha256"))
                .transpose()?,
        })
    }
}

/// `POST /v1/key-release` request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    /// The nonce from the challenge.
    pub nonce: Nonce,
    /// The platform whose evidence this is.
    pub platform: Platform,
    /// The evidence, base64 (Nitro document, SNP report, or Azure evidence JSON).
    pub evidence: String,
    /// Certificates that accompany the evidence (SNP: VCEK, ASK, ARK), base64 DER.
    #[serde(default)]
    pub certificates: Vec<String>,
    /// The bound public keys.
    pub binding: BindingKeys,
}

/// `POST /v1/key-release` response: the data key sealed to the release key, and what the
/// sentinel checks its bundle against, all signed by the broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseResponse {
    /// The asset.
    pub asset: String,
    /// The contract the release was counted against.
    pub contract: String,
    /// SHA-256 of the asset's `manifest.cose`, hex: the sentinel checks its bundle against it.
    pub manifest_sha256: String,
    /// The provider's Ed25519 public key, hex: the sentinel verifies the manifest with it.
    pub provider_key: String,
    /// The key id of the released data key.
    pub key_id: String,
    /// HPKE encapsulated key, hex.
    pub enc: String,
    /// HPKE ciphertext of the 32-byte data key, hex.
    pub ciphertext: String,
    /// How long the release is good for, in seconds: the sentinel stops serving unless it
    /// is authorized again within this time, whatever its own configuration says.
    pub lease_secs: u64,
    /// SHA-256 of the key-release policy text the release was decided under, hex.
    pub policy_sha256: String,
    /// The broker's signature (hex) over the release statement.
    pub signature: String,
}

/// Evidence as a sentinel sends it, from any attestation provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evidence {
    /// The platform.
    pub platform: Platform,
    /// The evidence bytes (Nitro document, SNP report, or Azure evidence JSON).
    pub bytes: Vec<u8>,
    /// Accompanying certificates (DER): for SNP the VCEK, ASK and ARK when available.
    pub certificates: Vec<Vec<u8>>,
}

/// An error body: a denial (HTTP 403, signed by the broker) or another error (unsigned).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// Machine-readable reason code, e.g. `measurement_mismatch`.
    pub error: String,
    /// Human-readable detail.
    pub detail: String,
    /// The broker's signature (hex) over the denial statement; on every 403.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// `GET /v1/broker`: the broker's public keys, signed by its identity key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerInfo {
    /// The Ed25519 identity key that signs every answer.
    pub identity_key: BrokerKey,
    /// X25519 public key providers seal data keys to at registration (hex).
    pub registration_key: String,
    /// Ed25519 public key that signs the decision log (hex).
    pub decision_log_key: String,
    /// Whether the policy accepts simulated evidence.
    pub simulation: bool,
    /// The identity key's signature (hex) over the broker statement.
    pub signature: String,
}

/// The answer to an admin request that was carried out, signed by the broker for that
/// request, so a network that drops the request cannot answer "done" in its place.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminAnswer {
    /// The broker's signature (hex) over the admin statement, for the digest of the
    /// message the admin signed.
    pub signature: String,
}
