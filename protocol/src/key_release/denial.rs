//! Why a key release was denied: the reason codes of the broker's API.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a key release was denied. The `snake_case` names are the API's reason codes
/// (`docs/POLICY.md`), the same in the broker's answers, its decision log, the sentinel's
/// `/status` and the CLI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DenialCode {
    /// No accepted measurement set matches the evidence (or the platform is not accepted).
    MeasurementMismatch,
    /// The TEE runs in debug mode and the asset does not allow it.
    DebugForbidden,
    /// The SEV-SNP guest policy allows a migration agent (`MIGRATE_MA`), which the asset
    /// does not allow.
    MigrationAgentForbidden,
    /// The contract is outside its validity window.
    ContractExpired,
    /// The contract was revoked.
    ContractRevoked,
    /// The contract's release limit is reached.
    ReleaseLimit,
    /// The asset is not in the policy or has no registered data key.
    UnknownAsset,
    /// The contract does not exist or belongs to another asset.
    UnknownContract,
    /// The nonce was never issued, or was already used.
    NonceUnknownOrUsed,
    /// The nonce's time to live has passed.
    NonceExpired,
    /// The evidence does not bind the nonce and keys it was sent with.
    BindingMismatch,
    /// Simulated evidence, and the policy has no `[simulation]` section.
    SimulationNotAllowed,
    /// The evidence did not verify (signature, chain, format, time).
    EvidenceInvalid,
    /// The evidence binding pins another broker's identity key.
    WrongBroker,
    /// The evidence binding pins another provider key than the asset's.
    WrongProvider,
    /// The registered manifest or provider key is not the one the current policy pins.
    AssetPolicyMismatch,
}

impl DenialCode {
    /// Every code.
    pub const ALL: [Self; 16] = [
        Self::MeasurementMismatch,
        Self::DebugForbidden,
        Self::MigrationAgentForbidden,
        Self::ContractExpired,
        Self::ContractRevoked,
        Self::ReleaseLimit,
        Self::UnknownAsset,
        Self::UnknownContract,
        Self::NonceUnknownOrUsed,
        Self::NonceExpired,
        Self::BindingMismatch,
        Self::SimulationNotAllowed,
        Self::EvidenceInvalid,
        Self::WrongBroker,
        Self::WrongProvider,
        Self::AssetPolicyMismatch,
    ];

    /// The reason code string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MeasurementMismatch => "measurement_mismatch",
            Self::DebugForbidden => "debug_forbidden",
            Self::MigrationAgentForbidden => "migration_agent_forbidden",
            Self::ContractExpired => "contract_expired",
            Self::ContractRevoked => "contract_revoked",
            Self::ReleaseLimit => "release_limit",
            Self::UnknownAsset => "unknown_asset",
            Self::UnknownContract => "unknown_contract",
            Self::NonceUnknownOrUsed => "nonce_unknown_or_used",
            Self::NonceExpired => "nonce_expired",
            Self::BindingMismatch => "binding_mismatch",
            Self::SimulationNotAllowed => "simulation_not_allowed",
            Self::EvidenceInvalid => "evidence_invalid",
            Self::WrongBroker => "wrong_broker",
            Self::WrongProvider => "wrong_provider",
            Self::AssetPolicyMismatch => "asset_policy_mismatch",
        }
    }
}

impl fmt::Display for DenialCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reason code this version does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown denial code {0:?}")]
pub struct UnknownDenialCode(pub String);

impl FromStr for DenialCode {
    type Err = UnknownDenialCode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownDenialCode(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_text_and_json() {
        for code in DenialCode::ALL {
            assert_eq!(code.as_str().parse::<DenialCode>(), Ok(code));
            assert_eq!(
                serde_json::to_string(&code).unwrap(),
                format!("\"{}\"", code.as_str())
            );
        }
        assert!("granted".parse::<DenialCode>().is_err());
    }
}
