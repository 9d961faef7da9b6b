"""What the leader knows of each backend, and the health questions asked of all of them.

See docs/design.md §5 (Takeover, Wiped backends) and §6. `Backend` is one backend as the
leader sees it (up or down, promise, copies, acks, requests in flight); the functions answer
the questions the leader asks of the trio: is it up (`mark_up`, `mark_down`), is a wiped store
safe to seed (`may_seed`), did a majority confirm this leader recently
(`leadership_confirmed`), is another server alive as leader (`live_leader`), and what a
backend's status changes (`take_status`). Functions that change what counts for the effective
license return True so the leader drops its cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tmr.licensing.effective import QUORUM
from tmr.replication.messages import Promise, StateToken, Status
from tmr.replication.types import (
    NO_FLOOR,
    ZERO_EPOCH,
    Epoch,
    Floor,
    LicenseInfo,
    ProductKey,
    Version,
    key_str,
)


@dataclass
class Outstanding:
    """A request sent to a backend and not answered yet (keyed by its message id)."""

    kind: str  # probe | prepare | repl | crypt
    sent_at: float


@dataclass
class Backend:
    name: str
    index: int
    up: bool = False
    promised: Epoch = ZERO_EPOCH
    caught_up: bool = False
    licenses: dict[ProductKey, LicenseInfo] = field(default_factory=dict)
    versions: dict[ProductKey, Version] = field(default_factory=dict)
    outstanding: dict[int, Outstanding] = field(default_factory=dict)
    last_probe: float = float("-inf")
    answered_at: float = float("-inf")  # send time of the latest request it answered
    status_sent_at: float = float("-inf")  # send time of the probe of the latest Status used
    inflight: dict[int, str] = field(default_factory=dict)  # ACCEPT/SNAPSHOT mids in flight
    sent: dict[ProductKey, int] = field(default_factory=dict)  # highest seq sent (pipelined)
    told: dict[ProductKey, int] = field(default_factory=dict)  # committed seq it was told
    # Committed seqs it acknowledged knowing (durably: an ACCEPT's `commits`, a committed
    # snapshot), and the ones carried by a message in flight (mid -> (product, seq)).
    known: dict[ProductKey, int] = field(default_factory=dict)
    carrying: dict[int, tuple[tuple[ProductKey, int], ...]] = field(default_factory=dict)
    durable: bool = False  # it said it keeps commit knowledge durably (`Accepted.durable`)
    acked: dict[ProductKey, int] = field(default_factory=dict)
    refused_until: dict[ProductKey, float] = field(default_factory=dict)
    refusal: dict[ProductKey, str] = field(default_factory=dict)
    promise: Promise | None = None
    confirmed_at: float = float("-inf")  # send time of the latest request it answered in our epoch
    fresh_since: float | None = None  # when we saw it report a wiped (not caught-up) store
    live_epoch: Epoch | None = None  # its promise, when it reported hearing that leader
    live_at: float = float("-inf")  # when (our clock) it last heard `live_epoch`
    prepare_sent: bool = False
    snapshot_acked: bool = False
    clock: float | None = None  # its trusted wall time (Status; None: an older backend)
    floors: dict[ProductKey, Floor] = field(default_factory=dict)  # its raised floors
    # The status state `versions`, `licenses` and `floors` are at (`Status.state`; None:
    # nothing held, the next probe asks for everything).
    state: StateToken | None = None
    # The leader reconciled it with its latest status (`Leader._on_status`) and nothing it
    # knows of it changed since: a status that changes nothing needs no reconcile.
    synced: bool = False

    def holds(self, key: ProductKey) -> bool:
        lic = self.licenses.get(key)
        return lic is not None and lic.valid

    def new_term(self) -> None:
        """Forget what belonged to the previous term (probes in flight stay)."""
        self.acked.clear()
        self.known.clear()
        self.carrying.clear()
        self.confirmed_at = float("-inf")
        self.refused_until.clear()
        self.refusal.clear()
        self.promise = None
        self.prepare_sent = False
        self.snapshot_acked = False
        self.inflight.clear()
        self.sent.clear()
        self.told.clear()
        self.synced = False
        for mid, out in list(self.outstanding.items()):
            if out.kind != "probe":
                del self.outstanding[mid]


def mark_up(b: Backend, events: list[dict[str, Any]]) -> bool:
    """It answered: True if it was down (what counts has changed)."""
    if b.up:
        return False
    b.up = True
    b.synced = False
    events.append({"event": "backend_up", "backend": b.name})
    return True


def mark_down(b: Backend, events: list[dict[str, Any]], why: str) -> bool:
    """It did not answer in time: True if it was up (what counts has changed)."""
    # Its acks stay durable facts, but it no longer counts for commits or log trimming
    # until it answers again; then it resumes from its log or gets a snapshot.
    b.acked.clear()
    b.sent.clear()
    b.told.clear()
    b.confirmed_at = float("-inf")
    b.synced = False
    if not b.up:
        return False
    b.up = False
    events.append({"event": "backend_down", "backend": b.name, "reason": why})
    return True


# What a status changes of a backend's products: those whose version changed, and its copies
# and its floors as they now are (None: unchanged).
StatusTaken = tuple[
    set[ProductKey], dict[ProductKey, LicenseInfo] | None, dict[ProductKey, Floor] | None
]


def take_status(b: Backend, msg: Status) -> StatusTaken | None:
    """Bring what the leader holds of `b`'s products to the status: its versions and state
    token are updated here; the copies and floors that changed are returned for the leader to
    apply (a change of either makes `b` unsynced: it is reconciled whole). None: the status
    is a delta the leader cannot apply (from a state it does not hold, or older than the one
    it holds); it is then ignored, and after a gap the next probe asks for everything
    (`Probe.have`). A delta to the state the leader holds changes nothing."""
    licenses: dict[ProductKey, LicenseInfo] | None = None
    floors: dict[ProductKey, Floor] | None = None
    changed: set[ProductKey] = set()
    if msg.since is None:  # everything
        held = b.versions
        changed = {k for k, v in msg.versions.items() if held.get(k) != v}
        changed.update(k for k in held if k not in msg.versions)
        b.versions = dict(msg.versions)
        licenses = msg.licenses
        floors = {k: f for k, f in msg.floors.items() if f != NO_FLOOR}
    else:
        held_state, to = b.state, msg.state
        if held_state is None or to is None or held_state[0] != to[0] or msg.since > held_state[1]:
            b.state = None  # it may hold changes the leader missed: get everything
            return None
        if to[1] < held_state[1]:
            return None  # older than what the leader holds (overtaken)
        if to[1] == held_state[1]:
            # The state the leader holds already: an honest backend's delta is then empty or
            # a late repeat of one applied (every change is a new generation). Entries that
            # differ are a lying or broken peer's: they would stay, as no later delta covers
            # them. The status still answers the probe.
            return set(), None, None
        for key, version in msg.versions.items():
            if b.versions.get(key) != version:
                b.versions[key] = version
                changed.add(key)
            floor = msg.floors.get(key, NO_FLOOR)
            if b.floors.get(key, NO_FLOOR) != floor:
                floors = dict(b.floors) if floors is None else floors
                if floor == NO_FLOOR:
                    floors.pop(key, None)
                else:
                    floors[key] = floor
        copies = b.licenses
        if any(copies.get(k) != v for k, v in msg.licenses.items()) or any(
            k in copies for k in msg.gone
        ):
            licenses = {**copies, **msg.licenses}
            for key in msg.gone:
                licenses.pop(key, None)
    b.state = msg.state
    return changed, licenses, floors


def set_caught_up(b: Backend, caught_up: bool, now: float) -> None:
    b.caught_up = caught_up
    if caught_up:
        b.fresh_since = None
    elif b.fresh_since is None:
        b.fresh_since = now


def update_licenses(
    b: Backend, licenses: dict[ProductKey, LicenseInfo], events: list[dict[str, Any]]
) -> bool:
    """Take the copies a backend reported: True if they changed."""
    if licenses == b.licenses:
        return False
    for key in set(licenses) | set(b.licenses):
        old, new = b.licenses.get(key), licenses.get(key)
        if old != new:
            events.append(
                {
                    "event": "license_changed",
                    "backend": b.name,
                    "license": key_str(key),
                    "tmr_id": new.tmr_id if new else None,
                    "quantity": new.quantity if new else None,
                    "valid": new.valid if new else False,
                    "reason": new.reason if new else "removed",
                }
            )
            b.refused_until.pop(key, None)
    b.licenses = dict(licenses)
    return True


def leadership_confirmed(backends: Sequence[Backend], since: float) -> bool:
    """A majority of backends answered, in our epoch, requests sent at `since` or later.

    Read for every client request: a count, not a sort of the confirmation times."""
    n = 0
    for b in backends:
        if b.confirmed_at >= since:
            n += 1
    return n >= QUORUM


def live_leader(
    backends: Sequence[Backend], server_id: str, now: float, window: float
) -> str | None:
    """Another server that a majority of reachable backends heard as their promised leader
    within `window` (None: no other server is alive as leader)."""
    heard: dict[str, int] = {}
    for b in backends:
        e = b.live_epoch
        if (
            b.up
            and e is not None
            and e.server
            and e.server != server_id
            and now - b.live_at < window
        ):
            heard[e.server] = heard.get(e.server, 0) + 1
    return next((server for server, n in heard.items() if n >= QUORUM), None)


def may_seed(backends: Sequence[Backend], b: Backend, *, bootstrap: bool, takeover: bool) -> bool:
    """May this leader write a snapshot to a backend whose store was wiped?

    A wiped backend forgot its promise, so by itself it would accept a deposed leader.
    Seed it only when two other backends confirmed this epoch after it was seen wiped
    (or, at takeover, promised it), which rules out any newer epoch with a majority."""
    if b.caught_up or bootstrap:
        return True
    if takeover:
        counted = [x for x in backends if x is not b and x.promise and x.promise.caught_up]
        return len(counted) >= QUORUM
    since = b.fresh_since if b.fresh_since is not None else float("inf")
    confirmed = [x for x in backends if x is not b and x.confirmed_at >= since]
    return len(confirmed) >= QUORUM
