//! Chat completion with a GGUF llama-architecture model (SmolLM2-135M-Instruct, Q4_1).
//!
//! The prompt follows the model's ChatML template, built from ids: control tokens
//! (`<|im_start|>`, `<|im_end|>`) are inserted by id and message content is encoded as
//! text, so a user cannot forge a turn by typing a control token. Decoding stops at a
//! control token (end of turn), a stop sequence, or `max_tokens`.

use candle_core::quantized::gguf_file::Content;
use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use candle_transformers::models::quantized_llama::{MAX_SEQ_LEN, ModelWeights};

use super::EngineError;
use super::gguf_tokenizer::GgufTokenizer;
use super::stop::{Step, StopMatcher};

/// One chat message.
#[derive(Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system` (or `developer`), `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl std::fmt::Debug for ChatMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let role = match self.role.as_str() {
            r @ ("system" | "developer" | "user" | "assistant") => r,
            _ => "(other)",
        };
        write!(f, "ChatMessage({role}, {} bytes)", self.content.len())
    }
}

/// Most stop sequences (OpenAI's limit).
pub const MAX_STOPS: usize = 4;
/// Longest stop sequence, in bytes.
pub const MAX_STOP_LEN: usize = 256;
/// Prompt tokens run through the model at once: the attention scores of a long prompt in
/// one pass would take gigabytes.
pub const PREFILL_CHUNK: usize = 256;

/// How to generate. Its `Debug` shows no stop sequence.
#[derive(Clone, PartialEq)]
pub struct GenerationParams {
    /// Most tokens to generate (at least 1).
    pub max_tokens: usize,
    /// 0 for greedy decoding; up to 2.
    pub temperature: f64,
    /// Nucleus sampling: the smallest set of tokens whose probability reaches `top_p`
    /// (1 for all).
    pub top_p: f64,
    /// Generation ends before the first of these.
    pub stop: Vec<String>,
    /// The sampler's seed: the same seed, prompt and parameters give the same tokens.
    pub seed: u64,
    /// When the generation must have ended ([`EngineError::DeadlineExceeded`] after it).
    pub deadline: Option<std::time::Instant>,
    /// `max_tokens` is a default, not the caller's: generate at most what the context
    /// window leaves after the prompt (refused only when the prompt alone fills it).
    pub fit_context: bool,
}

impl std::fmt::Debug for GenerationParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenerationParams")
            .field("max_tokens", &self.max_tokens)
            .field("temperature", &self.temperature)
            .field("top_p", &self.top_p)
            .field("stops", &self.stop.len())
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

impl Default for GenerationParams {
    fn default() -> Self {
        Self {
            max_tokens: 256,
            temperature: 1.0,
            top_p: 1.0,
            stop: Vec::new(),
            seed: 0,
            deadline: None,
            fit_context: false,
        }
    }
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// The model ended its turn, or a stop sequence.
    Stop,
    /// `max_tokens`.
    Length,
}

impl FinishReason {
    /// OpenAI's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
        }
    }
}

/// A generation's result.
#[derive(Clone, PartialEq)]
pub struct Generated {
    /// The text (without a stop sequence).
    pub text: String,
    /// The generated ids (the end-of-turn token not included).
    pub ids: Vec<u32>,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Why it ended.
    pub finish: FinishReason,
}

impl std::fmt::Debug for Generated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Generated({} tokens, {:?})", self.ids.len(), self.finish)
    }
}

/// A loaded chat model.
pub struct ChatModel {
    weights: ModelWeights,
    tokenizer: GgufTokenizer,
    im_start: u32,
    im_end: u32,
    default_system: Option<String>,
    context: usize,
    device: Device,
}

impl std::fmt::Debug for ChatModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChatModel(context {})", self.context)
    }
}

/// The tokens a completion of a `prompt`-token prompt may have in a `context`-token window:
/// `max_tokens`, or (a default, `fit_context`) as many as the window leaves, at most
/// `max_tokens`; an error when they do not fit.
fn completion_budget(
    context: usize,
    prompt: usize,
    params: &GenerationParams,
) -> Result<usize, EngineError> {
    let max_tokens = if params.fit_context {
        params.max_tokens.min(context.saturating_sub(prompt)).max(1)
    } else {
        params.max_tokens
    };
    if prompt.saturating_add(max_tokens) > context {
        return Err(EngineError::ContextExceeded {
            prompt,
            max_tokens,
            limit: context,
        });
    }
    Ok(max_tokens)
}

/// The default system message of a ChatML template, if it adds one when the
/// conversation has none (SmolLM2's does).
fn default_system(template: &str) -> Option<String> {
    // The line break is a real one in SmolLM2's GGUF, an escape in some other templates.
    let from = ["<|im_start|>system\n", "<|im_start|>system\\n"]
        .iter()
        .find_map(|start| template.find(start).map(|at| at + start.len()))?;
    let len = template[from..].find("<|im_end|>")?;
    Some(template[from..from + len].to_owned())
}

impl ChatModel {
    /// Loads a GGUF model from memory (the decrypted buffer; nothing touches a file).
    pub fn load(gguf: &[u8]) -> Result<Self, EngineError> {
        let mut reader = std::io::Cursor::new(gguf);
        let content = Content::read(&mut reader)?;
        let tokenizer = GgufTokenizer::from_gguf(&content)?;
        let im_start = tokenizer
            .control_id("<|im_start|>")
            .ok_or(EngineError::Metadata(
                "a <|im_start|> control token (ChatML)",
            ))?;
        let im_end = tokenizer
            .control_id("<|im_end|>")
            .ok_or(EngineError::Metadata("a <|im_end|> control token (ChatML)"))?;
        let default_system = content
            .metadata
            .get("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok())
            .and_then(|t| default_system(t));
        let trained = content
            .metadata
            .get("llama.context_length")
            .and_then(|v| v.to_u32().ok())
            .map_or(MAX_SEQ_LEN, |n| n as usize);
        let device = Device::Cpu;
        let weights = ModelWeights::from_gguf(content, &mut reader, &device)?;
        Ok(Self {
            weights,
            tokenizer,
            im_start,
            im_end,
            default_system,
            // candle's rotary tables end at MAX_SEQ_LEN.
            context: trained.min(MAX_SEQ_LEN),
            device,
        })
    }

    /// Tokens the prompt and completion may have together.
    pub fn context_window(&self) -> usize {
        self.context
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &GgufTokenizer {
        &self.tokenizer
    }

    /// The prompt's ids for `messages` under the ChatML template, ending with the
    /// assistant's turn.
    pub fn prompt_ids(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, EngineError> {
        if messages.is_empty() {
            return Err(EngineError::InvalidParameter("messages must not be empty"));
        }
        // A prompt longer than the window's worth of the longest token cannot fit: refuse
        // it before tokenizing it.
        let bytes: usize = messages
            .iter()
            .map(|m| m.content.len().saturating_add(m.role.len()))
            .fold(0, usize::saturating_add);
        let limit = self.context.saturating_mul(self.tokenizer.longest_token());
        if bytes > limit {
            return Err(EngineError::PromptTooLarge { bytes, limit });
        }
        let mut ids = Vec::new();
        let turn = |role: &str, content: &str, ids: &mut Vec<u32>| {
            ids.push(self.im_start);
            ids.extend(self.tokenizer.encode(&format!("{role}\n{content}"))?);
            ids.push(self.im_end);
            ids.extend(self.tokenizer.encode("\n")?);
            Ok::<(), EngineError>(())
        };
        if messages[0].role != "system"
            && messages[0].role != "developer"
            && let Some(system) = &self.default_system
        {
            turn("system", system, &mut ids)?;
        }
        for m in messages {
            let role = match m.role.as_str() {
                "system" | "developer" => "system",
                "user" => "user",
                "assistant" => "assistant",
                _ => {
                    return Err(EngineError::InvalidParameter(
                        "a message role must be system, developer, user or assistant",
                    ));
                }
            };
            turn(role, &m.content, &mut ids)?;
        }
        ids.push(self.im_start);
        ids.extend(self.tokenizer.encode("assistant\n")?);
        Ok(ids)
    }

    /// Answers `messages`; `on_text` is called between prompt chunks and on every token,
    /// with the text generated since (often empty), and returns false to stop (the client
    /// went away).
    pub fn chat(
        &self,
        messages: &[ChatMessage],
        params: &GenerationParams,
        on_text: impl FnMut(&str) -> bool,
    ) -> Result<Generated, EngineError> {
        let prompt = self.prompt_ids(messages)?;
        self.complete_ids(&prompt, params, on_text)
    }

    /// Continues `prompt` (ids).
    pub fn complete_ids(
        &self,
        prompt: &[u32],
        params: &GenerationParams,
        mut on_text: impl FnMut(&str) -> bool,
    ) -> Result<Generated, EngineError> {
        if prompt.is_empty() {
            return Err(EngineError::InvalidParameter("the prompt is empty"));
        }
        if params.max_tokens == 0 {
            return Err(EngineError::InvalidParameter(
                "max_tokens must be at least 1",
            ));
        }
        if !(0.0..=2.0).contains(&params.temperature) {
            return Err(EngineError::InvalidParameter(
                "temperature must be between 0 and 2",
            ));
        }
        if !(params.top_p > 0.0 && params.top_p <= 1.0) {
            return Err(EngineError::InvalidParameter("top_p must be in (0, 1]"));
        }
        if params.stop.len() > MAX_STOPS || params.stop.iter().any(|s| s.len() > MAX_STOP_LEN) {
            return Err(EngineError::InvalidParameter(
                "at most 4 stop sequences of at most 256 bytes",
            ));
        }
        if prompt.iter().any(|&id| id as usize >= self.tokenizer.len()) {
            return Err(EngineError::InvalidParameter(
                "a prompt token id is out of range",
            ));
        }
        let max_tokens = completion_budget(self.context, prompt.len(), params)?;
        // A temperature this small is greedy decoding (dividing by it would overflow).
        let sampling = if params.temperature < 1e-5 {
            Sampling::ArgMax
        } else if params.top_p < 1.0 {
            Sampling::TopP {
                p: params.top_p,
                temperature: params.temperature,
            }
        } else {
            Sampling::All {
                temperature: params.temperature,
            }
        };
        let mut sampler = LogitsProcessor::from_sampling(params.seed, sampling);
        let cancelled = |completion_tokens| EngineError::Cancelled {
            prompt_tokens: prompt.len(),
            completion_tokens,
        };
        let late = |completion_tokens| {
            params
                .deadline
                .is_some_and(|d| std::time::Instant::now() >= d)
                .then_some(EngineError::DeadlineExceeded {
                    prompt_tokens: prompt.len(),
                    completion_tokens,
                })
        };
        // This request's own cache; the weights are shared.
        let mut model = self.weights.clone();
        let mut logits = None;
        let mut at = 0;
        for chunk in prompt.chunks(PREFILL_CHUNK) {
            if let Some(e) = late(0) {
                return Err(e);
            }
            if !on_text("") {
                return Err(cancelled(0));
            }
            let input = Tensor::new(chunk, &self.device)?.unsqueeze(0)?;
            logits = Some(model.forward(&input, at)?.squeeze(0)?);
            at += chunk.len();
        }
        let mut logits = logits.ok_or(EngineError::InvalidParameter("the prompt is empty"))?;
        let mut stream = self.tokenizer.tokenizer().decode_stream(false);
        let mut stop = StopMatcher::new(&params.stop);
        let mut text = String::new();
        let mut ids = Vec::new();
        let mut finish = FinishReason::Length;
        for step in 0..max_tokens {
            if let Some(e) = late(ids.len()) {
                return Err(e);
            }
            let next = sampler.sample(&logits)?;
            if self.tokenizer.is_control(next) {
                finish = FinishReason::Stop;
                break;
            }
            ids.push(next);
            let piece = stream.step(next).map_err(EngineError::Tokenizer)?;
            let (out, stopped) = match piece.map(|p| stop.push(&p)) {
                None => (String::new(), false),
                Some(Step::Emit(out)) => (out, false),
                Some(Step::Stop(out)) => (out, true),
            };
            // Called on every token, with or without text: returning false cancels.
            if !on_text(&out) {
                return Err(cancelled(ids.len()));
            }
            text.push_str(&out);
            if stopped {
                return Ok(Generated {
                    text,
                    ids,
                    prompt_tokens: prompt.len(),
                    finish: FinishReason::Stop,
                });
            }
            if step + 1 < max_tokens {
                let input = Tensor::new(&[next], &self.device)?.unsqueeze(0)?;
                logits = model.forward(&input, prompt.len() + step)?.squeeze(0)?;
            }
        }
        let rest = stop.finish();
        if !on_text(&rest) {
            return Err(cancelled(ids.len()));
        }
        text.push_str(&rest);
        Ok(Generated {
            text,
            ids,
            prompt_tokens: prompt.len(),
            finish,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_default_max_tokens_fits_what_the_window_leaves() {
        use super::{GenerationParams, completion_budget};
        let asked = GenerationParams {
            max_tokens: 256,
            ..GenerationParams::default()
        };
        let default = GenerationParams {
            fit_context: true,
            ..asked.clone()
        };
        assert_eq!(completion_budget(4096, 100, &asked).ok(), Some(256));
        assert_eq!(completion_budget(4096, 100, &default).ok(), Some(256));
        // Asked for: refused when it does not fit; a default shrinks to what is left.
        assert!(completion_budget(4096, 4000, &asked).is_err());
        assert_eq!(completion_budget(4096, 4000, &default).ok(), Some(96));
        // The prompt alone fills the window: refused either way.
        assert!(completion_budget(4096, 4096, &default).is_err());
        assert!(completion_budget(4096, 5000, &default).is_err());
    }

    #[test]
    fn the_default_system_message_comes_from_the_template() {
        let t = r"{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are SmolLM<|im_end|>\n' }}{% endif %}";
        assert_eq!(super::default_system(t).as_deref(), Some("You are SmolLM"));
        let real = "{{ '<|im_start|>system\nYou are SmolLM<|im_end|>\n' }}";
        assert_eq!(
            super::default_system(real).as_deref(),
            Some("You are SmolLM")
        );
        assert_eq!(super::default_system("{{ messages }}"), None);
    }
}
