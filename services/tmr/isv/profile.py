"""The vendor directory ("license central"): signing key, public key, per-product records.

- ``vendor.key``: Ed25519 private key, PKCS#8 PEM, mode 0600.
- ``vendor.pub``: the public key document (tmr.licensing.VendorPublicKey) for the backends.
- ``products/<product code>.json``: product key and the TMR IDs issued, mode 0600.
- ``.lock``: serialises concurrent `tmr vendor issue` runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)

from tmr.errors import ConfigError, UsageError
from tmr.licensing.fileio import write_atomic
from tmr.licensing.keyring import VendorPublicKey
from tmr.licensing.model import FIRM_CODE_MAX, FIRM_CODE_MIN
from tmr.licensing.sealing import PRODUCT_KEY_BYTES

KEY_FILE = "vendor.key"
PUB_FILE = "vendor.pub"
PRODUCTS_DIR = "products"


@dataclass(frozen=True)
class VendorProfile:
    directory: Path
    public: VendorPublicKey
    private_key: Ed25519PrivateKey = field(repr=False)

    @property
    def firm_code(self) -> int:
        return self.public.firm_code

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)


def _raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def init_vendor(
    directory: Path, firm_code: int, name: str | None = None, *, force: bool = False
) -> VendorProfile:
    if not FIRM_CODE_MIN <= firm_code <= FIRM_CODE_MAX:
        raise UsageError(f"firm code must be in {FIRM_CODE_MIN}-{FIRM_CODE_MAX}, not {firm_code}")
    key_path = directory / KEY_FILE
    if key_path.exists() and not force:
        raise UsageError(f"{key_path} already exists (use --force to replace the vendor key)")
    directory.mkdir(parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    public = VendorPublicKey(
        firm_code=firm_code, name=name or f"firm {firm_code}", public_key=_raw_public(private)
    )
    write_atomic(key_path, pem, mode=0o600)
    write_atomic(directory / PUB_FILE, public.to_json().encode("utf-8"))
    return VendorProfile(directory=directory, public=public, private_key=private)


def load_vendor(directory: Path) -> VendorProfile:
    key_path = directory / KEY_FILE
    try:
        pem = key_path.read_bytes()
    except OSError as exc:
        raise UsageError(
            f"no vendor key in {directory} ({exc.strerror}); run `tmr vendor init` first"
        ) from None
    try:
        private = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise UsageError(f"{key_path} is not an unencrypted PEM private key") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise UsageError(f"{key_path} is not an Ed25519 key")
    try:
        public = VendorPublicKey.load(directory / PUB_FILE)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if public.public_key != _raw_public(private):
        raise UsageError(f"{directory / PUB_FILE} does not match {key_path}")
    return VendorProfile(directory=directory, public=public, private_key=private)


@contextlib.contextmanager
def locked(profile: VendorProfile) -> Iterator[None]:
    """Hold an exclusive lock on the vendor directory (one `issue` at a time)."""
    fd = os.open(profile.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@dataclass
class ProductRecord:
    product_code: int
    product_key: bytes = field(repr=False)
    last_tmr_id: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def _product_path(profile: VendorProfile, product_code: int) -> Path:
    return profile.directory / PRODUCTS_DIR / f"{product_code}.json"


def load_product(profile: VendorProfile, product_code: int) -> ProductRecord | None:
    path = _product_path(profile, product_code)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
        record = ProductRecord(
            product_code=obj["product_code"],
            product_key=bytes.fromhex(obj["product_key"]),
            last_tmr_id=obj["last_tmr_id"],
            history=list(obj["history"]),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"product record {path} is unreadable or corrupt: {exc}") from None
    if (
        record.product_code != product_code
        or len(record.product_key) != PRODUCT_KEY_BYTES
        or type(record.last_tmr_id) is not int
    ):
        raise UsageError(f"product record {path} is corrupt")
    return record


def save_product(profile: VendorProfile, record: ProductRecord) -> None:
    path = _product_path(profile, record.product_code)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    doc = {
        "product_code": record.product_code,
        "product_key": record.product_key.hex(),
        "last_tmr_id": record.last_tmr_id,
        "history": record.history,
    }
    write_atomic(path, (json.dumps(doc, indent=2) + "\n").encode("utf-8"), mode=0o600)
