"""Crypto calls made with a product key on behalf of a client (docs/design.md §4).

Separate subkeys are derived from the product key for each operation (HKDF-SHA256):
"encrypt"/"decrypt" use AES-256-GCM with a random 12-byte nonce (output: nonce | ciphertext |
tag), "hmac" is HMAC-SHA256.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tmr.licensing.model import LicenseError, LicenseReason

OPERATIONS = ("encrypt", "decrypt", "hmac")
MAX_CRYPT_DATA = 1 << 20
NONCE_BYTES = 12
TAG_BYTES = 16


def _error(message: str) -> LicenseError:
    return LicenseError(LicenseReason.CRYPT, message)


@functools.lru_cache(maxsize=1024)
def _subkey(product_key: bytes, purpose: bytes) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"tmr-crypt/1:" + purpose)
    return hkdf.derive(product_key)


def crypt(product_key: bytes, operation: str, data: bytes) -> bytes:
    if len(product_key) != 32:
        raise _error("product key must be 32 bytes")
    if len(data) > MAX_CRYPT_DATA:
        raise _error(f"data is {len(data)} bytes, the limit is {MAX_CRYPT_DATA}")
    if operation == "encrypt":
        nonce = os.urandom(NONCE_BYTES)
        return nonce + AESGCM(_subkey(product_key, b"aes-gcm")).encrypt(nonce, data, None)
    if operation == "decrypt":
        if len(data) < NONCE_BYTES + TAG_BYTES:
            raise _error("ciphertext is shorter than nonce and tag")
        aes = AESGCM(_subkey(product_key, b"aes-gcm"))
        try:
            return aes.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], None)
        except InvalidTag:
            raise _error("ciphertext was tampered with or made with another key") from None
    if operation == "hmac":
        return hmac.new(_subkey(product_key, b"hmac-sha256"), data, hashlib.sha256).digest()
    raise _error(f"unknown operation {operation!r} (expected one of {', '.join(OPERATIONS)})")
