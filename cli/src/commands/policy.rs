//! `trustbridge policy compile`: the policy as an AWS KMS key policy or Azure SKR policy.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use trustbridge_kms::compile::{
    Target as KmsTarget, aws_kms_key_policy, azure_skr_policy, not_enforced, select_asset,
};
use trustbridge_kms::policy::Policy;

/// Work with key-release policies.
#[derive(Debug, clap::Args)]
pub(crate) struct PolicyArgs {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Debug, clap::Subcommand)]
enum PolicyCommand {
    Compile(CompileArgs),
    AddMeasurement(super::add_measurement::AddMeasurementArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Target {
    /// An AWS KMS key policy (kms:RecipientAttestation conditions).
    AwsKms,
    /// An Azure Key Vault Secure Key Release policy.
    AzureSkr,
}

/// Compile a TrustBridge policy to a cloud KMS's native policy.
///
/// aws-kms: kms:Decrypt and kms:GenerateDataKey for the enclave role only under
/// StringEqualsIgnoreCase conditions on ImageSha384 (PCR0) and PCR<n>, one statement per
/// accepted Nitro measurement set; administration for the admin ARN, without decrypt.
/// azure-skr: release only to an Azure-compliant SEV-SNP CVM with an accepted launch
/// measurement, TCB, VMPL and guest policy, as attested by the MAA endpoint. Measurement
/// rules a target cannot enforce are errors; what no cloud KMS has (contracts, the lease,
/// the broker and provider pins, and on Azure which VM may ask) is listed on stderr.
#[derive(Debug, clap::Args)]
struct CompileArgs {
    /// The policy TOML.
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// The target.
    #[arg(long, value_enum)]
    target: Target,
    /// The asset to compile (required when the policy has several).
    #[arg(long, value_name = "ID")]
    asset: Option<String>,
    /// aws-kms: the enclave's IAM role ARN.
    #[arg(long, value_name = "ARN")]
    enclave_role_arn: Option<String>,
    /// aws-kms: the key administrator's ARN.
    #[arg(long, value_name = "ARN")]
    key_admin_arn: Option<String>,
    /// azure-skr: the Microsoft Azure Attestation endpoint, e.g. https://sharedeus.eus.attest.azure.net.
    #[arg(long, value_name = "URL")]
    maa_endpoint: Option<String>,
}

pub(crate) fn run(args: PolicyArgs) -> Result<()> {
    let args = match args.command {
        PolicyCommand::Compile(args) => args,
        PolicyCommand::AddMeasurement(args) => return super::add_measurement::run(args),
    };
    let text = std::fs::read_to_string(&args.policy)
        .with_context(|| format!("cannot read {}", args.policy.display()))?;
    let policy = Policy::from_toml(&text)
        .with_context(|| format!("{} is not a valid policy", args.policy.display()))?;
    let asset = select_asset(&policy, args.asset.as_deref())?;
    let doc = match args.target {
        Target::AwsKms => {
            let (Some(role), Some(admin)) = (&args.enclave_role_arn, &args.key_admin_arn) else {
                bail!("--target aws-kms needs --enclave-role-arn and --key-admin-arn");
            };
            aws_kms_key_policy(asset, role, admin)?
        }
        Target::AzureSkr => {
            let Some(maa) = &args.maa_endpoint else {
                bail!("--target azure-skr needs --maa-endpoint")
            };
            if !maa.starts_with("https://") {
                bail!("--maa-endpoint must be an https:// URL");
            }
            azure_skr_policy(asset, maa)?
        }
    };
    writeln!(
        std::io::stdout().lock(),
        "{}",
        serde_json::to_string_pretty(&doc)?
    )?;
    let target = match args.target {
        Target::AwsKms => KmsTarget::AwsKms,
        Target::AzureSkr => KmsTarget::AzureSkr,
    };
    let mut err = std::io::stderr().lock();
    let lost = not_enforced(&policy, asset, target);
    if !lost.is_empty() {
        writeln!(
            err,
            "note: the compiled policy does not enforce these rules of the TrustBridge policy:"
        )?;
        for rule in lost {
            writeln!(err, "  - {rule}")?;
        }
    }
    Ok(())
}
