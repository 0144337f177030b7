//! HPKE (RFC 9180) base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM: how
//! data keys are sealed to a sentinel's attested key-release key and to the broker's
//! registration key.
//!
//! Randomness comes from the operating system through aws-lc-rs. A failure of the random
//! number generator is an error ([`HpkeError::Random`]), never a panic and never a key
//! made of zeros.

use hpke::aead::AesGcm256;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use zeroize::Zeroizing;

use super::RELEASE_INFO_LABEL;
use crate::sealed::DataKey;

type Kem = X25519HkdfSha256;

/// HPKE sealing or opening failed. Never carries key material.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
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
    /// The system random number generator failed.
    #[error("system random number generator failed")]
    Random,
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
    /// A fresh key pair: RFC 9180 DeriveKeyPair over 32 bytes from the system CSPRNG
    /// (what `GenerateKeyPair` does), or [`HpkeError::Random`] when it fails.
    pub fn generate() -> Result<Self, HpkeError> {
        let mut ikm = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(ikm.as_mut()).map_err(|_| HpkeError::Random)?;
        Ok(Self::derive(ikm.as_ref()))
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
    seal_with_rng(recipient, info, plaintext, &mut |dest| {
        aws_lc_rs::rand::fill(dest).is_ok()
    })
}

/// [`hpke_seal`] with the ephemeral key's randomness from `fill` (false: it failed).
fn seal_with_rng(
    recipient: &[u8; 32],
    info: &[u8],
    plaintext: &[u8],
    fill: &mut dyn FnMut(&mut [u8]) -> bool,
) -> Result<(Vec<u8>, Vec<u8>), HpkeError> {
    let pk =
        <Kem as hpke::Kem>::PublicKey::from_bytes(recipient).map_err(|_| HpkeError::KeyEncoding)?;
    let mut rng = FallibleRng {
        fill,
        failed: false,
    };
    let sealed = hpke::single_shot_seal::<AesGcm256, HkdfSha256, Kem, _>(
        &OpModeS::Base,
        &pk,
        info,
        plaintext,
        &[],
        &mut rng,
    );
    // The ephemeral key came from the generator: a failure anywhere in it voids the result.
    if rng.failed {
        return Err(HpkeError::Random);
    }
    let (enc, ct) = sealed.map_err(|_| HpkeError::Seal)?;
    Ok((enc.to_bytes().to_vec(), ct))
}

/// A fallible randomness source as the `rand_core` generator the `hpke` crate asks for.
/// `rand_core`'s interface cannot fail, so a failure is recorded in `failed` (and the
/// bytes are zeros); callers check it and discard the result.
struct FallibleRng<'a> {
    fill: &'a mut dyn FnMut(&mut [u8]) -> bool,
    failed: bool,
}

impl rand_core::RngCore for FallibleRng<'_> {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }

    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        if !(self.fill)(dest) {
            self.failed = true;
            dest.fill(0);
        }
    }
}

impl rand_core::CryptoRng for FallibleRng<'_> {}

/// Seals a data key to `recipient`.
pub fn seal_data_key(
    recipient: &[u8; 32],
    info: &[u8],
    key: &DataKey,
) -> Result<(Vec<u8>, Vec<u8>), HpkeError> {
    hpke_seal(recipient, info, key.expose_secret())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_release::REGISTER_INFO_LABEL;

    #[test]
    fn seal_open_round_trip_and_binding_of_info() {
        let kp = HpkeKeyPair::generate().unwrap();
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
                .unwrap()
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
    fn a_failing_random_generator_is_an_error_not_a_zero_key() {
        let kp = HpkeKeyPair::generate().unwrap();
        let info = release_info("asset", b"nonce");
        let err = seal_with_rng(&kp.public_key(), &info, b"secret", &mut |_| false);
        assert_eq!(err, Err(HpkeError::Random));
        let mut calls = 0;
        let ok = seal_with_rng(&kp.public_key(), &info, b"secret", &mut |dest| {
            calls += 1;
            dest.fill(7);
            true
        })
        .unwrap();
        assert!(calls > 0, "the ephemeral key comes from the generator");
        assert_eq!(&kp.open(&ok.0, &ok.1, &info).unwrap()[..], b"secret");
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
