#!/usr/bin/env python3
"""Verifies a TrustBridge receipt with pycose, a third-party COSE implementation.

usage: pycose_receipt.py RECEIPT_FILE PUBLIC_KEY_HEX
Prints the decoded claims as JSON (bytes as hex) and exits 0 when the COSE_Sign1 signature
verifies under the Ed25519 key, 1 when it does not.
"""
import json
import sys

import cbor2
from pycose.keys import OKPKey
from pycose.keys.curves import Ed25519
from pycose.messages import Sign1Message


def main() -> int:
    data = open(sys.argv[1], "rb").read()
    key = OKPKey(crv=Ed25519, x=bytes.fromhex(sys.argv[2]))
    # The receipt is a tagged COSE_Sign1 (tag 18); pycose checks the tag on decode.
    msg = Sign1Message.decode(data)
    msg.key = key
    if not msg.verify_signature():
        print("signature does not verify", file=sys.stderr)
        return 1
    claims = cbor2.loads(msg.payload)

    def plain(v):
        if isinstance(v, bytes):
            return v.hex()
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        return v

    print(json.dumps({
        "protected": {getattr(k, "__name__", str(k)): getattr(v, "__name__", str(v)) for k, v in msg.phdr.items()},
        "unprotected": len(msg.uhdr),
        "claims": plain(claims),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
