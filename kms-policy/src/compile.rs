//! Compiling a TrustBridge policy to a cloud KMS's native policy, so a deployment can use
//! the cloud KMS instead of the broker. Only what the target can express is compiled; what it
//! cannot is an error, never silently dropped.

use serde_json::{Value, json};

use std::collections::BTreeMap;

use crate::policy::{AssetPolicy, Policy, SnpSet};

/// A policy that cannot be expressed for a target.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompileError {
    /// The asset is not in the policy.
    #[error("asset {0} is not in the policy")]
    UnknownAsset(String),
    /// The policy has several assets and none was chosen.
    #[error("the policy has {0} assets: choose one with --asset")]
    AmbiguousAsset(usize),
    /// No measurement set for the target's platform.
    #[error(
        "asset {asset} has no {platform} measurement set, so the {target} policy would allow nothing"
    )]
    NothingToAllow {
        /// The asset.
        asset: String,
        /// The platform the target needs.
        platform: &'static str,
        /// The target.
        target: &'static str,
    },
    /// Something the target cannot enforce.
    #[error("{0}")]
    Inexpressible(String),
}

/// A cloud KMS target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// AWS KMS (`kms:RecipientAttestation` conditions).
    AwsKms,
    /// Azure Key Vault Secure Key Release (Microsoft Azure Attestation claims).
    AzureSkr,
}

/// What the TrustBridge policy of `asset` says that a `target` policy does not enforce
/// (the cloud KMS has no notion of it): each is a rule that holds with the broker and not
/// with the cloud KMS. Empty when nothing is lost. The CLI prints these; a deployment that
/// relies on them must keep the broker (or enforce them elsewhere).
pub fn not_enforced(policy: &Policy, asset: &AssetPolicy, target: Target) -> Vec<String> {
    let mut lost = Vec::new();
    let contracts = policy
        .contracts
        .iter()
        .filter(|c| c.asset == asset.id)
        .count();
    if contracts > 0 {
        lost.push(format!(
            "{contracts} contract(s): validity windows, release limits and revocation (revoke or disable the cloud key instead)"
        ));
    }
    lost.push(format!(
        "the release lease ({} s): a cloud KMS release is not leased, so nothing makes the sentinel ask again",
        asset.lease_secs
    ));
    lost.push(
        "the broker-key pin in the evidence binding (the cloud KMS is the broker)".to_owned(),
    );
    lost.push(
        "the provider key and manifest pins (the sentinel checks the manifest against the provider key it is configured with)"
            .to_owned(),
    );
    if target == Target::AzureSkr {
        lost.push(
            "which VM may ask: on Azure the launch measurement is the paravisor's, the same for every confidential VM, so restrict release to the VM's managed identity in the Key Vault's access policy"
                .to_owned(),
        );
    }
    lost
}

/// Chooses the asset to compile.
pub fn select_asset<'a>(
    policy: &'a Policy,
    asset: Option<&str>,
) -> Result<&'a AssetPolicy, CompileError> {
    match asset {
        Some(id) => policy
            .asset(id)
            .ok_or_else(|| CompileError::UnknownAsset(id.to_owned())),
        None if policy.assets.len() == 1 => Ok(&policy.assets[0]),
        None => Err(CompileError::AmbiguousAsset(policy.assets.len())),
    }
}

/// An AWS KMS key policy: administration for `admin_arn` (without any decrypt permission
/// and without grants), `kms:Decrypt` / `kms:GenerateDataKey` for `enclave_role_arn` only
/// under `StringEqualsIgnoreCase` conditions on the enclave's attested measurements, one
/// statement per accepted Nitro measurement set, and two denials that hold for every
/// principal whatever else allows it: no grants (a grant would give decrypt without the
/// policy's conditions), and no decryption without an attestation document.
///
/// What remains outside: whoever may change the key policy (`kms:PutKeyPolicy`, the admin)
/// can write another one. That is how measurement sets are rotated; the admin is trusted
/// for it, and CloudTrail records every change.
pub fn aws_kms_key_policy(
    asset: &AssetPolicy,
    enclave_role_arn: &str,
    admin_arn: &str,
) -> Result<Value, CompileError> {
    if asset.nitro.is_empty() {
        return Err(CompileError::NothingToAllow {
            asset: asset.id.clone(),
            platform: "Nitro",
            target: "AWS KMS",
        });
    }
    if asset.allow_debug {
        return Err(CompileError::Inexpressible(
            "allow_debug = true cannot be compiled: debug enclaves report all-zero PCRs that KMS would then have to accept".into(),
        ));
    }
    let mut statements = vec![
        json!({
            "Sid": "KeyAdministration",
            "Effect": "Allow",
            "Principal": { "AWS": admin_arn },
            "Action": [
                "kms:CreateAlias", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*",
                "kms:Update*", "kms:Revoke*", "kms:Disable*", "kms:Get*", "kms:Delete*",
                "kms:TagResource", "kms:UntagResource", "kms:ScheduleKeyDeletion",
                "kms:CancelKeyDeletion"
            ],
            "Resource": "*"
        }),
        json!({
            "Sid": "NoGrants",
            "Effect": "Deny",
            "Principal": { "AWS": "*" },
            "Action": "kms:CreateGrant",
            "Resource": "*"
        }),
        json!({
            "Sid": "NoDecryptWithoutAttestation",
            "Effect": "Deny",
            "Principal": { "AWS": "*" },
            "Action": [
                "kms:Decrypt", "kms:GenerateDataKey", "kms:GenerateDataKeyPair", "kms:ReEncrypt*"
            ],
            "Resource": "*",
            "Condition": { "Null": { "kms:RecipientAttestation:ImageSha384": "true" } }
        }),
    ];
    for (i, set) in asset.nitro.iter().enumerate() {
        let mut condition = serde_json::Map::new();
        for (pcr, value) in set.pcrs() {
            let key = if pcr == 0 {
                "kms:RecipientAttestation:ImageSha384".to_owned()
            } else {
                format!("kms:RecipientAttestation:PCR{pcr}")
            };
            condition.insert(key, Value::String(hex::encode(value)));
        }
        statements.push(json!({
            "Sid": format!("AttestedEnclaveDecrypt{}", i + 1),
            "Effect": "Allow",
            "Principal": { "AWS": enclave_role_arn },
            "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
            "Resource": "*",
            "Condition": { "StringEqualsIgnoreCase": condition }
        }));
    }
    Ok(json!({
        "Version": "2012-10-17",
        "Id": format!("trustbridge-{}", asset.id),
        "Statement": statements
    }))
}

/// SEV-SNP guest policy bits that MAA reports as claims (`x-ms-sevsnpvm-*`), by bit.
const SKR_POLICY_BITS: [(u32, &str); 3] = [
    (16, "x-ms-sevsnpvm-smt-allowed"),
    (18, "x-ms-sevsnpvm-migration-allowed"),
    (19, "x-ms-sevsnpvm-is-debuggable"),
];
/// Guest policy bit 17 is reserved and must be one: every guest has it.
const POLICY_RESERVED_ONE: u32 = 17;

/// An Azure Key Vault Secure Key Release policy (grammar version 1.0.0): release only to an
/// attested SEV-SNP CVM (`sevsnpvm`, Azure-compliant) that one accepted SNP or Azure
/// measurement set accepts, as attested by `maa_endpoint`:
///
/// - the launch measurement, and the host data when given (`equals`);
/// - `min_tcb` as `greaterOrEquals` on the bootloader, TEE, SNP firmware and microcode SVN
///   claims; `max_vmpl` as `lessOrEquals` on the VMPL claim;
/// - guest policy bits MAA reports as booleans: SMT (16), MIGRATE_MA (18), DEBUG (19);
///   DEBUG is `false` unless `allow_debug`, MIGRATE_MA `false` unless
///   `allow_migration_agent`.
///
/// What SKR cannot express is an [`CompileError::Inexpressible`] naming the rule: TPM PCRs,
/// a minimum FMC SVN, and guest policy bits MAA reports no claim for.
pub fn azure_skr_policy(asset: &AssetPolicy, maa_endpoint: &str) -> Result<Value, CompileError> {
    let sets: Vec<(&str, &SnpSet, bool)> = asset
        .azure
        .iter()
        .map(|a| ("azure", &a.snp, !a.tpm_pcrs.is_empty()))
        .chain(asset.snp.iter().map(|s| ("snp", s, false)))
        .collect();
    if sets.is_empty() {
        return Err(CompileError::NothingToAllow {
            asset: asset.id.clone(),
            platform: "SEV-SNP",
            target: "Azure SKR",
        });
    }
    if sets.iter().any(|(_, _, has_tpm_pcrs)| *has_tpm_pcrs) {
        return Err(CompileError::Inexpressible(
            "tpm_pcrs cannot be compiled to an SKR policy: Azure Attestation does not expose vTPM PCRs as claims".into(),
        ));
    }
    let any_of = sets
        .iter()
        .enumerate()
        .map(|(i, (kind, set, _))| {
            let rule =
                |name: &str| format!("asset {} [[asset.{kind}]] set {}: {name}", asset.id, i + 1);
            let all = skr_conditions(asset, set, &rule)?;
            Ok(json!({ "authority": maa_endpoint, "allOf": all }))
        })
        .collect::<Result<Vec<Value>, CompileError>>()?;
    Ok(json!({ "version": "1.0.0", "anyOf": any_of }))
}

/// The `allOf` conditions of one SNP set; `rule` names the set's rules for errors.
fn skr_conditions(
    asset: &AssetPolicy,
    set: &SnpSet,
    rule: &dyn Fn(&str) -> String,
) -> Result<Vec<Value>, CompileError> {
    let claim = |name: &str| format!("x-ms-isolation-tee.{name}");
    let equals = |name: &str, value: Value| json!({ "claim": claim(name), "equals": value });
    let mut all = vec![
        equals("x-ms-attestation-type", json!("sevsnpvm")),
        equals("x-ms-compliance-status", json!("azure-compliant-cvm")),
        equals(
            "x-ms-sevsnpvm-launchmeasurement",
            json!(hex::encode(&set.measurement.0)),
        ),
    ];
    if let Some(h) = &set.host_data {
        all.push(equals("x-ms-sevsnpvm-hostdata", json!(hex::encode(&h.0))));
    }
    if let Some(tcb) = &set.min_tcb {
        if tcb.fmc.is_some() {
            return Err(CompileError::Inexpressible(format!(
                "{}: Azure Attestation reports no FMC SVN claim",
                rule("min_tcb.fmc")
            )));
        }
        for (name, min) in [
            ("x-ms-sevsnpvm-bootloader-svn", tcb.bootloader),
            ("x-ms-sevsnpvm-tee-svn", tcb.tee),
            ("x-ms-sevsnpvm-snpfw-svn", tcb.snp),
            ("x-ms-sevsnpvm-microcode-svn", tcb.microcode),
        ] {
            all.push(json!({ "claim": claim(name), "greaterOrEquals": min }));
        }
    }
    all.push(json!({ "claim": claim("x-ms-sevsnpvm-vmpl"), "lessOrEquals": set.max_vmpl }));
    // The guest policy bits, as the boolean claims MAA reports.
    let set_bits = set.policy_bits_set.map_or(0, |b| b.0);
    let clear_bits = set.policy_bits_clear.map_or(0, |b| b.0);
    let mut booleans: Vec<(&str, bool, String)> = Vec::new();
    if !asset.allow_debug {
        booleans.push((
            "x-ms-sevsnpvm-is-debuggable",
            false,
            "allow_debug = false".into(),
        ));
    }
    if !asset.allow_migration_agent {
        booleans.push((
            "x-ms-sevsnpvm-migration-allowed",
            false,
            "allow_migration_agent = false".into(),
        ));
    }
    for (bits, value, field) in [
        (set_bits, true, "policy_bits_set"),
        (clear_bits, false, "policy_bits_clear"),
    ] {
        for bit in (0..64).filter(|b| bits & (1u64 << b) != 0) {
            if bit == POLICY_RESERVED_ONE {
                if value {
                    continue; // every guest has it
                }
                return Err(CompileError::Inexpressible(format!(
                    "{}: bit 17 is reserved and always one, so no guest would match",
                    rule(field)
                )));
            }
            let Some((_, name)) = SKR_POLICY_BITS.iter().find(|(b, _)| *b == bit) else {
                return Err(CompileError::Inexpressible(format!(
                    "{}: guest policy bit {bit} has no Azure Attestation claim (only bits 16 SMT, 18 MIGRATE_MA and 19 DEBUG do)",
                    rule(field)
                )));
            };
            booleans.push((name, value, format!("{field} bit {bit}")));
        }
    }
    let mut seen: BTreeMap<&str, (bool, String)> = BTreeMap::new();
    for (name, value, why) in booleans {
        match seen.get(name) {
            Some((v, _)) if *v == value => {}
            Some((_, first)) => {
                return Err(CompileError::Inexpressible(format!(
                    "{}: {why} contradicts {first}, so no guest would match",
                    rule(name)
                )));
            }
            None => {
                seen.insert(name, (value, why));
            }
        }
    }
    for (name, (value, _)) in seen {
        all.push(equals(name, json!(value)));
    }
    Ok(all)
}
