"""The checker: invariants over a workload history (and the handle table after the run).

- **I1** At no instant do the seats *certainly held* by the clients exceed the LQ in force.
  A handle is certainly held from its checkout's reply to the earliest of: the start of its
  release call, the time the SDK learnt it was lost, and the end of its lease as the client
  knows it (the first send time of its last successful checkout or heartbeat plus the lease;
  the server counts the lease from when it handles the request, so this is a lower bound).
  The LQ comes from ``lq`` and an optional schedule of (UNIX time, LQ) changes; around each
  change (``schedule_margin``) the larger of the two applies. The handle table, if given,
  must not exceed the LQ either.
- **I7** No acknowledged grant is lost. During the run: the server must not answer
  UNKNOWN_HANDLE for a handle before the lease the client knows of has ended. After the run:
  every acknowledged handle that was neither released (no release started) nor expired (its
  known lease not over) when the handle table was captured must be in it; a handle whose
  release was acknowledged, or that the server said it did not know, must not be.
- **I8** One checkout takes one seat set: every acknowledged handle is unique and only its own
  client operates on it; the table holds no handle of our clients that no checkout
  acknowledged, beyond the checkouts whose outcome is unknown (timeouts); seats and client id
  in the table match the acknowledgement.

Plus the client-visible unavailability: gaps between successful operations (checkout,
heartbeat or release answered ok, or a checkout refused with NO_LICENSE_AVAILABLE: the service
answered, the license was full), the longest one, and, for each given event (e.g. "kill of
the active server"), the time to the next successful operation and checkout.

Times: everything is computed on the generator's monotonic clock; UNIX times (schedule,
events, handle capture) are mapped with the run's one offset, widened by ``clock_skew`` where
the direction matters (the handle table may come from another host).
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tmr.errors import ErrorCode
from tmr.workload.history import (
    OK,
    UNKNOWN,
    HandlesSnapshot,
    History,
    HistoryError,
    OpRecord,
    ServerHandle,
)

MAX_LISTED = 20


@dataclass(frozen=True, slots=True)
class Violation:
    invariant: str  # "I1", "I7", "I8" or "outcome"
    message: str
    at: float | None = None  # seconds since the run's start, when tied to a moment
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "invariant": self.invariant,
            "message": self.message,
            "at": self.at,
            "details": self.details,
        }


@dataclass
class CheckOptions:
    lq: int | None = None
    schedule: Sequence[tuple[float, int]] = ()  # (UNIX time, LQ in force from then on)
    schedule_margin: float = 0.5
    handles: HandlesSnapshot | None = None
    clock_skew: float = 0.5
    gap_threshold: float = 0.5
    events: Sequence[tuple[str, float]] = ()  # (label, UNIX time)
    fail_on: frozenset[str] = frozenset()


@dataclass
class HandleLife:
    """What the history says about one acknowledged handle."""

    handle: str
    client: str
    seats: int
    rid: str | None
    checkout_start: float
    granted: float  # the checkout's reply
    lease_end: float  # the latest lease end known to the client
    release_start: float | None = None
    release_end: float | None = None
    release_outcome: str | None = None
    lost_at: float | None = None  # earliest evidence that the server forgot it
    lost_lease_end: float | None = None
    abandoned_at: float | None = None

    @property
    def held_until(self) -> float:
        ends = [self.lease_end]
        if self.release_start is not None:
            ends.append(self.release_start)
        if self.lost_at is not None:
            ends.append(self.lost_at)
        return min(ends)


@dataclass
class Report:
    history: History
    violations: list[Violation]
    counts: dict[str, dict[str, int]]
    lives: dict[str, HandleLife]
    max_held: int
    max_held_at: float | None
    lq: dict[str, Any]
    gaps: list[dict[str, Any]]
    longest_gap: dict[str, Any] | None
    events: list[dict[str, Any]]
    handles: dict[str, Any] | None
    warnings: list[str]
    gap_threshold: float = 0.5

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_json(self) -> dict[str, Any]:
        h = self.history.header
        by_inv = Counter(v.invariant for v in self.violations)
        return {
            "ok": self.ok,
            "violations_by_invariant": dict(sorted(by_inv.items())),
            "violations": [v.to_json() for v in self.violations],
            "run": {
                "seed": h.seed,
                "clients": h.clients,
                "duration": h.duration,
                "firm": h.firm,
                "product": h.product,
                "start_wall": h.start_wall,
                "elapsed": round(self.history.end_mono - h.start_mono, 3),
                "finished": self.history.end is not None,
                "ops": len(self.history.ops),
            },
            "counts": self.counts,
            "acknowledged_handles": len(self.lives),
            "max_seats_held": self.max_held,
            "max_seats_held_at": self.max_held_at,
            "lq": self.lq,
            "unavailability": {
                "threshold": self.gap_threshold,
                "longest_gap": self.longest_gap,
                "gaps": self.gaps,
            },
            "events": self.events,
            "handle_table": self.handles,
            "warnings": self.warnings,
        }

    def summary(self) -> str:
        h = self.history.header
        lines = [
            f"history: seed {h.seed}, {h.clients} clients, {len(self.history.ops)} ops over "
            f"{self.history.end_mono - h.start_mono:.1f} s, license {h.firm}/{h.product}",
        ]
        for op, outcomes in self.counts.items():
            shown = ", ".join(f"{k} {v}" for k, v in outcomes.items())
            lines.append(f"  {op:<9} {shown}")
        at = "" if self.max_held_at is None else f" at +{self.max_held_at:.2f} s"
        lines.append(
            f"seats certainly held: max {self.max_held}{at} (LQ {self.lq['describe']}); "
            f"{len(self.lives)} acknowledged handle(s)"
        )
        if self.longest_gap is not None:
            g = self.longest_gap
            lines.append(
                f"unavailability: longest gap without a successful operation "
                f"{g['length']:.3f} s (+{g['from']:.2f} s .. +{g['to']:.2f} s); "
                f"{len(self.gaps)} gap(s) over {self.gap_threshold:g} s"
            )
            for gap in self.gaps[:MAX_LISTED]:
                failed = ", ".join(f"{k} {v}" for k, v in gap["outcomes"].items())
                lines.append(
                    f"  gap {gap['length']:.3f} s  +{gap['from']:.2f} .. +{gap['to']:.2f} s"
                    + (f"  ({failed})" if failed else "")
                )
        for ev in self.events:
            lines.append(
                f"event {ev['label']!r} at +{ev['at']:.2f} s: next successful operation after "
                f"{_fmt_delay(ev['to_first_ok'])}, granted checkout after "
                f"{_fmt_delay(ev['to_first_checkout'])}"
            )
        if self.handles is not None:
            t = self.handles
            lines.append(
                f"handle table ({t['source']}): {t['ours']} handle(s) of our clients, "
                f"{t['checked_present']} required and present, {t['foreign']} foreign"
            )
        for w in self.warnings:
            lines.append(f"warning: {w}")
        if self.ok:
            lines.append("result: OK (I1, I7, I8 hold)")
        else:
            lines.append(f"result: {len(self.violations)} VIOLATION(S)")
            for v in self.violations[: 2 * MAX_LISTED]:
                at = "" if v.at is None else f" [+{v.at:.3f} s]"
                lines.append(f"  {v.invariant}{at}: {v.message}")
            if len(self.violations) > 2 * MAX_LISTED:
                lines.append(f"  ... and {len(self.violations) - 2 * MAX_LISTED} more")
        return "\n".join(lines)


def _fmt_delay(value: float | None) -> str:
    return "never" if value is None else f"{value:.3f} s"


def answered(rec: OpRecord) -> bool:
    """A successful operation for the unavailability measure: a checkout, heartbeat or
    release answered ok, or a checkout refused because every seat is in use (the service
    works, the license is full)."""
    if rec.op not in ("checkout", "heartbeat", "release"):
        return False
    return rec.ok or (rec.op == "checkout" and rec.outcome == ErrorCode.NO_LICENSE_AVAILABLE)


# ---------------------------------------------------------------------------- LQ in force


class LqSchedule:
    """The LQ in force at each monotonic instant of a run."""

    def __init__(
        self, base: int | None, changes: Sequence[tuple[float, int]], margin: float
    ) -> None:
        self.changes = sorted(changes)
        self.margin = margin
        self.base = base

    def at(self, t: float) -> int | None:
        """The LQ in force at `t` (None: none given for that time)."""
        value = self.base
        for when, lq in self.changes:
            if when > t:
                break
            value = lq
        return value

    def allowed(self, t: float) -> int | None:
        """The LQ at `t`; within the margin of a change, the larger of the old and new."""
        best = self.at(t)
        previous = self.base
        for when, lq in self.changes:
            if abs(t - when) <= self.margin:
                best = max(v for v in (best, previous, lq) if v is not None)
            previous = lq
        return best

    def boundaries(self) -> list[float]:
        out = []
        for when, _ in self.changes:
            if math.isfinite(when):
                out += [when - self.margin, when, when + self.margin]
        return out


def read_schedule(path: str | os.PathLike[str]) -> list[tuple[float, int]]:
    """A schedule file: a JSON list of ``{"at": UNIX time, "lq": N}`` or ``[time, N]``."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise HistoryError(f"cannot read {p}: {exc.strerror or exc}") from None
    except ValueError:
        raise HistoryError(f"{p}: not JSON") from None
    if isinstance(doc, dict):
        doc = doc.get("schedule")
    if not isinstance(doc, list):
        raise HistoryError(f"{p}: must hold a list of {{'at': UNIX time, 'lq': N}}")
    out = []
    for i, item in enumerate(doc):
        if isinstance(item, dict):
            at, lq = item.get("at"), item.get("lq")
        elif isinstance(item, list) and len(item) == 2:
            at, lq = item
        else:
            raise HistoryError(f"{p}: entry #{i} must be {{'at': time, 'lq': N}} or [time, N]")
        if (
            isinstance(at, bool)
            or not isinstance(at, int | float)
            or not math.isfinite(at)
            or isinstance(lq, bool)
            or not isinstance(lq, int)
            or lq < 0
        ):
            raise HistoryError(f"{p}: entry #{i}: 'at' must be a number and 'lq' an int >= 0")
        out.append((float(at), lq))
    return out


# ---------------------------------------------------------------------------- the checks


class _Checker:
    def __init__(self, history: History, opts: CheckOptions) -> None:
        self.h = history
        self.opts = opts
        self.t0 = history.header.start_mono
        self.violations: list[Violation] = []
        self.warnings = list(history.warnings)
        base = opts.lq
        if base is None and history.header.license is not None:
            q = history.header.license.get("quantity")
            if isinstance(q, int) and not isinstance(q, bool):
                base = q
                self.warnings.append(f"no --lq: using the LQ listed at the start ({q})")
        changes = [(history.mono(at), lq) for at, lq in opts.schedule]
        self.lq = LqSchedule(base, changes, opts.schedule_margin)
        self.lives: dict[str, HandleLife] = {}

    def rel(self, t: float) -> float:
        return round(t - self.t0, 6)

    def violation(self, inv: str, message: str, at: float | None = None, **details: Any) -> None:
        self.violations.append(
            Violation(inv, message, None if at is None else self.rel(at), details)
        )

    # -- handle lives (and I8 on the history)

    def build_lives(self) -> None:
        ops = self.h.ops
        for rec in ops:
            if rec.op != "checkout" or not rec.ok:
                continue
            assert rec.handle is not None and rec.seats is not None
            first = self.lives.get(rec.handle)
            if first is not None:
                self.violation(
                    "I8",
                    f"handle {rec.handle} acknowledged twice: to {first.client} (checkout at "
                    f"+{self.rel(first.granted):.3f} s) and to {rec.client}",
                    rec.end_mono,
                    handle=rec.handle,
                    clients=[first.client, rec.client],
                )
                continue
            lease_end = rec.lease_end_mono
            if lease_end is None:
                lease_end = rec.start_mono + (rec.lease or 0.0)
            self.lives[rec.handle] = HandleLife(
                rec.handle,
                rec.client,
                rec.seats,
                rec.rid,
                rec.start_mono,
                rec.end_mono,
                lease_end,
            )
        for rec in sorted(ops, key=lambda r: (r.end_mono, r.start_mono)):
            if rec.op == "checkout" or rec.handle is None:
                continue
            life = self.lives.get(rec.handle)
            if life is None:
                self.warnings.append(
                    f"{rec.op} by {rec.client} on handle {rec.handle} that no checkout acknowledged"
                )
                continue
            if rec.client != life.client:
                self.violation(
                    "I8",
                    f"{rec.client} did {rec.op} on handle {rec.handle} of {life.client}",
                    rec.start_mono,
                    handle=rec.handle,
                )
                continue
            self.apply(life, rec)

    def apply(self, life: HandleLife, rec: OpRecord) -> None:
        evidence = rec.op == "lost" or (
            rec.op in ("heartbeat", "release") and rec.outcome == ErrorCode.UNKNOWN_HANDLE
        )
        if evidence and (life.lost_at is None or rec.end_mono < life.lost_at):
            life.lost_at = rec.end_mono
            life.lost_lease_end = max(life.lease_end, rec.lease_end_mono or -math.inf)
        if rec.lease_end_mono is not None:
            # The SDK's view when the op ended (before it, for a failed one): a lower bound.
            life.lease_end = max(life.lease_end, rec.lease_end_mono)
        if rec.op == "release" and life.release_start is None:
            life.release_start = rec.start_mono
            life.release_end = rec.end_mono
            life.release_outcome = rec.outcome
        if rec.op == "abandon" and life.abandoned_at is None:
            life.abandoned_at = rec.start_mono

    # -- I7 during the run

    def check_losses(self) -> None:
        for life in self.lives.values():
            if life.lost_at is None or life.lost_lease_end is None:
                continue
            released_before = life.release_start is not None and (
                life.release_start < life.lost_at and life.release_outcome != "UNKNOWN_HANDLE"
            )
            if released_before:
                continue
            if life.lost_at < life.lost_lease_end:
                self.violation(
                    "I7",
                    f"acknowledged handle {life.handle} ({life.client}, {life.seats} seat(s)) "
                    f"lost while leased: the server did not know it at "
                    f"+{self.rel(life.lost_at):.3f} s, its lease (as the client knows it) ran "
                    f"until +{self.rel(life.lost_lease_end):.3f} s",
                    life.lost_at,
                    handle=life.handle,
                    client=life.client,
                    lease_end=self.rel(life.lost_lease_end),
                )

    # -- I1

    def check_seats(self) -> tuple[int, float | None]:
        events: list[tuple[float, int, int, str]] = []  # (time, order, delta, handle)
        for life in self.lives.values():
            start, end = life.granted, life.held_until
            if end <= start:
                continue
            events.append((start, 1, life.seats, life.handle))
            events.append((end, 0, -life.seats, life.handle))  # ends first at equal times
        times = sorted({e[0] for e in events} | set(self.lq.boundaries()))
        events.sort()
        held = 0
        active: dict[str, int] = {}
        i = 0
        max_held, max_at = 0, None
        window: dict[str, Any] | None = None
        for k, t in enumerate(times):
            while i < len(events) and events[i][0] <= t:
                _, _, delta, handle = events[i]
                held += delta
                if delta > 0:
                    active[handle] = delta
                else:
                    active.pop(handle, None)
                i += 1
            if held > max_held:
                max_held, max_at = held, self.rel(t)
            nxt = times[k + 1] if k + 1 < len(times) else t
            allowed = self.lq.allowed((t + nxt) / 2 if nxt > t else t) if held else 0
            if allowed is None:
                raise HistoryError(
                    f"no LQ in force at +{self.rel(t):.3f} s: give --lq or an earlier "
                    "schedule entry"
                )
            if held > allowed:
                if window is None:
                    window = {
                        "from": t,
                        "to": nxt,
                        "max_held": held,
                        "lq": allowed,
                        "handles": sorted(active)[:MAX_LISTED],
                    }
                else:
                    window["to"] = nxt
                    if held > window["max_held"]:
                        window.update(
                            max_held=held, lq=allowed, handles=sorted(active)[:MAX_LISTED]
                        )
            elif window is not None:
                self._over(window)
                window = None
        if window is not None:
            self._over(window)
        return max_held, max_at

    def _over(self, w: dict[str, Any]) -> None:
        clients = sorted({self.lives[h].client for h in w["handles"]})
        self.violation(
            "I1",
            f"{w['max_held']} seats certainly held, over the LQ of {w['lq']}, from "
            f"+{self.rel(w['from']):.3f} s to +{self.rel(w['to']):.3f} s "
            f"(handles {', '.join(w['handles'])})",
            w["from"],
            held=w["max_held"],
            lq=w["lq"],
            until=self.rel(w["to"]),
            handles=w["handles"],
            clients=clients,
        )

    # -- the handle table after the run (I1, I7, I8)

    def check_table(self, snap: HandlesSnapshot) -> dict[str, Any]:
        h = self.h.header
        skew = self.opts.clock_skew
        lo = self.h.mono(snap.captured_wall_lo) - skew
        hi = self.h.mono(snap.captured_wall_hi) + skew
        if snap.role not in (None, "active"):
            self.warnings.append(f"handle table taken from a {snap.role} server")
        table = {
            s.handle: s
            for s in snap.handles
            if s.firm in (None, h.firm) and s.product in (None, h.product)
        }
        clients = {r.client for r in self.h.ops}
        ours = {k: s for k, s in table.items() if s.client_id in clients}
        # I1 on the server side: the whole table for the product (other clients too).
        total = sum(s.seats for s in table.values())
        allowed = max(
            (v for v in (self.lq.allowed(lo + skew), self.lq.allowed(hi - skew)) if v is not None),
            default=None,
        )
        if allowed is not None and total > allowed:
            self.violation(
                "I1",
                f"the handle table holds {total} seats of {h.firm}/{h.product}, over the LQ "
                f"of {allowed}",
                None,
                held=total,
                lq=allowed,
            )
        present_checked = 0
        for life in self.lives.values():
            # Must be there: acknowledged before, not released, lost or expired by then.
            required = (
                life.granted < lo
                and not (life.release_start is not None and life.release_start < hi)
                and life.lost_at is None
                and life.lease_end > hi
            )
            s = ours.get(life.handle)
            if s is not None:
                self._table_entry(life, s, lo)
                present_checked += required
            elif required:
                self.violation(
                    "I7",
                    f"acknowledged handle {life.handle} ({life.client}, {life.seats} seat(s)) "
                    f"is missing from the handle table taken at "
                    f"+{self.rel(self.h.mono(snap.captured_wall_lo)):.3f} s: not released, "
                    f"lease (as the client knows it) until +{self.rel(life.lease_end):.3f} s",
                    None,
                    handle=life.handle,
                    client=life.client,
                )
        # Orphans: our clients' handles that no checkout acknowledged.
        orphans: dict[str, list[str]] = defaultdict(list)
        for key, s in ours.items():
            if key not in self.lives:
                orphans[s.client_id].append(key)
        unknown = Counter(
            r.client
            for r in self.h.ops
            if r.op == "checkout" and r.outcome == UNKNOWN and r.start_mono < hi
        )
        for client, keys in sorted(orphans.items()):
            if len(keys) > unknown[client]:
                self.violation(
                    "I8",
                    f"the handle table holds {len(keys)} handle(s) of {client} that no "
                    f"checkout acknowledged, but only {unknown[client]} of its checkouts had "
                    f"an unknown outcome: {', '.join(sorted(keys)[:MAX_LISTED])}",
                    None,
                    client=client,
                    handles=sorted(keys),
                )
        return {
            "source": snap.source,
            "server": snap.server,
            "captured_at": self.rel(self.h.mono(snap.captured_wall_lo)),
            "handles": len(table),
            "seats": total,
            "ours": len(ours),
            "foreign": len(table) - len(ours),
            "orphans": sum(len(v) for v in orphans.values()),
            "checked_present": present_checked,
        }

    def _table_entry(self, life: HandleLife, s: ServerHandle, lo: float) -> None:
        if s.client_id != life.client or s.seats != life.seats:
            self.violation(
                "I8",
                f"handle {life.handle} is {s.seats} seat(s) of {s.client_id} in the table but "
                f"was acknowledged as {life.seats} seat(s) to {life.client}",
                None,
                handle=life.handle,
            )
        if life.release_outcome == OK and life.release_end is not None and life.release_end < lo:
            self.violation(
                "I7",
                f"handle {life.handle} ({life.client}) is in the handle table although its "
                f"release was acknowledged at +{self.rel(life.release_end):.3f} s",
                None,
                handle=life.handle,
            )
        elif life.lost_at is not None and life.lost_at < lo:
            self.violation(
                "I7",
                f"handle {life.handle} ({life.client}) is in the handle table although the "
                f"server did not know it at +{self.rel(life.lost_at):.3f} s",
                None,
                handle=life.handle,
            )

    # -- unavailability

    def gaps(self) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        start, end = self.t0, self.h.end_mono
        oks = sorted(r.end_mono for r in self.h.ops if answered(r))
        points = [start, *oks, max(end, oks[-1] if oks else end)]
        finished = sorted(self.h.ops, key=lambda r: r.end_mono)
        out: list[dict[str, Any]] = []
        longest: dict[str, Any] | None = None
        for a, b in itertools.pairwise(points):
            length = b - a
            if longest is None or length > longest["length"]:
                longest = {"from": self.rel(a), "to": self.rel(b), "length": round(length, 6)}
            if length > self.opts.gap_threshold:
                failed = Counter(
                    f"{r.op} {r.outcome}" for r in finished if a < r.end_mono < b and not r.ok
                )
                out.append(
                    {
                        "from": self.rel(a),
                        "to": self.rel(b),
                        "length": round(length, 6),
                        "edge": "start" if a == start else "end" if b == points[-1] else None,
                        "outcomes": dict(sorted(failed.items())),
                    }
                )
        out.sort(key=lambda g: -float(g["length"]))
        return out, longest

    def events(self) -> list[dict[str, Any]]:
        out = []
        for label, wall in self.opts.events:
            t = self.h.mono(wall)
            after = [r for r in self.h.ops if answered(r) and r.end_mono > t]
            first = min((r.end_mono for r in after), default=None)
            first_co = min((r.end_mono for r in after if r.op == "checkout" and r.ok), default=None)
            out.append(
                {
                    "label": label,
                    "at": self.rel(t),
                    "wall": wall,
                    # the next successful operation (see `answered`) and checkout (granted)
                    "to_first_ok": None if first is None else round(first - t, 6),
                    "to_first_checkout": None if first_co is None else round(first_co - t, 6),
                }
            )
        return out

    def outcomes(self) -> dict[str, dict[str, int]]:
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        for r in self.h.ops:
            counts[r.op][r.outcome] += 1
        for op, outcomes in sorted(counts.items()):
            for outcome, n in sorted(outcomes.items()):
                if outcome in self.opts.fail_on or f"{op}:{outcome}" in self.opts.fail_on:
                    self.violation(
                        "outcome", f"{n} {op} operation(s) ended {outcome}", None, op=op, n=n
                    )
        order = ("checkout", "heartbeat", "release", "lost", "abandon")
        return {
            op: dict(sorted(counts[op].items(), key=lambda kv: (kv[0] != OK, kv[0])))
            for op in order
            if op in counts
        }


def check(history: History, opts: CheckOptions | None = None) -> Report:
    """Check a history (and the handle table taken after it): the report of all findings."""
    opts = opts or CheckOptions()
    c = _Checker(history, opts)
    if history.end is not None and history.end.stuck:
        c.warnings.append(f"{history.end.stuck} workload client(s) did not finish")
    c.build_lives()
    c.check_losses()
    max_held, max_at = c.check_seats()
    table = c.check_table(opts.handles) if opts.handles is not None else None
    counts = c.outcomes()
    gaps, longest = c.gaps()
    lq_info = {
        "base": c.lq.base,
        "schedule": [{"at": c.rel(t), "lq": lq} for t, lq in c.lq.changes],
        "margin": opts.schedule_margin,
        "describe": _describe_lq(c.lq, c.rel),
    }
    return Report(
        history,
        c.violations,
        counts,
        c.lives,
        max_held,
        max_at,
        lq_info,
        gaps,
        longest,
        c.events(),
        table,
        c.warnings,
        opts.gap_threshold,
    )


def _describe_lq(lq: LqSchedule, rel: Any) -> str:
    parts = [str(lq.base)] if lq.base is not None else []
    parts += [f"{v} from +{rel(t):.2f} s" for t, v in lq.changes]
    return ", ".join(parts)


def parse_events(specs: Iterable[str]) -> list[tuple[str, float]]:
    """``LABEL@UNIXTIME`` strings to (label, time)."""
    out = []
    for spec in specs:
        label, sep, at = spec.rpartition("@")
        try:
            when = float(at)
        except ValueError:
            when = math.nan
        if not sep or not label or not math.isfinite(when):
            raise HistoryError(f"event {spec!r}: expected LABEL@UNIXTIME")
        out.append((label, when))
    return out
