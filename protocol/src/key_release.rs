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

use hpke::aead::AesGcm256;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::sealed::DataKey;

/// Domain-separation label of the HPKE `info` for released data keys.
pub const RELEASE_INFO_LABEL: &[u8] = b"trustbridge/key-release/v1";
/// Domain-separation label of the HPKE `info` for data keys sent to the broker at registration.
pub const REGISTER_INFO_LABEL: &[u8] = b"trustbridge/register/v1";
/// How long a challenge nonce lives.
pub const NONCE_TTL_SECS: u64 = 60;

type Kem = X25519HkdfSha256;

/// HPKE sealing or opening failed. Never carries key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum HpkeError {
    /// A public key or encapsulated key is not a valid X25519 point encoding.
    #[error("invalid HPKE key encoding")]
    KeyEncoding,
    /// The ciphertext does not open (wrong key, info, or modified ciphertext).
    #[error("HPKE open failed: wrong recipient, asset or nonce, or modified ciphertext")]
    Open,
    /// The opened plaintext is not a 32-byte data key.
    #[error("released key has the wrong length")]
    KeyLength,
    /// Sealing failed.
    #[error("HPKE seal failed")]
    Seal,
}

/// `label || 0x00 || u32be(len(asset)) || asset || u32be(len(nonce)) || nonce`.
pub fn hpke_info(label: &[u8], asset_id: &str, nonce: &[u8]) -> Vec<u8> {
    let mut info = Vec::with_capacity(label.len() + 9 + asset_id.len() + nonce.len());
    info.extend_from_slice(label);
    info.push(0);
    info.extend_from_slice(&(asset_id.len() as u32).to_be_bytes());
    info.extend_from_slice(asset_id.as_bytes());
    info.extend_from_slice(&(nonce.len() as u32).to_be_bytes());
    info.extend_from_slice(nonce);
    info
}

/// The HPKE `info` of a key release.
pub fn release_info(asset_id: &str, nonce: &[u8]) -> Vec<u8> {
    hpke_info(RELEASE_INFO_LABEL, asset_id, nonce)
}

/// An X25519 HPKE recipient key pair (the sentinel's key-release key, or the broker's
/// registration key). The private key is zeroized on drop.
pub struct HpkeKeyPair {
    private: <Kem as hpke::Kem>::PrivateKey,
    public: [u8; 32],
}

impl std::fmt::Debug for HpkeKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "HpkeKeyPair(public={}, <private redacted>)",
            hex::encode(self.public)
        )
    }
}

impl HpkeKeyPair {
    /// A fresh key pair from the OS CSPRNG.
    pub fn generate() -> Self {
        let mut rng = rand_core::UnwrapErr(rand_core::OsRng);
        let (private, public) = Kem::gen_keypair(&mut rng);
        Self::from_parts(private, public)
    }

    /// The key pair derived from `ikm` (RFC 9180 DeriveKeyPair): for keys derived from a
    /// master secret, and for test vectors.
    pub fn derive(ikm: &[u8]) -> Self {
        let (private, public) = Kem::derive_keypair(ikm);
        Self::from_parts(private, public)
    }

    fn from_parts(
        private: <Kem as hpke::Kem>::PrivateKey,
        public: <Kem as hpke::Kem>::PublicKey,
    ) -> Self {
        let mut pk = [0u8; 32];
        pk.copy_from_slice(&public.to_bytes());
        Self {
            private,
            public: pk,
        }
    }

    /// The public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// Opens an HPKE ciphertext sent to this key (empty AAD, as TrustBridge uses).
    pub fn open(
        &self,
        enc: &[u8],
        ciphertext: &[u8],
        info: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, HpkeError> {
        self.open_with_aad(enc, ciphertext, info, &[])
    }

    /// Opens the first message of an HPKE base-mode context with `aad` (RFC 9180 §6.1).
    pub fn open_with_aad(
        &self,
        enc: &[u8],
        ciphertext: &[u8],
        info: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, HpkeError> {
        let encapped =
            <Kem as hpke::Kem>::EncappedKey::from_bytes(enc).map_err(|_| HpkeError::KeyEncoding)?;
        hpke::single_shot_open::<AesGcm256, HkdfSha256, Kem>(
            &OpModeR::Base,
            &self.private,
            &encapped,
            info,
            ciphertext,
            aad,
        )
        .map(Zeroizing::new)
        .map_err(|_| HpkeError::Open)
    }

    /// Opens a data key sealed to this key.
    pub fn open_data_key(
        &self,
        enc: &[u8],
        ciphertext: &[u8],
        info: &[u8],
    ) -> Result<DataKey, HpkeError> {
        let plain = self.open(enc, ciphertext, info)?;
        let bytes: [u8; 32] = plain
            .as_slice()
            .try_into()
            .map_err(|_| HpkeError::KeyLength)?;
        Ok(DataKey::from_bytes(bytes))
    }
}

/// Seals `plaintext` to `recipient` with `info`; returns (encapsulated key, ciphertext).
pub fn hpke_seal(
    recipient: &[u8; 32],
    info: &[u8],
    plaintext: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), HpkeError> {
    let pk =
        <Kem as hpke::Kem>::PublicKey::from_bytes(recipient).map_err(|_| HpkeError::KeyEncoding)?;
    let mut rng = rand_core::UnwrapErr(rand_core::OsRng);
    let (enc, ct) = hpke::single_shot_seal::<AesGcm256, HkdfSha256, Kem, _>(
        &OpModeS::Base,
        &pk,
        info,
        plaintext,
        &[],
        &mut rng,
    )
    .map_err(|_| HpkeError::Seal)?;
    Ok((enc.to_bytes().to_vec(), ct))
}

/// Seals a data key to `recipient`.
pub fn seal_data_key(
    recipient: &[u8; 32],
    info: &[u8],
    key: &DataKey,
) -> Result<(Vec<u8>, Vec<u8>), HpkeError> {
    hpke_seal(recipient, info, key.expose_secret())
}

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
    /// `nitro`, `snp` or `azure-snp-vtpm`.
    pub platform: String,
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

/// An HTTP 403 denial (or other error) body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// Machine-readable reason code, e.g. `measurement_mismatch`.
    pub error: String,
    /// Human-readable detail.
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_binding_of_info() {
        let kp = HpkeKeyPair::generate();
        let key = DataKey::from_bytes([9; 32]);
        let info = release_info("asset", b"nonce");
        let (enc, ct) = seal_data_key(&kp.public_key(), &info, &key).unwrap();
        assert_eq!(
            kp.open_data_key(&enc, &ct, &info).unwrap().key_id(),
            key.key_id()
        );
        assert_eq!(
            kp.open_data_key(&enc, &ct, &release_info("asset", b"other"))
                .unwrap_err(),
            HpkeError::Open
        );
        assert_eq!(
            kp.open_data_key(&enc, &ct, &release_info("other", b"nonce"))
                .unwrap_err(),
            HpkeError::Open
        );
        assert_eq!(
            HpkeKeyPair::generate()
                .open_data_key(&enc, &ct, &info)
                .unwrap_err(),
            HpkeError::Open
        );
        let mut bad = ct.clone();
        bad[0] ^= 1;
        assert_eq!(
            kp.open_data_key(&enc, &bad, &info).unwrap_err(),
            HpkeError::Open
        );
        assert!(!format!("{kp:?}").contains("private: "));
    }

    #[test]
    fn info_is_length_prefixed() {
        assert_ne!(release_info("ab", b"c"), release_info("a", b"bc"));
        assert_ne!(
            release_info("a", b"n"),
            hpke_info(REGISTER_INFO_LABEL, "a", b"n")
        );
    }
}
