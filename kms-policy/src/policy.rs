//! The key-release policy: which TEE builds may receive which asset's data key.
//!
//! Declarative TOML, documented in `docs/POLICY.md`. Parsing is strict (unknown fields are
//! errors, so a typo cannot silently loosen a policy) and evaluation fails closed: an asset
//! without measurement sets for a platform accepts nothing on that platform.

use serde::Deserialize;
use trustbridge_verifier::reference_values::MeasurementSets;
pub use trustbridge_verifier::reference_values::{
    AzureSet, BitMask, HexValue, MinTcb, NitroSet, Simulation, SnpSet, parse_bits,
};
use trustbridge_verifier::{Appraisal, Platform};

/// The policy file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// Not valid TOML of the policy's shape.
    #[error("invalid policy: {0}")]
    Syntax(String),
    /// Valid TOML, but inconsistent.
    #[error("invalid policy: {0}")]
    Invalid(String),
}

/// The whole policy.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Who may use the admin API.
    #[serde(default)]
    pub admin: Admin,
    /// Present only where simulated evidence is acceptable (development).
    pub simulation: Option<Simulation>,
    /// The assets and their acceptance rules.
    #[serde(default, rename = "asset")]
    pub assets: Vec<AssetPolicy>,
    /// Contracts declared in the policy (more can be added through the admin API).
    #[serde(default, rename = "contract")]
    pub contracts: Vec<ContractSpec>,
}

/// Admin API access.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Ed25519 public keys (hex) whose signed requests the admin API accepts.
    #[serde(default)]
    pub keys: Vec<HexValue>,
}

/// One asset's rules.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetPolicy {
    /// Asset id (as in the bundle manifest).
    pub id: String,
    /// The provider's Ed25519 public key (hex): registered manifests must be signed by it.
    pub provider_key: HexValue,
    /// SHA-256 of the accepted `manifest.cose`; any manifest by the provider when absent.
    pub manifest_sha256: Option<HexValue>,
    /// Accept debug-mode TEEs (never in production).
    #[serde(default)]
    pub allow_debug: bool,
    /// Accept SEV-SNP guests whose policy allows a migration agent (`MIGRATE_MA`), which
    /// could read the guest's memory.
    #[serde(default)]
    pub allow_migration_agent: bool,
    /// How long a release is good for, in seconds (default 600): a sentinel that is not
    /// authorized again within it stops serving, whatever its own configuration says. It
    /// must cover the time to download and decrypt the model.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u64,
    /// Accepted Nitro measurement sets (any one suffices).
    #[serde(default)]
    pub nitro: Vec<NitroSet>,
    /// Accepted SEV-SNP measurement sets.
    #[serde(default)]
    pub snp: Vec<SnpSet>,
    /// Accepted Azure vTPM SNP measurement sets.
    #[serde(default)]
    pub azure: Vec<AzureSet>,
}

/// The default lease of a release: ten minutes.
pub const DEFAULT_LEASE_SECS: u64 = 600;
pub use trustbridge_protocol::key_release::MAX_LEASE_SECS;

fn default_lease_secs() -> u64 {
    DEFAULT_LEASE_SECS
}

impl AssetPolicy {
    /// The asset's measurement sets.
    pub fn sets(&self) -> MeasurementSets<'_> {
        MeasurementSets {
            nitro: &self.nitro,
            snp: &self.snp,
            azure: &self.azure,
        }
    }

    /// The rules evidence must meet for this asset, for the appraisal engine (the one
    /// `tb-verify` uses too). `simulation`: the policy accepts simulated evidence.
    pub fn appraisal(&self, simulation: bool) -> Appraisal {
        Appraisal {
            allow_simulated: simulation,
            allow_debug: self.allow_debug,
            allow_migration_agent: self.allow_migration_agent,
            references: self.sets().references(),
        }
    }
}

/// A contract as declared in the policy file.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ContractSpec {
    /// Contract id.
    pub id: String,
    /// The asset it releases.
    pub asset: String,
    /// Start (RFC 3339).
    pub not_before: String,
    /// End (RFC 3339).
    pub not_after: String,
    /// Most releases allowed; unlimited when absent.
    pub max_releases: Option<u64>,
    /// Revoked contracts release nothing.
    #[serde(default)]
    pub revoked: bool,
}

impl Policy {
    /// Parses and validates a policy.
    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        let policy: Policy =
            toml::from_str(text).map_err(|e| PolicyError::Syntax(e.to_string()))?;
        policy.validate()?;
        Ok(policy)
    }

    /// The rules of asset `id`.
    pub fn asset(&self, id: &str) -> Option<&AssetPolicy> {
        self.assets.iter().find(|a| a.id == id)
    }

    fn validate(&self) -> Result<(), PolicyError> {
        let bad = |m: String| Err(PolicyError::Invalid(m));
        for key in &self.admin.keys {
            if key.0.len() != 32 {
                return bad("admin keys are 32-byte Ed25519 public keys".into());
            }
        }
        let mut ids = std::collections::BTreeSet::new();
        for a in &self.assets {
            if !ids.insert(a.id.as_str()) {
                return bad(format!("asset {} is declared twice", a.id));
            }
            if !(1..=MAX_LEASE_SECS).contains(&a.lease_secs) {
                return bad(format!(
                    "asset {}: lease_secs must be 1 to {MAX_LEASE_SECS}",
                    a.id
                ));
            }
            if a.provider_key.0.len() != 32 {
                return bad(format!("asset {}: provider_key must be 32 bytes", a.id));
            }
            if a.manifest_sha256.as_ref().is_some_and(|m| m.0.len() != 32) {
                return bad(format!("asset {}: manifest_sha256 must be 32 bytes", a.id));
            }
            a.sets()
                .validate()
                .map_err(|e| PolicyError::Invalid(format!("asset {}: {e}", a.id)))?;
        }
        let mut contract_ids = std::collections::BTreeSet::new();
        for c in &self.contracts {
            if !contract_ids.insert(c.id.as_str()) {
                return bad(format!("contract {} is declared twice", c.id));
            }
            if self.asset(&c.asset).is_none() {
                return bad(format!("contract {} names unknown asset {}", c.id, c.asset));
            }
            let (nb, na) = (parse_time(&c.not_before)?, parse_time(&c.not_after)?);
            if na <= nb {
                return bad(format!(
                    "contract {}: not_after must be after not_before",
                    c.id
                ));
            }
        }
        Ok(())
    }

    /// Whether any measurement set accepts `platform` for `asset`.
    pub fn accepts_platform(asset: &AssetPolicy, platform: Platform) -> bool {
        asset.sets().accepts(platform)
    }
}

/// Parses a strict RFC 3339 time (offset required and honoured) into Unix seconds.
pub fn parse_time(s: &str) -> Result<u64, PolicyError> {
    trustbridge_protocol::rfc3339::parse_unix_seconds(s)
        .map_err(|e| PolicyError::Invalid(e.to_string()))
}
