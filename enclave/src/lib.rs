//! The TrustBridge sentinel (`tb-sentinel`): runs inside the TEE, attests, obtains the
//! model data key through an attestation-gated key release, decrypts sealed weights in
//! memory and serves inference behind an Oblivious HTTP gateway.
//!
//! Status: the crate is created with the workspace; the sentinel lands with the
//! "sentinel and host relay" issue (see `docs/ROADMAP.md`).
#![forbid(unsafe_code)]
