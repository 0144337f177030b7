//! One world for every end-to-end setting: a provider, a sealed bundle, a simulated TEE, and
//! an embedded key broker (SQLite) whose policy admits that TEE for the asset, with the
//! bundle registered and a contract granted. The sentinel tests, the benchmarks and
//! `trustbridge demo` build theirs here, so what the demo shows is what the tests check.
//!
//! Unlike the rest of this crate, [`World::build`] returns errors instead of panicking: the
//! demo runs it for users.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use trustbridge_kms::broker::Broker;
use trustbridge_kms::broker::kek::Kek;
use trustbridge_kms::broker::service::LoopbackBroker;
use trustbridge_kms::broker::store::{SqliteStore, Store};
use trustbridge_kms::client::{AdminSigner, KmsClient};
use trustbridge_protocol::bundle::{
    AssetId, BundleError, ProviderKeyError, ProviderSigningKey, SignedManifest,
    seal_bundle_in_memory,
};
use trustbridge_protocol::sealed::{DataKey, DataKeyError, SegmentSize};
use trustbridge_verifier::simulated::{NitroSpec, SimulatedTee};

/// The world could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorldError {
    /// A file or folder.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// Sealing or the asset id.
    #[error("sealing the model: {0}")]
    Bundle(#[from] BundleError),
    /// A provider or admin key.
    #[error("a signing key: {0}")]
    SigningKey(#[from] ProviderKeyError),
    /// The data key.
    #[error("the data key: {0}")]
    DataKey(#[from] DataKeyError),
    /// Sealing with a caller's sealing function.
    #[error("sealing the model: {0}")]
    Seal(String),
    /// The simulated TEE.
    #[error("the simulated TEE: {0}")]
    Simulation(String),
    /// The key broker (its store, its policy, or registering the bundle).
    #[error("the key broker: {0}")]
    Broker(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> WorldError {
    let what = what.into();
    move |source| WorldError::Io { what, source }
}

/// What the world holds. Its `Debug` shows file names and sizes, not their contents.
#[derive(Clone)]
pub struct WorldSpec {
    /// The asset id.
    pub asset: String,
    /// The contract the broker's policy grants.
    pub contract: String,
    /// The model's files (relative path, contents), sealed by [`World::build`] unless a
    /// sealing function is given ([`World::build_with`]).
    pub files: Vec<(String, Vec<u8>)>,
    /// The sealed segment size [`World::build`] seals with.
    pub segment_size: SegmentSize,
    /// Pin the manifest in the broker's policy (not only the provider).
    pub pin_manifest: bool,
    /// Accepted measurement sets, as TOML tables of the broker's `[[asset.*]]` form
    /// (`[[asset.nitro]]`, `[[asset.azure]]`, ...). By default the simulated TEE's Nitro
    /// PCR0-2 ([`simulated_nitro_set`]).
    pub sets: String,
}

impl std::fmt::Debug for WorldSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let files: Vec<(&str, usize)> = self
            .files
            .iter()
            .map(|(n, d)| (n.as_str(), d.len()))
            .collect();
        f.debug_struct("WorldSpec")
            .field("asset", &self.asset)
            .field("contract", &self.contract)
            .field("files", &files)
            .finish_non_exhaustive()
    }
}

impl Default for WorldSpec {
    fn default() -> Self {
        Self {
            asset: "acme/llm@v1".into(),
            contract: "c".into(),
            files: vec![("weights.bin".into(), b"model weights".to_vec())],
            segment_size: SegmentSize::default(),
            pin_manifest: false,
            sets: simulated_nitro_set("asset.nitro"),
        }
    }
}

/// The simulated TEE's Nitro PCR0-2 as a TOML table named `table` (`asset.nitro` for the
/// broker's policy, `nitro` for a client policy).
pub fn simulated_nitro_set(table: &str) -> String {
    let spec = NitroSpec::default();
    let pcr = |i: u8| spec.pcrs.get(&i).map(hex::encode).unwrap_or_default();
    format!(
        "[[{table}]]\npcr0 = \"{}\"\npcr1 = \"{}\"\npcr2 = \"{}\"\n",
        pcr(0),
        pcr(1),
        pcr(2)
    )
}

/// The parties every setting has: the provider's signing key, the broker admin's, the
/// model's data key, a simulated TEE, and the broker's key-encryption key. The world below
/// and the broker API tests (`kms-policy/tests`) start from these.
pub struct Parties {
    /// The provider's signing key.
    pub provider: ProviderSigningKey,
    /// The broker admin's signing key.
    pub admin: ProviderSigningKey,
    /// The model's data key.
    pub key: DataKey,
    /// The simulated TEE.
    pub sim: SimulatedTee,
    /// The broker's key-encryption key, as its hex line (what `tb-kms` reads from a file).
    pub kek_hex: String,
}

impl std::fmt::Debug for Parties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Parties(provider {})", self.provider.public().key_id())
    }
}

impl Parties {
    /// Fresh keys and a fresh simulated TEE.
    pub fn generate() -> Result<Self, WorldError> {
        let broker_err = |e: &dyn std::fmt::Display| WorldError::Broker(e.to_string());
        Ok(Self {
            provider: ProviderSigningKey::generate()?,
            admin: ProviderSigningKey::generate()?,
            key: DataKey::generate()?,
            sim: SimulatedTee::new().map_err(|e| WorldError::Simulation(e.to_string()))?,
            kek_hex: Kek::generate()
                .map_err(|e| broker_err(&e))?
                .to_hex_line()
                .trim()
                .to_owned(),
        })
    }

    /// What signs admin requests to the broker.
    pub fn admin_signer(&self) -> Result<AdminSigner, WorldError> {
        admin_signer(&self.admin)
    }

    /// A broker on `store` under `policy`, serving on loopback, with this KEK (see
    /// [`start_broker`]).
    pub fn start_broker(
        &self,
        store: Arc<dyn Store>,
        policy: Option<&str>,
        clock: Option<Arc<AtomicU64>>,
    ) -> Result<LoopbackBroker, WorldError> {
        start_broker(&self.kek_hex, store, policy, clock)
    }
}

/// A broker on `store` under `policy` with the KEK `kek_hex`, serving on loopback; its
/// clock is `clock` (seconds since the epoch, for tests that move time) or the real one.
pub fn start_broker(
    kek_hex: &str,
    store: Arc<dyn Store>,
    policy: Option<&str>,
    clock: Option<Arc<AtomicU64>>,
) -> Result<LoopbackBroker, WorldError> {
    let broker_err = |e: &dyn std::fmt::Display| WorldError::Broker(e.to_string());
    let kek = Kek::from_hex(kek_hex).map_err(|e| broker_err(&e))?;
    let broker = match clock {
        Some(clock) => Broker::with_clock(
            store,
            kek,
            policy,
            Box::new(move || clock.load(Ordering::SeqCst)),
        ),
        None => Broker::open(store, kek, policy),
    }
    .map_err(|e| broker_err(&e))?;
    LoopbackBroker::start(Arc::new(broker)).map_err(|e| broker_err(&e))
}

/// What signs admin requests to the broker with `admin`.
pub fn admin_signer(admin: &ProviderSigningKey) -> Result<AdminSigner, WorldError> {
    let admin = ProviderSigningKey::from_pkcs8_pem(&admin.to_pkcs8_pem()?)?;
    Ok(AdminSigner {
        public_key: admin.public().to_bytes(),
        sign: Box::new(move |m| admin.sign(m)),
    })
}

/// A built world; the broker serves until it is dropped.
pub struct World {
    /// Where everything lives.
    pub dir: PathBuf,
    /// What it was built from.
    pub spec: WorldSpec,
    /// The provider's signing key.
    pub provider: ProviderSigningKey,
    /// The broker admin's signing key.
    pub admin: ProviderSigningKey,
    /// The model's data key.
    pub key: DataKey,
    /// The simulated TEE (also saved in [`Self::sim_ca`]).
    pub sim: SimulatedTee,
    /// The simulated TEE's saved CA (`SimulatedTee::load`, `tb-sentinel --sim-ca`).
    pub sim_ca: PathBuf,
    /// The sealed bundle's folder.
    pub bundle: PathBuf,
    /// SHA-256 of its `manifest.cose`.
    pub manifest_sha256: [u8; 32],
    /// The broker's policy text.
    pub policy: String,
    /// The embedded broker.
    pub broker: LoopbackBroker,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "World({}, {:?})", self.dir.display(), self.broker)
    }
}

impl World {
    /// Builds the world in `dir` (created if missing), sealing the spec's files in memory.
    pub fn build(dir: &Path, spec: WorldSpec) -> Result<Self, WorldError> {
        let files = spec.files.clone();
        let segment_size = spec.segment_size;
        Self::build_with(dir, spec, move |bundle, key, provider, asset| {
            let files: Vec<(&str, &[u8])> = files
                .iter()
                .map(|(n, d)| (n.as_str(), d.as_slice()))
                .collect();
            Ok(seal_bundle_in_memory(
                bundle,
                key,
                provider,
                asset,
                segment_size,
                &files,
            )?)
        })
    }

    /// [`Self::build`] with the bundle that `seal` writes into the folder it is given, under
    /// the data key and provider key it is given, for the asset; it returns the signed
    /// manifest.
    pub fn build_with(
        dir: &Path,
        spec: WorldSpec,
        seal: impl FnOnce(
            &Path,
            &DataKey,
            &ProviderSigningKey,
            &AssetId,
        ) -> Result<SignedManifest, WorldError>,
    ) -> Result<Self, WorldError> {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        let parties = Parties::generate()?;
        let (provider, admin, key, sim) = (
            &parties.provider,
            &parties.admin,
            &parties.key,
            &parties.sim,
        );
        let sim_ca = dir.join("sim-ca");
        sim.save(&sim_ca)
            .map_err(|e| WorldError::Simulation(e.to_string()))?;
        let bundle = dir.join("bundle");
        std::fs::create_dir_all(&bundle).map_err(io("creating the bundle folder"))?;
        let asset = AssetId::new(&spec.asset)?;
        let signed = seal(&bundle, key, provider, &asset)?;
        let manifest_pin = if spec.pin_manifest {
            format!("manifest_sha256 = \"{}\"\n", hex::encode(signed.digest()))
        } else {
            String::new()
        };
        let policy = format!(
            "[admin]\nkeys = [\"{admin}\"]\n\n[simulation]\nnitro_root_sha256 = [\"{nitro}\"]\nsnp_root_sha256 = [\"{snp}\"]\n\n[[asset]]\nid = \"{asset}\"\nprovider_key = \"{provider}\"\n{manifest_pin}\n{sets}\n[[contract]]\nid = \"{contract}\"\nasset = \"{asset}\"\nnot_before = \"2020-01-01T00:00:00Z\"\nnot_after = \"2099-01-01T00:00:00Z\"\n",
            admin = admin.public().to_hex(),
            nitro = hex::encode(sim.nitro_root().sha256()),
            snp = hex::encode(sim.snp_root().sha256()),
            asset = spec.asset,
            provider = provider.public().to_hex(),
            sets = spec.sets,
            contract = spec.contract,
        );
        std::fs::write(dir.join("policy.toml"), &policy).map_err(io("writing policy.toml"))?;
        let broker_err = |e: &dyn std::fmt::Display| WorldError::Broker(e.to_string());
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&dir.join("kms.db")).map_err(|e| broker_err(&e))?);
        let broker = parties.start_broker(store, Some(&policy), None)?;
        let identity = broker.broker().identity_key();
        KmsClient::new(broker.url(), identity)
            .register_asset(
                &spec.asset,
                signed.as_bytes(),
                key,
                &parties.admin_signer()?,
            )
            .map_err(|e| broker_err(&e))?;
        let Parties {
            provider,
            admin,
            key,
            sim,
            ..
        } = parties;
        Ok(Self {
            dir: dir.to_owned(),
            spec,
            provider,
            admin,
            key,
            sim,
            sim_ca,
            bundle,
            manifest_sha256: signed.digest(),
            policy,
            broker,
        })
    }

    /// Writes the provider's and the admin's keys (`provider.key`, `admin.key`, PKCS#8
    /// PEM, mode 0600) into the world's folder, for the `trustbridge` commands that sign.
    pub fn write_keys(&self) -> Result<(), WorldError> {
        use std::os::unix::fs::OpenOptionsExt;
        for (name, key) in [("provider.key", &self.provider), ("admin.key", &self.admin)] {
            let path = self.dir.join(name);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .map_err(io(format!("writing {}", path.display())))?;
            std::io::Write::write_all(&mut f, key.to_pkcs8_pem()?.as_bytes())
                .map_err(io(format!("writing {}", path.display())))?;
        }
        Ok(())
    }

    /// The broker's base URL (`http://127.0.0.1:PORT`).
    pub fn broker_url(&self) -> &str {
        self.broker.url()
    }

    /// The broker's port on 127.0.0.1.
    pub fn broker_port(&self) -> u16 {
        self.broker
            .url()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }

    /// The broker's identity key, as a sentinel pins it.
    pub fn broker_key(&self) -> trustbridge_protocol::key_release::BrokerKey {
        self.broker.broker().identity_key()
    }

    /// A client policy (`trustbridge proxy --policy`) that accepts this world's sentinel:
    /// its broker, its model, the simulated TEE's Nitro measurements, and its provider when
    /// `pin_provider` (for a sentinel started with `--provider-key`).
    pub fn client_policy(&self, pin_provider: bool) -> String {
        let provider = if pin_provider {
            format!("provider_key = \"{}\"\n", self.provider.public().to_hex())
        } else {
            String::new()
        };
        format!(
            "broker_key = \"{}\"\n{provider}models = [\"{}\"]\n\n{}\n# Development only: the simulated TEE.\n[simulation]\nnitro_root_sha256 = [\"{}\"]\nsnp_root_sha256 = [\"{}\"]\n",
            self.broker_key(),
            hex::encode(self.manifest_sha256),
            simulated_nitro_set("nitro"),
            hex::encode(self.sim.nitro_root().sha256()),
            hex::encode(self.sim.snp_root().sha256()),
        )
    }

    /// Registers a new version of the model (`files`, under a new data key), sealed by the
    /// same provider into `self.bundle`'s place; its manifest digest.
    pub fn replace_model(&self, files: &[(&str, &[u8])]) -> Result<[u8; 32], WorldError> {
        let key = DataKey::generate()?;
        let staging = self
            .dir
            .join(format!("staging-{}", hex::encode(key.key_id().to_string())));
        std::fs::create_dir_all(&staging).map_err(io("creating a staging folder"))?;
        let signed = seal_bundle_in_memory(
            &staging,
            &key,
            &self.provider,
            &AssetId::new(&self.spec.asset)?,
            SegmentSize::default(),
            files,
        )?;
        for entry in std::fs::read_dir(&staging).map_err(io("reading the staging folder"))? {
            let entry = entry.map_err(io("reading the staging folder"))?;
            std::fs::rename(entry.path(), self.bundle.join(entry.file_name()))
                .map_err(io("replacing the bundle"))?;
        }
        let signer = admin_signer(&self.admin)?;
        KmsClient::new(self.broker_url(), self.broker_key())
            .register_asset(&self.spec.asset, signed.as_bytes(), &key, &signer)
            .map_err(|e| WorldError::Broker(e.to_string()))?;
        Ok(signed.digest())
    }
}
