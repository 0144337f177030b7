//! Oblivious HTTP (RFC 9458) as TrustBridge uses it: the gateway's key configuration, whose
//! SHA-256 the evidence binding carries, the media types, and the size limits.
//!
//! The key configuration is the `ohttp` crate's, with one key (id [`KEY_ID`]) of
//! DHKEM(X25519, HKDF-SHA256) and one symmetric suite, HKDF-SHA256 with AES-128-GCM: the
//! crate's pure-Rust HPKE backend has no AES-256-GCM, and the NSS backend is not worth
//! its weight for it. Encapsulation itself ([`gateway`], feature `ohttp`) is the crate's
//! too; nothing here re-implements it.

pub mod bhttp_stream;
#[cfg(feature = "ohttp")]
pub mod gateway;

use aws_lc_rs::digest;

/// The key id of the gateway's one key configuration.
pub const KEY_ID: u8 = 1;

/// `application/ohttp-keys`: the key configuration list (RFC 9540).
pub const KEYS_MEDIA_TYPE: &str = "application/ohttp-keys";
/// `message/ohttp-req`: an encapsulated request.
pub const REQUEST_MEDIA_TYPE: &str = "message/ohttp-req";
/// `message/ohttp-res`: an encapsulated response.
pub const RESPONSE_MEDIA_TYPE: &str = "message/ohttp-res";
/// `message/ohttp-chunked-req`: a chunked encapsulated request.
pub const CHUNKED_REQUEST_MEDIA_TYPE: &str = "message/ohttp-chunked-req";
/// `message/ohttp-chunked-res`: a chunked encapsulated response.
pub const CHUNKED_RESPONSE_MEDIA_TYPE: &str = "message/ohttp-chunked-res";

/// The gateway's path (RFC 9540): `GET` serves the keys, `POST` takes requests.
pub const GATEWAY_PATH: &str = "/.well-known/ohttp-gateway";
/// Where a sentinel serves its attestation bundle.
pub const ATTESTATION_PATH: &str = "/.well-known/trustbridge-attestation";

/// Outer response header by which the sentinel hands each receipt (base64url) to the
/// relay for its public receipt log; the relay removes it before answering the client.
pub const RECEIPT_LOG_HEADER: &str = "trustbridge-receipt-log";

/// Largest encapsulated request a gateway reads (checked before decapsulation).
pub const MAX_REQUEST_LEN: usize = 1 << 20;

/// SHA-256 of an `application/ohttp-keys` body: the value the evidence binding carries.
pub fn ohttp_keys_sha256(keys: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, keys).as_ref());
    out
}
