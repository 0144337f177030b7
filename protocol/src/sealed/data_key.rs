//! The model data key: 32 random bytes that seal every file of a bundle.

use std::fmt;

use aws_lc_rs::hmac;
use zeroize::Zeroizing;

use super::layout::KEY_LEN;
use crate::KeyId;

const KEY_ID_LABEL: &[u8] = b"trustbridge/sealed-weights/v1/key-id";
const COMMITMENT_LABEL: &[u8] = b"trustbridge/sealed-weights/v1/key-commitment";

/// A data key file or hex string is malformed. The message never contains key bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DataKeyError {
    /// Not exactly 64 hex characters (an optional final newline aside).
    #[error("a data key is 64 hex characters (32 bytes), optionally followed by a newline")]
    Format,
    /// The system random number generator failed.
    #[error("system random number generator failed")]
    Random,
}

/// A 256-bit data key. Zeroized on drop; `Debug` shows only its key id.
#[derive(Clone)]
pub struct DataKey(Zeroizing<[u8; KEY_LEN]>);

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DataKey(id={}, <redacted>)", self.key_id())
    }
}

impl DataKey {
    /// A fresh key from the system CSPRNG.
    pub fn generate() -> Result<Self, DataKeyError> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        aws_lc_rs::rand::fill(key.as_mut()).map_err(|_| DataKeyError::Random)?;
        Ok(Self(key))
    }

    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Parses the key file format: 64 hex characters, optionally followed by a newline
    /// (`\n` or `\r\n`). Nothing else is accepted.
    pub fn from_hex(text: &str) -> Result<Self, DataKeyError> {
        let hex_part = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .unwrap_or(text);
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        hex::decode_to_slice(hex_part, key.as_mut()).map_err(|_| DataKeyError::Format)?;
        Ok(Self(key))
    }

    /// The key file contents: 64 lowercase hex characters and a newline.
    pub fn to_key_file(&self) -> Zeroizing<String> {
        let mut hex_buf = Zeroizing::new([0u8; 2 * KEY_LEN]);
        // Invariant: the buffer is exactly twice the key length, which is all encode needs.
        let _ = hex::encode_to_slice(self.0.as_ref(), hex_buf.as_mut());
        let mut out = Zeroizing::new(String::with_capacity(2 * KEY_LEN + 1));
        out.extend(hex_buf.iter().map(|&b| char::from(b)));
        out.push('\n');
        out
    }

    /// The key's public identifier: the first 8 bytes of HMAC-SHA256(key, label).
    pub fn key_id(&self) -> KeyId {
        let tag = self.hmac(&[KEY_ID_LABEL]);
        let mut id = [0u8; 8];
        id.copy_from_slice(&tag.as_ref()[..8]);
        KeyId(id)
    }

    /// The key commitment for `asset_id`: HMAC-SHA256(key, label || 0x00 || asset id).
    ///
    /// It is stored in the signed manifest, so a wrong key is reported as such before any
    /// segment is tried, and a manifest cannot be reused with another key.
    pub fn commitment(&self, asset_id: &str) -> [u8; 32] {
        let tag = self.hmac(&[COMMITMENT_LABEL, &[0], asset_id.as_bytes()]);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Checks `commitment` against this key in constant time.
    pub fn matches_commitment(&self, asset_id: &str, commitment: &[u8]) -> bool {
        let key = hmac::Key::new(hmac::HMAC_SHA256, self.0.as_ref());
        let msg = [COMMITMENT_LABEL, &[0], asset_id.as_bytes()].concat();
        hmac::verify(&key, &msg, commitment).is_ok()
    }

    /// The raw key bytes. Only for code that must encrypt the key itself (wrapping under a
    /// KEK, sealing to a recipient); never log, print or store them in the clear.
    pub fn expose_secret(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    fn hmac(&self, parts: &[&[u8]]) -> hmac::Tag {
        let key = hmac::Key::new(hmac::HMAC_SHA256, self.0.as_ref());
        let mut ctx = hmac::Context::with_key(&key);
        for p in parts {
            ctx.update(p);
        }
        ctx.sign()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trip_and_strict_parsing() {
        let k = DataKey::generate().unwrap();
        let file = k.to_key_file();
        assert_eq!(file.len(), 65);
        assert!(file.ends_with('\n'));
        let back = DataKey::from_hex(&file).unwrap();
        assert_eq!(back.expose_secret(), k.expose_secret());
        assert!(DataKey::from_hex(file.trim_end()).is_ok());
        assert!(DataKey::from_hex(&format!("{}\r\n", file.trim_end())).is_ok());
        for bad in [
            "",
            "00",
            &"0".repeat(63),
            &"0".repeat(65),
            &format!("{}\n\n", "0".repeat(64)),
            &"g".repeat(64),
            &format!(" {}", "0".repeat(64)),
        ] {
            assert_eq!(
                DataKey::from_hex(bad).unwrap_err(),
                DataKeyError::Format,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn debug_never_shows_key_bytes() {
        let k = DataKey::from_bytes([0xab; 32]);
        let dbg = format!("{k:?}");
        assert!(!dbg.contains("abab"), "{dbg}");
        assert!(dbg.contains(&k.key_id().to_string()));
    }

    #[test]
    fn commitment_binds_key_and_asset() {
        let a = DataKey::from_bytes([1; 32]);
        let b = DataKey::from_bytes([2; 32]);
        let c = a.commitment("asset");
        assert!(a.matches_commitment("asset", &c));
        assert!(!b.matches_commitment("asset", &c));
        assert!(!a.matches_commitment("other", &c));
        assert_ne!(a.key_id(), b.key_id());
    }
}
