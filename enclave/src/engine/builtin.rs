//! The built-in engine behind the OpenAI API: the model's chat model (one `.gguf` file)
//! and embeddings model (`model.safetensors`, `tokenizer.json`, `config.json`), loaded
//! from the decrypted buffers.
//!
//! Work runs on blocking threads, `workers` requests at a time (each uses every core
//! through candle's thread pool: on a small enclave one at a time is fastest); others wait
//! in a first-come, first-served queue of at most `max_queued`, beyond which a request is
//! refused at once (429). A request's deadline covers its wait and its work; a client that
//! goes away (its answer dropped) stops its generation at the next token.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use trustbridge_protocol::receipt::Usage;

use super::openai::{self, ApiError};
use super::{ApiAnswer, ApiRequest, ChatModel, Cut, EmbeddingModel, Engine, EngineError};
use crate::memory::PlainBuffer;

/// How much work the engine takes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuiltInLimits {
    /// Requests computed at once.
    pub workers: usize,
    /// Requests waiting beyond those; more are refused (429).
    pub max_queued: usize,
}

impl Default for BuiltInLimits {
    /// One at a time (candle already spreads one request over every core), 32 waiting.
    fn default() -> Self {
        Self {
            workers: 1,
            max_queued: 32,
        }
    }
}

/// The built-in engine: the models and the queue in front of them.
pub struct BuiltIn {
    id: String,
    created: u64,
    chat: Option<Arc<ChatModel>>,
    embeddings: Option<Arc<EmbeddingModel>>,
    slots: Arc<Semaphore>,
    admitted: Arc<AtomicUsize>,
    limits: BuiltInLimits,
    /// Set when the sentinel stops serving this model: work in progress stops at its next
    /// token, queued requests are refused.
    stopped: Arc<AtomicBool>,
}

impl std::fmt::Debug for BuiltIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "BuiltIn({}, chat {}, embeddings {}, {:?})",
            self.id,
            self.chat.is_some(),
            self.embeddings.is_some(),
            self.limits
        )
    }
}

/// The one file whose path ends with `suffix` (at the top or in a folder), if any.
fn only<'a>(
    files: &'a BTreeMap<String, PlainBuffer>,
    matches: impl Fn(&str) -> bool,
    what: &'static str,
) -> Result<Option<(&'a str, &'a PlainBuffer)>, EngineError> {
    let mut found = files.iter().filter(|(p, _)| matches(p));
    let first = found.next();
    if found.next().is_some() {
        return Err(EngineError::AmbiguousModel(what));
    }
    Ok(first.map(|(p, b)| (p.as_str(), b)))
}

impl BuiltIn {
    /// Loads the models in `files` (bundle paths to plaintext) to serve as the model
    /// `id` (the asset id).
    pub fn load(
        id: &str,
        files: &BTreeMap<String, PlainBuffer>,
        limits: BuiltInLimits,
    ) -> Result<Self, EngineError> {
        let chat = only(files, |p| p.ends_with(".gguf"), "several .gguf files")?
            .map(|(_, gguf)| ChatModel::load(gguf.as_slice()))
            .transpose()?;
        let is_weights = |p: &str| p == "model.safetensors" || p.ends_with("/model.safetensors");
        let embeddings = match only(files, is_weights, "several model.safetensors files")? {
            None => None,
            Some((path, weights)) => {
                let folder = &path[..path.len() - "model.safetensors".len()];
                let beside = |name: &str| {
                    files
                        .get(&format!("{folder}{name}"))
                        .ok_or(EngineError::NoModel)
                };
                Some(EmbeddingModel::load(
                    weights.as_slice(),
                    beside("tokenizer.json")?.as_slice(),
                    beside("config.json")?.as_slice(),
                )?)
            }
        };
        if chat.is_none() && embeddings.is_none() {
            return Err(EngineError::NoModel);
        }
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ok(Self {
            id: id.to_owned(),
            created,
            chat: chat.map(Arc::new),
            embeddings: embeddings.map(Arc::new),
            slots: Arc::new(Semaphore::new(limits.workers.max(1))),
            admitted: Arc::new(AtomicUsize::new(0)),
            limits,
            stopped: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Whether it serves chat completions.
    pub fn has_chat(&self) -> bool {
        self.chat.is_some()
    }

    /// Whether it serves embeddings.
    pub fn has_embeddings(&self) -> bool {
        self.embeddings.is_some()
    }

    /// A turn to compute, in arrival order, by `deadline`; refused at once when the
    /// queue is full.
    async fn slot(&self, deadline: tokio::time::Instant) -> Result<Slot, ApiError> {
        let admitted = Admitted::new(self.admitted.clone());
        if self.stopped.load(Ordering::SeqCst) {
            return Err(ApiError {
                status: 503,
                kind: "server_error",
                code: Some("model_withdrawn"),
                param: None,
                message: "the sentinel stopped serving this model".into(),
            });
        }
        if admitted.count > self.limits.workers.max(1) + self.limits.max_queued {
            return Err(ApiError {
                status: 429,
                kind: "rate_limit_error",
                code: Some("queue_full"),
                param: None,
                message: "the engine's queue is full: retry later".into(),
            });
        }
        match tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Slot {
                _permit: permit,
                _admitted: admitted,
            }),
            Ok(Err(_)) => Err(ApiError {
                status: 503,
                kind: "server_error",
                code: Some("model_withdrawn"),
                param: None,
                message: "the sentinel stopped serving this model".into(),
            }),
            Err(_) => Err(timeout_error(
                "the request waited in the queue past its deadline",
            )),
        }
    }

    async fn chat_completion(&self, request: ApiRequest) -> ApiAnswer {
        let Some(model) = self.chat.clone() else {
            return ApiAnswer::error(&no_such_model("chat completions"));
        };
        let mut chat = match openai::chat_request(&request.body, &self.id) {
            Ok(c) => c,
            Err(e) => return ApiAnswer::error(&e),
        };
        if !chat.seeded {
            match random::<8>() {
                Some(seed) => chat.params.seed = u64::from_le_bytes(seed),
                None => return ApiAnswer::error(&server_error("no randomness")),
            }
        }
        chat.params.deadline = Some(engine_deadline(request.deadline));
        let Some(id) = random::<12>().map(|r| format!("chatcmpl-{}", hex::encode(r))) else {
            return ApiAnswer::error(&server_error("no randomness"));
        };
        let slot = match self.slot(request.deadline).await {
            Ok(s) => s,
            Err(e) => return ApiAnswer::error(&e),
        };
        let reply = Reply {
            id,
            created: unix_now(),
            model: self.id.clone(),
        };
        if chat.stream {
            return stream(model, chat, reply, slot, self.stopped.clone()).await;
        }
        let (tx, rx) = oneshot::channel();
        let stopped = self.stopped.clone();
        tokio::task::spawn_blocking(move || {
            // A client gone (the answer dropped) stops the generation.
            let generated = model.chat(&chat.messages, &chat.params, |_| {
                !tx.is_closed() && !stopped.load(Ordering::SeqCst)
            });
            // The turn is free before the answer goes: a client that sends its next
            // request as soon as it has this answer must not find the queue full.
            drop(slot);
            let _ = tx.send(generated);
        });
        match rx.await {
            Ok(Ok(g)) => ApiAnswer::json(
                200,
                openai::chat_completion(&reply.id, reply.created, &reply.model, &g),
                Some(usage(g.prompt_tokens, g.ids.len())),
            ),
            Ok(Err(e)) => {
                let spent = spent(&e);
                let refused = ApiError::from(e);
                ApiAnswer::json(refused.status, refused.body(), spent)
            }
            Err(_) => ApiAnswer::error(&server_error("the engine failed")),
        }
    }

    async fn embeddings(&self, request: ApiRequest) -> ApiAnswer {
        let Some(model) = self.embeddings.clone() else {
            return ApiAnswer::error(&no_such_model("embeddings"));
        };
        let wanted = match openai::embeddings_request(&request.body, &self.id, model.dimensions()) {
            Ok(w) => w,
            Err(e) => return ApiAnswer::error(&e),
        };
        let slot = match self.slot(request.deadline).await {
            Ok(s) => s,
            Err(e) => return ApiAnswer::error(&e),
        };
        let deadline = engine_deadline(request.deadline);
        let (tx, rx) = oneshot::channel();
        let stopped = self.stopped.clone();
        tokio::task::spawn_blocking(move || {
            let embedded = (|| {
                let mut vectors = Vec::with_capacity(wanted.inputs.len());
                let mut tokens = 0;
                for input in &wanted.inputs {
                    if tx.is_closed()
                        || stopped.load(Ordering::SeqCst)
                        || std::time::Instant::now() >= deadline
                    {
                        return Err(timeout_error(
                            "the embeddings ran past the request's deadline",
                        ));
                    }
                    let e = model.embed(input).map_err(ApiError::from)?;
                    tokens += e.tokens;
                    vectors.push(e.vector);
                }
                Ok((vectors, tokens, wanted.base64))
            })();
            // The turn is free before the answer goes (as for chat).
            drop(slot);
            let _ = tx.send(embedded);
        });
        match rx.await {
            Ok(Ok((vectors, tokens, base64))) => ApiAnswer::json(
                200,
                openai::embeddings_response(&self.id, &vectors, tokens, base64),
                Some(usage(tokens, 0)),
            ),
            Ok(Err(e)) => ApiAnswer::error(&e),
            Err(_) => ApiAnswer::error(&server_error("the engine failed")),
        }
    }
}

/// The engine's own deadline: a moment before the request's, so that the engine ends the
/// work itself (and reports what it spent, for the receipt) before the gateway gives up.
fn engine_deadline(request: tokio::time::Instant) -> std::time::Instant {
    let margin = std::time::Duration::from_millis(500);
    let now = tokio::time::Instant::now();
    let left = request.saturating_duration_since(now);
    std::time::Instant::now() + left.saturating_sub(margin)
}

impl Engine for BuiltIn {
    fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.slots.close();
    }

    fn answer(&self, request: ApiRequest) -> BoxFuture<'_, ApiAnswer> {
        async move {
            let path = request.path.split(|b| *b == b'?').next().unwrap_or(&[]);
            match (request.method.as_slice(), path) {
                (b"GET", b"/v1/models") => {
                    ApiAnswer::json(200, openai::models(&self.id, self.created), None)
                }
                (b"POST", b"/v1/chat/completions") => self.chat_completion(request).await,
                (b"POST", b"/v1/embeddings") => self.embeddings(request).await,
                _ => ApiAnswer::error(&ApiError {
                    status: 404,
                    kind: "invalid_request_error",
                    code: Some("unknown_url"),
                    param: None,
                    message: "the built-in engine serves GET /v1/models, POST /v1/chat/completions and POST /v1/embeddings".into(),
                }),
            }
        }
        .boxed()
    }
}

/// A request admitted to the engine (waiting or computing): counted while it lives.
struct Admitted {
    counter: Arc<AtomicUsize>,
    count: usize,
}

impl Admitted {
    fn new(counter: Arc<AtomicUsize>) -> Self {
        let count = counter.fetch_add(1, Ordering::SeqCst) + 1;
        Self { counter, count }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A turn to compute; the next request's turn when dropped.
struct Slot {
    _permit: OwnedSemaphorePermit,
    _admitted: Admitted,
}

/// Server-sent events are padded to a multiple of this many bytes: each event is its own
/// encrypted chunk, and without padding its size would show the relay the length of every
/// token (enough to guess much of a text from; Weiss et al., "What Was Your Prompt?", 2024).
pub const EVENT_PADDING: usize = 256;

/// `event` (a server-sent event, ending in a blank line) with a comment line in front
/// (`: ` and spaces, which SSE readers ignore) that brings its length to a multiple of
/// [`EVENT_PADDING`].
fn padded(event: &[u8]) -> Bytes {
    // The comment line is at least ": \n" (3 bytes).
    let len = (event.len() + 3).next_multiple_of(EVENT_PADDING);
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(b": ");
    out.resize(len - event.len() - 1, b' ');
    out.push(b'\n');
    out.extend_from_slice(event);
    Bytes::from(out)
}

/// What every chunk of one answer repeats.
struct Reply {
    id: String,
    created: u64,
    model: String,
}

impl Reply {
    /// A padded `chat.completion.chunk` event (with `usage`: the final usage chunk).
    fn chunk(
        &self,
        delta: serde_json::Value,
        finish: Option<super::FinishReason>,
        usage: Option<serde_json::Value>,
    ) -> Bytes {
        padded(&openai::chat_chunk(
            &self.id,
            self.created,
            &self.model,
            delta,
            finish,
            usage,
        ))
    }
}

/// The sending side of a streamed answer: unless it is finished, dropping it (a panic in
/// the engine, say) cuts the answer with a 502, so a stream never ends cleanly without its
/// end.
struct Events {
    tx: mpsc::UnboundedSender<Result<Bytes, Cut>>,
    finished: bool,
}

impl Events {
    /// Sends `event`; false when nobody reads the answer any more.
    fn send(&self, event: Bytes) -> bool {
        self.tx.send(Ok(event)).is_ok()
    }

    fn reader_gone(&self) -> bool {
        self.tx.is_closed()
    }

    /// Ends the answer with `cut`.
    fn cut(mut self, cut: Cut) {
        self.finished = true;
        let _ = self.tx.send(Err(cut));
    }

    /// Ends the answer normally.
    fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.tx.send(Err(Cut { status: 502 }));
        }
    }
}

/// A streamed chat completion: server-sent events as the tokens come. The head waits
/// until the request is known to be computable (the prompt fits), so a refusal is a
/// plain error answer; after it, a failure cuts the stream (and the receipt says so).
///
/// The events are queued without bound (an answer is at most `max_tokens` events of a
/// few hundred bytes): the generation runs at compute speed and frees its slot, however
/// slowly the client reads; a client gone stops it at the next token.
async fn stream(
    model: Arc<ChatModel>,
    chat: openai::ChatRequest,
    reply: Reply,
    slot: Slot,
    stopped: Arc<AtomicBool>,
) -> ApiAnswer {
    let (head_tx, head_rx) = oneshot::channel::<Result<(), EngineError>>();
    let (usage_tx, usage_rx) = oneshot::channel();
    let (tx, rx) = mpsc::unbounded_channel::<Result<Bytes, Cut>>();
    tokio::task::spawn_blocking(move || {
        let events = Events {
            tx,
            finished: false,
        };
        let mut head = Some(head_tx);
        let generated = model.chat(&chat.messages, &chat.params, |text| {
            if stopped.load(Ordering::SeqCst) {
                return false;
            }
            if let Some(h) = head.take() {
                // The prompt is checked: the answer starts.
                if h.send(Ok(())).is_err() {
                    return false;
                }
                let first = reply.chunk(json!({"role": "assistant", "content": ""}), None, None);
                return events.send(first);
            }
            if text.is_empty() {
                return !events.reader_gone();
            }
            events.send(reply.chunk(json!({"content": text}), None, None))
        });
        // The generation is over: its turn is free before the last events go, so a client
        // that sends its next request as soon as it has `[DONE]` finds the queue open.
        drop(slot);
        match generated {
            Err(e) => {
                if let Some(h) = head.take() {
                    events.finish();
                    let _ = h.send(Err(e));
                    return;
                }
                if let Some(u) = spent(&e) {
                    let _ = usage_tx.send(u);
                }
                let status = ApiError::from(e).status;
                events.cut(Cut {
                    status: if status == 504 { 504 } else { 502 },
                });
            }
            Ok(g) => {
                let u = usage(g.prompt_tokens, g.ids.len());
                let _ = usage_tx.send(u);
                let mut end = vec![reply.chunk(json!({}), Some(g.finish), None)];
                if chat.include_usage {
                    let counts = openai::usage(g.prompt_tokens, g.ids.len());
                    end.push(reply.chunk(json!({}), None, Some(counts)));
                }
                end.push(padded(openai::STREAM_DONE));
                for piece in end {
                    if !events.send(piece) {
                        break;
                    }
                }
                events.finish();
            }
        }
    });
    match head_rx.await {
        Ok(Ok(())) => ApiAnswer {
            status: 200,
            headers: vec![
                (b"content-type".to_vec(), b"text/event-stream".to_vec()),
                (b"cache-control".to_vec(), b"no-cache".to_vec()),
            ],
            body: Box::pin(receiver_stream(rx)),
            usage: Some(usage_rx),
        },
        Ok(Err(e)) => ApiAnswer::error(&ApiError::from(e)),
        Err(_) => ApiAnswer::error(&server_error("the engine failed")),
    }
}

/// The receiver as a stream.
fn receiver_stream<T: Send + 'static>(
    mut rx: mpsc::UnboundedReceiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The tokens a failed generation spent, when it got that far.
fn spent(e: &EngineError) -> Option<Usage> {
    match *e {
        EngineError::Cancelled {
            prompt_tokens,
            completion_tokens,
        }
        | EngineError::DeadlineExceeded {
            prompt_tokens,
            completion_tokens,
        } => Some(usage(prompt_tokens, completion_tokens)),
        _ => None,
    }
}

fn usage(prompt: usize, completion: usize) -> Usage {
    Usage {
        prompt_tokens: prompt as u64,
        completion_tokens: completion as u64,
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `N` random bytes; `None` when the system has none to give.
fn random<const N: usize>() -> Option<[u8; N]> {
    let mut bytes = [0u8; N];
    aws_lc_rs::rand::fill(&mut bytes).ok()?;
    Some(bytes)
}

fn no_such_model(what: &str) -> ApiError {
    ApiError {
        status: 404,
        kind: "invalid_request_error",
        code: Some("model_not_found"),
        param: Some("model"),
        message: format!("this model does not serve {what}"),
    }
}

fn server_error(message: &str) -> ApiError {
    ApiError {
        status: 500,
        kind: "server_error",
        code: None,
        param: None,
        message: message.into(),
    }
}

fn timeout_error(message: &str) -> ApiError {
    ApiError {
        status: 504,
        kind: "server_error",
        code: Some("timeout"),
        param: None,
        message: message.into(),
    }
}
