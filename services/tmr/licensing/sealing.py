"""Sealing the product key to one backend's CURVE (X25519) public key.

sealed = ephemeral-public (32) | nonce (12) | AES-256-GCM(key, nonce, product key, aad) (32+16)
key    = HKDF-SHA256(X25519(ephemeral, backend), salt = none,
                     info = "tmr-product-key/1" NUL ephemeral-public backend-public)
aad    = "tmr-product-key/1:<firm code>:<product code>:<fingerprint>"
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tmr.licensing.curve import z85_key_bytes
from tmr.licensing.model import LicenseCopy, LicenseError, LicenseReason

PRODUCT_KEY_BYTES = 32
SEAL_CONTEXT = b"tmr-product-key/1"


def _aad(firm_code: int, product_code: int, fingerprint: str) -> bytes:
    return b"%s:%d:%d:%s" % (SEAL_CONTEXT, firm_code, product_code, fingerprint.encode("ascii"))


def _wrap_key(shared: bytes, ephemeral_pub: bytes, recipient_pub: bytes) -> bytes:
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=SEAL_CONTEXT + b"\x00" + ephemeral_pub + recipient_pub,
    )
    return hkdf.derive(shared)


def _raw_public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def seal_product_key(
    product_key: bytes,
    recipient_public_z85: str,
    *,
    firm_code: int,
    product_code: int,
    fingerprint: str,
) -> bytes:
    if len(product_key) != PRODUCT_KEY_BYTES:
        raise ValueError("product key must be 32 bytes")
    recipient_pub = z85_key_bytes(recipient_public_z85, "backend public key")
    ephemeral = X25519PrivateKey.generate()
    ephemeral_pub = _raw_public(ephemeral)
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient_pub))
    nonce = os.urandom(12)
    ct = AESGCM(_wrap_key(shared, ephemeral_pub, recipient_pub)).encrypt(
        nonce, product_key, _aad(firm_code, product_code, fingerprint)
    )
    return ephemeral_pub + nonce + ct


def open_product_key(copy: LicenseCopy, node_secret_z85: str) -> bytes:
    """The product key of a copy, opened with the backend's Z85 CURVE secret key.

    Raises LicenseError(SEALED_KEY) if the key was sealed to another backend or tampered with.
    """
    secret = X25519PrivateKey.from_private_bytes(z85_key_bytes(node_secret_z85, "secret key"))
    sealed = copy.sealed_product_key
    ephemeral_pub, nonce, ct = sealed[:32], sealed[32:44], sealed[44:]
    try:
        shared = secret.exchange(X25519PublicKey.from_public_bytes(ephemeral_pub))
        key = _wrap_key(shared, ephemeral_pub, _raw_public(secret))
        product_key = AESGCM(key).decrypt(
            nonce, ct, _aad(copy.firm_code, copy.product_code, copy.fingerprint)
        )
    except (InvalidTag, ValueError):  # ValueError: all-zero shared secret (low-order point)
        raise LicenseError(
            LicenseReason.SEALED_KEY, "the product key is not sealed to this backend's key"
        ) from None
    return product_key
