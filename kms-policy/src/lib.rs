//! The TrustBridge policy model, its compilers to AWS KMS key policies and Azure Secure
//! Key Release policies, and the attestation-gated key broker (`tb-kms`).
//!
//! Status: the crate is created with the workspace; the policy model and broker land with
//! the "kms-policy" issue (see `docs/ROADMAP.md`).
#![forbid(unsafe_code)]
