//! The untrusted TrustBridge host relay (`tb-relay`): forwards client ciphertext to the
//! sentinel, serves sealed bundles, forwards allow-listed egress, and stores receipt logs.
//! It holds no keys.
//!
//! Built so far: [`egress`], the sentinel's only way out. The ingress proxy, bundle
//! serving and the `tb-relay` binary follow (see `docs/ROADMAP.md`).
#![forbid(unsafe_code)]

pub mod egress;
