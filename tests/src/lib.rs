//! End-to-end tests that run TrustBridge's binaries as real processes (broker, relay,
//! sentinel, CLI). The tests live in `tests/tests/`; this library is empty on purpose.
#![forbid(unsafe_code)]
