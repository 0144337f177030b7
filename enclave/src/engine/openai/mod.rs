//! The OpenAI API's shapes for the built-in engine, I/O-free: requests parsed and checked
//! (size caps before any work; unsupported options refused, not ignored), answers and
//! stream chunks built, errors in OpenAI's form with their HTTP status.
//!
//! `POST /v1/chat/completions`, `POST /v1/embeddings`, `GET /v1/models`; the model id is
//! the asset id.

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use super::EngineError;
use super::chat::{ChatMessage, FinishReason, Generated, GenerationParams};

/// Largest request body read.
pub const MAX_BODY: usize = 1 << 20;
/// Most text (bytes) in one request's messages or inputs: more cannot fit the context
/// window, and tokenizing it would be wasted work.
pub const MAX_TEXT: usize = 256 << 10;
/// Most messages in a chat request, or inputs in an embeddings request.
pub const MAX_ITEMS: usize = 256;
/// Most stop sequences (OpenAI's limit).
pub const MAX_STOPS: usize = 4;
/// Completion tokens when the request names none.
pub const DEFAULT_MAX_TOKENS: usize = 256;

/// A refused request: HTTP status and OpenAI's error object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {kind}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// `type`: `invalid_request_error`, `not_found_error`, `server_error`, ...
    pub kind: &'static str,
    /// `code`, when there is one (`model_not_found`, `context_length_exceeded`).
    pub code: Option<&'static str>,
    /// `param`, when one parameter is at fault.
    pub param: Option<&'static str>,
    /// The message (never request content).
    pub message: String,
}

impl ApiError {
    /// A 400 on `param`.
    pub fn invalid(param: Option<&'static str>, message: impl Into<String>) -> Self {
        Self {
            status: 400,
            kind: "invalid_request_error",
            code: None,
            param,
            message: message.into(),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Vec<u8> {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
        .to_string()
        .into_bytes()
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::ContextExceeded { .. } => Self {
                code: Some("context_length_exceeded"),
                ..Self::invalid(Some("messages"), e.to_string())
            },
            EngineError::InvalidParameter(m) => Self::invalid(None, m),
            EngineError::PromptTooLarge { .. } => Self {
                code: Some("context_length_exceeded"),
                ..Self::invalid(Some("messages"), e.to_string())
            },
            EngineError::Cancelled { .. } => Self {
                status: 499,
                kind: "invalid_request_error",
                code: None,
                param: None,
                message: e.to_string(),
            },
            EngineError::DeadlineExceeded { .. } => Self {
                status: 504,
                kind: "server_error",
                code: Some("timeout"),
                param: None,
                message: e.to_string(),
            },
            EngineError::Model(_)
            | EngineError::Tokenizer(_)
            | EngineError::Metadata(_)
            | EngineError::NoModel
            | EngineError::AmbiguousModel(_) => Self {
                status: 500,
                kind: "server_error",
                code: None,
                param: None,
                message: "the engine failed".into(),
            },
        }
    }
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    if body.len() > MAX_BODY {
        return Err(ApiError {
            status: 413,
            ..ApiError::invalid(
                None,
                format!("the request body is larger than {MAX_BODY} bytes"),
            )
        });
    }
    serde_json::from_slice(body).map_err(|e| {
        // serde_json's messages can quote the request ("invalid type: string \"...\""):
        // only the position, and a missing field's name, go back.
        let what = match e.classify() {
            serde_json::error::Category::Data => {
                let m = e.to_string();
                match m.strip_prefix("missing field `") {
                    Some(rest) => format!(
                        "missing field {}",
                        rest.split('`').next().unwrap_or_default()
                    ),
                    None => "a field is missing or has the wrong type".to_owned(),
                }
            }
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                "not valid JSON".to_owned()
            }
            serde_json::error::Category::Io => "unreadable".to_owned(),
        };
        ApiError::invalid(
            None,
            format!(
                "the request body is not a valid request for this endpoint: {what} (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })
}

fn check_model(model: &str, served: &str) -> Result<(), ApiError> {
    if model == served {
        return Ok(());
    }
    Err(ApiError {
        status: 404,
        kind: "invalid_request_error",
        code: Some("model_not_found"),
        param: Some("model"),
        message: format!("this sentinel serves the model {served:?} only"),
    })
}

/// Message content: a string, or an array of text parts.
#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    content: Option<Content>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Default)]
struct StreamOptions {
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
struct ChatRequestWire {
    model: String,
    messages: Vec<Message>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    stop: Option<Stop>,
    seed: Option<i64>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    n: Option<u64>,
    logprobs: Option<bool>,
    tools: Option<Value>,
    response_format: Option<Value>,
    // Accepted only at their neutral values: anything else would change the answer in a
    // way this engine cannot, so it is refused rather than ignored.
    presence_penalty: Option<f64>,
    frequency_penalty: Option<f64>,
    logit_bias: Option<Value>,
    top_logprobs: Option<Value>,
    tool_choice: Option<Value>,
    functions: Option<Value>,
    function_call: Option<Value>,
}

/// A checked chat completion request.
#[derive(Clone, PartialEq)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Generation parameters (the seed drawn by the caller when the request has none).
    pub params: GenerationParams,
    /// Whether the request named a seed.
    pub seeded: bool,
    /// Answer as server-sent events.
    pub stream: bool,
    /// Streamed: end with a usage chunk.
    pub include_usage: bool,
}

impl std::fmt::Debug for ChatRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ChatRequest({} messages, {:?}, stream {})",
            self.messages.len(),
            self.params.max_tokens,
            self.stream
        )
    }
}

/// Parses and checks a `/v1/chat/completions` body for the model `served`.
pub fn chat_request(body: &[u8], served: &str) -> Result<ChatRequest, ApiError> {
    let w: ChatRequestWire = parse(body)?;
    check_model(&w.model, served)?;
    if w.messages.is_empty() || w.messages.len() > MAX_ITEMS {
        return Err(ApiError::invalid(
            Some("messages"),
            format!("messages must hold 1 to {MAX_ITEMS} messages"),
        ));
    }
    if w.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid(Some("n"), "only n = 1 is supported"));
    }
    if w.logprobs == Some(true) {
        return Err(ApiError::invalid(
            Some("logprobs"),
            "logprobs are not supported",
        ));
    }
    if w.tools.as_ref().is_some_and(|t| !t.is_null()) {
        return Err(ApiError::invalid(Some("tools"), "tools are not supported"));
    }
    let set = |v: &Option<Value>| {
        v.as_ref()
            .is_some_and(|v| !(v.is_null() || v.as_object().is_some_and(serde_json::Map::is_empty)))
    };
    for (param, value) in [
        ("logit_bias", &w.logit_bias),
        ("top_logprobs", &w.top_logprobs),
        ("functions", &w.functions),
        ("function_call", &w.function_call),
    ] {
        if set(value) {
            return Err(ApiError::invalid(
                Some(param),
                format!("{param} is not supported"),
            ));
        }
    }
    if set(&w.tool_choice) && w.tool_choice.as_ref().and_then(Value::as_str) != Some("none") {
        return Err(ApiError::invalid(
            Some("tool_choice"),
            "tool_choice is not supported",
        ));
    }
    for (param, value) in [
        ("presence_penalty", w.presence_penalty),
        ("frequency_penalty", w.frequency_penalty),
    ] {
        if value.is_some_and(|p| p != 0.0) {
            return Err(ApiError::invalid(
                Some(param),
                format!("{param} is not supported (only 0)"),
            ));
        }
    }
    if let Some(f) = &w.response_format
        && f.get("type").and_then(Value::as_str) != Some("text")
    {
        return Err(ApiError::invalid(
            Some("response_format"),
            "only the text response format is supported",
        ));
    }
    let mut text = 0usize;
    let mut messages = Vec::with_capacity(w.messages.len());
    for m in w.messages {
        // Checked here, before the request waits for the engine.
        if !matches!(
            m.role.as_str(),
            "system" | "developer" | "user" | "assistant"
        ) {
            return Err(ApiError::invalid(
                Some("messages"),
                "a message role must be system, developer, user or assistant (tools are not supported)",
            ));
        }
        let content = match m.content {
            None => String::new(),
            Some(Content::Text(t)) => t,
            Some(Content::Parts(parts)) => {
                let mut joined = String::new();
                for p in parts {
                    match (p.kind.as_str(), p.text) {
                        ("text", Some(t)) => joined.push_str(&t),
                        _ => {
                            return Err(ApiError::invalid(
                                Some("messages"),
                                "only text content parts are supported",
                            ));
                        }
                    }
                }
                joined
            }
        };
        text = text.saturating_add(content.len());
        messages.push(ChatMessage {
            role: m.role,
            content,
        });
    }
    if text > MAX_TEXT {
        return Err(ApiError {
            code: Some("context_length_exceeded"),
            ..ApiError::invalid(
                Some("messages"),
                format!("the messages hold more than {MAX_TEXT} bytes of text"),
            )
        });
    }
    let max_tokens = match w.max_completion_tokens.or(w.max_tokens) {
        None => DEFAULT_MAX_TOKENS,
        Some(0) => {
            return Err(ApiError::invalid(
                Some("max_tokens"),
                "max_tokens must be at least 1",
            ));
        }
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
    };
    let temperature = w.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::invalid(
            Some("temperature"),
            "temperature must be between 0 and 2",
        ));
    }
    let top_p = w.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid(Some("top_p"), "top_p must be in (0, 1]"));
    }
    let stop = match w.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    };
    if stop.len() > MAX_STOPS || stop.iter().any(|s| s.len() > 256) {
        return Err(ApiError::invalid(
            Some("stop"),
            format!("at most {MAX_STOPS} stop sequences of at most 256 bytes"),
        ));
    }
    Ok(ChatRequest {
        messages,
        params: GenerationParams {
            max_tokens,
            temperature,
            top_p,
            stop,
            // Two's complement: a negative seed is a seed too.
            seed: w.seed.map_or(0, |s| s as u64),
            deadline: None,
            fit_context: w.max_completion_tokens.or(w.max_tokens).is_none(),
        },
        seeded: w.seed.is_some(),
        stream: w.stream == Some(true),
        include_usage: w
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
    })
}

/// The `usage` object.
pub fn usage(prompt: usize, completion: usize) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}

/// A complete `chat.completion` answer.
pub fn chat_completion(id: &str, created: u64, model: &str, g: &Generated) -> Vec<u8> {
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": g.text},
            "finish_reason": g.finish.as_str(),
        }],
        "usage": usage(g.prompt_tokens, g.ids.len()),
    })
    .to_string()
    .into_bytes()
}

/// One server-sent event of a streamed answer: a `chat.completion.chunk` with `delta` and
/// `finish_reason`, or (`usage` given) the final usage chunk.
pub fn chat_chunk(
    id: &str,
    created: u64,
    model: &str,
    delta: Value,
    finish: Option<FinishReason>,
    usage: Option<Value>,
) -> Vec<u8> {
    let choices = if usage.is_some() {
        json!([])
    } else {
        json!([{"index": 0, "delta": delta, "finish_reason": finish.map(FinishReason::as_str)}])
    };
    let mut chunk = json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
    });
    if let Some(u) = usage {
        chunk["usage"] = u;
    }
    format!("data: {chunk}\n\n").into_bytes()
}

/// The end of a stream.
pub const STREAM_DONE: &[u8] = b"data: [DONE]\n\n";

#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct EmbeddingsRequestWire {
    model: String,
    input: Input,
    encoding_format: Option<String>,
    dimensions: Option<u64>,
}

/// A checked embeddings request.
#[derive(Clone, PartialEq, Eq)]
pub struct EmbeddingsRequest {
    /// The inputs.
    pub inputs: Vec<String>,
    /// Vectors as base64 (little-endian f32) rather than numbers.
    pub base64: bool,
}

impl std::fmt::Debug for EmbeddingsRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EmbeddingsRequest({} inputs)", self.inputs.len())
    }
}

/// Parses and checks a `/v1/embeddings` body for the model `served`, whose vectors have
/// `dimensions` entries.
pub fn embeddings_request(
    body: &[u8],
    served: &str,
    dimensions: usize,
) -> Result<EmbeddingsRequest, ApiError> {
    let w: EmbeddingsRequestWire = parse(body).map_err(|e| {
        if e.status == 400 {
            ApiError::invalid(
                Some("input"),
                "input must be a string or an array of strings (token arrays are not supported)",
            )
        } else {
            e
        }
    })?;
    check_model(&w.model, served)?;
    let inputs = match w.input {
        Input::One(s) => vec![s],
        Input::Many(v) => v,
    };
    if inputs.is_empty() || inputs.len() > MAX_ITEMS {
        return Err(ApiError::invalid(
            Some("input"),
            format!("input must hold 1 to {MAX_ITEMS} strings"),
        ));
    }
    if inputs.iter().any(String::is_empty) {
        return Err(ApiError::invalid(Some("input"), "an input is empty"));
    }
    if inputs.iter().map(String::len).sum::<usize>() > MAX_TEXT {
        return Err(ApiError::invalid(
            Some("input"),
            format!("the inputs hold more than {MAX_TEXT} bytes of text"),
        ));
    }
    if w.dimensions.is_some_and(|d| d != dimensions as u64) {
        return Err(ApiError::invalid(
            Some("dimensions"),
            format!("this model's vectors have {dimensions} dimensions"),
        ));
    }
    let base64 = match w.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => {
            return Err(ApiError::invalid(
                Some("encoding_format"),
                "encoding_format must be float or base64",
            ));
        }
    };
    Ok(EmbeddingsRequest { inputs, base64 })
}

/// The `/v1/embeddings` answer for `vectors` (in input order) and their token count.
pub fn embeddings_response(
    model: &str,
    vectors: &[Vec<f32>],
    tokens: usize,
    base64: bool,
) -> Vec<u8> {
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })
    .to_string()
    .into_bytes()
}

/// The `/v1/models` answer.
pub fn models(model: &str, created: u64) -> Vec<u8> {
    json!({
        "object": "list",
        "data": [{"id": model, "object": "model", "created": created, "owned_by": "trustbridge"}],
    })
    .to_string()
    .into_bytes()
}

#[cfg(test)]
mod tests;
