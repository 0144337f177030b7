#!/usr/bin/env python3
"""An Oblivious HTTP client written from the RFCs, with no TrustBridge code.

RFC 9458 (Oblivious HTTP) for the encapsulation, RFC 9292 (Binary HTTP) for the inner
messages, RFC 9180 HPKE through `pyhpke`, HKDF and AES-GCM through `cryptography`.

usage: ohttp_client.py RELAY_HOST:PORT PROMPT
Prints JSON: {"status", "headers", "content", "request_hex"} of the decapsulated answer.
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
    base = f"http://{relay}/.well-known/ohttp-gateway"
    keys = urllib.request.urlopen(base).read()
    key_id, pk = key_config(keys)

    content = json.dumps({"model": "m", "messages": [{"role": "user", "content": prompt}]}).encode()
    request = bhttp_request(b"POST", b"https", b"sentinel", b"/v1/chat/completions",
                            [(b"content-type", b"application/json")], content)

    # RFC 9458 section 4.3: the request.
    hdr = bytes([key_id]) + KEM_X25519.to_bytes(2, "big") + KDF_SHA256.to_bytes(2, "big") \
        + AEAD_AES128GCM.to_bytes(2, "big")
    info = b"message/bhttp request" + b"\x00" + hdr
    suite = CipherSuite.new(KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.AES128_GCM)
    enc, sender = suite.create_sender_context(suite.kem.deserialize_public_key(pk), info=info)
    encapsulated = hdr + enc + sender.seal(request, aad=b"")

    req = urllib.request.Request(base, data=encapsulated, method="POST",
                                 headers={"content-type": "message/ohttp-req"})
    resp = urllib.request.urlopen(req)
    assert resp.headers["content-type"] == "message/ohttp-res", resp.headers["content-type"]
    body = resp.read()

    # RFC 9458 section 4.4: the response.
    secret = sender.export(b"message/bhttp response", max(NN, NK))
    response_nonce, ct = body[:max(NN, NK)], body[max(NN, NK):]
    prk = hkdf_extract(enc + response_nonce, secret)
    aead_key, aead_nonce = hkdf_expand(prk, b"key", NK), hkdf_expand(prk, b"nonce", NN)
    plain = AESGCM(aead_key).decrypt(aead_nonce, ct, b"")

    status, headers, content = bhttp_response(plain)
    print(json.dumps({"status": status, "headers": dict(headers),
                      "content": content.decode(), "request_hex": request.hex()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
