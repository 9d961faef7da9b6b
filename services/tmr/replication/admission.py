"""Admission and the license views: what the trio may grant, and what operators are shown.

See docs/design.md §3 (the effective version) and §6 (which error a request gets). The
effective license of a product is computed from the copies that count (an up backend's
valid copy at or above the floors, `effective`); `admit` decides a checkout against it and
the seats in use; `grant_result` and `license_row` build the typed client results
(`tmr.protocol.results`), `handle_row` the operators' JSON view of a handle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

from tmr.errors import ErrorCode
from tmr.licensing.effective import QUORUM, Effective, Holding, effective_version
from tmr.policy import Denial, Policy, Subject
from tmr.protocol.results import CheckoutResult, LicenseEntry
from tmr.replication.backends import Backend
from tmr.replication.types import (
    AccessMode,
    CopyReason,
    HandleRecord,
    LicenseInfo,
    ProductKey,
    SeatCount,
    Station,
    key_str,
    seat_count,
)

Admission = tuple[ErrorCode | None, str, Effective | None]


def effective(
    backends: Sequence[Backend],
    key: ProductKey,
    *,
    below_floor: Callable[[Backend, ProductKey], str],
    floor_id: Callable[[ProductKey], int],
    backend_keys: tuple[str, ...],
) -> Effective:
    """The effective license of `key` from the copies that count (not cached)."""
    holdings: list[Holding | None] = []
    for b in backends:
        lic = b.licenses.get(key)
        ok = b.up and lic is not None and lic.valid and not below_floor(b, key)
        holdings.append(
            Holding(
                lic.tmr_id,
                lic.quantity,
                lic.set_id,
                lic.set_index,
                lic.fingerprint,
                lic.backend_key,
            )
            if ok and lic
            else None
        )
    keys = backend_keys or ("",) * len(holdings)
    return _show_below_floor(backends, key, effective_version(holdings, keys), floor_id(key))


def _show_below_floor(
    backends: Sequence[Backend], key: ProductKey, eff: Effective, floor: int
) -> Effective:
    """A reachable backend's copy below the TMR ID floor does not count, but shows as not
    at the effective ID, ``(#7)``, as during an update (not as ``-``, no copy)."""
    parts = eff.status.split(" ")
    if not floor or len(parts) != len(backends):
        return eff
    for i, b in enumerate(backends):
        lic = b.licenses.get(key)
        if b.up and lic is not None and lic.tmr_id < floor and parts[i] == f"{i + 1}:-":
            parts[i] = f"{i + 1}:(#{lic.tmr_id})"
    return replace(eff, status=" ".join(parts))


def best_license(
    backends: Sequence[Backend], key: ProductKey, eff: Effective
) -> LicenseInfo | None:
    """The copy at the effective TMR ID, else the highest one (for its expiry and features)."""
    best = None
    for b in backends:
        lic = b.licenses.get(key)
        if lic is None:
            continue
        if eff.tmr_id is not None and lic.tmr_id == eff.tmr_id:
            return lic
        if best is None or lic.tmr_id > best.tmr_id:
            best = lic
    return best


def granted_seats(mode: AccessMode, seats: int, quantity: int) -> int:
    """The seats a granted handle's record holds: an exclusive checkout takes the whole
    effective LQ (at least 1) whatever it asked; any other what it asked."""
    return max(quantity, 1) if mode is AccessMode.EXCLUSIVE else seats


def increase(
    count: SeatCount | None, mode: AccessMode, station: Station, seats: int, quantity: int
) -> int:
    """What a checkout adds to the seat count `count` (None: nothing held) under its mode."""
    held = count if count is not None else SeatCount()
    return held.increase(mode, station, granted_seats(mode, seats, quantity))


def admit(
    backends: Sequence[Backend],
    key: ProductKey,
    seats: int,
    effective: Callable[[ProductKey], Effective],
    count: SeatCount | None,
    mode: AccessMode = AccessMode.USER_LIMIT,
    station: Station = ("", "", ""),
) -> Admission:
    """May a checkout of `seats` seats of `key` in `mode` (from `station`) be granted, the
    product's handles counting `count` (None: none held)? (None, "", eff) if so, else the
    error code and message for the client (and the effective license). Under the access
    modes (docs/design.md §7.6): an exclusive handle held refuses everything, an exclusive
    checkout needs an empty table and takes the whole LQ, a station_share checkout needs
    only what it adds to its station's largest handle (`SeatCount.increase`). All three
    refusals are NO_LICENSE_AVAILABLE (queueable with `wait`), with the reason in the text."""
    known = [b for b in backends if key in b.licenses]
    if not known:
        return ErrorCode.UNKNOWN_LICENSE, f"no license {key_str(key)} in this container", None
    eff = effective(key)
    if not eff.available:
        up_copies = [b.licenses[key] for b in known if b.up]
        valid = sum(1 for lic in up_copies if lic.valid)
        expired = sum(1 for lic in up_copies if lic.reason is CopyReason.EXPIRED)
        if expired and valid + expired >= QUORUM:
            return ErrorCode.LICENSE_EXPIRED, f"license {key_str(key)} has expired", eff
        why = f", {eff.reason.value}" if eff.reason else ""
        return (
            ErrorCode.QUORUM_LOST,
            f"license {key_str(key)} is held by fewer than 2 reachable backends "
            f"({eff.status}{why})",
            eff,
        )
    held = count if count is not None else SeatCount()
    used = held.total
    conflict = held.conflict(mode)
    if conflict:
        what = (
            f"{key_str(key)} is held exclusively"
            if held.exclusive
            else f"exclusive access to {key_str(key)} needs every seat free"
        )
        return (
            ErrorCode.NO_LICENSE_AVAILABLE,
            f"{what} ({used} of {eff.quantity} seats in use by {held.handles} handle(s))",
            eff,
        )
    need = increase(held, mode, station, seats, eff.quantity)
    if used + need > eff.quantity:
        asked = "every seat (exclusive)" if mode is AccessMode.EXCLUSIVE else f"{seats} requested"
        return (
            ErrorCode.NO_LICENSE_AVAILABLE,
            f"{used} of {eff.quantity} seats of {key_str(key)} in use, {asked}",
            eff,
        )
    return None, "", eff


def policy_denial(
    policy: Policy,
    key: ProductKey,
    who: Subject,
    seats: int,
    held: Iterable[HandleRecord],
    admitted: Admission,
) -> Denial | None:
    """The policy rule that refuses a checkout `admit` let through or refused only for the
    seat count (docs/design.md §7.6). Availability errors (unknown license, quorum lost,
    expired) stand as they are: they say the truth whoever asks. `seats`: what the checkout
    adds to the seat count under its access mode (`increase`); `held`: the product's
    handles, granted and pending, counted with `seat_count` (walked only when the policy has
    rules for `key`). So an exclusive checkout counts as the whole LQ for `max` and
    `reserve`: a subject whose `max` is below LQ never gets one, and none is granted while a
    reserve of others is not taken up."""
    code, _, eff = admitted
    if eff is None or code not in (None, ErrorCode.NO_LICENSE_AVAILABLE):
        return None
    return policy.check(key, who, seats, held, eff.quantity, seat_count)


def grant_result(rec: HandleRecord, tmr_id: int, lease: float) -> CheckoutResult:
    """The checkout result for a granted handle (and for each retry of its request)."""
    return CheckoutResult(rec.handle, rec.firm, rec.product, rec.seats, lease, tmr_id)


def license_row(
    key: ProductKey,
    eff: Effective,
    in_use: int,
    floor: dict[str, Any],
    lic: LicenseInfo | None,
) -> LicenseEntry:
    """One license of `Leader.licenses_view` (``floor`` and ``reason`` in ``extra``)."""
    return LicenseEntry(
        firm=key[0],
        product=key[1],
        tmr_id=eff.tmr_id,
        quantity=eff.quantity,
        in_use=in_use,
        available=eff.available,
        status=eff.status,
        expires=lic.expires if lic else None,
        features=dict(lic.features) if lic else {},
        extra={"floor": floor, "reason": eff.reason.value if eff.reason else None},
    )


def handle_row(rec: HandleRecord, lease_left: float, committed: bool) -> dict[str, Any]:
    """One handle of `Leader.handles_view`."""
    return {
        "handle": rec.handle,
        "firm": rec.firm,
        "product": rec.product,
        "seats": rec.seats,
        "client_id": rec.client_id,
        "user": rec.user,
        "host": rec.host,
        "pid": rec.pid,
        "mode": rec.mode.value,
        "owner": rec.owner,
        "granted_at": rec.granted_at,
        "lease_left": lease_left,
        "committed": committed,
    }
