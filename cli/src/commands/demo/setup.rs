//! The demo's provider and broker side: a provider key, a model sealed into a signed
//! bundle, an embedded key broker (SQLite) whose policy admits the simulated sentinel, the
//! bundle registered and a contract, and the client policy that accepts that sentinel.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use trustbridge_kms::broker::Broker;
use trustbridge_kms::broker::kek::Kek;
use trustbridge_kms::broker::service::LoopbackBroker;
use trustbridge_kms::broker::store::{SqliteStore, Store};
use trustbridge_kms::client::{AdminSigner, KmsClient};
use trustbridge_protocol::bundle::{AssetId, ProviderSigningKey};
use trustbridge_protocol::sealed::{DataKey, SegmentSize};
use trustbridge_verifier::simulated::{NitroSpec, SimulatedTee};

use super::super::key_release::simulation_section;
use super::super::seal::seal_bundle;
use super::step;
use crate::key_files::{write_data_key, write_file_atomic};
use crate::output_file::write_output;
use crate::sizes::human;

/// The demo's asset id.
pub(crate) const ASSET: &str = "demo/synthetic-model@v1";
/// The contract the broker's policy grants the sentinel.
pub(crate) const CONTRACT: &str = "demo";

/// What the provider and the broker set up.
pub(crate) struct Provisioned {
    /// The sealed bundle the relay serves.
    pub(crate) bundle: PathBuf,
    /// The simulation CA the sentinel signs its evidence with.
    pub(crate) sim_ca: PathBuf,
    /// The broker, serving until dropped.
    pub(crate) broker: LoopbackBroker,
    /// The broker's identity key (hex), which the sentinel pins.
    pub(crate) broker_key: String,
    /// The broker's port on 127.0.0.1.
    pub(crate) broker_port: u16,
    /// The client policy file.
    pub(crate) client_policy: PathBuf,
    /// The provider's public key (hex), which the sentinel pins too.
    pub(crate) provider_key: String,
}

/// Provider key, synthetic model, sealed bundle, broker, client policy, all under `dir`.
pub(crate) fn provision(
    dir: &Path,
    out: &mut impl Write,
    size_mib: u64,
    quiet: bool,
) -> Result<Provisioned> {
    let provider = ProviderSigningKey::generate()?;
    write_file_atomic(
        &dir.join("provider.key"),
        provider.to_pkcs8_pem()?.as_bytes(),
        0o600,
        false,
    )?;
    step(
        out,
        &format!("provider key created (id {})", provider.public().key_id()),
    )?;

    let model = dir.join("model");
    fs::create_dir_all(model.join("weights"))?;
    let weights = synthetic_weights(size_mib << 20);
    fs::write(model.join("weights/model.bin"), &weights)?;
    fs::write(
        model.join("config.json"),
        br#"{"architecture": "demo", "layers": 2}"#,
    )?;
    step(
        out,
        &format!(
            "synthetic model written ({} of weights; real models come with the built-in engine)",
            human(weights.len() as u64)
        ),
    )?;

    let asset = AssetId::new(ASSET)?;
    let key = DataKey::generate()?;
    write_data_key(&dir.join("dek.key"), &key, false)?;
    let bundle = dir.join("bundle");
    let started = Instant::now();
    let signed = seal_bundle(
        &model,
        &bundle,
        &asset,
        &provider,
        &key,
        SegmentSize::default(),
        false,
        quiet,
    )?;
    step(
        out,
        &format!(
            "sealed {} files in {:.2?} (manifest sha256 {})",
            signed.manifest().files.len(),
            started.elapsed(),
            hex::encode(signed.digest())
        ),
    )?;

    // The broker: its policy admits the simulated sentinel's measurements for this asset,
    // pins the provider and the manifest, and grants one contract.
    let kek = Kek::generate()?;
    write_output(&dir.join("kek"), false, 0o600, |f| {
        f.write_all(kek.to_hex_line().as_bytes())
            .context("writing the KEK")
    })?;
    let sim = SimulatedTee::new()?;
    let sim_ca = dir.join("sim-ca");
    sim.save(&sim_ca)?;
    let admin = ProviderSigningKey::generate()?;
    let sets = nitro_set();
    let broker_policy = format!(
        "[admin]\nkeys = [\"{admin}\"]\n\n{simulation}\n[[asset]]\nid = \"{ASSET}\"\nprovider_key = \"{provider}\"\nmanifest_sha256 = \"{digest}\"\n\n{sets}\n[[contract]]\nid = \"{CONTRACT}\"\nasset = \"{ASSET}\"\nnot_before = \"2020-01-01T00:00:00Z\"\nnot_after = \"2099-01-01T00:00:00Z\"\n",
        admin = admin.public().to_hex(),
        simulation = simulation_section(&sim),
        provider = provider.public().to_hex(),
        digest = hex::encode(signed.digest()),
        sets = sets.replace("[[nitro]]", "[[asset.nitro]]"),
    );
    fs::write(dir.join("policy.toml"), &broker_policy)?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("kms.db"))?);
    let broker = LoopbackBroker::start(Arc::new(Broker::open(store, kek, Some(&broker_policy))?))
        .context("cannot start the key broker")?;
    let identity = broker.broker().identity_key();
    let client = KmsClient::new(broker.url(), identity).pin_provider(provider.public().to_bytes());
    let signer = AdminSigner {
        public_key: admin.public().to_bytes(),
        sign: Box::new(move |m| admin.sign(m)),
    };
    client.register_asset(ASSET, signed.as_bytes(), &key, &signer)?;
    let broker_key = identity.to_string();
    let broker_port = broker
        .url()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .context("the broker's URL has no port")?;
    step(
        out,
        &format!(
            "key broker on {} (SQLite in {}; identity {}); data key registered, contract {CONTRACT:?} granted to the simulated sentinel's measurements",
            broker.url(),
            dir.join("kms.db").display(),
            &broker_key[..16]
        ),
    )?;

    // The client accepts exactly this: the broker, the provider, the model, the measurements.
    let client_policy = dir.join("client.toml");
    let provider_key = provider_public_hex(dir)?;
    fs::write(
        &client_policy,
        format!(
            "# Written by `trustbridge demo`: what the proxy accepts (docs/CLIENT.md).\nbroker_key = \"{broker_key}\"\nprovider_key = \"{provider_key}\"\nmodels = [\"{}\"]\n\n{sets}\n# Development only: the demo's simulated TEE.\n{}",
            hex::encode(signed.digest()),
            simulation_section(&sim),
        ),
    )?;
    Ok(Provisioned {
        bundle,
        sim_ca,
        broker,
        broker_key,
        broker_port,
        client_policy,
        provider_key,
    })
}

fn provider_public_hex(dir: &Path) -> Result<String> {
    let pem = fs::read_to_string(dir.join("provider.key"))?;
    Ok(ProviderSigningKey::from_pkcs8_pem(&pem)?.public().to_hex())
}

/// The `[[nitro]]` set of the simulated sentinel's PCR0-2.
fn nitro_set() -> String {
    let spec = NitroSpec::default();
    let pcr = |i: u8| spec.pcrs.get(&i).map(hex::encode).unwrap_or_default();
    format!(
        "[[nitro]]\npcr0 = \"{}\"\npcr1 = \"{}\"\npcr2 = \"{}\"\n",
        pcr(0),
        pcr(1),
        pcr(2)
    )
}

/// Deterministic pseudo-weights: an xorshift stream, cheap to generate and incompressible.
fn synthetic_weights(len: u64) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut v = Vec::with_capacity(len as usize);
    while (v.len() as u64) < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        v.extend_from_slice(&state.to_le_bytes());
    }
    v.truncate(len as usize);
    v
}
