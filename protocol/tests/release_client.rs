//! The key-release client engine against a broker played here: the genuine exchange, and
//! every way a relay (or a broker it runs itself) might answer instead.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use ed25519_dalek::SigningKey;
use trustbridge_protocol::Platform;
use trustbridge_protocol::key_release::client::{
    BoundKeys, ReleaseClientError, Unauthenticated, check_broker_info,
};
use trustbridge_protocol::key_release::{
    BrokerIdentity, BrokerInfo, ChallengeRequest, ChallengeResponse, DenialCode, ErrorBody,
    Evidence, HpkeKeyPair, MAX_LEASE_SECS, Nonce, ReleaseClient, ReleaseRequest, ReleaseResponse,
    ReleaseStatement, Statement, release_info, request_digest, seal_data_key,
};
use trustbridge_protocol::sealed::DataKey;

const ASSET: &str = "acme/llm@v1";
const CONTRACT: &str = "c-1";

/// A broker as far as the engine can tell: an identity, a data key and what it names.
struct Broker {
    id: BrokerIdentity,
    key: DataKey,
    manifest: [u8; 32],
    provider: [u8; 32],
    lease_secs: u64,
}

impl Broker {
    fn new(seed: u8) -> Self {
        Self {
            id: BrokerIdentity::new(SigningKey::from_bytes(&[seed; 32])),
            key: DataKey::generate().unwrap(),
            manifest: [0x11; 32],
            provider: [0x22; 32],
            lease_secs: 600,
        }
    }

    fn challenge(&self, request: &[u8]) -> (u16, Vec<u8>) {
        let req: ChallengeRequest = serde_json::from_slice(request).unwrap();
        let nonce = Nonce::random().unwrap();
        let statement = Statement::Challenge {
            asset: req.asset,
            contract: req.contract,
            nonce: nonce.as_bytes().to_vec(),
            expires_in: 60,
        };
        let signature = self.id.sign(&statement, &request_digest(request)).unwrap();
        let resp = ChallengeResponse {
            nonce,
            expires_in: 60,
            signature,
        };
        (200, serde_json::to_vec(&resp).unwrap())
    }

    /// A release answer sealing `key` for `asset`, naming `key_id`, signed.
    fn release_with(
        &self,
        request: &[u8],
        key: &DataKey,
        asset: &str,
        key_id: String,
    ) -> (u16, Vec<u8>) {
        let req: ReleaseRequest = serde_json::from_slice(request).unwrap();
        let release_key: [u8; 32] = hex::decode(&req.binding.release_key)
            .unwrap()
            .try_into()
            .unwrap();
        let (enc, ct) = seal_data_key(
            &release_key,
            &release_info(asset, req.nonce.as_bytes()),
            key,
        )
        .unwrap();
        let statement = Statement::Release(ReleaseStatement {
            asset: asset.into(),
            contract: CONTRACT.into(),
            nonce: req.nonce.as_bytes().to_vec(),
            release_key,
            manifest_sha256: self.manifest,
            provider_key: self.provider,
            key_id: key_id.clone(),
            enc: enc.clone(),
            ciphertext: ct.clone(),
            lease_secs: self.lease_secs,
            policy_sha256: [0x50; 32],
        });
        let resp = ReleaseResponse {
            asset: asset.into(),
            contract: CONTRACT.into(),
            manifest_sha256: hex::encode(self.manifest),
            provider_key: hex::encode(self.provider),
            key_id,
            enc: hex::encode(enc),
            ciphertext: hex::encode(ct),
            lease_secs: self.lease_secs,
            policy_sha256: hex::encode([0x50; 32]),
            signature: self.id.sign(&statement, &request_digest(request)).unwrap(),
        };
        (200, serde_json::to_vec(&resp).unwrap())
    }

    fn release(&self, request: &[u8]) -> (u16, Vec<u8>) {
        self.release_with(request, &self.key, ASSET, self.key.key_id().to_string())
    }

    fn deny(&self, request: &[u8], code: DenialCode) -> (u16, Vec<u8>) {
        let statement = Statement::Denial {
            error: code.as_str().into(),
            detail: "because".into(),
        };
        let body = ErrorBody {
            error: code.as_str().into(),
            detail: "because".into(),
            signature: Some(self.id.sign(&statement, &request_digest(request)).unwrap()),
        };
        (403, serde_json::to_vec(&body).unwrap())
    }
}

fn keys(release: &HpkeKeyPair) -> BoundKeys {
    BoundKeys {
        ohttp_keys_sha256: [1; 32],
        receipt_key: [2; 32],
        release_key: release.public_key(),
    }
}

fn evidence() -> Evidence {
    Evidence {
        platform: Platform::Nitro,
        bytes: b"evidence".to_vec(),
        certificates: vec![],
    }
}

/// Runs the exchange, with `challenge` and `release` producing the broker's answers.
fn exchange(
    client: &ReleaseClient,
    challenge: impl FnOnce(&[u8]) -> (u16, Vec<u8>),
    release: impl FnOnce(&[u8]) -> (u16, Vec<u8>),
) -> Result<trustbridge_protocol::key_release::Released, ReleaseClientError> {
    let release_key = HpkeKeyPair::generate().unwrap();
    let (req, awaiting) = client.challenge()?;
    let (status, body) = challenge(&req.body);
    let challenged = awaiting.answer(status, &body)?;
    let binding = challenged.binding(&keys(&release_key));
    let (req, awaiting) = challenged.release(&binding, &evidence())?;
    let (status, body) = release(&req.body);
    awaiting.answer(status, &body, &release_key)
}

fn client(broker: &Broker) -> ReleaseClient {
    ReleaseClient::new(broker.id.public(), None, ASSET, CONTRACT)
}

#[test]
fn the_genuine_broker_releases_and_every_pin_is_in_the_binding() {
    let b = Broker::new(1);
    let released = exchange(&client(&b), |r| b.challenge(r), |r| b.release(r)).unwrap();
    assert_eq!(released.key.key_id(), b.key.key_id());
    assert_eq!(released.manifest_sha256, b.manifest);
    assert_eq!(released.provider_key, b.provider);
    assert_eq!(released.lease.as_secs(), 600);

    let pinned = ReleaseClient::new(b.id.public(), Some(b.provider), ASSET, CONTRACT);
    let binding = pinned.binding(&keys(&HpkeKeyPair::generate().unwrap()), &[7; 32]);
    assert_eq!(binding.broker_key, *b.id.public().as_bytes());
    assert_eq!(binding.provider_key, Some(b.provider));
    exchange(&pinned, |r| b.challenge(r), |r| b.release(r)).unwrap();
}

#[test]
fn a_broker_the_relay_runs_itself_is_unauthenticated() {
    let genuine = Broker::new(1);
    let fake = Broker::new(2);
    let c = client(&genuine);
    // The fake answers everything, signing with its own key.
    let err = exchange(&c, |r| fake.challenge(r), |r| fake.release(r)).unwrap_err();
    assert!(
        matches!(err, ReleaseClientError::Unauthenticated(_)),
        "{err}"
    );
    assert_eq!(err.code(), "broker_unauthenticated");
    // The genuine challenge, then the fake's release of its own key.
    let err = exchange(&c, |r| genuine.challenge(r), |r| fake.release(r)).unwrap_err();
    assert!(
        matches!(err, ReleaseClientError::Unauthenticated(_)),
        "{err}"
    );
    // A denial the fake signs, and one nobody signs.
    let err = exchange(
        &c,
        |r| genuine.challenge(r),
        |r| fake.deny(r, DenialCode::ContractRevoked),
    )
    .unwrap_err();
    assert_eq!(err.code(), "broker_unauthenticated", "{err}");
    let unsigned = |_: &[u8]| {
        (
            403,
            br#"{"error":"contract_revoked","detail":"trust me"}"#.to_vec(),
        )
    };
    let err = exchange(&c, |r| genuine.challenge(r), unsigned).unwrap_err();
    assert_eq!(err.code(), "broker_unauthenticated", "{err}");
    let err = exchange(&c, |_| (403, b"<html>".to_vec()), |r| genuine.release(r)).unwrap_err();
    assert_eq!(err.code(), "broker_unauthenticated", "{err}");
}

#[test]
fn old_answers_replayed_for_a_new_request_do_not_verify() {
    let b = Broker::new(1);
    let c = client(&b);
    // An answer captured for one challenge request, replayed for the next.
    let (first, _) = c.challenge().unwrap();
    let captured = b.challenge(&first.body);
    let err = exchange(&c, |_| captured.clone(), |r| b.release(r)).unwrap_err();
    assert!(
        matches!(err, ReleaseClientError::Unauthenticated(_)),
        "{err}"
    );
    // A genuine denial of another request.
    let (other, _) = c.challenge().unwrap();
    let stale = b.deny(&other.body, DenialCode::ContractRevoked);
    let err = exchange(&c, |r| b.challenge(r), |_| stale.clone()).unwrap_err();
    assert_eq!(err.code(), "broker_unauthenticated", "{err}");
}

#[test]
fn signed_denials_carry_the_broker_reason_and_unavailability_is_transient() {
    let b = Broker::new(1);
    let c = client(&b);
    let err = exchange(&c, |r| b.deny(r, DenialCode::UnknownContract), |_| panic!()).unwrap_err();
    assert_eq!(
        err,
        ReleaseClientError::Denied {
            code: DenialCode::UnknownContract,
            detail: "because".into()
        }
    );
    assert!(!err.is_transient());
    let err = exchange(
        &c,
        |r| b.challenge(r),
        |r| b.deny(r, DenialCode::MeasurementMismatch),
    )
    .unwrap_err();
    assert_eq!(err.code(), "measurement_mismatch");
    assert!(!err.is_transient());
    // A denial of the nonce is worth a new challenge: the relay can provoke one.
    for code in [DenialCode::NonceUnknownOrUsed, DenialCode::NonceExpired] {
        let err = exchange(&c, |r| b.challenge(r), |r| b.deny(r, code)).unwrap_err();
        assert!(err.is_transient(), "{err}");
    }
    for status in [500, 502, 503, 429] {
        let err = exchange(&c, |_| (status, b"down".to_vec()), |_| panic!()).unwrap_err();
        assert!(err.is_transient(), "{status}: {err}");
        assert_eq!(err.code(), "unavailable");
    }
    let err = exchange(&c, |_| (400, b"bad\x07request".to_vec()), |_| panic!()).unwrap_err();
    assert_eq!(err.code(), "broker_rejected");
    assert!(
        !err.to_string().contains('\x07'),
        "control characters stripped"
    );
}

#[test]
fn a_signed_release_must_name_this_asset_the_pinned_provider_and_the_sealed_key() {
    let b = Broker::new(1);
    let other_key = DataKey::generate().unwrap();
    // Another asset (sealed for it, so it would not even open).
    let err = exchange(
        &client(&b),
        |r| b.challenge(r),
        |r| b.release_with(r, &b.key, "acme/other@v1", b.key.key_id().to_string()),
    )
    .unwrap_err();
    assert_eq!(err.code(), "broker_protocol", "{err}");
    assert!(
        matches!(&err, ReleaseClientError::WrongAsset { named_asset, .. } if named_asset == "acme/other@v1"),
        "{err}"
    );
    // A key id that is not the sealed key's.
    let err = exchange(
        &client(&b),
        |r| b.challenge(r),
        |r| b.release_with(r, &other_key, ASSET, b.key.key_id().to_string()),
    )
    .unwrap_err();
    assert_eq!(err.code(), "broker_protocol", "{err}");
    assert!(
        matches!(err, ReleaseClientError::KeyIdMismatch { .. }),
        "{err}"
    );
    // A lease of nothing, or longer than any broker may grant (a sentinel would serve on
    // it for years), even signed.
    for lease_secs in [0, MAX_LEASE_SECS + 1, u64::MAX] {
        let b = Broker {
            lease_secs,
            ..Broker::new(1)
        };
        let err = exchange(&client(&b), |r| b.challenge(r), |r| b.release(r)).unwrap_err();
        assert_eq!(
            err,
            ReleaseClientError::LeaseOutOfRange { secs: lease_secs },
            "{lease_secs}"
        );
    }
    // The pinned provider is not the one the release names.
    let pinned = ReleaseClient::new(b.id.public(), Some([0x33; 32]), ASSET, CONTRACT);
    let err = exchange(&pinned, |r| b.challenge(r), |r| b.release(r)).unwrap_err();
    assert!(
        matches!(err, ReleaseClientError::WrongProvider { .. }),
        "{err}"
    );
    // A flipped byte anywhere in a signed field.
    let err = exchange(
        &client(&b),
        |r| b.challenge(r),
        |r| {
            let (s, body) = b.release(r);
            let mut resp: ReleaseResponse = serde_json::from_slice(&body).unwrap();
            resp.manifest_sha256 = hex::encode([0x12; 32]);
            (s, serde_json::to_vec(&resp).unwrap())
        },
    )
    .unwrap_err();
    assert_eq!(err.code(), "broker_unauthenticated", "{err}");
    // An answer too large to read: unread, so nobody's word.
    let err = exchange(&client(&b), |_| (200, vec![b' '; 65 * 1024]), |_| panic!()).unwrap_err();
    assert_eq!(err.code(), "broker_unauthenticated", "{err}");
    assert_eq!(
        err,
        ReleaseClientError::Unauthenticated(Unauthenticated::TooLarge { len: 65 * 1024 })
    );
    // Malformed hex in a field not yet verified is no broker's word either.
    let err = exchange(
        &client(&b),
        |r| b.challenge(r),
        |r| {
            let (s, body) = b.release(r);
            let mut resp: ReleaseResponse = serde_json::from_slice(&body).unwrap();
            resp.enc = "zz".into();
            (s, serde_json::to_vec(&resp).unwrap())
        },
    )
    .unwrap_err();
    assert_eq!(err.code(), "broker_unauthenticated", "{err}");
}

/// The evidence must carry what this client pins and the broker's nonce: a binding with
/// another broker key, no provider or another nonce is refused before anything is sent.
#[test]
fn a_binding_without_the_clients_pins_is_not_sent() {
    use trustbridge_protocol::binding::EvidenceBinding;
    let b = Broker::new(1);
    let c = ReleaseClient::new(b.id.public(), Some(b.provider), ASSET, CONTRACT);
    let release_key = HpkeKeyPair::generate().unwrap();
    let edits: [fn(&mut EvidenceBinding); 4] = [
        |_| {},
        |b| b.broker_key = [9; 32],
        |b| b.provider_key = None,
        |b| b.nonce = vec![0; 32],
    ];
    for (i, edit) in edits.into_iter().enumerate() {
        let (req, awaiting) = c.challenge().unwrap();
        let (status, body) = b.challenge(&req.body);
        let challenged = awaiting.answer(status, &body).unwrap();
        let mut binding = challenged.binding(&keys(&release_key));
        edit(&mut binding);
        let result = challenged.release(&binding, &evidence());
        if i == 0 {
            assert!(result.is_ok(), "the binding as made");
        } else {
            assert!(
                matches!(result, Err(ReleaseClientError::BindingMismatch(_))),
                "{binding:?}"
            );
        }
    }
}

#[test]
fn broker_information_is_checked_against_the_pinned_identity() {
    let b = Broker::new(1);
    let info = |id: &BrokerIdentity, registration: [u8; 32]| {
        let statement = Statement::Broker {
            registration_key: registration,
            decision_log_key: [5; 32],
            simulation: false,
        };
        serde_json::to_vec(&BrokerInfo {
            identity_key: id.public(),
            registration_key: hex::encode(registration),
            decision_log_key: hex::encode([5; 32]),
            simulation: false,
            signature: id.sign(&statement, &request_digest(b"")).unwrap(),
        })
        .unwrap()
    };
    let checked = check_broker_info(&b.id.public(), 200, &info(&b.id, [4; 32])).unwrap();
    assert_eq!(checked.registration_key, [4; 32]);
    let fake = Broker::new(2);
    let err = check_broker_info(&b.id.public(), 200, &info(&fake.id, [4; 32])).unwrap_err();
    assert_eq!(err.code(), "broker_unauthenticated");
    // The genuine identity claimed, another registration key substituted.
    let mut forged: BrokerInfo = serde_json::from_slice(&info(&b.id, [4; 32])).unwrap();
    forged.registration_key = hex::encode([6; 32]);
    let err =
        check_broker_info(&b.id.public(), 200, &serde_json::to_vec(&forged).unwrap()).unwrap_err();
    assert_eq!(err.code(), "broker_unauthenticated");
}

/// An admin request is done only when the broker says so, signed for that request (the
/// message the admin signed, time included): an unsigned 200 (a network that dropped the
/// request), one signed by another broker, or the answer to an earlier request with the
/// same body is not believed.
#[test]
fn admin_answers_are_believed_only_when_signed_for_the_request() {
    use trustbridge_protocol::key_release::AdminAnswer;
    use trustbridge_protocol::key_release::client::check_admin_answer;
    let b = Broker::new(1);
    let path = "/v1/admin/contracts/c-1/revoke";
    let signed_at = |time: u64| format!("admin/v2\nbroker\nPOST\n{path}\n{time}\nbody-hash");
    let answer = |id: &BrokerIdentity, signed: &str| {
        let statement = Statement::Admin {
            method: "POST".into(),
            path: path.into(),
        };
        serde_json::to_vec(&AdminAnswer {
            signature: id
                .sign(&statement, &request_digest(signed.as_bytes()))
                .unwrap(),
        })
        .unwrap()
    };
    let now = signed_at(1001);
    let check = |status, answer: &[u8]| {
        check_admin_answer(&b.id.public(), "POST", path, now.as_bytes(), status, answer)
    };
    check(200, &answer(&b.id, &now)).unwrap();
    assert_eq!(
        check(200, br#"{"signature": ""}"#).unwrap_err().code(),
        "broker_unauthenticated"
    );
    assert_eq!(
        check(200, &answer(&Broker::new(2).id, &now))
            .unwrap_err()
            .code(),
        "broker_unauthenticated"
    );
    // The same request a second earlier: its answer is no answer to this one.
    assert_eq!(
        check(200, &answer(&b.id, &signed_at(1000)))
            .unwrap_err()
            .code(),
        "broker_unauthenticated"
    );
    assert_eq!(check(401, b"no").unwrap_err().code(), "broker_rejected");
}
