//! The bytes that cross TrustBridge's trust boundaries.
//!
//! - [`sealed`]: the sealed-weights stream format (Tink `AES256_GCM_HKDF`), data keys.
//! - [`bundle`]: a sealed model: per-file associated data and the signed manifest.
//! - [`attestation_bundle`]: what a sentinel publishes so clients can attest it.
//! - [`binding`]: the evidence binding rule (sentinel keys + verifier nonce -> evidence).
//! - [`platform`]: the TEE platforms, by name.
//! - [`key_release`]: key-release messages, denial codes and HPKE sealing of data keys.
//! - [`ohttp`]: the Oblivious HTTP key configuration the evidence binding covers.
//! - [`receipt`]: execution receipts (COSE_Sign1 over a closed CWT claims set).
//! - [`cbor`]: deterministic CBOR used by every signed structure.
//! - [`rfc3339`]: strict RFC 3339 times (contract windows, verification times).
//! - [`ahead`]: values made ahead of need by a thread of their own (HPKE contexts,
//!   signing nonces).
//! - [`json_member`]: one member of a JSON object, read without building the rest.
//!
//! This crate does no file-system or network I/O and has no async: it reads and writes
//! only through the `std::io` streams its callers hand it ([`ahead`] starts a thread,
//! which computes and nothing else).
#![forbid(unsafe_code)]

pub mod ahead;
pub mod attestation_bundle;
pub mod binding;
pub mod bundle;
pub mod cbor;
pub mod cose_es384;
pub mod json_member;
mod key_id;
pub mod key_release;
pub mod ohttp;
pub mod platform;
pub mod receipt;
pub mod rfc3339;
pub mod sealed;

pub use key_id::{KeyId, KeyIdParseError};
pub use platform::Platform;
