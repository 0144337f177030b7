//! Receipt signing: the sentinel's one hash chain per boot.
//!
//! Every answer gets the next sequence number and names the digest of the receipt before
//! it ([`trustbridge_protocol::receipt`]). Signing happens under one lock, so the chain has
//! exactly one order however many requests run at once. The lock is never held long: a
//! thread of the signer's own makes the signatures' nonces ahead (their fixed-base scalar
//! multiplication, about 20 µs each: [`ReceiptSigningKey::nonce`]), so a signature costs
//! a SHA-512 and a scalar multiply-add, about 2 µs. A request that finds no nonce ready
//! makes its own, for its receipt's message (`ReceiptSigningKey::nonce_for`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use trustbridge_protocol::KeyId;
use trustbridge_protocol::ahead::Ahead;
use trustbridge_protocol::receipt::{
    Claims, GENESIS, Receipt, ReceiptError, ReceiptSigningKey, SigningNonce, Usage,
};

/// Signing nonces kept ready: more than a burst of answers finishing at once needs.
const NONCES_AHEAD: usize = 16;

/// A receipt could not be signed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The system random number generator failed (the receipt id).
    #[error("the system random number generator failed: no receipt id")]
    Random,
    /// The claims are out of range.
    #[error(transparent)]
    Receipt(#[from] ReceiptError),
    /// A previous signer panicked while holding the chain.
    #[error("the receipt chain lock is poisoned")]
    Poisoned,
}

/// What one answer's receipt states, besides what the chain adds (issuer, time, id,
/// sequence, previous).
#[derive(Clone, Debug)]
pub struct ReceiptFacts {
    /// The client's nonce, when it sent one.
    pub nonce: Option<Vec<u8>>,
    /// SHA-256 of the served model's `manifest.cose`.
    pub model: [u8; 32],
    /// Salted digest of the decapsulated request.
    pub request_digest: [u8; 32],
    /// Salted digest of the response content.
    pub response_digest: [u8; 32],
    /// SHA-256 of the evidence of the published attestation bundle.
    pub evidence_digest: [u8; 32],
    /// The measurements that evidence reports.
    pub measurements: BTreeMap<String, Vec<u8>>,
    /// SHA-256 of the key-release policy the broker released the model key under.
    pub policy_digest: [u8; 32],
    /// The HTTP status of the answer.
    pub status: u16,
    /// Token counts, when the handler reported them.
    pub usage: Option<Usage>,
}

/// The chain's tip: what the next receipt continues.
struct Tip {
    sequence: u64,
    previous: [u8; 32],
}

/// Signs receipts with the boot's receipt key, chaining them.
pub struct ReceiptSigner {
    key: Arc<ReceiptSigningKey>,
    issuer: KeyId,
    tip: Mutex<Tip>,
    /// `None` when no thread could be started: every signature makes its own nonce.
    nonces: Option<Ahead<SigningNonce>>,
}

impl std::fmt::Debug for ReceiptSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReceiptSigner({})", self.issuer)
    }
}

impl ReceiptSigner {
    /// A signer whose first receipt has sequence 0, with a thread that keeps its nonces
    /// ready (stopped when the signer is dropped).
    pub fn new(key: Arc<ReceiptSigningKey>) -> Self {
        let for_thread = key.clone();
        Self {
            issuer: key.id(),
            nonces: Ahead::start("tb-receipt-nonce", NONCES_AHEAD, move || {
                for_thread.nonce().ok()
            }),
            key,
            tip: Mutex::new(Tip {
                sequence: 0,
                previous: GENESIS,
            }),
        }
    }

    /// The receipt key's id.
    pub fn issuer(&self) -> KeyId {
        self.issuer
    }

    /// Signs the next receipt of the chain.
    pub fn sign(&self, facts: ReceiptFacts) -> Result<Receipt, SignError> {
        let mut id = [0u8; 16];
        aws_lc_rs::rand::fill(&mut id).map_err(|_| SignError::Random)?;
        let issued_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let nonce = self.nonces.as_ref().and_then(Ahead::take);
        let mut tip = self.tip.lock().map_err(|_| SignError::Poisoned)?;
        let claims = Claims {
            issuer: self.issuer,
            issued_at,
            id,
            nonce: facts.nonce,
            sequence: tip.sequence,
            previous: tip.previous,
            model: facts.model,
            request_digest: facts.request_digest,
            response_digest: facts.response_digest,
            evidence_digest: facts.evidence_digest,
            measurements: facts.measurements,
            policy_digest: facts.policy_digest,
            status: facts.status,
            usage: facts.usage,
        };
        let receipt = match nonce {
            Some(nonce) => Receipt::sign_with_nonce(claims, &self.key, nonce)?,
            // None ready (a burst): one made now, for this receipt.
            None => Receipt::sign_with(claims, &self.key)?,
        };
        tip.sequence += 1;
        tip.previous = receipt.digest();
        Ok(receipt)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn facts() -> ReceiptFacts {
        ReceiptFacts {
            nonce: None,
            model: [1; 32],
            request_digest: [2; 32],
            response_digest: [3; 32],
            evidence_digest: [4; 32],
            measurements: BTreeMap::new(),
            policy_digest: [5; 32],
            status: 200,
            usage: None,
        }
    }

    #[test]
    fn receipts_chain_in_signing_order_even_from_many_threads() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let signer = Arc::new(ReceiptSigner::new(Arc::new(
            ReceiptSigningKey::new(&key).unwrap(),
        )));
        let facts = facts();
        let receipts: Vec<Receipt> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let (signer, facts) = (signer.clone(), facts.clone());
                    s.spawn(move || {
                        (0..25)
                            .map(|_| signer.sign(facts.clone()).unwrap())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let mut by_sequence = receipts;
        by_sequence.sort_by_key(|r| r.claims().sequence);
        let sequences: Vec<u64> = by_sequence.iter().map(|r| r.claims().sequence).collect();
        assert_eq!(sequences, (0..100).collect::<Vec<_>>());
        let boots = trustbridge_verifier::receipt::check_chains(&by_sequence).unwrap();
        assert_eq!(boots.len(), 1);
        assert_eq!(boots[0].count, 100);
    }

    #[test]
    fn signatures_use_the_nonces_made_ahead_and_verify() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[4; 32]);
        let signer = ReceiptSigner::new(Arc::new(ReceiptSigningKey::new(&key).unwrap()));
        let nonces = signer.nonces.as_ref().unwrap();
        let start = std::time::Instant::now();
        while nonces.ready() < NONCES_AHEAD {
            assert!(start.elapsed().as_secs() < 10, "no nonces made ahead");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let facts = facts();
        for _ in 0..3 {
            let receipt = signer.sign(facts.clone()).unwrap();
            trustbridge_protocol::receipt::UnverifiedReceipt::parse(receipt.as_bytes())
                .unwrap()
                .verify(&key.verifying_key())
                .unwrap();
        }
        assert_eq!(nonces.taken(), 3);
    }
}
