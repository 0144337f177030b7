//! `trustbridge demo`: the whole pipeline that exists in this build, on one machine, on
//! embedded defaults.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use trustbridge_protocol::bundle::{self, AssetId, BundleError, ProviderSigningKey};
use trustbridge_protocol::sealed::{DataKey, SegmentSize, StreamError, default_threads};

use super::seal::seal_bundle;
use super::unseal::unseal_bundle;
use crate::bundle_dir::{read_manifest, sealed_file};
use crate::key_files::{write_data_key, write_file_atomic};
use crate::sizes::human;

/// Run the TrustBridge pipeline end to end on this machine.
///
/// Creates a provider key and a synthetic model and seals it into a signed bundle. Then it
/// starts an embedded key broker whose policy pins the provider, the manifest and the
/// enclave's PCRs, registers the data key, and lets a simulated enclave obtain the key
/// through an attested release (a foreign enclave is denied). With the released key it
/// decrypts the weights in memory on all cores as the sentinel does, shows that a flipped
/// byte and a wrong key are rejected, and unseals the bundle to check it byte for byte.
/// The relay and sentinel processes join this demo as they land (docs/ROADMAP.md).
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Size of the synthetic model weights in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=16384))]
    size_mib: u64,
    /// Keep all artifacts in this directory (created; must not exist) instead of a
    /// temporary one that is removed at the end.
    #[arg(long, value_name = "DIR")]
    workdir: Option<PathBuf>,
}

pub(crate) fn run(args: DemoArgs, quiet: bool) -> Result<()> {
    let tmp;
    let dir: &Path = match &args.workdir {
        Some(d) => {
            fs::create_dir(d).with_context(|| {
                format!(
                    "cannot create work directory {} (it must not exist)",
                    d.display()
                )
            })?;
            d
        }
        None => {
            tmp = tempfile::Builder::new()
                .prefix("trustbridge-demo-")
                .tempdir()?;
            tmp.path()
        }
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "TrustBridge demo in {}", dir.display())?;

    // 1. Provider key.
    let provider = ProviderSigningKey::generate()?;
    write_file_atomic(
        &dir.join("provider.key"),
        provider.to_pkcs8_pem()?.as_bytes(),
        0o600,
        false,
    )?;
    step(
        &mut out,
        &format!("provider key created (id {})", provider.public().key_id()),
    )?;

    // 2. A synthetic model: weights with a recognisable pattern and a config file.
    let model = dir.join("model");
    fs::create_dir_all(model.join("weights"))?;
    let weights = synthetic_weights(args.size_mib << 20);
    fs::write(model.join("weights/model.bin"), &weights)?;
    fs::write(
        model.join("config.json"),
        br#"{"architecture": "demo", "layers": 2}"#,
    )?;
    step(
        &mut out,
        &format!(
            "synthetic model written ({} of weights)",
            human(weights.len() as u64)
        ),
    )?;

    // 3. Seal with a fresh data key.
    let asset = AssetId::new("demo/synthetic-model@v1")?;
    let key = DataKey::generate()?;
    write_data_key(&dir.join("dek.key"), &key, false)?;
    let bundle_dir = dir.join("bundle");
    let started = Instant::now();
    let signed = seal_bundle(
        &model,
        &bundle_dir,
        &asset,
        &provider,
        &key,
        SegmentSize::default(),
        false,
        quiet,
    )?;
    let m = signed.manifest();
    step(
        &mut out,
        &format!(
            "sealed {} files in {:.2?} (data key id {}, manifest sha256 {})",
            m.files.len(),
            started.elapsed(),
            m.key_id,
            &hex::encode(signed.digest())[..16]
        ),
    )?;

    // 4. Verify, pinned to the provider key.
    let verified = read_manifest(&bundle_dir, Some(&provider.public()))?;
    ensure!(
        verified.digest() == signed.digest(),
        "manifest changed on disk"
    );
    step(
        &mut out,
        "manifest signature verified against the pinned provider key",
    )?;

    // 5. Key broker and attested key release to a simulated enclave.
    let released = super::demo_broker::run(dir, &mut out, &provider, &key, &verified)?;

    // 6. Hydrate + decrypt in memory, all cores, as the sentinel does.
    let vm = verified.manifest();
    let entry = vm
        .files
        .iter()
        .find(|f| f.path.as_str() == "weights/model.bin")
        .context("weights missing from manifest")?;
    let sealed = fs::read(sealed_file(&bundle_dir, &entry.path))?;
    let threads = default_threads();
    let started = Instant::now();
    // The enclave decrypts with the key it was released, not the provider's copy.
    let plain = bundle::open_file_in_memory(&released, vm, entry, &sealed, threads)?;
    let secs = started.elapsed().as_secs_f64();
    ensure!(
        *plain == weights,
        "decrypted weights differ from the original"
    );
    step(
        &mut out,
        &format!(
            "weights decrypted in memory on {threads} thread(s): {:.2} GB/s including buffer allocation, identical to the original",
            weights.len() as f64 / secs / 1e9
        ),
    )?;

    // 7. Tampering and a wrong key are rejected with typed errors.
    let mut tampered = sealed.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x01;
    match bundle::open_file_in_memory(&key, vm, entry, &tampered, threads) {
        Err(BundleError::File {
            source: StreamError::SegmentAuthentication { segment },
            ..
        }) => {
            step(
                &mut out,
                &format!("flipped byte rejected: segment {segment} failed authentication"),
            )?;
        }
        other => bail!("tampered weights were not rejected as expected: {other:?}"),
    }
    match bundle::open_file_in_memory(&DataKey::generate()?, vm, entry, &sealed, threads) {
        Err(e @ BundleError::WrongKey { .. }) => step(
            &mut out,
            &format!("wrong key rejected before decryption: {e}"),
        )?,
        other => bail!("a wrong key was not rejected as expected: {other:?}"),
    }

    // 8. Unseal to disk and compare.
    let unsealed = dir.join("unsealed");
    unseal_bundle(&bundle_dir, &verified, &key, &unsealed, false, quiet)?;
    ensure!(
        fs::read(unsealed.join("weights/model.bin"))? == weights,
        "unsealed weights differ"
    );
    step(
        &mut out,
        "bundle unsealed to disk and compared byte for byte",
    )?;

    writeln!(
        out,
        "demo passed. Not in this build yet: host relay (tb-relay) and sentinel (tb-sentinel) as processes; see docs/ROADMAP.md"
    )?;
    if args.workdir.is_some() {
        writeln!(out, "artifacts kept in {}", dir.display())?;
    }
    Ok(())
}

fn step(out: &mut impl Write, text: &str) -> Result<()> {
    writeln!(out, "  [ok] {text}")?;
    Ok(())
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
