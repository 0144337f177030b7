//! What a successful verification yields, and the log of checks that led there.

use std::collections::BTreeMap;
use std::time::SystemTime;

pub use trustbridge_protocol::Platform;

use crate::VerifyError;
use crate::snp_report::{SigningKey, TcbComponents};
use crate::x509::CertificateInfo;

/// The values by which evidence binds a verifier's challenge and a sentinel's keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BindingFields {
    /// Nitro `nonce`.
    pub nonce: Option<Vec<u8>>,
    /// Nitro `user_data`.
    pub user_data: Option<Vec<u8>>,
    /// Nitro `public_key`.
    pub public_key: Option<Vec<u8>>,
    /// SNP `REPORT_DATA`.
    pub report_data: Option<Vec<u8>>,
    /// Azure HCL `user-data`.
    pub hcl_user_data: Option<Vec<u8>>,
    /// Azure TPM quote `extraData`.
    pub quote_nonce: Option<Vec<u8>>,
}

/// Evidence whose signatures, certificate chain and platform rules all verified.
///
/// It says what the TEE reported; whether that is acceptable is the policy step's job
/// ([`crate::Policy`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedEvidence {
    /// The platform.
    pub platform: Platform,
    /// Whether the evidence chains to a simulation root (never a real TEE).
    pub simulated: bool,
    /// Whether the TEE runs in debug mode (Nitro PCR0 all zero; SNP policy DEBUG bit).
    pub debug: bool,
    /// Named measurements: `pcr0`..`pcr31` (Nitro); `measurement`, `host_data`,
    /// `report_data`, `chip_id` (SNP); plus `tpm_pcr0`.. for Azure.
    pub measurements: BTreeMap<String, Vec<u8>>,
    /// Binding fields.
    pub binding: BindingFields,
    /// When the evidence was produced, where the platform says.
    pub timestamp: Option<SystemTime>,
    /// The certificate chain used, leaf first.
    pub chain: Vec<CertificateInfo>,
    /// Platform-specific facts for display (module id, TCB, VMPL ...), as name/value text.
    pub facts: BTreeMap<String, String>,
    /// The typed SNP claims (SNP and Azure evidence), for policy decisions.
    pub snp: Option<SnpClaims>,
}

/// What an SNP report says about the guest and the platform, typed for policy checks
/// (minimum TCB, policy flags, VMPL).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnpClaims {
    /// Report format version.
    pub version: u32,
    /// Guest SVN.
    pub guest_svn: u32,
    /// Guest policy bits (bit 19: debug; bit 16: SMT allowed; ...).
    pub policy: u64,
    /// VMPL of the code that requested the report.
    pub vmpl: u32,
    /// VCEK or VLEK.
    pub signing_key: SigningKey,
    /// The endorsement key's product name.
    pub product: String,
    /// The reported TCB (certified by the endorsement key).
    pub reported_tcb: TcbComponents,
    /// The current TCB.
    pub current_tcb: TcbComponents,
    /// The committed TCB.
    pub committed_tcb: TcbComponents,
    /// The TCB at launch.
    pub launch_tcb: TcbComponents,
    /// Platform info flags.
    pub platform_info: u64,
}

/// One verification step and its outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// Short name of the check.
    pub name: &'static str,
    /// Whether it passed.
    pub passed: bool,
    /// What was checked, or why it failed.
    pub detail: String,
}

/// The ordered log of checks of one verification.
#[derive(Clone, Debug, Default)]
pub struct Checks(Vec<Check>);

impl Checks {
    /// Records a passed check.
    pub fn pass(&mut self, name: &'static str, detail: impl Into<String>) {
        self.0.push(Check {
            name,
            passed: true,
            detail: detail.into(),
        });
    }

    /// Records a failed check.
    pub fn fail(&mut self, name: &'static str, detail: impl Into<String>) {
        self.0.push(Check {
            name,
            passed: false,
            detail: detail.into(),
        });
    }

    /// Records `err` as a failed check and returns it.
    pub fn failed(&mut self, err: VerifyError) -> VerifyError {
        self.fail(err.check(), err.to_string());
        err
    }

    /// The checks so far.
    pub fn as_slice(&self) -> &[Check] {
        &self.0
    }

    /// Consumes the log.
    pub fn into_vec(self) -> Vec<Check> {
        self.0
    }
}
