//! End-to-end tests that run TrustBridge's binaries as real processes (broker, relay,
//! sentinel, CLI). The tests live in `tests/tests/`; this library finds the binaries.
#![forbid(unsafe_code)]
#![allow(clippy::panic, clippy::unwrap_used)] // test support: failures fail the test

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

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

/// A child process killed (and reaped) on drop.
#[derive(Debug)]
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs workspace binary `bin` with `args` to completion (RUST_LOG cleared).
pub fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(binary(bin))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// Asserts success and returns stdout.
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A path as an owned string, for argument lists.
pub fn s(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
