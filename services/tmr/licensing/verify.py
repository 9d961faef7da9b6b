"""The checks a backend makes before it accepts a license copy (docs/design.md §3)."""

from __future__ import annotations

import hmac

from tmr.licensing.keyring import VendorKeyring
from tmr.licensing.model import LicenseCopy, LicenseError, LicenseReason


def verify_copy(
    copy: LicenseCopy,
    *,
    keyring: VendorKeyring,
    fingerprint: str,
    now: float,
    installed_tmr_id: int | None = None,
    clock_rolled_back: bool = False,
    backend_key: str | None = None,
) -> None:
    """Raise LicenseError unless ``copy`` may be installed on the backend ``fingerprint``.

    Checks, in order: known firm code, vendor signature over the exact body bytes, bound to
    this backend (its fingerprint and, when ``backend_key`` is given, the hex of this node's
    CURVE public key), not older than the TMR ID already installed, not expired. An expiring copy
    is refused (CLOCK_ROLLBACK) while the clock guard reports that the clock went back;
    non-expiring copies are unaffected.
    """
    if not keyring.knows(copy.firm_code):
        raise LicenseError(
            LicenseReason.UNKNOWN_FIRM, f"no vendor key for firm code {copy.firm_code}"
        )
    if not keyring.verify(copy.firm_code, copy.signature, copy.signed_message):
        raise LicenseError(
            LicenseReason.BAD_SIGNATURE,
            f"signature does not verify with the vendor key of firm code {copy.firm_code}",
        )
    if not hmac.compare_digest(copy.fingerprint, fingerprint):
        raise LicenseError(
            LicenseReason.WRONG_FINGERPRINT,
            f"copy is bound to backend {copy.serial} ({copy.fingerprint[:16]}...), "
            f"not to this one ({fingerprint[:16]}...)",
        )
    if backend_key is not None and not hmac.compare_digest(copy.backend_key, backend_key):
        raise LicenseError(
            LicenseReason.WRONG_BACKEND_KEY,
            f"copy is bound to the CURVE key {copy.backend_key[:16]}..., "
            f"not to this node's key {backend_key[:16]}...",
        )
    if installed_tmr_id is not None and copy.tmr_id < installed_tmr_id:
        raise LicenseError(
            LicenseReason.ROLLBACK,
            f"TMR ID #{copy.tmr_id} is older than #{installed_tmr_id} already installed",
        )
    if copy.expires is not None:
        if clock_rolled_back:
            raise LicenseError(
                LicenseReason.CLOCK_ROLLBACK,
                "the system clock was set back; expiring licenses are refused",
            )
        if now >= copy.expires:
            raise LicenseError(LicenseReason.EXPIRED, f"expired at unix time {copy.expires}")
