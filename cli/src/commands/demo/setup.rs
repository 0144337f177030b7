//! The demo's provider and broker side, on the one test world (`trustbridge_testkit::world`):
//! a provider key, a synthetic model sealed into a signed bundle (with a progress bar), the
//! simulated TEE, an embedded key broker (SQLite) whose policy admits it for the model, the
//! bundle registered and a contract, and the client policy that accepts that sentinel.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use trustbridge_testkit::world::{World, WorldError, WorldSpec};

use super::super::seal::seal_bundle;
use super::step;
use crate::key_files::{write_data_key, write_file_atomic};
use crate::sizes::human;

/// The demo's asset id.
pub(crate) const ASSET: &str = "demo/synthetic-model@v1";
/// The contract the broker's policy grants the sentinel.
pub(crate) const CONTRACT: &str = "demo";

/// What the provider and the broker set up.
pub(crate) struct Provisioned {
    /// The world: bundle, simulated TEE, broker (serving until dropped).
    pub(crate) world: World,
    /// The client policy file.
    pub(crate) client_policy: PathBuf,
}

/// Provider key, synthetic model, sealed bundle, broker, client policy, all under `dir`.
pub(crate) fn provision(
    dir: &Path,
    out: &mut impl Write,
    size_mib: u64,
    quiet: bool,
) -> Result<Provisioned> {
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
    let spec = WorldSpec {
        asset: ASSET.into(),
        contract: CONTRACT.into(),
        files: Vec::new(),
        pin_manifest: true,
        ..WorldSpec::default()
    };
    let started = Instant::now();
    let world = World::build_with(dir, spec, |bundle, key, provider, asset| {
        seal_bundle(
            &model,
            bundle,
            asset,
            provider,
            key,
            Default::default(),
            true,
            quiet,
        )
        .map_err(|e| WorldError::Seal(format!("{e:#}")))
    })?;
    write_file_atomic(
        &dir.join("provider.key"),
        world.provider.to_pkcs8_pem()?.as_bytes(),
        0o600,
        false,
    )?;
    write_data_key(&dir.join("dek.key"), &world.key, false)?;
    step(
        out,
        &format!(
            "provider key {} sealed the model in {:.2?} (manifest sha256 {})",
            world.provider.public().key_id(),
            started.elapsed(),
            hex::encode(world.manifest_sha256)
        ),
    )?;
    step(
        out,
        &format!(
            "key broker on {} (SQLite in {}; identity {}): its policy pins the provider, the manifest and the simulated sentinel's PCRs; data key registered, contract {CONTRACT:?}",
            world.broker_url(),
            dir.join("kms.db").display(),
            &world.broker_key().to_string()[..16]
        ),
    )?;
    let client_policy = dir.join("client.toml");
    fs::write(
        &client_policy,
        format!(
            "# Written by `trustbridge demo`: what the proxy accepts (docs/CLIENT.md).\n{}",
            world.client_policy(true)
        ),
    )
    .with_context(|| format!("cannot write {}", client_policy.display()))?;
    Ok(Provisioned {
        world,
        client_policy,
    })
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
