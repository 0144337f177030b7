//! The sentinel tests' world: the one test world (`trustbridge_testkit::world`: provider,
//! sealed bundle, simulated TEE, embedded key broker) with a policy that admits the
//! simulated TEE (Nitro with PCR0 `0x10..`; Azure with the simulator's SNP measurement and
//! PCR 7 as `support/vtpm.rs` extends it once with `0x07..`), plus the relay's egress proxy
//! and bundle server on Unix sockets in this process. Shared by the sentinel tests and the
//! `ready` benchmark (which seals its own, larger bundle with [`world_with`]).
#![allow(dead_code, unreachable_pub)] // each test file uses a different part

use std::path::{Path, PathBuf};
use std::sync::Arc;

use trustbridge_enclave::authorize::{KmsTarget, Pins};
use trustbridge_kms::broker::Broker;
use trustbridge_protocol::bundle::{ProviderSigningKey, SignedManifest};
use trustbridge_protocol::sealed::DataKey;
use trustbridge_relay::bundles::BundleServer;
use trustbridge_relay::egress::{AllowList, EgressConfig, serve_egress};
use trustbridge_testkit::world::{World as Base, WorldSpec};
use trustbridge_transport::{Endpoint, Listener};
use trustbridge_verifier::simulated::SimulatedTee;

/// The asset the broker holds.
pub const ASSET: &str = "acme/llm@v1";
/// The contract the policy grants for it.
pub const CONTRACT: &str = "c";
/// The model's one file.
pub const MODEL: &[u8] = b"model weights";

/// The one world, with the relay's services and the sentinel's view of the broker.
pub struct World {
    /// The world's folder (removed at the end).
    pub dir: tempfile::TempDir,
    /// The relay's egress proxy.
    pub egress: Endpoint,
    /// The relay's bundle server.
    pub bundles: Endpoint,
    /// The broker, as a sentinel reaches it.
    pub kms: KmsTarget,
    /// The broker's identity key, as a sentinel pins it (no provider pinned).
    pub pins: Pins,
    /// The broker itself, for its admin operations (revoke a contract, replace the policy).
    pub broker: Arc<Broker>,
    base: Arc<Base>,
}

impl std::ops::Deref for World {
    type Target = Base;
    fn deref(&self) -> &Base {
        &self.base
    }
}

impl World {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn tee(&self) -> SimulatedTee {
        SimulatedTee::load(&self.base.sim_ca).unwrap()
    }

    /// A new version of the model (`contents`, under a new data key), sealed by the same
    /// provider, put in place of the served bundle and registered; its manifest digest.
    pub async fn replace_model(&self, contents: &[u8]) -> [u8; 32] {
        let base = self.base.clone();
        let contents = contents.to_vec();
        tokio::task::spawn_blocking(move || base.replace_model(&[("weights.bin", &contents)]))
            .await
            .unwrap()
            .unwrap()
    }
}

/// The accepted measurement sets of the sentinel tests' broker.
fn sets() -> String {
    let pcr7 =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &[[0u8; 32], [7u8; 32]].concat());
    format!(
        "[[asset.nitro]]\npcr0 = \"{}\"\n[[asset.azure]]\nmeasurement = \"{}\"\ntpm_pcrs = {{ \"7\" = \"{}\" }}\n",
        "10".repeat(48),
        "4d".repeat(48),
        hex::encode(pcr7),
    )
}

/// Starts the world, egress (allowing the broker only when `allow_broker`) and bundle
/// server on the current runtime, with [`MODEL`] as the bundle's one file.
pub async fn world(allow_broker: bool) -> World {
    start(
        allow_broker,
        None,
        vec![("weights.bin".into(), MODEL.to_vec())],
    )
    .await
}

/// [`world`] with `files` (bundle path, contents) as the model.
pub async fn world_of(allow_broker: bool, files: Vec<(String, Vec<u8>)>) -> World {
    start(allow_broker, None, files).await
}

type Seal = Box<dyn FnOnce(&Path, &DataKey, &ProviderSigningKey) -> SignedManifest + Send>;

/// [`world`] with the bundle that `seal` writes into the folder it is given, under the
/// data key and provider key it is given, for [`ASSET`]; it returns the signed manifest.
pub async fn world_with(
    allow_broker: bool,
    seal: impl FnOnce(&Path, &DataKey, &ProviderSigningKey) -> SignedManifest + Send + 'static,
) -> World {
    start(
        allow_broker,
        Some(Box::new(seal)),
        vec![("weights.bin".into(), MODEL.to_vec())],
    )
    .await
}

async fn start(allow_broker: bool, seal: Option<Seal>, files: Vec<(String, Vec<u8>)>) -> World {
    let dir = tempfile::tempdir().unwrap();
    let spec = WorldSpec {
        asset: ASSET.into(),
        contract: CONTRACT.into(),
        files,
        sets: sets(),
        ..WorldSpec::default()
    };
    let at = dir.path().to_owned();
    // The broker's client blocks: build off the runtime's threads.
    let base = tokio::task::spawn_blocking(move || match seal {
        None => Base::build(&at, spec),
        Some(seal) => Base::build_with(&at, spec, |bundle, key, provider, _| {
            Ok(seal(bundle, key, provider))
        }),
    })
    .await
    .unwrap()
    .unwrap();
    let port = base.broker_port();
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
    let server = BundleServer::new(&base.bundle).unwrap();
    tokio::spawn(server.serve(Listener::bind(&bundles).await.unwrap()));
    World {
        egress,
        bundles,
        kms: KmsTarget {
            host: "127.0.0.1".into(),
            port,
        },
        pins: Pins {
            broker: base.broker_key(),
            provider: None,
        },
        broker: base.broker.broker().clone(),
        base: Arc::new(base),
        dir,
    }
}
