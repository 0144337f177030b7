//! Test helpers shared by TrustBridge crates.
//!
//! The public test vectors (real attestation evidence, RFC and Wycheproof vectors) live in
//! `../shared/vectors` relative to the workspace root and are read in place, never copied
//! into the repository. [`vectors_dir`] finds them. When the folder is missing a test prints
//! a loud skip, unless `TB_REQUIRE_VECTORS=1`, in which case the test fails: CI sets it so
//! that a missing folder can never turn the suite silently green.
//!
//! The vector helpers exist only for tests; they panic on purpose, because a panic is how a
//! test helper fails a test. [`world`] builds the end-to-end setting (provider, sealed
//! bundle, simulated TEE, key broker) for tests, benchmarks and `trustbridge demo`, and
//! returns errors instead. [`enclave_image`] makes stand-ins for an enclave image's inputs.
#![forbid(unsafe_code)]
#![allow(clippy::panic)]

pub mod enclave_image;
pub mod world;

use std::path::{Path, PathBuf};

/// Environment variable that turns a missing vector folder into a test failure.
pub const REQUIRE_VECTORS_ENV: &str = "TB_REQUIRE_VECTORS";

/// Environment variable that points at another vector folder than `../shared/vectors`.
pub const VECTORS_DIR_ENV: &str = "TB_VECTORS_DIR";

/// The workspace root (the folder holding the root `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    // testkit/ is a direct child of the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Whether the environment variable `name` is set to a true value (`1`, `true`, `yes`).
pub fn env_flag(name: &str) -> bool {
    std::env::var(name)
        .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
        .unwrap_or(false)
}

/// The shared vector folder, or `None` (after a loud skip message naming `test`) when it
/// is missing and not required.
///
/// # Panics
/// When the folder is missing and `TB_REQUIRE_VECTORS=1`.
pub fn vectors_dir(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os(VECTORS_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/vectors"));
    if dir.is_dir() {
        return Some(dir);
    }
    if env_flag(REQUIRE_VECTORS_ENV) {
        panic!(
            "{test}: test vectors not found at {} and {REQUIRE_VECTORS_ENV}=1",
            dir.display()
        );
    }
    eprintln!(
        "\n!!!!!!!! SKIPPED {test}: test vectors not found at {} !!!!!!!!\n\
         !!!!!!!! (set {REQUIRE_VECTORS_ENV}=1 to make this a failure)  !!!!!!!!\n",
        dir.display()
    );
    None
}

/// Environment variable that turns missing models into a test failure.
pub const REQUIRE_MODELS_ENV: &str = "TB_REQUIRE_MODELS";

/// Environment variable naming the model folder (default `.trustbridge/models` in the
/// workspace, where `scripts/fetch-models` puts them).
pub const MODELS_DIR_ENV: &str = "TB_MODELS_DIR";

/// The folder of the engine's models (`smollm2/`, `minilm/`, from `scripts/fetch-models`),
/// or `None` (after a loud skip message naming `test`) when `needed` is not in it and
/// models are not required.
///
/// # Panics
/// When the model is missing and `TB_REQUIRE_MODELS=1`.
pub fn models_dir(test: &str, needed: &str) -> Option<PathBuf> {
    let dir = std::env::var_os(MODELS_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".trustbridge/models"));
    if dir.join(needed).is_file() {
        return Some(dir);
    }
    if env_flag(REQUIRE_MODELS_ENV) {
        panic!(
            "{test}: {needed} not found in {} and {REQUIRE_MODELS_ENV}=1 (run scripts/fetch-models)",
            dir.display()
        );
    }
    eprintln!(
        "\n!!!!!!!! SKIPPED {test}: {needed} not found in {} !!!!!!!!\n\
         !!!!!!!! (run scripts/fetch-models; {REQUIRE_MODELS_ENV}=1 makes this a failure) !!!!!!!!\n",
        dir.display()
    );
    None
}

/// Reads `relative` below the vector folder; `None` when the folder is missing (see
/// [`vectors_dir`]).
///
/// # Panics
/// When the folder exists but the file cannot be read: that is a broken vector set.
pub fn read_vector(test: &str, relative: &str) -> Option<Vec<u8>> {
    let path = vectors_dir(test)?.join(relative);
    match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(e) => panic!("{test}: cannot read vector {}: {e}", path.display()),
    }
}

/// Decodes a hex string from a vector file.
///
/// # Panics
/// On invalid hex: that is a broken vector file.
pub fn hex_decode(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_else(|e| panic!("bad hex in vector ({e}): {s}"))
}
