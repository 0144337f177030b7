//! The sentinel's boot-time keys, generated in TEE memory and bound into its evidence.

use ed25519_dalek::SigningKey;
use trustbridge_protocol::binding::EvidenceBinding;
use trustbridge_protocol::key_release::HpkeKeyPair;
use trustbridge_protocol::ohttp::{key_config, ohttp_keys, ohttp_keys_sha256};
use zeroize::Zeroizing;

/// The OHTTP gateway key, the receipt-signing key and the key-release key.
pub struct SentinelKeys {
    /// X25519 key of the Oblivious HTTP gateway (clients encrypt requests to it).
    pub gateway: HpkeKeyPair,
    /// Ed25519 key that signs execution receipts.
    pub receipt: SigningKey,
    /// X25519 key the key broker seals the data key to.
    pub release: HpkeKeyPair,
    /// The `application/ohttp-keys` body served to clients.
    pub ohttp_keys: Vec<u8>,
}

impl std::fmt::Debug for SentinelKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelKeys")
            .field("gateway", &hex::encode(self.gateway.public_key()))
            .field(
                "receipt",
                &hex::encode(self.receipt.verifying_key().to_bytes()),
            )
            .field("release", &hex::encode(self.release.public_key()))
            .finish_non_exhaustive()
    }
}

impl SentinelKeys {
    /// Fresh keys from the CSPRNG.
    pub fn generate() -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        let _ = aws_lc_rs::rand::fill(seed.as_mut());
        let gateway = HpkeKeyPair::generate();
        let ohttp_keys = ohttp_keys(&key_config(1, &gateway.public_key()));
        Self {
            gateway,
            receipt: SigningKey::from_bytes(&seed),
            release: HpkeKeyPair::generate(),
            ohttp_keys,
        }
    }

    /// The evidence binding of these keys and the broker's `nonce`.
    pub fn binding(&self, nonce: Vec<u8>) -> EvidenceBinding {
        EvidenceBinding {
            nonce,
            ohttp_keys_sha256: ohttp_keys_sha256(&self.ohttp_keys),
            receipt_key: self.receipt.verifying_key().to_bytes(),
            release_key: self.release.public_key(),
        }
    }
}
