//! The built-in engine behind the gateway: chat completions (whole and streamed through
//! chunked Oblivious HTTP) and embeddings through the relay equal the engine called
//! directly, with the token counts in verified receipts; bad input gets a clear
//! OpenAI-shaped error (inside the encryption, with a receipt) and the sentinel keeps
//! serving; a client that goes away mid-stream frees the engine.
//!
//! Needs the models (`scripts/fetch-models`): a loud skip without them, a failure with
//! `TB_REQUIRE_MODELS=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

#[path = "support/gateway.rs"]
mod support;
#[path = "support/world.rs"]
mod world;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use support::{Setup, http, post_chunked, read, send_chunked, session, setup_serving};
use trustbridge_client::session::{Request, Session, VerifiedAnswer};
use trustbridge_enclave::engine::builtin::{BuiltInLimits, EVENT_PADDING};
use trustbridge_enclave::engine::{ChatMessage, ChatModel, EmbeddingModel, EngineChoice};
use trustbridge_enclave::engine::{GenerationParams, embeddings};
use trustbridge_enclave::gateway::GatewayConfig;
use trustbridge_protocol::ohttp::{CHUNKED_REQUEST_MEDIA_TYPE, GATEWAY_PATH};
use world::ASSET;

const GGUF: &str = "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
const MINILM: [&str; 3] = [
    "minilm/model.safetensors",
    "minilm/tokenizer.json",
    "minilm/config.json",
];

/// The bundle's files: the chat model and the embeddings model, as the demo seals them.
fn model_files(test: &str) -> Option<Vec<(String, Vec<u8>)>> {
    let dir = trustbridge_testkit::models_dir(test, GGUF)?;
    let mut files = vec![(
        "chat/SmolLM2-135M-Instruct.Q4_1.gguf".to_owned(),
        std::fs::read(dir.join(GGUF)).unwrap(),
    )];
    for f in MINILM {
        let name = f.rsplit('/').next().unwrap();
        files.push((
            format!("embeddings/{name}"),
            std::fs::read(dir.join(f)).unwrap(),
        ));
    }
    Some(files)
}

fn file<'a>(files: &'a [(String, Vec<u8>)], suffix: &str) -> &'a [u8] {
    &files.iter().find(|(p, _)| p.ends_with(suffix)).unwrap().1
}

/// A Ready sentinel serving the models with the built-in engine.
async fn serving(files: Vec<(String, Vec<u8>)>, limits: BuiltInLimits) -> Setup {
    let w = world::world_of(true, files).await;
    setup_serving(
        w,
        Default::default(),
        GatewayConfig {
            engine: EngineChoice::BuiltIn(limits),
            ..GatewayConfig::default()
        },
    )
    .await
}

fn post(path: &str, body: &Value) -> Request {
    post_raw(path, body.to_string().into_bytes())
}

fn post_raw(path: &str, body: Vec<u8>) -> Request {
    Request {
        method: "POST".into(),
        path: path.into(),
        headers: vec![("content-type".into(), b"application/json".to_vec())],
        body,
    }
}

/// One request through the relay, its answer opened and its receipt verified.
async fn ask(s: &Setup, session: &Session, request: &Request) -> VerifiedAnswer {
    let sealed = session.seal(request).unwrap();
    let (status, _, body) = http(&s.relay, "POST", GATEWAY_PATH, sealed.encapsulated).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    session.open(sealed.pending, &body).unwrap()
}

fn json_of(a: &VerifiedAnswer) -> Value {
    serde_json::from_slice(&a.body).unwrap()
}

/// The text of a streamed answer's server-sent events, and whether it ended with
/// `[DONE]`.
fn sse_text(content: &[u8]) -> (String, Value) {
    let text = std::str::from_utf8(content).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let mut out = String::new();
    let mut usage = Value::Null;
    for event in text.split_inclusive("\n\n") {
        // Every event padded (a comment line first) to a multiple of the padding: its
        // size tells the relay nothing about the token in it.
        assert_eq!(event.len() % EVENT_PADDING, 0, "{event:?}");
        let (comment, data) = event.split_once('\n').unwrap();
        assert!(comment.starts_with(": "), "{event:?}");
        let data = data.strip_prefix("data: ").unwrap().trim_end();
        if data == "[DONE]" {
            continue;
        }
        let chunk: Value = serde_json::from_str(data).unwrap();
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], ASSET);
        if let Some(u) = chunk.get("usage") {
            usage = u.clone();
        }
        if let Some(piece) = chunk["choices"][0]["delta"]["content"].as_str() {
            out.push_str(piece);
        }
    }
    (out, usage)
}

fn greedy(max_tokens: usize) -> GenerationParams {
    GenerationParams {
        max_tokens,
        temperature: 0.0,
        ..GenerationParams::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_through_the_relay_equal_the_engine_called_directly() {
    let Some(files) = model_files("answers_through_the_relay_equal_the_engine_called_directly")
    else {
        return;
    };
    let chat = ChatModel::load(file(&files, ".gguf")).unwrap();
    let embedder = EmbeddingModel::load(
        file(&files, "model.safetensors"),
        file(&files, "tokenizer.json"),
        file(&files, "config.json"),
    )
    .unwrap();
    let s = serving(files, BuiltInLimits::default()).await;
    let session = session(&s).await;

    // The model id is the asset id.
    let models = ask(
        &s,
        &session,
        &Request {
            method: "GET".into(),
            path: "/v1/models".into(),
            headers: vec![],
            body: vec![],
        },
    )
    .await;
    assert_eq!(json_of(&models)["data"][0]["id"], ASSET);

    // A whole chat completion: the same text and counts as the engine called directly.
    let question = "What is the capital of France?";
    let direct = chat
        .chat(
            &[ChatMessage {
                role: "user".into(),
                content: question.into(),
            }],
            &greedy(24),
            |_| true,
        )
        .unwrap();
    assert!(!direct.text.is_empty());
    let request = json!({
        "model": ASSET,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": 24,
        "temperature": 0,
    });
    let answer = ask(&s, &session, &post("/v1/chat/completions", &request)).await;
    assert_eq!(answer.status, 200);
    let body = json_of(&answer);
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], ASSET);
    assert_eq!(body["choices"][0]["message"]["content"], direct.text);
    assert_eq!(body["choices"][0]["finish_reason"], direct.finish.as_str());
    assert_eq!(body["usage"]["prompt_tokens"], direct.prompt_tokens);
    assert_eq!(body["usage"]["completion_tokens"], direct.ids.len());
    let usage = answer.receipt.claims().usage.expect("usage in the receipt");
    assert_eq!(usage.prompt_tokens, direct.prompt_tokens as u64);
    assert_eq!(usage.completion_tokens, direct.ids.len() as u64);
    assert_eq!(answer.receipt.claims().status, 200);

    // The same streamed through chunked OHTTP: the pieces make the same text, and the
    // receipt (in the trailer, over every piece) carries the counts.
    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let sealed = session
        .seal_chunked(&post("/v1/chat/completions", &streamed))
        .unwrap();
    let (status, _, frames) = post_chunked(&s.relay, sealed.encapsulated).await;
    assert_eq!(status, 200);
    let (content, receipt) = read(&session, sealed.pending, frames.concat())
        .await
        .unwrap();
    let (text, usage_chunk) = sse_text(&content);
    assert_eq!(text, direct.text);
    assert_eq!(usage_chunk["completion_tokens"], direct.ids.len());
    let usage = receipt
        .claims()
        .usage
        .expect("usage in the streamed receipt");
    assert_eq!(usage.completion_tokens, direct.ids.len() as u64);
    assert_eq!(usage.prompt_tokens, direct.prompt_tokens as u64);

    // Embeddings: the same vectors as the engine's, in input order.
    let inputs = ["a sealed model", "an attested enclave answers"];
    let answer = ask(
        &s,
        &session,
        &post("/v1/embeddings", &json!({"model": ASSET, "input": inputs})),
    )
    .await;
    assert_eq!(answer.status, 200);
    let body = json_of(&answer);
    let mut tokens = 0;
    for (i, input) in inputs.iter().enumerate() {
        let direct = embedder.embed(input).unwrap();
        tokens += direct.tokens;
        let got: Vec<f32> = body["data"][i]["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(got, direct.vector, "input {i}");
    }
    assert_eq!(
        answer.receipt.claims().usage.unwrap().prompt_tokens,
        tokens as u64
    );
    assert_eq!(embeddings::MAX_INPUT_TOKENS, 256);
}

/// An OpenAI error: status, type, code, param.
type ApiErrorShape = (u16, String, Value, Value);

/// The OpenAI error of an answer.
fn error_of(a: &VerifiedAnswer) -> ApiErrorShape {
    let body = json_of(a);
    let e = &body["error"];
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    (
        a.status,
        e["type"].as_str().unwrap().to_owned(),
        e["code"].clone(),
        e["param"].clone(),
    )
}

/// Starts a streamed request and returns once its first event arrived, with the
/// connection still open (dropping it is the client going away).
async fn start_stream(
    s: &Setup,
    session: &Session,
    request: &Value,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let sealed = session
        .seal_chunked(&post("/v1/chat/completions", request))
        .unwrap();
    let stream = tokio::net::TcpStream::connect(&s.relay).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::post(GATEWAY_PATH)
        .header("host", &s.relay)
        .header("content-type", CHUNKED_REQUEST_MEDIA_TYPE)
        .body(Full::new(Bytes::from(sealed.encapsulated)))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    // The nonce and the head, then a first token's event.
    let mut seen = 0;
    while seen < 3 {
        let frame = body.frame().await.unwrap().unwrap();
        if frame.is_data() {
            seen += 1;
        }
    }
    drop(body);
    sender
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_the_sentinel_keeps_serving() {
    let test = "bad_input_gets_a_clear_error_and_the_sentinel_keeps_serving";
    let Some(files) = model_files(test) else {
        return;
    };
    // One request at a time and none waiting: a request the engine still works on is
    // visible as a 429 for the next.
    let s = serving(
        files,
        BuiltInLimits {
            workers: 1,
            max_queued: 0,
        },
    )
    .await;
    let session = session(&s).await;
    let chat = |body: Value| post("/v1/chat/completions", &body);
    let user = |text: &str| json!([{"role": "user", "content": text}]);

    let cases: Vec<(&str, Request, ApiErrorShape)> = vec![
        (
            "malformed JSON",
            post_raw("/v1/chat/completions", b"{\"model\": ".to_vec()),
            (
                400,
                "invalid_request_error".into(),
                Value::Null,
                Value::Null,
            ),
        ),
        (
            "unknown model",
            chat(json!({"model": "someone/else@v1", "messages": user("hi")})),
            (
                404,
                "invalid_request_error".into(),
                json!("model_not_found"),
                json!("model"),
            ),
        ),
        (
            "over-long prompt",
            chat(json!({"model": ASSET, "messages": user(&"confidential ".repeat(5000))})),
            (
                400,
                "invalid_request_error".into(),
                json!("context_length_exceeded"),
                json!("messages"),
            ),
        ),
        (
            "max_tokens 0",
            chat(json!({"model": ASSET, "messages": user("hi"), "max_tokens": 0})),
            (
                400,
                "invalid_request_error".into(),
                Value::Null,
                json!("max_tokens"),
            ),
        ),
        (
            "no messages",
            chat(json!({"model": ASSET, "messages": []})),
            (
                400,
                "invalid_request_error".into(),
                Value::Null,
                json!("messages"),
            ),
        ),
        (
            "embeddings of nothing",
            post("/v1/embeddings", &json!({"model": ASSET, "input": ""})),
            (
                400,
                "invalid_request_error".into(),
                Value::Null,
                json!("input"),
            ),
        ),
    ];
    for (name, request, expected) in cases {
        let answer = ask(&s, &session, &request).await;
        let status = expected.0;
        assert_eq!(
            error_of(&answer),
            expected,
            "{name}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        // Refused inside the encryption, and the receipt says so.
        assert_eq!(answer.receipt.claims().status, status, "{name}");
    }
    // Not the inference API: refused before any engine sees it.
    let answer = ask(&s, &session, &post("/v1/fine_tuning/jobs", &json!({}))).await;
    assert_eq!(answer.status, 404);

    // A client that goes away mid-stream: while its generation runs, the engine is busy
    // (429); once the client is gone, the generation stops and the engine serves again.
    let long = json!({
        "model": ASSET,
        "messages": user("Write a long story about a lighthouse keeper."),
        "max_tokens": 3000,
        "temperature": 0.7,
        "seed": 7,
        "stream": true,
    });
    let connection = start_stream(&s, &session, &long).await;
    let embed = post("/v1/embeddings", &json!({"model": ASSET, "input": "ping"}));
    let busy = ask(&s, &session, &embed).await;
    assert_eq!(
        error_of(&busy),
        (
            429,
            "rate_limit_error".to_owned(),
            json!("queue_full"),
            Value::Null
        )
    );
    drop(connection);
    let gone = Instant::now();
    loop {
        let answer = ask(&s, &session, &embed).await;
        if answer.status == 200 {
            break;
        }
        assert_eq!(answer.status, 429);
        assert!(
            gone.elapsed() < Duration::from_secs(10),
            "the abandoned generation still holds the engine"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The abandoned answer has its receipt: status 499, with the tokens it cost, in the
    // relay's log (postponed to a later answer).
    let (_, _, log) = http(&s.relay, "GET", "/receipts", vec![]).await;
    let log: Value = serde_json::from_slice(&log).unwrap();
    let abandoned: Vec<_> = log["receipts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(r["receipt"].as_str().unwrap())
                .unwrap();
            trustbridge_protocol::receipt::UnverifiedReceipt::parse(&bytes)
                .unwrap()
                .claims()
                .clone()
        })
        .filter(|c| c.status == 499)
        .collect();
    assert_eq!(abandoned.len(), 1, "{log}");
    assert!(abandoned[0].usage.unwrap().completion_tokens > 0);

    // A whole (not streamed) answer asked for over chunked OHTTP, its client gone before
    // the answer: the work stops too.
    let mut whole = long.clone();
    whole["stream"] = json!(false);
    // Until the engine is busy with it, then hang up. Its answer may come back at once,
    // refused (429, queue_full) when it meets the previous request's turn not yet given
    // back: then it is sent again.
    let (pending, conn) = 'busy: {
        for _ in 0..20 {
            let sealed = session
                .seal_chunked(&post("/v1/chat/completions", &whole))
                .unwrap();
            // A whole answer's head comes at once, its body only at its end.
            let (resp, conn) = send_chunked(&s.relay, sealed.encapsulated).await;
            let pending = tokio::spawn(resp.into_body().collect());
            let started = Instant::now();
            loop {
                if ask(&s, &session, &embed).await.status == 429 {
                    break 'busy (pending, conn);
                }
                if pending.is_finished() {
                    break;
                }
                assert!(started.elapsed() < Duration::from_secs(10), "never started");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            conn.abort();
        }
        panic!("the engine refused the chat twenty times");
    };
    pending.abort();
    conn.abort();
    let gone = Instant::now();
    while ask(&s, &session, &embed).await.status != 200 {
        assert!(
            gone.elapsed() < Duration::from_secs(10),
            "the abandoned whole answer still holds the engine"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // And it still answers chat.
    let answer = ask(
        &s,
        &session,
        &chat(json!({"model": ASSET, "messages": user("Say hello."), "max_tokens": 8})),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert!(
        !json_of(&answer)["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .is_empty()
    );
}
