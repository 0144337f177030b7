//! End-to-end tests that run TrustBridge's binaries as real processes (broker, relay,
//! sentinel, CLI). The tests live in `tests/tests/`; this library finds the binaries.
#![forbid(unsafe_code)]
#![allow(clippy::panic)] // test support: a missing binary fails the test

use std::path::PathBuf;

/// The path of workspace binary `name` (built by `cargo test --workspace`, or
/// `cargo build --workspace`), next to the running test executable.
///
/// # Panics
/// When the binary has not been built.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .map(PathBuf::from)
        .unwrap_or_default();
    let path = dir.join(name);
    if !path.is_file() {
        panic!(
            "{} not found: run `cargo build --workspace` (or `cargo test --workspace`) first",
            path.display()
        );
    }
    path
}
