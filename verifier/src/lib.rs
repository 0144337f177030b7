//! Attestation evidence verification for TrustBridge.
//!
//! This crate is what providers, the key broker and clients trust. Auditors read it line by
//! line. It is pure Rust, has no async and no network, and is deterministic given a `now`.
//!
//! Verification is two separate steps:
//! 1. `verify_*` checks that evidence is genuine: signatures, certificate chains to a
//!    pinned root, validity at `now`, platform format rules. It returns a
//!    [`VerifiedEvidence`] describing what the TEE reported.
//! 2. [`Policy::check`] decides whether that evidence is acceptable: the appraisal
//!    engine ([`appraisal`]: simulation, debug mode, migration agent, reference values, TCB
//!    rules; the one the key broker uses too), then the nonce and the evidence binding.
//!
//! Receipts ([`receipt`]): a receipt against the attested sentinel that signed it, and a
//! receipt log as one hash chain per boot.
//!
//! Supported: AWS Nitro ([`verify_nitro`]), AMD SEV-SNP ([`verify_snp`]) and Azure vTPM SNP
//! ([`verify_azure`]).
#![forbid(unsafe_code)]

pub mod air;
pub mod amd;
pub mod appraisal;
pub mod azure;
pub mod client_policy;
pub mod crl;
mod error;
mod evidence;
pub mod hcl_report;
pub mod nitro;
mod policy;
pub mod receipt;
pub mod reference_values;
mod roots;
#[cfg(feature = "simulate")]
pub mod simulated;
pub mod snp;
pub mod snp_report;
pub mod tpm_quote;
pub mod vcek_cache;
pub mod x509;

pub use appraisal::{Appraisal, MinTcb, ReferenceSet, References};
pub use azure::{AzureEvidence, verify_azure, verify_azure_logged};
pub use error::VerifyError;
pub use evidence::{BindingFields, Check, Checks, Platform, SnpClaims, VerifiedEvidence};
pub use nitro::{verify_nitro, verify_nitro_logged};
pub use policy::{Pin, Policy, PolicyError, check_binding};
pub use roots::{
    AMD_ARK_GENOA_SHA256, AMD_ARK_MILAN_SHA256, AMD_ARK_TURIN_SHA256, AWS_NITRO_ROOT_G1_SHA256,
    TrustRoots, TrustedRoot,
};
pub use snp::{verify_snp, verify_snp_logged};
pub use trustbridge_protocol::binding::EvidenceBinding;

/// Verifies `evidence` of `platform` at `now` against `roots`, with `certificates` that
/// came with it (an SNP VCEK chain; Azure evidence may carry its own), recording each
/// check: the one dispatch over the platforms for every caller.
pub fn verify_logged(
    platform: Platform,
    evidence: &[u8],
    certificates: &[x509::ParsedCertificate],
    roots: &TrustRoots,
    now: std::time::SystemTime,
    checks: &mut Checks,
) -> Result<VerifiedEvidence, VerifyError> {
    match platform {
        Platform::Nitro => verify_nitro_logged(evidence, roots, now, checks),
        Platform::Snp => verify_snp_logged(evidence, certificates, roots, now, platform, checks),
        Platform::AzureSnpVtpm => match AzureEvidence::from_json(evidence) {
            Ok(azure) => verify_azure_logged(&azure, certificates, roots, now, checks),
            Err(e) => Err(checks.failed(e)),
        },
    }
}
