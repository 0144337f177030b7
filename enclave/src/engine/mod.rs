//! The built-in inference engine: candle on CPU (a Nitro enclave has no GPU).
//!
//! - [`chat`]: SmolLM2-style chat models from GGUF (llama architecture, quantized), with
//!   their tokenizer built from the GGUF's own metadata ([`gguf_tokenizer`]) and their chat
//!   template; greedy or sampled decoding (temperature, top-p, seed), stop sequences
//!   ([`stop`]), a context-window check.
//! - [`embeddings`]: BERT sentence embeddings (all-MiniLM-L6-v2: safetensors and
//!   `tokenizer.json`), mean pooling and L2 normalisation.
//! - [`openai`]: the OpenAI API's request checks and answer shapes, I/O-free.
//! - [`builtin`]: the two models behind the OpenAI API, with a bounded, fair queue.
//! - [`runtime`]: runtime-proxy mode, an external runtime (vLLM) on the TEE's loopback.
//!
//! Both modes are an [`Engine`]: the gateway hands it a decapsulated API request and
//! reads its answer as it is produced, whatever answers it.
//!
//! Weights are read from the decrypted in-memory buffers the hydration produced, never
//! from a file. Each request decodes on its own copy of the model's state (the weights are
//! shared), so requests never see each other's cache.

pub mod builtin;
pub mod chat;
pub mod embeddings;
pub mod gguf_tokenizer;
pub mod openai;
pub mod runtime;
pub mod stop;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use trustbridge_protocol::receipt::Usage;

pub use builtin::BuiltIn;
pub use chat::{ChatMessage, ChatModel, FinishReason, Generated, GenerationParams};
pub use embeddings::EmbeddingModel;
pub use runtime::RuntimeEngine;

/// Which engine answers a Ready sentinel's requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EngineChoice {
    /// The built-in engine, on the model's decrypted buffers (the model must hold a chat
    /// or an embeddings model).
    BuiltIn(builtin::BuiltInLimits),
    /// An external runtime on the TEE's loopback (runtime-proxy mode).
    Runtime(runtime::RuntimeUrl),
}

impl Default for EngineChoice {
    /// The built-in engine, with its default limits.
    fn default() -> Self {
        Self::BuiltIn(builtin::BuiltInLimits::default())
    }
}

impl EngineChoice {
    /// The engine for `files` served as the model `id`. Loading the built-in engine's
    /// models is CPU work (a blocking call).
    pub fn start(
        &self,
        id: &str,
        files: &std::collections::BTreeMap<String, crate::memory::PlainBuffer>,
    ) -> Result<std::sync::Arc<dyn Engine>, EngineError> {
        Ok(match self {
            Self::BuiltIn(limits) => std::sync::Arc::new(BuiltIn::load(id, files, *limits)?),
            Self::Runtime(url) => std::sync::Arc::new(RuntimeEngine::new(url.clone())),
        })
    }
}

/// HTTP header fields, name and value.
pub type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// What answers the API requests inside the Oblivious HTTP encapsulation: the built-in
/// engine ([`BuiltIn`]) or an external runtime ([`RuntimeEngine`]).
pub trait Engine: Send + Sync + std::fmt::Debug {
    /// Answers one request: the head as soon as it is known, the content as it is
    /// produced. Errors are answers too (OpenAI-shaped JSON with their status). Dropping
    /// the answer's body stops the work behind it.
    fn answer(&self, request: ApiRequest) -> BoxFuture<'_, ApiAnswer>;

    /// The sentinel stops serving this model (suspension, shutdown, another model): work
    /// in progress ends at its next step and nothing more is taken on, even by requests
    /// that still hold the engine.
    fn stop(&self) {}
}

/// One decapsulated API request. Its `Debug` shows no content.
pub struct ApiRequest {
    /// `GET`, `POST`.
    pub method: Vec<u8>,
    /// `/v1/...` (with its query).
    pub path: Vec<u8>,
    /// Header fields (the gateway's own removed).
    pub headers: Fields,
    /// The content.
    pub body: Vec<u8>,
    /// When the answer must be complete.
    pub deadline: tokio::time::Instant,
}

impl std::fmt::Debug for ApiRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ApiRequest({} {}, {} bytes)",
            String::from_utf8_lossy(&self.method),
            String::from_utf8_lossy(&self.path),
            self.body.len()
        )
    }
}

/// An answer that broke off before its end: the status its receipt records (502: the
/// engine failed; 504: out of time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cut {
    /// The status.
    pub status: u16,
}

/// An engine's answer: its head, and its content still being produced.
pub struct ApiAnswer {
    /// The status.
    pub status: u16,
    /// Its header fields.
    pub headers: Fields,
    /// The content, piece by piece as produced (a streamed answer's pieces are its
    /// server-sent events).
    pub body: BoxStream<'static, Result<Bytes, Cut>>,
    /// The tokens the request cost, once known (before the body ends), when the engine
    /// counts them itself; otherwise they are read from the JSON answer's `usage`.
    pub usage: Option<tokio::sync::oneshot::Receiver<Usage>>,
}

impl std::fmt::Debug for ApiAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiAnswer({})", self.status)
    }
}

impl ApiAnswer {
    /// A complete JSON answer.
    pub fn json(status: u16, body: Vec<u8>, usage: Option<Usage>) -> Self {
        let usage = usage.map(|u| {
            let (tx, rx) = tokio::sync::oneshot::channel();
            // The receiver is right here: the send cannot fail.
            let _ = tx.send(u);
            rx
        });
        Self {
            status,
            headers: vec![(b"content-type".to_vec(), b"application/json".to_vec())],
            body: Box::pin(futures_util::stream::once(std::future::ready(Ok(
                Bytes::from(body),
            )))),
            usage,
        }
    }

    /// An OpenAI-shaped error answer (with `retry-after` when retrying later can help:
    /// 429 and 503).
    pub fn error(e: &openai::ApiError) -> Self {
        let mut answer = Self::json(e.status, e.body(), None);
        if matches!(e.status, 429 | 503) {
            answer
                .headers
                .push((b"retry-after".to_vec(), b"1".to_vec()));
        }
        answer
    }
}

/// The engine refused a request or could not load a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// candle failed (a malformed model, or an internal error).
    #[error("model: {0}")]
    Model(#[from] candle_core::Error),
    /// The tokenizer could not be built or failed.
    #[error("tokenizer: {0}")]
    Tokenizer(#[source] tokenizers::Error),
    /// A GGUF metadata key the engine needs is missing or has the wrong type.
    #[error("the model's GGUF metadata has no usable {0}")]
    Metadata(&'static str),
    /// The prompt and the requested completion do not fit the context window.
    #[error(
        "the prompt has {prompt} tokens and max_tokens is {max_tokens}: together more than the model's context window of {limit} tokens"
    )]
    ContextExceeded {
        /// Prompt tokens.
        prompt: usize,
        /// Requested completion tokens.
        max_tokens: usize,
        /// The window.
        limit: usize,
    },
    /// A prompt too long to fit the context window whatever its tokens (refused before
    /// it is tokenized).
    #[error("the prompt has {bytes} bytes: more than the context window can hold ({limit})")]
    PromptTooLarge {
        /// Its size.
        bytes: usize,
        /// The most that could fit.
        limit: usize,
    },
    /// The model holds neither a chat model (one `.gguf` file) nor an embeddings model
    /// (`model.safetensors` with `tokenizer.json` and `config.json` beside it).
    #[error(
        "the model holds no chat model (a .gguf file) and no embeddings model (model.safetensors, tokenizer.json and config.json in one folder)"
    )]
    NoModel,
    /// The model holds several candidates for one role.
    #[error("the model holds {0}: the built-in engine serves one of each")]
    AmbiguousModel(&'static str),
    /// A request parameter out of range.
    #[error("invalid parameter: {0}")]
    InvalidParameter(&'static str),
    /// The caller stopped the generation (a client went away); the tokens spent so far.
    #[error("the generation was cancelled")]
    Cancelled {
        /// Prompt tokens.
        prompt_tokens: usize,
        /// Tokens generated before the cancellation.
        completion_tokens: usize,
    },
    /// The request's time ran out; the tokens spent so far.
    #[error("the generation ran out of time")]
    DeadlineExceeded {
        /// Prompt tokens.
        prompt_tokens: usize,
        /// Tokens generated before the deadline.
        completion_tokens: usize,
    },
}
