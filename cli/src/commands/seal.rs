//! `trustbridge seal`: seal model files into a signed bundle, or one raw stream.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use trustbridge_protocol::bundle::{self, AssetId, Manifest, ProviderSigningKey, SignedManifest};
use trustbridge_protocol::sealed::{self, DataKey, SegmentSize};

use super::raw_stream::{RawStreamArgs, transform_file};
use crate::bundle_dir::{StagedDir, collect_inputs, sealed_file};
use crate::key_files::{read_data_key, read_signing_key, write_data_key};
use crate::progress::bytes_bar;
use crate::sizes::{human, parse_segment_size};

/// Seal model files into a bundle (or, with --raw, one bare stream).
///
/// Bundle mode encrypts every file of --in (a file or a directory) into --out as
/// `<path>.sealed` streams in Tink's AES256_GCM_HKDF format, bound to the asset id and the
/// file's path, and writes `manifest.cose` signed with the provider key. A new random data
/// key is created and written to --key-out (mode 0600) unless --key names an existing one.
/// The key is never printed; only its key id is.
///
/// Raw mode (--raw) seals one file as a bare stream with the given key and associated data,
/// for interoperability with other Tink-compatible tools.
#[derive(Debug, clap::Args)]
pub(crate) struct SealArgs {
    /// Input: a model file or a directory of model files (with --raw: one file).
    #[arg(long = "in", value_name = "PATH")]
    input: PathBuf,
    /// Output: the bundle directory to create (with --raw: the sealed file).
    #[arg(long, value_name = "PATH")]
    out: PathBuf,
    /// Asset id the bundle is sealed for (1-128 of A-Z a-z 0-9 . _ - : / @ +).
    #[arg(
        long,
        value_name = "ID",
        required_unless_present = "raw",
        conflicts_with = "raw"
    )]
    asset_id: Option<String>,
    /// Provider signing key (from `trustbridge keygen`).
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "raw",
        conflicts_with = "raw"
    )]
    signing_key: Option<PathBuf>,
    /// Ciphertext segment size, e.g. 4MiB, 1MiB, 65536 (57 bytes to 2 GiB).
    #[arg(long, value_name = "BYTES", default_value = "4MiB", value_parser = parse_segment_size)]
    segment_size: SegmentSize,
    /// Use this existing data key file instead of creating one.
    #[arg(long, value_name = "FILE", conflicts_with = "key_out")]
    key: Option<PathBuf>,
    /// Where to write the newly created data key (mode 0600).
    #[arg(long, value_name = "FILE", conflicts_with = "raw")]
    key_out: Option<PathBuf>,
    /// Replace existing output (bundle directory, sealed file or key file).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    raw: RawStreamArgs,
}

pub(crate) fn run(args: SealArgs, quiet: bool) -> Result<()> {
    if args.raw.raw {
        return seal_raw(&args, quiet);
    }
    let (Some(asset_id), Some(signing_key)) = (&args.asset_id, &args.signing_key) else {
        bail!("--asset-id and --signing-key are required to seal a bundle");
    };
    let asset_id = AssetId::new(asset_id)?;
    let signing_key = read_signing_key(signing_key)?;
    let (key, created_key) = match (&args.key, &args.key_out) {
        (Some(path), None) => (read_data_key(path)?, None),
        (None, Some(path)) => {
            let key = DataKey::generate()?;
            // Written first, so a bundle never exists without its key.
            write_data_key(path, &key, args.force)?;
            (key, Some(path))
        }
        _ => bail!("pass --key FILE to use an existing data key, or --key-out FILE to create one"),
    };
    let result = seal_bundle(
        &args.input,
        &args.out,
        &asset_id,
        &signing_key,
        &key,
        args.segment_size,
        args.force,
        quiet,
    );
    let signed = match result {
        Ok(signed) => signed,
        Err(e) => {
            if let Some(path) = created_key {
                // The new key seals nothing: do not leave it behind.
                let _ = fs::remove_file(path);
            }
            return Err(e);
        }
    };
    let m = signed.manifest();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "sealed {} file(s), {} into {}",
        m.files.len(),
        human(m.total_plaintext_len()),
        args.out.display()
    )?;
    writeln!(out, "asset id         {}", m.asset_id)?;
    writeln!(out, "data key id      {}", m.key_id)?;
    if let Some(path) = created_key {
        writeln!(
            out,
            "data key file    {} (mode 0600; keep it secret, register it with the key broker)",
            path.display()
        )?;
    }
    writeln!(out, "provider key id  {}", m.provider_key.key_id())?;
    writeln!(out, "manifest sha256  {}", hex::encode(signed.digest()))?;
    Ok(())
}

/// Seals `input` into a new bundle directory `out` and returns its signed manifest.
#[allow(clippy::too_many_arguments)]
pub(crate) fn seal_bundle(
    input: &Path,
    out: &Path,
    asset_id: &AssetId,
    signing_key: &ProviderSigningKey,
    key: &DataKey,
    segment_size: SegmentSize,
    force: bool,
    quiet: bool,
) -> Result<SignedManifest> {
    let inputs = collect_inputs(input, out)?;
    let staged = StagedDir::new(out, force)?;
    let bar = bytes_bar(inputs.iter().map(|i| i.len).sum(), "sealing", quiet);
    let mut entries = Vec::with_capacity(inputs.len());
    for file in &inputs {
        let dest = sealed_file(staged.path(), &file.path);
        staged.prepare(&dest)?;
        let src = File::open(&file.source)
            .with_context(|| format!("cannot open {}", file.source.display()))?;
        let reader = bar.wrap_read(BufReader::with_capacity(1 << 20, src));
        let mut writer = BufWriter::with_capacity(1 << 20, File::create(&dest)?);
        let entry = bundle::seal_file(
            key,
            asset_id,
            file.path.clone(),
            segment_size,
            reader,
            &mut writer,
        )?;
        writer
            .into_inner()
            .map_err(|e| e.into_error())?
            .sync_all()?;
        if entry.plaintext_len != file.len {
            bail!(
                "{} changed while it was being sealed",
                file.source.display()
            );
        }
        entries.push(entry);
    }
    bar.finish_and_clear();
    let created_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let manifest = Manifest::new(
        asset_id.clone(),
        created_at,
        signing_key.public(),
        key,
        entries,
    )?;
    let signed = SignedManifest::sign(manifest, signing_key)?;
    let manifest_path = staged.path().join(bundle::MANIFEST_FILE);
    let mut f = File::create(&manifest_path)?;
    f.write_all(signed.as_bytes())?;
    f.sync_all()?;
    staged.commit()?;
    tracing::info!(bundle = %out.display(), asset = %asset_id, files = signed.manifest().files.len(), "bundle sealed");
    Ok(signed)
}

fn seal_raw(args: &SealArgs, quiet: bool) -> Result<()> {
    let key = args.raw.data_key(args.key.as_deref())?;
    let ad = args.raw.associated_data()?;
    let n = transform_file(
        &args.input,
        &args.out,
        args.force,
        0o644,
        "sealing",
        quiet,
        |r, w| Ok(sealed::encrypt_stream(&key, &ad, args.segment_size, r, w)?),
    )?;
    writeln!(
        std::io::stdout().lock(),
        "sealed {} into {} (data key id {})",
        human(n),
        args.out.display(),
        key.key_id()
    )?;
    Ok(())
}
