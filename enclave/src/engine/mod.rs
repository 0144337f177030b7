//! The built-in inference engine: candle on CPU (a Nitro enclave has no GPU).
//!
//! - [`chat`]: SmolLM2-style chat models from GGUF (llama architecture, quantized), with
//!   their tokenizer built from the GGUF's own metadata ([`gguf_tokenizer`]) and their chat
//!   template; greedy or sampled decoding (temperature, top-p, seed), stop sequences
//!   ([`stop`]), a context-window check.
//! - [`embeddings`]: BERT sentence embeddings (all-MiniLM-L6-v2: safetensors and
//!   `tokenizer.json`), mean pooling and L2 normalisation.
//! - [`openai`]: the OpenAI API's request checks and answer shapes, I/O-free.
//!
//! Weights are read from the decrypted in-memory buffers the hydration produced, never
//! from a file. Each request decodes on its own copy of the model's state (the weights are
//! shared), so requests never see each other's cache.

pub mod chat;
pub mod embeddings;
pub mod gguf_tokenizer;
pub mod openai;
pub mod stop;

pub use chat::{ChatMessage, ChatModel, FinishReason, Generated, GenerationParams};
pub use embeddings::EmbeddingModel;

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
