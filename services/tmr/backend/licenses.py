"""The backend's view of its license container, as the acceptor needs it.

`load_license_view` verifies the container (`tmr.licensing.load_container`) and keeps:

- the installed copies (valid when loaded; their product keys serve crypto calls);
- authentic copies refused only for a time reason (expired, clock set back), so that the
  backend can report the product as present but *not valid* instead of unknown;
- every other rejected file with its reason.

`LicenseView.infos` turns that into `LicenseInfo` per product for the acceptor, re-checking
expiry against the clock guard, so a copy that expires while the backend runs becomes
invalid at the next check.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tmr.licensing import (
    ClockGuard,
    InstalledLicense,
    LicenseError,
    LicenseReason,
    VendorKeyring,
    crypt,
    load_container,
    read_copy,
    verify_copy,
)
from tmr.replication.types import CopyReason, LicenseInfo, ProductKey

# The licensing refusals (`LicenseReason`, why a file is refused) that leave an authentic copy
# reported as present but not valid, and the `CopyReason` it is reported with: time reasons,
# and a copy below the highest TMR ID installed or the trio's replicated floor (shown, not
# silently dropped).
TIME_REASONS: dict[LicenseReason, CopyReason] = {
    LicenseReason.EXPIRED: CopyReason.EXPIRED,
    LicenseReason.CLOCK_ROLLBACK: CopyReason.CLOCK_ROLLBACK,
}
UNUSABLE_REASONS: dict[LicenseReason, CopyReason] = {
    **TIME_REASONS,
    LicenseReason.ROLLBACK: CopyReason.BELOW_FLOOR,
}


@dataclass(frozen=True)
class UnusableCopy:
    """An authentic copy for this backend that time makes unusable (expired, clock back)."""

    tmr_id: int
    quantity: int
    expires: float | None
    features: tuple[tuple[str, str], ...]
    reason: CopyReason
    path: Path


@dataclass
class LicenseView:
    installed: dict[ProductKey, InstalledLicense] = field(default_factory=dict)
    unusable: dict[ProductKey, UnusableCopy] = field(default_factory=dict)
    rejected: list[tuple[Path, LicenseError]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # not regular files

    def infos(self, clock: ClockGuard) -> dict[ProductKey, LicenseInfo]:
        """What the acceptor is told, per product, at the clock guard's current time."""
        out: dict[ProductKey, LicenseInfo] = {}
        for key, copy in self.unusable.items():
            out[key] = LicenseInfo(
                copy.tmr_id, copy.quantity, False, copy.reason, copy.expires, copy.features
            )
        for key, lic in self.installed.items():
            out[key] = installed_info(lic, clock)
        return out

    def crypt(self, key: ProductKey, operation: str, data: bytes) -> bytes:
        """A crypto call with the product key of an installed copy (errors: ValueError)."""
        lic = self.installed.get(key)
        if lic is None:
            raise ValueError(f"no product key for {key[0]}:{key[1]} on this backend")
        try:
            return crypt(lic.product_key, operation, data)
        except LicenseError as exc:
            raise ValueError(str(exc)) from None


def features_of(features: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(features.items()))


def installed_info(lic: InstalledLicense, clock: ClockGuard) -> LicenseInfo:
    valid, reason = True, CopyReason.NONE
    try:
        clock.check_expiry(lic.expires)
    except LicenseError as exc:
        if exc.reason not in TIME_REASONS:  # check_expiry raises only these
            raise
        valid, reason = False, TIME_REASONS[exc.reason]
    return LicenseInfo(
        lic.tmr_id,
        lic.quantity,
        valid,
        reason,
        lic.expires,
        features_of(lic.features),
        set_id=lic.set_id,
        set_index=lic.set_index,
        fingerprint=lic.fingerprint,
        backend_key=lic.backend_key,
    )


def load_license_view(
    license_dir: Path,
    *,
    keyring: VendorKeyring,
    fingerprint: str,
    node_secret: str,
    clock: ClockGuard,
    installed_tmr_ids: Mapping[ProductKey, int],
) -> LicenseView:
    load = load_container(
        license_dir,
        keyring=keyring,
        fingerprint=fingerprint,
        node_secret=node_secret,
        clock=clock,
        installed_tmr_ids=installed_tmr_ids,
    )
    view = LicenseView(
        installed=dict(load.licenses), rejected=list(load.rejected), skipped=list(load.skipped)
    )
    for path, error in load.rejected:
        reason = UNUSABLE_REASONS.get(error.reason)
        found = None if reason is None else _authentic_copy(path, keyring, fingerprint, reason)
        if found is None:
            continue
        key, copy = found
        old = copy.tmr_id < installed_tmr_ids.get(key, 0) and reason is not CopyReason.BELOW_FLOOR
        if key in view.installed or old:
            continue
        best = view.unusable.get(key)
        if best is None or copy.tmr_id > best.tmr_id:
            view.unusable[key] = copy
    return view


def _authentic_copy(
    path: Path, keyring: VendorKeyring, fingerprint: str, reason: CopyReason
) -> tuple[ProductKey, UnusableCopy] | None:
    """Re-read a copy refused for a time reason; keep it only if signature and binding hold
    (checked with the clock out of the way)."""
    try:
        copy = read_copy(path)
        verify_copy(copy, keyring=keyring, fingerprint=fingerprint, now=0.0)
    except LicenseError:
        return None  # changed since the container was loaded: ignore it
    unusable = UnusableCopy(
        tmr_id=copy.tmr_id,
        quantity=copy.quantity,
        expires=None if copy.expires is None else float(copy.expires),
        features=features_of(copy.features),
        reason=reason,
        path=path,
    )
    return (copy.firm_code, copy.product_code), unusable
