//! Key release: the messages between a sentinel (or any client) and the key broker, what
//! the broker's identity key signs, the HPKE sealing of the data key, and the client side
//! of the exchange as one I/O-free engine.
//!
//! ```text
//! GET  /v1/broker                                     -> BrokerInfo (signed)
//! POST /v1/key-release/challenge  ChallengeRequest  -> ChallengeResponse (signed) | ErrorBody (403, signed)
//! POST /v1/key-release            ReleaseRequest    -> ReleaseResponse (signed)   | ErrorBody (403, signed)
//! ```
//!
//! - [`statement`]: every answer is signed by the broker's identity key over its fields
//!   and the digest of the request it answers; readers pin that key.
//! - [`client`]: [`ReleaseClient`], the one implementation of the client's checks, used by
//!   the sentinel (async, through the relay) and by the blocking CLI client.
//! - The data key is sealed with HPKE (RFC 9180) base mode, DHKEM(X25519, HKDF-SHA256),
//!   HKDF-SHA256, AES-256-GCM, to the `release_key` that the evidence binding carries, with
//!   `info` = [`release_info`] (label, asset id and nonce), so a sealed key opens only for
//!   the attested sentinel, for that asset and that challenge.

mod answer;
mod broker_info;
pub mod client;
mod denial;
mod hpke;
mod messages;
pub mod statement;
mod vocabulary;

pub use self::client::{ReleaseClient, ReleaseClientError, Released};
pub use self::denial::{DenialCode, UnknownDenialCode};
pub use self::hpke::{HpkeError, HpkeKeyPair, hpke_info, hpke_seal, release_info, seal_data_key};
pub use self::messages::{
    AdminAnswer, BindingKeys, BrokerInfo, ChallengeRequest, ChallengeResponse, ErrorBody, Evidence,
    ReleaseRequest, ReleaseResponse,
};
pub use self::statement::{
    BrokerIdentity, ReleaseStatement, Statement, StatementEncoding, request_digest,
};
pub use self::vocabulary::{BadHex32, BrokerKey, Nonce, RandomFailed};
pub use crate::platform::Platform;

/// Domain-separation label of the HPKE `info` for released data keys.
pub const RELEASE_INFO_LABEL: &[u8] = b"trustbridge/key-release/v1";
/// Domain-separation label of the HPKE `info` for data keys sent to the broker at registration.
pub const REGISTER_INFO_LABEL: &[u8] = b"trustbridge/register/v1";
/// How long a challenge nonce lives.
pub const NONCE_TTL_SECS: u64 = 60;
/// The longest lease a release may grant (a day): a broker's policy cannot set more, and
/// a client refuses a release that names more.
pub const MAX_LEASE_SECS: u64 = 86_400;
