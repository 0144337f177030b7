//! The TrustBridge sentinel (`tb-sentinel`): runs inside the TEE, attests, obtains the
//! model data key through an attestation-gated key release, decrypts sealed weights in
//! memory and serves inference behind an Oblivious HTTP gateway.
//!
//! Built so far:
//! - [`attestation`]: where evidence comes from (Nitro NSM, SEV-SNP configfs-tsm, the
//!   simulated TEE), with auto-detection.
//! - [`keys`]: the boot-time keys bound into the evidence.
//! - [`authorize`]: the key release through the relay's egress tunnel.
//! - [`hydrate`]: fetching the sealed bundle through the relay and decrypting it in memory.
//! - [`memory`]: plaintext buffers (huge pages, never dumped, zeroized).
//! - [`output`]: runtime-proxy mode (the model on tmpfs or through FIFOs).
//! - [`boot`]: the boot state machine and its retry policy.
//! - [`failure`]: step errors and the typed reason codes of `/status`.
//! - [`sentinel`]: the boot task and the health API.
//! - [`gateway`]: the Oblivious HTTP gateway, the attestation bundle and runtime-proxy mode.
//! - [`receipts`]: the signed, hash-chained execution receipts.
//!
//! What is not built yet is in `docs/ROADMAP.md`.
// `deny`, not `forbid`: only the modules that wrap syscalls allow `unsafe` (`memory`:
// madvise/mlock; `attestation::sev_guest::ioctl`: the SEV guest ioctls).
#![deny(unsafe_code)]

pub mod attestation;
pub mod authorize;
pub mod boot;
pub mod engine;
pub mod failure;
pub mod gateway;
pub mod hydrate;
pub mod keys;
pub mod memory;
pub mod output;
pub mod ready_signal;
mod reauthorization;
pub mod receipts;
pub mod sentinel;
