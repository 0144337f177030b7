//! Endpoints for TrustBridge's relay and sentinel: `vsock://CID:PORT` (Nitro enclaves),
//! `unix:///path` (same host, tests) and `tcp://HOST:PORT` (confidential VMs, development),
//! behind one listener and one stream type, so every component has a single code path.
//!
//! A Unix socket is created with mode 0600 (only the owner may connect), replacing a stale
//! socket file left by a previous run.
#![forbid(unsafe_code)]

mod endpoint;
pub mod http1;
mod listener;
mod stream;

pub use endpoint::{Endpoint, EndpointError};
pub use listener::Listener;
pub use stream::{Stream, connect};
