//! `tb-kms`: the attestation-gated key broker.
//!
//! The broker is the only party besides the provider that holds a model's data key in the
//! clear. It releases it, HPKE-sealed, only to a sentinel whose evidence verifies, binds the
//! broker's single-use nonce and the sentinel's key-release key, pins this broker's
//! identity, and matches the policy of the asset under a valid contract. Every answer is
//! signed by the broker's identity key; every release and denial goes to the decision log.

mod admin;
pub mod admin_auth;
mod core;
pub mod decision_log;
pub mod kek;
mod messages;
mod release;
pub mod service;
pub mod store;

pub use self::core::{ActivePolicy, Broker, BrokerError, ReleaseError};
pub use messages::{ContractRequest, RegisterAssetRequest};
pub use trustbridge_protocol::key_release::BrokerInfo;
