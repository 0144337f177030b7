//! Sentence embeddings with a BERT model (all-MiniLM-L6-v2): the mean of the token
//! vectors, L2-normalised, as sentence-transformers computes them (its 256-token limit,
//! not the 128 of the model's `tokenizer.json`).

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config, DTYPE};
use tokenizers::{Tokenizer, TruncationParams};

use super::EngineError;

/// Most tokens of one input (sentence-transformers' `max_seq_length` for this model).
pub const MAX_INPUT_TOKENS: usize = 256;

/// A loaded embedding model.
pub struct EmbeddingModel {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    dimensions: usize,
}

impl std::fmt::Debug for EmbeddingModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmbeddingModel")
    }
}

/// Input bytes looked at: the first [`MAX_INPUT_TOKENS`] tokens never span more (a
/// WordPiece token covers at most a 100-character word), and tokenizing the rest of a huge
/// input would be wasted work.
pub const MAX_INPUT_BYTES: usize = 128 << 10;

/// One input's embedding. Its `Debug` shows the size only.
#[derive(Clone, PartialEq)]
pub struct Embedding {
    /// The unit vector.
    pub vector: Vec<f32>,
    /// Tokens the input had (after truncation).
    pub tokens: usize,
}

impl std::fmt::Debug for Embedding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Embedding({} dimensions, {} tokens)",
            self.vector.len(),
            self.tokens
        )
    }
}

impl EmbeddingModel {
    /// Loads the model from memory: `model.safetensors`, `tokenizer.json`, `config.json`.
    pub fn load(
        safetensors: &[u8],
        tokenizer_json: &[u8],
        config_json: &[u8],
    ) -> Result<Self, EngineError> {
        let config: Config = serde_json::from_slice(config_json)
            .map_err(|_| EngineError::Metadata("a BERT config.json"))?;
        let device = Device::Cpu;
        let vb = VarBuilder::from_slice_safetensors(safetensors, DTYPE, &device)?;
        let model = BertModel::load(vb, &config)?;
        let mut tokenizer =
            Tokenizer::from_bytes(tokenizer_json).map_err(EngineError::Tokenizer)?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_INPUT_TOKENS,
                ..TruncationParams::default()
            }))
            .map_err(EngineError::Tokenizer)?;
        tokenizer.with_padding(None);
        Ok(Self {
            model,
            tokenizer,
            device,
            dimensions: config.hidden_size,
        })
    }

    /// Entries of each vector.
    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// The embedding of `text` (its first [`MAX_INPUT_TOKENS`] tokens).
    pub fn embed(&self, text: &str) -> Result<Embedding, EngineError> {
        let mut end = text.len().min(MAX_INPUT_BYTES);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let encoding = self
            .tokenizer
            .encode(&text[..end], true)
            .map_err(EngineError::Tokenizer)?;
        let ids = Tensor::new(encoding.get_ids(), &self.device)?.unsqueeze(0)?;
        let types = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &types, None)?; // [1, tokens, dim]
        let mean = hidden.mean(1)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?;
        let unit = mean.broadcast_div(&norm)?.squeeze(0)?;
        Ok(Embedding {
            vector: unit.to_vec1::<f32>()?,
            tokens: encoding.get_ids().len(),
        })
    }
}
