//! Evaluating verified evidence and a contract against the policy. Fail closed: anything
//! missing or unmatched is a denial with a machine-readable reason code.

use serde::{Deserialize, Serialize};
pub use trustbridge_protocol::key_release::DenialCode;
use trustbridge_verifier::{Checks, VerifiedEvidence};

use crate::policy::{AssetPolicy, Policy};

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
    /// Where it comes from: the policy file, or the admin API.
    pub origin: ContractOrigin,
    /// False once the policy that declared it no longer does.
    pub active: bool,
}

/// Where a contract comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContractOrigin {
    /// Declared by the policy: deactivated when a new policy no longer declares it.
    Policy,
    /// Added through the admin API: stays when the policy is replaced.
    Admin,
}

impl ContractOrigin {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Policy => "policy",
            Self::Admin => "admin",
        }
    }
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
    if !c.active {
        return Err(Denial::new(
            DenialCode::UnknownContract,
            format!(
                "contract {} was declared by an earlier policy and the current one no longer declares it",
                c.id
            ),
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

/// Checks verified evidence against the rules of `asset`, through the verifier's one
/// appraisal engine (simulation, debug, migration agent, measurement sets, TCB rules).
pub fn evaluate_evidence(
    policy: &Policy,
    asset: &AssetPolicy,
    ev: &VerifiedEvidence,
) -> Result<(), Denial> {
    asset
        .appraisal(policy.simulation.is_some())
        .appraise(ev, &mut Checks::default())
        .map_err(|e| Denial::new(e.denial_code(), format!("asset {}: {e}", asset.id)))
}
