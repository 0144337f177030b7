//! `trustbridge register` and `trustbridge contract`: the broker's admin API.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use trustbridge_kms::broker::ContractRequest;
use trustbridge_kms::client::{AdminSigner, BrokerKey, KmsClient};
use trustbridge_protocol::bundle::MANIFEST_FILE;

use crate::bundle_dir::read_manifest;
use crate::key_files::{read_data_key, read_signing_key};

/// Register a sealed bundle's manifest and data key with the key broker.
///
/// The manifest must be signed by the provider key the broker's policy names for the asset;
/// the data key is checked against the manifest's key commitment. The key travels sealed
/// (HPKE) to the broker's registration key, never in the clear. The request is signed with
/// the admin key (an Ed25519 key from `trustbridge keygen` that the policy lists).
#[derive(Debug, clap::Args)]
pub(crate) struct RegisterArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    /// The sealed bundle.
    #[arg(long, value_name = "DIR")]
    bundle: PathBuf,
    /// The bundle's data key file.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The admin signing key.
    #[arg(long, value_name = "FILE")]
    admin_key: PathBuf,
}

/// Manage contracts on the key broker.
#[derive(Debug, clap::Args)]
pub(crate) struct ContractArgs {
    #[command(subcommand)]
    command: ContractCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ContractCommand {
    /// Add a contract: the asset it releases, its validity window and release limit.
    Add(ContractAddArgs),
    /// Revoke a contract: no further releases under it.
    Revoke(ContractRevokeArgs),
}

/// Which broker, and the identity key that vouches for it.
#[derive(Debug, clap::Args)]
pub(crate) struct BrokerArgs {
    /// The broker's URL.
    #[arg(long, value_name = "URL", env = "TB_KMS_URL")]
    pub(crate) kms: String,
    /// The broker's identity key (64 hex characters, as `tb-kms identity` prints it).
    /// Every answer is checked against it, admin requests are signed for it, and the
    /// data key is sealed only to a registration key it vouches for.
    #[arg(long, value_name = "HEX", env = "TB_KMS_KEY")]
    pub(crate) kms_key: BrokerKey,
}

impl BrokerArgs {
    /// A client pinned to this broker.
    pub(crate) fn client(&self) -> KmsClient {
        KmsClient::new(&self.kms, self.kms_key)
    }
}

#[derive(Debug, clap::Args)]
struct Admin {
    #[command(flatten)]
    broker: BrokerArgs,
    /// The admin signing key.
    #[arg(long, value_name = "FILE")]
    admin_key: PathBuf,
}

#[derive(Debug, clap::Args)]
struct ContractAddArgs {
    #[command(flatten)]
    admin: Admin,
    /// Contract id.
    #[arg(long)]
    id: String,
    /// The asset.
    #[arg(long)]
    asset: String,
    /// Start (RFC 3339).
    #[arg(long, value_name = "TIME")]
    not_before: String,
    /// End (RFC 3339).
    #[arg(long, value_name = "TIME")]
    not_after: String,
    /// Release limit (unlimited when absent).
    #[arg(long, value_name = "N")]
    max_releases: Option<u64>,
}

#[derive(Debug, clap::Args)]
struct ContractRevokeArgs {
    #[command(flatten)]
    admin: Admin,
    /// Contract id.
    #[arg(long)]
    id: String,
}

pub(crate) fn admin_signer(path: &Path) -> Result<AdminSigner> {
    let key = read_signing_key(path)?;
    Ok(AdminSigner {
        public_key: key.public().to_bytes(),
        sign: Box::new(move |m| key.sign(m)),
    })
}

pub(crate) fn register(args: RegisterArgs) -> Result<()> {
    let signed = read_manifest(&args.bundle, None)?;
    let manifest = std::fs::read(args.bundle.join(MANIFEST_FILE))?;
    let key = read_data_key(&args.key)?;
    signed.manifest().check_data_key(&key)?;
    let asset = signed.manifest().asset_id.as_str().to_owned();
    args.broker
        .client()
        .register_asset(&asset, &manifest, &key, &admin_signer(&args.admin_key)?)
        .with_context(|| format!("registering {asset} with {}", args.broker.kms))?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "registered {asset} (data key id {}, manifest sha256 {})",
        key.key_id(),
        hex::encode(signed.digest())
    )?;
    Ok(())
}

pub(crate) fn contract(args: ContractArgs) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match args.command {
        ContractCommand::Add(a) => {
            let req = ContractRequest {
                id: a.id.clone(),
                asset: a.asset,
                not_before: a.not_before,
                not_after: a.not_after,
                max_releases: a.max_releases,
            };
            a.admin
                .broker
                .client()
                .add_contract(&req, &admin_signer(&a.admin.admin_key)?)
                .context("adding the contract")?;
            writeln!(out, "contract {} added", a.id)?;
        }
        ContractCommand::Revoke(a) => {
            a.admin
                .broker
                .client()
                .revoke_contract(&a.id, &admin_signer(&a.admin.admin_key)?)
                .context("revoking the contract")?;
            writeln!(out, "contract {} revoked", a.id)?;
        }
    }
    Ok(())
}
