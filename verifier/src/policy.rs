//! The policy step: is verified evidence acceptable?
//!
//! Verification ([`crate::verify_nitro`] and friends) establishes what a genuine TEE
//! reported. The policy decides whether that is good enough: the appraisal engine
//! ([`crate::appraisal`]: simulation, debug mode, migration agent, reference values and
//! TCB rules, the same for `tb-verify` and the key broker), then the verifier's nonce and
//! the evidence binding.

use std::collections::BTreeMap;

use trustbridge_protocol::binding::EvidenceBinding;

use crate::appraisal::{Appraisal, MinTcb, ReferenceSet, References};
use crate::evidence::{Checks, Platform, VerifiedEvidence};

/// Evidence verified but is not acceptable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolicyError {
    /// The TEE runs in debug mode, which the policy forbids.
    #[error("debug-mode TEE is not allowed (pass --allow-debug only for development)")]
    Debug,
    /// The evidence is simulated, which the policy forbids.
    #[error("simulated evidence is not allowed")]
    Simulated,
    /// The SEV-SNP guest policy allows a migration agent, which the policy forbids.
    #[error(
        "the guest policy allows a migration agent (MIGRATE_MA, bit 18), which could read the guest's memory"
    )]
    MigrationAgent,
    /// No reference values accept evidence of this platform.
    #[error("no accepted measurement set for {0} evidence")]
    PlatformNotAccepted(Platform),
    /// None of several accepted sets matches; the reason of each.
    #[error("no accepted measurement set matches: {}", .0.join("; "))]
    NoSetMatches(Vec<String>),
    /// The reported TCB is below the minimum.
    #[error("reported TCB {component} = {reported} is below the minimum {minimum}")]
    TcbBelowMinimum {
        /// bootloader, tee, snp, microcode or fmc.
        component: &'static str,
        /// The reported value.
        reported: u8,
        /// The minimum.
        minimum: u8,
    },
    /// The report was requested at a VMPL above the maximum.
    #[error("VMPL {vmpl} is above the maximum {max}")]
    Vmpl {
        /// The report's VMPL.
        vmpl: u32,
        /// The maximum.
        max: u32,
    },
    /// Required guest policy bits are clear, or forbidden ones set.
    #[error(
        "guest policy {policy:#x}: required bits {missing:#x} clear, forbidden bits {forbidden:#x} set"
    )]
    PolicyBits {
        /// The guest policy.
        policy: u64,
        /// Required bits that are clear.
        missing: u64,
        /// Forbidden bits that are set.
        forbidden: u64,
    },
    /// SEV-SNP rules (TCB, VMPL, policy bits) for evidence without an SNP report.
    #[error("the reference values have SEV-SNP rules, and the evidence has no SNP report")]
    NotSnp,
    /// A measurement differs from its reference value.
    #[error("measurement {name} is {found}, expected {expected}")]
    MeasurementMismatch {
        /// Measurement name.
        name: String,
        /// Expected value (hex).
        expected: String,
        /// Reported value (hex).
        found: String,
    },
    /// The evidence has no such measurement.
    #[error("evidence has no measurement named {0}")]
    MissingMeasurement(String),
    /// The evidence does not carry the verifier's nonce.
    #[error("nonce mismatch: evidence carries {found}, expected {expected}")]
    NonceMismatch {
        /// Expected nonce (hex).
        expected: String,
        /// What the evidence carries (hex, or "none").
        found: String,
    },
    /// The evidence does not carry the expected evidence binding.
    #[error("evidence binding mismatch: {0}")]
    BindingMismatch(String),
    /// The sentinel pins another key broker or provider than required.
    #[error("the sentinel pins {what} {found}, not {expected}")]
    WrongPin {
        /// Which pin.
        what: Pin,
        /// The required key (hex).
        expected: String,
        /// What the binding pins (hex, or "none").
        found: String,
    },
}

/// A key the sentinel pins in its evidence binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pin {
    /// The key broker's identity key.
    Broker,
    /// The model provider's signing key.
    Provider,
}

impl std::fmt::Display for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Broker => "broker key",
            Self::Provider => "provider key",
        })
    }
}

impl PolicyError {
    /// The short name of the failed check.
    pub fn check(&self) -> &'static str {
        match self {
            Self::Debug => "debug mode",
            Self::Simulated => "simulation",
            Self::MigrationAgent => "migration agent",
            Self::MeasurementMismatch { .. }
            | Self::MissingMeasurement(_)
            | Self::PlatformNotAccepted(_)
            | Self::NoSetMatches(_)
            | Self::NotSnp => "measurements",
            Self::TcbBelowMinimum { .. } | Self::Vmpl { .. } | Self::PolicyBits { .. } => {
                "TCB and guest policy"
            }
            Self::NonceMismatch { .. } => "nonce",
            Self::BindingMismatch(_) => "evidence binding",
            Self::WrongPin { .. } => "pins",
        }
    }
}

/// Reference values and rules for accepting evidence. The default accepts no debug, no
/// simulated evidence and no migration agent, and checks nothing else.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Accept debug-mode TEEs.
    pub allow_debug: bool,
    /// Accept simulated evidence.
    pub allow_simulated: bool,
    /// Accept SEV-SNP guests whose policy allows a migration agent.
    pub allow_migration_agent: bool,
    /// Measurements that must have exactly these values (names as in
    /// [`VerifiedEvidence::measurements`]).
    pub expected: BTreeMap<String, Vec<u8>>,
    /// SEV-SNP and Azure: the minimum reported TCB.
    pub min_tcb: Option<MinTcb>,
    /// SEV-SNP and Azure: the highest acceptable VMPL.
    pub max_vmpl: Option<u32>,
    /// The verifier's nonce: Nitro `nonce`; SNP `REPORT_DATA` (nonce zero-padded to 64
    /// bytes); Azure TPM quote `extraData`.
    pub nonce: Option<Vec<u8>>,
    /// The evidence binding the sentinel must have bound (see
    /// [`trustbridge_protocol::binding`]).
    pub binding: Option<EvidenceBinding>,
    /// The key broker identity key the sentinel must pin (checked in `binding`).
    pub broker_key: Option<[u8; 32]>,
    /// The provider key the sentinel must pin (checked in `binding`).
    pub provider_key: Option<[u8; 32]>,
}

impl Policy {
    /// The appraisal these rules make for evidence of `platform`: one reference set when
    /// any reference value is given, none otherwise.
    pub fn appraisal(&self, platform: Platform) -> Appraisal {
        let references =
            if self.expected.is_empty() && self.min_tcb.is_none() && self.max_vmpl.is_none() {
                References::Any
            } else {
                let set = ReferenceSet {
                    measurements: self.expected.clone(),
                    min_tcb: self.min_tcb,
                    max_vmpl: self.max_vmpl,
                    ..ReferenceSet::default()
                };
                References::OneOf(BTreeMap::from([(platform, vec![set])]))
            };
        Appraisal {
            allow_simulated: self.allow_simulated,
            allow_debug: self.allow_debug,
            allow_migration_agent: self.allow_migration_agent,
            references,
        }
    }

    /// Checks `ev` against the policy, recording each check.
    pub fn check(&self, ev: &VerifiedEvidence, checks: &mut Checks) -> Result<(), PolicyError> {
        self.appraisal(ev.platform).appraise(ev, checks)?;
        self.check_binding_and_pins(ev, checks)
    }

    /// The checks after the appraisal: the nonce, the evidence binding and the pinned
    /// keys (for callers that appraise with their own reference values).
    pub fn check_binding_and_pins(
        &self,
        ev: &VerifiedEvidence,
        checks: &mut Checks,
    ) -> Result<(), PolicyError> {
        let fail = |checks: &mut Checks, e: PolicyError| {
            checks.fail(e.check(), e.to_string());
            e
        };
        if let Some(nonce) = &self.nonce {
            let found = nonce_field(ev);
            let matches = match ev.platform {
                Platform::Snp => found.as_deref() == Some(padded(nonce, 64).as_slice()),
                _ => found.as_deref() == Some(nonce.as_slice()),
            };
            if !matches {
                let found = found.map_or_else(|| "none".to_owned(), hex::encode);
                return Err(fail(
                    checks,
                    PolicyError::NonceMismatch {
                        expected: hex::encode(nonce),
                        found,
                    },
                ));
            }
            checks.pass("nonce", "evidence carries the expected nonce");
        }
        if let Some(binding) = &self.binding {
            check_binding(ev, binding).map_err(|e| fail(checks, e))?;
            checks.pass(
                "evidence binding",
                "evidence binds the sentinel's keys and the nonce",
            );
        }
        let pins = [
            (
                Pin::Broker,
                self.broker_key,
                self.binding.as_ref().map(|b| Some(b.broker_key)),
            ),
            (
                Pin::Provider,
                self.provider_key,
                self.binding.as_ref().map(|b| b.provider_key),
            ),
        ];
        for (what, expected, bound) in pins {
            let Some(expected) = expected else { continue };
            let Some(found) = bound else {
                return Err(fail(
                    checks,
                    PolicyError::BindingMismatch(format!(
                        "no evidence binding to check the {what} against"
                    )),
                ));
            };
            if found != Some(expected) {
                return Err(fail(
                    checks,
                    PolicyError::WrongPin {
                        what,
                        expected: hex::encode(expected),
                        found: found.map_or_else(|| "none".to_owned(), hex::encode),
                    },
                ));
            }
            checks.pass("pins", format!("the sentinel pins the expected {what}"));
        }
        Ok(())
    }
}

/// Checks that `ev` carries `binding` as the binding rule places it per platform.
pub fn check_binding(ev: &VerifiedEvidence, binding: &EvidenceBinding) -> Result<(), PolicyError> {
    let digest = binding
        .digest()
        .map_err(|e| PolicyError::BindingMismatch(e.to_string()))?;
    let b = &ev.binding;
    let (field, ok) = match ev.platform {
        Platform::Nitro => (
            "user_data/nonce",
            b.user_data.as_deref() == Some(&digest[..])
                && b.nonce.as_deref() == Some(binding.nonce.as_slice()),
        ),
        Platform::Snp => ("REPORT_DATA", b.report_data.as_deref() == Some(&digest[..])),
        Platform::AzureSnpVtpm => (
            "HCL user-data/quote nonce",
            b.hcl_user_data.as_deref() == Some(&digest[..])
                && b.quote_nonce.as_deref() == Some(binding.nonce.as_slice()),
        ),
    };
    if ok {
        Ok(())
    } else {
        Err(PolicyError::BindingMismatch(format!(
            "{field} does not carry the binding"
        )))
    }
}

fn nonce_field(ev: &VerifiedEvidence) -> Option<Vec<u8>> {
    match ev.platform {
        Platform::Nitro => ev.binding.nonce.clone(),
        Platform::Snp => ev.binding.report_data.clone(),
        Platform::AzureSnpVtpm => ev.binding.quote_nonce.clone(),
    }
}

fn padded(bytes: &[u8], len: usize) -> Vec<u8> {
    let mut v = bytes.to_vec();
    v.resize(len.max(bytes.len()), 0);
    v
}
