//! A byte-level BPE tokenizer built from a GGUF's own metadata
//! (`tokenizer.ggml.tokens`, `tokenizer.ggml.merges`, `tokenizer.ggml.token_type`), as
//! llama.cpp builds it for GPT-2-style vocabularies (SmolLM2's `smollm` pre-tokenizer:
//! digits split one by one, then the GPT-2 byte-level split, no prefix space, no BOS).
//!
//! Content is encoded without the control tokens (`<|im_start|>` typed by a user is text,
//! not a control token); the chat template inserts control tokens by id.

use candle_core::quantized::gguf_file::Content;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{PreTokenizerWrapper, Tokenizer};

use super::EngineError;

/// GGUF token type of control tokens.
const CONTROL: i32 = 3;

/// The tokenizer and the ids of its control tokens.
pub struct GgufTokenizer {
    tokenizer: Tokenizer,
    tokens: Vec<String>,
    control: Vec<bool>,
}

impl std::fmt::Debug for GgufTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GgufTokenizer({} tokens)", self.tokens.len())
    }
}

fn strings(ct: &Content, key: &'static str) -> Result<Vec<String>, EngineError> {
    ct.metadata
        .get(key)
        .and_then(|v| v.to_vec().ok())
        .ok_or(EngineError::Metadata(key))?
        .iter()
        .map(|v| {
            v.to_string()
                .cloned()
                .map_err(|_| EngineError::Metadata(key))
        })
        .collect()
}

impl GgufTokenizer {
    /// The tokenizer of a GGUF whose `tokenizer.ggml.model` is `gpt2`.
    pub fn from_gguf(ct: &Content) -> Result<Self, EngineError> {
        let text = |key: &'static str| {
            ct.metadata
                .get(key)
                .and_then(|v| v.to_string().ok())
                .ok_or(EngineError::Metadata(key))
        };
        if text("tokenizer.ggml.model")? != "gpt2" {
            return Err(EngineError::Metadata("tokenizer.ggml.model = gpt2"));
        }
        // The pre-tokenizer built below is SmolLM2's; another one would tokenize wrongly
        // without an error.
        if text("tokenizer.ggml.pre")? != "smollm" {
            return Err(EngineError::Metadata("tokenizer.ggml.pre = smollm"));
        }
        let tokens = strings(ct, "tokenizer.ggml.tokens")?;
        let merges = strings(ct, "tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_owned(), b.to_owned()))
                    .ok_or(EngineError::Metadata("tokenizer.ggml.merges"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let control: Vec<bool> = match ct.metadata.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .to_vec()
                .map_err(|_| EngineError::Metadata("tokenizer.ggml.token_type"))?
                .iter()
                .map(|t| t.to_i32().map(|t| t == CONTROL))
                .collect::<Result<_, _>>()
                .map_err(|_| EngineError::Metadata("tokenizer.ggml.token_type"))?,
            None => vec![false; tokens.len()],
        };
        if control.len() != tokens.len() {
            return Err(EngineError::Metadata("tokenizer.ggml.token_type"));
        }
        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            // No cache: it would keep words of prompts in memory for the thread's life.
            .cache_capacity(0)
            .build()
            .map_err(EngineError::Tokenizer)?;
        let mut tokenizer = Tokenizer::new(bpe);
        let pre: Vec<PreTokenizerWrapper> = vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ];
        tokenizer.with_pre_tokenizer(Some(Sequence::new(pre)));
        tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
        Ok(Self {
            tokenizer,
            tokens,
            control,
        })
    }

    /// Vocabulary size.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the vocabulary is empty (never, for a loaded model).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Bytes of the longest token: `n` tokens never hold more than `n` times this.
    pub fn longest_token(&self) -> usize {
        // Byte-level BPE: each char of a token string stands for one byte.
        self.tokens
            .iter()
            .map(|t| t.chars().count())
            .max()
            .unwrap_or(1)
    }

    /// The ids of `text`, control-token strings included as plain text.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        Ok(self
            .tokenizer
            .encode(text, false)
            .map_err(EngineError::Tokenizer)?
            .get_ids()
            .to_vec())
    }

    /// The id of control token `name` (e.g. `<|im_start|>`).
    pub fn control_id(&self, name: &str) -> Option<u32> {
        self.tokens
            .iter()
            .position(|t| t == name)
            .filter(|&i| self.control[i])
            .and_then(|i| u32::try_from(i).ok())
    }

    /// Whether `id` is a control token.
    pub fn is_control(&self, id: u32) -> bool {
        self.control.get(id as usize).copied().unwrap_or(false)
    }

    /// The text of `ids` (control tokens skipped).
    pub fn decode(&self, ids: &[u32]) -> Result<String, EngineError> {
        let plain: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|i| !self.is_control(*i))
            .collect();
        self.tokenizer
            .decode(&plain, false)
            .map_err(EngineError::Tokenizer)
    }

    /// The underlying tokenizer (for incremental decoding).
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
}
