//! `tb-kms`: the attestation-gated key broker.
//!
//! The broker is the only party besides the provider that holds a model's data key in the
//! clear. It releases it, HPKE-sealed, only to a sentinel whose evidence verifies, binds the
//! broker's single-use nonce and the sentinel's key-release key, and matches the policy of
//! the asset under a valid contract. Every release and denial goes to the decision log.

pub mod admin_auth;
mod core;
pub mod decision_log;
pub mod kek;
mod messages;
pub mod service;
pub mod store;

pub use self::core::{ActivePolicy, Broker, BrokerError, BrokerInfo, ReleaseError};
pub use messages::{ContractRequest, RegisterAssetRequest};
