//! The evidence binding: the one rule that ties a sentinel's boot-time public keys and a
//! verifier's nonce to its TEE evidence. The sentinel, the key broker and every verifier
//! use this module and nothing else.
//!
//! ```text
//! binding = deterministic CBOR map {
//!     "v":                 2,
//!     "nonce":             bstr (1..=64 bytes, chosen by the verifier),
//!     "ohttp_keys_sha256": bstr 32  (SHA-256 of the gateway's application/ohttp-keys),
//!     "receipt_key":       bstr 32  (Ed25519 public key that signs receipts),
//!     "release_key":       bstr 32  (X25519 public key the data key is sealed to),
//!     "broker_key":        bstr 32  (the key broker identity key the sentinel pins),
//!   ? "provider_key":      bstr 32  (the provider key it pins, when it pins one),
//!   ? "manifest_sha256":   bstr 32  (the manifest of the model it serves, once loaded),
//! }
//! digest  = SHA-512(binding)                          (64 bytes)
//! ```
//!
//! Optional fields are absent, never null, when unset. The pinned keys are part of the
//! binding so that every relying party (the broker, a client, an auditor) sees from the
//! evidence alone which broker and which provider a sentinel trusts, even where its
//! configuration is not measured (SEV-SNP and Azure guests load it after launch).
//!
//! Where the evidence carries it:
//! - AWS Nitro: `user_data` = digest and `nonce` = the verifier's nonce.
//! - AMD SEV-SNP: `REPORT_DATA` = digest.
//! - Azure vTPM SNP: HCL `user-data` = digest, and the TPM quote's `extraData` = the nonce.
//!   (The HCL variable data is itself bound to the SNP `REPORT_DATA` by the platform.)

use aws_lc_rs::digest;
use ciborium::Value;

use crate::cbor::{self, CborError, MapReader, text_map};

/// Version of the binding format.
pub const BINDING_VERSION: u64 = 2;
/// Longest verifier nonce.
pub const MAX_NONCE_LEN: usize = 64;

/// A binding could not be encoded or decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BindingError {
    /// Not a deterministic CBOR binding map.
    #[error("malformed evidence binding: {0}")]
    Cbor(#[from] CborError),
    /// Unknown version.
    #[error("unsupported evidence binding version {0}")]
    Version(u64),
    /// The nonce is empty or longer than 64 bytes.
    #[error("binding nonce must be 1 to 64 bytes, got {0}")]
    NonceLength(usize),
}

/// The public values a sentinel binds into its evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvidenceBinding {
    /// The verifier's nonce (challenge).
    pub nonce: Vec<u8>,
    /// SHA-256 of the OHTTP gateway key configuration (`application/ohttp-keys`).
    pub ohttp_keys_sha256: [u8; 32],
    /// The Ed25519 public key that signs execution receipts.
    pub receipt_key: [u8; 32],
    /// The X25519 public key the key broker seals the data key to.
    pub release_key: [u8; 32],
    /// The Ed25519 identity key of the key broker the sentinel pins: it accepts keys and
    /// manifests only from this broker.
    pub broker_key: [u8; 32],
    /// The provider's Ed25519 key the sentinel pins, when it pins one: it serves only
    /// models this provider signed.
    pub provider_key: Option<[u8; 32]>,
    /// SHA-256 of the `manifest.cose` of the model the sentinel serves, once it is loaded.
    pub manifest_sha256: Option<[u8; 32]>,
}

impl EvidenceBinding {
    /// The deterministic CBOR encoding.
    pub fn encode(&self) -> Result<Vec<u8>, BindingError> {
        check_nonce(&self.nonce)?;
        let Value::Map(mut entries) = text_map([
            ("v", Value::from(BINDING_VERSION)),
            ("nonce", Value::Bytes(self.nonce.clone())),
            (
                "ohttp_keys_sha256",
                Value::Bytes(self.ohttp_keys_sha256.to_vec()),
            ),
            ("receipt_key", Value::Bytes(self.receipt_key.to_vec())),
            ("release_key", Value::Bytes(self.release_key.to_vec())),
            ("broker_key", Value::Bytes(self.broker_key.to_vec())),
        ]) else {
            unreachable!("text_map builds a map")
        };
        for (name, value) in [
            ("provider_key", self.provider_key),
            ("manifest_sha256", self.manifest_sha256),
        ] {
            if let Some(v) = value {
                entries.push((Value::Text(name.to_owned()), Value::Bytes(v.to_vec())));
            }
        }
        Ok(cbor::to_canonical_vec(&Value::Map(entries))?)
    }

    /// Decodes and validates an encoding produced by [`Self::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, BindingError> {
        let mut m = MapReader::new(cbor::from_canonical_slice(bytes)?, "binding")?;
        let version = m.u64("v")?;
        if version != BINDING_VERSION {
            return Err(BindingError::Version(version));
        }
        let binding = Self {
            nonce: m.bytes("nonce")?,
            ohttp_keys_sha256: m.byte_array("ohttp_keys_sha256")?,
            receipt_key: m.byte_array("receipt_key")?,
            release_key: m.byte_array("release_key")?,
            broker_key: m.byte_array("broker_key")?,
            provider_key: m.optional_byte_array("provider_key")?,
            manifest_sha256: m.optional_byte_array("manifest_sha256")?,
        };
        m.finish()?;
        check_nonce(&binding.nonce)?;
        Ok(binding)
    }

    /// SHA-512 of the encoding: what goes into `user_data`, `REPORT_DATA` or HCL `user-data`.
    pub fn digest(&self) -> Result<[u8; 64], BindingError> {
        Ok(digest_of(&self.encode()?))
    }
}

/// SHA-512 of an encoded binding.
pub fn digest_of(encoded: &[u8]) -> [u8; 64] {
    let d = digest::digest(&digest::SHA512, encoded);
    let mut out = [0u8; 64];
    out.copy_from_slice(d.as_ref());
    out
}

fn check_nonce(nonce: &[u8]) -> Result<(), BindingError> {
    if nonce.is_empty() || nonce.len() > MAX_NONCE_LEN {
        return Err(BindingError::NonceLength(nonce.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> EvidenceBinding {
        EvidenceBinding {
            nonce: vec![7; 32],
            ohttp_keys_sha256: [1; 32],
            receipt_key: [2; 32],
            release_key: [3; 32],
            broker_key: [4; 32],
            provider_key: None,
            manifest_sha256: None,
        }
    }

    #[test]
    fn round_trip_and_digest() {
        let b = sample();
        let enc = b.encode().unwrap();
        assert_eq!(EvidenceBinding::decode(&enc).unwrap(), b);
        assert_eq!(b.digest().unwrap(), digest_of(&enc));
        let mut other = sample();
        other.release_key[0] ^= 1;
        assert_ne!(other.digest().unwrap(), b.digest().unwrap());
        // Every pin changes the digest: a sentinel cannot claim one broker and trust another.
        for change in [
            |b: &mut EvidenceBinding| b.broker_key[0] ^= 1,
            |b: &mut EvidenceBinding| b.provider_key = Some([5; 32]),
            |b: &mut EvidenceBinding| b.manifest_sha256 = Some([6; 32]),
        ] {
            let mut other = sample();
            change(&mut other);
            assert_ne!(other.digest().unwrap(), b.digest().unwrap());
            let enc = other.encode().unwrap();
            assert_eq!(EvidenceBinding::decode(&enc).unwrap(), other);
        }
    }

    #[test]
    fn unset_pins_are_absent_not_null() {
        let enc = sample().encode().unwrap();
        let text = format!("{:?}", crate::cbor::from_canonical_slice(&enc).unwrap());
        assert!(
            !text.contains("provider_key") && !text.contains("Null"),
            "{text}"
        );
    }

    #[test]
    fn rejects_bad_bindings() {
        let mut b = sample();
        b.nonce.clear();
        assert_eq!(b.encode(), Err(BindingError::NonceLength(0)));
        b.nonce = vec![0; 65];
        assert_eq!(b.encode(), Err(BindingError::NonceLength(65)));
        let mut enc = sample().encode().unwrap();
        enc.push(0);
        assert!(EvidenceBinding::decode(&enc).is_err());
    }
}
