//! `--raw` mode shared by `seal` and `unseal`: one bare Tink `AES256_GCM_HKDF` stream with
//! a caller-given key and associated data, for interoperability with other tools.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use trustbridge_protocol::sealed::DataKey;

use crate::key_files::{data_key_from_hex_arg, read_data_key};
use crate::output_file::write_output;
use crate::progress::bytes_bar;

/// The options of `--raw` mode.
#[derive(Debug, clap::Args)]
pub(crate) struct RawStreamArgs {
    /// Work on one bare AES256_GCM_HKDF stream (Tink-compatible) instead of a bundle.
    #[arg(long)]
    pub(crate) raw: bool,
    /// With --raw: the data key as 64 hex characters (prefer --key FILE: arguments are
    /// visible to other local users).
    #[arg(long, value_name = "HEX", requires = "raw", conflicts_with = "key")]
    key_hex: Option<String>,
    /// With --raw: the associated data as hex (default: empty).
    #[arg(
        long,
        value_name = "HEX",
        requires = "raw",
        default_value = "",
        hide_default_value = true
    )]
    ad_hex: String,
}

impl RawStreamArgs {
    /// The data key from `--key FILE` or `--key-hex`.
    pub(crate) fn data_key(&self, key_file: Option<&Path>) -> Result<DataKey> {
        match (key_file, &self.key_hex) {
            (Some(path), None) => read_data_key(path),
            (None, Some(hex)) => data_key_from_hex_arg(hex),
            _ => bail!("--raw needs the data key: --key FILE or --key-hex HEX"),
        }
    }

    /// The associated data from `--ad-hex`.
    pub(crate) fn associated_data(&self) -> Result<Vec<u8>> {
        hex::decode(self.ad_hex.trim()).context("--ad-hex is not hex")
    }
}

/// Streams `input` through `transform` into `out` (atomically, with `mode`) and returns
/// the byte count `transform` reports.
pub(crate) fn transform_file(
    input: &PathBuf,
    out: &Path,
    force: bool,
    mode: u32,
    label: &'static str,
    quiet: bool,
    transform: impl FnOnce(&mut dyn std::io::Read, &mut dyn Write) -> Result<u64>,
) -> Result<u64> {
    let src = File::open(input).with_context(|| format!("cannot open {}", input.display()))?;
    let bar = bytes_bar(src.metadata()?.len(), label, quiet);
    let n = write_output(out, force, mode, |f| {
        let mut w = BufWriter::with_capacity(1 << 20, f);
        let mut r = bar.wrap_read(BufReader::with_capacity(1 << 20, src));
        let n = transform(&mut r, &mut w)?;
        w.flush()?;
        Ok(n)
    })?;
    bar.finish_and_clear();
    Ok(n)
}
