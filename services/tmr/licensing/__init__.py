"""tmr.licensing: license copies, their verification, and the effective-version rule.

Modules: ``model`` (fields, canonical file format, strict parser), ``keyring`` (vendor
public keys), ``verify`` (the backend's acceptance checks), ``sealing`` (product key sealed to
a backend's CURVE key), ``fingerprint`` (backend identity), ``container`` (loading a
backend's license directory), ``clock`` (clock-rollback guard), ``effective`` (the
effective-version rule), ``crypt`` (crypto calls with a product key).

The package imports its modules lazily (on first use of a name below): the sans-I/O protocol
core (`tmr.replication`) uses only the effective-version rule and must not load pyzmq or
cryptography to import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tmr.licensing.clock import ClockGuard
    from tmr.licensing.container import ContainerLoad, InstalledLicense, load_container, read_copy
    from tmr.licensing.crypt import crypt
    from tmr.licensing.effective import (
        CopyProblem,
        Effective,
        Holding,
        distinct_copies,
        effective_version,
    )
    from tmr.licensing.fingerprint import (
        FingerprintDoc,
        fingerprint_of,
        make_fingerprint_doc,
        read_machine_id,
        serial_from_fingerprint,
    )
    from tmr.licensing.keyring import VendorKeyring, VendorPublicKey
    from tmr.licensing.model import (
        MAX_COPY_BYTES,
        LicenseCopy,
        LicenseError,
        LicenseReason,
        parse_copy,
    )
    from tmr.licensing.sealing import open_product_key
    from tmr.licensing.verify import verify_copy

_EXPORTS: dict[str, str] = {
    "ClockGuard": "tmr.licensing.clock",
    "ContainerLoad": "tmr.licensing.container",
    "CopyProblem": "tmr.licensing.effective",
    "Effective": "tmr.licensing.effective",
    "FingerprintDoc": "tmr.licensing.fingerprint",
    "Holding": "tmr.licensing.effective",
    "InstalledLicense": "tmr.licensing.container",
    "LicenseCopy": "tmr.licensing.model",
    "LicenseError": "tmr.licensing.model",
    "LicenseReason": "tmr.licensing.model",
    "MAX_COPY_BYTES": "tmr.licensing.model",
    "VendorKeyring": "tmr.licensing.keyring",
    "VendorPublicKey": "tmr.licensing.keyring",
    "crypt": "tmr.licensing.crypt",
    "distinct_copies": "tmr.licensing.effective",
    "effective_version": "tmr.licensing.effective",
    "fingerprint_of": "tmr.licensing.fingerprint",
    "load_container": "tmr.licensing.container",
    "make_fingerprint_doc": "tmr.licensing.fingerprint",
    "open_product_key": "tmr.licensing.sealing",
    "parse_copy": "tmr.licensing.model",
    "read_copy": "tmr.licensing.container",
    "read_machine_id": "tmr.licensing.fingerprint",
    "serial_from_fingerprint": "tmr.licensing.fingerprint",
    "verify_copy": "tmr.licensing.verify",
}


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tmr.licensing' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "MAX_COPY_BYTES",
    "ClockGuard",
    "ContainerLoad",
    "CopyProblem",
    "Effective",
    "FingerprintDoc",
    "Holding",
    "InstalledLicense",
    "LicenseCopy",
    "LicenseError",
    "LicenseReason",
    "VendorKeyring",
    "VendorPublicKey",
    "crypt",
    "distinct_copies",
    "effective_version",
    "fingerprint_of",
    "load_container",
    "make_fingerprint_doc",
    "open_product_key",
    "parse_copy",
    "read_copy",
    "read_machine_id",
    "serial_from_fingerprint",
    "verify_copy",
]
