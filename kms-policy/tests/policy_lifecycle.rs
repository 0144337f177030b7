//! What the broker releases when the policy moves on, when its decision log cannot be
//! written, and how contract windows are read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{ASSET, Fixture, denial};
use trustbridge_kms::broker::ContractRequest;
use trustbridge_kms::broker::store::{
    AssetRecord, NonceState, RecordBuilder, SqliteStore, Store, StoreError, StoredDecision,
};
use trustbridge_kms::client::{ClientError, ReleaseClientError};
use trustbridge_kms::evaluate::Contract;
use trustbridge_protocol::bundle::ProviderSigningKey;
use trustbridge_verifier::simulated::NitroSpec;

/// A registration is checked against the policy of its day. When the policy later pins
/// another provider or another manifest, the stored key is not released any more.
#[test]
fn a_registration_the_current_policy_no_longer_pins_is_not_released() {
    let f = Fixture::new();
    let r = f.start(Some(&f.policy(true)));
    f.register(&r);
    let c = &r.client;
    c.release_with_evidence(ASSET, "c-policy", [1; 32], f.nitro(NitroSpec::default()))
        .unwrap();

    let other_provider = ProviderSigningKey::generate().unwrap();
    let moved = f.policy(true).replace(
        &f.provider.public().to_hex(),
        &other_provider.public().to_hex(),
    );
    c.replace_policy(&moved, &f.signer()).unwrap();
    assert_eq!(
        denial(c.release_with_evidence(ASSET, "c-policy", [1; 32], f.nitro(NitroSpec::default()))),
        "asset_policy_mismatch"
    );
    assert_eq!(
        denial(c.challenge(ASSET, "c-policy")),
        "asset_policy_mismatch",
        "refused at the challenge already"
    );

    // Back to the provider, but pinning another manifest than the one registered.
    let pinned = f.policy(true).replace(
        "provider_key = ",
        &format!("manifest_sha256 = \"{}\"\nprovider_key = ", "ab".repeat(32)),
    );
    c.replace_policy(&pinned, &f.signer()).unwrap();
    assert_eq!(
        denial(c.release_with_evidence(ASSET, "c-policy", [1; 32], f.nitro(NitroSpec::default()))),
        "asset_policy_mismatch"
    );
    c.replace_policy(&f.policy(true), &f.signer()).unwrap();
    c.release_with_evidence(ASSET, "c-policy", [1; 32], f.nitro(NitroSpec::default()))
        .unwrap();
}

/// Replacing the policy deactivates the contracts it declared and no longer declares;
/// contracts added through the admin API stay; declaring one again reactivates it.
#[test]
fn contracts_a_replaced_policy_drops_are_deactivated_admin_ones_stay() {
    let f = Fixture::new();
    let r = f.start(Some(&f.policy(true)));
    f.register(&r);
    f.contract(&r, "c-admin", None);
    let c = &r.client;
    let release = |contract: &str| {
        c.release_with_evidence(ASSET, contract, [1; 32], f.nitro(NitroSpec::default()))
    };
    release("c-policy").unwrap();
    let without = f
        .policy(true)
        .replace("id = \"c-policy\"", "id = \"c-next\"");
    c.replace_policy(&without, &f.signer()).unwrap();
    assert_eq!(denial(release("c-policy")), "unknown_contract");
    let stored = r.broker.store().contract("c-policy").unwrap().unwrap();
    assert!(!stored.active, "{stored:?}");
    release("c-next").unwrap();
    release("c-admin").unwrap();
    // Declared again: active again, with its counter kept.
    c.replace_policy(&f.policy(true), &f.signer()).unwrap();
    release("c-policy").unwrap();
    assert_eq!(
        r.broker
            .store()
            .contract("c-policy")
            .unwrap()
            .unwrap()
            .releases,
        2
    );
    assert_eq!(denial(release("c-next")), "unknown_contract");
    // A restart keeps the deactivation.
    drop(r);
    let r = f.start(None);
    assert_eq!(
        denial(r.client.release_with_evidence(
            ASSET,
            "c-next",
            [1; 32],
            f.nitro(NitroSpec::default())
        )),
        "unknown_contract"
    );
}

/// SQLite storage whose decision-log appends fail while `fail` is set.
struct FailingLog {
    inner: SqliteStore,
    fail: AtomicBool,
}

impl Store for FailingLog {
    fn put_asset(&self, a: &AssetRecord) -> Result<(), StoreError> {
        self.inner.put_asset(a)
    }
    fn asset(&self, id: &str) -> Result<Option<AssetRecord>, StoreError> {
        self.inner.asset(id)
    }
    fn add_contract(&self, c: &Contract) -> Result<(), StoreError> {
        self.inner.add_contract(c)
    }
    fn replace_policy(
        &self,
        toml: &str,
        c: &[Contract],
        now: u64,
    ) -> Result<Vec<String>, StoreError> {
        self.inner.replace_policy(toml, c, now)
    }
    fn revoke_contract(&self, id: &str) -> Result<bool, StoreError> {
        self.inner.revoke_contract(id)
    }
    fn contract(&self, id: &str) -> Result<Option<Contract>, StoreError> {
        self.inner.contract(id)
    }
    fn count_release(&self, contract: &str, asset: &str, now: u64) -> Result<bool, StoreError> {
        self.inner.count_release(contract, asset, now)
    }
    fn issue_nonce(&self, n: &[u8], a: &str, c: &str, exp: u64) -> Result<(), StoreError> {
        self.inner.issue_nonce(n, a, c, exp)
    }
    fn consume_nonce(&self, n: &[u8], now: u64) -> Result<NonceState, StoreError> {
        self.inner.consume_nonce(n, now)
    }
    fn append_decision(&self, build: &mut RecordBuilder<'_>) -> Result<u64, StoreError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::Poisoned);
        }
        self.inner.append_decision(build)
    }
    fn decisions(&self) -> Result<Vec<StoredDecision>, StoreError> {
        self.inner.decisions()
    }
    fn policy(&self) -> Result<Option<String>, StoreError> {
        self.inner.policy()
    }
    fn remember_admin_request(&self, s: &[u8; 64], t: u64, now: u64) -> Result<bool, StoreError> {
        self.inner.remember_admin_request(s, t, now)
    }
}

/// No key leaves without its record: a release whose decision cannot be logged fails.
#[test]
fn a_release_that_cannot_be_logged_releases_nothing() {
    let f = Fixture::new();
    let store = Arc::new(FailingLog {
        inner: SqliteStore::open(&f.db()).unwrap(),
        fail: AtomicBool::new(false),
    });
    let r = f.start_on(store.clone(), Some(&f.policy(true)));
    f.register(&r);
    let c = &r.client;
    c.release_with_evidence(ASSET, "c-policy", [1; 32], f.nitro(NitroSpec::default()))
        .unwrap();
    store.fail.store(true, Ordering::SeqCst);
    match c.release_with_evidence(ASSET, "c-policy", [1; 32], f.nitro(NitroSpec::default())) {
        Err(ClientError::Release(ReleaseClientError::Unavailable { status: 500, .. })) => {}
        other => panic!("a key left without its record: {other:?}"),
    }
    store.fail.store(false, Ordering::SeqCst);
    assert_eq!(
        store.decisions().unwrap().len(),
        1,
        "only the logged release"
    );
}

/// Contract windows sent through the admin API are read with their offsets.
#[test]
fn contract_windows_from_the_admin_api_honour_offsets() {
    let f = Fixture::new();
    let r = f.start(Some(&f.policy(true)));
    let add = |id: &str, not_after: &str| {
        r.client.add_contract(
            &ContractRequest {
                id: id.into(),
                asset: ASSET.into(),
                not_before: "2026-01-01T00:00:00Z".into(),
                not_after: not_after.into(),
                max_releases: None,
            },
            &f.signer(),
        )
    };
    add("c-tz", "2026-12-31T23:59:59.0+14:00").unwrap();
    let stored = r.broker.store().contract("c-tz").unwrap().unwrap();
    assert_eq!(stored.not_after, 1_798_711_199, "2026-12-31T09:59:59Z");
    for bad in ["2026-12-31", "2026-12-31T23:59:59", "tomorrow"] {
        match add("c-bad", bad) {
            Err(ClientError::Http { status: 400, .. }) => {}
            other => panic!("{bad}: {other:?}"),
        }
    }
}

/// With AMD's revocation lists loaded (`tb-kms serve --kds-cache`), evidence under a
/// revoked ASK is refused; a list nobody signed keeps everything out.
#[test]
fn the_broker_refuses_evidence_under_a_revoked_ask() {
    use trustbridge_verifier::crl::RevocationList;
    use trustbridge_verifier::simulated::{SnpCrlIssuer, SnpSpec};
    let f = Fixture::new();
    let r = f.start(Some(&f.policy(true)));
    f.register(&r);
    let c = &r.client;
    let release = || c.release_with_evidence(ASSET, "c-policy", [1; 32], f.snp(SnpSpec::default()));
    release().unwrap();
    let ask = &f.sim.snp_certificates()[1];
    let list = f.sim.snp_crl(SnpCrlIssuer::Ark, &[ask.serial()]).unwrap();
    r.broker
        .set_revocation_lists(vec![RevocationList::from_der(&list).unwrap()])
        .unwrap();
    match release() {
        Err(ClientError::Release(ReleaseClientError::Denied { code, detail })) => {
            assert_eq!(code.as_str(), "evidence_invalid");
            assert!(detail.contains("revoked"), "{detail}");
        }
        other => panic!("a revoked ASK released a key: {other:?}"),
    }
    // Still in force after the policy is replaced.
    c.replace_policy(&f.policy(true), &f.signer()).unwrap();
    assert_eq!(denial(release()), "evidence_invalid");
    // Nitro evidence has no AMD chain: unaffected.
    c.release_with_evidence(ASSET, "c-policy", [1; 32], f.nitro(NitroSpec::default()))
        .unwrap();
}
