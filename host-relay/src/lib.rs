//! The untrusted TrustBridge host relay (`tb-relay`): forwards client ciphertext to the
//! sentinel, serves sealed bundles, forwards allow-listed egress, and stores receipt logs.
//! It holds no keys.
//!
//! Built so far: [`egress`], the sentinel's only way out, and [`bundles`], sealed-bundle
//! serving with range requests. The ingress proxy and the `tb-relay` binary follow (see
//! `docs/ROADMAP.md`).
#![forbid(unsafe_code)]

pub mod bundles;
pub mod egress;
