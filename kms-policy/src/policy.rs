//! The key-release policy: which TEE builds may receive which asset's data key.
//!
//! Declarative TOML, documented in `docs/POLICY.md`. Parsing is strict (unknown fields are
//! errors, so a typo cannot silently loosen a policy) and evaluation fails closed: an asset
//! without measurement sets for a platform accepts nothing on that platform.

use std::collections::BTreeMap;

use serde::Deserialize;
use trustbridge_verifier::{Appraisal, Platform, ReferenceSet, References};

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

/// A guest-policy bit mask written as hex in the policy (`"0x80000"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct BitMask(pub u64);

impl TryFrom<String> for BitMask {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        parse_bits(&s).map(Self)
    }
}

/// A 48- or 32-byte (etc.) value written as hex in the policy.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct HexValue(pub Vec<u8>);

impl TryFrom<String> for HexValue {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        hex::decode(s.trim())
            .map(Self)
            .map_err(|e| format!("{s:?} is not hex: {e}"))
    }
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

/// Simulation roots: evidence chaining to them is accepted (and marked simulated).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Simulation {
    /// SHA-256 of simulated Nitro roots' DER.
    #[serde(default)]
    pub nitro_root_sha256: Vec<HexValue>,
    /// SHA-256 of simulated SNP roots' (ARK) DER.
    #[serde(default)]
    pub snp_root_sha256: Vec<HexValue>,
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

/// Nitro PCR values; the PCRs listed must all match.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NitroSet {
    /// PCR0: enclave image.
    pub pcr0: Option<HexValue>,
    /// PCR1: kernel and bootstrap.
    pub pcr1: Option<HexValue>,
    /// PCR2: application.
    pub pcr2: Option<HexValue>,
    /// PCR3: parent instance IAM role.
    pub pcr3: Option<HexValue>,
    /// PCR4: parent instance id.
    pub pcr4: Option<HexValue>,
    /// PCR8: enclave image signing certificate.
    pub pcr8: Option<HexValue>,
}

impl NitroSet {
    /// The listed PCRs as (index, value).
    pub fn pcrs(&self) -> Vec<(u8, &[u8])> {
        [
            (0, &self.pcr0),
            (1, &self.pcr1),
            (2, &self.pcr2),
            (3, &self.pcr3),
            (4, &self.pcr4),
            (8, &self.pcr8),
        ]
        .into_iter()
        .filter_map(|(i, v)| v.as_ref().map(|v| (i, v.0.as_slice())))
        .collect()
    }
}

/// A minimum TCB: every listed component must be at least this.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MinTcb {
    /// FMC SPL (Turin only).
    #[serde(default)]
    pub fmc: Option<u8>,
    /// Bootloader SPL.
    #[serde(default)]
    pub bootloader: u8,
    /// TEE SPL.
    #[serde(default)]
    pub tee: u8,
    /// SNP firmware SPL.
    #[serde(default)]
    pub snp: u8,
    /// Microcode SPL.
    #[serde(default)]
    pub microcode: u8,
}

/// SEV-SNP reference values.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SnpSet {
    /// Launch measurement (48 bytes).
    pub measurement: HexValue,
    /// Host data (32 bytes), when the deployment sets it.
    pub host_data: Option<HexValue>,
    /// Minimum reported TCB (none when absent).
    #[serde(default)]
    pub min_tcb: Option<MinTcb>,
    /// Highest acceptable VMPL (default 0).
    #[serde(default)]
    pub max_vmpl: u32,
    /// Guest policy bits that must be set (hex, e.g. "0x0").
    #[serde(default)]
    pub policy_bits_set: Option<BitMask>,
    /// Guest policy bits that must be clear (hex).
    #[serde(default)]
    pub policy_bits_clear: Option<BitMask>,
}

impl MinTcb {
    /// The verifier's minimum TCB.
    pub fn reference(&self) -> trustbridge_verifier::MinTcb {
        trustbridge_verifier::MinTcb {
            bootloader: self.bootloader,
            tee: self.tee,
            snp: self.snp,
            microcode: self.microcode,
            fmc: self.fmc,
        }
    }
}

impl SnpSet {
    /// The set as the appraisal engine's reference values (the SNP measurements; the Azure
    /// TPM PCRs are added by [`AzureSet::reference`]).
    pub fn reference(&self) -> ReferenceSet {
        let mut measurements = BTreeMap::new();
        measurements.insert("measurement".to_owned(), self.measurement.0.clone());
        if let Some(h) = &self.host_data {
            measurements.insert("host_data".to_owned(), h.0.clone());
        }
        ReferenceSet {
            measurements,
            min_tcb: self.min_tcb.as_ref().map(MinTcb::reference),
            max_vmpl: Some(self.max_vmpl),
            policy_bits_set: self.policy_bits_set.map_or(0, |b| b.0),
            policy_bits_clear: self.policy_bits_clear.map_or(0, |b| b.0),
        }
    }
}

impl NitroSet {
    /// The set as the appraisal engine's reference values.
    pub fn reference(&self) -> ReferenceSet {
        ReferenceSet {
            measurements: self
                .pcrs()
                .into_iter()
                .map(|(i, v)| (format!("pcr{i}"), v.to_vec()))
                .collect(),
            ..ReferenceSet::default()
        }
    }
}

impl AzureSet {
    /// The set as the appraisal engine's reference values: the SNP ones and the TPM PCRs.
    pub fn reference(&self) -> ReferenceSet {
        let mut set = self.snp.reference();
        for (i, v) in &self.tpm_pcrs {
            set.measurements.insert(format!("tpm_pcr{i}"), v.0.clone());
        }
        set
    }
}

impl AssetPolicy {
    /// The rules evidence must meet for this asset, for the appraisal engine (the one
    /// `tb-verify` uses too). `simulation`: the policy accepts simulated evidence.
    pub fn appraisal(&self, simulation: bool) -> Appraisal {
        let by_platform = [
            (
                Platform::Nitro,
                self.nitro.iter().map(NitroSet::reference).collect(),
            ),
            (
                Platform::Snp,
                self.snp.iter().map(SnpSet::reference).collect(),
            ),
            (
                Platform::AzureSnpVtpm,
                self.azure.iter().map(AzureSet::reference).collect(),
            ),
        ]
        .into_iter()
        .collect();
        Appraisal {
            allow_simulated: simulation,
            allow_debug: self.allow_debug,
            allow_migration_agent: self.allow_migration_agent,
            references: References::OneOf(by_platform),
        }
    }
}

/// Azure vTPM SNP reference values: the SNP ones plus TPM PCRs.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AzureSet {
    /// The SNP part.
    #[serde(flatten)]
    pub snp: SnpSet,
    /// TPM PCR values (sha256 bank) by index.
    #[serde(default)]
    pub tpm_pcrs: BTreeMap<String, HexValue>,
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
            for set in &a.nitro {
                let pcrs = set.pcrs();
                if pcrs.is_empty() {
                    return bad(format!(
                        "asset {}: a Nitro measurement set lists no PCR",
                        a.id
                    ));
                }
                if pcrs.iter().any(|(_, v)| v.len() != 48) {
                    return bad(format!("asset {}: Nitro PCR values are 48 bytes", a.id));
                }
            }
            for set in a.snp.iter().chain(a.azure.iter().map(|z| &z.snp)) {
                check_snp_set(&a.id, set)?;
            }
            for z in &a.azure {
                if z.tpm_pcrs.is_empty() {
                    return bad(format!(
                        "asset {}: an Azure measurement set lists no tpm_pcrs; the launch \
                         measurement alone is Azure's paravisor, the same for every Azure \
                         confidential VM",
                        a.id
                    ));
                }
                for (i, v) in &z.tpm_pcrs {
                    // Canonical decimal only: "07" would name `tpm_pcr07`, which no
                    // evidence reports, and deny everything without a word.
                    let canonical = i
                        .parse::<u8>()
                        .ok()
                        .filter(|&n| n < 24 && n.to_string() == *i);
                    if canonical.is_none() || v.0.len() != 32 {
                        return bad(format!(
                            "asset {}: tpm_pcrs keys are 0-23 written plainly (\"7\", not \"07\") \
                             and values 32 bytes; got {i:?}",
                            a.id
                        ));
                    }
                }
            }
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
        match platform {
            Platform::Nitro => !asset.nitro.is_empty(),
            Platform::Snp => !asset.snp.is_empty(),
            Platform::AzureSnpVtpm => !asset.azure.is_empty(),
        }
    }
}

fn check_snp_set(asset: &str, set: &SnpSet) -> Result<(), PolicyError> {
    if set.measurement.0.len() != 48 {
        return Err(PolicyError::Invalid(format!(
            "asset {asset}: SNP measurement must be 48 bytes"
        )));
    }
    if set.host_data.as_ref().is_some_and(|h| h.0.len() != 32) {
        return Err(PolicyError::Invalid(format!(
            "asset {asset}: host_data must be 32 bytes"
        )));
    }
    if let (Some(set_bits), Some(clear)) = (set.policy_bits_set, set.policy_bits_clear) {
        if set_bits.0 & clear.0 != 0 {
            return Err(PolicyError::Invalid(format!(
                "asset {asset}: guest policy bits {:#x} are both required set and clear",
                set_bits.0 & clear.0
            )));
        }
    }
    Ok(())
}

/// Parses a hex bit mask such as `0x80000`.
pub fn parse_bits(s: &str) -> Result<u64, String> {
    u64::from_str_radix(s.trim().trim_start_matches("0x"), 16)
        .map_err(|_| format!("{s:?} is not a hex bit mask"))
}

/// Parses a strict RFC 3339 time (offset required and honoured) into Unix seconds.
pub fn parse_time(s: &str) -> Result<u64, PolicyError> {
    trustbridge_protocol::rfc3339::parse_unix_seconds(s)
        .map_err(|e| PolicyError::Invalid(e.to_string()))
}
