//! The TrustBridge client engine: talk to an attested sentinel through an untrusted relay
//! and accept only answers that verify.
//!
//! - [`session`] (I/O-free): a sentinel whose attestation bundle the client policy
//!   accepted; requests sealed (Oblivious HTTP, RFC 9458, Binary HTTP inside) to the key
//!   configuration its evidence binds; answers opened and released only with a receipt
//!   that verifies against that evidence, the exact request and response, a fresh nonce
//!   and the sentinel's hash chain.
//! - requests' HPKE contexts are set up ahead, off the request's path, on a thread of the
//!   client's own (`ClientConfig::prepared`; [`session::Prepared`]).
//! - [`engine`]: the same with HTTP to the relay, bundle refresh when the sentinel's
//!   evidence changes, and a status report. `trustbridge proxy` serves an OpenAI-compatible
//!   API on it; a Rust program can use [`Client`] directly:
//!
//! ```no_run
//! # async fn demo(policy: trustbridge_verifier::client_policy::ClientPolicy) -> Result<(), Box<dyn std::error::Error>> {
//! use trustbridge_client::{Client, ClientConfig, Request};
//! let client = Client::new(ClientConfig::new("http://relay.example:8443", policy))?;
//! let answer = client
//!     .send(&Request {
//!         method: "POST".into(),
//!         path: "/v1/chat/completions".into(),
//!         headers: vec![("content-type".into(), b"application/json".to_vec())],
//!         body: br#"{"messages":[{"role":"user","content":"hi"}]}"#.to_vec(),
//!     })
//!     .await?;
//! println!("{} {}", answer.status, answer.receipt.claims().sequence);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod engine;
#[cfg(feature = "proxy")]
pub mod openai_proxy;
mod prepared;
pub mod session;
pub mod stream;

pub use engine::{Client, ClientConfig, ClientError};
pub use session::{Request, Session, VerificationError, VerifiedAnswer};
pub use trustbridge_verifier::client_policy::ClientPolicy;
