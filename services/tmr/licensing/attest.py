"""Proof that a document was made by the holder of a backend's CURVE (X25519) secret key.

An X25519 key cannot sign. A backend proves possession of its node key to the vendor with a
designated-verifier tag instead::

    shared = X25519(node secret, X25519 form of the vendor's Ed25519 public key)
    key    = HKDF-SHA256(shared, salt = none,
                         info = "tmr-backend-proof/1" NUL node-public vendor-public)
    tag    = HMAC-SHA256(key, "tmr-backend-proof/1" NUL kind NUL canonical-body)

The vendor computes the same ``shared`` from its Ed25519 private key (converted to its X25519
form, as RFC 8032 / RFC 7748 allow: the clamped first half of SHA-512(seed)) and the node's
public key, so it alone can check the tag; it needs no secret of the backend and no message
back to it (offline). What a valid tag proves: the document (every field of the body) was made
by whoever holds the CURVE secret key of ``public_key``, for this vendor, and was not changed
since. It does not prove which machine holds the key: the fingerprint's machine-id part is the
backend's own statement (a backend still refuses a copy whose fingerprint is not its own).
Only the vendor (and the backend) can make such a tag, so it convinces nobody else - which is
all the offline exchange needs.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from tmr.licensing.curve import z85_key_bytes

PROOF_CONTEXT = b"tmr-backend-proof/1"
TAG_BYTES = 32
_P = 2**255 - 19


class ProofKeyError(ValueError):
    """A public key that cannot take part in a proof (not a curve point, low order)."""


def ed25519_public_to_x25519(ed_public: bytes) -> bytes:
    """The X25519 (Montgomery u) form of a raw Ed25519 public key: u = (1 + y) / (1 - y)."""
    if len(ed_public) != 32:
        raise ProofKeyError("an Ed25519 public key has 32 bytes")
    y = int.from_bytes(ed_public, "little") & ((1 << 255) - 1)
    if y >= _P or y == 1:
        raise ProofKeyError("not a usable Ed25519 public key")
    u = (1 + y) * pow(1 - y, _P - 2, _P) % _P
    return u.to_bytes(32, "little")


def ed25519_private_to_x25519(ed_private: Ed25519PrivateKey) -> X25519PrivateKey:
    """The X25519 form of an Ed25519 private key (its clamped secret scalar)."""
    seed = ed_private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return X25519PrivateKey.from_private_bytes(hashlib.sha512(seed).digest()[:32])


def _mac_key(shared: bytes, node_public: bytes, vendor_public: bytes) -> bytes:
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=PROOF_CONTEXT + b"\x00" + node_public + vendor_public,
    )
    return hkdf.derive(shared)


def _message(kind: str, body: bytes) -> bytes:
    return PROOF_CONTEXT + b"\x00" + kind.encode("ascii") + b"\x00" + body


def make_tag(node_secret_z85: str, vendor_public: bytes, kind: str, body: bytes) -> bytes:
    """The backend's tag over ``body`` for the vendor whose raw Ed25519 key is vendor_public."""
    secret = X25519PrivateKey.from_private_bytes(z85_key_bytes(node_secret_z85, "secret key"))
    node_public = secret.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    peer = X25519PublicKey.from_public_bytes(ed25519_public_to_x25519(vendor_public))
    try:
        shared = secret.exchange(peer)
    except ValueError:
        raise ProofKeyError("the vendor key is a low-order point") from None
    key = _mac_key(shared, node_public, vendor_public)
    return hmac.new(key, _message(kind, body), hashlib.sha256).digest()


def check_tag(
    vendor_private: Ed25519PrivateKey, node_public: bytes, kind: str, body: bytes, tag: bytes
) -> bool:
    """True iff ``tag`` was made over ``body`` with the CURVE secret key of node_public."""
    if len(node_public) != 32 or len(tag) != TAG_BYTES:
        return False
    vendor_public = vendor_private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    try:
        shared = ed25519_private_to_x25519(vendor_private).exchange(
            X25519PublicKey.from_public_bytes(node_public)
        )
    except ValueError:  # all-zero shared secret: a low-order "public key"
        return False
    key = _mac_key(shared, node_public, vendor_public)
    return hmac.compare_digest(hmac.new(key, _message(kind, body), hashlib.sha256).digest(), tag)
