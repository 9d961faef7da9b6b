"""The lease clock: when each handle expires, decided by the leader alone.

See docs/design.md §5 (Leases). A grant starts a lease; a heartbeat extends it (heartbeats
are not replicated); at takeover every adopted handle's lease restarts, with the margin a
deposed leader may have used to confirm a heartbeat. `due` is called every `EXPIRY_SCAN`
seconds: an expiry may be that late, never early.

A scan costs the leases that ran out, not a walk over every held handle (issue 17: at 100,000
held handles a walk took 40 ms, four times a second). Each lease has one entry in a heap, at
a time no later than its end: a grant or a restart pushes one; a heartbeat only moves the end
(no push, so heartbeats do not grow the heap); an entry that comes due for a lease that was
extended since is pushed again at the new end.
"""

from __future__ import annotations

import heapq

EXPIRY_SCAN = 0.25  # seconds between lease scans (expiry may be this late, never early)
# The heap keeps the entries of released handles until they come up; it is rebuilt from the
# live ones when those are fewer than half of it (amortised O(1) per release).
COMPACT_MIN = 1024


class Leases:
    def __init__(self, lease: float, backend_timeout: float) -> None:
        self.lease = lease
        self._margin = backend_timeout
        self._until: dict[str, float] = {}
        # (time, handle): the live entry of a handle is the one at _armed[handle]; others
        # (of a handle dropped or armed again since) are skipped when they come up.
        self._heap: list[tuple[float, str]] = []
        self._armed: dict[str, float] = {}
        self._next_scan = 0.0

    def __len__(self) -> int:
        return len(self._until)

    def __contains__(self, handle: object) -> bool:
        return handle in self._until

    def clear(self) -> None:
        """A new term: the handles are adopted again (the scan clock runs on)."""
        self._until.clear()
        self._heap.clear()
        self._armed.clear()

    def _arm(self, handle: str, at: float) -> None:
        self._armed[handle] = at
        heapq.heappush(self._heap, (at, handle))

    def grant(self, handle: str, now: float) -> None:
        until = now + self.lease  # one float object for both tables and the heap entry
        self._until[handle] = until
        self._arm(handle, until)

    def restart(self, handle: str, now: float) -> None:
        """An adopted handle: its lease restarts at takeover, plus the margin a deposed
        leader may have used to confirm a heartbeat (see `extend`)."""
        until = now + self.lease + self._margin
        self._until[handle] = until
        self._arm(handle, until)

    def restart_all(self, handles: list[str], now: float) -> None:
        """`restart` of many handles (a takeover's): one heap rebuild, not a push each."""
        until = now + self.lease + self._margin
        self._until.update(dict.fromkeys(handles, until))
        self._armed.update(dict.fromkeys(handles, until))
        self._heap.extend([(until, h) for h in handles])
        heapq.heapify(self._heap)

    def extend(self, handle: str, now: float) -> None:
        """A heartbeat: the lease runs `lease` from now (never shorter than it was)."""
        until = max(self._until.get(handle, now), now + self.lease)
        self._until[handle] = until
        if handle not in self._armed:  # a lease it did not have (else its entry comes due
            self._arm(handle, until)  # earlier and is armed again at the new end)

    def drop(self, handle: str) -> None:
        self._until.pop(handle, None)
        self._armed.pop(handle, None)
        if len(self._heap) > 2 * len(self._armed) + COMPACT_MIN:
            self._heap = [(at, h) for h, at in self._armed.items()]
            heapq.heapify(self._heap)

    def left(self, handle: str, now: float) -> float:
        return max(0.0, self._until.get(handle, now) - now)

    def scan_due(self, now: float) -> bool:
        """True once every EXPIRY_SCAN seconds (then the caller scans)."""
        if now < self._next_scan:
            return False
        self._next_scan = now + EXPIRY_SCAN
        return True

    def due(self, now: float) -> list[str]:
        """The handles whose lease ran out before `now`, each once, oldest first. The caller
        expires them, or calls `again` for one that must not expire yet."""
        out: list[str] = []
        heap = self._heap
        while heap and heap[0][0] < now:
            at, handle = heapq.heappop(heap)
            if self._armed.get(handle) != at:
                continue  # dropped, or armed again since
            until = self._until[handle]
            if until < now:
                del self._armed[handle]
                out.append(handle)
            else:  # extended by heartbeats since it was armed
                self._arm(handle, until)
        return out

    def again(self, handle: str, now: float) -> None:
        """A lease `due` returned that is not expired now (a grant still waiting for its
        commit is not expired under its waiting client): looked at again at the next scan."""
        if handle in self._until and handle not in self._armed:
            self._arm(handle, min(self._until[handle], now))
