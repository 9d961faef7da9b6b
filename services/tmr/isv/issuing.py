"""Issuing a TMR license set: three copies, one per backend, signed by the vendor.

Every copy of a set names, under the signature, the set (``set_id``, 128 random bits), its
index in the set (1..3, the order of the fingerprints given) and the CURVE public key of the
backend it is bound to (``backend_key``), so a TMR server counts each copy once and only
from that backend."""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tmr.errors import UsageError
from tmr.isv.profile import (
    ProductRecord,
    VendorProfile,
    load_product,
    locked,
    save_product,
)
from tmr.licensing.curve import z85_key_bytes
from tmr.licensing.fileio import write_atomic
from tmr.licensing.fingerprint import FingerprintDoc
from tmr.licensing.model import (
    FEATURE_KEY_RE,
    FEATURE_VALUE_RE,
    FORMAT_VERSION,
    MAX_FEATURES,
    SET_SIZE,
    SIGNING_CONTEXT,
    UINT32_MAX,
    assemble,
    body_fields,
    encode_body,
    parse_copy,
)
from tmr.licensing.sealing import PRODUCT_KEY_BYTES, seal_product_key

COPIES_PER_SET = SET_SIZE
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


@dataclass(frozen=True)
class IssuedCopy:
    serial: str
    fingerprint: str
    path: Path
    set_index: int = 0
    public_key: str = ""  # Z85, as in the fingerprint document


@dataclass(frozen=True)
class IssuedSet:
    firm_code: int
    product_code: int
    tmr_id: int
    quantity: int
    expires: int | None
    set_id: str
    copies: tuple[IssuedCopy, ...]

    def summary(self) -> dict[str, Any]:
        return {
            "firm_code": self.firm_code,
            "product_code": self.product_code,
            "tmr_id": self.tmr_id,
            "quantity": self.quantity,
            "expires": self.expires,
            "set_id": self.set_id,
            "format": FORMAT_VERSION,
            "copies": [
                {
                    "serial": c.serial,
                    "fingerprint": c.fingerprint,
                    "set_index": c.set_index,
                    "public_key": c.public_key,
                    "path": str(c.path),
                }
                for c in self.copies
            ],
        }


def parse_expiry(text: str) -> int:
    """Unix time from ``YYYY-MM-DD`` (valid through that day, UTC) or an ISO-8601 date-time
    (UTC if no offset is given)."""
    try:
        if _DATE_RE.fullmatch(text):
            day = dt.datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=dt.UTC)
            moment = day + dt.timedelta(days=1)
        else:
            moment = dt.datetime.fromisoformat(text)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=dt.UTC)
        return int(moment.timestamp())
    except (ValueError, OverflowError):
        raise UsageError(f"expiry {text!r} is not a YYYY-MM-DD or ISO-8601 date") from None


def parse_features(items: Iterable[str]) -> dict[str, str]:
    features: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not FEATURE_KEY_RE.fullmatch(key):
            raise UsageError(f"feature {item!r} must be NAME=VALUE, NAME of [A-Za-z0-9_.-]{{1,64}}")
        if not FEATURE_VALUE_RE.fullmatch(value):
            raise UsageError(f"feature {key!r}: value must be printable ASCII, at most 256 chars")
        if key in features:
            raise UsageError(f"feature {key!r} given twice")
        features[key] = value
    if len(features) > MAX_FEATURES:
        raise UsageError(f"at most {MAX_FEATURES} features")
    return features


def _check_set_args(
    product_code: int, quantity: int, tmr_id: int, fingerprints: Sequence[FingerprintDoc]
) -> None:
    if not 0 <= product_code <= UINT32_MAX:
        raise UsageError("product code must be a uint32")
    if not 1 <= quantity <= UINT32_MAX:
        raise UsageError("quantity must be at least 1")
    if not 1 <= tmr_id <= UINT32_MAX:
        raise UsageError("TMR ID must be at least 1")
    if len(fingerprints) != COPIES_PER_SET:
        raise UsageError(f"a TMR license set needs {COPIES_PER_SET} fingerprints, one per backend")
    for what in ("fingerprint", "public_key", "serial"):
        values = [getattr(fp, what) for fp in fingerprints]
        if len(set(values)) != len(values):
            raise UsageError(f"the three backends must be distinct, but a {what} repeats")


def issue_set(
    vendor: VendorProfile,
    *,
    product_code: int,
    quantity: int,
    tmr_id: int,
    fingerprints: Sequence[FingerprintDoc],
    out_dir: Path,
    expires: int | None = None,
    features: Mapping[str, str] | None = None,
    now: float | None = None,
) -> IssuedSet:
    """Issue (or update, with a higher TMR ID) the license set of one product.

    The product key is made on the first issue and reused by every later one. The TMR ID is
    recorded only after the three copies are written.
    """
    _check_set_args(product_code, quantity, tmr_id, fingerprints)
    issued = int(time.time() if now is None else now)
    if expires is not None and expires <= issued:
        raise UsageError("the expiry date is in the past")
    firm = vendor.firm_code
    with locked(vendor):
        record = load_product(vendor, product_code) or ProductRecord(
            product_code=product_code, product_key=os.urandom(PRODUCT_KEY_BYTES)
        )
        if tmr_id <= record.last_tmr_id:
            raise UsageError(
                f"TMR ID #{tmr_id} is not higher than #{record.last_tmr_id}, the last one issued "
                f"for product {product_code}; an update needs #{record.last_tmr_id + 1} or higher"
            )
        set_id = os.urandom(16).hex()
        out_dir.mkdir(parents=True, exist_ok=True)
        copies = []
        for index, doc in enumerate(fingerprints, start=1):
            sealed = seal_product_key(
                record.product_key,
                doc.public_key,
                firm_code=firm,
                product_code=product_code,
                fingerprint=doc.fingerprint,
            )
            body = encode_body(
                body_fields(
                    firm_code=firm,
                    product_code=product_code,
                    tmr_id=tmr_id,
                    quantity=quantity,
                    expires=expires,
                    features=features or {},
                    serial=doc.serial,
                    fingerprint=doc.fingerprint,
                    backend_key=z85_key_bytes(doc.public_key, "public key").hex(),
                    set_id=set_id,
                    set_index=index,
                    issued=issued,
                    sealed_product_key=sealed,
                )
            )
            data = assemble(body, vendor.sign(SIGNING_CONTEXT + body))
            parse_copy(data)  # never hand out a copy that a backend would refuse as malformed
            path = (out_dir / f"{firm}-{product_code}-{tmr_id}-{doc.serial}.tmrlic").absolute()
            write_atomic(path, data)
            copies.append(
                IssuedCopy(
                    serial=doc.serial,
                    fingerprint=doc.fingerprint,
                    path=path,
                    set_index=index,
                    public_key=doc.public_key,
                )
            )
        record.last_tmr_id = tmr_id
        record.history.append(
            {"tmr_id": tmr_id, "quantity": quantity, "set_id": set_id, "issued": issued}
        )
        save_product(vendor, record)
    return IssuedSet(
        firm_code=firm,
        product_code=product_code,
        tmr_id=tmr_id,
        quantity=quantity,
        expires=expires,
        set_id=set_id,
        copies=tuple(copies),
    )
