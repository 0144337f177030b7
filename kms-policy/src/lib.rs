//! The TrustBridge key-release policy and the attestation-gated key broker.
//!
//! - [`policy`]: the declarative TOML policy (assets, accepted measurement sets, contracts).
//! - [`evaluate`]: evidence and contracts against the policy, with reason codes.
//! - [`compile`]: the same policy as an AWS KMS key policy or an Azure SKR release policy.
//! - [`broker`]: `tb-kms`, the service that releases data keys to attested sentinels.
//! - [`client`]: a blocking client for the broker (sentinels, the CLI, tests).
#![forbid(unsafe_code)]

pub mod broker;
pub mod client;
pub mod compile;
pub mod evaluate;
pub mod policy;
