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

Then the time is moved onto a grid of the wall clock (`on_grid`): to the next multiple of
`GRID` seconds of `time.time()` (a twentieth of the interval if that is less), at most one
step later. The clients of a site share the wall clock (NTP keeps hosts within milliseconds
of each other), so their heartbeats reach the server in a few short bursts a second instead
of spread evenly: one wake-up of the server, of ZeroMQ's I/O thread and of each client
process for many heartbeats instead of a few. Measured on the 2-core machine
(`bench.heartbeat_cost --clients 10000`, three rounds of pairs, docs/performance.md): the
server's CPU per heartbeat 90-108 us spread, 61-71 us on the grid. A host whose clock is off
still heartbeats on time, only not in step with the others.
"""

from __future__ import annotations

import math
import time

# An answer this long after its heartbeat was sent waited for a failover or a paused server
# (answers normally take milliseconds; the server's idle hold adds at most 16 ms).
LATE = 1.0
# The wall clock's step that heartbeats are sent on (seconds; at most a twentieth of the
# interval): ten bursts a second.
GRID = 0.1


def next_heartbeat(
    sent: float, answered: float, interval: float, wall_offset: float | None = None
) -> float:
    """The time (`time.monotonic()`) of the next heartbeat of a handle whose last one was sent
    at `sent` and answered at `answered` (see the module docstring). `wall_offset`:
    `time.time() - time.monotonic()`, read now if not given."""
    if not interval > 0:
        raise ValueError("the heartbeat interval must be positive")
    if answered - sent < LATE:
        return on_grid(answered + interval, interval, wall_offset)
    steps = max(1, math.floor((answered - sent) / interval) + 1)
    due = sent + steps * interval
    if due - answered < interval / 4:  # (also: rounded down onto the answer)
        due += interval
    return on_grid(due, interval, wall_offset)


def on_grid(due: float, interval: float, wall_offset: float | None = None) -> float:
    """`due` (`time.monotonic()`) moved to the next step of the wall clock's grid: the first
    time at or after it (less a thousandth of a step) whose `time.time()` is a multiple of
    `grid_step(interval)`."""
    step = grid_step(interval)
    offset = time.time() - time.monotonic() if wall_offset is None else wall_offset
    # A time on the grid stays on it (up to a thousandth of a step early: the offset read
    # now differs by microseconds from the one that put it there, and floats round).
    return math.ceil((due + offset) / step - 1e-3) * step - offset


def grid_step(interval: float) -> float:
    """The grid's step for heartbeats every `interval` s: `GRID`, or a twentieth of the
    interval if that is less (the next heartbeat moves by at most that)."""
    if not interval > 0:
        raise ValueError("the heartbeat interval must be positive")
    return min(GRID, interval / 20.0)
