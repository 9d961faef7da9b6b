"""CURVE keys as pyzmq writes them (Z85 text) and their raw X25519 form."""

from __future__ import annotations

import re
import struct

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from zmq.utils import z85

from tmr.errors import TmrError

Z85_KEY_RE = re.compile(r"[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}")


class CurveKeyError(TmrError):
    """A CURVE key (text or file) is missing or malformed."""


def z85_key_bytes(text: str, what: str = "key") -> bytes:
    """The 32 raw bytes of a 40-character Z85 CURVE key; CurveKeyError if it is not one."""
    if not isinstance(text, str) or not Z85_KEY_RE.fullmatch(text):
        raise CurveKeyError(f"{what} is not a 40-character Z85 CURVE key")
    try:
        raw = z85.decode(text.encode("ascii"))
    except (ValueError, struct.error):  # a 5-character group above 2**32
        raise CurveKeyError(f"{what} is not a valid Z85 CURVE key") from None
    if len(raw) != 32 or z85.encode(raw).decode("ascii") != text:
        raise CurveKeyError(f"{what} is not a canonical Z85 CURVE key")
    return raw


def public_from_secret(secret_z85: str) -> str:
    """The Z85 public key that belongs to a Z85 secret key."""
    secret = X25519PrivateKey.from_private_bytes(z85_key_bytes(secret_z85, "secret key"))
    raw = secret.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return z85.encode(raw).decode("ascii")
