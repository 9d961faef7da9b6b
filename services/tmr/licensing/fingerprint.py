"""Backend identity: fingerprint (CURVE public key + machine-id), serial, fingerprint document.

The fingerprint is ``SHA-256("tmr-backend-fingerprint/1" NUL public-key-32-bytes NUL
machine-id)`` in lowercase hex, so a container copied to another host (other machine-id) or
given another key no longer matches the copies issued for it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from tmr.errors import ConfigError, UsageError
from tmr.licensing.curve import z85_key_bytes
from tmr.licensing.model import BACKEND_SERIAL_RE

FINGERPRINT_CONTEXT = b"tmr-backend-fingerprint/1\x00"
FINGERPRINT_RE = re.compile(r"[0-9a-f]{64}")
MACHINE_ID_RE = re.compile(r"[\x21-\x7e]{1,255}")
DEFAULT_MACHINE_ID_FILE = Path("/etc/machine-id")


def fingerprint_of(public_key_z85: str, machine_id: str) -> str:
    machine = machine_id.strip()
    if not MACHINE_ID_RE.fullmatch(machine):
        raise ConfigError("machine-id must be 1-255 printable ASCII characters")
    raw = z85_key_bytes(public_key_z85, "public key")
    digest = hashlib.sha256(FINGERPRINT_CONTEXT + raw + b"\x00" + machine.encode("ascii"))
    return digest.hexdigest()


def serial_from_fingerprint(fingerprint: str) -> str:
    """The default backend container serial: ``130-`` and 7 digits taken from the fingerprint."""
    return f"130-{int(fingerprint[:16], 16) % 10**7:07d}"


def read_machine_id(path: Path = DEFAULT_MACHINE_ID_FILE) -> str:
    try:
        text = path.read_text(encoding="ascii", errors="strict")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read machine-id from {path}: {exc}") from None
    if not MACHINE_ID_RE.fullmatch(text.strip()):
        raise ConfigError(f"{path} does not hold a machine-id")
    return text.strip()


@dataclass(frozen=True)
class FingerprintDoc:
    """What `tmr backend fingerprint` prints and `tmr vendor issue --fingerprint` reads."""

    serial: str
    public_key: str
    fingerprint: str

    def to_json(self) -> str:
        return json.dumps(
            {"serial": self.serial, "public_key": self.public_key, "fingerprint": self.fingerprint}
        )

    @classmethod
    def parse(cls, text: str, source: str = "fingerprint document") -> FingerprintDoc:
        try:
            obj = json.loads(text)
        except ValueError:
            raise UsageError(f"{source} is not JSON") from None
        if not isinstance(obj, dict) or set(obj) != {"serial", "public_key", "fingerprint"}:
            raise UsageError(f"{source} must be an object with serial, public_key, fingerprint")
        serial, public, fp = obj["serial"], obj["public_key"], obj["fingerprint"]
        if not isinstance(serial, str) or not BACKEND_SERIAL_RE.fullmatch(serial):
            raise UsageError(f"{source}: serial must look like 130-NNNNNNN")
        if not isinstance(fp, str) or not FINGERPRINT_RE.fullmatch(fp):
            raise UsageError(f"{source}: fingerprint must be 64 lowercase hex digits")
        if not isinstance(public, str):
            raise UsageError(f"{source}: public_key must be a Z85 string")
        z85_key_bytes(public, f"{source}: public_key")
        return cls(serial=serial, public_key=public, fingerprint=fp)

    @classmethod
    def load(cls, path: Path) -> FingerprintDoc:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read fingerprint document {path}: {exc}") from None
        return cls.parse(text, str(path))


def make_fingerprint_doc(
    public_key_z85: str, machine_id: str, serial: str | None = None
) -> FingerprintDoc:
    fp = fingerprint_of(public_key_z85, machine_id)
    if serial is None:
        serial = serial_from_fingerprint(fp)
    elif not BACKEND_SERIAL_RE.fullmatch(serial):
        raise UsageError(f"serial {serial!r} must look like 130-NNNNNNN")
    return FingerprintDoc(serial=serial, public_key=public_key_z85, fingerprint=fp)
