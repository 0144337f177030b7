//! `trustbridge unseal`: verify a bundle and decrypt every file, or one raw stream.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use trustbridge_protocol::bundle::{self, BundleError, SignedManifest};
use trustbridge_protocol::sealed::{self, DataKey, SegmentSize};

use super::raw_stream::{RawStreamArgs, transform_file};
use crate::bundle_dir::{StagedDir, plain_file, read_manifest, sealed_file, unlisted_files};
use crate::key_files::{read_data_key, read_provider_pubkey};
use crate::progress::bytes_bar;
use crate::sizes::{human, parse_segment_size};

/// Verify a bundle and decrypt every file (or, with --raw, one bare stream).
///
/// Bundle mode verifies manifest.cose (against --provider-pubkey when given), checks the data
/// key against the manifest's key commitment, then decrypts every listed file into --out.
/// Plaintext files are created with mode 0600. Nothing appears under --out unless every
/// file verified.
///
/// Raw mode (--raw) decrypts one bare AES256_GCM_HKDF stream, e.g. one sealed by Tink, given
/// the raw key, the associated data and the ciphertext segment size.
#[derive(Debug, clap::Args)]
pub(crate) struct UnsealArgs {
    /// The bundle directory to unseal.
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "raw",
        conflicts_with = "raw"
    )]
    bundle: Option<PathBuf>,
    /// With --raw: the sealed file.
    #[arg(long = "in", value_name = "FILE", requires = "raw")]
    input: Option<PathBuf>,
    /// Output directory (with --raw: output file).
    #[arg(long, value_name = "PATH")]
    out: PathBuf,
    /// The data key file.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// The provider public key to pin: a .pub file or 64 hex characters. Without it the
    /// signature is checked against the key the manifest names, which proves integrity but
    /// not origin.
    #[arg(long, value_name = "KEY", conflicts_with = "raw")]
    provider_pubkey: Option<String>,
    /// Replace an existing output.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    raw: RawStreamArgs,
    /// With --raw: the ciphertext segment size the stream was sealed with.
    #[arg(long, value_name = "BYTES", default_value = "4MiB", value_parser = parse_segment_size, requires = "raw")]
    segment_size: SegmentSize,
}

pub(crate) fn run(args: UnsealArgs, quiet: bool) -> Result<()> {
    if args.raw.raw {
        return unseal_raw(&args, quiet);
    }
    let Some(bundle) = &args.bundle else {
        bail!("--bundle is required")
    };
    let Some(key_path) = &args.key else {
        bail!("--key FILE is required to unseal a bundle")
    };
    let pinned = args
        .provider_pubkey
        .as_deref()
        .map(read_provider_pubkey)
        .transpose()?;
    let signed = read_manifest(bundle, pinned.as_ref())?;
    let key = read_data_key(key_path)?;
    if pinned.is_none() {
        tracing::warn!(
            provider_key_id = %signed.manifest().provider_key.key_id(),
            "provider key not pinned: the signature proves integrity, not who sealed the bundle; pass --provider-pubkey"
        );
    }
    unseal_bundle(bundle, &signed, &key, &args.out, args.force, quiet)?;
    let m = signed.manifest();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "unsealed {} file(s), {} into {}",
        m.files.len(),
        human(m.total_plaintext_len()),
        args.out.display()
    )?;
    writeln!(out, "asset id         {}", m.asset_id)?;
    let pin_note = if pinned.is_some() {
        "pinned"
    } else {
        "NOT pinned"
    };
    writeln!(
        out,
        "provider key id  {} ({pin_note})",
        m.provider_key.key_id()
    )?;
    Ok(())
}

/// Decrypts every file of the verified bundle at `bundle` into a new directory `out`.
pub(crate) fn unseal_bundle(
    bundle: &Path,
    signed: &SignedManifest,
    key: &DataKey,
    out: &Path,
    force: bool,
    quiet: bool,
) -> Result<()> {
    let m = signed.manifest();
    m.check_data_key(key)?;
    for extra in unlisted_files(bundle, m) {
        tracing::warn!(file = %extra.display(), "bundle holds a file the manifest does not list; ignored");
    }
    let staged = StagedDir::new(out, force)?;
    let bar = bytes_bar(m.total_ciphertext_len(), "unsealing", quiet);
    for entry in &m.files {
        let src = sealed_file(bundle, &entry.path);
        let file = File::open(&src)
            .with_context(|| format!("bundle file {} is missing or unreadable", src.display()))?;
        let len = file.metadata()?.len();
        if len != entry.ciphertext_len {
            return Err(BundleError::LengthMismatch {
                path: entry.path.clone(),
                expected: entry.ciphertext_len,
                found: len,
            }
            .into());
        }
        let dest = plain_file(staged.path(), &entry.path);
        staged.prepare(&dest)?;
        let plain = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&dest)?;
        let mut writer = BufWriter::with_capacity(1 << 20, plain);
        let reader = bar.wrap_read(BufReader::with_capacity(1 << 20, file));
        bundle::open_file(key, m, entry, reader, &mut writer)?;
        writer
            .into_inner()
            .map_err(|e| e.into_error())?
            .sync_all()?;
    }
    bar.finish_and_clear();
    staged.commit()
}

fn unseal_raw(args: &UnsealArgs, quiet: bool) -> Result<()> {
    let Some(input) = &args.input else {
        bail!("--raw needs --in FILE")
    };
    let key = args.raw.data_key(args.key.as_deref())?;
    let ad = args.raw.associated_data()?;
    let n = transform_file(
        input,
        &args.out,
        args.force,
        0o600,
        "unsealing",
        quiet,
        |r, w| {
            sealed::decrypt_stream(&key, &ad, args.segment_size, r, w)
                .with_context(|| format!("{} did not decrypt", input.display()))
        },
    )?;
    writeln!(
        std::io::stdout().lock(),
        "unsealed {} into {}",
        human(n),
        args.out.display()
    )?;
    Ok(())
}
