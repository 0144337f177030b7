//! `trustbridge demo` as a user runs it: everything starts, `--ready-file` appears once the
//! proxy answers, a request through the proxy is verified, and SIGINT (Ctrl-C) stops the
//! broker, relay, sentinel and proxy and exits 0.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use trustbridge_tests::{binary, s};

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

#[test]
fn the_demo_runs_end_to_end_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready.json");
    let work = dir.path().join("work");
    let log = dir.path().join("demo.out");
    let mut child = Command::new(binary("trustbridge"))
        .args([
            "--quiet",
            "demo",
            "--size-mib",
            "2",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--ready-file", &s(&ready), "--workdir", &s(&work)])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ready.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the demo exited ({status}):\n{}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        assert!(Instant::now() < deadline, "no ready file");
        std::thread::sleep(Duration::from_millis(100));
    }
    let urls: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ready).unwrap()).unwrap();
    let proxy = urls["proxy_url"].as_str().unwrap().to_owned();
    let relay = urls["relay_url"].as_str().unwrap().to_owned();

    let mut resp = agent()
        .post(&format!("{proxy}/v1/chat/completions"))
        .header("content-type", "application/json")
        .send(r#"{"model": "demo-echo", "messages": [{"role": "user", "content": "ping"}]}"#)
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers().get("trustbridge-verified").unwrap(), "true");
    let body = resp.body_mut().read_to_string().unwrap();
    assert!(
        body.contains("Echo from inside the sentinel: ping"),
        "{body}"
    );
    let mut bundle = agent()
        .get(urls["attestation_url"].as_str().unwrap())
        .call()
        .unwrap();
    assert_eq!(bundle.status().as_u16(), 200);
    assert!(
        bundle
            .body_mut()
            .read_to_string()
            .unwrap()
            .contains("\"receipt_key\"")
    );
    let out = std::fs::read_to_string(&log).unwrap();
    for line in [
        "sentinel Ready",
        "first answer",
        "its receipt verified",
        "curl -i",
        "openai",
    ] {
        assert!(out.contains(line), "no {line:?} in:\n{out}");
    }

    // Ctrl-C: every process stops, the demo exits 0.
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the demo did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "{status}: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert!(std::fs::read_to_string(&log).unwrap().contains("stopped"));
    for url in [&proxy, &relay] {
        assert!(
            agent().get(&format!("{url}/health")).call().is_err(),
            "{url} still answers"
        );
    }
    // The sentinel's socket no longer answers either.
    assert!(std::os::unix::net::UnixStream::connect(work.join("sentinel.sock")).is_err());
    // The relay kept its receipt log: one receipt, the first answer's... and ours.
    let logged = std::fs::read_to_string(work.join("receipts.log")).unwrap();
    assert_eq!(logged.lines().count(), 2, "{logged}");
}
