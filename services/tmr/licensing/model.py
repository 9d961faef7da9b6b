"""The license copy: its fields, its canonical file encoding and the strict parser.

A copy file (``*.tmrlic``) is ASCII text of exactly two lines::

    <body>\\n
    <signature>\\n

``body`` is the canonical JSON encoding of the fields (keys in the fixed order of
``BODY_KEYS``, no whitespace, ASCII only, integers only, features sorted by key) and
``signature`` is 128 lowercase hex digits: the vendor's Ed25519 signature over
``SIGNING_CONTEXT + body``, i.e. over the very bytes that are parsed. Anything else, including
a body that decodes to the same values but is encoded differently, is refused.

Format 2 (this one) binds each copy to its place in the set: ``set_id`` (random, one per
issued set of three), ``set_index`` (1..3, distinct within the set) and ``backend_key`` (the
raw CURVE public key, hex, of the backend the copy is bound to; ``fingerprint`` hashes it
with the backend's machine-id). A TMR server counts a copy only from the backend whose
authenticated CURVE key is ``backend_key``, and each (set, index), fingerprint and key only
once (`tmr.licensing.effective`). Format 1 copies, which carry neither, are refused
(UNSUPPORTED_VERSION): the vendor re-issues the set (docs/vendor-guide.md).
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tmr.errors import TmrError

FORMAT_VERSION = 2
SET_SIZE = 3  # copies per set: set_index is 1..SET_SIZE
MAX_COPY_BYTES = 64 * 1024
SIGNING_CONTEXT = b"tmr-license-copy/1\x00"
FIRM_CODE_MIN, FIRM_CODE_MAX = 6_000_000, 6_999_999
UINT32_MAX = 2**32 - 1
MAX_FEATURES = 64
SEALED_KEY_BYTES = 32 + 12 + 32 + 16  # ephemeral X25519 public | nonce | AES-GCM(product key)
SIGNATURE_HEX = 128

BODY_KEYS = (
    "format",
    "firm_code",
    "product_code",
    "tmr_id",
    "quantity",
    "expires",
    "features",
    "serial",
    "fingerprint",
    "backend_key",
    "set_id",
    "set_index",
    "issued",
    "sealed_product_key",
)

BACKEND_SERIAL_RE = re.compile(r"130-[0-9]{7}")
FEATURE_KEY_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
FEATURE_VALUE_RE = re.compile(r"[\x20-\x7e]{0,256}")
_HEX_RE = re.compile(r"[0-9a-f]*")


class LicenseReason(enum.StrEnum):
    MALFORMED = "MALFORMED"
    UNSUPPORTED_VERSION = "UNSUPPORTED_VERSION"
    UNKNOWN_FIRM = "UNKNOWN_FIRM"
    BAD_SIGNATURE = "BAD_SIGNATURE"
    WRONG_FINGERPRINT = "WRONG_FINGERPRINT"
    EXPIRED = "EXPIRED"
    CLOCK_ROLLBACK = "CLOCK_ROLLBACK"
    ROLLBACK = "ROLLBACK"
    SEALED_KEY = "SEALED_KEY"  # the product key does not open with this node's secret key
    WRONG_BACKEND_KEY = "WRONG_BACKEND_KEY"  # bound to another CURVE key than this node's
    SUPERSEDED = "SUPERSEDED"  # a valid copy with a higher TMR ID is installed
    DUPLICATE = "DUPLICATE"  # another file holds the same (firm, product, TMR ID)
    UNREADABLE = "UNREADABLE"
    CRYPT = "CRYPT"  # bad input to a crypto call made with the product key


class LicenseError(TmrError):
    """A license copy (or a crypto call with its product key) was refused."""

    def __init__(self, reason: LicenseReason, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason


def malformed(message: str) -> LicenseError:
    return LicenseError(LicenseReason.MALFORMED, message)


@dataclass(frozen=True)
class LicenseCopy:
    """One parsed (not yet verified) copy. ``body`` is the signed bytes, exactly as read."""

    firm_code: int
    product_code: int
    tmr_id: int
    quantity: int
    expires: int | None
    features: Mapping[str, str]
    serial: str
    fingerprint: str
    backend_key: str  # hex of the bound backend's raw CURVE public key
    set_id: str
    set_index: int  # 1..SET_SIZE, distinct within the set
    issued: int
    sealed_product_key: bytes
    signature: bytes
    body: bytes

    @property
    def signed_message(self) -> bytes:
        return SIGNING_CONTEXT + self.body

    def fields(self) -> dict[str, Any]:
        """The body as a JSON-ready dict, in canonical key order."""
        return body_fields(
            firm_code=self.firm_code,
            product_code=self.product_code,
            tmr_id=self.tmr_id,
            quantity=self.quantity,
            expires=self.expires,
            features=self.features,
            serial=self.serial,
            fingerprint=self.fingerprint,
            backend_key=self.backend_key,
            set_id=self.set_id,
            set_index=self.set_index,
            issued=self.issued,
            sealed_product_key=self.sealed_product_key,
        )


def body_fields(
    *,
    firm_code: int,
    product_code: int,
    tmr_id: int,
    quantity: int,
    expires: int | None,
    features: Mapping[str, str],
    serial: str,
    fingerprint: str,
    backend_key: str,
    set_id: str,
    set_index: int,
    issued: int,
    sealed_product_key: bytes,
) -> dict[str, Any]:
    return {
        "format": FORMAT_VERSION,
        "firm_code": firm_code,
        "product_code": product_code,
        "tmr_id": tmr_id,
        "quantity": quantity,
        "expires": expires,
        "features": dict(sorted(features.items())),
        "serial": serial,
        "fingerprint": fingerprint,
        "backend_key": backend_key,
        "set_id": set_id,
        "set_index": set_index,
        "issued": issued,
        "sealed_product_key": sealed_product_key.hex(),
    }


def encode_body(fields: Mapping[str, Any]) -> bytes:
    """Canonical encoding of a body dict (already in canonical key order)."""
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode(
        "ascii"
    )


def assemble(body: bytes, signature: bytes) -> bytes:
    """The file bytes of a copy from its canonical body and its 64-byte signature."""
    return body + b"\n" + signature.hex().encode("ascii") + b"\n"


def parse_copy(data: bytes) -> LicenseCopy:
    """Parse a copy file strictly. Raises LicenseError(MALFORMED or UNSUPPORTED_VERSION)."""
    if len(data) > MAX_COPY_BYTES:
        raise malformed(f"file is {len(data)} bytes, the limit is {MAX_COPY_BYTES}")
    lines = data.split(b"\n")
    if len(lines) != 3 or lines[2] != b"":
        raise malformed("expected exactly two newline-terminated lines (body, signature)")
    body, sig_line = lines[0], lines[1]
    signature = _hex(sig_line, SIGNATURE_HEX // 2, "signature")
    obj = _load_json(body)
    version = obj.get("format")
    if not _is_int(version):
        raise malformed("missing or non-integer 'format'")
    if version != FORMAT_VERSION:
        hint = (
            ": it names no set index and no backend key; have the vendor re-issue the set"
            " with `tmr vendor issue` (docs/vendor-guide.md)"
            if isinstance(version, int) and version < FORMAT_VERSION
            else ""
        )
        raise LicenseError(
            LicenseReason.UNSUPPORTED_VERSION,
            f"format version {version} is not supported (this build reads {FORMAT_VERSION})" + hint,
        )
    if tuple(sorted(obj)) != tuple(sorted(BODY_KEYS)):
        missing = sorted(set(BODY_KEYS) - set(obj))
        extra = sorted(set(obj) - set(BODY_KEYS))
        raise malformed(f"wrong fields (missing {missing}, unknown {extra})")
    expires = obj["expires"]
    copy = LicenseCopy(
        firm_code=_int(obj, "firm_code", FIRM_CODE_MIN, FIRM_CODE_MAX),
        product_code=_int(obj, "product_code", 0, UINT32_MAX),
        tmr_id=_int(obj, "tmr_id", 1, UINT32_MAX),
        quantity=_int(obj, "quantity", 1, UINT32_MAX),
        expires=None if expires is None else _int(obj, "expires", 1, 2**40),
        features=_features(obj["features"]),
        serial=_match(obj, "serial", BACKEND_SERIAL_RE),
        fingerprint=_hex_text(obj, "fingerprint", 32),
        backend_key=_hex_text(obj, "backend_key", 32),
        set_id=_hex_text(obj, "set_id", 16),
        set_index=_int(obj, "set_index", 1, SET_SIZE),
        issued=_int(obj, "issued", 0, 2**40),
        sealed_product_key=_hex(obj["sealed_product_key"], SEALED_KEY_BYTES, "sealed_product_key"),
        signature=signature,
        body=body,
    )
    if copy.expires is not None and copy.expires <= copy.issued:
        raise malformed("'expires' is not after 'issued'")
    if encode_body(copy.fields()) != body:
        raise malformed("body is not canonically encoded")
    return copy


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise malformed(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_floats(text: str) -> Any:
    raise malformed(f"non-integer number {text[:20]!r}")


def _load_json(body: bytes) -> dict[str, Any]:
    try:
        text = body.decode("ascii")
        obj = json.loads(
            text,
            object_pairs_hook=_reject_duplicates,
            parse_float=_no_floats,
            parse_constant=_no_floats,
        )
    except LicenseError:
        raise
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError, JSONDecodeError, ...
        raise malformed(f"body is not ASCII JSON ({type(exc).__name__})") from None
    if not isinstance(obj, dict):
        raise malformed("body is not a JSON object")
    return obj


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(obj: Mapping[str, Any], key: str, low: int, high: int) -> int:
    value = obj[key]
    if not _is_int(value) or not low <= value <= high:
        raise malformed(f"'{key}' must be an integer in [{low}, {high}]")
    return int(value)


def _match(obj: Mapping[str, Any], key: str, pattern: re.Pattern[str]) -> str:
    value = obj[key]
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise malformed(f"'{key}' does not match {pattern.pattern}")
    return value


def _hex(value: object, nbytes: int, what: str) -> bytes:
    """Strict lowercase hex of exactly nbytes bytes (accepts str or ASCII bytes)."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if not isinstance(value, str) or len(value) != 2 * nbytes or not _HEX_RE.fullmatch(value):
        raise malformed(f"'{what}' must be {2 * nbytes} lowercase hex digits")
    return bytes.fromhex(value)


def _hex_text(obj: Mapping[str, Any], key: str, nbytes: int) -> str:
    return _hex(obj[key], nbytes, key).hex()


def _features(value: object) -> dict[str, str]:
    if not isinstance(value, dict) or len(value) > MAX_FEATURES:
        raise malformed(f"'features' must be an object of at most {MAX_FEATURES} entries")
    for key, item in value.items():
        if not FEATURE_KEY_RE.fullmatch(key):
            raise malformed(f"feature name {key[:70]!r} is not [A-Za-z0-9_.-]{{1,64}}")
        if not isinstance(item, str) or not FEATURE_VALUE_RE.fullmatch(item):
            raise malformed(f"feature {key!r} must be printable ASCII, at most 256 characters")
    return dict(value)
