//! The broker's standing answers, which answer no release: its public keys
//! (`GET /v1/broker`) and its acknowledgement of an admin request.

use super::answer::{
    Answer, ReleaseClientError, Unauthenticated, check_signature, classify, hex32, shorten,
};
use super::client::MAX_ANSWER_BYTES;
use super::messages::{AdminAnswer, BrokerInfo};
use super::statement::{Statement, request_digest};
use super::vocabulary::BrokerKey;

/// The broker's public keys, authenticated by its identity key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckedBrokerInfo {
    /// The X25519 key providers seal data keys to at registration.
    pub registration_key: [u8; 32],
    /// The Ed25519 key that signs the decision log.
    pub decision_log_key: [u8; 32],
    /// Whether the policy accepts simulated evidence.
    pub simulation: bool,
}

/// Checks a `GET /v1/broker` answer against the pinned identity key `broker`.
///
/// The answer is a standing statement, signed once for every reader (it answers no
/// request of the reader's, so it carries no freshness): the keys it names are derived
/// from the broker's KEK and do not change; `simulation` is as of some moment and is only
/// shown, never acted on.
pub fn check_broker_info(
    broker: &BrokerKey,
    status: u16,
    body: &[u8],
) -> Result<CheckedBrokerInfo, ReleaseClientError> {
    let a = Answer::BrokerInfo;
    let request_sha256 = request_digest(b"");
    let info: BrokerInfo = classify(a, status, body, broker, &request_sha256)?;
    if info.identity_key != *broker {
        return Err(Unauthenticated::OtherIdentity {
            named: info.identity_key,
            pinned: *broker,
        }
        .into());
    }
    let checked = CheckedBrokerInfo {
        registration_key: hex32(a, "registration_key", &info.registration_key)?,
        decision_log_key: hex32(a, "decision_log_key", &info.decision_log_key)?,
        simulation: info.simulation,
    };
    let statement = Statement::Broker {
        registration_key: checked.registration_key,
        decision_log_key: checked.decision_log_key,
        simulation: checked.simulation,
    };
    check_signature(a, &statement, broker, &request_sha256, &info.signature)?;
    Ok(checked)
}

/// Checks the answer to an admin request `method path` whose signed message (what the
/// admin key signed: broker, method, path, time and body digest) is `signed_request`:
/// the request was carried out only if the broker with identity `broker` signed that it
/// was, for this very request. An answer to an earlier request, even one with the same
/// body, does not verify.
pub fn check_admin_answer(
    broker: &BrokerKey,
    method: &str,
    path: &str,
    signed_request: &[u8],
    status: u16,
    answer: &[u8],
) -> Result<(), ReleaseClientError> {
    if status != 200 {
        return Err(ReleaseClientError::Rejected {
            status,
            detail: shorten(answer),
        });
    }
    if answer.len() > MAX_ANSWER_BYTES {
        return Err(Unauthenticated::TooLarge { len: answer.len() }.into());
    }
    let done: AdminAnswer =
        serde_json::from_slice(answer).map_err(|_| Unauthenticated::Malformed {
            answer: Answer::Admin,
            field: "not the JSON of a signed admin answer",
        })?;
    let statement = Statement::Admin {
        method: method.to_owned(),
        path: path.to_owned(),
    };
    check_signature(
        Answer::Admin,
        &statement,
        broker,
        &request_digest(signed_request),
        &done.signature,
    )?;
    Ok(())
}
