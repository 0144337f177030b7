//! Every transport carries bytes both ways; Unix sockets are private and replace stale
//! files; axum serves over them; vsock fails cleanly where the kernel has none.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::os::unix::fs::PermissionsExt;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trustbridge_transport::{Endpoint, Listener, connect};

async fn echo_round_trip(endpoint: Endpoint) {
    let listener = Listener::bind(&endpoint).await.unwrap();
    let bound = listener.local_endpoint().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept_stream().await.unwrap();
        let mut buf = vec![0u8; 5];
        s.read_exact(&mut buf).await.unwrap();
        s.write_all(&buf).await.unwrap();
        s.shutdown().await.unwrap();
        listener
    });
    let mut c = connect(&bound).await.unwrap();
    c.write_all(b"hello").await.unwrap();
    let mut back = Vec::new();
    c.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"hello");
    drop(server.await.unwrap());
}

#[tokio::test]
async fn tcp_and_unix_carry_bytes() {
    echo_round_trip("tcp://127.0.0.1:0".parse().unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    echo_round_trip(Endpoint::Unix(dir.path().join("s.sock"))).await;
}

#[tokio::test]
async fn unix_sockets_are_private_and_replace_stale_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.sock");
    let first = Listener::bind(&Endpoint::Unix(path.clone())).await.unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // A stale socket (the process died without cleanup) is replaced.
    std::mem::forget(first);
    let second = Listener::bind(&Endpoint::Unix(path.clone())).await.unwrap();
    drop(second);
    assert!(!path.exists(), "socket file removed on drop");
    // A regular file is never clobbered.
    std::fs::write(&path, b"data").unwrap();
    assert!(Listener::bind(&Endpoint::Unix(path.clone())).await.is_err());
    assert_eq!(std::fs::read(&path).unwrap(), b"data");
}

#[tokio::test]
async fn axum_serves_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = Endpoint::Unix(dir.path().join("http.sock"));
    let listener = Listener::bind(&endpoint).await.unwrap();
    let app = axum::Router::new().route("/health", axum::routing::get(|| async { "ok" }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut c = connect(&endpoint).await.unwrap();
    c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with("ok"), "{resp}");
}

#[tokio::test]
async fn connecting_to_nothing_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        connect(&Endpoint::Unix(dir.path().join("none.sock")))
            .await
            .is_err()
    );
    assert!(
        connect(&"tcp://127.0.0.1:1".parse().unwrap())
            .await
            .is_err()
    );
    // No vsock transport on this machine (or no listener): a clean io::Error either way.
    assert!(connect(&"vsock://1:9".parse().unwrap()).await.is_err());
}
