//! The ingress limits, each a plain status: a body over the limit is 413, more requests
//! than allowed at once 503 with retry-after, a sentinel that does not answer in time 504,
//! CONNECT (a tunnel to the sentinel) 405.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use axum::routing::post;
use trustbridge_relay::ingress::{IngressConfig, router_with};
use trustbridge_transport::{Endpoint, Listener};

async fn status(relay: &str, path: &str, body: Vec<u8>) -> (u16, Option<String>) {
    let out = tokio::task::spawn_blocking({
        let url = format!("http://{relay}{path}");
        move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            let resp = agent.post(&url).send(&body[..]).unwrap();
            (
                resp.status().as_u16(),
                resp.headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_owned()),
            )
        }
    });
    out.await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_crowded_and_slow_requests_get_their_status() {
    let dir = tempfile::tempdir().unwrap();
    let api = Endpoint::Unix(dir.path().join("sentinel.sock"));
    let arrived = std::sync::Arc::new(tokio::sync::Notify::new());
    let signal = arrived.clone();
    let sentinel = axum::Router::new()
        .route(
            "/echo",
            post(|b: axum::body::Bytes| async move { b.len().to_string() }),
        )
        .route(
            "/slow",
            post(move || async move {
                signal.notify_one();
                tokio::time::sleep(Duration::from_secs(3)).await;
                "late"
            }),
        );
    let listener = Listener::bind(&api).await.unwrap();
    tokio::spawn(async move { axum::serve(listener, sentinel).await.unwrap() });
    let ingress = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay = ingress.local_addr().unwrap().to_string();
    let app = router_with(IngressConfig {
        max_request_bytes: 100,
        max_concurrent: 1,
        timeout: Duration::from_millis(1000),
        ..IngressConfig::new(api)
    });
    tokio::spawn(async move { axum::serve(ingress, app).await.unwrap() });

    assert_eq!(status(&relay, "/echo", vec![0; 100]).await.0, 200);
    assert_eq!(status(&relay, "/echo", vec![0; 101]).await.0, 413);
    // One slow request holds the only slot: a second one is turned away, then the slow
    // one times out.
    let slow = tokio::spawn({
        let relay = relay.clone();
        async move { status(&relay, "/slow", vec![]).await.0 }
    });
    arrived.notified().await;
    assert_eq!(
        status(&relay, "/echo", vec![1]).await,
        (503, Some("1".into()))
    );
    assert_eq!(slow.await.unwrap(), 504);
    assert_eq!(status(&relay, "/echo", vec![1]).await.0, 200);
    // No tunnel through the relay: CONNECT is refused before anything is forwarded.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut raw = tokio::net::TcpStream::connect(&relay).await.unwrap();
    raw.write_all(b"CONNECT sentinel:443 HTTP/1.1\r\nhost: sentinel:443\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.windows(2).any(|w| w == b"\r\n") {
        let mut buf = [0u8; 64];
        let n = raw.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before a status line");
        head.extend_from_slice(&buf[..n]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 405"),
        "{}",
        String::from_utf8_lossy(&head)
    );
}
