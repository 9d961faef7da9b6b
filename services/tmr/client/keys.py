"""CURVE keys for clients: the pinned service public key and the client's own key pair.

Key text is Z85 (40 characters), as pyzmq writes it. Files may be:

* a bare Z85 key on one line (a ``.pub`` file holds the public key; a secret key file holds
  the secret key, the public key is derived from it);
* JSON: ``{"public": Z85, "secret": Z85}`` (also ``public_key`` / ``secret_key``, and
  ``service_public_key`` as written to ``cluster.json`` by ``tmr local up``);
* a ZeroMQ certificate (ZPL) as written by ``zmq.auth.create_certificates``
  (``public-key = "..."``, ``secret-key = "..."``).
"""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path
from typing import Protocol

import zmq
from zmq.utils import z85

from tmr.errors import ConfigError
from tmr.keys import NodeKeys, generate_keypair

__all__ = [
    "CurveKeyPair",
    "NodeKeys",
    "check_key_pair",
    "generate_keypair",
    "key_bytes",
    "load_client_keys",
    "load_public_key",
    "valid_z85_key",
]

MAX_KEY_FILE = 64 * 1024
_Z85_KEY_RE = re.compile(r"[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}")
_ZPL_RE = re.compile(r'^\s*(public|secret)-key\s*=\s*"([^"]*)"', re.MULTILINE)
_JSON_PUBLIC = ("public", "public_key", "service_public_key")
_JSON_SECRET = ("secret", "secret_key")


class CurveKeyPair(Protocol):
    """Anything with Z85 ``public`` and ``secret`` keys (str or bytes), e.g. `tmr.keys.NodeKeys`."""

    @property
    def public(self) -> str | bytes: ...

    @property
    def secret(self) -> str | bytes: ...


def valid_z85_key(text: object) -> bool:
    """True if `text` is a 40-character Z85 encoding of a 32-byte CURVE key."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            return False
    if not isinstance(text, str) or not _Z85_KEY_RE.fullmatch(text):
        return False
    try:
        return len(z85.decode(text.encode("ascii"))) == 32
    except (ValueError, struct.error):
        return False


def key_bytes(text: str | bytes, what: str = "key") -> bytes:
    """The Z85 key as ASCII bytes (what pyzmq socket options take); ConfigError if invalid."""
    if not valid_z85_key(text):
        raise ConfigError(f"{what} is not a 40-character Z85 CURVE key")
    return text if isinstance(text, bytes) else text.encode("ascii")


def load_client_keys(path: str | os.PathLike[str]) -> NodeKeys:
    """Read this client's key pair (or a bare secret key) from a file; ConfigError if unusable.

    Accepts the key pair files of `tmr.keys` (JSON ``{"public", "secret"}``), ZeroMQ secret
    certificates and a file holding just the Z85 secret key.
    """
    text = _read(path)
    bare = _bare_key(text)
    if bare is not None:
        return NodeKeys(public=_public_of(bare), secret=bare)
    public, secret = _parse(text)
    if secret is None:
        raise ConfigError(f"{path}: no secret key in the file")
    derived = _public_of(secret)
    if public is not None and public != derived:
        raise ConfigError(f"{path}: public key does not belong to the secret key")
    return NodeKeys(public=derived, secret=secret)


def check_key_pair(keys: CurveKeyPair) -> tuple[bytes, bytes]:
    """(public, secret) as Z85 bytes for pyzmq; ConfigError if invalid or not a pair."""
    public = key_bytes(keys.public, "client public key")
    secret = key_bytes(keys.secret, "client secret key")
    if zmq.curve_public(secret) != public:
        raise ConfigError("client public key does not belong to the client secret key")
    return public, secret


def load_public_key(value: str | os.PathLike[str]) -> str:
    """A Z85 public key given as the key itself or as the path of a file holding it.

    Used for the pinned service key (``--server-key Z85|FILE``). Raises ConfigError.
    """
    if isinstance(value, str) and valid_z85_key(value) and not os.path.exists(value):
        return value
    text = _read(value)
    bare = _bare_key(text)
    if bare is not None:
        return bare
    public, secret = _parse(text)
    if public is None and secret is not None:
        public = _public_of(secret)
    if public is None:
        raise ConfigError(f"{value}: no public key in the file")
    return public


def _public_of(secret: str) -> str:
    return zmq.curve_public(secret.encode("ascii")).decode("ascii")


def _read(path: str | os.PathLike[str]) -> str:
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = fh.read(MAX_KEY_FILE + 1)
    except OSError as exc:
        if isinstance(path, str) and len(path) == 40 and os.sep not in path:
            raise ConfigError("not a valid Z85 CURVE key, nor a readable key file") from None
        raise ConfigError(f"cannot read key file {p}: {exc.strerror or exc}") from None
    if len(data) > MAX_KEY_FILE:
        raise ConfigError(f"key file {p} is too large")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"key file {p} is not text") from None


def _checked(value: object, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not valid_z85_key(value):
        raise ConfigError(f"{what} is not a 40-character Z85 CURVE key")
    return value


def _bare_key(text: str) -> str | None:
    """The key of a file that holds nothing but one Z85 key."""
    stripped = text.strip()
    return stripped if valid_z85_key(stripped) else None


def _parse(text: str) -> tuple[str | None, str | None]:
    """(public, secret) found in a key file's text; either may be None."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            doc = json.loads(stripped)
        except ValueError:
            raise ConfigError("key file is not valid JSON") from None
        if not isinstance(doc, dict):
            raise ConfigError("key file JSON must be an object")
        public = next((doc[k] for k in _JSON_PUBLIC if k in doc), None)
        secret = next((doc[k] for k in _JSON_SECRET if k in doc), None)
        return _checked(public, "public key"), _checked(secret, "secret key")
    found = dict((kind, value) for kind, value in _ZPL_RE.findall(text))
    if found:
        return (
            _checked(found.get("public"), "public key"),
            _checked(found.get("secret"), "secret key"),
        )
    raise ConfigError("key file holds no Z85 CURVE key")
