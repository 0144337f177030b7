//! Per-request overhead of the confidential path against the same handler over plain HTTP.
//!
//! `cargo bench -p trustbridge-enclave --bench session`
//!
//! One process, simulated TEE, small requests, one at a time, each over a kept-alive
//! HTTP/1.1 connection:
//! - direct: the client POSTs a small chat request to the runtime (a stand-in for vLLM's
//!   OpenAI server on loopback) and reads the answer;
//! - confidential: the client POSTs the same request to `trustbridge proxy`'s API
//!   (`trustbridge_client::openai_proxy`, verifying the sentinel against a client policy),
//!   which encapsulates it as Binary HTTP in Oblivious HTTP (its HPKE context set up
//!   ahead of the request on the client's own thread, as `trustbridge proxy` does: see
//!   docs/CLIENT.md) and POSTs it to the relay's
//!   ingress, which forwards it to the sentinel over a Unix socket; the sentinel
//!   decapsulates, forwards to the same runtime (over loopback TCP, as the default
//!   `TB_RUNTIME_URL` and the Terraform module have it; a Unix socket,
//!   `unix:///PATH`, is a few µs faster), signs the receipt (its nonce made ahead by a
//!   thread of the sentinel's own: see enclave/src/receipts.rs), encapsulates; the proxy
//!   decapsulates and verifies the receipt fully (signature, evidence, digests, nonce,
//!   chain) before it answers;
//! - for the record, the same without the proxy's HTTP hop and checks: a hand-rolled
//!   client that encapsulates, decapsulates and verifies only the receipt's signature
//!   (`session without proxy: ohttp_us=...`);
//! - for the record too, what plain HTTP hops cost here: `GET /health` through the relay
//!   to the sentinel, two hops with nothing decrypted or signed (`session hops: ...`).
//!
//! Rounds interleave the paths; per-request latencies are pooled and the medians
//! reported. Two runs, each with its own world: first every component in one
//! multi-threaded runtime of two workers (`session (multi-thread runtime): ...`, for the
//! record: each hop then also pays the machine's cross-thread wake-up, which on a 2-vCPU
//! VM is most of the figure), then in one single-threaded runtime, where a hop costs what
//! its software costs, with the cryptography's own cost measured beside it
//! (`session crypto: ...`), ending with `session: direct_us=X confidential_us=Y added_us=Z`.
//! TB_BENCH_REQUESTS sets requests per round (default 500), TB_BENCH_ROUNDS rounds (5),
//! TB_BENCH_PREPARED the client's contexts prepared ahead (`ClientConfig::prepared`,
//! default 8; 0 to measure without); TB_BENCH_MULTI=0 skips the multi-threaded run (to
//! profile the headline alone).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)] // bench binary

#[path = "../tests/support/gateway.rs"]
mod gateway;
#[path = "../tests/support/world.rs"]
mod world;

use std::io::Cursor;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use trustbridge_enclave::gateway::{GatewayConfig, RECEIPT_HEADER};
use trustbridge_protocol::ohttp::gateway::encapsulate;
use trustbridge_protocol::receipt::UnverifiedReceipt;
use world::world;

/// The daemons' allocator (tb-sentinel, tb-relay and `trustbridge` use it), for every
/// component here.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The stand-in runtime on the loopback (TCP_NODELAY, as vLLM's server sets it): its
/// URL and address.
async fn runtime() -> (String, std::net::SocketAddr) {
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(|_: Bytes| async {
            (
                [("content-type", "application/json")],
                r#"{"object":"chat.completion","choices":[{"message":{"role":"assistant","content":"ok"}}],"usage":{"prompt_tokens":5,"completion_tokens":1}}"#,
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), addr)
}

/// A kept-alive HTTP/1.1 connection.
struct Conn(hyper::client::conn::http1::SendRequest<Full<Bytes>>);

impl Conn {
    async fn open(addr: std::net::SocketAddr) -> Self {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        Self(sender)
    }

    async fn get(&mut self, path: &str) -> Vec<u8> {
        let req = hyper::Request::get(path)
            .header("host", "bench")
            .body(Full::new(Bytes::new()))
            .unwrap();
        self.send(req).await
    }

    async fn post(&mut self, path: &str, media: &str, body: Vec<u8>) -> Vec<u8> {
        let req = hyper::Request::post(path)
            .header("host", "bench")
            .header("content-type", media)
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        self.send(req).await
    }

    /// Sends `req`, expects 200, and reads the whole answer.
    async fn send(&mut self, req: hyper::Request<Full<Bytes>>) -> Vec<u8> {
        self.0.ready().await.unwrap();
        let resp = self.0.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec()
    }
}

const BODY: &str =
    r#"{"model":"acme/llm@v1","messages":[{"role":"user","content":"Say ok."}],"max_tokens":1}"#;

/// Per-request latencies (µs) of one run: direct, through the proxy, and without it.
struct Latencies {
    direct: Vec<f64>,
    confidential: Vec<f64>,
    without_proxy: Vec<f64>,
    /// `GET /health` through the relay: two plain HTTP hops (relay, sentinel), nothing
    /// decrypted or signed, for the record of what a hop costs here.
    plain_hops: Vec<f64>,
}

fn main() {
    let per_round = env_usize("TB_BENCH_REQUESTS", 500).max(1);
    let rounds = env_usize("TB_BENCH_ROUNDS", 5).max(1);
    // For the record: every component in one multi-threaded runtime of two workers, where
    // each hop also pays the machine's cross-thread wake-up (a scheduler cost, not ours).
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if env_usize("TB_BENCH_MULTI", 1) != 0 {
        let mut m = multi.block_on(run(rounds, per_round, false));
        let (direct_us, confidential_us) = (median(&mut m.direct), median(&mut m.confidential));
        println!(
            "session (multi-thread runtime): direct_us={direct_us:.0} confidential_us={confidential_us:.0} added_us={:.0}",
            confidential_us - direct_us
        );
    }
    drop(multi);
    // The headline: one thread runs every component, so a hop costs what its software
    // costs (sockets, HTTP, our code) and the difference is the confidential path's own.
    let single = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut s = single.block_on(run(rounds, per_round, true));
    println!(
        "session without proxy: ohttp_us={:.0}",
        median(&mut s.without_proxy)
    );
    println!(
        "session hops: relay_and_sentinel_health_us={:.0} (two plain HTTP hops, nothing decrypted)",
        median(&mut s.plain_hops)
    );
    let p99 = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() * 99 / 100]
    };
    println!(
        "session p99: direct_us={:.0} confidential_us={:.0}",
        p99(&mut s.direct),
        p99(&mut s.confidential)
    );
    let (direct_us, confidential_us) = (median(&mut s.direct), median(&mut s.confidential));
    println!(
        "session: direct_us={direct_us:.0} confidential_us={confidential_us:.0} added_us={:.0}",
        confidential_us - direct_us
    );
}

/// Sets up the world in the current runtime and measures `rounds` rounds (after a warm-up
/// round) of `per_round` requests each way.
async fn run(rounds: usize, per_round: usize, floor: bool) -> Latencies {
    {
        let w = world(true).await;
        let (runtime_url, runtime_addr) = runtime().await;
        let setup = gateway::serve(
            w,
            Default::default(),
            GatewayConfig {
                engine: trustbridge_enclave::engine::EngineChoice::Runtime(
                    runtime_url.parse().unwrap(),
                ),
                ..GatewayConfig::default()
            },
            false,
        )
        .await;
        let (w, sentinel) = (setup.world, setup.sentinel);
        let relay_addr: std::net::SocketAddr = setup.relay.parse().unwrap();
        let gateway = sentinel.gateway().unwrap();
        let keys = gateway.ohttp_keys().to_vec();
        let receipt_key = sentinel_receipt_key(&relay_addr).await;

        let mut request = Vec::new();
        let mut m = bhttp::Message::request(
            b"POST".to_vec(),
            b"https".to_vec(),
            b"s".to_vec(),
            b"/v1/chat/completions".to_vec(),
        );
        m.put_header("content-type", "application/json");
        m.write_content(BODY);
        m.write_bhttp(bhttp::Mode::KnownLength, &mut request)
            .unwrap();

        if floor {
            crypto_floor(&request);
        }
        let policy = trustbridge_client::ClientPolicy::from_toml(&w.client_policy(false)).unwrap();
        let mut config =
            trustbridge_client::ClientConfig::new(format!("http://{relay_addr}"), policy);
        config.prepared = env_usize("TB_BENCH_PREPARED", config.prepared);
        let client = Arc::new(trustbridge_client::Client::new(config).unwrap());
        let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_addr = proxy.local_addr().unwrap();
        tokio::spawn(trustbridge_client::openai_proxy::serve(
            client,
            proxy,
            None,
            std::future::pending(),
        ));
        let mut direct = Conn::open(runtime_addr).await;
        let mut proxied = Conn::open(proxy_addr).await;
        let mut confidential = Conn::open(relay_addr).await;
        let mut hops = Conn::open(relay_addr).await;
        println!(
            "session bench: {rounds} rounds of {per_round} requests each way, {} byte request",
            BODY.len()
        );
        let (mut d, mut c, mut o, mut h) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 0..=rounds {
            let (mut dr, mut cr, mut or, mut hr) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for _ in 0..per_round {
                let t = Instant::now();
                let answer = direct
                    .post(
                        "/v1/chat/completions",
                        "application/json",
                        BODY.as_bytes().to_vec(),
                    )
                    .await;
                assert!(answer.starts_with(b"{"));
                dr.push(t.elapsed().as_secs_f64() * 1e6);

                let t = Instant::now();
                let answer = proxied
                    .post(
                        "/v1/chat/completions",
                        "application/json",
                        BODY.as_bytes().to_vec(),
                    )
                    .await;
                assert!(answer.starts_with(b"{"));
                cr.push(t.elapsed().as_secs_f64() * 1e6);

                let t = Instant::now();
                let (encapsulated, pending) = encapsulate(&keys, &request).unwrap();
                let body = confidential
                    .post(
                        "/.well-known/ohttp-gateway",
                        "message/ohttp-req",
                        encapsulated,
                    )
                    .await;
                let plain = pending.decapsulate(&body).unwrap();
                let m = bhttp::Message::read_bhttp(&mut Cursor::new(&plain[..])).unwrap();
                assert!(m.content().starts_with(b"{"));
                let receipt = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(m.header().get(RECEIPT_HEADER.as_bytes()).unwrap())
                    .unwrap();
                UnverifiedReceipt::parse(&receipt)
                    .unwrap()
                    .verify(&receipt_key)
                    .unwrap();
                or.push(t.elapsed().as_secs_f64() * 1e6);

                let t = Instant::now();
                assert!(!hops.get("/health").await.is_empty());
                hr.push(t.elapsed().as_secs_f64() * 1e6);
            }
            if round > 0 {
                // Round 0 warms up connections, caches and the attestation bundle.
                d.extend(dr);
                c.extend(cr);
                o.extend(or);
                h.extend(hr);
            }
        }
        Latencies {
            direct: d,
            confidential: c,
            without_proxy: o,
            plain_hops: h,
        }
    }
}

/// The receipt key, from the attestation bundle (as a client gets it).
async fn sentinel_receipt_key(relay: &std::net::SocketAddr) -> ed25519_dalek::VerifyingKey {
    let stream = tokio::net::TcpStream::connect(relay).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(trustbridge_protocol::ohttp::ATTESTATION_PATH)
        .header("host", "bench")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let body = sender
        .send_request(req)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    let bundle =
        trustbridge_protocol::attestation_bundle::AttestationBundle::from_json(&body).unwrap();
    ed25519_dalek::VerifyingKey::from_bytes(&bundle.receipt_key).unwrap()
}

/// The cryptography of one request alone, for the record: client encapsulation, gateway
/// decapsulation, response encapsulation and decapsulation, receipt signing and
/// verification.
fn crypto_floor(request: &[u8]) {
    use trustbridge_protocol::ohttp::gateway::GatewayKey;
    use trustbridge_protocol::receipt::{
        Claims, GENESIS, Receipt, ReceiptSigningKey, receipt_key_id,
    };
    let gateway = GatewayKey::derive(&[7; 32]).unwrap();
    let keys_local = gateway.keys().to_vec();
    let n = 300;
    let time = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
    };
    let enc = time(&mut || drop(encapsulate(&keys_local, request).unwrap()));
    // The part of it a client sets up ahead of the request (trustbridge_client's
    // prepared contexts), and what is left on the request's path.
    let prepare =
        time(&mut || drop(trustbridge_protocol::ohttp::gateway::prepare(&keys_local).unwrap()));
    let (e, _) = encapsulate(&keys_local, request).unwrap();
    let dec = time(&mut || drop(gateway.decapsulate(&e).unwrap()));
    let resp = time(&mut || {
        let (_, r) = gateway.decapsulate(&e).unwrap();
        drop(r.encapsulate(b"response").unwrap());
    }) - dec;
    let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let claims = Claims {
        issuer: receipt_key_id(&key.verifying_key().to_bytes()),
        issued_at: 1,
        id: [1; 16],
        nonce: None,
        sequence: 0,
        previous: GENESIS,
        model: [1; 32],
        request_digest: [2; 32],
        response_digest: [3; 32],
        evidence_digest: [4; 32],
        measurements: Default::default(),
        policy_digest: [5; 32],
        status: 200,
        usage: None,
    };
    let signer = ReceiptSigningKey::new(&key).unwrap();
    // The signature's nonce is made ahead, on the sentinel's own thread
    // (`ReceiptSigner`); what is left on the request's path is the signature.
    let nonce = time(&mut || drop(signer.nonce().unwrap()));
    let mut nonces: Vec<_> = (0..n).map(|_| signer.nonce().unwrap()).collect();
    let sign = time(&mut || {
        let nonce = nonces.pop().unwrap();
        drop(Receipt::sign_with_nonce(claims.clone(), &signer, nonce).unwrap());
    });
    let r = Receipt::sign(claims.clone(), &key).unwrap();
    // As a client holds it: prepared once per session (`ReceiptAnchor`).
    let vk = trustbridge_protocol::receipt::ReceiptVerifyingKey::new(&key.verifying_key());
    let verify = time(&mut || {
        drop(
            UnverifiedReceipt::parse(r.as_bytes())
                .unwrap()
                .verify_with(&vk)
                .unwrap(),
        )
    });
    let total = enc + dec + resp + nonce + sign + verify;
    println!(
        "session crypto: encapsulate_us={enc:.0} (prepared ahead: {prepare:.0}) decapsulate_us={dec:.0} response_us={resp:.0} receipt_sign_us={sign:.0} (nonce made ahead: {nonce:.0}) receipt_verify_us={verify:.0} total_us={total:.0} on_path_us={:.0}",
        total - prepare - nonce
    );
}
