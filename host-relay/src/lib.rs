//! The untrusted TrustBridge host relay (`tb-relay`): forwards client ciphertext to the
//! sentinel, serves sealed bundles, forwards allow-listed egress, and stores receipt logs.
//! It holds no keys.
//!
//! - [`ingress`]: clients' requests forwarded to the sentinel.
//! - [`egress`]: the sentinel's only way out, to allow-listed destinations.
//! - [`bundles`]: sealed-bundle serving with range requests, file to socket by
//!   `sendfile(2)`.
#![forbid(unsafe_code)]

pub mod bundles;
pub mod egress;
pub mod ingress;
