"""Vendor public keys (the backends' trust anchors) and the vendor.pub file.

vendor.pub is JSON: {"firm_code": 6000123, "name": "Acme", "public_key": "<64 hex digits>"}
(the raw Ed25519 public key). A firm code may have several keys (key rotation).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tmr.errors import ConfigError
from tmr.licensing.fileio import read_limited
from tmr.licensing.model import FIRM_CODE_MAX, FIRM_CODE_MIN

MAX_KEY_FILE_BYTES = 4096
_PUB_HEX_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class VendorPublicKey:
    firm_code: int
    name: str
    public_key: bytes  # raw Ed25519, 32 bytes

    def to_json(self) -> str:
        doc = {"firm_code": self.firm_code, "name": self.name, "public_key": self.public_key.hex()}
        return json.dumps(doc, indent=2) + "\n"

    @classmethod
    def parse(cls, text: str, source: str = "vendor key") -> VendorPublicKey:
        try:
            obj = json.loads(text)
        except ValueError:
            raise ConfigError(f"{source} is not JSON") from None
        if not isinstance(obj, dict) or set(obj) != {"firm_code", "name", "public_key"}:
            raise ConfigError(f"{source} must be an object with firm_code, name, public_key")
        firm, name, pub = obj["firm_code"], obj["name"], obj["public_key"]
        if type(firm) is not int or not FIRM_CODE_MIN <= firm <= FIRM_CODE_MAX:
            raise ConfigError(f"{source}: firm_code must be in {FIRM_CODE_MIN}-{FIRM_CODE_MAX}")
        if not isinstance(name, str):
            raise ConfigError(f"{source}: name must be a string")
        if not isinstance(pub, str) or not _PUB_HEX_RE.fullmatch(pub):
            raise ConfigError(f"{source}: public_key must be 64 lowercase hex digits")
        return cls(firm_code=firm, name=name, public_key=bytes.fromhex(pub))

    @classmethod
    def load(cls, path: Path) -> VendorPublicKey:
        try:
            data = read_limited(path, MAX_KEY_FILE_BYTES)
        except OSError as exc:
            raise ConfigError(f"cannot read vendor key {path}: {exc.strerror}") from None
        if len(data) > MAX_KEY_FILE_BYTES:
            raise ConfigError(f"vendor key {path} is larger than {MAX_KEY_FILE_BYTES} bytes")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"vendor key {path} is not UTF-8") from None
        return cls.parse(text, str(path))


class VendorKeyring:
    """The vendor public keys a backend trusts, by firm code."""

    def __init__(self, keys: Mapping[int, Sequence[bytes]]) -> None:
        self._keys: dict[int, tuple[Ed25519PublicKey, ...]] = {}
        for firm, raws in keys.items():
            try:
                self._keys[firm] = tuple(Ed25519PublicKey.from_public_bytes(r) for r in raws)
            except ValueError:
                raise ConfigError(f"bad Ed25519 public key for firm code {firm}") from None

    @classmethod
    def load(cls, paths: Iterable[Path]) -> VendorKeyring:
        keys: dict[int, list[bytes]] = {}
        for path in paths:
            vk = VendorPublicKey.load(Path(path))
            known = keys.setdefault(vk.firm_code, [])
            if vk.public_key not in known:
                known.append(vk.public_key)
        return cls(keys)

    @classmethod
    def of(cls, *keys: VendorPublicKey) -> VendorKeyring:
        merged: dict[int, list[bytes]] = {}
        for vk in keys:
            merged.setdefault(vk.firm_code, []).append(vk.public_key)
        return cls(merged)

    def firm_codes(self) -> frozenset[int]:
        return frozenset(self._keys)

    def knows(self, firm_code: int) -> bool:
        return firm_code in self._keys

    def verify(self, firm_code: int, signature: bytes, message: bytes) -> bool:
        """True iff one of the firm's keys signed message."""
        for key in self._keys.get(firm_code, ()):
            try:
                key.verify(signature, message)
            except InvalidSignature:
                continue
            return True
        return False
