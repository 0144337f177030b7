//! The untrusted TrustBridge host relay (`tb-relay`): forwards client ciphertext to the
//! sentinel, serves sealed bundles, forwards allow-listed egress, and stores receipt logs.
//! It holds no keys.
//!
//! - [`ingress`]: clients' requests forwarded to the sentinel.
//! - [`egress`]: the sentinel's only way out, to allow-listed destinations.
//! - [`bundles`]: sealed-bundle serving with range requests, file to socket by
//!   `sendfile(2)`.
//! - [`source`] and [`mirror`]: bundles in S3, Azure Blob or behind HTTP(S), mirrored into
//!   the bundle directory by parallel ranged downloads that resume after a restart.
//! - [`receipt_log`]: the public receipt log (append-only, fsync'd).
#![forbid(unsafe_code)]

pub mod bundles;
pub mod egress;
pub mod ingress;
pub mod mirror;
pub mod receipt_log;
mod sentinel_link;
pub mod source;
