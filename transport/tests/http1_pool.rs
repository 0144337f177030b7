//! The HTTP/1.1 pool reuses a connection whose answer was read to the end, and only such a
//! connection; it survives a peer that closes idle connections; it sends origin-form
//! targets with a Host; on a Unix socket it talks only to a peer of the user it requires.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Uri};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use trustbridge_transport::Endpoint;
use trustbridge_transport::http1::{Http1Pool, PoolConfig, SendError};

/// A server that records each request's peer (one per connection), target and Host.
struct Server {
    endpoint: Endpoint,
    seen: Arc<Mutex<Vec<(SocketAddr, String, String)>>>,
}

impl Server {
    async fn start() -> Self {
        let seen: Arc<Mutex<Vec<(SocketAddr, String, String)>>> = Arc::default();
        let (record, long) = (seen.clone(), seen.clone());
        let app = axum::Router::new()
            .route(
                "/small",
                axum::routing::get(
                    move |ConnectInfo(peer): ConnectInfo<SocketAddr>,
                          uri: Uri,
                          headers: HeaderMap| async move {
                        let host = headers
                            .get("host")
                            .map(|h| h.to_str().unwrap().to_owned())
                            .unwrap_or_default();
                        record.lock().unwrap().push((peer, uri.to_string(), host));
                        "ok"
                    },
                ),
            )
            .route(
                "/empty",
                axum::routing::get(|| async { axum::http::StatusCode::NO_CONTENT }),
            )
            .route(
                "/closing",
                axum::routing::get(|| async { ([("connection", "close")], "bye") }),
            )
            .route(
                "/long",
                axum::routing::get(
                    move |ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                        long.lock()
                            .unwrap()
                            .push((peer, "/long".into(), String::new()));
                        // Two frames a while apart, so a client can leave after the first.
                        axum::body::Body::from_stream(futures_stream())
                    },
                ),
            );
        let chunked_seen = seen.clone();
        let app = app.route(
            "/chunked",
            axum::routing::get(
                move |ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                    chunked_seen
                        .lock()
                        .unwrap()
                        .push((peer, "/chunked".into(), String::new()));
                    // No length: chunked, its last field in a trailer (as a streamed answer's
                    // receipt comes to the relay).
                    let mut trailers = HeaderMap::new();
                    trailers.insert("x-receipt", "r1".parse().unwrap());
                    let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = vec![
                        Ok(Frame::data(Bytes::from_static(b"a"))),
                        Ok(Frame::data(Bytes::from_static(b"b"))),
                        Ok(Frame::trailers(trailers)),
                    ];
                    (
                        [("trailer", "x-receipt")],
                        axum::body::Body::new(StreamBody::new(futures_util::stream::iter(frames))),
                    )
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap();
        });
        Self {
            endpoint: Endpoint::Tcp {
                host: addr.ip().to_string(),
                port: addr.port(),
            },
            seen,
        }
    }

    fn connections(&self) -> usize {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .map(|(p, _, _)| *p)
            .collect::<BTreeSet<_>>()
            .len()
    }
}

/// "first", then "second" 300 ms later.
fn futures_stream() -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        let _ = tx.send(Ok(Bytes::from_static(b"first"))).await;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let _ = tx.send(Ok(Bytes::from_static(b"second"))).await;
    });
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn pool(server: &Server) -> Http1Pool<Full<Bytes>> {
    Http1Pool::new(
        server.endpoint.clone(),
        axum::http::HeaderValue::from_static("upstream"),
        PoolConfig::default(),
    )
}

/// A pool of connections to 127.0.0.1:`port`.
fn pool_on(port: u16, config: PoolConfig) -> Http1Pool<Full<Bytes>> {
    Http1Pool::new(
        Endpoint::Tcp {
            host: "127.0.0.1".into(),
            port,
        },
        axum::http::HeaderValue::from_static("x"),
        config,
    )
}

fn get(target: &str) -> axum::http::Request<Full<Bytes>> {
    axum::http::Request::get(target)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

async fn read(pool: &Http1Pool<Full<Bytes>>, req: axum::http::Request<Full<Bytes>>) -> Bytes {
    let resp = pool.send(req).await.unwrap();
    resp.into_body().collect().await.unwrap().to_bytes()
}

#[tokio::test]
async fn answers_read_to_the_end_leave_their_connection_for_the_next_request() {
    let server = Server::start().await;
    let pool = pool(&server);
    for _ in 0..20 {
        assert_eq!(read(&pool, get("/small")).await, "ok");
    }
    // An answer without content ends at its head.
    for _ in 0..5 {
        let resp = pool.send(get("/empty")).await.unwrap();
        assert_eq!(resp.status(), 204);
        drop(resp);
    }
    assert_eq!(read(&pool, get("/small")).await, "ok");
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn targets_are_origin_form_and_carry_a_host() {
    let server = Server::start().await;
    let pool = pool(&server);
    read(&pool, get("http://elsewhere.example/small?x=1")).await;
    let mut own = get("/small");
    own.headers_mut()
        .insert("host", axum::http::HeaderValue::from_static("mine"));
    read(&pool, own).await;
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen[0].1, "/small?x=1");
    assert_eq!(seen[0].2, "upstream");
    assert_eq!(seen[1].2, "mine");
}

#[tokio::test]
async fn an_answer_left_half_read_closes_its_connection() {
    let server = Server::start().await;
    let pool = pool(&server);
    let resp = pool.send(get("/long")).await.unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "first");
    drop(body);
    // Not reused: its answer is still coming. The next two share a new one.
    assert_eq!(read(&pool, get("/small")).await, "ok");
    assert_eq!(read(&pool, get("/small")).await, "ok");
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert_ne!(seen[0].0, seen[1].0);
    assert_eq!(seen[1].0, seen[2].0);
}

#[tokio::test]
async fn a_connection_its_peer_closed_is_not_used_again() {
    let server = Server::start().await;
    let pool = pool(&server);
    for _ in 0..3 {
        assert_eq!(read(&pool, get("/closing")).await, "bye");
        assert_eq!(read(&pool, get("/small")).await, "ok");
    }
    // Each /closing ends the connection it took; the /small after it opens another.
    assert_eq!(server.connections(), 3);
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error_naming_the_endpoint() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let pool = pool_on(port, PoolConfig::default());
    let err = pool.send(get("/")).await.unwrap_err();
    assert!(matches!(err, SendError::Connect { .. }), "{err}");
    assert!(err.to_string().contains(&format!("127.0.0.1:{port}")));
}

fn with_trailers(target: &str) -> axum::http::Request<Full<Bytes>> {
    let mut req = get(target);
    req.headers_mut()
        .insert("te", axum::http::HeaderValue::from_static("trailers"));
    req
}

#[tokio::test]
async fn chunked_answers_keep_their_trailers_and_their_connection() {
    let server = Server::start().await;
    let pool = pool(&server);
    for _ in 0..3 {
        let resp = pool.send(with_trailers("/chunked")).await.unwrap();
        let collected = resp.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["x-receipt"], "r1");
        assert_eq!(collected.to_bytes(), "ab");
    }
    // A reader that stops at the trailers (as the relay's does) hands it back too.
    let resp = pool.send(with_trailers("/chunked")).await.unwrap();
    let mut body = resp.into_body();
    loop {
        let frame = body.frame().await.unwrap().unwrap();
        if frame.is_trailers() {
            break;
        }
    }
    drop(body);
    assert_eq!(read(&pool, get("/small")).await, "ok");
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn a_peer_that_closes_idle_connections_costs_no_request() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Answers one request per connection with keep-alive, then closes it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.ends_with(b"\r\n\r\n") {
                    let n = stream.read(&mut buf).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await
                    .unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            });
        }
    });
    let pool = pool_on(port, PoolConfig::default());
    for _ in 0..3 {
        assert_eq!(read(&pool, get("/")).await, "ok");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
}

#[tokio::test]
async fn idle_connections_past_their_time_are_closed_even_without_requests() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Answers every request on a connection; reports when the client closes it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (closed, mut closes) = tokio::sync::mpsc::unbounded_channel::<()>();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let closed = closed.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let mut head = Vec::new();
                loop {
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        let _ = closed.send(());
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                    if head.ends_with(b"\r\n\r\n") {
                        head.clear();
                        stream
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .await
                            .unwrap();
                    }
                }
            });
        }
    });
    let pool = pool_on(
        port,
        PoolConfig {
            idle_timeout: std::time::Duration::from_millis(100),
            max_idle: 8,
            ..PoolConfig::default()
        },
    );
    assert_eq!(read(&pool, get("/")).await, "ok");
    // No request follows: the pool closes the connection itself.
    tokio::time::timeout(std::time::Duration::from_secs(10), closes.recv())
        .await
        .expect("the idle connection was not closed")
        .unwrap();
    // The next request opens another and is answered.
    assert_eq!(read(&pool, get("/")).await, "ok");
}

#[tokio::test]
async fn connect_is_refused() {
    let server = Server::start().await;
    let pool = pool(&server);
    let req = axum::http::Request::connect("example.com:443")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let err = pool.send(req).await.unwrap_err();
    assert!(matches!(err, SendError::Unsupported("CONNECT")), "{err}");
    assert_eq!(server.connections(), 0);
}

#[tokio::test]
async fn a_unix_peer_under_another_user_is_refused_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("peer.sock");
    let listener = trustbridge_transport::Listener::bind(&Endpoint::Unix(path.clone()))
        .await
        .unwrap();
    let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = requests.clone();
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || async move {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            "ok"
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    // This process's user id, as a socket reports it.
    let (a, _b) = tokio::net::UnixStream::pair().unwrap();
    let me = a.peer_cred().unwrap().uid();
    let requiring = |uid| {
        Http1Pool::new(
            Endpoint::Unix(path.clone()),
            axum::http::HeaderValue::from_static("localhost"),
            PoolConfig {
                unix_peer_uid: Some(uid),
                ..PoolConfig::default()
            },
        )
    };
    assert_eq!(read(&requiring(me), get("/")).await, "ok");
    let other = me.wrapping_add(1);
    let err = requiring(other).send(get("/")).await.unwrap_err();
    assert!(
        matches!(err, SendError::WrongPeer { peer: Some(p), expected, .. } if p == me && expected == other),
        "{err}"
    );
    assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 1);
}
