//! Authentication of admin API requests: Ed25519 signatures by an admin key that the
//! policy lists.
//!
//! ```text
//! x-tb-admin-key:       hex Ed25519 public key
//! x-tb-admin-time:      Unix seconds
//! x-tb-admin-signature: hex Ed25519 signature over
//!     "trustbridge/kms/admin/v2\n" BROKER "\n" METHOD "\n" PATH "\n" TIME "\n" hex(SHA-256(body))
//! ```
//!
//! `BROKER` is the hex identity key of the broker the request is for, so a captured
//! request is no good at another broker. A request is accepted within five minutes of its
//! time, and only once: the broker remembers accepted signatures in its database
//! ([`crate::broker::store::Store::remember_admin_request`]), so a replay is refused after
//! a restart too.

use aws_lc_rs::digest;
use ed25519_dalek::{Signature, VerifyingKey};
use trustbridge_protocol::key_release::BrokerKey;

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

/// The bytes an admin signs for the broker with identity `broker`.
pub fn signing_message(
    broker: &BrokerKey,
    method: &str,
    path: &str,
    time: u64,
    body: &[u8],
) -> Vec<u8> {
    let body_hash = hex::encode(digest::digest(&digest::SHA256, body));
    format!("trustbridge/kms/admin/v2\n{broker}\n{method}\n{path}\n{time}\n{body_hash}")
        .into_bytes()
}

/// The three headers of a request signed for `broker`; `sign` produces an Ed25519
/// signature.
pub fn sign_request(
    broker: &BrokerKey,
    public_key: &[u8; 32],
    sign: impl Fn(&[u8]) -> [u8; 64],
    method: &str,
    path: &str,
    time: u64,
    body: &[u8],
) -> [(&'static str, String); 3] {
    let sig = sign(&signing_message(broker, method, path, time, body));
    [
        (KEY_HEADER, hex::encode(public_key)),
        (TIME_HEADER, time.to_string()),
        (SIGNATURE_HEADER, hex::encode(sig)),
    ]
}

/// A request whose signature verified; the caller still refuses a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    /// The admin key that signed it.
    pub key: [u8; 32],
    /// The time it was signed for.
    pub time: u64,
    /// The signature (what a replay would repeat).
    pub signature: [u8; 64],
}

/// Verifies a signed request for `broker`; `header` looks up a header value. Replays are
/// the caller's to refuse (see the module documentation).
pub fn verify_request<'a>(
    header: impl Fn(&str) -> Option<&'a str>,
    method: &str,
    path: &str,
    body: &[u8],
    broker: &BrokerKey,
    admin_keys: &[[u8; 32]],
    now: u64,
) -> Result<SignedRequest, AdminAuthError> {
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
    let mut signature = [0u8; 64];
    hex::decode_to_slice(sig_hex.trim(), &mut signature)
        .map_err(|_| AdminAuthError::Header(SIGNATURE_HEADER))?;
    let vk = VerifyingKey::from_bytes(&key).map_err(|_| AdminAuthError::UnknownKey)?;
    vk.verify_strict(
        &signing_message(broker, method, path, time, body),
        &Signature::from_bytes(&signature),
    )
    .map_err(|_| AdminAuthError::Signature)?;
    Ok(SignedRequest {
        key,
        time,
        signature,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    #[test]
    fn signed_requests_verify_only_as_signed_and_only_for_their_broker() {
        let sk = SigningKey::from_bytes(&[7; 32]);
        let pk = sk.verifying_key().to_bytes();
        let broker = BrokerKey::from_bytes([1; 32]);
        let sign = |m: &[u8]| sk.sign(m).to_bytes();
        let headers = sign_request(
            &broker,
            &pk,
            sign,
            "POST",
            "/v1/admin/contracts",
            1000,
            b"{}",
        );
        let hdr = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.as_str())
        };
        let verify = |method: &str, body: &[u8], broker: &BrokerKey, keys: &[[u8; 32]], now| {
            verify_request(hdr, method, "/v1/admin/contracts", body, broker, keys, now)
        };
        let ok = verify("POST", b"{}", &broker, &[pk], 1010).unwrap();
        assert_eq!((ok.key, ok.time), (pk, 1000));
        assert_eq!(
            verify("POST", b"{\"x\":1}", &broker, &[pk], 1010),
            Err(AdminAuthError::Signature)
        );
        assert_eq!(
            verify("PUT", b"{}", &broker, &[pk], 1010),
            Err(AdminAuthError::Signature)
        );
        let other_broker = BrokerKey::from_bytes([2; 32]);
        assert_eq!(
            verify("POST", b"{}", &other_broker, &[pk], 1010),
            Err(AdminAuthError::Signature),
            "a request signed for one broker is refused by another"
        );
        assert_eq!(
            verify("POST", b"{}", &broker, &[[1; 32]], 1010),
            Err(AdminAuthError::UnknownKey)
        );
        assert_eq!(
            verify("POST", b"{}", &broker, &[pk], 2000),
            Err(AdminAuthError::Stale)
        );
    }
}
