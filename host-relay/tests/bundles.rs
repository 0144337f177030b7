#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
//! The bundle server over real sockets: ranges, HEAD, keep-alive and pipelining, and
//! everything it must refuse.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trustbridge_relay::bundles::BundleServer;
use trustbridge_transport::{Endpoint, Listener};

struct Served {
    _dir: tempfile::TempDir,
    endpoint: Endpoint,
    server: Arc<BundleServer>,
    data: Vec<u8>,
}

async fn serve(endpoint: Endpoint) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("bundle");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::create_dir_all(root.join("w")).unwrap();
    std::fs::write(root.join("w/model bin.sealed"), &data).unwrap();
    // Files beside the bundle directory that no request may reach.
    std::fs::write(dir.path().join("outside.txt"), b"secret").unwrap();
    std::os::unix::fs::symlink(dir.path().join("outside.txt"), root.join("escape")).unwrap();
    let listener = Listener::bind(&endpoint).await.unwrap();
    let endpoint = listener.local_endpoint().unwrap();
    let server = BundleServer::new(&root).unwrap();
    tokio::spawn(server.clone().serve(listener));
    Served {
        _dir: dir,
        endpoint,
        server,
        data,
    }
}

/// Sends `request` raw and reads until the server closes.
async fn exchange(endpoint: &Endpoint, request: &str) -> Vec<u8> {
    let mut s = trustbridge_transport::connect(endpoint).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    out
}

fn split(response: &[u8]) -> (String, &[u8]) {
    let end = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    (
        String::from_utf8(response[..end].to_vec()).unwrap(),
        &response[end..],
    )
}

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: relay\r\n{extra}Connection: close\r\n\r\n")
}

async fn ranges_and_whole_files(endpoint: Endpoint) {
    let s = serve(endpoint).await;
    let path = "/bundle/w/model%20bin.sealed";
    let r = exchange(&s.endpoint, &get(path, "")).await;
    let (head, body) = split(&r);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Length: 300000\r\n"), "{head}");
    assert!(head.contains("Accept-Ranges: bytes\r\n"));
    assert_eq!(body, s.data);

    let r = exchange(&s.endpoint, &get(path, "Range: bytes=100000-199999\r\n")).await;
    let (head, body) = split(&r);
    assert!(head.starts_with("HTTP/1.1 206 "), "{head}");
    assert!(
        head.contains("Content-Range: bytes 100000-199999/300000\r\n"),
        "{head}"
    );
    assert_eq!(body, &s.data[100_000..200_000]);

    let r = exchange(&s.endpoint, &get(path, "Range: bytes=-10\r\n")).await;
    assert_eq!(split(&r).1, &s.data[299_990..]);

    let r = exchange(&s.endpoint, &get(path, "Range: bytes=300000-\r\n")).await;
    let (head, _) = split(&r);
    assert!(head.starts_with("HTTP/1.1 416 "), "{head}");
    assert!(head.contains("Content-Range: bytes */300000\r\n"), "{head}");

    let r = exchange(
        &s.endpoint,
        &format!("HEAD {path} HTTP/1.1\r\nConnection: close\r\n\r\n"),
    )
    .await;
    let (head, body) = split(&r);
    assert!(head.contains("Content-Length: 300000\r\n") && body.is_empty());
    assert_eq!(s.server.bytes_sent(), 300_000 + 100_000 + 10);
}

#[tokio::test]
async fn ranges_and_whole_files_over_unix() {
    let dir = tempfile::tempdir().unwrap();
    ranges_and_whole_files(Endpoint::Unix(dir.path().join("b.sock"))).await;
}

#[tokio::test]
async fn ranges_and_whole_files_over_tcp() {
    ranges_and_whole_files("tcp://127.0.0.1:0".parse().unwrap()).await;
}

#[tokio::test]
async fn refusals() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(Endpoint::Unix(dir.path().join("b.sock"))).await;
    let status = |r: Vec<u8>| String::from_utf8_lossy(&r[..12]).into_owned();
    for (request, expected) in [
        (get("/bundle/missing", ""), "HTTP/1.1 404"),
        (get("/bundle/../outside.txt", ""), "HTTP/1.1 404"),
        (
            get("/bundle/w/%2e%2e/%2e%2e/outside.txt", ""),
            "HTTP/1.1 404",
        ),
        (get("/bundle/escape", ""), "HTTP/1.1 404"),
        (get("/bundle/w", ""), "HTTP/1.1 404"),
        (get("/health", ""), "HTTP/1.1 404"),
        (
            "DELETE /bundle/w/model%20bin.sealed HTTP/1.1\r\nConnection: close\r\n\r\n".into(),
            "HTTP/1.1 405",
        ),
        (
            "GET /bundle/x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc".into(),
            "HTTP/1.1 400",
        ),
        ("NONSENSE\r\n\r\n".into(), "HTTP/1.1 400"),
    ] {
        assert_eq!(
            status(exchange(&s.endpoint, &request).await),
            expected,
            "{request}"
        );
    }
}

#[tokio::test]
async fn keep_alive_and_pipelining() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(Endpoint::Unix(dir.path().join("b.sock"))).await;
    let path = "/bundle/w/model%20bin.sealed";
    let pipelined = format!(
        "GET {path} HTTP/1.1\r\nRange: bytes=0-4\r\n\r\nGET {path} HTTP/1.1\r\nRange: bytes=5-9\r\n\r\n{}",
        get(path, "Range: bytes=10-14\r\n")
    );
    let r = exchange(&s.endpoint, &pipelined).await;
    let text = String::from_utf8_lossy(&r);
    assert_eq!(
        text.matches("HTTP/1.1 206 Partial Content").count(),
        3,
        "{text}"
    );
    let mut bodies = Vec::new();
    let mut rest: &[u8] = &r;
    while !rest.is_empty() {
        let (_, after) = split(rest);
        bodies.extend_from_slice(&after[..5]);
        rest = &after[5..];
    }
    assert_eq!(bodies, &s.data[..15]);
    assert_eq!(s.server.requests(), 3);
}
