"""CURVE node key pairs (Z85 text, as pyzmq uses them).

A key pair file is JSON ``{"public": "<z85>", "secret": "<z85>"}`` with mode 0600; next to
it, ``<file>.pub`` holds the public key alone on one line, for distribution.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import zmq

from tmr.licensing.curve import Z85_KEY_RE, CurveKeyError, public_from_secret, z85_key_bytes
from tmr.licensing.fileio import read_limited, write_atomic

__all__ = [
    "CurveKeyError",
    "NodeKeys",
    "generate_keypair",
    "load_keypair",
    "load_public_key",
    "public_key_path",
    "write_keypair",
]

MAX_KEY_FILE_BYTES = 4096


@dataclass(frozen=True)
class NodeKeys:
    public: str
    secret: str

    def __repr__(self) -> str:  # keep the secret out of logs and tracebacks
        return f"NodeKeys(public={self.public!r}, secret=<hidden>)"


def generate_keypair() -> NodeKeys:
    public, secret = zmq.curve_keypair()
    return NodeKeys(public=public.decode("ascii"), secret=secret.decode("ascii"))


def public_key_path(path: Path) -> Path:
    return path.with_name(path.name + ".pub")


def write_keypair(path: Path, keys: NodeKeys, *, force: bool = False) -> None:
    """Write ``path`` (mode 0600) and ``path.pub``; refuse to overwrite unless ``force``."""
    if public_from_secret(keys.secret) != keys.public:
        raise CurveKeyError("public key does not belong to the secret key")
    pub_path = public_key_path(path)
    if not force:
        for p in (path, pub_path):
            if p.exists() or p.is_symlink():
                raise CurveKeyError(f"{p} already exists (use --force to overwrite it)")
    doc = json.dumps({"public": keys.public, "secret": keys.secret}) + "\n"
    write_atomic(path, doc.encode("ascii"), mode=0o600)
    write_atomic(pub_path, (keys.public + "\n").encode("ascii"), mode=0o644)


def _read_text(path: Path) -> str:
    try:
        data = read_limited(path, MAX_KEY_FILE_BYTES)
    except OSError as exc:
        raise CurveKeyError(f"cannot read key file {path}: {exc.strerror}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise CurveKeyError(f"key file {path} is larger than {MAX_KEY_FILE_BYTES} bytes")
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise CurveKeyError(f"key file {path} is not ASCII") from None


def load_keypair(path: Path) -> NodeKeys:
    text = _read_text(path)
    try:
        obj = json.loads(text)
    except ValueError:
        obj = None
    if not isinstance(obj, dict) or set(obj) != {"public", "secret"}:
        raise CurveKeyError(f"{path} is not a key pair file (JSON with public and secret)")
    public, secret = obj["public"], obj["secret"]
    z85_key_bytes(public, f"{path}: public key")
    z85_key_bytes(secret, f"{path}: secret key")
    if public_from_secret(secret) != public:
        raise CurveKeyError(f"{path}: public key does not belong to the secret key")
    return NodeKeys(public=public, secret=secret)


def load_public_key(value: str | Path) -> str:
    """A Z85 public key given as the key itself, a ``.pub`` file, or a key pair file."""
    if isinstance(value, str) and Z85_KEY_RE.fullmatch(value):
        z85_key_bytes(value, "public key")
        return value
    path = Path(value)
    text = _read_text(path).strip()
    # A bare key first: "{" is a Z85 character, so one key in 85 begins with it.
    if text.startswith("{") and not Z85_KEY_RE.fullmatch(text):
        return load_keypair(path).public
    z85_key_bytes(text, f"{path}: public key")
    return text
