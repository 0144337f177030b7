//! Running the `trustbridge` binary from integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::path::Path;
use std::process::{Command, Output};

/// Runs `trustbridge` with `args` (progress bars off).
pub(crate) fn tb<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_trustbridge"))
        .arg("--quiet")
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("cannot run trustbridge")
}

/// Asserts success and returns stdout.
pub(crate) fn ok(out: Output) -> String {
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "trustbridge failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    stdout.into_owned()
}

/// Asserts exit status 1 and returns stderr.
pub(crate) fn fails(out: Output) -> String {
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected failure:\nstdout: {stdout}\nstderr: {stderr}"
    );
    stderr.into_owned()
}

/// A path as a `&str` for argument lists.
pub(crate) fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Deterministic bytes of length `len` seeded by `seed`.
pub(crate) fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}
