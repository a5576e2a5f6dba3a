#!/usr/bin/env python3
"""Independent verifier of a Slipway release, written from the DSSE and in-toto specs only.

usage: verify_dsse.py ENVELOPE PUBLIC_KEY_BASE64 BLOB NAME@VERSION
exit 0: the signature over PAE(payloadType, payload) verifies with the Ed25519 key, the payload is an
in-toto Statement v1 with an SLSA v1 predicate whose subject is NAME@VERSION with the blob's SHA-256.
exit 1: it does not (the reason is printed). exit 77: the `cryptography` package is missing.
"""
import base64
import hashlib
import json
import sys

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
except ImportError:
    print("python package 'cryptography' is missing: pip install cryptography", file=sys.stderr)
    sys.exit(77)


def pae(payload_type: bytes, payload: bytes) -> bytes:
    return b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type, len(payload), payload)


def main() -> int:
    envelope_path, key_b64, blob_path, reference = sys.argv[1:5]
    try:
        envelope = json.load(open(envelope_path, "rb"))
        payload = base64.b64decode(envelope["payload"], validate=True)
        payload_type = envelope["payloadType"].encode()
    except Exception as error:  # malformed envelope
        print(f"malformed envelope: {error}")
        return 1
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(key_b64))
    verified = False
    for signature in envelope.get("signatures", []):
        try:
            key.verify(base64.b64decode(signature["sig"]), pae(payload_type, payload))
            verified = True
        except (InvalidSignature, ValueError, KeyError):
            continue
    if not verified:
        print("no signature verifies")
        return 1
    statement = json.loads(payload)
    if statement.get("_type") != "https://in-toto.io/Statement/v1":
        print("not an in-toto v1 statement")
        return 1
    if statement.get("predicateType") != "https://slsa.dev/provenance/v1":
        print("not SLSA provenance v1")
        return 1
    digest = hashlib.sha256(open(blob_path, "rb").read()).hexdigest()
    for subject in statement.get("subject", []):
        if subject.get("name") == reference and subject.get("digest", {}).get("sha256") == digest:
            print(f"verified {reference} sha256:{digest}")
            return 0
    print(f"no subject {reference} with sha256:{digest}")
    return 1


sys.exit(main())
