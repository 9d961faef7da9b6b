"""The lease clock: when each handle expires, decided by the leader alone.

See docs/design.md §5 (Leases). A grant starts a lease; a heartbeat extends it (heartbeats
are not replicated); at takeover every adopted handle's lease restarts, with the margin a
deposed leader may have used to confirm a heartbeat. `expired` is scanned every
`EXPIRY_SCAN` seconds: an expiry may be that late, never early.
"""

from __future__ import annotations

from tmr.replication.productlog import Product

EXPIRY_SCAN = 0.25  # seconds between lease scans (expiry may be this late, never early)


class Leases:
    def __init__(self, lease: float, backend_timeout: float) -> None:
        self.lease = lease
        self._margin = backend_timeout
        self._until: dict[str, float] = {}
        self._next_scan = 0.0

    def __contains__(self, handle: object) -> bool:
        return handle in self._until

    def clear(self) -> None:
        """A new term: the handles are adopted again (the scan clock runs on)."""
        self._until.clear()

    def grant(self, handle: str, now: float) -> None:
        self._until[handle] = now + self.lease

    def restart(self, handle: str, now: float) -> None:
        """An adopted handle: its lease restarts at takeover, plus the margin a deposed
        leader may have used to confirm a heartbeat (see `extend`)."""
        self._until[handle] = now + self.lease + self._margin

    def extend(self, handle: str, now: float) -> None:
        """A heartbeat: the lease runs `lease` from now (never shorter than it was)."""
        self._until[handle] = max(self._until.get(handle, now), now + self.lease)

    def drop(self, handle: str) -> None:
        self._until.pop(handle, None)

    def left(self, handle: str, now: float) -> float:
        return max(0.0, self._until.get(handle, now) - now)

    def scan_due(self, now: float) -> bool:
        """True once every EXPIRY_SCAN seconds (then the caller scans)."""
        if now < self._next_scan:
            return False
        self._next_scan = now + EXPIRY_SCAN
        return True

    def expired(self, p: Product, now: float) -> list[str]:
        """Handles of `p` whose lease ran out. A grant still waiting for its commit is not
        expired under its waiting client."""
        return [
            h
            for h in p.handles
            if self._until.get(h, now) < now and p.grant_seq.get(h, 0) <= p.committed
        ]
