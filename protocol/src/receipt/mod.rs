//! Execution receipts: what a sentinel signs for every request it answers.
//!
//! A receipt is a COSE_Sign1 (RFC 9052), always tagged (18), whose protected header is
//! exactly `{1: -8 (EdDSA), 3: "application/cwt"}`, whose unprotected header is empty, and
//! whose payload is a closed CWT claims set (RFC 8392) with our own EAT profile
//! ([`EAT_PROFILE`]). Everything is deterministic CBOR and checked as such on
//! verification: a receipt has exactly one valid encoding, so its SHA-256 ([`Receipt::digest`])
//! names it and chains it.
//!
//! ```text
//! claims = {
//!     1: tstr,                      ; iss: the receipt key id (16 hex characters)
//!     6: uint,                      ; iat: issue time, seconds since the Unix epoch
//!     7: bstr .size 16,             ; cti: unique receipt id
//!   ? 10: bstr .size (8..64),       ; eat_nonce: the client's nonce, when it sent one
//!     265: tstr,                    ; eat_profile: EAT_PROFILE
//!     "evidence_digest": bstr .size 32,
//!     "measurements": { * tstr => bstr },
//!     "model": bstr .size 32,       ; SHA-256 of the served model's manifest.cose
//!     "policy_digest": bstr .size 32,
//!     "previous": bstr .size 32,    ; digest of the previous receipt (zeros for the first)
//!     "request_digest": bstr .size 32,
//!     "response_digest": bstr .size 32,
//!     "sequence": uint,             ; 0 for a boot's first receipt, then +1
//!     "status": uint,               ; HTTP status of the answer (100..=599)
//!   ? "usage": { "completion_tokens": uint, "prompt_tokens": uint },
//! }
//! ```
//!
//! The request and response digests are salted ([`salted_digest`]) with a fresh salt per
//! request that only the client receives, inside the encrypted response: a reader of the
//! public receipt log cannot test guesses of a prompt against them. `docs/RECEIPTS.md`
//! gives the threat model.

mod batch;
mod claims;
mod envelope;
mod signing;

pub use batch::verify_batch;
pub use claims::{Claims, NONCE_LEN, Usage};
pub use envelope::{Receipt, ReceiptVerifyingKey, UnverifiedReceipt, has_our_envelope};
pub use signing::{ReceiptSigningKey, SigningNonce};

use aws_lc_rs::digest;

use crate::cbor::CborError;

/// The `eat_profile` claim of a TrustBridge receipt.
pub const EAT_PROFILE: &str = "tag:trustbridge.dev,2026:receipt:v1";

/// The COSE content type of the payload.
pub const CONTENT_TYPE: &str = "application/cwt";

/// Largest receipt accepted, checked before anything is parsed. A receipt with every
/// claim and a few dozen measurements is well under 2 KiB.
pub const MAX_RECEIPT_LEN: usize = 8192;

/// Most measurements a receipt may name.
pub const MAX_MEASUREMENTS: usize = 64;

/// Longest measurement name and value.
pub const MAX_MEASUREMENT_NAME: usize = 64;
/// Longest measurement value (SHA-384 PCRs are 48 bytes).
pub const MAX_MEASUREMENT_VALUE: usize = 64;

/// Length of the salt of the request and response digests.
pub const SALT_LEN: usize = 32;

/// The `previous` claim of a boot's first receipt.
pub const GENESIS: [u8; 32] = [0; 32];

/// A receipt could not be built, parsed or verified.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReceiptError {
    /// Larger than [`MAX_RECEIPT_LEN`].
    #[error("receipt of {0} bytes is larger than {MAX_RECEIPT_LEN}")]
    TooLarge(usize),
    /// Not a tagged COSE_Sign1.
    #[error("not a tagged COSE_Sign1 (tag 18)")]
    Untagged,
    /// Not deterministic CBOR, truncated, or of the wrong shape.
    #[error("malformed receipt: {0}")]
    Cbor(#[from] CborError),
    /// The protected header is not exactly `{alg: EdDSA, content type: application/cwt}`.
    #[error("protected header must be exactly {{alg: EdDSA, content type: application/cwt}}")]
    ProtectedHeader,
    /// The unprotected header is not empty.
    #[error("unprotected header must be empty")]
    UnprotectedHeader,
    /// No payload (a detached payload is not a receipt).
    #[error("detached payload")]
    DetachedPayload,
    /// The signature is not 64 bytes.
    #[error("Ed25519 signature must be 64 bytes, got {0}")]
    SignatureLength(usize),
    /// A claim this profile does not define.
    #[error("unknown claim {0}")]
    UnknownClaim(String),
    /// A required claim is missing.
    #[error("missing claim `{0}`")]
    MissingClaim(&'static str),
    /// A claim has the wrong type or size.
    #[error("claim `{claim}` must be {expected}")]
    ClaimType {
        /// The claim.
        claim: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// The `eat_profile` is not [`EAT_PROFILE`].
    #[error("eat_profile {0:?} is not a TrustBridge receipt")]
    Profile(String),
    /// The issuer claim is not the id of the key that signed.
    #[error("issuer {claimed} is not the signing key's id {key}")]
    Issuer {
        /// The `iss` claim.
        claimed: String,
        /// The verifying key's id.
        key: String,
    },
    /// The signature does not verify under the given key.
    #[error("signature does not verify under receipt key {0}")]
    BadSignature(String),
    /// The receipt key's public key, derived from its seed, is not the one ed25519-dalek
    /// derives.
    #[error("the receipt signing key could not be loaded")]
    SigningKey,
    /// The system random number generator failed: no signing nonce.
    #[error("the system random number generator failed: no signing nonce")]
    Random,
    /// A signing nonce made for another key.
    #[error("the signing nonce was made for another receipt key")]
    NonceKey,
}

/// `SHA-256(salt ‖ data)`: the request and response digests of a receipt.
pub fn salted_digest(salt: &[u8; SALT_LEN], data: &[u8]) -> [u8; 32] {
    let mut ctx = SaltedDigest::new(salt);
    ctx.update(data);
    ctx.finish()
}

/// [`salted_digest`] over data that arrives in pieces (a streamed response, chunk by
/// chunk).
#[derive(Clone)]
pub struct SaltedDigest(digest::Context);

impl SaltedDigest {
    /// Starts a digest with `salt`.
    pub fn new(salt: &[u8; SALT_LEN]) -> Self {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(salt);
        Self(ctx)
    }

    /// Adds the next piece.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The digest of the salt and every piece, in order.
    pub fn finish(self) -> [u8; 32] {
        sha256_array(self.0.finish().as_ref())
    }
}

pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    sha256_array(digest::digest(&digest::SHA256, data).as_ref())
}

fn sha256_array(d: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(d);
    out
}

/// The receipt key id: the first 8 bytes of the SHA-256 of the Ed25519 public key, the
/// same derivation as every other TrustBridge key id.
pub fn receipt_key_id(public_key: &[u8; 32]) -> crate::KeyId {
    let d = sha256(public_key);
    let mut id = [0u8; 8];
    id.copy_from_slice(&d[..8]);
    crate::KeyId(id)
}
