#!/usr/bin/env python3
"""llama.cpp's prefill and decode speed on a GGUF, for scripts/bench-engine.

usage: llamacpp_engine.py GGUF THREADS PROMPT_TOKENS DECODE_TOKENS [REPEATS]

The prompt is the same text the engine's bench uses, cut to PROMPT_TOKENS tokens (the two
tokenizers give the same ids); decoding is greedy (argmax of the last logits, one token
at a time, as the engine does), f32 KV cache like candle's; the best of REPEATS rounds
after a warm-up. Prints one JSON line.
"""
import json
import sys
import time

import llama_cpp
import numpy as np
from llama_cpp import Llama

gguf, threads, n_prompt, n_dec = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
reps = int(sys.argv[5]) if len(sys.argv) > 5 else 3
llm = Llama(model_path=gguf, n_ctx=max(512, n_prompt + n_dec + 8), n_batch=max(512, n_prompt),
            n_ubatch=max(512, n_prompt), n_threads=threads, n_threads_batch=threads, verbose=False,
            flash_attn=False, type_k=0, type_v=0)
n_vocab = llm.n_vocab()
text = "The quick brown fox jumps over the lazy dog. " * 200
prompt = llm.tokenize(text.encode(), add_bos=False, special=False)[:n_prompt]


def argmax():
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(n_vocab,))
    return int(np.argmax(logits))


best_p = best_d = 0.0
for r in range(reps + 1):  # round 0 warms up
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(prompt)
    tok = argmax()
    tp = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(n_dec):
        llm.eval([tok])
        tok = argmax()
    td = time.perf_counter() - t0
    if r:
        best_p, best_d = max(best_p, len(prompt) / tp), max(best_d, n_dec / td)
print(json.dumps({"prefill_llamacpp_tps": round(best_p, 1), "decode_llamacpp_tps": round(best_d, 1),
                  "prompt_tokens": len(prompt), "threads": threads,
                  "llama_cpp_python": llama_cpp.__version__}))
