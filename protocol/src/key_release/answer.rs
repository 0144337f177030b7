//! Reading a broker's answer before believing any of it: the size cap, what each status
//! stands for, the broker's signature over an answer, and the errors a client reports.
//! [`super::client`]'s state machine and the standing answers ([`super::broker_info`])
//! read every answer through here.

use serde::de::DeserializeOwned;

use super::client::MAX_ANSWER_BYTES;
use super::denial::UnknownDenialCode;
use super::hpke::HpkeError;
use super::messages::ErrorBody;
use super::statement::Statement;
use super::vocabulary::{BrokerKey, parse32};
use super::{DenialCode, MAX_LEASE_SECS, NONCE_TTL_SECS};

/// Which broker answer an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The answer to a challenge request.
    Challenge,
    /// The answer to a release request.
    Release,
    /// A 403 denial.
    Denial,
    /// `GET /v1/broker`.
    BrokerInfo,
    /// The answer to an admin request.
    Admin,
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Challenge => "challenge",
            Self::Release => "release",
            Self::Denial => "denial",
            Self::BrokerInfo => "broker information",
            Self::Admin => "admin",
        })
    }
}

/// Why an answer is not believed: nothing in it is vouched for by the pinned broker key.
/// Whoever sent it (the relay answering a `CONNECT` itself, a stale or forged answer), it
/// is the same refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unauthenticated {
    /// Larger than [`MAX_ANSWER_BYTES`]: refused unread.
    #[error("an answer of {len} bytes, more than {MAX_ANSWER_BYTES}")]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// Not the JSON (or the hex inside it) that a signed answer of this kind has.
    #[error("the {answer} answer is malformed: {field}")]
    Malformed {
        /// The answer.
        answer: Answer,
        /// What is wrong with it.
        field: &'static str,
    },
    /// An HTTP 403 without a signature.
    #[error("an unsigned denial {error:?}")]
    UnsignedDenial {
        /// The reason it claims (unauthenticated, shortened).
        error: String,
    },
    /// The signature does not verify for this request under the pinned key.
    #[error("the {answer} answer is not signed by the pinned broker key {pinned} for this request")]
    BadSignature {
        /// The answer.
        answer: Answer,
        /// The pinned key.
        pinned: BrokerKey,
    },
    /// The broker information names another identity than the pinned one.
    #[error("the broker at this address has identity key {named}, not the pinned {pinned}")]
    OtherIdentity {
        /// The key it names.
        named: BrokerKey,
        /// The pinned key.
        pinned: BrokerKey,
    },
}

/// Why a key release produced no key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReleaseClientError {
    /// The broker denied it; the denial is signed by the pinned broker key.
    #[error("denied: {code}: {detail}")]
    Denied {
        /// The reason code.
        code: DenialCode,
        /// The broker's detail.
        detail: String,
    },
    /// A 5xx or 429 answer, or no answer: worth retrying. Nothing in it is believed.
    #[error("broker unavailable (HTTP {status}): {detail}")]
    Unavailable {
        /// HTTP status.
        status: u16,
        /// What the answer said (unauthenticated, shortened).
        detail: String,
    },
    /// Another unsigned HTTP error (e.g. 400 for a malformed request): not worth retrying.
    #[error("the broker rejected the request (HTTP {status}): {detail}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// What the answer said (unauthenticated, shortened).
        detail: String,
    },
    /// An answer that the pinned broker key did not sign for this request.
    #[error("answer not authenticated by the pinned broker key: {0}")]
    Unauthenticated(#[from] Unauthenticated),
    /// A signed release for another provider than the one pinned.
    #[error("the broker names provider key {named}, but this client pins {pinned}")]
    WrongProvider {
        /// The pinned provider key (hex).
        pinned: String,
        /// The provider key the release names (hex).
        named: String,
    },
    /// A signed release of another asset or contract than asked for.
    #[error(
        "the key was released for {named_asset} under {named_contract}, not for {asset} under {contract}"
    )]
    WrongAsset {
        /// The asset asked for.
        asset: String,
        /// The contract asked for.
        contract: String,
        /// The asset the release names.
        named_asset: String,
        /// The contract the release names.
        named_contract: String,
    },
    /// A signed challenge that lives longer than a nonce may.
    #[error("a challenge valid for {secs} s (at most {NONCE_TTL_SECS})")]
    ChallengeTooLong {
        /// Its lifetime.
        secs: u64,
    },
    /// A signed release whose lease is 0 or longer than [`MAX_LEASE_SECS`].
    #[error("a release with a lease of {secs} s (1 to {MAX_LEASE_SECS})")]
    LeaseOutOfRange {
        /// The lease it names.
        secs: u64,
    },
    /// A signed denial with a reason code this version does not know.
    #[error("a signed denial with {0}")]
    UnknownDenialCode(#[from] UnknownDenialCode),
    /// The sealed key does not open for this client's release key, asset and nonce.
    #[error("the sealed key: {0}")]
    SealedKey(#[from] HpkeError),
    /// The sealed key opens, but is not the key the broker names.
    #[error("the sealed key has id {opened}, the broker named {named}")]
    KeyIdMismatch {
        /// The id of the key that opened.
        opened: String,
        /// The id the release names.
        named: String,
    },
    /// The caller's binding or release key is not the one this exchange needs (a bug in
    /// the caller, not the broker's doing).
    #[error("the evidence binding does not carry {0}")]
    BindingMismatch(&'static str),
    /// A request body could not be encoded.
    #[error("a request cannot be encoded as JSON")]
    RequestEncoding,
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
}

impl ReleaseClientError {
    /// The reason code (the broker's denial code for a denial).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Denied { code, .. } => code.as_str(),
            Self::Unavailable { .. } => "unavailable",
            Self::Rejected { .. } => "broker_rejected",
            Self::Unauthenticated(_) => "broker_unauthenticated",
            Self::WrongProvider { .. } => "wrong_provider",
            Self::WrongAsset { .. }
            | Self::ChallengeTooLong { .. }
            | Self::LeaseOutOfRange { .. }
            | Self::UnknownDenialCode(_)
            | Self::SealedKey(_)
            | Self::KeyIdMismatch { .. } => "broker_protocol",
            Self::BindingMismatch(_) | Self::RequestEncoding | Self::Random => "internal",
        }
    }

    /// Whether a new attempt may succeed: an unavailable broker, or a signed denial of
    /// the nonce (`nonce_unknown_or_used`, `nonce_expired`), which the relay can cause by
    /// replaying or delaying a request, and which a fresh challenge answers.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { .. }
                | Self::Denied {
                    code: DenialCode::NonceUnknownOrUsed | DenialCode::NonceExpired,
                    ..
                }
        )
    }
}

/// A 32-byte hex field of an answer not yet verified.
pub(super) fn hex32(
    answer: Answer,
    field: &'static str,
    s: &str,
) -> Result<[u8; 32], Unauthenticated> {
    parse32(s, field).map_err(|_| Unauthenticated::Malformed { answer, field })
}

/// A hex field of an answer not yet verified.
pub(super) fn hex_bytes(
    answer: Answer,
    field: &'static str,
    s: &str,
) -> Result<Vec<u8>, Unauthenticated> {
    hex::decode(s).map_err(|_| Unauthenticated::Malformed { answer, field })
}

/// Checks the hex `signature` of `answer` saying `statement`, by `broker`, for the
/// request with digest `request_sha256`.
pub(super) fn check_signature(
    answer: Answer,
    statement: &Statement,
    broker: &BrokerKey,
    request_sha256: &[u8; 32],
    signature: &str,
) -> Result<(), Unauthenticated> {
    let bad = || Unauthenticated::BadSignature {
        answer,
        pinned: *broker,
    };
    let signature = hex::decode(signature).map_err(|_| bad())?;
    statement
        .verify(broker, request_sha256, &signature)
        .map_err(|_| bad())
}

/// Text from an unauthenticated party, made safe to log: printable, at most 200 chars.
pub(super) fn shorten(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect()
}

/// Sorts an answer: the 200 body to check, or the error it stands for. A 403 must be a
/// denial signed by `broker` for the request with digest `request_sha256`.
pub(super) fn classify<T: DeserializeOwned>(
    answer: Answer,
    status: u16,
    body: &[u8],
    broker: &BrokerKey,
    request_sha256: &[u8; 32],
) -> Result<T, ReleaseClientError> {
    if body.len() > MAX_ANSWER_BYTES {
        return Err(Unauthenticated::TooLarge { len: body.len() }.into());
    }
    match status {
        200 => serde_json::from_slice(body).map_err(|_| {
            Unauthenticated::Malformed {
                answer,
                field: "not the JSON of a signed answer",
            }
            .into()
        }),
        403 => {
            let err: ErrorBody =
                serde_json::from_slice(body).map_err(|_| Unauthenticated::Malformed {
                    answer: Answer::Denial,
                    field: "not the JSON of a signed denial",
                })?;
            let signature =
                err.signature
                    .as_deref()
                    .ok_or_else(|| Unauthenticated::UnsignedDenial {
                        error: shorten(err.error.as_bytes()),
                    })?;
            let statement = Statement::Denial {
                error: err.error.clone(),
                detail: err.detail.clone(),
            };
            check_signature(
                Answer::Denial,
                &statement,
                broker,
                request_sha256,
                signature,
            )?;
            Err(ReleaseClientError::Denied {
                code: err.error.parse()?,
                detail: err.detail,
            })
        }
        429 | 500..=599 => Err(ReleaseClientError::Unavailable {
            status,
            detail: shorten(body),
        }),
        _ => Err(ReleaseClientError::Rejected {
            status,
            detail: shorten(body),
        }),
    }
}
