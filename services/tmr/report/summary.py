"""Per-license usage over a wall-clock window, from usage rows (pure functions).

A handle holds its seats from its grant until its release or expiry. Within the window
[since, until] a license's *peak* is the largest number of seats held at one instant, and its
*seat-hours* the integral of the seats held. Rows come from several backends: the same op is
recorded by every backend that committed it, so rows are merged by (event, handle) first.

Bounded record: a handle whose grant is no longer kept (retention) starts, for the report, at
the window's start or the oldest row kept, whichever is later; a handle with no release yet
is held until the window's end (or `now`, if earlier).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tmr.replication.messages import DenialRow, UsageRow
from tmr.replication.types import ProductKey

SUMMARY_FIELDS = (
    "from",
    "to",
    "firm",
    "product",
    "quantity",
    "peak_seats",
    "peak_at",
    "seat_hours",
    "checkouts",
    "releases",
    "expiries",
    "denials",
    "clients",
)


def merge_rows(sources: Iterable[Iterable[UsageRow]]) -> list[UsageRow]:
    """One row per (event, handle), whatever the number of backends that recorded it."""
    seen: dict[tuple[str, str], UsageRow] = {}
    for rows in sources:
        for r in rows:
            seen.setdefault((r.event, r.handle), r)
    return sorted(seen.values(), key=lambda r: (r.at, r.event != "granted", r.handle))


@dataclass
class _Held:
    seats: int
    client_id: str
    start: float | None = None  # grant time, None if the grant row is not kept
    end: float | None = None  # release / expiry time, None while held


@dataclass
class LicenseUsage:
    firm: int
    product: int
    quantity: int | None = None
    peak_seats: int = 0
    peak_at: float | None = None
    seat_hours: float = 0.0
    checkouts: int = 0
    releases: int = 0
    expiries: int = 0
    denials: int = 0
    clients: set[str] = field(default_factory=set)

    def as_dict(self) -> dict[str, Any]:
        return {
            "firm": self.firm,
            "product": self.product,
            "quantity": self.quantity,
            "peak_seats": self.peak_seats,
            "peak_at": self.peak_at,
            "seat_hours": round(self.seat_hours, 6),
            "checkouts": self.checkouts,
            "releases": self.releases,
            "expiries": self.expiries,
            "denials": self.denials,
            "clients": len(self.clients),
        }


def summarize(
    rows: Iterable[UsageRow],
    since: float,
    until: float,
    *,
    now: float,
    denials: Mapping[ProductKey, int] | None = None,
    quantities: Mapping[ProductKey, int] | None = None,
    oldest: float | None = None,
) -> list[dict[str, Any]]:
    """Per-license usage in [since, until] (sorted by firm, product), as plain maps.

    ``denials``: refused checkouts per license in the window; ``quantities``: current LQ per
    license (informative); ``oldest``: time of the oldest row kept (see the module doc)."""
    end_of_window = min(until, now)
    floor = since if oldest is None else max(since, oldest)
    by_key: dict[ProductKey, LicenseUsage] = {}
    handles: dict[ProductKey, dict[str, _Held]] = {}

    def lic(key: ProductKey) -> LicenseUsage:
        if key not in by_key:
            by_key[key] = LicenseUsage(key[0], key[1])
            handles[key] = {}
        return by_key[key]

    for r in rows:
        key = (r.firm, r.product)
        u = lic(key)
        held = handles[key].setdefault(r.handle, _Held(r.seats, r.client_id))
        if r.event == "granted":
            held.start = r.at
            if since <= r.at <= until:
                u.checkouts += 1
        else:
            held.end = r.at if held.end is None else min(held.end, r.at)
            if since <= r.at <= until:
                if r.event == "expired":
                    u.expiries += 1
                else:
                    u.releases += 1
    for key in set(denials or {}) | set(quantities or {}):
        lic(key)
    for key, u in by_key.items():
        u.quantity = (quantities or {}).get(key)
        u.denials = (denials or {}).get(key, 0)
        _sweep(u, handles[key].values(), since, end_of_window, floor)
    return [by_key[k].as_dict() for k in sorted(by_key)]


def _sweep(u: LicenseUsage, held: Iterable[_Held], since: float, end: float, floor: float) -> None:
    """Peak seats and seat-hours of one license from its handles' intervals."""
    deltas: list[tuple[float, int]] = []
    level = 0
    for h in held:
        start = floor if h.start is None else h.start
        stop = end if h.end is None else min(h.end, end)
        lo, hi = max(start, since), stop
        if hi <= lo:
            continue
        u.seat_hours += h.seats * (hi - lo) / 3600.0
        u.clients.add(h.client_id)
        if lo <= since:
            level += h.seats
        else:
            deltas.append((lo, h.seats))
        if hi < end:
            deltas.append((hi, -h.seats))
    u.peak_seats, u.peak_at = level, (since if level else None)
    # Releases before grants at the same instant: a seat handed over is not counted twice.
    for at, delta in sorted(deltas, key=lambda d: (d[0], d[1])):
        level += delta
        if level > u.peak_seats:
            u.peak_seats, u.peak_at = level, at


def iso_utc(t: float | None) -> str:
    if t is None:
        return ""
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def to_csv(licenses: Iterable[Mapping[str, Any]], since: float, until: float) -> str:
    """One line per license; times in ISO 8601 UTC."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=SUMMARY_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in licenses:
        line = {**row, "from": iso_utc(since), "to": iso_utc(until)}
        line["peak_at"] = iso_utc(row.get("peak_at"))
        writer.writerow(line)
    return out.getvalue()


# ------------------------------------------------------------------ denial report

DENIAL_FIELDS = (
    "from",
    "to",
    "firm",
    "product",
    "user",
    "host",
    "code",
    "denials",
    "seats_asked",
    "keys",
    "servers",
    "first",
    "last",
    "rule",
)
MAX_DENIAL_GROUPS = 5000  # (license, user, host, code) groups in one report; the most denied


def merge_denials(sources: Iterable[Iterable[DenialRow]]) -> list[DenialRow]:
    """One row per refusal id, whatever the number of backends that recorded it; by time."""
    seen: dict[str, DenialRow] = {}
    for rows in sources:
        for r in rows:
            seen.setdefault(r.id, r)
    return sorted(seen.values(), key=lambda r: (r.at, r.id))


def denial_counts(
    rows: Iterable[DenialRow], since: float, until: float, code: str = "NO_LICENSE_AVAILABLE"
) -> dict[ProductKey, int]:
    """Refusals with ``code`` per license in [since, until] (the usage report's column)."""
    out: dict[ProductKey, int] = {}
    for r in rows:
        if r.code == code and since <= r.at <= until:
            key = (r.firm, r.product)
            out[key] = out.get(key, 0) + r.times
    return out


def denial_breakdown(
    rows: Iterable[DenialRow], since: float, until: float, limit: int = MAX_DENIAL_GROUPS
) -> tuple[list[dict[str, Any]], bool]:
    """Refusals in [since, until] per (license, user, host, code): count, seats asked,
    distinct client keys and servers, first and last time, the latest rule text. The most
    denied ``limit`` groups (sorted by license, user, host, code) and whether any was left
    out."""
    groups: dict[tuple[int, int, str, str, str], dict[str, Any]] = {}
    keys: dict[tuple[int, int, str, str, str], set[str]] = {}
    for r in rows:
        if not since <= r.at <= until:
            continue
        g = (r.firm, r.product, r.user, r.host, r.code)
        cur = groups.get(g)
        if cur is None:
            cur = groups[g] = {
                "firm": r.firm,
                "product": r.product,
                "user": r.user,
                "host": r.host,
                "code": r.code,
                "denials": 0,
                "seats_asked": 0,
                "servers": set(),
                "first": r.at,
                "last": r.at,
                "rule": r.rule,
            }
            keys[g] = set()
        cur["denials"] += r.times
        cur["seats_asked"] += r.seats * r.times
        cur["servers"].add(r.server)
        keys[g].add(r.owner)
        cur["first"] = min(cur["first"], r.at)
        last = max(r.at, r.last)
        if last >= cur["last"]:
            cur["last"], cur["rule"] = last, r.rule
    chosen = sorted(groups, key=lambda g: -groups[g]["denials"])[:limit]
    out = []
    for g in sorted(chosen):
        entry = groups[g]
        entry["servers"] = sorted(entry["servers"])
        entry["keys"] = len(keys[g])
        out.append(entry)
    return out, len(groups) > limit


def denials_to_csv(groups: Iterable[Mapping[str, Any]], since: float, until: float) -> str:
    """One line per (license, user, host, code); times in ISO 8601 UTC."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=DENIAL_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for g in groups:
        line = {**g, "from": iso_utc(since), "to": iso_utc(until)}
        line["first"], line["last"] = iso_utc(g.get("first")), iso_utc(g.get("last"))
        line["servers"] = " ".join(g.get("servers") or ())
        writer.writerow(line)
    return out.getvalue()
