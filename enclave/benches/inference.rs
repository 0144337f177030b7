//! The built-in engine called directly against the same engine through the confidential
//! path, on the same prompts.
//!
//! `cargo bench --workspace --bench inference` (needs the models: `scripts/fetch-models`)
//!
//! One process, simulated TEE, the real models (SmolLM2-135M-Instruct Q4_1 for chat,
//! all-MiniLM-L6-v2 for embeddings), one request at a time:
//! - direct: the built-in engine (`enclave::engine::BuiltIn`, loaded from the same bytes)
//!   answers the OpenAI request in-process;
//! - confidential: the same request goes to `trustbridge proxy`'s API, which verifies the
//!   sentinel, encapsulates it (Oblivious HTTP) and sends it through the relay's ingress
//!   to the sentinel, whose built-in engine answers; the proxy decapsulates and verifies
//!   the receipt before it answers.
//!
//! Chat requests are greedy (temperature 0) with a fixed `max_tokens`, so both paths
//! generate the same tokens; the paths alternate request by request. Reported:
//! - `inference ttft: direct_ms=A confidential_ms=B` — median time to the first token of a
//!   streamed answer (the first server-sent event with text);
//! - `inference embeddings: direct_per_s=A confidential_per_s=B` — inputs embedded per
//!   second, in requests of 8 inputs;
//! - last, `inference: direct_tps=X confidential_tps=Y ratio=Z` — completion tokens per
//!   second of wall time over whole (non-streamed) chat requests, prompt processing
//!   included.
//!
//! TB_BENCH_ROUNDS sets the rounds (default 3; each round asks every prompt both ways),
//! TB_BENCH_MAX_TOKENS the completion length (default 64).
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

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use trustbridge_enclave::engine::builtin::BuiltInLimits;
use trustbridge_enclave::engine::{ApiRequest, BuiltIn, Engine, EngineChoice};
use trustbridge_enclave::gateway::GatewayConfig;
use trustbridge_enclave::memory::PlainBuffer;
use world::{ASSET, world_of};

const PROMPTS: [&str; 4] = [
    "What is the capital of France?",
    "Explain in two sentences why the sky is blue.",
    "Write a haiku about a lighthouse.",
    "List three uses of a paperclip.",
];

const SENTENCES: [&str; 8] = [
    "The sentinel holds the model key only after attestation.",
    "A relay forwards ciphertext and learns nothing else.",
    "Receipts are signed and chained.",
    "Embeddings map text to vectors.",
    "The weather is mild today.",
    "Confidential computing protects data in use.",
    "A lighthouse guides ships at night.",
    "Paperclips hold sheets of paper together.",
];

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

fn main() {
    let Some(models) = trustbridge_testkit::models_dir(
        "inference bench",
        "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    ) else {
        return;
    };
    let read = |p: &str| std::fs::read(models.join(p)).unwrap();
    let files: Vec<(String, Vec<u8>)> = vec![
        (
            "chat/SmolLM2-135M-Instruct.Q4_1.gguf".into(),
            read("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
        ),
        (
            "embeddings/model.safetensors".into(),
            read("minilm/model.safetensors"),
        ),
        (
            "embeddings/tokenizer.json".into(),
            read("minilm/tokenizer.json"),
        ),
        ("embeddings/config.json".into(), read("minilm/config.json")),
    ];
    let rounds = env_usize("TB_BENCH_ROUNDS", 3).max(1);
    let max_tokens = env_usize("TB_BENCH_MAX_TOKENS", 64).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(files, rounds, max_tokens));
}

/// The same model, loaded for direct calls.
fn direct_engine(files: &[(String, Vec<u8>)]) -> BuiltIn {
    let plain: BTreeMap<String, PlainBuffer> = files
        .iter()
        .map(|(name, bytes)| {
            let mut p = PlainBuffer::zeroed(bytes.len());
            p.copy_from_slice(bytes);
            (name.clone(), p)
        })
        .collect();
    BuiltIn::load(ASSET, &plain, BuiltInLimits::default()).unwrap()
}

async fn run(files: Vec<(String, Vec<u8>)>, rounds: usize, max_tokens: usize) {
    let direct = direct_engine(&files);
    let w = world_of(true, files).await;
    let setup = gateway::serve(
        w,
        Default::default(),
        GatewayConfig {
            engine: EngineChoice::BuiltIn(BuiltInLimits::default()),
            ..GatewayConfig::default()
        },
        false,
    )
    .await;
    let w = setup.world;
    let relay_addr: std::net::SocketAddr = setup.relay.parse().unwrap();
    let policy = trustbridge_client::ClientPolicy::from_toml(&w.client_policy(false)).unwrap();
    let client = Arc::new(
        trustbridge_client::Client::new(trustbridge_client::ClientConfig::new(
            format!("http://{relay_addr}"),
            policy,
        ))
        .unwrap(),
    );
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    tokio::spawn(trustbridge_client::openai_proxy::serve(
        client,
        proxy,
        None,
        std::future::pending(),
    ));
    println!(
        "inference bench: {rounds} rounds of {} chat prompts each way, greedy, max_tokens {max_tokens}; threads {}",
        PROMPTS.len(),
        candle_core::utils::get_num_threads()
    );
    // Warm-up: both paths once (the proxy verifies the sentinel on its first request).
    let chat = |prompt: &str, stream: bool| {
        json!({
            "model": ASSET,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": stream,
        })
    };
    let _ = ask_direct(&direct, "/v1/chat/completions", &chat(PROMPTS[0], false)).await;
    let _ = ask_proxy(proxy_addr, "/v1/chat/completions", &chat(PROMPTS[0], false)).await;

    let (mut direct_ttft, mut confidential_ttft) = (Vec::new(), Vec::new());
    let (mut direct_tokens, mut confidential_tokens) = (0u64, 0u64);
    let (mut direct_time, mut confidential_time) = (Duration::ZERO, Duration::ZERO);
    let (mut direct_embedded, mut confidential_embedded) = (Duration::ZERO, Duration::ZERO);
    let embed = json!({"model": ASSET, "input": SENTENCES});
    for round in 0..rounds {
        for (i, prompt) in PROMPTS.iter().enumerate() {
            // Alternate which path goes first.
            let first_direct = (round + i) % 2 == 0;
            for direct_turn in [first_direct, !first_direct] {
                let body = chat(prompt, false);
                let t = Instant::now();
                let answer = if direct_turn {
                    ask_direct(&direct, "/v1/chat/completions", &body).await
                } else {
                    ask_proxy(proxy_addr, "/v1/chat/completions", &body).await
                };
                let spent = t.elapsed();
                let tokens = answer["usage"]["completion_tokens"].as_u64().unwrap();
                let streamed = chat(prompt, true);
                let t = Instant::now();
                let first = if direct_turn {
                    first_token_direct(&direct, &streamed).await
                } else {
                    first_token_proxy(proxy_addr, &streamed).await
                };
                let ttft = first.duration_since(t).as_secs_f64() * 1000.0;
                let t = Instant::now();
                let embedded = if direct_turn {
                    ask_direct(&direct, "/v1/embeddings", &embed).await
                } else {
                    ask_proxy(proxy_addr, "/v1/embeddings", &embed).await
                };
                assert_eq!(embedded["data"].as_array().unwrap().len(), SENTENCES.len());
                let embed_time = t.elapsed();
                if direct_turn {
                    direct_tokens += tokens;
                    direct_time += spent;
                    direct_ttft.push(ttft);
                    direct_embedded += embed_time;
                } else {
                    confidential_tokens += tokens;
                    confidential_time += spent;
                    confidential_ttft.push(ttft);
                    confidential_embedded += embed_time;
                }
            }
        }
    }
    assert_eq!(
        direct_tokens, confidential_tokens,
        "greedy decoding: both paths generate the same tokens"
    );
    let per_s = |d: Duration| (rounds * PROMPTS.len() * SENTENCES.len()) as f64 / d.as_secs_f64();
    println!(
        "inference ttft: direct_ms={:.1} confidential_ms={:.1}",
        median(&mut direct_ttft),
        median(&mut confidential_ttft)
    );
    println!(
        "inference embeddings: direct_per_s={:.1} confidential_per_s={:.1}",
        per_s(direct_embedded),
        per_s(confidential_embedded)
    );
    let direct_tps = direct_tokens as f64 / direct_time.as_secs_f64();
    let confidential_tps = confidential_tokens as f64 / confidential_time.as_secs_f64();
    println!(
        "inference: direct_tps={direct_tps:.1} confidential_tps={confidential_tps:.1} ratio={:.3}",
        confidential_tps / direct_tps
    );
}

fn request(path: &str, body: &Value) -> ApiRequest {
    ApiRequest {
        method: b"POST".to_vec(),
        path: path.as_bytes().to_vec(),
        headers: vec![(b"content-type".to_vec(), b"application/json".to_vec())],
        body: body.to_string().into_bytes(),
        deadline: tokio::time::Instant::now() + Duration::from_secs(600),
    }
}

/// A whole answer of the engine called directly.
async fn ask_direct(engine: &BuiltIn, path: &str, body: &Value) -> Value {
    let answer = engine.answer(request(path, body)).await;
    assert_eq!(answer.status, 200);
    let mut content = Vec::new();
    let mut pieces = answer.body;
    while let Some(piece) = pieces.next().await {
        content.extend_from_slice(&piece.unwrap());
    }
    serde_json::from_slice(&content).unwrap()
}

/// When the first text of a streamed answer of the engine called directly arrived.
async fn first_token_direct(engine: &BuiltIn, body: &Value) -> Instant {
    let answer = engine.answer(request("/v1/chat/completions", body)).await;
    assert_eq!(answer.status, 200);
    let mut events = Events::default();
    let mut pieces = answer.body;
    let mut first = None;
    while let Some(piece) = pieces.next().await {
        if events.push(&piece.unwrap()) && first.is_none() {
            first = Some(Instant::now());
        }
    }
    first.unwrap()
}

/// Server-sent events as they arrive: whether one with text has come.
#[derive(Default)]
struct Events {
    pending: Vec<u8>,
}

impl Events {
    fn push(&mut self, bytes: &[u8]) -> bool {
        self.pending.extend_from_slice(bytes);
        let mut text = false;
        while let Some(end) = self.pending.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = self.pending.drain(..end + 2).collect();
            // Comment lines (padding, the proxy's receipt) are skipped.
            for line in event.split(|b| *b == b'\n') {
                let Some(data) = line.strip_prefix(b"data: ") else {
                    continue;
                };
                if let Ok(chunk) = serde_json::from_slice::<Value>(data) {
                    text |= chunk["choices"][0]["delta"]["content"]
                        .as_str()
                        .is_some_and(|t| !t.is_empty());
                }
            }
        }
        text
    }
}

/// One POST to the proxy on a fresh connection: the answer's status and body.
async fn post(
    addr: SocketAddr,
    path: &str,
    body: &Value,
) -> hyper::Response<hyper::body::Incoming> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::post(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp
}

/// A whole answer through the confidential path.
async fn ask_proxy(addr: SocketAddr, path: &str, body: &Value) -> Value {
    let resp = post(addr, path, body).await;
    // A whole answer is verified before its head is sent.
    assert_eq!(resp.headers()["trustbridge-verified"], "true");
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

/// When the first text of a streamed answer through the confidential path arrived.
async fn first_token_proxy(addr: SocketAddr, body: &Value) -> Instant {
    let resp = post(addr, "/v1/chat/completions", body).await;
    let mut events = Events::default();
    let mut body = resp.into_body();
    let mut first = None;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data()
            && events.push(&data)
            && first.is_none()
        {
            first = Some(Instant::now());
        }
    }
    first.unwrap()
}
