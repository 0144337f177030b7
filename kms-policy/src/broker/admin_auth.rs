//! Authentication of admin API requests: Ed25519 signatures by an admin key that the
//! policy lists.
//!
//! ```text
//! x-tb-admin-key:       hex Ed25519 public key
//! x-tb-admin-time:      Unix seconds
//! x-tb-admin-signature: hex Ed25519 signature over
//!     "trustbridge/kms/admin/v1\n" METHOD "\n" PATH "\n" TIME "\n" hex(SHA-256(body))
//! ```
//!
//! A request is accepted within five minutes of its time, and only once: a replayed
//! signature is rejected.

use std::collections::HashMap;
use std::sync::Mutex;

use aws_lc_rs::digest;
use ed25519_dalek::{Signature, VerifyingKey};

/// Header carrying the admin public key.
pub const KEY_HEADER: &str = "x-tb-admin-key";
/// Header carrying the request time.
pub const TIME_HEADER: &str = "x-tb-admin-time";
/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-tb-admin-signature";
/// Largest accepted clock difference.
pub const MAX_SKEW_SECS: u64 = 300;

/// Why an admin request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AdminAuthError {
    /// A header is missing or malformed.
    #[error("missing or malformed admin authentication header {0}")]
    Header(&'static str),
    /// The key is not an admin key of the policy.
    #[error("key is not an admin key of the policy")]
    UnknownKey,
    /// The request time is too far from the broker's clock.
    #[error("request time is more than {MAX_SKEW_SECS} s from the broker's clock")]
    Stale,
    /// The signature does not verify.
    #[error("admin signature does not verify")]
    Signature,
    /// The same signed request was seen before.
    #[error("replayed admin request")]
    Replay,
}

/// The bytes an admin signs.
pub fn signing_message(method: &str, path: &str, time: u64, body: &[u8]) -> Vec<u8> {
    let body_hash = hex::encode(digest::digest(&digest::SHA256, body));
    format!("trustbridge/kms/admin/v1\n{method}\n{path}\n{time}\n{body_hash}").into_bytes()
}

/// The three headers of a signed request; `sign` produces an Ed25519 signature.
pub fn sign_request(
    public_key: &[u8; 32],
    sign: impl Fn(&[u8]) -> [u8; 64],
    method: &str,
    path: &str,
    time: u64,
    body: &[u8],
) -> [(&'static str, String); 3] {
    let sig = sign(&signing_message(method, path, time, body));
    [
        (KEY_HEADER, hex::encode(public_key)),
        (TIME_HEADER, time.to_string()),
        (SIGNATURE_HEADER, hex::encode(sig)),
    ]
}

/// Remembers accepted signatures for the skew window, to refuse replays.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    seen: Mutex<HashMap<Vec<u8>, u64>>,
}

/// Verifies a signed request; `header` looks up a header value.
#[allow(clippy::too_many_arguments)]
pub fn verify_request<'a>(
    header: impl Fn(&str) -> Option<&'a str>,
    method: &str,
    path: &str,
    body: &[u8],
    admin_keys: &[[u8; 32]],
    now: u64,
    guard: &ReplayGuard,
) -> Result<[u8; 32], AdminAuthError> {
    let key_hex = header(KEY_HEADER).ok_or(AdminAuthError::Header(KEY_HEADER))?;
    let mut key = [0u8; 32];
    hex::decode_to_slice(key_hex.trim(), &mut key)
        .map_err(|_| AdminAuthError::Header(KEY_HEADER))?;
    if !admin_keys.contains(&key) {
        return Err(AdminAuthError::UnknownKey);
    }
    let time: u64 = header(TIME_HEADER)
        .and_then(|t| t.trim().parse().ok())
        .ok_or(AdminAuthError::Header(TIME_HEADER))?;
    if now.abs_diff(time) > MAX_SKEW_SECS {
        return Err(AdminAuthError::Stale);
    }
    let sig_hex = header(SIGNATURE_HEADER).ok_or(AdminAuthError::Header(SIGNATURE_HEADER))?;
    let mut sig = [0u8; 64];
    hex::decode_to_slice(sig_hex.trim(), &mut sig)
        .map_err(|_| AdminAuthError::Header(SIGNATURE_HEADER))?;
    let vk = VerifyingKey::from_bytes(&key).map_err(|_| AdminAuthError::UnknownKey)?;
    vk.verify_strict(
        &signing_message(method, path, time, body),
        &Signature::from_bytes(&sig),
    )
    .map_err(|_| AdminAuthError::Signature)?;
    let mut seen = guard.seen.lock().map_err(|_| AdminAuthError::Replay)?;
    seen.retain(|_, t| now.abs_diff(*t) <= MAX_SKEW_SECS);
    if seen.insert(sig.to_vec(), time).is_some() {
        return Err(AdminAuthError::Replay);
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    #[test]
    fn signed_requests_verify_once_and_only_as_signed() {
        let sk = SigningKey::from_bytes(&[7; 32]);
        let pk = sk.verifying_key().to_bytes();
        let sign = |m: &[u8]| sk.sign(m).to_bytes();
        let headers = sign_request(&pk, sign, "POST", "/v1/admin/contracts", 1000, b"{}");
        let get = |h: &[(&'static str, String); 3]| {
            let h = h.clone();
            move |name: &str| h.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone())
        };
        let lookup = get(&headers);
        let owned: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let hdr = |name: &str| {
            owned
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let guard = ReplayGuard::default();
        assert_eq!(
            verify_request(
                hdr,
                "POST",
                "/v1/admin/contracts",
                b"{}",
                &[pk],
                1010,
                &guard
            ),
            Ok(pk)
        );
        assert_eq!(
            verify_request(
                hdr,
                "POST",
                "/v1/admin/contracts",
                b"{}",
                &[pk],
                1010,
                &guard
            ),
            Err(AdminAuthError::Replay)
        );
        let fresh = ReplayGuard::default();
        assert_eq!(
            verify_request(
                hdr,
                "POST",
                "/v1/admin/contracts",
                b"{\"x\":1}",
                &[pk],
                1010,
                &fresh
            ),
            Err(AdminAuthError::Signature)
        );
        assert_eq!(
            verify_request(
                hdr,
                "PUT",
                "/v1/admin/contracts",
                b"{}",
                &[pk],
                1010,
                &fresh
            ),
            Err(AdminAuthError::Signature)
        );
        assert_eq!(
            verify_request(
                hdr,
                "POST",
                "/v1/admin/contracts",
                b"{}",
                &[[1; 32]],
                1010,
                &fresh
            ),
            Err(AdminAuthError::UnknownKey)
        );
        assert_eq!(
            verify_request(
                hdr,
                "POST",
                "/v1/admin/contracts",
                b"{}",
                &[pk],
                2000,
                &fresh
            ),
            Err(AdminAuthError::Stale)
        );
        assert!(lookup(KEY_HEADER).is_some());
    }
}
