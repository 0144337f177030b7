//! `tb-kms`, `tb-relay` and `tb-sentinel` as three real processes on Unix sockets and
//! loopback, with the simulated TEE: boot to Ready, a denied contract, a tampered blob, the
//! relay killed during hydrate, egress refused, and no plaintext anywhere on the relay
//! (its traffic, files, receipt log and log), model, prompt or completion.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod deployment;

use std::time::{Duration, Instant};

use deployment::*;
use trustbridge_tests::s;

#[test]
fn boots_to_ready_and_the_relay_never_sees_plaintext() {
    let (d, taps) = Deployment::new(3 << 20).tapped();
    let log = d.p("receipts.log");
    let _relay = d.relay_with(
        true,
        &[
            "--bundle-dir".into(),
            s(&d.p("bundle")),
            "--receipt-log".into(),
            s(&log),
        ],
    );
    let runtime = runtime_stand_in();
    let _sentinel = d.sentinel_with("c-1", 1 << 20, 4, &["--runtime-url".into(), runtime]);
    let st = d.wait_for(&["Ready", "Failed"]);
    assert_eq!(st["state"], "Ready", "{st}");
    assert_eq!(st["files"], 2);
    assert_eq!(st["simulated"], true);
    // Hydration's progress, complete: every plaintext byte of the model.
    let total: usize = d.world.spec.files.iter().map(|(_, b)| b.len()).sum();
    assert_eq!(st["model_bytes"], total as u64, "{st}");
    assert_eq!(st["hydrated_bytes"], st["model_bytes"], "{st}");
    // Through the relay's ingress, as a client would see it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let health = loop {
        if let Some(h) = get_tcp(d.ingress_port, "/health") {
            break h;
        }
        assert!(Instant::now() < deadline, "relay ingress not answering");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(health, (200, "Ready".to_owned()));
    let (code, status) = get_tcp(d.ingress_port, "/status").unwrap();
    assert_eq!(code, 200);
    assert!(status.contains("\"state\":\"Ready\""), "{status}");
    assert_eq!(get_tcp(d.ingress_port, "/readiness").unwrap().0, 200);
    // A client's prompt and the runtime's completion cross the relay, encapsulated.
    let prompt = format!("{}what is secret", String::from_utf8_lossy(PROMPT_MARKER));
    for _ in 0..3 {
        let (status, content) = chat_through(d.ingress_port, &prompt);
        assert_eq!(status, 200);
        assert!(
            content
                .windows(COMPLETION_MARKER.len())
                .any(|w| w == COMPLETION_MARKER),
            "the client reads the completion"
        );
    }
    let logged = std::fs::read_to_string(&log).unwrap();
    assert_eq!(logged.lines().count(), 3, "the relay logged every receipt");
    // An auditor reads the log from the relay and verifies it against the bundle.
    let (code, bundle) = get_tcp(d.ingress_port, "/.well-known/trustbridge-attestation").unwrap();
    assert_eq!(code, 200);
    std::fs::write(d.p("bundle.json"), bundle).unwrap();
    let out = trustbridge_tests::run(
        "tb-verify",
        &[
            "log",
            &format!("http://127.0.0.1:{}", d.ingress_port),
            "--attestation",
            &s(&d.p("bundle.json")),
            "--simulation-root",
            &s(&d.p("sim-ca/nitro_chain.pem")),
            "--allow-simulated",
            "--json",
        ],
    );
    let verdict: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{verdict}");
    assert_eq!(verdict["boots"][0]["count"], 3, "{verdict}");
    // Everything the relay received and sent on its links to the sentinel (ingress,
    // egress tunnel, bundle downloads), stored (the bundle it served) and logged holds
    // neither the plaintext marker, the data key, the prompt nor the completion.
    let key = d.world.key.expose_secret().to_vec();
    let mut scanned = 0;
    let traffic = taps.iter().map(|t| ("relay traffic".to_owned(), t.bytes()));
    let files = walk(&d.p("bundle"))
        .into_iter()
        .chain([d.p("tb-relay.log"), log.clone()])
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()));
    for (what, bytes) in traffic.chain(files) {
        scanned += bytes.len();
        for needle in [MARKER, &key[..], PROMPT_MARKER, COMPLETION_MARKER] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "plaintext or key in {what}"
            );
        }
    }
    let downloaded = taps[2].bytes().len();
    assert!(
        downloaded > 3 << 20,
        "the bundle crossed the tap: {downloaded}"
    );
    assert!(scanned > 6 << 20, "scanned {scanned} bytes");
}

#[test]
fn a_denied_contract_never_reaches_ready() {
    let d = Deployment::new(64 << 10);
    let _relay = d.relay(true);
    let _sentinel = d.sentinel("c-unknown", 1 << 20, 2);
    let st = d.wait_for(&["Ready", "Failed"]);
    assert_eq!(st["state"], "Failed");
    assert_eq!(st["reason"], "unknown_contract", "{st}");
    assert_eq!(get_unix(&d.p("sentinel.sock"), "/health").unwrap().0, 503);
    assert_eq!(
        get_unix(&d.p("sentinel.sock"), "/readiness").unwrap().0,
        503
    );
}

#[test]
fn a_tampered_blob_fails_and_nothing_is_served() {
    let d = Deployment::new(2 << 20);
    let file = d.p("bundle/weights.bin.sealed");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[1_500_000] ^= 1;
    std::fs::write(&file, bytes).unwrap();
    let _relay = d.relay(true);
    let _sentinel = d.sentinel("c-1", 1 << 20, 2);
    let st = d.wait_for(&["Ready", "Failed"]);
    assert_eq!(st["state"], "Failed");
    assert_eq!(st["reason"], "tampered_bundle", "{st}");
    assert!(st["files"].is_null(), "no model is held");
    assert_eq!(get_unix(&d.p("sentinel.sock"), "/health").unwrap().0, 503);
}

#[test]
fn egress_to_a_destination_off_the_allow_list_is_refused_and_logged() {
    let d = Deployment::new(64 << 10);
    let _relay = d.relay(false);
    let _sentinel = d.sentinel("c-1", 1 << 20, 2);
    let st = d.wait_for(&["Ready", "Failed"]);
    assert_eq!(st["state"], "Failed");
    assert_eq!(st["reason"], "egress_refused", "{st}");
    let log = std::fs::read_to_string(d.p("tb-relay.log")).unwrap();
    assert!(
        log.contains("egress refused: destination not on the allow-list")
            && log.contains(&format!("127.0.0.1:{}", d.kms_port)),
        "{log}"
    );
}

#[test]
fn the_relay_killed_during_hydrate_is_survived() {
    // 768 chunks of 64 KiB, one at a time; a gate on the bundle link holds the download
    // from its 40th connection, so the relay dies with the download surely unfinished.
    let (d, gate) = Deployment::new(48 << 20).gated_bundles(40);
    let mut relay = d.relay(true);
    let _sentinel = d.sentinel("c-1", 64 << 10, 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    while gate.held() == 0 {
        assert!(
            Instant::now() < deadline,
            "the download never reached the gate: {:?}",
            d.status()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let st = d.status().unwrap();
    assert_eq!(st["state"], "Hydrate", "held mid-download: {st}");
    relay.0.kill().unwrap();
    relay.0.wait().unwrap();
    // The held request now meets the dead relay; the sentinel waits and retries.
    gate.open();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        d.status().unwrap()["state"],
        "Hydrate",
        "still hydrating, waiting for the relay"
    );
    let _relay = d.relay(true);
    let st = d.wait_for(&["Ready", "Failed"]);
    assert_eq!(st["state"], "Ready", "{st}");
    let log = std::fs::read_to_string(d.p("tb-sentinel.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("transient failure; retrying")
                && l.contains("/bundle/weights.bin.sealed")),
        "the sentinel retried the download:\n{log}"
    );
}

/// The relay answers the sentinel's `CONNECT` with a broker of its own: a real `tb-kms`
/// with its own key, its own registered bundle (signed by its own provider) and its own
/// relay serving that bundle. Everything behind the egress is the attacker's; only the
/// sentinel's pinned broker key is not. The sentinel fails `broker_unauthenticated` and
/// never holds a model; pinned to the genuine broker's own deployment, it goes Ready.
#[test]
fn a_broker_the_relay_runs_itself_is_refused_and_the_pinned_one_serves() {
    let genuine = Deployment::new(64 << 10);
    let attacker = Deployment::new(64 << 10);
    assert_ne!(genuine.kms_key, attacker.kms_key);
    let _relay = attacker.relay(true);
    let _sentinel = attacker.sentinel_with(
        "c-1",
        1 << 20,
        2,
        &["--kms-key".into(), genuine.kms_key.clone()],
    );
    let st = attacker.wait_for(&["Ready", "Failed"]);
    assert_eq!(st["state"], "Failed", "{st}");
    assert_eq!(st["reason"], "broker_unauthenticated", "{st}");
    assert!(st["files"].is_null(), "no model is held: {st}");
    assert_eq!(
        get_unix(&attacker.p("sentinel.sock"), "/health").unwrap().0,
        503
    );

    let _relay = genuine.relay(true);
    let _sentinel = genuine.sentinel("c-1", 1 << 20, 2);
    let st = genuine.wait_for(&["Ready", "Failed"]);
    assert_eq!(st["state"], "Ready", "{st}");
}

/// Without a pinned broker key the sentinel refuses to start, naming the setting, before
/// it looks for a TEE (here `--tee nitro` on a machine without one).
#[test]
fn a_sentinel_without_a_pinned_broker_key_refuses_to_start() {
    let out = std::process::Command::new(trustbridge_tests::binary("tb-sentinel"))
        .args([
            "--kms-url",
            "http://127.0.0.1:1",
            "--asset-id",
            ASSET,
            "--contract-id",
            "c-1",
            "--tee",
            "nitro",
        ])
        .env_remove("TB_KMS_KEY")
        .env_remove("TB_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--kms-key is required") && stderr.contains("TB_KMS_KEY"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("nsm") && !stderr.contains("no TEE"),
        "no TEE was probed: {stderr}"
    );
}

#[test]
fn the_built_in_engine_refuses_to_hand_the_model_to_files() {
    // The built-in engine serves from memory: tmpfs or FIFO output would put plaintext
    // where nothing reads it.
    for output in ["tmpfs:/dev/shm/tb-model", "fifo:/run/tb-model"] {
        let out = std::process::Command::new(trustbridge_tests::binary("tb-sentinel"))
            .args([
                "--kms-key",
                &"11".repeat(32),
                "--kms-url",
                "http://127.0.0.1:1",
            ])
            .args(["--asset-id", "a/b@v1", "--contract-id", "c"])
            .args(["--engine", "builtin", "--model-output", output])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{output}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--engine builtin") && err.contains("--engine runtime"),
            "{err}"
        );
    }
}
