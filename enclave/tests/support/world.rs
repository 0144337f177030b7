//! A key broker and the relay's services for the sentinel tests, in this process: the
//! broker on loopback TCP with one sealed bundle registered under a policy that admits the
//! simulated TEE (Nitro with PCR0 `0x10..`; Azure with the simulator's SNP measurement and
//! PCR 7 as `support/vtpm.rs` extends it once with `0x07..`), the relay's egress proxy and
//! its bundle server on Unix sockets. Shared by `authorize.rs`, `azure_boot.rs` and the
//! `ready` benchmark (which seals its own, larger bundle with [`world_with`]).
#![allow(dead_code, unreachable_pub)] // each test file uses a different part

use std::path::{Path, PathBuf};
use std::sync::Arc;

use trustbridge_enclave::authorize::{BrokerKey, KmsTarget, Pins};
use trustbridge_kms::broker::kek::Kek;
use trustbridge_kms::broker::store::{SqliteStore, Store};
use trustbridge_kms::broker::{Broker, service};
use trustbridge_kms::client::{AdminSigner, KmsClient};
use trustbridge_protocol::bundle::{
    AssetId, ProviderSigningKey, SignedManifest, seal_bundle_in_memory,
};
use trustbridge_protocol::sealed::{DataKey, SegmentSize};
use trustbridge_relay::bundles::BundleServer;
use trustbridge_relay::egress::{AllowList, EgressConfig, serve_egress};
use trustbridge_transport::{Endpoint, Listener};
use trustbridge_verifier::simulated::SimulatedTee;

/// The asset the broker holds.
pub const ASSET: &str = "acme/llm@v1";
/// The contract the policy grants for it.
pub const CONTRACT: &str = "c";
/// The model's one file.
pub const MODEL: &[u8] = b"model weights";

pub struct World {
    pub dir: tempfile::TempDir,
    pub egress: Endpoint,
    pub bundles: Endpoint,
    pub kms: KmsTarget,
    /// The broker's identity key, as a sentinel pins it (no provider pinned).
    pub pins: Pins,
    pub key: DataKey,
    pub manifest_sha256: [u8; 32],
    /// The simulation CA, saved for `SimulatedTee::load` and `tb-sentinel --sim-ca`.
    pub sim_dir: tempfile::TempDir,
    /// The broker itself, for its admin operations (revoke a contract, replace the policy).
    pub broker: Arc<Broker>,
    /// The policy the broker started with.
    pub policy: String,
    /// The provider's signing key (for a new version of the model).
    pub provider: ProviderSigningKey,
    /// The admin's signing key (to register it).
    pub admin: ProviderSigningKey,
    /// The folder the relay serves the bundle from.
    pub bundle: PathBuf,
}

impl World {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn tee(&self) -> SimulatedTee {
        SimulatedTee::load(self.sim_dir.path()).unwrap()
    }
}

/// Starts the broker, egress (allowing the broker only when `allow_broker`) and bundle
/// server on the current runtime, with [`MODEL`] as the bundle's one file.
pub async fn world(allow_broker: bool) -> World {
    world_with(allow_broker, |bundle, key, provider| {
        seal_bundle_in_memory(
            bundle,
            key,
            provider,
            &AssetId::new(ASSET).unwrap(),
            SegmentSize::default(),
            &[("weights.bin", MODEL)],
        )
        .unwrap()
    })
    .await
}

/// [`world`] with the bundle that `seal` writes into the folder it is given, under the
/// data key and provider key it is given, for [`ASSET`]; it returns the signed manifest.
pub async fn world_with(
    allow_broker: bool,
    seal: impl FnOnce(&Path, &DataKey, &ProviderSigningKey) -> SignedManifest,
) -> World {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimulatedTee::new().unwrap();
    let sim_dir = tempfile::tempdir().unwrap();
    sim.save(sim_dir.path()).unwrap();
    let provider = ProviderSigningKey::generate().unwrap();
    let admin = ProviderSigningKey::generate().unwrap();
    let key = DataKey::generate().unwrap();
    let bundle = dir.path().join("bundle");
    std::fs::create_dir(&bundle).unwrap();
    let signed = seal(&bundle, &key, &provider);
    let pcr7 =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &[[0u8; 32], [7u8; 32]].concat());
    let policy = format!(
        "[admin]\nkeys = [\"{}\"]\n[simulation]\nnitro_root_sha256 = [\"{}\"]\nsnp_root_sha256 = [\"{}\"]\n[[asset]]\nid = \"{ASSET}\"\nprovider_key = \"{}\"\n[[asset.nitro]]\npcr0 = \"{}\"\n[[asset.azure]]\nmeasurement = \"{}\"\ntpm_pcrs = {{ \"7\" = \"{}\" }}\n[[contract]]\nid = \"{CONTRACT}\"\nasset = \"{ASSET}\"\nnot_before = \"2020-01-01T00:00:00Z\"\nnot_after = \"2099-01-01T00:00:00Z\"\n",
        admin.public().to_hex(),
        hex::encode(sim.nitro_root().sha256()),
        hex::encode(sim.snp_root().sha256()),
        provider.public().to_hex(),
        "10".repeat(48),
        "4d".repeat(48),
        hex::encode(pcr7),
    );
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("kms.db")).unwrap());
    let broker = Arc::new(Broker::open(store, Kek::generate().unwrap(), Some(&policy)).unwrap());
    let pins = Pins {
        broker: broker.identity_key(),
        provider: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(service::serve(
        listener,
        broker.clone(),
        std::future::pending(),
    ));
    let base = format!("http://127.0.0.1:{port}");
    let manifest = signed.as_bytes().to_vec();
    register(&base, pins.broker, &admin, manifest, key.clone()).await;
    let egress = Endpoint::Unix(dir.path().join("egress.sock"));
    let allowed = if allow_broker {
        format!("127.0.0.1:{port}")
    } else {
        "127.0.0.1:1".to_owned()
    };
    tokio::spawn(serve_egress(
        Listener::bind(&egress).await.unwrap(),
        EgressConfig::new(AllowList::parse(&[allowed]).unwrap()),
    ));
    let bundles = Endpoint::Unix(dir.path().join("bundles.sock"));
    let server = BundleServer::new(&bundle).unwrap();
    let served = bundle.clone();
    tokio::spawn(server.serve(Listener::bind(&bundles).await.unwrap()));
    World {
        dir,
        egress,
        bundles,
        kms: KmsTarget {
            host: "127.0.0.1".into(),
            port,
        },
        pins,
        key,
        manifest_sha256: signed.digest(),
        sim_dir,
        broker,
        policy,
        provider,
        admin,
        bundle: served,
    }
}

/// Registers `manifest` and its data key at the broker at `base`, signed by `admin`.
pub async fn register(
    base: &str,
    broker: BrokerKey,
    admin: &ProviderSigningKey,
    manifest: Vec<u8>,
    key: DataKey,
) {
    let pem = admin.to_pkcs8_pem().unwrap();
    let base = base.to_owned();
    tokio::task::spawn_blocking(move || {
        let admin = ProviderSigningKey::from_pkcs8_pem(&pem).unwrap();
        let signer = AdminSigner {
            public_key: admin.public().to_bytes(),
            sign: Box::new(move |m| admin.sign(m)),
        };
        KmsClient::new(&base, broker)
            .register_asset(ASSET, &manifest, &key, &signer)
            .unwrap();
    })
    .await
    .unwrap();
}

impl World {
    /// A new version of the model (`contents`, under a new data key), sealed by the same
    /// provider, put in place of the served bundle and registered; its manifest digest.
    pub async fn replace_model(&self, contents: &[u8]) -> [u8; 32] {
        let key = DataKey::generate().unwrap();
        let staging = tempfile::tempdir_in(self.dir.path()).unwrap();
        let signed = seal_bundle_in_memory(
            staging.path(),
            &key,
            &self.provider,
            &AssetId::new(ASSET).unwrap(),
            SegmentSize::default(),
            &[("weights.bin", contents)],
        )
        .unwrap();
        for entry in std::fs::read_dir(staging.path()).unwrap() {
            let entry = entry.unwrap();
            std::fs::rename(entry.path(), self.bundle.join(entry.file_name())).unwrap();
        }
        let base = format!("http://127.0.0.1:{}", self.kms.port);
        register(
            &base,
            self.pins.broker,
            &self.admin,
            signed.as_bytes().to_vec(),
            key,
        )
        .await;
        signed.digest()
    }
}
