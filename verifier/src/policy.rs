//! The policy step: is verified evidence acceptable?
//!
//! Verification ([`crate::verify_nitro`] and friends) establishes what a genuine TEE
//! reported. The policy decides whether that is good enough: it fails closed on debug
//! mode and simulated evidence unless explicitly allowed, compares measurements with
//! reference values, and checks the verifier's nonce and the evidence binding.

use std::collections::BTreeMap;

use trustbridge_protocol::binding::EvidenceBinding;

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
}

impl PolicyError {
    /// The short name of the failed check.
    pub fn check(&self) -> &'static str {
        match self {
            Self::Debug => "debug mode",
            Self::Simulated => "simulation",
            Self::MeasurementMismatch { .. } | Self::MissingMeasurement(_) => "measurements",
            Self::NonceMismatch { .. } => "nonce",
            Self::BindingMismatch(_) => "evidence binding",
        }
    }
}

/// Reference values and rules for accepting evidence. The default accepts no debug and no
/// simulated evidence and checks nothing else.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Accept debug-mode TEEs.
    pub allow_debug: bool,
    /// Accept simulated evidence.
    pub allow_simulated: bool,
    /// Measurements that must have exactly these values (names as in
    /// [`VerifiedEvidence::measurements`]).
    pub expected: BTreeMap<String, Vec<u8>>,
    /// The verifier's nonce: Nitro `nonce`; SNP `REPORT_DATA` (nonce zero-padded to 64
    /// bytes); Azure TPM quote `extraData`.
    pub nonce: Option<Vec<u8>>,
    /// The evidence binding the sentinel must have bound (see
    /// [`trustbridge_protocol::binding`]).
    pub binding: Option<EvidenceBinding>,
}

impl Policy {
    /// Checks `ev` against the policy, recording each check.
    pub fn check(&self, ev: &VerifiedEvidence, checks: &mut Checks) -> Result<(), PolicyError> {
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
        for (name, expected) in &self.expected {
            match ev.measurements.get(name) {
                None => return Err(fail(checks, PolicyError::MissingMeasurement(name.clone()))),
                Some(found) if found != expected => {
                    return Err(fail(
                        checks,
                        PolicyError::MeasurementMismatch {
                            name: name.clone(),
                            expected: hex::encode(expected),
                            found: hex::encode(found),
                        },
                    ));
                }
                Some(_) => checks.pass("measurements", format!("{name} matches")),
            }
        }
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
