"""tmr.licensing: license copies, their verification, and the effective-version rule.

Modules: ``model`` (fields, canonical file format, strict parser), ``keyring`` (vendor
public keys), ``verify`` (the backend's acceptance checks), ``sealing`` (product key sealed to
a backend's CURVE key), ``fingerprint`` (backend identity), ``container`` (loading a
backend's license directory), ``clock`` (clock-rollback guard), ``effective`` (the
effective-version rule), ``crypt`` (crypto calls with a product key).
"""

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
