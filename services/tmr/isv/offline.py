"""The vendor's side of the offline exchange: issue from a request, confirm receipts.

- `issue_from_request`: checks every backend's proof in the request (made with the CURVE key
  it names, for this vendor, unchanged), then issues the set with `issue_set` and returns the
  update file. The set is kept in ``issued/<product>-<tmr id>/`` of the vendor directory
  (copies and ``update.json``, paths relative to it) so `confirm_receipts` can check receipts.
  An update of a product must go to the trio that holds its last set unless the vendor says
  ``new_trio`` (a replaced backend).
- `confirm_receipts`: checks that the three receipts name the copies of an issued set, each
  with the proof of the backend the copy is bound to, and records the set as installed in
  ``installations.sqlite`` (one row per set; a second confirmation is refused).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tmr.isv.issuing import issue_set
from tmr.isv.profile import VendorProfile, load_product
from tmr.licensing.attest import check_tag
from tmr.licensing.curve import z85_key_bytes
from tmr.licensing.exchange import (
    ExchangeError,
    ExchangeReason,
    LicenseRequest,
    LicenseUpdate,
    ProvenDoc,
    ReceiptBundle,
    canonical,
    make_update,
    parse_update,
)
from tmr.licensing.fileio import write_atomic
from tmr.licensing.fingerprint import FingerprintDoc
from tmr.licensing.model import parse_copy

ISSUED_DIR = "issued"
UPDATE_RECORD = "update.json"
INSTALLATIONS_DB = "installations.sqlite"


def _set_dir(vendor: VendorProfile, product_code: int, tmr_id: int) -> Path:
    return vendor.directory / ISSUED_DIR / f"{product_code}-{tmr_id}"


def _check_addressed(vendor: VendorProfile, firm_code: int, vendor_key: str, what: str) -> None:
    if firm_code != vendor.firm_code or not hmac.compare_digest(
        vendor_key, vendor.public.public_key.hex()
    ):
        raise ExchangeError(
            ExchangeReason.WRONG_VENDOR,
            f"{what} is meant for firm code {firm_code} with key {vendor_key[:16]}..., "
            f"not for this vendor ({vendor.firm_code})",
        )


def _check_proof(vendor: VendorProfile, doc: ProvenDoc, what: str) -> None:
    _check_addressed(vendor, int(doc["firm_code"]), str(doc["vendor_key"]), what)
    if not check_tag(vendor.private_key, doc.raw_public_key, doc.kind, doc.signed_body, doc.proof):
        raise ExchangeError(
            ExchangeReason.BAD_PROOF,
            f"{what} ({doc['serial']}): the proof does not verify with the CURVE key it names "
            "(made up or changed after the backend made it)",
        )


def check_request(vendor: VendorProfile, request: LicenseRequest) -> None:
    for i, doc in enumerate(request.backends, start=1):
        _check_proof(vendor, doc, f"request backend {i}")


def last_issued(vendor: VendorProfile, product_code: int) -> LicenseUpdate | None:
    """The newest set issued through a request for product_code, if any."""
    record = load_product(vendor, product_code)
    if record is None:
        return None
    for entry in reversed(record.history):
        path = _set_dir(vendor, product_code, int(entry["tmr_id"])) / UPDATE_RECORD
        if path.is_file():
            return parse_update(path.read_bytes(), str(path))
    return None


def recover_issued(vendor: VendorProfile, product_code: int, tmr_id: int) -> LicenseUpdate | None:
    """The set recorded at ``tmr_id`` of ``product_code``, also when its ``update.json`` was
    never written (the issuer stopped between recording the TMR ID and writing it: the update is
    rebuilt from the three copies of the recorded set); None when that TMR ID was not issued."""
    record = load_product(vendor, product_code)
    entry = next(
        (e for e in (record.history if record else []) if int(e["tmr_id"]) == tmr_id), None
    )
    if entry is None:
        return None
    out = _set_dir(vendor, product_code, tmr_id)
    path = out / UPDATE_RECORD
    if path.is_file():
        return parse_update(path.read_bytes(), str(path))
    copies = [p.read_bytes() for p in sorted((out / "copies").glob("*.tmrlic"))]
    ours = [c for c in copies if parse_copy(c).set_id == entry["set_id"]]
    if len(ours) != 3:
        return None
    update = make_update(ours)
    write_atomic(path, canonical(update.to_obj()) + b"\n")
    return update


def issue_from_request(
    vendor: VendorProfile,
    request: LicenseRequest,
    *,
    product_code: int,
    quantity: int,
    tmr_id: int,
    expires: int | None = None,
    features: Mapping[str, str] | None = None,
    new_trio: bool = False,
    now: float | None = None,
) -> LicenseUpdate:
    check_request(vendor, request)
    record = load_product(vendor, product_code)
    if record is not None and tmr_id <= record.last_tmr_id:
        raise ExchangeError(
            ExchangeReason.OLDER_TMR_ID,
            f"TMR ID #{tmr_id} is not higher than #{record.last_tmr_id}, the last one issued for "
            f"product {product_code}",
        )
    previous = last_issued(vendor, product_code)
    keys = {z85_key_bytes(doc.public_key).hex() for doc in request.backends}
    if previous is not None and not new_trio:
        held = {c.copy.backend_key for c in previous.copies}
        if keys != held:
            raise ExchangeError(
                ExchangeReason.WRONG_TRIO,
                f"product {product_code} #{previous.tmr_id} is held by other backends than the "
                "request names (issue with --new-trio only for a replaced backend)",
            )
    out = _set_dir(vendor, product_code, tmr_id)
    issued = issue_set(
        vendor,
        product_code=product_code,
        quantity=quantity,
        tmr_id=tmr_id,
        fingerprints=[
            FingerprintDoc(
                serial=d["serial"], public_key=d.public_key, fingerprint=d["fingerprint"]
            )
            for d in request.backends
        ],
        out_dir=out / "copies",
        expires=expires,
        features=features,
        now=now,
    )
    update = make_update([c.path.read_bytes() for c in issued.copies])
    write_atomic(out / UPDATE_RECORD, canonical(update.to_obj()) + b"\n")
    return update


@dataclass(frozen=True)
class Confirmation:
    firm_code: int
    product_code: int
    tmr_id: int
    set_id: str
    confirmed_at: int
    serials: tuple[str, ...]

    def summary(self) -> dict[str, Any]:
        return {
            "confirmed": True,
            "firm_code": self.firm_code,
            "product_code": self.product_code,
            "tmr_id": self.tmr_id,
            "set_id": self.set_id,
            "confirmed_at": self.confirmed_at,
            "serials": list(self.serials),
        }


def _db(vendor: VendorProfile) -> sqlite3.Connection:
    db = sqlite3.connect(vendor.directory / INSTALLATIONS_DB, isolation_level=None, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute(
        "CREATE TABLE IF NOT EXISTS installed (set_id TEXT PRIMARY KEY, firm_code INTEGER,"
        " product_code INTEGER, tmr_id INTEGER, confirmed_at INTEGER, receipts TEXT)"
    )
    return db


def confirm_receipts(
    vendor: VendorProfile, bundle: ReceiptBundle, *, now: float | None = None
) -> Confirmation:
    for doc in bundle.receipts:
        _check_addressed(vendor, int(doc["firm_code"]), str(doc["vendor_key"]), "receipt")
    path = _set_dir(vendor, bundle.product_code, bundle.tmr_id) / UPDATE_RECORD
    update = parse_update(path.read_bytes(), str(path)) if path.is_file() else None
    if update is None or update.set_id != bundle.set_id:
        raise ExchangeError(
            ExchangeReason.UNKNOWN_SET,
            f"this vendor issued no set {bundle.set_id} as {bundle.product_code} #{bundle.tmr_id}",
        )
    for doc in bundle.receipts:
        c = update.copies[int(doc["set_index"]) - 1]
        if (
            z85_key_bytes(doc.public_key).hex() != c.copy.backend_key
            or doc["fingerprint"] != c.copy.fingerprint
            or doc["serial"] != c.copy.serial
        ):
            raise ExchangeError(
                ExchangeReason.WRONG_TRIO,
                f"receipt {doc['set_index']} comes from another backend than copy "
                f"{c.copy.set_index} is bound to ({c.copy.serial})",
            )
        if doc["copy_sha256"] != hashlib.sha256(c.data).hexdigest():
            raise ExchangeError(
                ExchangeReason.INCONSISTENT,
                f"receipt {doc['set_index']} names another copy file than the one issued",
            )
        _check_proof(vendor, doc, f"receipt {doc['set_index']}")
    stamp = int(time.time() if now is None else now)
    receipts = json.dumps([doc.to_obj() for doc in bundle.receipts], sort_keys=True)
    db = _db(vendor)
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            if db.execute("SELECT 1 FROM installed WHERE set_id = ?", (bundle.set_id,)).fetchone():
                raise ExchangeError(
                    ExchangeReason.ALREADY_CONFIRMED,
                    f"set {bundle.set_id} (#{bundle.tmr_id}) was already confirmed",
                )
            newer = db.execute(
                "SELECT MAX(tmr_id) FROM installed WHERE firm_code = ? AND product_code = ?",
                (bundle.firm_code, bundle.product_code),
            ).fetchone()[0]
            if newer is not None and newer > bundle.tmr_id:
                raise ExchangeError(
                    ExchangeReason.OLDER_TMR_ID,
                    f"#{newer} of product {bundle.product_code} is already confirmed; "
                    f"#{bundle.tmr_id} is older",
                )
            db.execute(
                "INSERT INTO installed VALUES (?, ?, ?, ?, ?, ?)",
                (
                    bundle.set_id,
                    bundle.firm_code,
                    bundle.product_code,
                    bundle.tmr_id,
                    stamp,
                    receipts,
                ),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    finally:
        db.close()
    return Confirmation(
        firm_code=bundle.firm_code,
        product_code=bundle.product_code,
        tmr_id=bundle.tmr_id,
        set_id=bundle.set_id,
        confirmed_at=stamp,
        serials=tuple(str(d["serial"]) for d in bundle.receipts),
    )


def confirmed_sets(vendor: VendorProfile) -> list[dict[str, Any]]:
    db = _db(vendor)
    try:
        rows = db.execute(
            "SELECT set_id, firm_code, product_code, tmr_id, confirmed_at FROM installed"
            " ORDER BY product_code, tmr_id"
        ).fetchall()
    finally:
        db.close()
    keys = ("set_id", "firm_code", "product_code", "tmr_id", "confirmed_at")
    return [dict(zip(keys, row, strict=True)) for row in rows]
