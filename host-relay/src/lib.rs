//! The untrusted TrustBridge host relay (`tb-relay`): forwards client ciphertext to the
//! sentinel, serves sealed bundles, forwards allow-listed egress, and stores receipt logs.
//! It holds no keys.
//!
//! Status: the crate is created with the workspace; the relay lands with the
//! "sentinel and host relay" issue (see `docs/ROADMAP.md`).
#![forbid(unsafe_code)]
