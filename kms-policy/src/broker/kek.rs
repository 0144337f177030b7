//! The key-encryption key (KEK) and the keys derived from it.
//!
//! Data keys are stored only wrapped under the KEK (AES-256-GCM, random 96-bit nonce, the
//! asset id as associated data, so a wrapped key cannot be moved to another asset). The
//! broker's identity key (which signs every answer), its registration HPKE key and its
//! decision-log signing key are derived from the KEK with HKDF-SHA256, so they survive
//! restarts without extra secret files, and a KEK names its broker. The database alone
//! reveals no data key.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf;
use ed25519_dalek::SigningKey;
use trustbridge_protocol::key_release::{BrokerIdentity, HpkeKeyPair};
use trustbridge_protocol::sealed::DataKey;
use zeroize::Zeroizing;

/// Environment variable that may hold the KEK (64 hex characters) instead of a file.
pub const KEK_ENV: &str = "TB_KMS_KEK";

/// A KEK problem. Never carries key bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KekError {
    /// Not 64 hex characters.
    #[error("a KEK is 64 hex characters (32 bytes)")]
    Format,
    /// A wrapped key does not unwrap (wrong KEK, other asset, or a modified database).
    #[error("wrapped data key for {0} does not unwrap: wrong KEK or modified database")]
    Unwrap(String),
    /// The system random number generator failed.
    #[error("system random number generator failed")]
    Random,
    /// AES-GCM sealing failed.
    #[error("wrapping the data key failed")]
    Seal,
    /// HKDF refused to derive a key.
    #[error("deriving the broker's keys from the KEK failed")]
    Derive,
}

/// The 256-bit KEK and the key seeds derived from it (when it is read, so that using
/// them cannot fail). Zeroized on drop; never printed.
pub struct Kek {
    key: Zeroizing<[u8; 32]>,
    registration: Zeroizing<[u8; 32]>,
    identity: Zeroizing<[u8; 32]>,
    decision_log: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kek(<redacted>)")
    }
}

impl Kek {
    /// Parses 64 hex characters (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<Self, KekError> {
        let mut k = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.trim(), k.as_mut()).map_err(|_| KekError::Format)?;
        Self::new(k)
    }

    /// A fresh random KEK.
    pub fn generate() -> Result<Self, KekError> {
        let mut k = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(k.as_mut()).map_err(|_| KekError::Random)?;
        Self::new(k)
    }

    fn new(key: Zeroizing<[u8; 32]>) -> Result<Self, KekError> {
        Ok(Self {
            registration: derive(&key, b"registration-hpke-key")?,
            identity: derive(&key, b"broker-identity-ed25519")?,
            decision_log: derive(&key, b"decision-log-ed25519")?,
            key,
        })
    }

    /// The KEK as 64 hex characters and a newline (for writing a KEK file).
    pub fn to_hex_line(&self) -> Zeroizing<String> {
        let mut s = Zeroizing::new(hex::encode(self.key.as_ref()));
        s.push('\n');
        s
    }

    fn aead(&self) -> LessSafeKey {
        // Invariant: 32 bytes is a valid AES-256 key.
        LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, self.key.as_ref()).unwrap_or_else(|_| unreachable!()),
        )
    }

    /// Wraps a data key for `asset`: nonce || ciphertext || tag.
    pub fn wrap(&self, asset: &str, key: &DataKey) -> Result<Vec<u8>, KekError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| KekError::Random)?;
        let mut raw = Zeroizing::new(key.expose_secret().to_vec());
        self.aead()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(asset.as_bytes()),
                &mut *raw,
            )
            .map_err(|_| KekError::Seal)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&raw);
        Ok(out)
    }

    /// Unwraps a data key wrapped for `asset`.
    pub fn unwrap(&self, asset: &str, wrapped: &[u8]) -> Result<DataKey, KekError> {
        let err = || KekError::Unwrap(asset.to_owned());
        if wrapped.len() != NONCE_LEN + 32 + 16 {
            return Err(err());
        }
        let (nonce, ct) = wrapped.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| err())?;
        let mut buf = Zeroizing::new(ct.to_vec());
        let plain = self
            .aead()
            .open_in_place(nonce, Aad::from(asset.as_bytes()), &mut buf)
            .map_err(|_| err())?;
        let bytes: [u8; 32] = (&*plain).try_into().map_err(|_| err())?;
        Ok(DataKey::from_bytes(bytes))
    }

    /// The broker's registration HPKE key pair (providers seal data keys to it).
    pub fn registration_key(&self) -> HpkeKeyPair {
        HpkeKeyPair::derive(self.registration.as_ref())
    }

    /// The broker's long-term identity key: signs every challenge, release, denial and
    /// broker-information answer. Sentinels and providers pin its public half.
    pub fn broker_identity(&self) -> BrokerIdentity {
        BrokerIdentity::new(SigningKey::from_bytes(&self.identity))
    }

    /// The broker's decision-log signing key.
    pub fn decision_log_key(&self) -> SigningKey {
        SigningKey::from_bytes(&self.decision_log)
    }
}

/// HKDF-SHA256 of `kek` with this broker's salt and `label`.
fn derive(kek: &[u8; 32], label: &[u8]) -> Result<Zeroizing<[u8; 32]>, KekError> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"trustbridge/kms/v1").extract(kek);
    let info = [label];
    let mut out = Zeroizing::new([0u8; 32]);
    prk.expand(&info, hkdf::HKDF_SHA256)
        .and_then(|okm| okm.fill(out.as_mut()))
        .map_err(|_| KekError::Derive)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_unwrap_binds_the_asset() {
        let kek = Kek::generate().unwrap();
        let key = DataKey::from_bytes([5; 32]);
        let w = kek.wrap("a", &key).unwrap();
        assert_eq!(kek.unwrap("a", &w).unwrap().key_id(), key.key_id());
        assert!(kek.unwrap("b", &w).is_err());
        assert!(Kek::generate().unwrap().unwrap("a", &w).is_err());
        assert!(!w.windows(32).any(|x| x == [5; 32]));
        assert_eq!(
            kek.registration_key().public_key(),
            kek.registration_key().public_key()
        );
        assert!(Kek::from_hex("00").is_err());
        assert_eq!(format!("{kek:?}"), "Kek(<redacted>)");
        // One KEK, one identity; distinct from the other derived keys.
        assert_eq!(
            kek.broker_identity().public(),
            kek.broker_identity().public()
        );
        assert_ne!(
            kek.broker_identity().public().as_bytes(),
            &kek.decision_log_key().verifying_key().to_bytes()
        );
        assert_ne!(
            kek.broker_identity().public(),
            Kek::generate().unwrap().broker_identity().public()
        );
    }
}
