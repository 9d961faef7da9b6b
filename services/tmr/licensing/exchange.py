"""The offline license exchange between customer and vendor: request, update, receipts.

Three files travel (docs/vendor-guide.md, "Offline license delivery"):

- request (customer -> vendor): the three backends' fingerprint documents, each with the
  backend's proof (`tmr.licensing.attest`) over serial, CURVE public key, fingerprint, the
  virtual container serial and the vendor it is meant for;
- update (vendor -> customer): the three vendor-signed copies of one set, copy i for the
  backend named i-th in the request;
- receipts (customer -> vendor): after each install, the backend's proof over what it
  installed (set, index, TMR ID, SHA-256 of the copy file, its fingerprint, its time).

Every file is JSON; a backend document is ``{"body": {...}, "proof": "<hex>"}`` and the proof
covers the canonical encoding of ``body`` (sorted keys, no whitespace, ASCII). Anything that
does not parse, repeats a backend, mixes sets or fails a proof or signature is refused with an
`ExchangeError` naming the reason, before anything is installed or recorded.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zmq.utils import z85

from tmr.errors import TmrError
from tmr.keys import NodeKeys
from tmr.licensing.attest import ProofKeyError, make_tag
from tmr.licensing.container import COPY_SUFFIX, node_backend_key, read_copy
from tmr.licensing.curve import Z85_KEY_RE, CurveKeyError, z85_key_bytes
from tmr.licensing.fileio import read_limited, write_atomic
from tmr.licensing.fingerprint import FINGERPRINT_RE, make_fingerprint_doc
from tmr.licensing.keyring import VendorKeyring, VendorPublicKey
from tmr.licensing.model import (
    BACKEND_SERIAL_RE,
    FIRM_CODE_MAX,
    FIRM_CODE_MIN,
    SET_SIZE,
    UINT32_MAX,
    LicenseCopy,
    LicenseError,
    parse_copy,
)
from tmr.licensing.sealing import open_product_key
from tmr.licensing.verify import verify_copy

EXCHANGE_FORMAT = 1
MAX_EXCHANGE_BYTES = 1024 * 1024
KIND_FINGERPRINT = "tmr-backend-fingerprint"
KIND_REQUEST = "tmr-license-request"
KIND_UPDATE = "tmr-license-update"
KIND_RECEIPT = "tmr-license-receipt"
KIND_RECEIPTS = "tmr-license-receipts"
CONTAINER_SERIAL_RE = re.compile(r"131-[0-9]{7}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX32 = re.compile(r"[0-9a-f]{32}")


class ExchangeReason(enum.StrEnum):
    MALFORMED = "MALFORMED"  # truncated, not JSON, wrong fields or types
    UNSUPPORTED_VERSION = "UNSUPPORTED_VERSION"
    WRONG_KIND = "WRONG_KIND"  # e.g. a receipt given where a request is expected
    DUPLICATE = "DUPLICATE"  # a backend, key, fingerprint or index repeats
    INCONSISTENT = "INCONSISTENT"  # parts of one file name different sets, vendors, ...
    BAD_PROOF = "BAD_PROOF"  # a backend's proof does not verify (tampered or made up)
    BAD_SIGNATURE = "BAD_SIGNATURE"  # a copy's vendor signature does not verify
    WRONG_VENDOR = "WRONG_VENDOR"  # meant for another vendor (firm code or key)
    WRONG_TRIO = "WRONG_TRIO"  # for other backends than these
    OLDER_TMR_ID = "OLDER_TMR_ID"  # older than what is installed, issued or confirmed
    UNKNOWN_SET = "UNKNOWN_SET"  # the vendor never issued this set
    ALREADY_CONFIRMED = "ALREADY_CONFIRMED"
    NOT_INSTALLED = "NOT_INSTALLED"  # no valid copy to write a receipt for


class ExchangeError(TmrError):
    """A request, update or receipt file was refused; nothing was installed or recorded."""

    def __init__(self, reason: ExchangeReason, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason


def _err(reason: ExchangeReason, message: str) -> ExchangeError:
    return ExchangeError(reason, message)


def canonical(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _err(ExchangeReason.MALFORMED, f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_float(text: str) -> Any:
    raise _err(ExchangeReason.MALFORMED, f"non-integer number {text[:20]!r}")


def load_json(data: bytes, what: str) -> dict[str, Any]:
    if len(data) > MAX_EXCHANGE_BYTES:
        raise _err(ExchangeReason.MALFORMED, f"{what} is larger than {MAX_EXCHANGE_BYTES} bytes")
    try:
        obj = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_pairs,
            parse_float=_no_float,
            parse_constant=_no_float,
        )
    except ExchangeError:
        raise
    except (ValueError, RecursionError):
        raise _err(ExchangeReason.MALFORMED, f"{what} is not complete JSON (truncated?)") from None
    if not isinstance(obj, dict):
        raise _err(ExchangeReason.MALFORMED, f"{what} is not a JSON object")
    return obj


def read_file(path: Path, what: str) -> bytes:
    try:
        return read_limited(path, MAX_EXCHANGE_BYTES + 1)
    except OSError as exc:
        raise _err(ExchangeReason.MALFORMED, f"cannot read {what} {path}: {exc.strerror}") from None


def write_doc(path: Path, obj: Mapping[str, Any], *, mode: int = 0o644) -> None:
    write_atomic(path, (json.dumps(obj, indent=2) + "\n").encode("ascii"), mode=mode)


# --- field checks -------------------------------------------------------------------------

Check = Callable[[Any], bool]


def _int_in(low: int, high: int) -> Check:
    return lambda v: type(v) is int and low <= v <= high


def _text(pattern: re.Pattern[str]) -> Check:
    return lambda v: isinstance(v, str) and pattern.fullmatch(v) is not None


def _optional(check: Check) -> Check:
    return lambda v: v is None or check(v)


_COMMON: dict[str, Check] = {
    "kind": lambda v: isinstance(v, str),
    "format": lambda v: type(v) is int,
    "firm_code": _int_in(FIRM_CODE_MIN, FIRM_CODE_MAX),
    "vendor_key": _text(_HEX64),
    "serial": _text(BACKEND_SERIAL_RE),
    "public_key": _text(Z85_KEY_RE),
    "fingerprint": _text(FINGERPRINT_RE),
}
_TIME = _int_in(0, 2**40)
BODY_FIELDS: dict[str, dict[str, Check]] = {
    KIND_FINGERPRINT: {
        **_COMMON,
        "container_serial": _optional(_text(CONTAINER_SERIAL_RE)),
        "made": _TIME,
    },
    KIND_RECEIPT: {
        **_COMMON,
        "product_code": _int_in(0, UINT32_MAX),
        "tmr_id": _int_in(1, UINT32_MAX),
        "set_id": _text(_HEX32),
        "set_index": _int_in(1, SET_SIZE),
        "copy_sha256": _text(_HEX64),
        "installed_at": _TIME,
    },
}


def _check_version(obj: Mapping[str, Any], kind: str, what: str) -> None:
    if obj.get("kind") != kind:
        raise _err(ExchangeReason.WRONG_KIND, f"{what} is not a {kind} document")
    if obj.get("format") != EXCHANGE_FORMAT:
        raise _err(
            ExchangeReason.UNSUPPORTED_VERSION,
            f"{what}: format {obj.get('format')!r} is not supported (this build reads "
            f"{EXCHANGE_FORMAT})",
        )


def _check_fields(obj: Mapping[str, Any], checks: Mapping[str, Check], what: str) -> None:
    if set(obj) != set(checks):
        missing = sorted(set(checks) - set(obj))
        extra = sorted(set(obj) - set(checks))
        raise _err(
            ExchangeReason.MALFORMED, f"{what}: wrong fields (missing {missing}, unknown {extra})"
        )
    for key, check in checks.items():
        if not check(obj[key]):
            raise _err(ExchangeReason.MALFORMED, f"{what}: field {key!r} has a bad value")
    if "public_key" in obj:
        try:
            z85_key_bytes(obj["public_key"])
        except CurveKeyError:
            raise _err(ExchangeReason.MALFORMED, f"{what}: public_key is not a CURVE key") from None


# --- backend documents with a proof ---------------------------------------------------------


@dataclass(frozen=True)
class ProvenDoc:
    """A backend's document (fingerprint or receipt) and its proof for the vendor."""

    kind: str
    body: Mapping[str, Any]
    proof: bytes

    @property
    def public_key(self) -> str:
        return str(self.body["public_key"])

    @property
    def raw_public_key(self) -> bytes:
        return z85_key_bytes(self.public_key)

    @property
    def signed_body(self) -> bytes:
        return canonical(self.body)

    def to_obj(self) -> dict[str, Any]:
        return {"body": dict(self.body), "proof": self.proof.hex()}

    def __getitem__(self, key: str) -> Any:
        return self.body[key]


def prove(
    node: NodeKeys, vendor: VendorPublicKey, kind: str, fields: Mapping[str, Any]
) -> ProvenDoc:
    """The backend's document of ``kind`` with its proof for ``vendor``."""
    body = {
        "kind": kind,
        "format": EXCHANGE_FORMAT,
        "firm_code": vendor.firm_code,
        "vendor_key": vendor.public_key.hex(),
        "public_key": node.public,
        **fields,
    }
    _check_fields(body, BODY_FIELDS[kind], kind)
    try:
        tag = make_tag(node.secret, vendor.public_key, kind, canonical(body))
    except ProofKeyError as exc:
        raise _err(
            ExchangeReason.WRONG_VENDOR, f"cannot make a proof for this vendor: {exc}"
        ) from None
    return ProvenDoc(kind=kind, body=body, proof=tag)


def parse_proven(obj: object, kind: str, what: str) -> ProvenDoc:
    if not isinstance(obj, dict) or set(obj) != {"body", "proof"}:
        raise _err(ExchangeReason.MALFORMED, f"{what} must be an object with body and proof")
    body, proof = obj["body"], obj["proof"]
    if not isinstance(body, dict):
        raise _err(ExchangeReason.MALFORMED, f"{what}: body is not an object")
    _check_version(body, kind, what)
    _check_fields(body, BODY_FIELDS[kind], what)
    if not isinstance(proof, str) or not _HEX64.fullmatch(proof):
        raise _err(ExchangeReason.MALFORMED, f"{what}: proof must be 64 lowercase hex digits")
    return ProvenDoc(kind=kind, body=body, proof=bytes.fromhex(proof))


def signed_fingerprint(
    node: NodeKeys,
    machine_id: str,
    vendor: VendorPublicKey,
    *,
    serial: str | None = None,
    container_serial: str | None = None,
    now: float | None = None,
) -> ProvenDoc:
    """`tmr backend fingerprint --signed`: this backend's fingerprint document with its proof."""
    if container_serial is not None and not CONTAINER_SERIAL_RE.fullmatch(container_serial):
        raise _err(ExchangeReason.MALFORMED, "container serial must look like 131-NNNNNNN")
    doc = make_fingerprint_doc(node.public, machine_id, serial)
    return prove(
        node,
        vendor,
        KIND_FINGERPRINT,
        {
            "serial": doc.serial,
            "fingerprint": doc.fingerprint,
            "container_serial": container_serial,
            "made": int(time.time() if now is None else now),
        },
    )


def _distinct(docs: Sequence[ProvenDoc], keys: Iterable[str], what: str) -> None:
    for key in keys:
        values = [doc[key] for doc in docs]
        if len(set(values)) != len(values):
            raise _err(ExchangeReason.DUPLICATE, f"{what}: a backend's {key} repeats")


def _same(docs: Sequence[ProvenDoc], keys: Iterable[str], what: str) -> None:
    for key in keys:
        if len({json.dumps(doc[key]) for doc in docs}) != 1:
            raise _err(ExchangeReason.INCONSISTENT, f"{what}: the backends differ in {key}")


def _three(obj: Mapping[str, Any], key: str, what: str) -> list[Any]:
    items = obj[key]
    if not isinstance(items, list):
        raise _err(ExchangeReason.MALFORMED, f"{what}: {key} must be a list")
    if len(items) != SET_SIZE:
        raise _err(ExchangeReason.MALFORMED, f"{what}: needs {SET_SIZE} {key}, has {len(items)}")
    return items


# --- request ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LicenseRequest:
    backends: tuple[ProvenDoc, ...]  # in the order of the set: copy i for backends[i - 1]

    @property
    def firm_code(self) -> int:
        return int(self.backends[0]["firm_code"])

    @property
    def vendor_key(self) -> bytes:
        return bytes.fromhex(self.backends[0]["vendor_key"])

    @property
    def container_serial(self) -> str | None:
        value = self.backends[0]["container_serial"]
        return None if value is None else str(value)

    def to_obj(self) -> dict[str, Any]:
        return {
            "kind": KIND_REQUEST,
            "format": EXCHANGE_FORMAT,
            "backends": [doc.to_obj() for doc in self.backends],
        }


def _check_request(backends: Sequence[ProvenDoc], what: str) -> LicenseRequest:
    if len(backends) != SET_SIZE:
        raise _err(ExchangeReason.MALFORMED, f"{what}: needs {SET_SIZE} backends")
    _distinct(backends, ("public_key", "fingerprint", "serial"), what)
    _same(backends, ("firm_code", "vendor_key", "container_serial"), what)
    return LicenseRequest(backends=tuple(backends))


def bundle_request(docs: Sequence[ProvenDoc]) -> LicenseRequest:
    return _check_request(docs, "request")


def parse_fingerprint_doc(data: bytes, what: str = "signed fingerprint") -> ProvenDoc:
    return parse_proven(load_json(data, what), KIND_FINGERPRINT, what)


def parse_request(data: bytes, what: str = "request") -> LicenseRequest:
    docs = _parse_bundle(data, KIND_REQUEST, "backends", KIND_FINGERPRINT, what)
    return _check_request(docs, what)


def _parse_bundle(data: bytes, kind: str, field: str, item_kind: str, what: str) -> list[ProvenDoc]:
    """The three proven documents of a bundle file (request or receipts), each checked."""
    obj = load_json(data, what)
    _check_version(obj, kind, what)
    if set(obj) != {"kind", "format", field}:
        raise _err(ExchangeReason.MALFORMED, f"{what}: wrong fields")
    items = _three(obj, field, what)
    label = field.removesuffix("s")
    return [
        parse_proven(item, item_kind, f"{what} {label} {i}")
        for i, item in enumerate(items, start=1)
    ]


# --- update -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpdateCopy:
    file: str  # the copy's file name in a license directory
    data: bytes  # the copy file, exactly as the vendor signed it
    copy: LicenseCopy


@dataclass(frozen=True)
class LicenseUpdate:
    firm_code: int
    product_code: int
    tmr_id: int
    quantity: int
    set_id: str
    copies: tuple[UpdateCopy, ...]  # index i - 1 holds the copy with set_index i

    def to_obj(self) -> dict[str, Any]:
        return {
            "kind": KIND_UPDATE,
            "format": EXCHANGE_FORMAT,
            "firm_code": self.firm_code,
            "product_code": self.product_code,
            "tmr_id": self.tmr_id,
            "quantity": self.quantity,
            "set_id": self.set_id,
            "copies": [
                {
                    "set_index": c.copy.set_index,
                    "serial": c.copy.serial,
                    "fingerprint": c.copy.fingerprint,
                    "backend_key": c.copy.backend_key,
                    "public_key": z85.encode(bytes.fromhex(c.copy.backend_key)).decode("ascii"),
                    "file": c.file,
                    "copy": c.data.decode("ascii"),
                }
                for c in self.copies
            ],
        }


def copy_file_name(copy: LicenseCopy) -> str:
    return f"{copy.firm_code}-{copy.product_code}-{copy.tmr_id}-{copy.serial}{COPY_SUFFIX}"


def make_update(copies: Sequence[bytes]) -> LicenseUpdate:
    """The update holding the three copy files of one set (vendor side)."""
    parsed = [parse_copy(data) for data in copies]
    first = parsed[0]
    update = LicenseUpdate(
        firm_code=first.firm_code,
        product_code=first.product_code,
        tmr_id=first.tmr_id,
        quantity=first.quantity,
        set_id=first.set_id,
        copies=tuple(
            UpdateCopy(file=copy_file_name(c), data=d, copy=c)
            for c, d in sorted(zip(parsed, copies, strict=True), key=lambda p: p[0].set_index)
        ),
    )
    return parse_update(canonical(update.to_obj()))  # the same checks as the customer's


_UPDATE_COPY_FIELDS = {
    "set_index",
    "serial",
    "fingerprint",
    "backend_key",
    "public_key",  # backend_key in Z85, as `tmr backend fingerprint` prints it
    "file",
    "copy",
}


def parse_update(data: bytes, what: str = "update file") -> LicenseUpdate:
    """Parse an update file and check that its parts belong together (no signature check)."""
    obj = load_json(data, what)
    _check_version(obj, KIND_UPDATE, what)
    outer = {
        "kind": _COMMON["kind"],
        "format": _COMMON["format"],
        "firm_code": _COMMON["firm_code"],
        "product_code": _int_in(0, UINT32_MAX),
        "tmr_id": _int_in(1, UINT32_MAX),
        "quantity": _int_in(1, UINT32_MAX),
        "set_id": _text(_HEX32),
        "copies": lambda v: isinstance(v, list),
    }
    _check_fields(obj, outer, what)
    copies = []
    for pos, item in enumerate(_three(obj, "copies", what), start=1):
        where = f"{what} copy {pos}"
        if not isinstance(item, dict) or set(item) != _UPDATE_COPY_FIELDS:
            raise _err(ExchangeReason.MALFORMED, f"{where}: wrong fields")
        text = item["copy"]
        if not isinstance(text, str) or not text.isascii():
            raise _err(ExchangeReason.MALFORMED, f"{where}: copy must be ASCII text")
        raw = text.encode("ascii")
        try:
            copy = parse_copy(raw)
        except LicenseError as exc:
            raise _err(ExchangeReason.MALFORMED, f"{where}: {exc}") from None
        for key, value in (
            ("firm_code", obj["firm_code"]),
            ("product_code", obj["product_code"]),
            ("tmr_id", obj["tmr_id"]),
            ("quantity", obj["quantity"]),
            ("set_id", obj["set_id"]),
            ("set_index", item["set_index"]),
            ("serial", item["serial"]),
            ("fingerprint", item["fingerprint"]),
            ("backend_key", item["backend_key"]),
        ):
            if getattr(copy, key) != value:
                raise _err(ExchangeReason.INCONSISTENT, f"{where}: {key} differs from the copy's")
        if copy.set_index != pos:
            raise _err(ExchangeReason.INCONSISTENT, f"{where}: holds set index {copy.set_index}")
        if item["public_key"] != z85.encode(bytes.fromhex(copy.backend_key)).decode("ascii"):
            raise _err(ExchangeReason.INCONSISTENT, f"{where}: public_key is not the copy's")
        if item["file"] != copy_file_name(copy):
            raise _err(ExchangeReason.INCONSISTENT, f"{where}: file name is not the copy's")
        copies.append(UpdateCopy(file=item["file"], data=raw, copy=copy))
    for key in ("backend_key", "fingerprint", "serial"):
        values = [getattr(c.copy, key) for c in copies]
        if len(set(values)) != len(values):
            raise _err(ExchangeReason.DUPLICATE, f"{what}: two copies name the same {key}")
    return LicenseUpdate(
        firm_code=obj["firm_code"],
        product_code=obj["product_code"],
        tmr_id=obj["tmr_id"],
        quantity=obj["quantity"],
        set_id=obj["set_id"],
        copies=tuple(copies),
    )


def check_update_signatures(update: LicenseUpdate, keyring: VendorKeyring) -> None:
    if not keyring.knows(update.firm_code):
        raise _err(ExchangeReason.WRONG_VENDOR, f"no vendor key for firm code {update.firm_code}")
    for c in update.copies:
        if not keyring.verify(c.copy.firm_code, c.copy.signature, c.copy.signed_message):
            raise _err(
                ExchangeReason.BAD_SIGNATURE,
                f"copy {c.copy.set_index} ({c.copy.serial}) is not signed by the vendor of firm "
                f"code {c.copy.firm_code} (tampered?)",
            )


# --- customer side: install, receipt ---------------------------------------------------------


@dataclass(frozen=True)
class InstallResult:
    path: Path
    changed: bool
    copy: LicenseCopy
    removable: tuple[Path, ...]  # older copies of this license, to remove once the new one runs

    def summary(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "file": self.path.name,
            "changed": self.changed,
            "firm_code": self.copy.firm_code,
            "product_code": self.copy.product_code,
            "tmr_id": self.copy.tmr_id,
            "set_id": self.copy.set_id,
            "set_index": self.copy.set_index,
            "serial": self.copy.serial,
            "older": [str(p) for p in self.removable],
        }


def installed_copies(
    license_dir: Path,
    firm_code: int,
    product_code: int,
    *,
    keyring: VendorKeyring,
    fingerprint: str,
    backend_key: str,
) -> list[tuple[Path, LicenseCopy]]:
    """The vendor-signed copies of one license bound to this backend in license_dir."""
    out = []
    for path in sorted(license_dir.glob(f"{firm_code}-{product_code}-*{COPY_SUFFIX}")):
        try:
            copy = read_copy(path)
            verify_copy(
                copy, keyring=keyring, fingerprint=fingerprint, now=0.0, backend_key=backend_key
            )
        except LicenseError:
            continue  # not a valid copy for this backend: the backend ignores it too
        if (copy.firm_code, copy.product_code) == (firm_code, product_code):
            out.append((path, copy))
    return out


def install_update(
    update: LicenseUpdate,
    *,
    keyring: VendorKeyring,
    node: NodeKeys,
    machine_id: str,
    license_dir: Path,
    now: float | None = None,
) -> InstallResult:
    """Install this backend's copy of ``update`` into license_dir (nothing on any error)."""
    check_update_signatures(update, keyring)
    backend_key = node_backend_key(node.secret)
    mine = [c for c in update.copies if c.copy.backend_key == backend_key]
    if not mine:
        raise _err(
            ExchangeReason.WRONG_TRIO,
            f"no copy of set {update.set_id} is bound to this backend's key {node.public}",
        )
    item = mine[0]
    fingerprint = make_fingerprint_doc(node.public, machine_id).fingerprint
    verify_copy(
        item.copy,
        keyring=keyring,
        fingerprint=fingerprint,
        now=time.time() if now is None else now,
        backend_key=backend_key,
    )
    open_product_key(item.copy, node.secret)  # LicenseError(SEALED_KEY) if not sealed to us
    present = installed_copies(
        license_dir,
        update.firm_code,
        update.product_code,
        keyring=keyring,
        fingerprint=fingerprint,
        backend_key=backend_key,
    )
    newest = max((c.tmr_id for _, c in present), default=0)
    if update.tmr_id < newest:
        raise _err(
            ExchangeReason.OLDER_TMR_ID,
            f"TMR ID #{update.tmr_id} is older than #{newest} installed on this backend",
        )
    for path, copy in present:
        if copy.tmr_id == update.tmr_id and copy.set_id != update.set_id:
            raise _err(
                ExchangeReason.DUPLICATE,
                f"{path.name} holds another set ({copy.set_id}) with the same TMR ID "
                f"#{update.tmr_id}",
            )
    target = license_dir / item.file
    changed = not (target.is_file() and target.read_bytes() == item.data)
    if changed:
        write_atomic(target, item.data, mode=0o640)
    older = tuple(p for p, c in present if c.tmr_id < update.tmr_id and p != target)
    return InstallResult(path=target, changed=changed, copy=item.copy, removable=older)


def make_receipt(
    node: NodeKeys,
    machine_id: str,
    vendor: VendorPublicKey,
    *,
    license_dir: Path,
    product_code: int,
    keyring: VendorKeyring,
    now: float | None = None,
) -> ProvenDoc:
    """This backend's receipt for the newest valid copy of (vendor's firm, product) it holds."""
    backend_key = node_backend_key(node.secret)
    doc = make_fingerprint_doc(node.public, machine_id)
    present = installed_copies(
        license_dir,
        vendor.firm_code,
        product_code,
        keyring=keyring,
        fingerprint=doc.fingerprint,
        backend_key=backend_key,
    )
    if not present:
        raise _err(
            ExchangeReason.NOT_INSTALLED,
            f"no valid copy of {vendor.firm_code}-{product_code} for this backend in {license_dir}",
        )
    path, copy = max(present, key=lambda pc: pc[1].tmr_id)
    open_product_key(copy, node.secret)
    return prove(
        node,
        vendor,
        KIND_RECEIPT,
        {
            "serial": copy.serial,
            "fingerprint": copy.fingerprint,
            "product_code": copy.product_code,
            "tmr_id": copy.tmr_id,
            "set_id": copy.set_id,
            "set_index": copy.set_index,
            "copy_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "installed_at": int(time.time() if now is None else now),
        },
    )


@dataclass(frozen=True)
class ReceiptBundle:
    receipts: tuple[ProvenDoc, ...]  # sorted by set index

    @property
    def firm_code(self) -> int:
        return int(self.receipts[0]["firm_code"])

    @property
    def product_code(self) -> int:
        return int(self.receipts[0]["product_code"])

    @property
    def tmr_id(self) -> int:
        return int(self.receipts[0]["tmr_id"])

    @property
    def set_id(self) -> str:
        return str(self.receipts[0]["set_id"])

    def to_obj(self) -> dict[str, Any]:
        return {
            "kind": KIND_RECEIPTS,
            "format": EXCHANGE_FORMAT,
            "receipts": [doc.to_obj() for doc in self.receipts],
        }


def _check_receipts(docs: Sequence[ProvenDoc], what: str) -> ReceiptBundle:
    if len(docs) != SET_SIZE:
        raise _err(ExchangeReason.MALFORMED, f"{what}: needs {SET_SIZE} receipts")
    _distinct(docs, ("public_key", "fingerprint", "serial", "set_index"), what)
    _same(docs, ("firm_code", "vendor_key", "product_code", "tmr_id", "set_id"), what)
    return ReceiptBundle(receipts=tuple(sorted(docs, key=lambda d: int(d["set_index"]))))


def bundle_receipts(docs: Sequence[ProvenDoc]) -> ReceiptBundle:
    return _check_receipts(docs, "receipts")


def parse_receipt_doc(data: bytes, what: str = "receipt") -> ProvenDoc:
    return parse_proven(load_json(data, what), KIND_RECEIPT, what)


def parse_receipts(data: bytes, what: str = "receipt file") -> ReceiptBundle:
    docs = _parse_bundle(data, KIND_RECEIPTS, "receipts", KIND_RECEIPT, what)
    return _check_receipts(docs, what)
