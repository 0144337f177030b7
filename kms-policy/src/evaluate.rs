//! Evaluating verified evidence and a contract against the policy. Fail closed: anything
//! missing or unmatched is a denial with a machine-readable reason code.

use serde::{Deserialize, Serialize};
pub use trustbridge_protocol::key_release::DenialCode;
use trustbridge_verifier::{Platform, VerifiedEvidence};

use crate::policy::{AssetPolicy, AzureSet, MinTcb, NitroSet, Policy, SnpSet, parse_bits};

/// A denial: the code and a human-readable detail (never key material).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {detail}", code.as_str())]
pub struct Denial {
    /// The reason code.
    pub code: DenialCode,
    /// What exactly failed.
    pub detail: String,
}

impl Denial {
    /// A denial with `code` and `detail`.
    pub fn new(code: DenialCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }
}

/// A contract as the broker stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contract {
    /// Contract id.
    pub id: String,
    /// The asset it releases.
    pub asset: String,
    /// Start, Unix seconds.
    pub not_before: u64,
    /// End, Unix seconds.
    pub not_after: u64,
    /// Release limit.
    pub max_releases: Option<u64>,
    /// Revoked.
    pub revoked: bool,
    /// Releases so far.
    pub releases: u64,
}

/// Checks the contract for `asset` at `now` (not the release count: the store does that
/// atomically).
pub fn check_contract(contract: Option<&Contract>, asset: &str, now: u64) -> Result<(), Denial> {
    let c = contract.ok_or_else(|| Denial::new(DenialCode::UnknownContract, "no such contract"))?;
    if c.asset != asset {
        return Err(Denial::new(
            DenialCode::UnknownContract,
            format!("contract {} is for another asset", c.id),
        ));
    }
    if c.revoked {
        return Err(Denial::new(
            DenialCode::ContractRevoked,
            format!("contract {} is revoked", c.id),
        ));
    }
    if now < c.not_before || now > c.not_after {
        return Err(Denial::new(
            DenialCode::ContractExpired,
            format!(
                "contract {} is valid from {} to {} (now {now})",
                c.id, c.not_before, c.not_after
            ),
        ));
    }
    Ok(())
}

/// Checks verified evidence against the rules of `asset`.
pub fn evaluate_evidence(
    policy: &Policy,
    asset: &AssetPolicy,
    ev: &VerifiedEvidence,
) -> Result<(), Denial> {
    if ev.simulated && policy.simulation.is_none() {
        return Err(Denial::new(
            DenialCode::SimulationNotAllowed,
            "simulated evidence and no [simulation] section in the policy",
        ));
    }
    if ev.debug && !asset.allow_debug {
        return Err(Denial::new(
            DenialCode::DebugForbidden,
            format!("{} TEE in debug mode", ev.platform),
        ));
    }
    if !Policy::accepts_platform(asset, ev.platform) {
        return Err(Denial::new(
            DenialCode::MeasurementMismatch,
            format!(
                "asset {} accepts no {} measurement set",
                asset.id, ev.platform
            ),
        ));
    }
    let mut reasons = Vec::new();
    let matched = match ev.platform {
        Platform::Nitro => asset
            .nitro
            .iter()
            .any(|s| record(&mut reasons, nitro_matches(s, ev))),
        Platform::Snp => asset
            .snp
            .iter()
            .any(|s| record(&mut reasons, snp_matches(s, ev))),
        Platform::AzureSnpVtpm => asset
            .azure
            .iter()
            .any(|s| record(&mut reasons, azure_matches(s, ev))),
    };
    if matched {
        Ok(())
    } else {
        Err(Denial::new(
            DenialCode::MeasurementMismatch,
            format!(
                "no accepted measurement set matches: {}",
                reasons.join("; ")
            ),
        ))
    }
}

fn record(reasons: &mut Vec<String>, r: Result<(), String>) -> bool {
    match r {
        Ok(()) => true,
        Err(e) => {
            reasons.push(e);
            false
        }
    }
}

fn measurement<'a>(ev: &'a VerifiedEvidence, name: &str) -> Option<&'a [u8]> {
    ev.measurements.get(name).map(Vec::as_slice)
}

fn nitro_matches(set: &NitroSet, ev: &VerifiedEvidence) -> Result<(), String> {
    for (i, want) in set.pcrs() {
        if measurement(ev, &format!("pcr{i}")) != Some(want) {
            return Err(format!("pcr{i} differs"));
        }
    }
    Ok(())
}

fn snp_matches(set: &SnpSet, ev: &VerifiedEvidence) -> Result<(), String> {
    if measurement(ev, "measurement") != Some(set.measurement.0.as_slice()) {
        return Err("measurement differs".into());
    }
    if let Some(h) = &set.host_data {
        if measurement(ev, "host_data") != Some(h.0.as_slice()) {
            return Err("host_data differs".into());
        }
    }
    let claims = ev.snp.as_ref().ok_or("no SNP claims")?;
    let MinTcb {
        bootloader,
        tee,
        snp,
        microcode,
    } = set.min_tcb;
    let t = claims.reported_tcb;
    if t.bootloader < bootloader || t.tee < tee || t.snp < snp || t.microcode < microcode {
        return Err(format!(
            "reported TCB bl={} tee={} snp={} ucode={} is below the minimum bl={bootloader} tee={tee} snp={snp} ucode={microcode}",
            t.bootloader, t.tee, t.snp, t.microcode
        ));
    }
    if claims.vmpl > set.max_vmpl {
        return Err(format!("VMPL {} above {}", claims.vmpl, set.max_vmpl));
    }
    if let Some(bits) = &set.policy_bits_set {
        let bits = parse_bits(bits)?;
        if claims.policy & bits != bits {
            return Err(format!(
                "guest policy {:#x} lacks required bits {bits:#x}",
                claims.policy
            ));
        }
    }
    if let Some(bits) = &set.policy_bits_clear {
        let bits = parse_bits(bits)?;
        if claims.policy & bits != 0 {
            return Err(format!(
                "guest policy {:#x} has forbidden bits {bits:#x}",
                claims.policy
            ));
        }
    }
    Ok(())
}

fn azure_matches(set: &AzureSet, ev: &VerifiedEvidence) -> Result<(), String> {
    snp_matches(&set.snp, ev)?;
    for (i, want) in &set.tpm_pcrs {
        match measurement(ev, &format!("tpm_pcr{i}")) {
            None => {
                return Err(format!(
                    "tpm_pcr{i} is not selected by the TPM quote, so nothing in the evidence covers it"
                ));
            }
            Some(found) if found != want.0.as_slice() => return Err(format!("tpm_pcr{i} differs")),
            Some(_) => {}
        }
    }
    Ok(())
}
