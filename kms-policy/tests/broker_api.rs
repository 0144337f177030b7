//! The key broker end to end over HTTP on loopback, with simulated TEE evidence: releases,
//! every denial reason, persistence across restarts, the release limit under concurrency,
//! no data key in the database files, and the decision log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::sync::atomic::Ordering;
use trustbridge_protocol::Platform;

use common::{ASSET, Fixture, denial, sim_snp, start_time};
use trustbridge_kms::broker::decision_log::verify_log;
use trustbridge_kms::broker::kek::Kek;
use trustbridge_kms::client::{AdminSigner, ClientError, KmsClient, ReleaseClientError};
use trustbridge_protocol::binding::EvidenceBinding;
use trustbridge_protocol::bundle::{AssetId, Manifest, ProviderSigningKey, SignedManifest};
use trustbridge_protocol::key_release::client::RELEASE_PATH;
use trustbridge_protocol::key_release::{
    BindingKeys, ErrorBody, Nonce, ReleaseRequest, Statement, request_digest,
};
use trustbridge_protocol::sealed::DataKey;
use trustbridge_verifier::simulated::{NitroSpec, SimulatedTee, SnpSpec};

/// Sends a hand-built release request; a denial must be signed by the pinned broker for
/// this very request.
fn raw_release(c: &KmsClient, req: &ReleaseRequest) -> Result<(), ClientError> {
    let body = serde_json::to_vec(req).unwrap();
    let (status, answer) = c.send(RELEASE_PATH, &body).unwrap();
    if status == 200 {
        return Ok(());
    }
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&answer));
    let err: ErrorBody = serde_json::from_slice(&answer).unwrap();
    let statement = Statement::Denial {
        error: err.error.clone(),
        detail: err.detail.clone(),
    };
    statement
        .verify(
            c.broker_key(),
            &request_digest(&body),
            &hex::decode(err.signature.unwrap()).unwrap(),
        )
        .unwrap();
    Err(ClientError::Release(ReleaseClientError::Denied {
        code: err.error.parse().unwrap(),
        detail: err.detail,
    }))
}

#[test]
fn release_end_to_end_on_nitro_and_snp() {
    let f = Fixture::new();
    let r = f.start(Some(&f.policy(true)));
    f.register(&r);
    let released = r
        .client
        .release_with_evidence(ASSET, "c-policy", [1; 32], f.nitro(NitroSpec::default()))
        .unwrap();
    assert_eq!(released.key.key_id(), f.key.key_id());
    assert_eq!(released.provider_key, f.provider.public().to_bytes());
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &f.manifest);
    assert_eq!(&released.manifest_sha256[..], digest.as_ref());
    // The release names the policy it was decided under (the receipts' policy digest).
    let policy = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, f.policy(true).as_bytes());
    assert_eq!(&released.policy_sha256[..], policy.as_ref());
    let released = r
        .client
        .release_with_evidence(ASSET, "c-policy", [1; 32], f.snp(SnpSpec::default()))
        .unwrap();
    assert_eq!(released.key.key_id(), f.key.key_id());
    let info = r.client.info().unwrap();
    assert!(info.simulation);
    let log = r.broker.store().decisions().unwrap();
    let vk = Kek::from_hex(&f.kek_hex)
        .unwrap()
        .decision_log_key()
        .verifying_key();
    assert_eq!(verify_log(&log, &vk), Ok(2));
}

#[test]
fn every_denial_reason_is_triggered_by_its_cause() {
    let f = Fixture::new();
    let r = f.start(Some(&f.policy(true)));
    f.register(&r);
    let c = &r.client;

    // measurement_mismatch (Nitro PCR and SNP TCB below the minimum).
    let mut spec = NitroSpec::default();
    spec.pcrs.insert(2, vec![0x99; 48]);
    assert_eq!(
        denial(c.release_with_evidence(ASSET, "c-policy", [1; 32], f.nitro(spec))),
        "measurement_mismatch"
    );
    let mut low = SnpSpec::default();
    low.reported_tcb.microcode = 200;
    let sim_low = SimulatedTee::with_vcek_hw_id(
        &trustbridge_verifier::simulated::SIM_CHIP_ID,
        low.reported_tcb,
    )
    .unwrap();
    let low_evidence = |b: &EvidenceBinding| sim_snp(&sim_low, low.clone(), b);
    // Another simulator's ARK is not pinned: its evidence is simulated and untrusted.
    assert_eq!(
        denial(c.release_with_evidence(ASSET, "c-policy", [1; 32], low_evidence)),
        "simulation_not_allowed"
    );

    // debug_forbidden.
    let mut debug = NitroSpec::default();
    debug.pcrs.insert(0, vec![0; 48]);
    assert_eq!(
        denial(c.release_with_evidence(ASSET, "c-policy", [1; 32], f.nitro(debug))),
        "debug_forbidden"
    );
    let debug_snp = SnpSpec {
        policy: 0x30000 | (1 << 19),
        ..SnpSpec::default()
    };
    assert_eq!(
        denial(c.release_with_evidence(ASSET, "c-policy", [1; 32], f.snp(debug_snp))),
        "debug_forbidden"
    );

    // unknown_asset and unknown_contract.
    assert_eq!(
        denial(c.challenge("acme/other@v1", "c-policy")),
        "unknown_asset"
    );
    assert_eq!(denial(c.challenge(ASSET, "c-nope")), "unknown_contract");

    // contract_revoked: at the challenge, and for a nonce issued before the revocation.
    f.contract(&r, "c-revoke", None);
    let pending = c.challenge(ASSET, "c-revoke").unwrap();
    c.revoke_contract("c-revoke", &f.signer()).unwrap();
    assert_eq!(denial(c.challenge(ASSET, "c-revoke")), "contract_revoked");
    let req = release_request(&f, c, pending.nonce(), None);
    assert_eq!(denial(raw_release(c, &req)), "contract_revoked");

    // release_limit.
    f.contract(&r, "c-one", Some(1));
    c.release_with_evidence(ASSET, "c-one", [1; 32], f.nitro(NitroSpec::default()))
        .unwrap();
    assert_eq!(
        denial(c.release_with_evidence(ASSET, "c-one", [1; 32], f.nitro(NitroSpec::default()))),
        "release_limit"
    );

    // nonce_unknown_or_used: a forged nonce, and a reused one.
    assert_eq!(
        denial(raw_release(
            c,
            &release_request(&f, c, &Nonce::from_bytes([0; 32]), None)
        )),
        "nonce_unknown_or_used"
    );
    let ch = c.challenge(ASSET, "c-policy").unwrap();
    let req = release_request(&f, c, ch.nonce(), None);
    raw_release(c, &req).unwrap();
    assert_eq!(denial(raw_release(c, &req)), "nonce_unknown_or_used");

    // nonce_expired.
    let ch = c.challenge(ASSET, "c-policy").unwrap();
    f.clock.fetch_add(61, Ordering::SeqCst);
    assert_eq!(
        denial(raw_release(c, &release_request(&f, c, ch.nonce(), None))),
        "nonce_expired"
    );
    f.clock.fetch_sub(61, Ordering::SeqCst);

    // binding_mismatch: evidence bound to another release key than the one sent.
    let ch = c.challenge(ASSET, "c-policy").unwrap();
    let req = release_request(&f, c, ch.nonce(), Some([9; 32]));
    assert_eq!(denial(raw_release(c, &req)), "binding_mismatch");

    // wrong_broker and wrong_provider: genuine evidence of a sentinel that pins another
    // broker, or another provider, than this broker and the asset's provider.
    // (Real Ed25519 keys: a binding with a key that is not a curve point is refused earlier.)
    let other = ProviderSigningKey::generate().unwrap().public().to_bytes();
    for (broker, provider, code) in [
        (Some(other), None, "wrong_broker"),
        (None, Some(other), "wrong_provider"),
    ] {
        let ch = c.challenge(ASSET, "c-policy").unwrap();
        let req = release_request_pinning(&f, c, ch.nonce(), broker, provider);
        assert_eq!(denial(raw_release(c, &req)), code);
    }
    // Pinning the asset's own provider is fine.
    let ch = c.challenge(ASSET, "c-policy").unwrap();
    let req = release_request_pinning(
        &f,
        c,
        ch.nonce(),
        None,
        Some(f.provider.public().to_bytes()),
    );
    raw_release(c, &req).unwrap();

    // evidence_invalid: a flipped byte.
    let ch = c.challenge(ASSET, "c-policy").unwrap();
    let mut req = release_request(&f, c, ch.nonce(), None);
    let mut doc = base64_decode(&req.evidence);
    let n = doc.len();
    doc[n - 3] ^= 1;
    req.evidence = base64_encode(&doc);
    assert_eq!(denial(raw_release(c, &req)), "evidence_invalid");

    // contract_expired: the clock passes the contract's end.
    let real = f.clock.load(Ordering::SeqCst);
    f.clock.store(1_900_000_000, Ordering::SeqCst); // 2030-03, after the contract's end
    assert_eq!(denial(c.challenge(ASSET, "c-policy")), "contract_expired");
    f.clock.store(real, Ordering::SeqCst);

    // simulation_not_allowed: the same evidence once the policy drops [simulation].
    c.replace_policy(&f.policy(false), &f.signer()).unwrap();
    assert_eq!(
        denial(c.release_with_evidence(ASSET, "c-policy", [1; 32], f.nitro(NitroSpec::default()))),
        "simulation_not_allowed"
    );

    // Every decision is in an intact log, and no record carries a key.
    let vk = Kek::from_hex(&f.kek_hex)
        .unwrap()
        .decision_log_key()
        .verifying_key();
    let log = r.broker.store().decisions().unwrap();
    assert!(verify_log(&log, &vk).unwrap() >= 15);
}

/// A nonce issued under one policy is released under the policy of the release: a
/// provider moved or a contract dropped between challenge and release releases nothing.
#[test]
fn policy_and_contract_are_checked_again_at_release() {
    let f = Fixture::new();
    let r = f.start(Some(&f.policy(true)));
    f.register(&r);
    let c = &r.client;

    let pending = c.challenge(ASSET, "c-policy").unwrap();
    let other = ProviderSigningKey::generate().unwrap();
    let moved = f
        .policy(true)
        .replace(&f.provider.public().to_hex(), &other.public().to_hex());
    c.replace_policy(&moved, &f.signer()).unwrap();
    let req = release_request(&f, c, pending.nonce(), None);
    assert_eq!(denial(raw_release(c, &req)), "asset_policy_mismatch");

    c.replace_policy(&f.policy(true), &f.signer()).unwrap();
    let pending = c.challenge(ASSET, "c-policy").unwrap();
    let dropped = f
        .policy(true)
        .replace("id = \"c-policy\"", "id = \"c-next\"");
    c.replace_policy(&dropped, &f.signer()).unwrap();
    let req = release_request(&f, c, pending.nonce(), None);
    assert_eq!(denial(raw_release(c, &req)), "unknown_contract");
    let stored = r.broker.store().contract("c-policy").unwrap().unwrap();
    assert_eq!(stored.releases, 0, "a refused release is not counted");
}

/// A policy may not declare a contract under the id of one added through the admin API:
/// the replacement is refused whole and the admin contract keeps serving.
#[test]
fn a_policy_contract_may_not_take_an_admin_contracts_id() {
    let f = Fixture::new();
    let r = f.start(Some(&f.policy(true)));
    f.register(&r);
    f.contract(&r, "c-admin", None);
    let c = &r.client;
    let clash = f
        .policy(true)
        .replace("id = \"c-policy\"", "id = \"c-admin\"");
    match c.replace_policy(&clash, &f.signer()) {
        Err(ClientError::Http {
            status: 409,
            detail,
            ..
        }) => {
            assert!(detail.contains("c-admin"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
    // Nothing of the refused policy took effect.
    c.release_with_evidence(ASSET, "c-policy", [1; 32], f.nitro(NitroSpec::default()))
        .unwrap();
    c.release_with_evidence(ASSET, "c-admin", [1; 32], f.nitro(NitroSpec::default()))
        .unwrap();
}

fn base64_decode(s: &str) -> Vec<u8> {
    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b)
}

/// A release request for `nonce` with simulated Nitro evidence; `sent_release_key`
/// replaces the release key in the request (not in the evidence) when given.
fn release_request(
    f: &Fixture,
    c: &KmsClient,
    nonce: &Nonce,
    sent_release_key: Option<[u8; 32]>,
) -> ReleaseRequest {
    let mut req = release_request_pinning(f, c, nonce, None, None);
    if let Some(k) = sent_release_key {
        req.binding.release_key = hex::encode(k);
    }
    req
}

/// A release request whose (genuine, simulated) evidence binds a sentinel pinning
/// `broker` (default: the broker `c` talks to) and `provider`.
fn release_request_pinning(
    f: &Fixture,
    c: &KmsClient,
    nonce: &Nonce,
    broker: Option<[u8; 32]>,
    provider: Option<[u8; 32]>,
) -> ReleaseRequest {
    let release = trustbridge_protocol::key_release::HpkeKeyPair::generate().unwrap();
    let binding = EvidenceBinding {
        nonce: nonce.as_bytes().to_vec(),
        ohttp_keys_sha256: [1; 32],
        receipt_key: [2; 32],
        release_key: release.public_key(),
        broker_key: broker.unwrap_or(*c.broker_key().as_bytes()),
        provider_key: provider,
        manifest_sha256: None,
    };
    let doc = f
        .sim
        .nitro_document(&NitroSpec::default().bind(&binding).unwrap())
        .unwrap();
    ReleaseRequest {
        nonce: *nonce,
        platform: Platform::Nitro,
        evidence: base64_encode(&doc),
        certificates: vec![],
        binding: BindingKeys::from_binding(&binding),
    }
}

#[test]
fn restart_keeps_assets_contracts_and_counters() {
    let f = Fixture::new();
    {
        let r = f.start(Some(&f.policy(true)));
        f.register(&r);
        f.contract(&r, "c-two", Some(2));
        r.client
            .release_with_evidence(ASSET, "c-two", [1; 32], f.nitro(NitroSpec::default()))
            .unwrap();
    }
    // Restart without a policy argument: everything comes from the database.
    let r = f.start(None);
    let released = r
        .client
        .release_with_evidence(ASSET, "c-two", [1; 32], f.nitro(NitroSpec::default()))
        .unwrap();
    assert_eq!(released.key.key_id(), f.key.key_id());
    assert_eq!(
        denial(r.client.release_with_evidence(
            ASSET,
            "c-two",
            [1; 32],
            f.nitro(NitroSpec::default())
        )),
        "release_limit"
    );
    let vk = Kek::from_hex(&f.kek_hex)
        .unwrap()
        .decision_log_key()
        .verifying_key();
    assert_eq!(
        verify_log(&r.broker.store().decisions().unwrap(), &vk),
        Ok(3)
    );
}

#[test]
fn a_hundred_concurrent_releases_against_a_limit_of_fifty() {
    let f = Fixture::new();
    let r = f.start(Some(&f.policy(true)));
    f.register(&r);
    f.contract(&r, "c-fifty", Some(50));
    let outcomes: Vec<Result<String, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..100)
            .map(|_| {
                s.spawn(|| {
                    match r.client.release_with_evidence(
                        ASSET,
                        "c-fifty",
                        [1; 32],
                        f.nitro(NitroSpec::default()),
                    ) {
                        Ok(released) => Ok(released.key.key_id().to_string()),
                        Err(e) if e.denial_code().is_some() => {
                            Err(e.denial_code().unwrap_or_default().to_owned())
                        }
                        Err(other) => panic!("unexpected failure: {other}"),
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let released = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(released, 50);
    assert!(
        outcomes
            .iter()
            .filter_map(|o| o.as_ref().err())
            .all(|code| code == "release_limit")
    );
    assert_eq!(
        r.broker
            .store()
            .contract("c-fifty")
            .unwrap()
            .unwrap()
            .releases,
        50
    );
}

#[test]
fn the_data_key_never_reaches_the_database_files() {
    let f = Fixture::new();
    let r = f.start(Some(&f.policy(true)));
    f.register(&r);
    for _ in 0..3 {
        r.client
            .release_with_evidence(ASSET, "c-policy", [1; 32], f.nitro(NitroSpec::default()))
            .unwrap();
    }
    drop(r);
    let raw = f.key.expose_secret().to_vec();
    let hexed = hex::encode(&raw);
    let mut scanned = 0;
    for entry in std::fs::read_dir(f.dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        scanned += bytes.len();
        assert!(
            !bytes.windows(32).any(|w| w == raw.as_slice()),
            "raw data key found"
        );
        assert!(
            !bytes
                .windows(64)
                .any(|w| w.eq_ignore_ascii_case(hexed.as_bytes())),
            "hex data key found"
        );
    }
    assert!(
        scanned > 4096,
        "the database files were scanned ({scanned} bytes)"
    );
}

#[test]
fn tampered_decision_log_fails_verification() {
    let f = Fixture::new();
    {
        let r = f.start(Some(&f.policy(true)));
        f.register(&r);
        r.client
            .release_with_evidence(ASSET, "c-policy", [1; 32], f.nitro(NitroSpec::default()))
            .unwrap();
        let _ = denial(r.client.challenge(ASSET, "c-nope"));
        r.client
            .release_with_evidence(ASSET, "c-policy", [1; 32], f.nitro(NitroSpec::default()))
            .unwrap();
    }
    let audit = |extra: &[&str]| {
        let kek_file = f.dir.path().join("kek");
        std::fs::write(&kek_file, &f.kek_hex).unwrap();
        let mut args = vec![
            "audit",
            "verify",
            "--db",
            f.db().to_str().unwrap().to_owned().leak(),
            "--kek-file",
            kek_file.to_str().unwrap().to_owned().leak(),
        ];
        args.extend_from_slice(extra);
        std::process::Command::new(env!("CARGO_BIN_EXE_tb-kms"))
            .args(&args)
            .output()
            .unwrap()
    };
    let ok = audit(&[]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("3 record(s)"));
    // Rewrite the second record's reason (a denial turned into silence).
    let conn = rusqlite::Connection::open(f.db()).unwrap();
    let record: Vec<u8> = conn
        .query_row("SELECT record FROM decisions WHERE seq = 2", [], |r| {
            r.get(0)
        })
        .unwrap();
    let pos = record
        .windows(16)
        .position(|w| w == b"unknown_contract")
        .unwrap();
    let mut forged = record.clone();
    forged[pos..pos + 16].copy_from_slice(b"unknown_contrac_");
    conn.execute("UPDATE decisions SET record = ?1 WHERE seq = 2", [forged])
        .unwrap();
    drop(conn);
    let broken = audit(&[]);
    assert_eq!(broken.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&broken.stdout).contains("record 2"),
        "{}",
        String::from_utf8_lossy(&broken.stdout)
    );
    // Deleting a record is caught too.
    let conn = rusqlite::Connection::open(f.db()).unwrap();
    conn.execute("UPDATE decisions SET record = ?1 WHERE seq = 2", [record])
        .unwrap();
    assert_eq!(audit(&[]).status.code(), Some(0));
    conn.execute("DELETE FROM decisions WHERE seq = 2", [])
        .unwrap();
    drop(conn);
    assert_eq!(audit(&[]).status.code(), Some(1));
}

#[test]
fn admin_api_requires_a_fresh_signature_by_an_admin_key() {
    let f = Fixture::new();
    let r = f.start(Some(&f.policy(true)));
    let stranger = ProviderSigningKey::generate().unwrap();
    let pem = stranger.to_pkcs8_pem().unwrap();
    let key = ProviderSigningKey::from_pkcs8_pem(&pem).unwrap();
    let signer = AdminSigner {
        public_key: stranger.public().to_bytes(),
        sign: Box::new(move |m| key.sign(m)),
    };
    match r.client.register_asset(ASSET, &f.manifest, &f.key, &signer) {
        Err(ClientError::Http { status: 401, .. }) => {}
        other => panic!("{other:?}"),
    }
    // Registration checks the manifest's signer and the key commitment.
    let wrong_key = DataKey::generate().unwrap();
    match r
        .client
        .register_asset(ASSET, &f.manifest, &wrong_key, &f.signer())
    {
        Err(ClientError::Http {
            status: 400,
            detail,
            ..
        }) => assert!(detail.contains("wrong data key"), "{detail}"),
        other => panic!("{other:?}"),
    }
    let forged = {
        let asset = AssetId::new(ASSET).unwrap();
        let m = Manifest::new(
            asset,
            start_time(),
            stranger.public(),
            &f.key,
            SignedManifest::verify(&f.manifest, None)
                .unwrap()
                .manifest()
                .files
                .clone(),
        )
        .unwrap();
        SignedManifest::sign(m, &stranger)
            .unwrap()
            .as_bytes()
            .to_vec()
    };
    match r.client.register_asset(ASSET, &forged, &f.key, &f.signer()) {
        Err(ClientError::Http {
            status: 400,
            detail,
            ..
        }) => assert!(detail.contains("signed by provider key"), "{detail}"),
        other => panic!("{other:?}"),
    }
    // Unsigned and replayed requests.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("{}/v1/admin/contracts/c-policy/revoke", r.url);
    assert_eq!(
        agent.post(&url).send(&[][..]).unwrap().status().as_u16(),
        401
    );
    let headers = trustbridge_kms::broker::admin_auth::sign_request(
        &r.broker.identity_key(),
        &f.admin.public().to_bytes(),
        |m| f.admin.sign(m),
        "POST",
        "/v1/admin/contracts/c-policy/revoke",
        start_time(),
        b"",
    );
    let send = |base: &str| {
        let mut req = agent.post(&format!("{base}/v1/admin/contracts/c-policy/revoke"));
        for (k, v) in &headers {
            req = req.header(*k, v);
        }
        req.send(&[][..]).unwrap().status().as_u16()
    };
    assert_eq!(send(&r.url), 200);
    assert_eq!(send(&r.url), 401, "a replayed admin request is refused");

    // The captured request, replayed after a restart of the same broker: still refused
    // (the replay guard is in the database).
    drop(r);
    let r = f.start(None);
    assert_eq!(send(&r.url), 401, "replayed after a restart");

    // ... and at another broker (another KEK, so another identity) with the same policy
    // and admin key: signed for the first broker, so refused.
    let other_dir = tempfile::tempdir().unwrap();
    let store: std::sync::Arc<dyn trustbridge_kms::broker::store::Store> = std::sync::Arc::new(
        trustbridge_kms::broker::store::SqliteStore::open(&other_dir.path().join("kms.db"))
            .unwrap(),
    );
    let other = trustbridge_kms::broker::service::LoopbackBroker::start(std::sync::Arc::new(
        trustbridge_kms::broker::Broker::open(
            store,
            Kek::generate().unwrap(),
            Some(&f.policy(true)),
        )
        .unwrap(),
    ))
    .unwrap();
    assert_ne!(other.broker().identity_key(), r.broker.identity_key());
    assert_eq!(
        send(other.url()),
        401,
        "a request signed for another broker"
    );
}
