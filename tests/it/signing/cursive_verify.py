"""Verify a Glance image signature the way cursive does it on upload (Glance) and boot (Nova).

Usage: cursive_verify.py JOBS.json
JOBS.json is a list of [CERT.pem, IMAGE, PROPERTIES.json]; each PROPERTIES.json holds the four
img_signature* properties (as `vmimage sign --json` prints them). One process checks them all
(importing cursive costs most of a run). For each job, runs cursive's own verifier path with Barbican bypassed: SignatureKeyType.lookup(key type),
its public-key type check (cursive's get_public_key), create_verifier, then update() in 64 KiB
chunks and verify(). Prints one line per job, OK when cursive accepts, REJECTED and the reason
when it rejects; exits 0 when every job was accepted, 1 otherwise.
"""
import json
import sys

import cryptography
from cryptography import exceptions as crypto_exceptions
from cryptography import x509
from cursive import exception as cursive_exception
from cursive import signature_utils


def main():
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    results = [verify(*job) for job in jobs]
    return 0 if all(r == 0 for r in results) else 1


def verify(cert_path, image_path, props_path):
    with open(props_path) as f:
        props = json.load(f)
    with open(cert_path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    try:
        key_type = signature_utils.SignatureKeyType.lookup(props["img_signature_key_type"])
        public_key = cert.public_key()
        if not isinstance(public_key, key_type.public_key_type):
            raise cursive_exception.SignatureVerificationError("Invalid public key type")
        verifier = key_type.create_verifier(
            signature_utils.get_signature(props["img_signature"]),
            signature_utils.get_hash_method(props["img_signature_hash_method"]),
            public_key,
        )
    except cursive_exception.SignatureVerificationError as e:
        print(f"REJECTED (cryptography {cryptography.__version__}): {props_path}: {e}")
        return 1
    with open(image_path, "rb") as f:
        while True:
            chunk = f.read(65536)
            if not chunk:
                break
            verifier.update(chunk)
    try:
        verifier.verify()
    except crypto_exceptions.InvalidSignature:
        print(f"REJECTED (cryptography {cryptography.__version__}): {props_path}: invalid signature")
        return 1
    print(f"OK (cryptography {cryptography.__version__}): {props_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
