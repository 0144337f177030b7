//! The provider's Ed25519 manifest-signing key.

use std::fmt;

use aws_lc_rs::digest;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use crate::KeyId;

/// A provider key could not be created, parsed or used. Messages never contain key bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProviderKeyError {
    /// Not a PKCS#8 PEM Ed25519 private key.
    #[error("not an Ed25519 private key in PKCS#8 PEM format")]
    PrivateKeyFormat,
    /// Not an Ed25519 public key (SPKI PEM, or 64 hex characters).
    #[error("not an Ed25519 public key (expected SPKI PEM or 64 hex characters)")]
    PublicKeyFormat,
    /// The system random number generator failed.
    #[error("system random number generator failed")]
    Random,
    /// PEM encoding failed.
    #[error("PEM encoding failed")]
    Encoding,
}

/// The provider's signing key. Zeroized on drop; `Debug` shows only the key id.
pub struct ProviderSigningKey(SigningKey);

impl fmt::Debug for ProviderSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ProviderSigningKey(id={}, <redacted>)",
            self.public().key_id()
        )
    }
}

impl ProviderSigningKey {
    /// A fresh key from the system CSPRNG.
    pub fn generate() -> Result<Self, ProviderKeyError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(seed.as_mut()).map_err(|_| ProviderKeyError::Random)?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    /// Parses a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`, as openssl writes).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, ProviderKeyError> {
        SigningKey::from_pkcs8_pem(pem)
            .map(Self)
            .map_err(|_| ProviderKeyError::PrivateKeyFormat)
    }

    /// The PKCS#8 PEM encoding.
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, ProviderKeyError> {
        let pem = self
            .0
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|_| ProviderKeyError::Encoding)?;
        Ok(Zeroizing::new(pem.as_str().to_owned()))
    }

    /// The matching public key.
    pub fn public(&self) -> ProviderPublicKey {
        ProviderPublicKey(self.0.verifying_key())
    }

    /// Signs `message` (Ed25519, RFC 8032).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

/// A provider's public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ProviderPublicKey(VerifyingKey);

impl fmt::Debug for ProviderPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProviderPublicKey({})", self.to_hex())
    }
}

impl std::str::FromStr for ProviderPublicKey {
    type Err = ProviderKeyError;
    /// See [`ProviderPublicKey::parse`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl ProviderPublicKey {
    /// From the 32-byte encoding.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, ProviderKeyError> {
        VerifyingKey::from_bytes(bytes)
            .map(Self)
            .map_err(|_| ProviderKeyError::PublicKeyFormat)
    }

    /// Parses SPKI PEM (`-----BEGIN PUBLIC KEY-----`) or 64 hex characters.
    pub fn parse(text: &str) -> Result<Self, ProviderKeyError> {
        let text = text.trim();
        if text.starts_with("-----BEGIN") {
            return VerifyingKey::from_public_key_pem(text)
                .map(Self)
                .map_err(|_| ProviderKeyError::PublicKeyFormat);
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| ProviderKeyError::PublicKeyFormat)?;
        Self::from_bytes(&bytes)
    }

    /// The SPKI PEM encoding.
    pub fn to_pem(&self) -> Result<String, ProviderKeyError> {
        self.0
            .to_public_key_pem(LineEnding::LF)
            .map_err(|_| ProviderKeyError::Encoding)
    }

    /// The 32-byte encoding.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Lowercase hex of the 32-byte encoding.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.as_bytes())
    }

    /// The key id: the first 8 bytes of SHA-256 of the 32-byte public key.
    pub fn key_id(&self) -> KeyId {
        let d = digest::digest(&digest::SHA256, self.0.as_bytes());
        let mut id = [0u8; 8];
        id.copy_from_slice(&d.as_ref()[..8]);
        KeyId(id)
    }

    /// Verifies an Ed25519 signature with the strict rules (no small-order keys, canonical
    /// `S`, no malleability).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(sig) = <[u8; 64]>::try_from(signature) else {
            return false;
        };
        self.0
            .verify_strict(message, &Signature::from_bytes(&sig))
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trips_and_debug_is_redacted() {
        let k = ProviderSigningKey::generate().unwrap();
        let pem = k.to_pkcs8_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let back = ProviderSigningKey::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(back.public(), k.public());
        let p = k.public();
        assert_eq!(ProviderPublicKey::parse(&p.to_pem().unwrap()).unwrap(), p);
        assert_eq!(ProviderPublicKey::parse(&p.to_hex()).unwrap(), p);
        assert!(!format!("{k:?}").contains(&hex::encode(&pem.as_bytes()[30..40])));
        assert!(ProviderSigningKey::from_pkcs8_pem("junk").is_err());
        assert!(ProviderPublicKey::parse("00").is_err());
    }

    #[test]
    fn signatures_verify_only_for_their_message_and_key() {
        let k = ProviderSigningKey::generate().unwrap();
        let sig = k.sign(b"msg");
        assert!(k.public().verify(b"msg", &sig));
        assert!(!k.public().verify(b"msh", &sig));
        assert!(
            !ProviderSigningKey::generate()
                .unwrap()
                .public()
                .verify(b"msg", &sig)
        );
        assert!(!k.public().verify(b"msg", &sig[..63]));
    }
}
