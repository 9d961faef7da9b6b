"""When a handle's next heartbeat is due (internal to `tmr.client`; the benchmark's load
generator follows the same rule).

Normally one interval after the last heartbeat was answered. A busy server answers the
heartbeats that arrive within a few milliseconds of each other together (its idle hold), so
their clients heartbeat together again and share its wake-ups: that grouping is cheap for
the server and stays.

After a failover or a paused server the answer comes seconds late, and for every client
alike: the requests that waited are answered in the same moment (a takeover's end, a
server's resume). Counted from that answer, all of those clients would heartbeat in the same
second ever after: 10,000 clients whose load was spread over the interval came as one burst
per interval (37-39 % of a core for a second, then 0-1 %, where the load had been an even
9-11 %; `bench.heartbeat_cost --clients 10000 --pause 5`). So an answer that came `LATE` or
more after its send is counted from the send: the next heartbeat is the first one
``sent + k * interval`` (k >= 1) at least a quarter interval after the answer, and each
client keeps the phase it had; never one at once (the lease was just renewed), and never more
than 1.25 intervals after the answer (well inside the lease of three intervals).
"""

from __future__ import annotations

import math

# An answer this long after its heartbeat was sent waited for a failover or a paused server
# (answers normally take milliseconds; the server's idle hold adds at most 16 ms).
LATE = 1.0


def next_heartbeat(sent: float, answered: float, interval: float) -> float:
    """The time (`time.monotonic()`) of the next heartbeat of a handle whose last one was sent
    at `sent` and answered at `answered` (see the module docstring)."""
    if not interval > 0:
        raise ValueError("the heartbeat interval must be positive")
    if answered - sent < LATE:
        return answered + interval
    steps = max(1, math.floor((answered - sent) / interval) + 1)
    due = sent + steps * interval
    if due - answered < interval / 4:  # (also: rounded down onto the answer)
        due += interval
    return due
