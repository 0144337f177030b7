//! tb-relay stops cleanly: at SIGTERM it refuses new requests and lets the one in flight
//! finish before it exits (status 0), and still logs the receipt of a streamed answer whose
//! client left; a second signal, or the end of `--drain-secs`, stops it without waiting,
//! with an error status that says answers were cut.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use trustbridge_tests::{Daemon, binary, free_port, s};

/// A stand-in sentinel on TCP that answers each request `delay` after reading it, and
/// reports each request it reads.
fn slow_sentinel(delay: Duration) -> (u16, mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (arrived, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let arrived = arrived.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                // The head ends with an empty line; the test's requests have no body.
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if line == "\r\n" {
                        let _ = arrived.send(());
                        std::thread::sleep(delay);
                        let _ = reader.get_mut().write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\ndone",
                        );
                        return;
                    }
                    line.clear();
                }
            });
        }
    });
    (port, rx)
}

/// A stand-in sentinel on TCP that streams one answer (chunked, its receipt for the log
/// announced as a trailer): a first chunk at once, the rest and the trailer carrying
/// `receipt` (base64url) `delay` later. Reports when the first chunk went out.
fn streaming_sentinel(delay: Duration, receipt: &'static str) -> (u16, mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (first_sent, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
            line.clear();
        }
        let stream = reader.get_mut();
        let _ = stream.write_all(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: trustbridge-receipt-log\r\n\r\n5\r\nfirst\r\n",
        );
        let _ = first_sent.send(());
        std::thread::sleep(delay);
        let _ = stream.write_all(
            format!("4\r\nrest\r\n0\r\ntrustbridge-receipt-log: {receipt}\r\n\r\n").as_bytes(),
        );
        std::thread::sleep(Duration::from_secs(5));
    });
    (port, rx)
}

struct Relay {
    daemon: Daemon,
    ingress: u16,
    /// Its `--receipt-log`.
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Relay {
    fn start(sentinel: u16, drain_secs: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ingress = free_port();
        let log = dir.path().join("receipts.log");
        let mut command = Command::new(binary("tb-relay"));
        command.args([
            "--ingress",
            &format!("tcp://127.0.0.1:{ingress}"),
            "--sentinel",
            &format!("tcp://127.0.0.1:{sentinel}"),
            "--egress-listen",
            &format!("unix://{}", s(&dir.path().join("egress.sock"))),
            "--bundle-listen",
            &format!("unix://{}", s(&dir.path().join("bundles.sock"))),
            "--bundle-dir",
            &s(dir.path()),
            "--drain-secs",
            &drain_secs.to_string(),
            "--receipt-log",
            &s(&log),
        ]);
        let daemon = Daemon::spawn("tb-relay", command);
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", ingress)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "tb-relay did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            daemon,
            ingress,
            log,
            _dir: dir,
        }
    }

    /// A request through the ingress, answered on another thread.
    fn request(&self) -> std::thread::JoinHandle<Result<String, String>> {
        let url = format!("http://127.0.0.1:{}/slow", self.ingress);
        std::thread::spawn(move || {
            ureq::get(&url)
                .call()
                .map_err(|e| e.to_string())?
                .body_mut()
                .read_to_string()
                .map_err(|e| e.to_string())
        })
    }
}

/// A relay with `--drain-secs drain` and one request in flight at a sentinel that answers
/// after `answer`.
fn in_flight(
    answer: Duration,
    drain: u64,
) -> (Relay, std::thread::JoinHandle<Result<String, String>>) {
    let (sentinel, arrived) = slow_sentinel(answer);
    let relay = Relay::start(sentinel, drain);
    let request = relay.request();
    arrived.recv_timeout(Duration::from_secs(10)).unwrap();
    (relay, request)
}

#[test]
fn at_sigterm_the_request_in_flight_finishes_and_the_relay_exits() {
    let (mut relay, answer) = in_flight(Duration::from_millis(1500), 30);
    relay.daemon.terminate();
    assert_eq!(answer.join().unwrap().unwrap(), "done");
    let (status, stderr) = relay.daemon.exit_within(Duration::from_secs(10));
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("tb-relay stopped"), "{stderr}");
    assert!(TcpStream::connect(("127.0.0.1", relay.ingress)).is_err());
}

#[test]
fn a_second_signal_stops_the_relay_without_waiting() {
    let (mut relay, _answer) = in_flight(Duration::from_secs(120), 300);
    relay.daemon.terminate();
    // Draining: still there while the request is in flight.
    relay.daemon.wait_for("stopping: new requests refused");
    assert!(relay.daemon.running(), "did not drain");
    relay.daemon.terminate();
    let (status, stderr) = relay.daemon.exit_within(Duration::from_secs(10));
    // Answers were cut: not a clean exit.
    assert!(!status.success(), "{status}: {stderr}");
    assert!(
        stderr.contains("stopped at a second signal with requests still in flight"),
        "{stderr}"
    );
}

#[test]
fn the_drain_time_bounds_the_wait() {
    let (mut relay, _answer) = in_flight(Duration::from_secs(120), 1);
    let signalled = Instant::now();
    relay.daemon.terminate();
    let (status, stderr) = relay.daemon.exit_within(Duration::from_secs(10));
    assert!(signalled.elapsed() >= Duration::from_secs(1), "{stderr}");
    assert!(!status.success(), "{status}: {stderr}");
    assert!(
        stderr.contains("requests still in flight after the drain time (1s)"),
        "{stderr}"
    );
}

#[test]
fn a_streamed_answer_whose_client_left_still_logs_its_receipt_at_sigterm() {
    let (sentinel, first_sent) = streaming_sentinel(Duration::from_millis(200), "cmVjZWlwdA");
    let mut relay = Relay::start(sentinel, 30);
    // A client reads the first chunk of a streamed answer and leaves.
    let mut client = TcpStream::connect(("127.0.0.1", relay.ingress)).unwrap();
    client
        .write_all(
            b"POST /.well-known/ohttp-gateway HTTP/1.1\r\nhost: relay\r\ncontent-length: 0\r\n\r\n",
        )
        .unwrap();
    first_sent.recv_timeout(Duration::from_secs(10)).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&seen).contains("first") {
        let n = std::io::Read::read(&mut client, &mut buf).unwrap();
        assert!(n > 0, "the relay closed before the first chunk");
        seen.extend_from_slice(&buf[..n]);
    }
    drop(client);
    // The relay stops with nothing in flight on its side, but it is still reading the rest
    // of that answer for the receipt in its trailer: it logs it before it exits.
    relay.daemon.terminate();
    let (status, stderr) = relay.daemon.exit_within(Duration::from_secs(10));
    assert!(status.success(), "{status}: {stderr}");
    let log = std::fs::read_to_string(&relay.log).unwrap();
    assert_eq!(log, "{\"seq\":0,\"receipt\":\"cmVjZWlwdA\"}\n", "{stderr}");
}
