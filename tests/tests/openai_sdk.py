"""The unmodified OpenAI Python SDK against `trustbridge proxy`: a chat completion and a
streamed one. Prints one JSON line: the texts and the TrustBridge headers seen.

    openai_sdk.py PROXY_URL PROMPT [MODEL]"""
import json
import sys

import openai

base = sys.argv[1]
client = openai.OpenAI(base_url=base + "/v1", api_key="unused-by-trustbridge")
messages = [{"role": "user", "content": sys.argv[2]}]
model = sys.argv[3] if len(sys.argv) > 3 else "stand-in"

raw = client.chat.completions.with_raw_response.create(
    model=model, messages=messages, max_tokens=32, temperature=0
)
chat = raw.parse()
stream = client.chat.completions.create(
    model=model, messages=messages, max_tokens=32, temperature=0, stream=True
)
streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

print(json.dumps({
    "chat": chat.choices[0].message.content,
    "verified": raw.headers.get("trustbridge-verified"),
    "receipt": raw.headers.get("trustbridge-receipt"),
    "stream": streamed,
}))
