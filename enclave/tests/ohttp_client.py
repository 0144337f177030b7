#!/usr/bin/env python3
"""An Oblivious HTTP client written from the RFCs, with no TrustBridge code.

RFC 9458 (Oblivious HTTP) for the encapsulation, RFC 9292 (Binary HTTP) for the inner
messages, RFC 9180 HPKE through `pyhpke`, HKDF and AES-GCM through `cryptography`.

usage: ohttp_client.py RELAY_HOST:PORT PROMPT [--chunked]
Prints JSON: {"status", "headers", "content", "request_hex"} of the decapsulated answer;
with --chunked, the request asks for a streamed answer, sent and read as chunked OHTTP
(draft-ietf-ohai-chunked-ohttp) with an indeterminate-length Binary HTTP response, and the
JSON adds "trailers" and "chunks" (how many encrypted chunks the answer came in).
"""
import json
import os
import sys
import urllib.request

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from pyhpke import AEADId, CipherSuite, KDFId, KEMId

KEM_X25519, KDF_SHA256, AEAD_AES128GCM = 0x0020, 0x0001, 0x0001
NK, NN = 16, 12  # AES-128-GCM key and nonce lengths


def varint(n: int) -> bytes:  # RFC 9000 section 16
    if n < 1 << 6:
        return n.to_bytes(1, "big")
    if n < 1 << 14:
        return (n | 0x4000).to_bytes(2, "big")
    if n < 1 << 30:
        return (n | 0x80000000).to_bytes(4, "big")
    return (n | 0xC000000000000000).to_bytes(8, "big")


def read_varint(b: bytes, i: int):
    first = b[i]
    length = 1 << (first >> 6)
    v = first & 0x3F
    for k in range(1, length):
        v = (v << 8) | b[i + k]
    return v, i + length


def vbytes(b: bytes) -> bytes:
    return varint(len(b)) + b


def bhttp_request(method, scheme, authority, path, headers, content) -> bytes:
    """RFC 9292 known-length request (framing indicator 0)."""
    fields = b"".join(vbytes(n) + vbytes(v) for n, v in headers)
    return (varint(0) + vbytes(method) + vbytes(scheme) + vbytes(authority) + vbytes(path)
            + vbytes(fields) + vbytes(content) + varint(0))


def bhttp_response(b: bytes):
    """RFC 9292 known-length response (framing indicator 1), informational ones skipped."""
    framing, i = read_varint(b, 0)
    assert framing == 1, f"framing indicator {framing}"
    while True:
        status, i = read_varint(b, i)
        n, i = read_varint(b, i)
        section, i = b[i:i + n], i + n
        if status >= 200:
            break
    headers, j = [], 0
    while j < len(section):
        ln, j = read_varint(section, j)
        name, j = section[j:j + ln], j + ln
        lv, j = read_varint(section, j)
        value, j = section[j:j + lv], j + lv
        headers.append((name.decode(), value.decode()))
    n, i = read_varint(b, i)
    return status, headers, b[i:i + n]


def field_section(b: bytes, i: int):
    """RFC 9292 indeterminate-length field section: lines until a zero name length."""
    fields = []
    while True:
        ln, i = read_varint(b, i)
        if ln == 0:
            return fields, i
        name, i = b[i:i + ln], i + ln
        lv, i = read_varint(b, i)
        value, i = b[i:i + lv], i + lv
        fields.append((name.decode(), value.decode()))


def bhttp_streamed_response(b: bytes):
    """RFC 9292 indeterminate-length response (framing indicator 3)."""
    framing, i = read_varint(b, 0)
    assert framing == 3, f"framing indicator {framing}"
    while True:
        status, i = read_varint(b, i)
        headers, i = field_section(b, i)
        if status >= 200:
            break
    content = b""
    while True:
        n, i = read_varint(b, i)
        if n == 0:
            break
        content, i = content + b[i:i + n], i + n
    trailers, i = field_section(b, i)
    assert all(x == 0 for x in b[i:]), "data after the message"
    return status, headers, content, trailers


def key_config(keys: bytes):
    """The first X25519 / HKDF-SHA256 / AES-128-GCM configuration of an ohttp-keys list."""
    i = 0
    while i < len(keys):
        ln = int.from_bytes(keys[i:i + 2], "big")
        c = keys[i + 2:i + 2 + ln]
        i += 2 + ln
        key_id, kem = c[0], int.from_bytes(c[1:3], "big")
        if kem != KEM_X25519:
            continue
        pk = c[3:35]
        slen = int.from_bytes(c[35:37], "big")
        suites = [(int.from_bytes(c[37 + k:39 + k], "big"), int.from_bytes(c[39 + k:41 + k], "big"))
                  for k in range(0, slen, 4)]
        if (KDF_SHA256, AEAD_AES128GCM) in suites:
            return key_id, pk
    raise SystemExit("no usable key configuration")


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    h = hmac.HMAC(salt, hashes.SHA256())
    h.update(ikm)
    return h.finalize()


def hkdf_expand(prk: bytes, info: bytes, n: int) -> bytes:
    return HKDFExpand(hashes.SHA256(), n, info).derive(prk)


def main() -> int:
    relay, prompt = sys.argv[1], sys.argv[2]
    chunked = "--chunked" in sys.argv[3:]
    base = f"http://{relay}/.well-known/ohttp-gateway"
    keys = urllib.request.urlopen(base).read()
    key_id, pk = key_config(keys)

    ask = {"model": "m", "messages": [{"role": "user", "content": prompt}]}
    if chunked:
        ask["stream"] = True
    content = json.dumps(ask, separators=(",", ":")).encode()
    request = bhttp_request(b"POST", b"https", b"sentinel", b"/v1/chat/completions",
                            [(b"content-type", b"application/json")], content)

    # RFC 9458 section 4.3 (chunked: the draft's section 6.1): the request.
    hdr = bytes([key_id]) + KEM_X25519.to_bytes(2, "big") + KDF_SHA256.to_bytes(2, "big") \
        + AEAD_AES128GCM.to_bytes(2, "big")
    label = b"message/bhttp chunked request" if chunked else b"message/bhttp request"
    info = label + b"\x00" + hdr
    suite = CipherSuite.new(KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.AES128_GCM)
    enc, sender = suite.create_sender_context(suite.kem.deserialize_public_key(pk), info=info)
    if chunked:
        # One final chunk: a zero length, then the sealed request with AAD "final".
        encapsulated = hdr + enc + varint(0) + sender.seal(request, aad=b"final")
    else:
        encapsulated = hdr + enc + sender.seal(request, aad=b"")

    media = "message/ohttp-chunked-req" if chunked else "message/ohttp-req"
    req = urllib.request.Request(base, data=encapsulated, method="POST",
                                 headers={"content-type": media})
    resp = urllib.request.urlopen(req)
    expected = "message/ohttp-chunked-res" if chunked else "message/ohttp-res"
    assert resp.headers["content-type"] == expected, resp.headers["content-type"]
    body = resp.read()

    # RFC 9458 section 4.4 (chunked: the draft's section 6.2): the response.
    label = b"message/bhttp chunked response" if chunked else b"message/bhttp response"
    secret = sender.export(label, max(NN, NK))
    response_nonce, ct = body[:max(NN, NK)], body[max(NN, NK):]
    prk = hkdf_extract(enc + response_nonce, secret)
    aead_key, aead_nonce = hkdf_expand(prk, b"key", NK), hkdf_expand(prk, b"nonce", NN)
    out = {"request_hex": request.hex()}
    if not chunked:
        plain = AESGCM(aead_key).decrypt(aead_nonce, ct, b"")
        status, headers, content = bhttp_response(plain)
    else:
        # Chunks: a length and a sealed chunk each; a zero length starts the final chunk,
        # which runs to the end (AAD "final"). Chunk n's nonce is the nonce XOR n.
        plain, i, n = b"", 0, 0
        while True:
            ln, i = read_varint(ct, i)
            final = ln == 0
            sealed = ct[i:] if final else ct[i:i + ln]
            i += len(sealed)
            nonce = bytes(a ^ b for a, b in zip(aead_nonce, n.to_bytes(NN, "big")))
            plain += AESGCM(aead_key).decrypt(nonce, sealed, b"final" if final else b"")
            n += 1
            if final:
                break
        status, headers, content, trailers = bhttp_streamed_response(plain)
        out["trailers"] = dict(trailers)
        out["chunks"] = n
    out.update({"status": status, "headers": dict(headers), "content": content.decode()})
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
