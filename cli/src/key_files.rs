//! Reading and writing key files: secrets are written atomically with mode 0600 and never
//! clobber an existing file unless asked to.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use trustbridge_protocol::bundle::{ProviderPublicKey, ProviderSigningKey};
use trustbridge_protocol::sealed::DataKey;
use zeroize::Zeroizing;

use crate::output_file::write_output;

/// Writes a small file (a key) atomically with `mode`; see [`write_output`].
pub(crate) fn write_file_atomic(
    path: &Path,
    contents: &[u8],
    mode: u32,
    force: bool,
) -> Result<()> {
    write_output(path, force, mode, |f| {
        f.write_all(contents).context("cannot write key file")
    })
}

/// Reads a secret file and warns when group or others can read it.
fn read_secret(path: &Path, what: &str) -> Result<Zeroizing<String>> {
    let meta =
        fs::metadata(path).with_context(|| format!("cannot read {what} {}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(file = %path.display(), mode = format!("{mode:o}"), "{what} is readable by group or others; run chmod 600");
    }
    let bytes = fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("{what} {} is not text", path.display()))?;
    Ok(Zeroizing::new(text))
}

/// Reads a data key file (64 hex characters and a newline).
pub(crate) fn read_data_key(path: &Path) -> Result<DataKey> {
    let text = read_secret(path, "data key file")?;
    DataKey::from_hex(&text).with_context(|| format!("{} is not a data key file", path.display()))
}

/// Writes a data key file with mode 0600.
pub(crate) fn write_data_key(path: &Path, key: &DataKey, force: bool) -> Result<()> {
    write_file_atomic(path, key.to_key_file().as_bytes(), 0o600, force)
}

/// Reads a provider signing key (PKCS#8 PEM).
pub(crate) fn read_signing_key(path: &Path) -> Result<ProviderSigningKey> {
    let text = read_secret(path, "signing key")?;
    ProviderSigningKey::from_pkcs8_pem(&text)
        .with_context(|| format!("{} is not a provider signing key", path.display()))
}

/// Parses `--provider-pubkey`: a file (SPKI PEM or hex) or a literal 64-hex key.
pub(crate) fn read_provider_pubkey(arg: &str) -> Result<ProviderPublicKey> {
    let path = Path::new(arg);
    let text = if path.is_file() {
        fs::read_to_string(path)
            .with_context(|| format!("cannot read provider public key {arg}"))?
    } else {
        arg.to_owned()
    };
    ProviderPublicKey::parse(&text)
        .with_context(|| format!("{arg:?} is neither a public key file nor 64 hex characters"))
}

/// Parses a hex argument such as `--key-hex` (whitespace around it is ignored).
pub(crate) fn data_key_from_hex_arg(hex: &str) -> Result<DataKey> {
    DataKey::from_hex(hex.trim()).context("--key-hex must be 64 hex characters")
}
