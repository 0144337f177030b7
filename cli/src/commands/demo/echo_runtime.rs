//! The demo's stand-in runtime, until the built-in engine exists: an OpenAI-shaped server
//! on 127.0.0.1 that echoes the last user message (as JSON, or streamed as server-sent
//! events). It plays the part vLLM's OpenAI server plays in a confidential GPU VM: the
//! sentinel proxies decrypted requests to it and signs receipts over its answers.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use axum::Json;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// The model id the runtime reports.
pub(crate) const MODEL: &str = "demo-echo";

/// Serves the runtime until `shutdown`; returns its address once bound.
pub(crate) async fn start(
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind the demo runtime")?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "demo runtime stopped");
        }
    });
    Ok(addr)
}

async fn models() -> Json<Value> {
    Json(
        json!({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "trustbridge-demo"}]}),
    )
}

fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

async fn chat(body: axum::body::Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        let e = json!({"error": {"message": "the request is not JSON", "type": "invalid_request_error", "code": null, "param": null}});
        return (StatusCode::BAD_REQUEST, Json(e)).into_response();
    };
    let prompt = request["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned();
    let answer = format!("Echo from inside the sentinel: {prompt}");
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if request["stream"] == true {
        let chunk = |delta: Value, finish: Value| {
            let c = json!({"id": "chatcmpl-demo", "object": "chat.completion.chunk", "created": created, "model": MODEL,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
            format!("data: {c}\n\n")
        };
        let mut events = chunk(json!({"role": "assistant", "content": ""}), Value::Null);
        for (i, word) in answer.split(' ').enumerate() {
            let piece = if i == 0 {
                word.to_owned()
            } else {
                format!(" {word}")
            };
            events.push_str(&chunk(json!({"content": piece}), Value::Null));
        }
        events.push_str(&chunk(json!({}), json!("stop")));
        events.push_str("data: [DONE]\n\n");
        return ([(header::CONTENT_TYPE, "text/event-stream")], events).into_response();
    }
    Json(json!({
        "id": "chatcmpl-demo",
        "object": "chat.completion",
        "created": created,
        "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": words(&prompt), "completion_tokens": words(&answer), "total_tokens": words(&prompt) + words(&answer)},
    }))
    .into_response()
}
