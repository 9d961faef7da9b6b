"""Loading a backend's license container: a directory of ``*.tmrlic`` copies."""

from __future__ import annotations

import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tmr.errors import ConfigError
from tmr.licensing.clock import ClockGuard
from tmr.licensing.curve import public_from_secret, z85_key_bytes
from tmr.licensing.fileio import file_kind, read_limited
from tmr.licensing.keyring import VendorKeyring
from tmr.licensing.model import (
    MAX_COPY_BYTES,
    LicenseCopy,
    LicenseError,
    LicenseReason,
    parse_copy,
)
from tmr.licensing.sealing import open_product_key
from tmr.licensing.verify import verify_copy

COPY_SUFFIX = ".tmrlic"


@dataclass(frozen=True)
class InstalledLicense:
    firm_code: int
    product_code: int
    tmr_id: int
    quantity: int
    expires: float | None
    features: dict[str, str]
    set_id: str
    serial: str
    product_key: bytes = field(repr=False)
    path: Path
    set_index: int = 0
    fingerprint: str = ""
    backend_key: str = ""  # hex of the CURVE public key the copy is bound to


@dataclass
class ContainerLoad:
    licenses: dict[tuple[int, int], InstalledLicense] = field(default_factory=dict)
    rejected: list[tuple[Path, LicenseError]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # not regular files


def load_container(
    license_dir: Path,
    *,
    keyring: VendorKeyring,
    fingerprint: str,
    node_secret: str,
    clock: ClockGuard,
    installed_tmr_ids: Mapping[tuple[int, int], int],
) -> ContainerLoad:
    """Verify every ``*.tmrlic`` in ``license_dir``; keep, per (firm, product), the valid copy
    with the highest TMR ID. Every other file is listed in ``rejected`` with its reason: a
    valid copy below the one kept is SUPERSEDED, one with the same TMR ID is a DUPLICATE (the
    first path in name order is kept), and when even the best valid copy is below
    ``installed_tmr_ids[(firm, product)]`` (the highest TMR ID the backend ever installed)
    the product is not loaded and its copies are ROLLBACK. Hidden files are skipped
    (installers' temporaries), and so is anything that is not a regular file (a FIFO would
    block the reader, a device never ends): those are listed in ``skipped``.
    """
    if not license_dir.is_dir():
        raise ConfigError(f"license directory {license_dir} does not exist")
    now = clock.now()
    load = ContainerLoad()
    valid: list[InstalledLicense] = []
    for path in sorted(license_dir.glob(f"*{COPY_SUFFIX}")):
        if path.name.startswith("."):
            continue
        why_not = _not_regular(path)
        if why_not is not None:
            load.skipped.append((path, why_not))
            continue
        try:
            valid.append(
                _load_one(
                    path,
                    keyring=keyring,
                    fingerprint=fingerprint,
                    node_secret=node_secret,
                    now=now,
                    clock_rolled_back=clock.rolled_back,
                )
            )
        except LicenseError as exc:
            load.rejected.append((path, exc))
    valid.sort(key=lambda lic: (lic.firm_code, lic.product_code, -lic.tmr_id, str(lic.path)))
    for lic in valid:
        key = (lic.firm_code, lic.product_code)
        kept = load.licenses.get(key)
        floor = installed_tmr_ids.get(key)
        if kept is None and floor is not None and lic.tmr_id < floor:
            why = LicenseError(
                LicenseReason.ROLLBACK,
                f"TMR ID #{lic.tmr_id} is older than #{floor} already installed",
            )
        elif kept is None:
            load.licenses[key] = lic
            continue
        elif kept.tmr_id == lic.tmr_id:
            why = LicenseError(LicenseReason.DUPLICATE, f"same TMR ID as {kept.path.name}")
        else:
            why = LicenseError(LicenseReason.SUPERSEDED, f"#{kept.tmr_id} is in {kept.path.name}")
        load.rejected.append((lic.path, why))
    return load


def _not_regular(path: Path) -> str | None:
    """Why ``path`` is not read as a copy (a FIFO, a device, ...), or None for a regular
    file. ``stat`` never blocks; `read_limited` checks again on the open descriptor."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None  # gone or unreadable: reading it reports that as UNREADABLE
    if stat.S_ISREG(mode):
        return None
    return f"{file_kind(mode)}, not a regular file"


def read_copy(path: Path) -> LicenseCopy:
    """Read and strictly parse one copy file (LicenseError UNREADABLE / MALFORMED / ...)."""
    try:
        data = read_limited(path, MAX_COPY_BYTES)
    except OSError as exc:
        raise LicenseError(LicenseReason.UNREADABLE, f"cannot read: {exc.strerror}") from None
    return parse_copy(data)


def _load_one(
    path: Path,
    *,
    keyring: VendorKeyring,
    fingerprint: str,
    node_secret: str,
    now: float,
    clock_rolled_back: bool,
) -> InstalledLicense:
    copy = read_copy(path)
    verify_copy(
        copy,
        keyring=keyring,
        fingerprint=fingerprint,
        now=now,
        clock_rolled_back=clock_rolled_back,
        backend_key=node_backend_key(node_secret),
    )
    return InstalledLicense(
        firm_code=copy.firm_code,
        product_code=copy.product_code,
        tmr_id=copy.tmr_id,
        quantity=copy.quantity,
        expires=None if copy.expires is None else float(copy.expires),
        features=dict(copy.features),
        set_id=copy.set_id,
        serial=copy.serial,
        product_key=open_product_key(copy, node_secret),
        path=path,
        set_index=copy.set_index,
        fingerprint=copy.fingerprint,
        backend_key=copy.backend_key,
    )


def node_backend_key(node_secret: str) -> str:
    """The hex of the raw CURVE public key of a node's Z85 secret key (a copy's
    ``backend_key``)."""
    return z85_key_bytes(public_from_secret(node_secret), "public key").hex()
