//! The receipt key's signatures: Ed25519 (RFC 8032) whose nonce is made ahead.
//!
//! An Ed25519 signature of `M` by the key `a` (public `A = [a]B`) is `(R, S)` with
//! `R = [r]B` and `S = r + k·a mod L`, `k = SHA-512(R ‖ A ‖ M)`. RFC 8032 derives the
//! nonce from the message (`r = SHA-512(prefix ‖ M)`), which leaves the fixed-base
//! scalar multiplication `[r]B`, most of a signature's cost, until the message is known.
//! A verifier checks `[S]B = R + [k]A` and cannot tell how `r` was chosen; what signing
//! needs of `r` is that it be secret, uniform modulo `L` and never used for two messages.
//! So a receipt key derives it without the message:
//!
//! ```text
//! r = SHA-512("TrustBridge receipt nonce v1" ‖ prefix ‖ counter ‖ fresh) mod L
//! ```
//!
//! - `prefix`, the secret half of RFC 8032's expanded key, makes `r` a pseudo-random
//!   function's output: as secret as the key, whatever the other inputs are;
//! - `counter` (64 bits, little-endian) counts the nonces this key object made, so one
//!   object never makes the same `r` twice, even with a broken random number generator;
//! - `fresh` is 32 bytes of the system's random number generator, so two objects of one
//!   key, each counting from 0, do not meet either (the sentinel's receipt key is new at
//!   every boot, and one object signs all of a boot's receipts);
//! - a 512-bit hash reduced modulo `L` (about 2^252) is uniform to within 2^-250.
//!
//! A [`SigningNonce`] can so be made before its receipt (the sentinel keeps a few ready on
//! a thread of its own: [`crate::ahead`]) and the signature then costs a SHA-512 and a
//! scalar multiply-add. A nonce is for one key, consumed by the one signature that uses
//! it (moved as a pointer, never copied) and zeroized when dropped. A nonce made at the
//! moment of signing ([`ReceiptSigningKey::nonce_for`]) also hashes the message in after
//! `fresh`, so it is as safe as RFC 8032's even when the random number generator repeats.
//!
//! What this assumes that RFC 8032 did not: the signer's memory is never cloned while it
//! holds nonces made ahead. Two copies of a running sentinel (a VM snapshot restored
//! twice) would each sign a different receipt with the same ready nonce, which gives the
//! key away. A TEE guest cannot be snapshotted by its host (Nitro enclaves; SEV-SNP
//! without a migration agent, which the appraisal policy should not allow); the receipt
//! key is new at each boot, so a restart never reuses one either.

use std::sync::atomic::{AtomicU64, Ordering};

use aws_lc_rs::digest;
use curve25519_dalek_5::{EdwardsPoint, Scalar};
use ed25519_dalek::SigningKey;
use zeroize::Zeroizing;

use super::{ReceiptError, receipt_key_id};
use crate::KeyId;

/// The domain of the nonce derivation: no other hash of ours begins with it.
const NONCE_DOMAIN: &[u8] = b"TrustBridge receipt nonce v1";

/// The receipt key, ready to sign many receipts (its expanded secret, public key and id
/// computed once).
pub struct ReceiptSigningKey {
    /// `a`: the clamped lower half of `SHA-512(seed)`, reduced.
    secret: Zeroizing<Scalar>,
    /// The upper half of `SHA-512(seed)`: the nonces' secret.
    prefix: Zeroizing<[u8; 32]>,
    public: [u8; 32],
    id: KeyId,
    /// Nonces made so far.
    nonces: AtomicU64,
}

/// One signature's nonce `r` and its commitment `R = [r]B`, made ahead for one key.
pub struct SigningNonce {
    /// Boxed, so that moving the nonce (into a pool, out of it, into the signature) copies
    /// a pointer and leaves no copy of `r` behind; wiped when dropped.
    r: Box<Zeroizing<Scalar>>,
    commitment: [u8; 32],
    /// The public key of the key it was made for.
    key: [u8; 32],
}

impl std::fmt::Debug for SigningNonce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningNonce(for {})", receipt_key_id(&self.key))
    }
}

impl ReceiptSigningKey {
    /// The signer for `key`. Its public key is derived here and by ed25519-dalek: the two
    /// must agree.
    pub fn new(key: &SigningKey) -> Result<Self, ReceiptError> {
        let expanded = sha512(&[key.as_bytes()]);
        let mut lower = Zeroizing::new([0u8; 32]);
        lower.copy_from_slice(&expanded[..32]);
        // RFC 8032 5.1.5: clear the three lowest bits, clear the highest, set the second
        // highest.
        lower[0] &= 248;
        lower[31] &= 127;
        lower[31] |= 64;
        let secret = Zeroizing::new(Scalar::from_bytes_mod_order(*lower));
        let mut prefix = Zeroizing::new([0u8; 32]);
        prefix.copy_from_slice(&expanded[32..]);
        let public = EdwardsPoint::mul_base(&secret).compress().to_bytes();
        if public != key.verifying_key().to_bytes() {
            return Err(ReceiptError::SigningKey);
        }
        Ok(Self {
            secret,
            prefix,
            public,
            id: receipt_key_id(&public),
            nonces: AtomicU64::new(0),
        })
    }

    /// The Ed25519 public key (what the evidence binding carries).
    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// The key's id: the `iss` claim of every receipt it signs.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// A fresh nonce for one signature by this key, made before the message is known
    /// (about 20 µs: a fixed-base scalar multiplication). Fails only when the system
    /// random number generator does.
    pub fn nonce(&self) -> Result<SigningNonce, ReceiptError> {
        self.derive_nonce(&[])
    }

    /// A fresh nonce for signing `message` now: [`ReceiptSigningKey::nonce`] with the
    /// message hashed in too, so that even a random number generator that repeats never
    /// gives two messages one nonce.
    pub fn nonce_for(&self, message: &[u8]) -> Result<SigningNonce, ReceiptError> {
        self.derive_nonce(message)
    }

    /// `r = SHA-512(domain ‖ prefix ‖ counter ‖ fresh ‖ message) mod L`.
    fn derive_nonce(&self, message: &[u8]) -> Result<SigningNonce, ReceiptError> {
        let mut fresh = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(&mut fresh[..]).map_err(|_| ReceiptError::Random)?;
        let counter = self.nonces.fetch_add(1, Ordering::Relaxed).to_le_bytes();
        let wide = sha512(&[
            NONCE_DOMAIN,
            &self.prefix[..],
            &counter,
            &fresh[..],
            message,
        ]);
        Ok(self.nonce_from(&wide))
    }

    /// The nonce `r = wide mod L`.
    fn nonce_from(&self, wide: &[u8; 64]) -> SigningNonce {
        let r = Box::new(Zeroizing::new(Scalar::from_bytes_mod_order_wide(wide)));
        let commitment = EdwardsPoint::mul_base(&r).compress().to_bytes();
        SigningNonce {
            r,
            commitment,
            key: self.public,
        }
    }

    /// The Ed25519 signature `R ‖ S` of `message` with `nonce`, which must have been made
    /// by this key.
    pub(crate) fn sign(
        &self,
        message: &[u8],
        nonce: SigningNonce,
    ) -> Result<[u8; 64], ReceiptError> {
        if nonce.key != self.public {
            return Err(ReceiptError::NonceKey);
        }
        let k =
            Scalar::from_bytes_mod_order_wide(&sha512(&[&nonce.commitment, &self.public, message]));
        // `k·a` gives `a` away to anyone who knows `k` (public): wiped too. The secrets are
        // taken by reference, so no copy of them is left on the stack.
        #[allow(clippy::op_ref)]
        let ka = Zeroizing::new(k * &*self.secret);
        #[allow(clippy::op_ref)]
        let s = &*ka + &**nonce.r;
        let mut signature = [0u8; 64];
        signature[..32].copy_from_slice(&nonce.commitment);
        signature[32..].copy_from_slice(s.as_bytes());
        Ok(signature)
    }
}

impl std::fmt::Debug for ReceiptSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReceiptSigningKey({})", self.id)
    }
}

/// SHA-512 of the concatenation of `parts`, wiped when dropped (it is secret for a
/// nonce or the expanded key; aws-lc wipes its hashing state when it finishes).
fn sha512(parts: &[&[u8]]) -> Zeroizing<[u8; 64]> {
    let mut ctx = digest::Context::new(&digest::SHA512);
    for part in parts {
        ctx.update(part);
    }
    let mut out = Zeroizing::new([0u8; 64]);
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code
    use super::*;
    use ed25519_dalek::{Signer, Verifier};

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    /// With RFC 8032's own nonce (`SHA-512(prefix ‖ M)`), the arithmetic gives RFC 8032's
    /// signature byte for byte: the one ed25519-dalek makes, and RFC 8032's test vectors.
    #[test]
    fn with_the_rfc_8032_nonce_the_signature_is_rfc_8032s() {
        let rfc_vector_1 = (
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
            "",
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        );
        let rfc_vector_3 = (
            "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
            "af82",
            "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
        );
        for (seed, message, signature) in [rfc_vector_1, rfc_vector_3] {
            let seed: [u8; 32] = hex::decode(seed).unwrap().try_into().unwrap();
            let message = hex::decode(message).unwrap();
            let signer = ReceiptSigningKey::new(&SigningKey::from_bytes(&seed)).unwrap();
            let nonce = signer.nonce_from(&sha512(&[&signer.prefix[..], &message[..]]));
            let made = signer.sign(&message, nonce).unwrap();
            assert_eq!(hex::encode(made), signature);
        }
        for seed in [1, 2, 0xff] {
            let k = key(seed);
            let signer = ReceiptSigningKey::new(&k).unwrap();
            for len in [0, 1, 63, 64, 500] {
                let message = vec![seed; len];
                let nonce = signer.nonce_from(&sha512(&[&signer.prefix[..], &message[..]]));
                let made = signer.sign(&message, nonce).unwrap();
                assert_eq!(made, k.sign(&message).to_bytes());
            }
        }
    }

    #[test]
    fn signatures_with_fresh_nonces_verify_under_independent_implementations() {
        for seed in [1, 2, 0xff] {
            let k = key(seed);
            let signer = ReceiptSigningKey::new(&k).unwrap();
            assert_eq!(signer.public_key(), k.verifying_key().to_bytes());
            let aws = aws_lc_rs::signature::UnparsedPublicKey::new(
                &aws_lc_rs::signature::ED25519,
                signer.public_key(),
            );
            for len in [0, 1, 100, 1000] {
                let message = vec![seed ^ 0x5a; len];
                let made = signer.sign(&message, signer.nonce().unwrap()).unwrap();
                let signature = ed25519_dalek::Signature::from_bytes(&made);
                k.verifying_key()
                    .verify_strict(&message, &signature)
                    .unwrap();
                k.verifying_key().verify(&message, &signature).unwrap();
                aws.verify(&message, &made).unwrap();
                // Another message, or a flipped bit of the signature: refused.
                let mut other = message.clone();
                other.push(1);
                assert!(aws.verify(&other, &made).is_err());
                let mut flipped = made;
                flipped[40] ^= 1;
                assert!(aws.verify(&message, &flipped).is_err());
            }
        }
    }

    #[test]
    fn every_nonce_is_new_even_for_two_objects_of_one_key() {
        let (a, b) = (
            ReceiptSigningKey::new(&key(4)).unwrap(),
            ReceiptSigningKey::new(&key(4)).unwrap(),
        );
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            for signer in [&a, &b] {
                let nonce = signer.nonce().unwrap();
                assert!(seen.insert(nonce.commitment), "a nonce came twice");
            }
        }
        // So one message signed twice gets two signatures, both valid.
        let (x, y) = (
            a.sign(b"m", a.nonce().unwrap()).unwrap(),
            a.sign(b"m", a.nonce().unwrap()).unwrap(),
        );
        assert_ne!(x, y);
    }

    #[test]
    fn a_nonce_signs_only_for_the_key_it_was_made_for() {
        let (a, b) = (
            ReceiptSigningKey::new(&key(5)).unwrap(),
            ReceiptSigningKey::new(&key(6)).unwrap(),
        );
        assert_eq!(
            b.sign(b"m", a.nonce().unwrap()),
            Err(ReceiptError::NonceKey)
        );
        // The nonce's secret is never printed.
        let nonce = a.nonce().unwrap();
        let shown = format!("{nonce:?}");
        assert_eq!(shown, format!("SigningNonce(for {})", a.id()));
    }
}
