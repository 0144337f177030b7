//! The built-in engine's prefill and decode speed on SmolLM2-135M-Instruct (Q4_1), for
//! `scripts/bench-engine`, which runs llama.cpp on the same GGUF, prompt and thread count
//! and prints the comparison line.
//!
//! `cargo bench -p trustbridge-enclave --bench engine -- PROMPT_TOKENS DECODE_TOKENS [REPEATS]`
//! with the model from `scripts/fetch-models` (or `TB_MODELS_DIR`); threads from
//! `CANDLE_NUM_THREADS`/`RAYON_NUM_THREADS`. The prompt is the same text llama.cpp's side
//! uses, cut to PROMPT_TOKENS tokens; decoding is greedy; the best of REPEATS rounds after
//! a warm-up. Prints one JSON line: `{"prefill_ours_tps": .., "decode_ours_tps": ..}`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)] // bench binary

use std::time::Instant;

use trustbridge_enclave::engine::{ChatModel, GenerationParams};

const GGUF: &str = "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n_prompt = args.first().copied().unwrap_or(128);
    let n_decode = args.get(1).copied().unwrap_or(64);
    let repeats = args.get(2).copied().unwrap_or(3).max(1);
    let Some(dir) = trustbridge_testkit::models_dir("engine bench", GGUF) else {
        return;
    };
    let model = ChatModel::load(&std::fs::read(dir.join(GGUF)).unwrap()).unwrap();
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(200);
    let prompt = model.tokenizer().encode(&text).unwrap();
    let prompt = &prompt[..n_prompt.min(prompt.len())];
    let chunks = prompt
        .len()
        .div_ceil(trustbridge_enclave::engine::chat::PREFILL_CHUNK);
    let params = GenerationParams {
        max_tokens: n_decode + 1,
        temperature: 0.0,
        ..GenerationParams::default()
    };
    let (mut best_prefill, mut best_decode) = (0.0f64, 0.0f64);
    for round in 0..=repeats {
        let start = Instant::now();
        let mut calls = 0usize;
        let mut first_token = None;
        let out = model
            .complete_ids(prompt, &params, |_| {
                calls += 1;
                // The first call after the prompt's chunks: the first token is sampled.
                if calls == chunks + 1 {
                    first_token = Some(Instant::now());
                }
                true
            })
            .unwrap();
        let end = Instant::now();
        let first = first_token.unwrap();
        let decoded = out.ids.len().saturating_sub(1);
        if round > 0 && decoded > 0 {
            best_prefill = best_prefill.max(prompt.len() as f64 / (first - start).as_secs_f64());
            best_decode = best_decode.max(decoded as f64 / (end - first).as_secs_f64());
        }
    }
    println!(
        "{{\"prefill_ours_tps\": {best_prefill:.1}, \"decode_ours_tps\": {best_decode:.1}, \"prompt_tokens\": {}, \"decode_tokens\": {n_decode}, \"threads\": {}}}",
        prompt.len(),
        candle_core::utils::get_num_threads()
    );
}
