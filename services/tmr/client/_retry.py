"""Where and when the SDK sends a request again (internal to `tmr.client`; the benchmark's
load generator follows the same schedule).

One `RetrySchedule` lives for one request, from its first failed attempt until it is
answered. It knows nothing of sockets or clocks: the caller tells it what happened (an attempt
timed out, or the server answered ``NOT_ACTIVE``), and sends the same request again to
`index`, after the pause it returns, waiting up to `wait` for the reply.

- **Timeout**: the endpoint is noted as *silent*; the next endpoint is asked at once, and the
  attempt timeout grows by `ATTEMPT_GROWTH` up to `ATTEMPT_TIMEOUT_MAX`.
- **NOT_ACTIVE** from an endpoint while **every other one is silent** (a fail-over: the
  active server died, this one is the standby about to be promoted or a server taking over):
  the SDK *stays* with the server that answers and asks it again after a back-off
  (`NOT_ACTIVE_BACKOFF_MIN` doubling up to `NOT_ACTIVE_BACKOFF_MAX`), until its pauses add up
  to one more attempt on the silent endpoint (`wait`). Then it tries the silent one again, in
  case it was only slow. Only the pauses count. A ``NOT_ACTIVE`` that came `HELD` or more
  after the request was sent is a server taking over, which keeps a request up to its
  ``takeover_hold_ms`` (300 ms) and serves it the moment it is active: that one is asked
  again at once, and its time does not count, so a client waits at the server through a
  takeover (up to `HELD_MAX`) and is served at its end. Going back to a dead server at once cost
  a whole attempt timeout (0.75 s) after every ``NOT_ACTIVE``, however soon the other server
  became active. While it stays, an attempt waits at least `STAY_WAIT` (`attempt`): a server
  taking over reads nothing while it adopts a large table in one step (0.6 to 1.6 s at
  100,000 held handles), and its hold starts when it reads the request, so its answer can
  come well after the usual attempt timeout.
- **NOT_ACTIVE** with **one endpoint** (the VIP): a back-off after each (on a new
  connection: the VIP may have moved), except after a held one (`HELD` or more after the
  request was sent: the server behind the VIP is taking over), which is asked again at once
  on the same connection (`keeps_connection`), as in a stay, up to `HELD_MAX` of held
  answers.
- **NOT_ACTIVE** otherwise: the next endpoint at once, and a back-off whenever every endpoint
  said ``NOT_ACTIVE`` in a row (a takeover under way).
"""

from __future__ import annotations

ATTEMPT_GROWTH = 1.5
ATTEMPT_TIMEOUT_MAX = 2.0
NOT_ACTIVE_BACKOFF_MIN = 0.05
NOT_ACTIVE_BACKOFF_MAX = 0.5
# A NOT_ACTIVE this long after the request was sent was held by a server taking over (its
# takeover_hold_ms, 300 ms by default); a standby answers at once.
HELD = 0.1
# The longest a stay re-asks a server taking over at once (the sum of the held answers' times):
# a takeover at 100,000 held handles lasts about 1 s; one that lasts longer (a promoted server
# that cannot reach the backends while the silent one, only slow, still serves) is then
# treated as a standby, and the silent endpoint is tried again after the stay's pauses.
HELD_MAX = 3.0
# The shortest attempt on a server the schedule stays with (`RetrySchedule.attempt`). The
# server answered this request a moment ago, so it is up; if it is taking over, it may be in
# one long step (adopting 100,000 held handles: 0.6 s on an idle machine, 1.6 s on a loaded
# one) and then hold the request for its takeover_hold_ms before it answers. With the usual
# attempt (0.75 s) the client gave up on it and went back to the dead server for 1.125 s
# (kill -> first checkout 2.7 s where the promote ended at 1.7-1.8 s).
STAY_WAIT = ATTEMPT_TIMEOUT_MAX


def grown(wait: float) -> float:
    """The attempt timeout after `wait` ran out (a longer one than the maximum is kept)."""
    return min(wait * ATTEMPT_GROWTH, max(ATTEMPT_TIMEOUT_MAX, wait))


class RetrySchedule:
    """The retries of one request over `endpoints` endpoints (see the module docstring)."""

    __slots__ = (
        "_backoff",
        "_count",
        "_held",
        "_in_a_row",
        "_kept",
        "_silent",
        "_stayed",
        "index",
        "wait",
    )

    def __init__(self, endpoints: int, index: int, wait: float) -> None:
        if endpoints < 1 or not 0 <= index < endpoints:
            raise ValueError(f"endpoint {index} of {endpoints}")
        if not wait > 0:
            raise ValueError("the attempt timeout must be positive")
        self._count = endpoints
        self.index = index  # the endpoint to send to next
        self.wait = wait  # the timeout of the next attempt
        self._silent = 0  # endpoints (bits) whose latest attempt of this request timed out
        self._in_a_row = 0  # NOT_ACTIVE answers since the last timeout or stay
        self._backoff = NOT_ACTIVE_BACKOFF_MIN
        self._stayed: float | None = None  # staying with `index`: the pauses so far
        self._held = 0.0  # ... and the time of the held answers re-asked at once
        self._kept = False  # one endpoint: the last NOT_ACTIVE was held, re-asked at once

    @property
    def staying(self) -> bool:
        """Whether the schedule stays with the endpoint that answered NOT_ACTIVE."""
        return self._stayed is not None

    @property
    def keeps_connection(self) -> bool:
        """Whether the next attempt goes on the connection the last answer came on: while
        staying, and with one endpoint after a held NOT_ACTIVE (the server behind the VIP is
        taking over; a new connection would cost it a CURVE handshake and a ZAP request in
        the middle of its takeover)."""
        return self._stayed is not None or self._kept

    @property
    def attempt(self) -> float:
        """The timeout of the next attempt: `wait`, and at least `STAY_WAIT` while staying
        with a server that answers (see `STAY_WAIT`)."""
        return max(self.wait, STAY_WAIT) if self._stayed is not None else self.wait

    def timed_out(self) -> None:
        """The attempt on `index` got no reply within `wait`: the next endpoint, at once."""
        self._kept = False
        self._silent |= 1 << self.index
        self._stayed = None
        self._in_a_row = 0
        self.index = (self.index + 1) % self._count
        self.wait = grown(self.wait)

    def not_active(self, took: float = 0.0) -> float:
        """`index` answered NOT_ACTIVE, `took` seconds after the request was sent; the pause
        before the next attempt (on the endpoint `index` says then)."""
        self._kept = False
        bit = 1 << self.index
        self._silent &= ~bit
        others = ((1 << self._count) - 1) & ~bit
        if others and self._silent & others == others:
            if self._stayed is None:
                self._stayed = self._held = 0.0
                self._backoff = NOT_ACTIVE_BACKOFF_MIN
            if took >= HELD and self._held < HELD_MAX:
                self._held += took
                return 0.0  # taking over: ask again at once, the stay not used up
            left = self.wait - self._stayed
            if left > 1e-6:  # (the sum of the pauses in floating point)
                pause = self._back_off(left)
                self._stayed += pause
                return pause
            self._stayed = None  # paused as long as the silent one's attempt: try it
        elif not others and took >= HELD and self._held < HELD_MAX:
            # One endpoint (the VIP): the server behind it is taking over and keeps the
            # request again, serving it the moment it is active.
            self._held += took
            self._kept = True
            return 0.0
        self.index = (self.index + 1) % self._count
        self._in_a_row += 1
        if self._in_a_row % self._count == 0:
            return self._back_off(float("inf"))
        return 0.0

    def _back_off(self, at_most: float) -> float:
        pause = min(self._backoff, at_most)
        self._backoff = min(self._backoff * 2, NOT_ACTIVE_BACKOFF_MAX)
        return pause
