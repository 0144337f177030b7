#!/usr/bin/env python3
"""Reference side of TrustBridge's Tink interop tests.

Encrypts or decrypts one raw AES256_GCM_HKDF stream with Google's Tink (the `tink` PyPI
package), given the raw 32-byte key, the ciphertext segment size and the associated data.

    tink_stream.py encrypt|decrypt --key-hex HEX --ad-hex HEX --segment-size N --in F --out G

Exit 0 on success, 1 when Tink rejects the input, 3 when tink is not installed.
"""
import argparse
import sys

try:
    import tink
    from tink import secret_key_access, streaming_aead
    from tink.proto import aes_gcm_hkdf_streaming_pb2, common_pb2, tink_pb2
except ImportError as e:  # pragma: no cover - reported to the Rust test as "skip"
    print(f"tink not available: {e}", file=sys.stderr)
    sys.exit(3)

TYPE_URL = "type.googleapis.com/google.crypto.tink.AesGcmHkdfStreamingKey"


def primitive(key_hex: str, segment_size: int):
    params = aes_gcm_hkdf_streaming_pb2.AesGcmHkdfStreamingParams(
        ciphertext_segment_size=segment_size,
        derived_key_size=32,
        hkdf_hash_type=common_pb2.SHA256,
    )
    key = aes_gcm_hkdf_streaming_pb2.AesGcmHkdfStreamingKey(
        version=0, params=params, key_value=bytes.fromhex(key_hex)
    )
    keyset = tink_pb2.Keyset(
        primary_key_id=1,
        key=[
            tink_pb2.Keyset.Key(
                key_data=tink_pb2.KeyData(
                    type_url=TYPE_URL,
                    value=key.SerializeToString(),
                    key_material_type=tink_pb2.KeyData.SYMMETRIC,
                ),
                status=tink_pb2.ENABLED,
                key_id=1,
                output_prefix_type=tink_pb2.RAW,
            )
        ],
    )
    handle = tink.proto_keyset_format.parse(keyset.SerializeToString(), secret_key_access.TOKEN)
    return handle.primitive(streaming_aead.StreamingAead)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("op", choices=["encrypt", "decrypt"])
    p.add_argument("--key-hex", required=True)
    p.add_argument("--ad-hex", required=True)
    p.add_argument("--segment-size", type=int, required=True)
    p.add_argument("--in", dest="inp", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    streaming_aead.register()
    prim = primitive(a.key_hex, a.segment_size)
    ad = bytes.fromhex(a.ad_hex)
    try:
        if a.op == "encrypt":
            with open(a.inp, "rb") as f:
                data = f.read()
            with open(a.out, "wb") as out:
                with prim.new_encrypting_stream(out, ad) as enc:
                    enc.write(data)
        else:
            with open(a.inp, "rb") as f:
                with prim.new_decrypting_stream(f, ad) as dec:
                    data = dec.read()
            with open(a.out, "wb") as out:
                out.write(data)
    except tink.TinkError as e:
        print(f"tink rejected the stream: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
