//! Key release: the messages between a sentinel and the key broker, and the HPKE sealing
//! of the data key to the sentinel's attested key-release key.
//!
//! ```text
//! POST /v1/key-release/challenge  ChallengeRequest  -> ChallengeResponse (single-use nonce)
//! POST /v1/key-release            ReleaseRequest    -> ReleaseResponse | Denial (HTTP 403)
//! ```
//!
//! The data key is sealed with HPKE (RFC 9180) base mode, DHKEM(X25519, HKDF-SHA256),
//! HKDF-SHA256, AES-256-GCM, to the `release_key` that the evidence binding carries, with
//! `info` = [`release_info`] (label, asset id and nonce), so a sealed key opens only for the
//! attested sentinel, for that asset and that challenge.

mod denial;
mod hpke;

use serde::{Deserialize, Serialize};

pub use self::denial::DenialCode;
pub use self::hpke::{HpkeError, HpkeKeyPair, hpke_info, hpke_seal, release_info, seal_data_key};
pub use crate::platform::Platform;

/// Domain-separation label of the HPKE `info` for released data keys.
pub const RELEASE_INFO_LABEL: &[u8] = b"trustbridge/key-release/v1";
/// Domain-separation label of the HPKE `info` for data keys sent to the broker at registration.
pub const REGISTER_INFO_LABEL: &[u8] = b"trustbridge/register/v1";
/// How long a challenge nonce lives.
pub const NONCE_TTL_SECS: u64 = 60;

/// `POST /v1/key-release/challenge` request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengeRequest {
    /// The asset whose key is wanted.
    pub asset: String,
    /// The contract under which it is wanted.
    pub contract: String,
}

/// `POST /v1/key-release/challenge` response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengeResponse {
    /// The single-use nonce, hex (32 bytes).
    pub nonce: String,
    /// Seconds until it expires.
    pub expires_in: u64,
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
}

/// `POST /v1/key-release` request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    /// The nonce from the challenge, hex.
    pub nonce: String,
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

/// `POST /v1/key-release` response: the data key sealed to the release key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseResponse {
    /// The asset.
    pub asset: String,
    /// SHA-256 of the asset's `manifest.cose`, hex: the sentinel checks its bundle against it.
    pub manifest_sha256: String,
    /// The provider's Ed25519 public key, hex: the sentinel verifies the manifest with it.
    pub provider_key: String,
    /// HPKE encapsulated key, hex.
    pub enc: String,
    /// HPKE ciphertext of the 32-byte data key, hex.
    pub ciphertext: String,
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

/// An HTTP 403 denial (or other error) body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// Machine-readable reason code, e.g. `measurement_mismatch`.
    pub error: String,
    /// Human-readable detail.
    pub detail: String,
}
