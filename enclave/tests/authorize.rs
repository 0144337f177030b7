//! The sentinel's Authorize step end to end: a key broker, the relay's egress proxy on a
//! Unix socket, and a simulated TEE. The key arrives only through the egress tunnel.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::sync::Arc;

use trustbridge_enclave::attestation::{AttestationProvider, SimulatedPlatform, SimulatedProvider};
use trustbridge_enclave::authorize::{KmsTarget, authorize};
use trustbridge_enclave::boot::StepError;
use trustbridge_enclave::keys::SentinelKeys;
use trustbridge_kms::broker::kek::Kek;
use trustbridge_kms::broker::store::{SqliteStore, Store};
use trustbridge_kms::broker::{Broker, service};
use trustbridge_kms::client::{AdminSigner, KmsClient};
use trustbridge_protocol::bundle::{
    AssetId, BundlePath, Manifest, ProviderSigningKey, SignedManifest, seal_file,
};
use trustbridge_protocol::sealed::{DataKey, SegmentSize};
use trustbridge_relay::egress::{AllowList, EgressConfig, serve_egress};
use trustbridge_transport::{Endpoint, Listener};
use trustbridge_verifier::simulated::{NitroSpec, SimulatedTee};

const ASSET: &str = "acme/llm@v1";

struct World {
    _dir: tempfile::TempDir,
    egress: Endpoint,
    kms: KmsTarget,
    key: DataKey,
    manifest_sha256: [u8; 32],
    sim_dir: tempfile::TempDir,
}

async fn world(allow_broker: bool) -> World {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimulatedTee::new().unwrap();
    let sim_dir = tempfile::tempdir().unwrap();
    sim.save(sim_dir.path()).unwrap();
    let provider = ProviderSigningKey::generate().unwrap();
    let admin = ProviderSigningKey::generate().unwrap();
    let key = DataKey::generate().unwrap();
    let asset = AssetId::new(ASSET).unwrap();
    let entry = seal_file(
        &key,
        &asset,
        BundlePath::new("w").unwrap(),
        SegmentSize::default(),
        &b"w"[..],
        std::io::sink(),
    )
    .unwrap();
    let signed = SignedManifest::sign(
        Manifest::new(asset, 0, provider.public(), &key, vec![entry]).unwrap(),
        &provider,
    )
    .unwrap();
    let policy = format!(
        "[admin]\nkeys = [\"{}\"]\n[simulation]\nnitro_root_sha256 = [\"{}\"]\n[[asset]]\nid = \"{ASSET}\"\nprovider_key = \"{}\"\n[[asset.nitro]]\npcr0 = \"{}\"\n[[contract]]\nid = \"c\"\nasset = \"{ASSET}\"\nnot_before = \"2020-01-01T00:00:00Z\"\nnot_after = \"2099-01-01T00:00:00Z\"\n",
        admin.public().to_hex(),
        hex::encode(sim.nitro_root().sha256()),
        provider.public().to_hex(),
        "10".repeat(48)
    );
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("kms.db")).unwrap());
    let broker = Arc::new(Broker::open(store, Kek::generate().unwrap(), Some(&policy)).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(service::serve(listener, broker, std::future::pending()));
    let base = format!("http://127.0.0.1:{port}");
    let manifest = signed.as_bytes().to_vec();
    let k = key.clone();
    tokio::task::spawn_blocking(move || {
        let signer = AdminSigner {
            public_key: admin.public().to_bytes(),
            sign: Box::new(move |m| admin.sign(m)),
        };
        KmsClient::new(&base)
            .register_asset(ASSET, &manifest, &k, &signer)
            .unwrap();
    })
    .await
    .unwrap();
    let egress = Endpoint::Unix(dir.path().join("egress.sock"));
    let allowed = if allow_broker {
        format!("127.0.0.1:{port}")
    } else {
        "127.0.0.1:1".to_owned()
    };
    let egress_listener = Listener::bind(&egress).await.unwrap();
    tokio::spawn(serve_egress(
        egress_listener,
        EgressConfig::new(AllowList::parse(&[allowed]).unwrap()),
    ));
    World {
        _dir: dir,
        egress,
        kms: KmsTarget {
            host: "127.0.0.1".into(),
            port,
        },
        key,
        manifest_sha256: signed.digest(),
        sim_dir,
    }
}

fn provider(w: &World, spec: NitroSpec) -> Arc<dyn AttestationProvider> {
    Arc::new(
        SimulatedProvider::new(
            SimulatedTee::load(w.sim_dir.path()).unwrap(),
            SimulatedPlatform::Nitro,
        )
        .with_nitro(spec),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_arrives_through_the_egress_tunnel() {
    let w = world(true).await;
    let keys = SentinelKeys::generate();
    let released = authorize(
        provider(&w, NitroSpec::default()),
        &keys,
        &w.egress,
        &w.kms,
        ASSET,
        "c",
    )
    .await
    .unwrap();
    assert_eq!(released.key.key_id(), w.key.key_id());
    assert_eq!(released.manifest_sha256, w.manifest_sha256);
    assert!(
        !format!("{released:?}").contains(&hex::encode(w.key.expose_secret())),
        "Debug shows no key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_is_fatal_with_the_broker_reason() {
    let w = world(true).await;
    let mut rogue = NitroSpec::default();
    rogue.pcrs.insert(0, vec![0x99; 48]);
    let err = authorize(
        provider(&w, rogue),
        &SentinelKeys::generate(),
        &w.egress,
        &w.kms,
        ASSET,
        "c",
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, StepError::Fatal { code, .. } if code == "measurement_mismatch"),
        "{err}"
    );
    let err = authorize(
        provider(&w, NitroSpec::default()),
        &SentinelKeys::generate(),
        &w.egress,
        &w.kms,
        ASSET,
        "nope",
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, StepError::Fatal { code, .. } if code == "unknown_contract"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_refusal_is_fatal_and_an_unreachable_broker_is_transient() {
    let w = world(false).await;
    let err = authorize(
        provider(&w, NitroSpec::default()),
        &SentinelKeys::generate(),
        &w.egress,
        &w.kms,
        ASSET,
        "c",
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, StepError::Fatal { code, .. } if code == "egress_refused"),
        "{err}"
    );
    // The egress proxy allows 127.0.0.1:1, where nothing listens: retry later.
    let down = KmsTarget {
        host: "127.0.0.1".into(),
        port: 1,
    };
    let err = authorize(
        provider(&w, NitroSpec::default()),
        &SentinelKeys::generate(),
        &w.egress,
        &down,
        ASSET,
        "c",
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StepError::Transient(_)), "{err}");
    // No relay at all: transient too.
    let nowhere = Endpoint::Unix(w._dir.path().join("missing.sock"));
    let err = authorize(
        provider(&w, NitroSpec::default()),
        &SentinelKeys::generate(),
        &nowhere,
        &w.kms,
        ASSET,
        "c",
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StepError::Transient(_)), "{err}");
}

#[test]
fn kms_target_parsing() {
    assert_eq!(
        "http://kms.internal:7443".parse::<KmsTarget>().unwrap(),
        KmsTarget {
            host: "kms.internal".into(),
            port: 7443
        }
    );
    assert_eq!(
        "127.0.0.1:80/".parse::<KmsTarget>().unwrap(),
        KmsTarget {
            host: "127.0.0.1".into(),
            port: 80
        }
    );
    assert!("http://kms".parse::<KmsTarget>().is_err());
    assert!("http://a/b:1".parse::<KmsTarget>().is_err());
}
