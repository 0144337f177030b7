//! The evidence binding: the one rule that ties a sentinel's boot-time public keys and a
//! verifier's nonce to its TEE evidence. The sentinel, the key broker and every verifier
//! use this module and nothing else.
//!
//! ```text
//! binding = deterministic CBOR map {
//!     "v":                 1,
//!     "nonce":             bstr (1..=64 bytes, chosen by the verifier),
//!     "ohttp_keys_sha256": bstr 32  (SHA-256 of the gateway's application/ohttp-keys),
//!     "receipt_key":       bstr 32  (Ed25519 public key that signs receipts),
//!     "release_key":       bstr 32  (X25519 public key the data key is sealed to),
//! }
//! digest  = SHA-512(binding)                          (64 bytes)
//! ```
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
pub const BINDING_VERSION: u64 = 1;
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
}

impl EvidenceBinding {
    /// The deterministic CBOR encoding.
    pub fn encode(&self) -> Result<Vec<u8>, BindingError> {
        check_nonce(&self.nonce)?;
        let map = text_map([
            ("v", Value::from(BINDING_VERSION)),
            ("nonce", Value::Bytes(self.nonce.clone())),
            (
                "ohttp_keys_sha256",
                Value::Bytes(self.ohttp_keys_sha256.to_vec()),
            ),
            ("receipt_key", Value::Bytes(self.receipt_key.to_vec())),
            ("release_key", Value::Bytes(self.release_key.to_vec())),
        ]);
        Ok(cbor::to_canonical_vec(&map)?)
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
