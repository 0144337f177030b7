//! Attestation evidence verification for TrustBridge.
//!
//! This crate is what providers, the key broker and clients trust: it verifies AWS Nitro
//! attestation documents, AMD SEV-SNP reports and Azure vTPM SNP evidence against pinned
//! roots at a caller-given time, and checks receipts and receipt logs. It is pure, has no
//! async and no network, so a third party's auditor can build and read only this crate.
//!
//! Status: the crate is created with the workspace; verification lands with the
//! "verifier" issue (see `docs/ROADMAP.md`).
#![forbid(unsafe_code)]
