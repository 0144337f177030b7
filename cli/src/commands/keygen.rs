//! `trustbridge keygen`: create a provider signing key.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use trustbridge_protocol::bundle::ProviderSigningKey;

use crate::key_files::write_file_atomic;

/// Create an Ed25519 provider signing key.
///
/// Writes the private key as PKCS#8 PEM with mode 0600 to --out and the public key as SPKI
/// PEM to <out>.pub, then prints the public key and its key id. The public key is what
/// clients and the key broker pin (`--provider-pubkey`).
#[derive(Debug, clap::Args)]
pub(crate) struct KeygenArgs {
    /// Private key file to create (mode 0600); the public key goes to <OUT>.pub.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Overwrite existing key files.
    #[arg(long)]
    force: bool,
}

pub(crate) fn run(args: KeygenArgs) -> Result<()> {
    let key = ProviderSigningKey::generate()?;
    let public = key.public();
    let mut pub_path = args.out.clone().into_os_string();
    pub_path.push(".pub");
    let pub_path = PathBuf::from(pub_path);
    if !args.force && pub_path.exists() {
        anyhow::bail!(
            "{} already exists; pass --force to overwrite it",
            pub_path.display()
        );
    }
    write_file_atomic(&args.out, key.to_pkcs8_pem()?.as_bytes(), 0o600, args.force)?;
    write_file_atomic(&pub_path, public.to_pem()?.as_bytes(), 0o644, args.force)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "provider key id  {}", public.key_id())?;
    writeln!(out, "public key       {}", public.to_hex())?;
    writeln!(
        out,
        "wrote            {} (private, mode 0600), {}",
        args.out.display(),
        pub_path.display()
    )?;
    Ok(())
}
