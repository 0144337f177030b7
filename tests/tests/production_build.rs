//! A production sentinel has no simulated TEE: built without dev-dependencies (as a
//! release or an EIF is), the sentinel's dependency graph holds no evidence generator.
//! (Its `--tee simulated` answer is unit-tested in tb-sentinel.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::process::Command;

/// `cargo tree` of the sentinel's normal dependencies, features included.
fn production_graph(extra: &[&str]) -> String {
    let root = trustbridge_testkit::workspace_root();
    let out = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args([
            "tree",
            "-p",
            "trustbridge-enclave",
            "-e",
            "normal,features",
            "--locked",
            "--offline",
            "-i",
            "trustbridge-verifier",
        ])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo tree: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_production_sentinel_has_no_evidence_generator() {
    let production = production_graph(&[]);
    assert!(
        production.contains("trustbridge-verifier"),
        "the graph was read: {production}"
    );
    assert!(
        !production.contains("feature \"simulate\""),
        "the simulator is in a production sentinel:\n{production}"
    );
    // The check can fail: with the development feature, the generator is there.
    let development = production_graph(&["--features", "simulated-tee"]);
    assert!(
        development.contains("feature \"simulate\""),
        "{development}"
    );
}
