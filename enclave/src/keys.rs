//! The sentinel's boot-time keys, generated in TEE memory and bound into its evidence.

use std::sync::Arc;

use ed25519_dalek::SigningKey;
use trustbridge_protocol::key_release::HpkeKeyPair;
use trustbridge_protocol::key_release::client::BoundKeys;
use trustbridge_protocol::ohttp::gateway::GatewayKey;
use trustbridge_protocol::ohttp::ohttp_keys_sha256;
use trustbridge_protocol::receipt::ReceiptSigningKey;
use zeroize::Zeroizing;

/// The boot-time keys could not be generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyGenerationError {
    /// The system random number generator failed.
    #[error("the system random number generator failed: no boot-time keys")]
    Random,
    /// The OHTTP library refused to build the gateway key configuration.
    #[error("the OHTTP gateway key configuration could not be built")]
    Gateway,
    /// The signature library refused the receipt key.
    #[error("the receipt signing key could not be loaded")]
    Receipt,
}

/// The OHTTP gateway key, the receipt-signing key and the key-release key.
pub struct SentinelKeys {
    /// X25519 key of the Oblivious HTTP gateway (clients encrypt requests to it).
    pub gateway: GatewayKey,
    /// Ed25519 key that signs execution receipts.
    pub receipt: Arc<ReceiptSigningKey>,
    /// X25519 key the key broker seals the data key to.
    pub release: HpkeKeyPair,
}

impl std::fmt::Debug for SentinelKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelKeys")
            .field("gateway", &self.gateway)
            .field("receipt", &hex::encode(self.receipt.public_key()))
            .field("release", &hex::encode(self.release.public_key()))
            .finish_non_exhaustive()
    }
}

impl SentinelKeys {
    /// Fresh keys from the system CSPRNG. A failure of the generator is an error: a
    /// sentinel never runs with a predictable key (an all-zero seed would give every
    /// sentinel the same receipt key).
    pub fn generate() -> Result<Self, KeyGenerationError> {
        Self::generate_with(|dest| aws_lc_rs::rand::fill(dest).is_ok())
    }

    /// The keys from `fill`'s randomness (false: the generator failed). Each private key
    /// is derived from 32 fresh bytes: the receipt key is its Ed25519 seed, the HPKE keys
    /// come from RFC 9180 DeriveKeyPair, which is what their generation does.
    fn generate_with(mut fill: impl FnMut(&mut [u8]) -> bool) -> Result<Self, KeyGenerationError> {
        let mut seed = || -> Result<Zeroizing<[u8; 32]>, KeyGenerationError> {
            let mut seed = Zeroizing::new([0u8; 32]);
            if fill(seed.as_mut()) {
                Ok(seed)
            } else {
                Err(KeyGenerationError::Random)
            }
        };
        let receipt = ReceiptSigningKey::new(&SigningKey::from_bytes(&*seed()?))
            .map_err(|_| KeyGenerationError::Receipt)?;
        let gateway = GatewayKey::derive(&*seed()?).map_err(|_| KeyGenerationError::Gateway)?;
        let release = HpkeKeyPair::derive(seed()?.as_ref());
        Ok(Self {
            gateway,
            receipt: Arc::new(receipt),
            release,
        })
    }

    /// The public keys the evidence binding carries.
    pub fn bound_keys(&self) -> BoundKeys {
        BoundKeys {
            ohttp_keys_sha256: ohttp_keys_sha256(self.gateway.keys()),
            receipt_key: self.receipt.public_key(),
            release_key: self.release.public_key(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code
    use super::*;

    #[test]
    fn a_failing_random_generator_is_an_error() {
        assert_eq!(
            SentinelKeys::generate_with(|_| false).unwrap_err(),
            KeyGenerationError::Random
        );
        // A generator that fails on the third request (the release key) fails it all.
        let mut calls = 0;
        let third_fails = |dest: &mut [u8]| {
            calls += 1;
            dest.fill(calls);
            calls < 3
        };
        assert!(SentinelKeys::generate_with(third_fails).is_err());
        let a = SentinelKeys::generate().unwrap();
        let b = SentinelKeys::generate().unwrap();
        assert_ne!(a.receipt.public_key(), b.receipt.public_key());
        assert_ne!(a.release.public_key(), b.release.public_key());
        assert_ne!(a.gateway.keys(), b.gateway.keys());
    }
}
