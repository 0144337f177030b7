//! The appraisal: is verified evidence acceptable under reference values?
//!
//! One engine for every relying party: `tb-verify` builds an [`Appraisal`] from its flags,
//! the key broker from an asset's policy. The rules, applied in this order:
//!
//! 1. simulated evidence only when allowed;
//! 2. a debug-mode TEE only when allowed (Nitro: PCR0 all zero; SEV-SNP: guest policy
//!    DEBUG, bit 19);
//! 3. an SEV-SNP guest whose policy allows a migration agent (`MIGRATE_MA`, bit 18) only
//!    when allowed: the agent can read the guest's memory;
//! 4. the reference values: one accepted set of the evidence's platform must match in
//!    full (each named measurement present and equal; for SEV-SNP and Azure the reported
//!    TCB at least the minimum, the VMPL at most the maximum, the required guest policy
//!    bits set and the forbidden ones clear). A set names only measurements the evidence
//!    is signed for: the verifier reports nothing else (an Azure PCR the TPM quote does not
//!    select is absent, so a set that names it does not match).
//!
//! Every rule fails closed: an absent value never matches.

use std::collections::BTreeMap;

use trustbridge_protocol::key_release::DenialCode;

use crate::evidence::{Checks, Platform, VerifiedEvidence};
use crate::policy::{Pin, PolicyError};
use crate::snp_report::TcbComponents;

/// SEV-SNP guest policy bit 18: a migration agent may be associated with the guest.
pub const POLICY_MIGRATE_MA: u64 = 1 << 18;

/// A minimum TCB: each component at least this (`fmc` only where the product has one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MinTcb {
    /// Bootloader SPL.
    pub bootloader: u8,
    /// TEE (PSP OS) SPL.
    pub tee: u8,
    /// SNP firmware SPL.
    pub snp: u8,
    /// Microcode SPL.
    pub microcode: u8,
    /// FMC SPL (Turin); ignored for products without one.
    pub fmc: Option<u8>,
}

impl MinTcb {
    /// The first component of `tcb` below this minimum, as (name, reported, minimum).
    fn shortfall(&self, tcb: &TcbComponents) -> Option<(&'static str, u8, u8)> {
        let pairs = [
            ("bootloader", tcb.bootloader, self.bootloader),
            ("tee", tcb.tee, self.tee),
            ("snp", tcb.snp, self.snp),
            ("microcode", tcb.microcode, self.microcode),
        ];
        pairs
            .into_iter()
            .chain(
                self.fmc
                    .zip(tcb.fmc)
                    .map(|(min, reported)| ("fmc", reported, min)),
            )
            .find(|(_, reported, min)| reported < min)
    }
}

/// One accepted set of reference values: all of it must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReferenceSet {
    /// Named measurements (as in [`VerifiedEvidence::measurements`]) and their values.
    pub measurements: BTreeMap<String, Vec<u8>>,
    /// SEV-SNP and Azure: the reported TCB must be at least this.
    pub min_tcb: Option<MinTcb>,
    /// SEV-SNP and Azure: the highest acceptable VMPL.
    pub max_vmpl: Option<u32>,
    /// SEV-SNP and Azure: guest policy bits that must be set.
    pub policy_bits_set: u64,
    /// SEV-SNP and Azure: guest policy bits that must be clear.
    pub policy_bits_clear: u64,
}

impl ReferenceSet {
    /// Whether the set has SEV-SNP rules (which evidence without SNP claims cannot meet).
    fn has_snp_rules(&self) -> bool {
        self.min_tcb.is_some()
            || self.max_vmpl.is_some()
            || self.policy_bits_set != 0
            || self.policy_bits_clear != 0
    }

    /// Checks `ev` against this set; the first mismatch.
    pub fn check(&self, ev: &VerifiedEvidence) -> Result<(), PolicyError> {
        for (name, expected) in &self.measurements {
            match ev.measurements.get(name) {
                None => return Err(PolicyError::MissingMeasurement(missing(name))),
                Some(found) if found != expected => {
                    return Err(PolicyError::MeasurementMismatch {
                        name: name.clone(),
                        expected: hex::encode(expected),
                        found: hex::encode(found),
                    });
                }
                Some(_) => {}
            }
        }
        if !self.has_snp_rules() {
            return Ok(());
        }
        let claims = ev.snp.as_ref().ok_or(PolicyError::NotSnp)?;
        if let Some(min) = &self.min_tcb
            && let Some((component, reported, minimum)) = min.shortfall(&claims.reported_tcb)
        {
            return Err(PolicyError::TcbBelowMinimum {
                component,
                reported,
                minimum,
            });
        }
        if let Some(max) = self.max_vmpl
            && claims.vmpl > max
        {
            return Err(PolicyError::Vmpl {
                vmpl: claims.vmpl,
                max,
            });
        }
        if claims.policy & self.policy_bits_set != self.policy_bits_set {
            return Err(PolicyError::PolicyBits {
                policy: claims.policy,
                missing: self.policy_bits_set & !claims.policy,
                forbidden: 0,
            });
        }
        if claims.policy & self.policy_bits_clear != 0 {
            return Err(PolicyError::PolicyBits {
                policy: claims.policy,
                missing: 0,
                forbidden: claims.policy & self.policy_bits_clear,
            });
        }
        Ok(())
    }
}

/// The name of a measurement the evidence lacks, with why it may be absent.
fn missing(name: &str) -> String {
    if let Some(index) = name.strip_prefix("tpm_pcr") {
        format!("{name} (the TPM quote does not select PCR {index}, so nothing covers it)")
    } else {
        name.to_owned()
    }
}

/// Which reference values evidence must meet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum References {
    /// None: only the platform rules (simulation, debug, migration agent) apply.
    #[default]
    Any,
    /// One of these sets, by platform. A platform with no set accepts nothing.
    OneOf(BTreeMap<Platform, Vec<ReferenceSet>>),
}

/// The rules evidence is appraised under.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Appraisal {
    /// Accept simulated evidence.
    pub allow_simulated: bool,
    /// Accept debug-mode TEEs.
    pub allow_debug: bool,
    /// Accept SEV-SNP guests whose policy allows a migration agent (`MIGRATE_MA`).
    pub allow_migration_agent: bool,
    /// The reference values.
    pub references: References,
}

impl Appraisal {
    /// Appraises `ev`, recording each check in `checks`.
    pub fn appraise(&self, ev: &VerifiedEvidence, checks: &mut Checks) -> Result<(), PolicyError> {
        let fail = |checks: &mut Checks, e: PolicyError| {
            checks.fail(e.check(), e.to_string());
            e
        };
        if ev.simulated && !self.allow_simulated {
            return Err(fail(checks, PolicyError::Simulated));
        }
        if ev.simulated {
            checks.pass(
                "simulation",
                "SIMULATED evidence accepted by explicit request",
            );
        }
        if ev.debug && !self.allow_debug {
            return Err(fail(checks, PolicyError::Debug));
        }
        checks.pass(
            "debug mode",
            if ev.debug {
                "debug mode allowed by explicit request"
            } else {
                "not in debug mode"
            },
        );
        if let Some(claims) = &ev.snp
            && claims.policy & POLICY_MIGRATE_MA != 0
        {
            if !self.allow_migration_agent {
                return Err(fail(checks, PolicyError::MigrationAgent));
            }
            checks.pass(
                "migration agent",
                "guest policy allows a migration agent (allowed by explicit request)",
            );
        }
        let References::OneOf(by_platform) = &self.references else {
            return Ok(());
        };
        let sets = by_platform
            .get(&ev.platform)
            .filter(|sets| !sets.is_empty())
            .ok_or_else(|| fail(checks, PolicyError::PlatformNotAccepted(ev.platform)))?;
        let mut reasons = Vec::new();
        for (i, set) in sets.iter().enumerate() {
            match set.check(ev) {
                Ok(()) => {
                    checks.pass(
                        "measurements",
                        if sets.len() == 1 {
                            "the reference values match".to_owned()
                        } else {
                            format!("accepted set {} of {} matches", i + 1, sets.len())
                        },
                    );
                    return Ok(());
                }
                Err(e) => reasons.push(e),
            }
        }
        let err = if reasons.len() == 1 {
            reasons.remove(0)
        } else {
            PolicyError::NoSetMatches(
                reasons
                    .iter()
                    .enumerate()
                    .map(|(i, e)| format!("set {}: {e}", i + 1))
                    .collect(),
            )
        };
        Err(fail(checks, err))
    }
}

impl PolicyError {
    /// The key broker's reason code for this refusal.
    pub fn denial_code(&self) -> DenialCode {
        match self {
            Self::Simulated => DenialCode::SimulationNotAllowed,
            Self::Debug => DenialCode::DebugForbidden,
            Self::MigrationAgent => DenialCode::MigrationAgentForbidden,
            Self::NonceMismatch { .. } | Self::BindingMismatch(_) => DenialCode::BindingMismatch,
            Self::WrongPin {
                what: Pin::Broker, ..
            } => DenialCode::WrongBroker,
            Self::WrongPin {
                what: Pin::Provider,
                ..
            } => DenialCode::WrongProvider,
            Self::PlatformNotAccepted(_)
            | Self::NoSetMatches(_)
            | Self::TcbBelowMinimum { .. }
            | Self::Vmpl { .. }
            | Self::PolicyBits { .. }
            | Self::NotSnp
            | Self::MeasurementMismatch { .. }
            | Self::MissingMeasurement(_) => DenialCode::MeasurementMismatch,
        }
    }
}
