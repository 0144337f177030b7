//! `trustbridge key-release` and `trustbridge sim-ca`: key releases as a sentinel performs
//! them, with simulated TEE evidence.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use trustbridge_kms::client::{ClientError, Evidence, ReleaseClientError};
use trustbridge_protocol::Platform;
use trustbridge_protocol::bundle::ProviderPublicKey;

use super::kms_admin::BrokerArgs;
use trustbridge_verifier::simulated::{NitroSpec, SimulatedTee, SnpSpec};

/// Which TEE produces the evidence.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Tee {
    /// The simulated TEE (a simulation CA directory from `trustbridge sim-ca init`).
    Simulated,
}

/// The evidence format.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum SimPlatform {
    /// Nitro-format attestation document.
    Nitro,
    /// SEV-SNP-format report with VCEK, ASK and ARK.
    Snp,
}

/// Perform a key release exactly as a sentinel would, and print `released` or the reason
/// code of the denial (exit 0 or 1).
///
/// Generates a fresh key-release key and receipt key, asks the broker for a challenge,
/// produces evidence that binds them and the nonce, sends it, and opens the sealed data key.
/// Only the released key's id is printed, never the key.
#[derive(Debug, clap::Args)]
pub(crate) struct KeyReleaseArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    /// Also require the release to name this provider key (64 hex characters or PEM), as
    /// a sentinel with --provider-key does.
    #[arg(long, value_name = "KEY")]
    provider_key: Option<ProviderPublicKey>,
    /// The asset.
    #[arg(long)]
    asset: String,
    /// The contract.
    #[arg(long)]
    contract: String,
    /// The TEE that produces the evidence.
    #[arg(long, value_enum)]
    tee: Tee,
    /// The simulation CA directory.
    #[arg(long, value_name = "DIR")]
    sim_ca: PathBuf,
    /// The simulated evidence format.
    #[arg(long, value_enum, default_value = "nitro")]
    platform: SimPlatform,
    /// A simulated measurement: pcr0..pcr31 (Nitro), or measurement / host_data (SNP).
    /// Repeatable.
    #[arg(long = "measurement", value_name = "NAME=HEX", value_parser = parse_measurement)]
    measurements: Vec<(String, Vec<u8>)>,
}

fn parse_measurement(s: &str) -> Result<(String, Vec<u8>), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=HEX"))?;
    Ok((
        name.trim().to_ascii_lowercase(),
        hex::decode(value.trim()).map_err(|e| format!("{name}: {e}"))?,
    ))
}

pub(crate) fn run(args: KeyReleaseArgs) -> Result<bool> {
    let Tee::Simulated = args.tee;
    let sim = SimulatedTee::load(&args.sim_ca)
        .with_context(|| format!("cannot load the simulation CA {}", args.sim_ca.display()))?;
    let (nitro, snp) = specs(&args.measurements, args.platform)?;
    let mut client = args.broker.client();
    if let Some(provider) = &args.provider_key {
        client = client.pin_provider(provider.to_bytes());
    }
    let result = client.release_with_evidence(&args.asset, &args.contract, [0; 32], |binding| {
        match args.platform {
            SimPlatform::Nitro => {
                let doc = sim
                    .nitro_document(&nitro.bind(binding).map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
                Ok(Evidence {
                    platform: Platform::Nitro,
                    bytes: doc,
                    certificates: vec![],
                })
            }
            SimPlatform::Snp => {
                let report = sim
                    .snp_report(&snp.bind(binding).map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
                let certificates = sim
                    .snp_certificates()
                    .iter()
                    .map(|c| c.der().to_vec())
                    .collect();
                Ok(Evidence {
                    platform: Platform::Snp,
                    bytes: report,
                    certificates,
                })
            }
        }
    });
    let mut out = std::io::stdout().lock();
    match result {
        Ok(released) => {
            writeln!(out, "released")?;
            writeln!(out, "data key id      {}", released.key.key_id())?;
            writeln!(
                out,
                "manifest sha256  {}",
                hex::encode(released.manifest_sha256)
            )?;
            writeln!(
                out,
                "provider key     {}",
                hex::encode(released.provider_key)
            )?;
            Ok(true)
        }
        Err(ClientError::Release(ReleaseClientError::Denied { code, detail })) => {
            writeln!(out, "{code}")?;
            eprintln!("denied (signed by the broker): {detail}");
            Ok(false)
        }
        Err(other) => Err(other).context("key release failed"),
    }
}

fn specs(
    measurements: &[(String, Vec<u8>)],
    platform: SimPlatform,
) -> Result<(NitroSpec, SnpSpec)> {
    let mut nitro = NitroSpec::default();
    let mut snp = SnpSpec::default();
    for (name, value) in measurements {
        match (platform, name.as_str()) {
            (SimPlatform::Nitro, n) if n.starts_with("pcr") => {
                let i: u8 = n[3..]
                    .parse()
                    .ok()
                    .filter(|&i| i < 32)
                    .with_context(|| format!("{n} is not pcr0..pcr31"))?;
                if value.len() != 48 {
                    bail!("{n} must be 48 bytes");
                }
                nitro.pcrs.insert(i, value.clone());
            }
            (SimPlatform::Snp, "measurement") => {
                snp.measurement = value
                    .as_slice()
                    .try_into()
                    .context("measurement must be 48 bytes")?
            }
            (SimPlatform::Snp, "host_data") => {
                snp.host_data = value
                    .as_slice()
                    .try_into()
                    .context("host_data must be 32 bytes")?
            }
            (_, other) => bail!("{other} is not a simulated measurement of this platform"),
        }
    }
    Ok((nitro, snp))
}

/// Manage a simulation CA (development only).
#[derive(Debug, clap::Args)]
pub(crate) struct SimCaArgs {
    #[command(subcommand)]
    command: SimCaCommand,
}

#[derive(Debug, clap::Subcommand)]
enum SimCaCommand {
    Init(SimCaInitArgs),
}

/// Create a simulation CA: Nitro and SNP certificate chains and signing keys that produce
/// simulated TEE evidence. Prints the [simulation] policy section that pins its roots.
#[derive(Debug, clap::Args)]
struct SimCaInitArgs {
    /// The directory to create (must not exist).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

pub(crate) fn sim_ca(args: SimCaArgs) -> Result<()> {
    let SimCaCommand::Init(args) = args.command;
    if args.out.exists() {
        bail!("{} already exists", args.out.display());
    }
    let sim = SimulatedTee::new()?;
    sim.save(&args.out)?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "simulation CA written to {} (development only)",
        args.out.display()
    )?;
    writeln!(out, "\n# Add to the broker policy to accept its evidence:")?;
    writeln!(out, "{}", simulation_section(&sim))?;
    Ok(())
}

/// The `[simulation]` policy section that pins `sim`'s roots.
pub(crate) fn simulation_section(sim: &SimulatedTee) -> String {
    format!(
        "[simulation]\nnitro_root_sha256 = [\"{}\"]\nsnp_root_sha256 = [\"{}\"]\n",
        hex::encode(sim.nitro_root().sha256()),
        hex::encode(sim.snp_root().sha256())
    )
}
