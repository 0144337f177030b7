//! The daemons share one logging set-up: a `RUST_LOG` that does not parse stops each of
//! them at start with an error that names it, instead of logging at some other level.
#![allow(clippy::unwrap_used)] // test code

use std::process::Command;

use trustbridge_tests::binary;

#[test]
fn an_invalid_log_filter_stops_every_daemon_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kms.db");
    let daemons: [(&str, Vec<&str>); 3] = [
        ("tb-kms", vec!["serve", "--db", db.to_str().unwrap()]),
        (
            "tb-relay",
            vec!["--bundle-dir", dir.path().to_str().unwrap()],
        ),
        ("tb-sentinel", vec![]),
    ];
    for (bin, args) in daemons {
        let out = Command::new(binary(bin))
            .args(&args)
            .env("RUST_LOG", "info,=[")
            .env_remove("TB_LOG_FORMAT")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bin}: {stderr}");
        assert!(
            stderr.contains(r#"RUST_LOG="info,=[" is not a valid log filter"#),
            "{bin}: {stderr}"
        );
        assert!(!db.exists(), "{bin} did work before failing");
    }
}
