//! Oblivious HTTP (RFC 9458) key configuration: what the sentinel's gateway serves as
//! `application/ohttp-keys`, and whose SHA-256 the evidence binding carries.
//!
//! ```text
//! KeyConfig  = key_id (1) || kem_id (2) || public key (Npk) || u16 len || { kdf_id (2), aead_id (2) }*
//! ohttp-keys = { u16 len || KeyConfig }*
//! ```
//! TrustBridge uses DHKEM(X25519, HKDF-SHA256) (0x0020), HKDF-SHA256 (0x0001) and
//! AES-256-GCM (0x0002) or AES-128-GCM (0x0001).

use aws_lc_rs::digest;

/// DHKEM(X25519, HKDF-SHA256).
pub const KEM_X25519_SHA256: u16 = 0x0020;
/// HKDF-SHA256.
pub const KDF_HKDF_SHA256: u16 = 0x0001;
/// AES-128-GCM.
pub const AEAD_AES_128_GCM: u16 = 0x0001;
/// AES-256-GCM.
pub const AEAD_AES_256_GCM: u16 = 0x0002;

/// One key configuration for an X25519 gateway key.
pub fn key_config(key_id: u8, public_key: &[u8; 32]) -> Vec<u8> {
    let suites: [(u16, u16); 2] = [
        (KDF_HKDF_SHA256, AEAD_AES_256_GCM),
        (KDF_HKDF_SHA256, AEAD_AES_128_GCM),
    ];
    let mut out = vec![key_id];
    out.extend_from_slice(&KEM_X25519_SHA256.to_be_bytes());
    out.extend_from_slice(public_key);
    out.extend_from_slice(&((suites.len() * 4) as u16).to_be_bytes());
    for (kdf, aead) in suites {
        out.extend_from_slice(&kdf.to_be_bytes());
        out.extend_from_slice(&aead.to_be_bytes());
    }
    out
}

/// The `application/ohttp-keys` body for one key configuration.
pub fn ohttp_keys(config: &[u8]) -> Vec<u8> {
    let mut out = ((config.len()) as u16).to_be_bytes().to_vec();
    out.extend_from_slice(config);
    out
}

/// SHA-256 of an `application/ohttp-keys` body: the value the evidence binding carries.
pub fn ohttp_keys_sha256(keys: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, keys).as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_config_layout() {
        let c = key_config(7, &[0xab; 32]);
        assert_eq!(c.len(), 1 + 2 + 32 + 2 + 8);
        assert_eq!(&c[..3], &[7, 0x00, 0x20]);
        assert_eq!(&c[35..37], &[0, 8]);
        let k = ohttp_keys(&c);
        assert_eq!(&k[..2], &[0, 45]);
        assert_ne!(
            ohttp_keys_sha256(&k),
            ohttp_keys_sha256(&ohttp_keys(&key_config(8, &[0xab; 32])))
        );
    }
}
