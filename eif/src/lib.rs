//! Nitro Enclave Image File (EIF) build and reproducible PCR0/1/2 measurement.
//!
//! Status: the crate is created with the workspace; EIF support is planned (see
//! `docs/ROADMAP.md`).
#![forbid(unsafe_code)]
