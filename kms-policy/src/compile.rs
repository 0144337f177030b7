//! Compiling a TrustBridge policy to a cloud KMS's native policy, so a deployment can use
//! the cloud KMS instead of the broker. Only what the target can express is compiled; what it
//! cannot is an error, never silently dropped.

use serde_json::{Value, json};

use crate::policy::{AssetPolicy, Policy};

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

/// An AWS KMS key policy: administration for `admin_arn` (without any decrypt permission),
/// and `kms:Decrypt` / `kms:GenerateDataKey` for `enclave_role_arn` only under
/// `StringEqualsIgnoreCase` conditions on the enclave's attested measurements, one statement
/// per accepted Nitro measurement set.
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
    let mut statements = vec![json!({
        "Sid": "KeyAdministration",
        "Effect": "Allow",
        "Principal": { "AWS": admin_arn },
        "Action": [
            "kms:Create*", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*", "kms:Update*",
            "kms:Revoke*", "kms:Disable*", "kms:Get*", "kms:Delete*", "kms:TagResource",
            "kms:UntagResource", "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion"
        ],
        "Resource": "*"
    })];
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

/// An Azure Key Vault Secure Key Release policy: release only to an attested SEV-SNP CVM
/// (`sevsnpvm`, Azure-compliant) whose launch measurement (and host data, and debug state)
/// matches one accepted SNP or Azure measurement set, as attested by `maa_endpoint`.
pub fn azure_skr_policy(asset: &AssetPolicy, maa_endpoint: &str) -> Result<Value, CompileError> {
    let sets: Vec<_> = asset
        .azure
        .iter()
        .map(|a| (&a.snp, !a.tpm_pcrs.is_empty()))
        .chain(asset.snp.iter().map(|s| (s, false)))
        .collect();
    if sets.is_empty() {
        return Err(CompileError::NothingToAllow {
            asset: asset.id.clone(),
            platform: "SEV-SNP",
            target: "Azure SKR",
        });
    }
    if sets.iter().any(|(_, has_tpm_pcrs)| *has_tpm_pcrs) {
        return Err(CompileError::Inexpressible(
            "tpm_pcrs cannot be compiled to an SKR policy: Azure Attestation does not expose vTPM PCRs as claims".into(),
        ));
    }
    let claim = |name: &str, value: Value| json!({ "claim": format!("x-ms-isolation-tee.{name}"), "equals": value });
    let any_of: Vec<Value> = sets
        .iter()
        .map(|(set, _)| {
            let mut all = vec![
                claim("x-ms-attestation-type", json!("sevsnpvm")),
                claim("x-ms-compliance-status", json!("azure-compliant-cvm")),
                claim(
                    "x-ms-sevsnpvm-launchmeasurement",
                    json!(hex::encode(&set.measurement.0)),
                ),
            ];
            if !asset.allow_debug {
                all.push(claim("x-ms-sevsnpvm-is-debuggable", json!(false)));
            }
            if let Some(h) = &set.host_data {
                all.push(claim("x-ms-sevsnpvm-hostdata", json!(hex::encode(&h.0))));
            }
            json!({ "authority": maa_endpoint, "allOf": all })
        })
        .collect();
    Ok(json!({ "version": "1.0.0", "anyOf": any_of }))
}
