//! The COSE_Sign1 envelope of a receipt: its one encoding, signing and verification.

use aws_lc_rs::signature::KeyPair;
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};

use crate::cbor::strict::{Reader, Writer};

use super::{Claims, MAX_RECEIPT_LEN, ReceiptError, receipt_key_id, sha256};
use crate::KeyId;

/// CBOR tag of a COSE_Sign1.
const COSE_SIGN1_TAG: u64 = 18;

/// The protected header, encoded: `{1: -8, 3: "application/cwt"}`.
const PROTECTED: &[u8] = b"\xa2\x01\x27\x03\x6fapplication/cwt";

/// The COSE `Sig_structure` for a receipt: `["Signature1", protected, h'', payload]`.
fn to_be_signed(payload: &[u8]) -> Vec<u8> {
    let mut w = Writer::with_capacity(payload.len() + 48);
    w.array(4)
        .text("Signature1")
        .bytes(PROTECTED)
        .bytes(&[])
        .bytes(payload);
    w.into_vec()
}

/// Whether `bytes` begin as every TrustBridge receipt does (tag 18, a 4-item array, our
/// exact protected header): for choosing a verifier, not a verification.
pub fn has_our_envelope(bytes: &[u8]) -> bool {
    bytes.len() > 3 + PROTECTED.len()
        && bytes[..3] == [0xd2, 0x84, 0x40 | PROTECTED.len() as u8]
        && bytes[3..3 + PROTECTED.len()] == *PROTECTED
}

/// The receipt key, ready to sign many receipts: Ed25519 (RFC 8032) computed by aws-lc,
/// which signs in about 60% of ed25519-dalek's time here. RFC 8032 signatures are
/// deterministic, so the signatures are the ones any implementation makes with the key.
pub struct ReceiptSigningKey {
    pair: aws_lc_rs::signature::Ed25519KeyPair,
    public: [u8; 32],
    id: KeyId,
}

impl ReceiptSigningKey {
    /// The signer for `key` (its public key and id computed once).
    pub fn new(key: &SigningKey) -> Result<Self, ReceiptError> {
        let pair = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(key.as_bytes())
            .map_err(|_| ReceiptError::SigningKey)?;
        let public = key.verifying_key().to_bytes();
        // Both implementations derive the public key from the seed: they must agree.
        if pair.public_key().as_ref() != public {
            return Err(ReceiptError::SigningKey);
        }
        Ok(Self {
            pair,
            public,
            id: receipt_key_id(&public),
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
}

impl std::fmt::Debug for ReceiptSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReceiptSigningKey({})", self.id)
    }
}

/// A receipt whose signature was made or checked, with its exact bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    claims: Claims,
    encoded: Vec<u8>,
}

impl Receipt {
    /// Signs `claims` with the receipt key, whose id must be the `iss` claim. A signer of
    /// many receipts keeps a [`ReceiptSigningKey`] and calls [`Receipt::sign_with`].
    pub fn sign(claims: Claims, key: &SigningKey) -> Result<Self, ReceiptError> {
        Self::sign_with(claims, &ReceiptSigningKey::new(key)?)
    }

    /// Signs `claims` with the receipt key, whose id must be the `iss` claim.
    pub fn sign_with(claims: Claims, key: &ReceiptSigningKey) -> Result<Self, ReceiptError> {
        if claims.issuer != key.id {
            return Err(ReceiptError::Issuer {
                claimed: claims.issuer.to_string(),
                key: key.id.to_string(),
            });
        }
        let payload = claims.encode()?;
        let signature = key.pair.sign(&to_be_signed(&payload));
        let mut w = Writer::with_capacity(payload.len() + PROTECTED.len() + 80);
        w.tag(COSE_SIGN1_TAG)
            .array(4)
            .bytes(PROTECTED)
            .map(0)
            .bytes(&payload)
            .bytes(signature.as_ref());
        Ok(Self {
            claims,
            encoded: w.into_vec(),
        })
    }

    /// The claims.
    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    /// The receipt's exact bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.encoded
    }

    /// SHA-256 of the receipt's bytes: what the next receipt's `previous` claim names.
    pub fn digest(&self) -> [u8; 32] {
        sha256(&self.encoded)
    }
}

/// A receipt whose structure is checked (size, envelope, deterministic encoding, a
/// closed claims set) but whose signature is not yet: [`UnverifiedReceipt::verify`] with
/// the receipt key that the sentinel's evidence binds.
#[derive(Clone, Debug)]
pub struct UnverifiedReceipt {
    claims: Claims,
    to_be_signed: Vec<u8>,
    signature: Signature,
    encoded: Vec<u8>,
}

impl UnverifiedReceipt {
    /// Parses a receipt. The size is checked before anything else.
    pub fn parse(bytes: &[u8]) -> Result<Self, ReceiptError> {
        if bytes.len() > MAX_RECEIPT_LEN {
            return Err(ReceiptError::TooLarge(bytes.len()));
        }
        let mut r = Reader::new(bytes);
        if bytes.first().map(|b| b >> 5) != Some(6) || r.tag()? != COSE_SIGN1_TAG {
            return Err(ReceiptError::Untagged);
        }
        if r.array()? != 4 {
            return Err(ReceiptError::Cbor(crate::cbor::CborError::FieldType {
                field: "COSE_Sign1",
                expected: "an array of 4 items",
            }));
        }
        if r.bytes()? != PROTECTED {
            return Err(ReceiptError::ProtectedHeader);
        }
        if r.map()? != 0 {
            return Err(ReceiptError::UnprotectedHeader);
        }
        if bytes.get(r.position()) == Some(&0xf6) {
            return Err(ReceiptError::DetachedPayload);
        }
        let payload = r.bytes()?;
        let signature = r.bytes()?;
        r.finish()?;
        let signature = <[u8; 64]>::try_from(signature)
            .map_err(|_| ReceiptError::SignatureLength(signature.len()))?;
        let claims = Claims::decode(payload)?;
        Ok(Self {
            claims,
            to_be_signed: to_be_signed(payload),
            signature: Signature::from_bytes(&signature),
            encoded: bytes.to_vec(),
        })
    }

    /// The claims, not yet vouched for by any key.
    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    /// The COSE `Sig_structure` the signature covers (for batch verification).
    pub fn signed_message(&self) -> &[u8] {
        &self.to_be_signed
    }

    /// The signature (for batch verification).
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Checks that `key` issued and signed the receipt: Ed25519 (RFC 8032) with a
    /// canonical `S` (no malleable twin of a signature verifies), under a key that is not
    /// of small order. The signature check is aws-lc's, about 12% faster here than
    /// ed25519-dalek's `verify_strict`, which adds only the small-order checks done here
    /// (the key) or irrelevant to a key that signed honestly (the `R` point).
    pub fn verify(self, key: &VerifyingKey) -> Result<Receipt, ReceiptError> {
        self.check_issuer(key)?;
        let bad = || ReceiptError::BadSignature(self.claims.issuer.to_string());
        if key.is_weak() {
            return Err(bad());
        }
        aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::ED25519,
            key.as_bytes(),
        )
        .verify(&self.to_be_signed, &self.signature.to_bytes())
        .map_err(|_| bad())?;
        Ok(self.verified())
    }

    /// Fails unless the `iss` claim is `key`'s id.
    pub fn check_issuer(&self, key: &VerifyingKey) -> Result<(), ReceiptError> {
        let key_id = receipt_key_id(&key.to_bytes());
        if self.claims.issuer != key_id {
            return Err(ReceiptError::Issuer {
                claimed: self.claims.issuer.to_string(),
                key: key_id.to_string(),
            });
        }
        Ok(())
    }

    /// The receipt as verified, once its signature has been checked.
    pub(super) fn verified(self) -> Receipt {
        Receipt {
            claims: self.claims,
            encoded: self.encoded,
        }
    }
}
