"""Client requests that reach a server while it takes over (or resumes from a pause): held
until it is active and confirmed.

See docs/design.md §5 (Takeover). Once keepalived has moved the VIP (or a client has turned to
the other endpoint), the requests arrive while the new server still takes over: it waits for
the old leader to fall silent, prepares, and adopts the backends' tables (0.6 s at 100,000
held handles). Answered NOT_ACTIVE at once, each client backs off (the SDK: 0.05 s doubling
up to 0.5 s on one endpoint) or goes back to the dead server and waits out an attempt timeout
(two endpoints), so its first answer after the takeover comes up to one such step late.

Parked instead, a request (checkout, heartbeat, release, crypt) is handed to the leader again
the moment the takeover ends, through the very path a request arriving then takes:
- the server turns ACTIVE and has confirmed its leadership: served (a checkout is granted in
  the first entries of the term). A server whose own takeover step took longer than two probe
  intervals (the adoption of 100,000 handles: 0.6 s) counts that step as a pause and first
  confirms with a probe round; parked requests wait for that too (`Leader._unready`);
- the takeover ends otherwise (yield, fence, demote): answered as any request in that role
  (NOT_ACTIVE);
- it has waited `hold` seconds: answered NOT_ACTIVE, as before (the default 0.3 s stays below
  the SDK's first attempt timeout, 0.5 s, so the client gets that answer, not a timeout).

The same holds after a pause (SIGSTOP, a frozen VM): an active server reads the requests
queued meanwhile before any tick, and until its first probes after the pause confirm it they
would each be answered NOT_ACTIVE (`Leader._refuse_unconfirmed`): parked instead, they are
served once confirmed, NOT_ACTIVE if fenced or after `hold` (`Leader._waits`).

Parking only delays when a request reaches the leader's decision: nothing is decided for it
while it waits, so it changes no seat count and no reply's content. At most `limit` requests
wait, holding at most `limit_bytes` of request data (crypt inputs); more are answered
NOT_ACTIVE at once, so the memory is bounded whatever the clients send.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tmr.replication.effects import Effects

TAKEOVER_HOLD = 0.3  # seconds a request may wait for the takeover's end (0: never parks)
PARK_LIMIT = 20_000  # requests parked at once (10,000 clients each with a request and a heartbeat)
# Bytes of request data (a crypt call's input, up to 64 KiB each) parked at once
PARK_BYTES = 32 << 20


@dataclass(frozen=True, slots=True)
class Parked:
    """One request: when it arrived, whom to answer, and how to hand it to the leader again
    (`replay(now)` is the leader's own entry point with the request's arguments bound)."""

    at: float
    token: Any
    rid: str
    replay: Callable[[float], Effects]
    size: int = 0  # the bytes of data it keeps alive (a crypt call's input)


class Parking:
    """The requests parked during one takeover (or after one pause), oldest first."""

    def __init__(
        self, hold: float = TAKEOVER_HOLD, limit: int = PARK_LIMIT, limit_bytes: int = PARK_BYTES
    ) -> None:
        if hold < 0 or limit < 0 or limit_bytes < 0:
            raise ValueError("hold and limits must not be negative")
        self.hold = hold
        self.limit = limit
        self.limit_bytes = limit_bytes
        self._bytes = 0
        # The parked requests, oldest first. Read by the leader (a deque's truth value costs
        # nothing: it is tested on every backend reply); changed only by the methods below.
        self.waiting: deque[Parked] = deque()
        # Requests answered NOT_ACTIVE at once because `limit` were parked (reported with
        # the takeover's `parked_answered` event, then counted again from 0)
        self.turned_away = 0

    def __len__(self) -> int:
        return len(self.waiting)

    def park(self, request: Parked) -> bool:
        """Keep `request` (True), or False when parking is off or full: answer it now."""
        if self.hold <= 0:
            return False
        if len(self.waiting) >= self.limit or self._bytes + request.size > self.limit_bytes:
            self.turned_away += 1
            return False
        self.waiting.append(request)
        self._bytes += request.size
        return True

    def overdue(self, now: float) -> list[Parked]:
        """Take the requests that have waited `hold` seconds or more (they arrived in order,
        so these are at the front)."""
        out: list[Parked] = []
        parked = self.waiting
        while parked and now - parked[0].at >= self.hold:
            out.append(parked.popleft())
            self._bytes -= out[-1].size
        return out

    def take_all(self) -> list[Parked]:
        out = list(self.waiting)
        self.waiting.clear()
        self._bytes = 0
        return out
