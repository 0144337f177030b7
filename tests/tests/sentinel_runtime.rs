//! The sentinel after Ready, as real processes: a revoked contract suspends it (model
//! wiped, nothing served); runtime-proxy mode hands the model to an external runtime on
//! tmpfs (configured from a TOML file) or through FIFOs, and withdraws it on shutdown; a
//! relay that mirrors the bundle from an HTTP object source first.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod deployment;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::time::{Duration, Instant};

use deployment::*;
use trustbridge_tests::{ok, run, s};

/// A temporary directory with mode 0700, as runtime output requires (tempfile follows
/// the umask).
fn private(dir: tempfile::TempDir) -> tempfile::TempDir {
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

/// The model's weights in the clear, as sealed.
fn model(d: &Deployment) -> Vec<u8> {
    d.world.spec.files[0].1.clone()
}

#[test]
fn a_revoked_contract_suspends_the_sentinel() {
    let d = Deployment::new(256 << 10);
    let _relay = d.relay(true);
    let _sentinel = d.sentinel_with(
        "c-1",
        1 << 20,
        2,
        &["--reauth-interval-secs".into(), "1".into()],
    );
    let st = d.wait_for(&["Ready", "Failed"]);
    assert_eq!(st["state"], "Ready", "{st}");
    ok(run(
        "trustbridge",
        &[
            "contract",
            "revoke",
            "--kms",
            &format!("http://127.0.0.1:{}", d.kms_port),
            "--kms-key",
            &d.kms_key,
            "--admin-key",
            &s(&d.p("admin.key")),
            "--id",
            "c-1",
        ],
    ));
    let st = d.wait_for(&["Suspended", "Failed"]);
    assert_eq!(st["state"], "Suspended", "{st}");
    assert_eq!(st["reason"], "contract_revoked", "{st}");
    assert!(st["files"].is_null(), "the model is dropped: {st}");
    assert_eq!(get_unix(&d.p("sentinel.sock"), "/health").unwrap().0, 503);
    assert_eq!(
        get_unix(&d.p("sentinel.sock"), "/readiness").unwrap().0,
        503
    );
}

#[test]
fn tmpfs_output_from_a_config_file_is_private_and_wiped_on_shutdown() {
    let d = Deployment::new(300 << 10);
    let _relay = d.relay(true);
    let out = private(tempfile::Builder::new().tempdir_in("/dev/shm").unwrap());
    let config = d.p("sentinel.toml");
    // tmpfs output is refused while swap is active (enclave::output tests that); on a
    // machine with swap, this test accepts it explicitly.
    let swap_on = std::fs::read_to_string("/proc/swaps")
        .map(|t| t.lines().count() > 1)
        .unwrap_or(true);
    std::fs::write(
        &config,
        format!(
            "contract_id = \"c-1\"\nmodel_output = \"tmpfs:{}\"\nreauth_interval_secs = 0\nallow_swap = {swap_on}\n",
            s(out.path())
        ),
    )
    .unwrap();
    // The contract id and the output come from the file only.
    let mut sentinel = d.sentinel_with("", 1 << 20, 2, &["--config".into(), s(&config)]);
    let st = d.wait_for(&["Ready", "Failed"]);
    assert_eq!(st["state"], "Ready", "{st}");
    let file = out.path().join("weights.bin");
    assert_eq!(std::fs::read(&file).unwrap(), model(&d));
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // SIGTERM: the sentinel withdraws the model before exiting.
    let pid = sentinel.0.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while sentinel.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "tb-sentinel did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!file.exists(), "the tmpfs copy is wiped on shutdown");
}

#[test]
fn a_disk_directory_is_refused_for_tmpfs_output() {
    let d = Deployment::new(64 << 10);
    let _relay = d.relay(true);
    // Cargo's target directory is on the build disk, never on tmpfs.
    let disk = private(tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap());
    let _sentinel = d.sentinel_with(
        "c-1",
        1 << 20,
        2,
        &["--model-output".into(), format!("tmpfs:{}", s(disk.path()))],
    );
    let st = d.wait_for(&["Ready", "Failed"]);
    assert_eq!(st["reason"], "model_output", "{st}");
    assert!(
        st["detail"].as_str().unwrap().contains("not on tmpfs"),
        "{st}"
    );
    assert_eq!(std::fs::read_dir(disk.path()).unwrap().count(), 0);
}

#[test]
fn fifo_output_hands_the_model_to_each_reader() {
    let d = Deployment::new(400 << 10);
    let _relay = d.relay(true);
    let fifos = d.p("fifos");
    let _sentinel = d.sentinel_with(
        "c-1",
        1 << 20,
        2,
        &["--model-output".into(), format!("fifo:{}", s(&fifos))],
    );
    let st = d.wait_for(&["Ready", "Failed"]);
    assert_eq!(st["state"], "Ready", "{st}");
    let fifo = fifos.join("weights.bin");
    let meta = std::fs::metadata(&fifo).unwrap();
    assert!(meta.file_type().is_fifo());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    for _ in 0..2 {
        assert_eq!(std::fs::read(&fifo).unwrap(), model(&d));
    }
}

#[test]
fn a_relay_mirroring_from_an_http_source_serves_the_sentinel() {
    let d = Deployment::new(1 << 20);
    // The "object store": another relay's bundle server on loopback TCP, which answers
    // ranged GETs under /bundle/ like any static HTTP server.
    let store_port = trustbridge_tests::free_port();
    let _store = spawn(
        "tb-relay",
        &[
            "--ingress".into(),
            format!("unix://{}", s(&d.p("store-ingress.sock"))),
            "--egress-listen".into(),
            format!("unix://{}", s(&d.p("store-egress.sock"))),
            "--bundle-listen".into(),
            format!("tcp://127.0.0.1:{store_port}"),
            "--bundle-dir".into(),
            s(&d.p("bundle")),
        ],
        &d.p("store.log"),
    );
    let _relay = d.relay_with(
        true,
        &[
            "--bundle-dir".into(),
            s(&d.p("mirror")),
            "--bundle-source".into(),
            format!("http://127.0.0.1:{store_port}/bundle"),
            "--download-chunk-bytes".into(),
            "300000".into(),
        ],
    );
    let _sentinel = d.sentinel("c-1", 1 << 20, 2);
    let st = d.wait_for(&["Ready", "Failed"]);
    assert_eq!(st["state"], "Ready", "{st}");
    assert_eq!(
        std::fs::read(d.p("mirror/weights.bin.sealed")).unwrap(),
        std::fs::read(d.p("bundle/weights.bin.sealed")).unwrap()
    );
    let log = std::fs::read_to_string(d.p("tb-relay.log")).unwrap();
    assert!(log.contains("bundle mirrored; serving it"), "{log}");
}
