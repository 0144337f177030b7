#!/usr/bin/env python3
"""Reference greedy decoding of SmolLM2-135M-Instruct (Q4_1) with llama.cpp.

Run once to make enclave/tests/fixtures/engine/greedy.json: for each prompt, the prompt's
token ids as llama.cpp tokenizes them, the greedy continuation (argmax at every step, f32
KV cache like candle's, no flash attention), and each step's margin between the best and
the second-best logit (a step with a tiny margin may flip between implementations; the
prompts here were chosen for wide margins). The engine's test must reproduce both the
prompt ids and the continuation.

    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
      -DGGML_BMI2=ON -DLLAMA_CURL=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF \
      -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF" \
      /tmp/llama-venv/bin/pip install llama-cpp-python==0.3.36
    /tmp/llama-venv/bin/python scripts/reference/llamacpp_greedy.py \
      .trustbridge/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf > enclave/tests/fixtures/engine/greedy.json

(A -DGGML_NATIVE=ON build crashes in ggml's AMX kernels on AMX-capable VMs.)
"""
import json
import sys

import llama_cpp
import numpy as np
from llama_cpp import Llama

SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
PROMPTS = [
    {"name": "chat_math", "messages": [{"role": "user", "content": "What is 2+2?"}]},
    {"name": "raw_count", "prompt": "1, 2, 3, 4, 5, 6,"},
]
STEPS = 24


def chat(messages):
    if messages[0]["role"] != "system":
        messages = [{"role": "system", "content": SYSTEM}] + messages
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return text + "<|im_start|>assistant\n"


llm = Llama(model_path=sys.argv[1], n_ctx=1024, n_threads=1, n_threads_batch=1, seed=0,
            verbose=False, flash_attn=False, type_k=0, type_v=0)  # 0: GGML_TYPE_F32
n_vocab = llm.n_vocab()
items = []
for p in PROMPTS:
    text = chat(p["messages"]) if "messages" in p else p["prompt"]
    prompt = llm.tokenize(text.encode(), add_bos=False, special=True)
    llm.reset()
    llm.eval(prompt)
    ids, margins = [], []
    for _ in range(STEPS):
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(n_vocab,))
        second, best = np.argsort(logits)[-2:]
        ids.append(int(best))
        margins.append(round(float(logits[best] - logits[second]), 3))
        if ids[-1] == 2:  # <|im_end|>
            break
        llm.eval([ids[-1]])
    item = {k: v for k, v in p.items()}
    item.update({"prompt_ids": prompt, "ids": ids, "margins": margins,
                 "text": llm.detokenize(ids, special=True).decode(errors="replace")})
    items.append(item)
json.dump({"made_by": "scripts/reference/llamacpp_greedy.py",
           "llama_cpp_python": llama_cpp.__version__,
           "gguf_sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
           "kv_cache": "f32", "items": items}, sys.stdout, indent=1)
print()
