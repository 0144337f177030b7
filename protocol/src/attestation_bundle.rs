//! The attestation bundle a sentinel publishes at `GET /.well-known/trustbridge-attestation`:
//! everything a client or auditor needs to decide, offline, what it is talking to and which
//! key signs its receipts.
//!
//! ```json
//! {
//!   "version": 1,
//!   "platform": "nitro" | "snp" | "azure-snp-vtpm",
//!   "evidence": "<base64: the attestation document, SNP report or Azure evidence JSON>",
//!   "certificates": ["<base64 DER>", ...],
//!   "binding": "<base64: the evidence binding, deterministic CBOR>",
//!   "binding_fields": { "nonce": "<hex>", "ohttp_keys_sha256": "<hex>", ... },
//!   "ohttp_keys": "<base64: application/ohttp-keys>",
//!   "receipt_key": "<hex: Ed25519 public key>",
//!   "issued_at": <Unix seconds>
//! }
//! ```
//!
//! Nothing in the bundle is trusted for what it says: the evidence is verified against
//! pinned roots, the binding must be the one the evidence carries, and the OHTTP keys and
//! receipt key must be the ones the binding names ([`AttestationBundle::check_keys`]).
//! `binding_fields` is the binding decoded for people and must agree with it; `issued_at`
//! is the sentinel's claim of when it gathered the evidence, not evidence of anything.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::Platform;
use crate::binding::{BindingError, EvidenceBinding};
use crate::ohttp::ohttp_keys_sha256;

/// The format version.
pub const BUNDLE_VERSION: u32 = 1;

/// Largest bundle accepted, checked before parsing (Azure evidence with its certificates is
/// about 20 KiB).
pub const MAX_BUNDLE_LEN: usize = 256 * 1024;

/// Most certificates a bundle may carry.
pub const MAX_CERTIFICATES: usize = 8;

/// A bundle could not be read or does not hold together.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BundleFormatError {
    /// Larger than [`MAX_BUNDLE_LEN`].
    #[error("attestation bundle of {0} bytes is larger than {MAX_BUNDLE_LEN}")]
    TooLarge(usize),
    /// Not the JSON shape above.
    #[error("malformed attestation bundle: {0}")]
    Json(String),
    /// Another version.
    #[error("unsupported attestation bundle version {0}")]
    Version(u32),
    /// A base64 or hex field does not decode.
    #[error("attestation bundle field `{0}` does not decode")]
    Encoding(&'static str),
    /// More than [`MAX_CERTIFICATES`] certificates.
    #[error("attestation bundle carries more than {MAX_CERTIFICATES} certificates")]
    TooManyCertificates,
    /// The binding does not decode.
    #[error(transparent)]
    Binding(#[from] BindingError),
    /// A key the bundle offers is not the one its binding names.
    #[error("the bundle's {0} is not the one its evidence binding names")]
    KeyNotBound(&'static str),
    /// `binding_fields` says something else than the binding.
    #[error("binding_fields do not match the binding")]
    FieldsMismatch,
}

/// The wire form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    version: u32,
    platform: Platform,
    evidence: String,
    certificates: Vec<String>,
    binding: String,
    binding_fields: BindingFields,
    ohttp_keys: String,
    receipt_key: String,
    issued_at: u64,
}

/// The evidence binding decoded for people (hex).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingFields {
    /// The nonce the evidence was gathered for.
    pub nonce: String,
    /// SHA-256 of the OHTTP key configuration.
    pub ohttp_keys_sha256: String,
    /// The receipt key.
    pub receipt_key: String,
    /// The key-release key.
    pub release_key: String,
    /// The key broker identity key the sentinel pins.
    pub broker_key: String,
    /// The provider key it pins, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_key: Option<String>,
    /// The manifest digest of the model it serves, once loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_sha256: Option<String>,
}

impl BindingFields {
    /// The fields of `b`.
    pub fn of(b: &EvidenceBinding) -> Self {
        Self {
            nonce: hex::encode(&b.nonce),
            ohttp_keys_sha256: hex::encode(b.ohttp_keys_sha256),
            receipt_key: hex::encode(b.receipt_key),
            release_key: hex::encode(b.release_key),
            broker_key: hex::encode(b.broker_key),
            provider_key: b.provider_key.map(hex::encode),
            manifest_sha256: b.manifest_sha256.map(hex::encode),
        }
    }
}

/// An attestation bundle, decoded and internally consistent (not yet verified: see the
/// module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttestationBundle {
    /// The platform the evidence claims to come from.
    pub platform: Platform,
    /// The evidence bytes.
    pub evidence: Vec<u8>,
    /// DER certificates the evidence needs (an SNP VCEK, for example).
    pub certificates: Vec<Vec<u8>>,
    /// The binding, as encoded.
    pub binding_bytes: Vec<u8>,
    /// The binding, decoded.
    pub binding: EvidenceBinding,
    /// The OHTTP key configuration (`application/ohttp-keys`).
    pub ohttp_keys: Vec<u8>,
    /// The receipt key.
    pub receipt_key: [u8; 32],
    /// When the sentinel says it gathered the evidence (Unix seconds).
    pub issued_at: u64,
}

impl AttestationBundle {
    /// A bundle of `binding`'s evidence; fails unless the keys are the bound ones.
    pub fn new(
        platform: Platform,
        evidence: Vec<u8>,
        certificates: Vec<Vec<u8>>,
        binding: EvidenceBinding,
        ohttp_keys: Vec<u8>,
        issued_at: u64,
    ) -> Result<Self, BundleFormatError> {
        let bundle = Self {
            platform,
            evidence,
            certificates,
            binding_bytes: binding.encode()?,
            receipt_key: binding.receipt_key,
            binding,
            ohttp_keys,
            issued_at,
        };
        bundle.check_keys()?;
        Ok(bundle)
    }

    /// Fails unless the OHTTP keys and the receipt key are the ones the binding names.
    pub fn check_keys(&self) -> Result<(), BundleFormatError> {
        if ohttp_keys_sha256(&self.ohttp_keys) != self.binding.ohttp_keys_sha256 {
            return Err(BundleFormatError::KeyNotBound("OHTTP key configuration"));
        }
        if self.receipt_key != self.binding.receipt_key {
            return Err(BundleFormatError::KeyNotBound("receipt key"));
        }
        if self.certificates.len() > MAX_CERTIFICATES {
            return Err(BundleFormatError::TooManyCertificates);
        }
        Ok(())
    }

    /// The JSON encoding.
    pub fn to_json(&self) -> Result<Vec<u8>, BundleFormatError> {
        let wire = Wire {
            version: BUNDLE_VERSION,
            platform: self.platform,
            evidence: STANDARD.encode(&self.evidence),
            certificates: self
                .certificates
                .iter()
                .map(|c| STANDARD.encode(c))
                .collect(),
            binding: STANDARD.encode(&self.binding_bytes),
            binding_fields: BindingFields::of(&self.binding),
            ohttp_keys: STANDARD.encode(&self.ohttp_keys),
            receipt_key: hex::encode(self.receipt_key),
            issued_at: self.issued_at,
        };
        serde_json::to_vec_pretty(&wire).map_err(|e| BundleFormatError::Json(e.to_string()))
    }

    /// Decodes a bundle (size checked first) and checks that it holds together.
    pub fn from_json(bytes: &[u8]) -> Result<Self, BundleFormatError> {
        if bytes.len() > MAX_BUNDLE_LEN {
            return Err(BundleFormatError::TooLarge(bytes.len()));
        }
        let wire: Wire =
            serde_json::from_slice(bytes).map_err(|e| BundleFormatError::Json(e.to_string()))?;
        if wire.version != BUNDLE_VERSION {
            return Err(BundleFormatError::Version(wire.version));
        }
        if wire.certificates.len() > MAX_CERTIFICATES {
            return Err(BundleFormatError::TooManyCertificates);
        }
        let b64 = |s: &str, field| {
            STANDARD
                .decode(s)
                .map_err(|_| BundleFormatError::Encoding(field))
        };
        let binding_bytes = b64(&wire.binding, "binding")?;
        let binding = EvidenceBinding::decode(&binding_bytes)?;
        let mut receipt_key = [0u8; 32];
        hex::decode_to_slice(&wire.receipt_key, &mut receipt_key)
            .map_err(|_| BundleFormatError::Encoding("receipt_key"))?;
        if wire.binding_fields != BindingFields::of(&binding) {
            return Err(BundleFormatError::FieldsMismatch);
        }
        let bundle = Self {
            platform: wire.platform,
            evidence: b64(&wire.evidence, "evidence")?,
            certificates: wire
                .certificates
                .iter()
                .map(|c| b64(c, "certificates"))
                .collect::<Result<_, _>>()?,
            binding_bytes,
            binding,
            ohttp_keys: b64(&wire.ohttp_keys, "ohttp_keys")?,
            receipt_key,
            issued_at: wire.issued_at,
        };
        bundle.check_keys()?;
        Ok(bundle)
    }

    /// SHA-256 of the evidence bytes: the `evidence_digest` of the receipts this sentinel
    /// signs under this evidence.
    pub fn evidence_digest(&self) -> [u8; 32] {
        crate::receipt::sha256(&self.evidence)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn bundle() -> AttestationBundle {
        let keys = b"an application/ohttp-keys body".to_vec();
        let binding = EvidenceBinding {
            nonce: vec![1; 32],
            ohttp_keys_sha256: ohttp_keys_sha256(&keys),
            receipt_key: [2; 32],
            release_key: [3; 32],
            broker_key: [4; 32],
            provider_key: None,
            manifest_sha256: Some([6; 32]),
        };
        AttestationBundle::new(
            Platform::Nitro,
            vec![9; 100],
            vec![vec![8; 10]],
            binding,
            keys,
            1_790_000_000,
        )
        .unwrap()
    }

    #[test]
    fn round_trips_and_holds_together() {
        let b = bundle();
        let json = b.to_json().unwrap();
        assert_eq!(AttestationBundle::from_json(&json).unwrap(), b);
        // A receipt key the binding does not name.
        let mut v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        v["receipt_key"] = hex::encode([7u8; 32]).into();
        assert_eq!(
            AttestationBundle::from_json(&serde_json::to_vec(&v).unwrap()),
            Err(BundleFormatError::KeyNotBound("receipt key"))
        );
        // Other OHTTP keys.
        let mut v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        v["ohttp_keys"] = STANDARD.encode(b"other keys").into();
        assert_eq!(
            AttestationBundle::from_json(&serde_json::to_vec(&v).unwrap()),
            Err(BundleFormatError::KeyNotBound("OHTTP key configuration"))
        );
        // Human-readable fields that lie.
        let mut v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        v["binding_fields"]["broker_key"] = hex::encode([9u8; 32]).into();
        assert_eq!(
            AttestationBundle::from_json(&serde_json::to_vec(&v).unwrap()),
            Err(BundleFormatError::FieldsMismatch)
        );
        // Unknown fields, and oversized input.
        let mut v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        v["extra"] = 1.into();
        assert!(AttestationBundle::from_json(&serde_json::to_vec(&v).unwrap()).is_err());
        assert_eq!(
            AttestationBundle::from_json(&vec![b' '; MAX_BUNDLE_LEN + 1]),
            Err(BundleFormatError::TooLarge(MAX_BUNDLE_LEN + 1))
        );
    }
}
