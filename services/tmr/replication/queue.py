"""Queued checkouts (RLM's queuing): a FIFO of waiting checkouts per product, in one term.

A checkout that carries `wait` and would be refused `NO_LICENSE_AVAILABLE` takes a place at
the tail of its product's queue and is answered at once with its position (`Place`); the
client asks again with the same request id before `hold` seconds passed, and every ask
refreshes the place. A place not refreshed in time is dropped (by the leader's expiry scan,
at most `leases.EXPIRY_SCAN` late). Nothing here is replicated:
a new leader starts with empty queues, and the clients queue again as they ask.

The rule (strict FIFO, head of line; docs/operator-guide.md §8 "Queueing"):

- a queued checkout is admitted only at the head of its product's queue (position 1);
- any other checkout of the product, queued or not, is admitted only if the seats free
  minus the seats of *every* place in the queue cover it (`seats_ahead`).

So no checkout ever takes seats a queued one waits for, and a large request waits only for
the places ahead of it, never for later small ones. Admission itself (availability, policy,
the seat count, the replicated log, dedup by (owner, client id, request id)) is the
ordinary checkout's: the queue only adds the seats held back for the places ahead.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tmr.errors import ErrorCode
from tmr.protocol.results import QueuedResult
from tmr.replication.admission import Admission
from tmr.replication.types import ProductKey, key_str

QUEUE_HOLD = 5.0  # seconds a place is kept without an ask (default of LeaderConfig.queue_hold)
QUEUE_RETRY = 0.5  # seconds the server suggests between two asks (the queued result's `retry`)
# Places per product; a checkout beyond them is refused as without `wait`. Each ask costs
# O(places of its product) (position, seats ahead), twice a second per waiting client.
QUEUE_MAX = 1_000

Request = tuple[str, str, str]  # (owner, client id, request id), as `handles.Request`


@dataclass
class Place:
    key: ProductKey
    request: Request
    seats: int
    user: str
    host: str
    pid: int
    since: float  # wall time of the first ask (shown to administrators)
    expires: float  # monotonic: dropped unless asked again before


class CheckoutQueue:
    """The queues of one term, per product, in order of first ask."""

    def __init__(self, hold: float = QUEUE_HOLD, limit: int = QUEUE_MAX) -> None:
        self.hold = hold
        self.limit = limit
        self._queues: dict[ProductKey, OrderedDict[Request, Place]] = {}

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def __iter__(self) -> Iterator[Place]:
        for q in self._queues.values():
            yield from q.values()

    def lengths(self) -> dict[ProductKey, tuple[int, int]]:
        """(places, seats wanted) per product with a non-empty queue (the queue metric)."""
        return {
            key: (len(q), sum(p.seats for p in q.values())) for key, q in self._queues.items() if q
        }

    def get(self, key: ProductKey, request: Request) -> Place | None:
        q = self._queues.get(key)
        return q.get(request) if q else None

    def ask(
        self,
        key: ProductKey,
        request: Request,
        seats: int,
        now: float,
        wait: float,
        *,
        wall: float,
        user: str = "",
        host: str = "",
        pid: int = 0,
    ) -> Place | None:
        """Take a place at the tail, or refresh the place of `request` (its position and
        seats stay): kept until `now + min(hold, wait)`. None: the queue is full."""
        q = self._queues.setdefault(key, OrderedDict())
        place = q.get(request)
        if place is None:
            if len(q) >= self.limit:
                return None
            place = q[request] = Place(key, request, seats, user, host, pid, wall, now)
        place.expires = now + min(self.hold, wait)
        return place

    def position(self, key: ProductKey, request: Request) -> int:
        """1 for the head, ...; 0: not queued."""
        for i, r in enumerate(self._queues.get(key, ())):
            if r == request:
                return i + 1
        return 0

    def seats_ahead(self, key: ProductKey, request: Request) -> int | None:
        """The seats held back for the places ahead of `request`: every place's, when
        `request` is not queued; 0 at the head. None: `request` is queued but not at the
        head (it is not admitted whatever the seats)."""
        q = self._queues.get(key)
        if not q:
            return 0
        if request in q:
            return 0 if next(iter(q)) == request else None
        return sum(p.seats for p in q.values())

    def remove(self, key: ProductKey, request: Request) -> Place | None:
        q = self._queues.get(key)
        if not q:
            return None
        place = q.pop(request, None)
        if not q:
            del self._queues[key]
        return place

    def drop_expired(self, now: float) -> list[Place]:
        """Drop the places not asked for in time; the dropped ones."""
        dropped = []
        for key in list(self._queues):
            q = self._queues[key]
            for request in [r for r, p in q.items() if p.expires <= now]:
                dropped.append(q.pop(request))
            if not q:
                del self._queues[key]
        return dropped

    # -- the leader's steps: each appends its log events to `events`

    def enqueue(
        self,
        key: ProductKey,
        request: Request,
        seats: int,
        now: float,
        wait: float,
        *,
        wall: float,
        user: str,
        host: str,
        pid: int,
        events: list[dict[str, Any]],
    ) -> QueuedResult | None:
        """Take or refresh the place of `request` (`ask`): the queued result to answer with,
        its position. None: the queue is full; the checkout is refused as without `wait`."""
        new = self.get(key, request) is None
        place = self.ask(key, request, seats, now, wait, wall=wall, user=user, host=host, pid=pid)
        if place is None:
            return None
        position = self.position(key, request)
        if new:
            events.append(
                {
                    "event": "checkout_queued",
                    "license": key_str(key),
                    "seats": seats,
                    "client_id": request[1],
                    "rid": request[2],
                    "position": position,
                }
            )
        hold = min(self.hold, wait)
        return QueuedResult(True, position, hold, min(QUEUE_RETRY, hold))

    def unqueue(
        self, key: ProductKey, request: Request, why: str, events: list[dict[str, Any]]
    ) -> bool:
        """Drop the place of `request` if it has one (granted, refused); whether it had."""
        place = self.remove(key, request)
        if place is not None:
            events.append(_unqueued(place, why))
        return place is not None

    def expire(self, now: float, events: list[dict[str, Any]]) -> None:
        """Drop the places not asked for in time (`drop_expired`)."""
        for place in self.drop_expired(now):
            events.append(_unqueued(place, "not asked again in time"))

    def view(self, now: float) -> list[dict[str, Any]]:
        """`tmr admin queue`: every place, per product in queue order."""
        rows = []
        for key, q in self._queues.items():
            for i, p in enumerate(q.values()):
                owner, client_id, rid = p.request
                rows.append(
                    {
                        "firm": key[0],
                        "product": key[1],
                        "position": i + 1,
                        "seats": p.seats,
                        "client_id": client_id,
                        "request_id": rid,
                        "owner": owner,
                        "user": p.user,
                        "host": p.host,
                        "pid": p.pid,
                        "since": p.since,
                        "hold_left": max(0.0, p.expires - now),
                    }
                )
        return rows


def _unqueued(place: Place, why: str) -> dict[str, Any]:
    return {
        "event": "checkout_unqueued",
        "license": key_str(place.key),
        "client_id": place.request[1],
        "rid": place.request[2],
        "why": why,
    }


def head_of_line(
    key: ProductKey, used: int, seats: int, ahead: int | None, admitted: Admission
) -> Admission:
    """The head-of-line rule for a checkout `admitted` otherwise: NO_LICENSE_AVAILABLE for a
    queued checkout behind the head (`ahead` None), or for another one that the seats left
    after the queue's (`ahead`, `CheckoutQueue.seats_ahead`) do not cover. `used`: the seats
    in use; `seats`: what the checkout adds to them (its access mode's increase: 0 for a
    station_share within its station, the LQ for an exclusive one)."""
    eff = admitted[2]
    assert eff is not None
    lic = key_str(key)
    if ahead is None:
        return ErrorCode.NO_LICENSE_AVAILABLE, f"queued for {lic}, not at the head", eff
    if used + ahead + seats <= eff.quantity:
        return admitted
    message = (
        f"{used} of {eff.quantity} seats of {lic} in use and {ahead} held for queued "
        f"checkouts, {seats} requested"
    )
    return ErrorCode.NO_LICENSE_AVAILABLE, message, eff
