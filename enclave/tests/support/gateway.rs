//! A Ready sentinel behind the relay's ingress, in this process, with a stand-in
//! runtime: shared by the gateway tests (`gateway.rs`, `chunked.rs`).
#![allow(dead_code, unreachable_pub)] // each test file uses a different part

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::IntoResponse;
use axum::routing::post;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use trustbridge_enclave::attestation::{AttestationProvider, SimulatedPlatform, SimulatedProvider};
use trustbridge_enclave::boot::Backoff;
use trustbridge_enclave::gateway::{GatewayConfig, RECEIPT_HEADER};
use trustbridge_enclave::hydrate::HydrateConfig;
use trustbridge_enclave::sentinel::{Sentinel, SentinelConfig};
use trustbridge_protocol::ohttp::REQUEST_MEDIA_TYPE;
use trustbridge_transport::{Endpoint, Listener};

use super::world::{ASSET, CONTRACT, World, world};

/// A stand-in for vLLM's OpenAI server on the loopback: echoes the request size, reports
/// usage, and tries to inject a receipt header of its own.
pub async fn runtime() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, runtime_app()).await.unwrap() });
    format!("http://{addr}")
}

/// The same stand-in on the Unix socket `path`: its runtime URL.
pub async fn runtime_on_unix(path: &std::path::Path) -> String {
    let listener = Listener::bind(&Endpoint::Unix(path.to_owned()))
        .await
        .unwrap();
    tokio::spawn(async move { axum::serve(listener, runtime_app()).await.unwrap() });
    format!("unix://{}", path.display())
}

fn runtime_app() -> axum::Router {
    axum::Router::new().route(
        "/v1/chat/completions",
        post(|body: Bytes| async move {
            if body.windows(9).any(|w| w == b"break off") {
                return broken();
            }
            if body.windows(13).any(|w| w == b"\"stream\":true") {
                return streamed(body.len());
            }
            (
                [("content-type", "application/json"), (RECEIPT_HEADER, "forged-by-the-runtime")],
                serde_json::json!({
                    "object": "chat.completion",
                    "choices": [{"message": {"role": "assistant", "content": format!("heard {} bytes", body.len())}}],
                    "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
                })
                .to_string(),
            )
                .into_response()
        }),
    )
}

pub struct Setup {
    pub world: World,
    pub sentinel: Arc<Sentinel>,
    pub relay: String,
}

/// The world, a sentinel Ready behind the relay's ingress, and the runtime.
pub async fn setup() -> Setup {
    setup_with(Default::default()).await
}

/// [`setup`] with the sentinel re-authorizing as `reauthorize` says.
pub async fn setup_with(reauthorize: trustbridge_enclave::sentinel::Reauthorization) -> Setup {
    setup_gateway(reauthorize, GatewayConfig::default()).await
}

/// [`setup`] with the gateway's limits from `limits` (its runtime is the stand-in).
pub async fn setup_gateway(
    reauthorize: trustbridge_enclave::sentinel::Reauthorization,
    limits: GatewayConfig,
) -> Setup {
    let limits = GatewayConfig {
        engine: trustbridge_enclave::engine::EngineChoice::Runtime(
            runtime().await.parse().unwrap(),
        ),
        ..limits
    };
    setup_serving(world(true).await, reauthorize, limits).await
}

/// A Ready sentinel behind the relay's ingress, serving the world `w` with the gateway
/// (and engine) `config`; the relay keeps a receipt log.
pub async fn setup_serving(
    w: World,
    reauthorize: trustbridge_enclave::sentinel::Reauthorization,
    config: GatewayConfig,
) -> Setup {
    serve(w, reauthorize, config, true).await
}

/// [`setup_serving`], the relay keeping a receipt log or not: a log appends and fsyncs
/// each receipt before its answer goes on, which the benchmarks of the request path
/// leave out. The relay's listener is as `tb-relay`'s (no Nagle).
pub async fn serve(
    w: World,
    reauthorize: trustbridge_enclave::sentinel::Reauthorization,
    config: GatewayConfig,
    keep_log: bool,
) -> Setup {
    let backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(200),
        attempts: 5,
    };
    let sentinel = Sentinel::new(SentinelConfig {
        asset: ASSET.into(),
        contract: CONTRACT.into(),
        kms: w.kms.clone(),
        pins: w.pins,
        egress_limits: Default::default(),
        egress: w.egress.clone(),
        bundles: w.bundles.clone(),
        hydrate: HydrateConfig {
            backoff,
            ..HydrateConfig::default()
        },
        backoff,
        reauthorize,
        output: Default::default(),
        swap: Default::default(),
        ready_signal: None,
        gateway: config,
    });
    let provider: Arc<dyn AttestationProvider> =
        Arc::new(SimulatedProvider::new(w.tee(), SimulatedPlatform::Nitro));
    tokio::spawn(sentinel.clone().boot(provider));
    let api = Endpoint::Unix(w.path("sentinel.sock"));
    let listener = Listener::bind(&api).await.unwrap();
    let router = sentinel.clone().router();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let ingress = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay = format!("127.0.0.1:{}", ingress.local_addr().unwrap().port());
    let ingress = axum::serve::ListenerExt::tap_io(ingress, |tcp| {
        tcp.set_nodelay(true).unwrap();
    });
    let log = keep_log.then(|| {
        Arc::new(trustbridge_relay::receipt_log::ReceiptLog::open(&w.path("receipts.log")).unwrap())
    });
    let app = trustbridge_relay::ingress::router_with(trustbridge_relay::ingress::IngressConfig {
        log,
        ..trustbridge_relay::ingress::IngressConfig::new(api)
    });
    tokio::spawn(async move { axum::serve(ingress, app).await.unwrap() });
    let started = Instant::now();
    while sentinel.model().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(120)
                && !matches!(
                    sentinel.state(),
                    trustbridge_enclave::boot::BootState::Failed { .. }
                ),
            "not Ready: {}",
            sentinel.state()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Setup {
        world: w,
        sentinel,
        relay,
    }
}

/// One HTTP/1.1 exchange with the relay.
pub async fn http(
    relay: &str,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> (u16, hyper::HeaderMap, Vec<u8>) {
    let stream = tokio::net::TcpStream::connect(relay).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", relay)
        .header("content-type", REQUEST_MEDIA_TYPE)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

/// A Binary HTTP chat request.
pub fn chat_request(prompt: &str) -> Vec<u8> {
    let mut m = bhttp::Message::request(
        b"POST".to_vec(),
        b"https".to_vec(),
        b"sentinel".to_vec(),
        b"/v1/chat/completions".to_vec(),
    );
    m.put_header("content-type", "application/json");
    m.write_content(
        serde_json::json!({"model": ASSET, "messages": [{"role": "user", "content": prompt}]})
            .to_string(),
    );
    let mut out = Vec::new();
    m.write_bhttp(bhttp::Mode::KnownLength, &mut out).unwrap();
    out
}

/// The events a streamed answer carries: [`STREAM_EVENTS`] events, then `[DONE]`.
pub const STREAM_EVENTS: usize = 3;

/// A server-sent-event answer, one event every 20 ms (so it crosses the relay in pieces).
fn streamed(len: usize) -> axum::response::Response {
    let events = (0..STREAM_EVENTS)
        .map(move |i| format!("data: {{\"piece\": {i}, \"heard\": {len}}}\n\n"))
        .chain(std::iter::once("data: [DONE]\n\n".to_owned()));
    let stream = futures_util::stream::iter(events).then(|e| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok::<_, std::convert::Infallible>(Bytes::from(e))
    });
    (
        [
            ("content-type", "text/event-stream"),
            (RECEIPT_HEADER, "forged-by-the-runtime"),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

/// A server-sent-event answer that breaks off after one event (a runtime that fails
/// mid-answer).
fn broken() -> axum::response::Response {
    let events = futures_util::stream::iter([
        Ok(Bytes::from_static(b"data: {\"piece\": 0}\n\n")),
        Err(std::io::Error::other("the runtime fell over")),
    ])
    .then(|e| async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        e
    });
    (
        [("content-type", "text/event-stream")],
        axum::body::Body::from_stream(events),
    )
        .into_response()
}

/// A client session on the sentinel's verified bundle.
pub async fn session(s: &Setup) -> trustbridge_client::session::Session {
    use std::time::SystemTime;
    use trustbridge_client::session::{ChainTracker, Session};
    use trustbridge_protocol::attestation_bundle::AttestationBundle;
    use trustbridge_protocol::ohttp::ATTESTATION_PATH;
    use trustbridge_verifier::client_policy::VerifiedBundle;
    use trustbridge_verifier::{check_binding, verify_nitro};
    let (_, _, bundle) = http(&s.relay, "GET", ATTESTATION_PATH, vec![]).await;
    let bundle = AttestationBundle::from_json(&bundle).unwrap();
    let evidence = verify_nitro(
        &bundle.evidence,
        &s.world.tee().trust_roots(),
        SystemTime::now(),
    )
    .unwrap();
    check_binding(&evidence, &bundle.binding).unwrap();
    let model = bundle.binding.manifest_sha256.unwrap();
    Session::new(
        VerifiedBundle {
            bundle,
            evidence,
            model,
            verified_at: SystemTime::now(),
        },
        Arc::new(ChainTracker::new()),
    )
}

/// POSTs a chunked request to the relay on a connection of its own: the answer's head
/// (its body still to read) and the connection's task (abort it to hang up).
pub async fn send_chunked(
    relay: &str,
    body: Vec<u8>,
) -> (
    hyper::Response<hyper::body::Incoming>,
    tokio::task::JoinHandle<hyper::Result<()>>,
) {
    let stream = tokio::net::TcpStream::connect(relay).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    use trustbridge_protocol::ohttp::{CHUNKED_REQUEST_MEDIA_TYPE, GATEWAY_PATH};
    let req = hyper::Request::post(GATEWAY_PATH)
        .header("host", relay)
        .header("content-type", CHUNKED_REQUEST_MEDIA_TYPE)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    (sender.send_request(req).await.unwrap(), conn)
}

/// POSTs a chunked request to the relay: status, content type, and the body as the
/// pieces (HTTP frames) it arrived in.
pub async fn post_chunked(relay: &str, body: Vec<u8>) -> (u16, String, Vec<Bytes>) {
    let (resp, _conn) = send_chunked(relay, body).await;
    let status = resp.status().as_u16();
    let media = resp.headers()["content-type"].to_str().unwrap().to_owned();
    let mut body = resp.into_body();
    let mut frames = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap();
        assert!(
            !frame.is_trailers() || frame.trailers_ref().unwrap().is_empty(),
            "the relay forwards no trailer"
        );
        if let Ok(data) = frame.into_data() {
            frames.push(data);
        }
    }
    (status, media, frames)
}

pub fn reader(bytes: Vec<u8>) -> trustbridge_client::stream::ByteReader {
    Box::new(futures_util::io::Cursor::new(bytes))
}

/// Reads a whole streamed answer and checks it: the content, or the first failure.
pub async fn read(
    session: &trustbridge_client::session::Session,
    pending: trustbridge_client::stream::ChunkedPending,
    body: Vec<u8>,
) -> Result<(Vec<u8>, trustbridge_protocol::receipt::Receipt), String> {
    let mut answer = pending.open(reader(body)).map_err(|e| e.to_string())?;
    let mut content = Vec::new();
    while let Some(piece) = answer.next().await.map_err(|e| e.to_string())? {
        content.extend(piece);
    }
    let (receipt, _) = answer.finish(session).map_err(|e| e.to_string())?;
    Ok((content, receipt))
}
