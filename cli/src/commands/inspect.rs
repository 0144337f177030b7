//! `trustbridge inspect`: verify a bundle's manifest and list its contents.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Result;
use serde_json::json;
use trustbridge_protocol::bundle::FORMAT_V1;

use crate::bundle_dir::{read_manifest, sealed_file, unlisted_files};
use crate::key_files::read_provider_pubkey;
use crate::sizes::human;

/// Verify a bundle's manifest signature and list its files.
///
/// Checks manifest.cose (EdDSA signature, deterministic encoding, consistent lengths) and
/// that every listed sealed file is present with the expected length. Needs no key. Exits
/// 1 when the signature or the bundle is invalid.
#[derive(Debug, clap::Args)]
pub(crate) struct InspectArgs {
    /// The bundle directory.
    #[arg(value_name = "DIR")]
    bundle: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// The provider public key to pin: a .pub file or 64 hex characters.
    #[arg(long, value_name = "KEY")]
    provider_pubkey: Option<String>,
}

pub(crate) fn run(args: InspectArgs) -> Result<()> {
    let pinned = args
        .provider_pubkey
        .as_deref()
        .map(read_provider_pubkey)
        .transpose()?;
    let signed = read_manifest(&args.bundle, pinned.as_ref())?;
    let m = signed.manifest();
    let files: Vec<_> = m
        .files
        .iter()
        .map(|f| {
            let found = std::fs::metadata(sealed_file(&args.bundle, &f.path))
                .ok()
                .map(|md| md.len());
            let status = match found {
                None => "missing",
                Some(len) if len == f.ciphertext_len => "ok",
                Some(_) => "wrong length",
            };
            (f, status)
        })
        .collect();
    let unlisted = unlisted_files(&args.bundle, m);
    let created = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(m.created_at));
    let mut out = std::io::stdout().lock();
    if args.json {
        let doc = json!({
            "bundle": args.bundle,
            "format": FORMAT_V1,
            "signature_valid": true,
            "asset_id": m.asset_id.as_str(),
            "created_at": m.created_at,
            "provider_key": m.provider_key.to_hex(),
            "provider_key_id": m.provider_key.key_id().to_string(),
            "provider_key_pinned": pinned.is_some(),
            "key_id": m.key_id.to_string(),
            "manifest_sha256": hex::encode(signed.digest()),
            "plaintext_bytes": m.total_plaintext_len(),
            "ciphertext_bytes": m.total_ciphertext_len(),
            "files": files.iter().map(|(f, status)| json!({
                "path": f.path.as_str(),
                "plaintext_len": f.plaintext_len,
                "ciphertext_len": f.ciphertext_len,
                "segment_size": f.segment_size.get(),
                "status": status,
            })).collect::<Vec<_>>(),
            "unlisted_files": unlisted,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        let pin_note = if pinned.is_some() {
            "pinned"
        } else {
            "not pinned; pass --provider-pubkey to check origin"
        };
        writeln!(out, "bundle           {}", args.bundle.display())?;
        writeln!(out, "format           {FORMAT_V1}")?;
        writeln!(out, "signature        valid (EdDSA)")?;
        writeln!(out, "asset id         {}", m.asset_id)?;
        writeln!(out, "created          {created}")?;
        writeln!(
            out,
            "provider key     {} (id {}, {pin_note})",
            m.provider_key.to_hex(),
            m.provider_key.key_id()
        )?;
        writeln!(out, "data key id      {}", m.key_id)?;
        writeln!(out, "manifest sha256  {}", hex::encode(signed.digest()))?;
        writeln!(
            out,
            "files            {} ({} plaintext, {} sealed)",
            m.files.len(),
            human(m.total_plaintext_len()),
            human(m.total_ciphertext_len())
        )?;
        writeln!(
            out,
            "  {:>14}  {:>14}  {:>10}  {:<12}  path",
            "plaintext", "ciphertext", "segment", "status"
        )?;
        for (f, status) in &files {
            writeln!(
                out,
                "  {:>14}  {:>14}  {:>10}  {:<12}  {}",
                f.plaintext_len, f.ciphertext_len, f.segment_size, status, f.path
            )?;
        }
        for extra in &unlisted {
            writeln!(out, "  unlisted file (ignored): {}", extra.display())?;
        }
    }
    if files.iter().any(|(_, status)| *status != "ok") {
        anyhow::bail!(
            "bundle {} is incomplete or corrupted: some sealed files are missing or have the wrong length",
            args.bundle.display()
        );
    }
    Ok(())
}
