//! The COSE_Sign1 envelope of a receipt: its one encoding, signing and verification.

use ed25519_dalek::{Signature, SigningKey, VerifyingKey};

use crate::cbor::strict::{Reader, Writer};

use super::{
    Claims, MAX_RECEIPT_LEN, ReceiptError, ReceiptSigningKey, SigningNonce, receipt_key_id, sha256,
};
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

/// The receipt key, ready to verify many receipts: the point decoded, its order and id
/// checked once. Ed25519 (RFC 8032) as ed25519-dalek 3 computes it: the cofactorless
/// equation `[S]B = R + [k]A` checked on the encodings (aws-lc's and RFC 8032's), a
/// non-canonical `S` refused. A key of small order (which "signs" many messages with one
/// signature), not canonically encoded or that is no curve point verifies nothing.
#[derive(Clone)]
pub struct ReceiptVerifyingKey {
    /// `None` for a key that is no point, not canonically encoded or of small order:
    /// every check fails.
    key: Option<ed25519_dalek_3::VerifyingKey>,
    public: [u8; 32],
    id: KeyId,
}

impl ReceiptVerifyingKey {
    /// The verifier for `key`.
    pub fn new(key: &VerifyingKey) -> Self {
        Self::from_bytes(key.as_bytes())
    }

    /// The verifier for the Ed25519 public key `public`. A key that is no point, is not
    /// the canonical encoding of its point (`y ≥ p`, or a sign bit on `x = 0`: RFC 8032
    /// decoding, as aws-lc's, refuses those), or is of small order verifies nothing.
    pub fn from_bytes(public: &[u8; 32]) -> Self {
        let key = ed25519_dalek_3::VerifyingKey::from_bytes(public)
            .ok()
            .filter(|k| k.to_edwards().compress().as_bytes() == public && !k.is_weak());
        Self {
            key,
            public: *public,
            id: receipt_key_id(public),
        }
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// The key's id: the `iss` claim of every receipt it signed.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// Whether the key can verify anything: a canonically encoded curve point not of
    /// small order.
    pub fn is_usable(&self) -> bool {
        self.key.is_some()
    }

    /// Whether `signature` is this key's Ed25519 signature of `message`.
    pub fn verify_signature(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        use ed25519_dalek_3::Verifier;
        self.key.as_ref().is_some_and(|k| {
            k.verify(message, &ed25519_dalek_3::Signature::from_bytes(signature))
                .is_ok()
        })
    }
}

impl std::fmt::Debug for ReceiptVerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReceiptVerifyingKey({})", self.id)
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

    /// Signs `claims` with the receipt key, whose id must be the `iss` claim, with a nonce
    /// made now ([`ReceiptSigningKey::nonce_for`] the message). A signer on a request's
    /// path makes its nonces ahead and calls [`Receipt::sign_with_nonce`].
    pub fn sign_with(claims: Claims, key: &ReceiptSigningKey) -> Result<Self, ReceiptError> {
        Self::sign_made(claims, key, None)
    }

    /// Signs `claims` with the receipt key, whose id must be the `iss` claim, and `nonce`,
    /// made ahead by that key ([`ReceiptSigningKey::nonce`]).
    pub fn sign_with_nonce(
        claims: Claims,
        key: &ReceiptSigningKey,
        nonce: SigningNonce,
    ) -> Result<Self, ReceiptError> {
        Self::sign_made(claims, key, Some(nonce))
    }

    /// Signs with `nonce`, or with one made now for the message.
    fn sign_made(
        claims: Claims,
        key: &ReceiptSigningKey,
        nonce: Option<SigningNonce>,
    ) -> Result<Self, ReceiptError> {
        if claims.issuer != key.id() {
            return Err(ReceiptError::Issuer {
                claimed: claims.issuer.to_string(),
                key: key.id().to_string(),
            });
        }
        let payload = claims.encode()?;
        let message = to_be_signed(&payload);
        let nonce = match nonce {
            Some(nonce) => nonce,
            None => key.nonce_for(&message)?,
        };
        let signature = key.sign(&message, nonce)?;
        let mut w = Writer::with_capacity(payload.len() + PROTECTED.len() + 80);
        w.tag(COSE_SIGN1_TAG)
            .array(4)
            .bytes(PROTECTED)
            .map(0)
            .bytes(&payload)
            .bytes(&signature);
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
    /// of small order. A verifier of many receipts under one key keeps a
    /// [`ReceiptVerifyingKey`] and calls [`UnverifiedReceipt::verify_with`].
    pub fn verify(self, key: &VerifyingKey) -> Result<Receipt, ReceiptError> {
        self.verify_with(&ReceiptVerifyingKey::new(key))
    }

    /// [`UnverifiedReceipt::verify`] with a key prepared once.
    pub fn verify_with(self, key: &ReceiptVerifyingKey) -> Result<Receipt, ReceiptError> {
        if self.claims.issuer != key.id {
            return Err(ReceiptError::Issuer {
                claimed: self.claims.issuer.to_string(),
                key: key.id.to_string(),
            });
        }
        if !key.verify_signature(&self.to_be_signed, &self.signature.to_bytes()) {
            return Err(ReceiptError::BadSignature(self.claims.issuer.to_string()));
        }
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
