//! The daemons share one logging and stop set-up: a `RUST_LOG` that does not parse stops
//! each of them at start with an error that names it, instead of logging at some other
//! level; a time option of zero seconds (a drain, a request's time, the attestation's
//! age) or a count of zero (workers, concurrent requests or downloads, a chunk's bytes) is
//! a usage error that names the option, instead of a value quietly raised.
#![allow(clippy::unwrap_used)] // test code

use std::process::{Command, Stdio};
use std::time::Duration;

use trustbridge_tests::{Daemon, binary};

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

#[test]
fn a_time_or_count_option_of_zero_is_a_usage_error_in_every_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sentinel.toml");
    std::fs::write(&config, "drain_secs = 0\n").unwrap();
    let bundles = dir.path().to_str().unwrap();
    let relay: &[&str] = &["--bundle-dir", bundles];
    let sentinel: &[&str] = &[];
    let proxy: &[&str] = &[
        "proxy",
        "--relay",
        "http://127.0.0.1:1",
        "--policy",
        "p.toml",
    ];
    let runtime: &[&str] = &["runtime", "--model-dir", bundles];
    let zeros = [
        ("tb-relay", relay, "--drain-secs"),
        ("tb-relay", relay, "--request-timeout-secs"),
        ("tb-relay", relay, "--max-concurrent-requests"),
        ("tb-relay", relay, "--download-concurrency"),
        ("tb-relay", relay, "--download-chunk-bytes"),
        ("tb-sentinel", sentinel, "--drain-secs"),
        ("tb-sentinel", sentinel, "--request-timeout-secs"),
        ("tb-sentinel", sentinel, "--attestation-max-age-secs"),
        ("tb-sentinel", sentinel, "--engine-workers"),
        ("tb-sentinel", sentinel, "--max-concurrent-requests"),
        ("tb-sentinel", sentinel, "--download-chunk-bytes"),
        ("trustbridge", proxy, "--drain-secs"),
        ("trustbridge", proxy, "--timeout-secs"),
        ("trustbridge", runtime, "--drain-secs"),
        ("trustbridge", runtime, "--workers"),
    ];
    let mut cases: Vec<(&str, Vec<&str>, &str)> = zeros
        .iter()
        .map(|&(bin, before, option)| (bin, [before, &[option, "0"]].concat(), option))
        .collect();
    cases.push((
        "tb-sentinel",
        vec!["--config", config.to_str().unwrap()],
        "drain_secs",
    ));
    for (bin, args, option) in cases {
        let mut command = Command::new(binary(bin));
        command.args(&args).stdout(Stdio::null());
        // A daemon that took the zero would start serving: the wait fails the test.
        let (status, stderr) = Daemon::spawn(bin, command).exit_within(Duration::from_secs(30));
        assert_eq!(status.code(), Some(2), "{bin} {args:?}: {stderr}");
        assert!(stderr.contains(option), "{bin} {args:?}: {stderr}");
        assert!(
            stderr.contains("zero") || stderr.contains("nonzero"),
            "{bin} {args:?}: {stderr}"
        );
    }
}
