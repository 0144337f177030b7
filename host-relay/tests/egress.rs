//! The egress proxy over a Unix socket: allowed destinations are tunnelled, everything
//! else is refused (and logged), and the tunnel limit holds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trustbridge_relay::egress::{AllowList, EgressConfig, serve_egress};
use trustbridge_transport::{Endpoint, Listener, connect};

/// Captures log output for assertions.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

async fn echo_server() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    port
}

async fn request(endpoint: &Endpoint, head: &str) -> (String, trustbridge_transport::Stream) {
    let mut s = connect(endpoint).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    let mut byte = [0u8; 1];
    while !resp.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        resp.push(byte[0]);
    }
    (String::from_utf8(resp).unwrap(), s)
}

#[tokio::test(flavor = "current_thread")]
async fn tunnels_only_to_allowed_destinations() {
    let logs = Logs::default();
    let writer = logs.clone();
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish(),
    );
    let port = echo_server().await;
    let dir = tempfile::tempdir().unwrap();
    let endpoint = Endpoint::Unix(dir.path().join("egress.sock"));
    let listener = Listener::bind(&endpoint).await.unwrap();
    let allow = AllowList::parse(&[format!("127.0.0.1:{port}")]).unwrap();
    tokio::spawn(serve_egress(listener, EgressConfig::new(allow)));

    // Allowed: the tunnel carries bytes both ways, including bytes sent with the header.
    let (resp, mut s) = request(
        &endpoint,
        &format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: x\r\n\r\nearly"),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    s.write_all(b" and late").await.unwrap();
    let mut back = [0u8; 14];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"early and late");

    // Not on the allow-list: refused and logged.
    let other = echo_server().await;
    let (resp, _) = request(
        &endpoint,
        &format!("CONNECT 127.0.0.1:{other} HTTP/1.1\r\n\r\n"),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    let (resp, _) = request(
        &endpoint,
        &format!("CONNECT localhost:{port} HTTP/1.1\r\n\r\n"),
    )
    .await;
    assert!(
        resp.starts_with("HTTP/1.1 403"),
        "another name for an allowed address is refused: {resp}"
    );
    tokio::task::yield_now().await;
    let text = logs.text();
    assert!(
        text.contains("egress refused: destination not on the allow-list")
            && text.contains(&format!("127.0.0.1:{other}")),
        "{text}"
    );

    // Not a CONNECT: refused.
    let (resp, _) = request(
        &endpoint,
        &format!("GET http://127.0.0.1:{port}/ HTTP/1.1\r\n\r\n"),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
}

#[tokio::test]
async fn the_tunnel_limit_holds() {
    let port = echo_server().await;
    let dir = tempfile::tempdir().unwrap();
    let endpoint = Endpoint::Unix(dir.path().join("egress.sock"));
    let listener = Listener::bind(&endpoint).await.unwrap();
    let mut config = EgressConfig::new(AllowList::parse(&[format!("127.0.0.1:{port}")]).unwrap());
    config.max_connections = 2;
    tokio::spawn(serve_egress(listener, config));
    let head = format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n");
    let (a, _keep_a) = request(&endpoint, &head).await;
    let (b, _keep_b) = request(&endpoint, &head).await;
    assert!(a.starts_with("HTTP/1.1 200") && b.starts_with("HTTP/1.1 200"));
    let (c, _) = request(&endpoint, &head).await;
    assert!(c.starts_with("HTTP/1.1 503"), "{c}");
}
