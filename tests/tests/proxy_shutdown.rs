//! `trustbridge proxy` stops cleanly: a signal while its first verification waits on the
//! relay stops it at once (status 0), and at SIGTERM a request still in flight after
//! `--drain-secs` is cut, with an error status that says so.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::io::Write;
use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use trustbridge_tests::{Daemon, binary, free_port, s};

/// A stand-in relay that answers 503 on every connection while `hold` is false, and holds
/// later ones open without answering, reporting each it holds.
fn silent_relay(hold: bool) -> (u16, Arc<AtomicBool>, mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = Arc::new(AtomicBool::new(hold));
    let (held, rx) = mpsc::channel();
    let holding = hold.clone();
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            if holding.load(Ordering::SeqCst) {
                kept.push(stream);
                let _ = held.send(());
            } else {
                let _ = stream.write_all(
                    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
        }
    });
    (port, hold, rx)
}

/// A client policy that nothing here could satisfy (the relay never answers anyway).
const POLICY: &str = r#"
broker_key = "0101010101010101010101010101010101010101010101010101010101010101"
[[nitro]]
pcr0 = "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
pcr1 = "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
pcr2 = "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
"#;

/// `trustbridge proxy` in front of the stand-in relay on `relay`, serving on `listen`.
fn proxy(relay: u16, listen: u16, extra: &[&str]) -> (Daemon, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("client.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let mut command = Command::new(binary("trustbridge"));
    command
        .args([
            "proxy",
            "--relay",
            &format!("http://127.0.0.1:{relay}"),
            "--policy",
            &s(&policy),
            "--listen",
            &format!("127.0.0.1:{listen}"),
        ])
        .args(extra);
    (Daemon::spawn("trustbridge proxy", command), dir)
}

#[test]
fn a_signal_during_the_first_verification_stops_the_proxy_at_once() {
    let (relay, _hold, held) = silent_relay(true);
    let (mut proxy, _dir) = proxy(relay, free_port(), &["--timeout-secs", "120"]);
    // The proxy is fetching the attestation bundle, which never comes.
    held.recv_timeout(Duration::from_secs(20)).unwrap();
    proxy.terminate();
    let (status, stderr) = proxy.exit_within(Duration::from_secs(10));
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("stopped before serving"), "{stderr}");
}

#[test]
fn a_request_still_in_flight_after_the_drain_time_is_cut() {
    // The first verification fails at once (503), so the proxy serves; the request's own
    // verification then waits on the relay.
    let (relay, hold, held) = silent_relay(false);
    let listen = free_port();
    let (mut proxy, _dir) = proxy(
        relay,
        listen,
        &["--timeout-secs", "120", "--drain-secs", "1"],
    );
    proxy.wait_for("trustbridge proxy on http://");
    hold.store(true, Ordering::SeqCst);
    std::thread::spawn(move || {
        let _ = ureq::post(&format!("http://127.0.0.1:{listen}/v1/chat/completions"))
            .content_type("application/json")
            .send(r#"{"model":"m","messages":[]}"#);
    });
    held.recv_timeout(Duration::from_secs(20)).unwrap();
    let signalled = Instant::now();
    proxy.terminate();
    let (status, stderr) = proxy.exit_within(Duration::from_secs(10));
    assert!(signalled.elapsed() >= Duration::from_secs(1), "{stderr}");
    assert!(!status.success(), "{status}: {stderr}");
    assert!(
        stderr.contains("requests still in flight after the drain time (1s)"),
        "{stderr}"
    );
}
