"""Denied ZAP (CURVE) handshakes: logged at most once per peer key per interval, all counted.

Anyone who can reach a CURVE socket can make handshakes with keys that are not allowed, as
fast as the network lets them: one log line per refusal would let them flood the journal (and
push the important lines out of journald's rate limit). `ZapDenials.denied()` is called for
every refusal; it counts it (``total``, and the optional ``on_denied`` hook feeds a metric) and
writes one warning per key and interval, saying how many were not logged since the last one,
and at most ``max_lines`` per interval over all keys (fresh random keys are free to make).
Thread-safe: pyzmq's authenticator calls it from its own thread.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from tmr.logs import log

DENIAL_LOG_INTERVAL = 60.0  # seconds between two lines for the same key
MAX_TRACKED_KEYS = 4096  # keys remembered; the oldest is forgotten first (memory bound)
MAX_LINES_PER_INTERVAL = 100  # over all keys: fresh random keys cannot flood the log either


class ZapDenials:
    def __init__(
        self,
        event: str,
        *,
        interval: float = DENIAL_LOG_INTERVAL,
        max_keys: int = MAX_TRACKED_KEYS,
        max_lines: int = MAX_LINES_PER_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        on_denied: Callable[[], None] | None = None,
    ) -> None:
        self.event = event
        self.interval = interval
        self.max_keys = max_keys
        self.max_lines = max_lines
        self.clock = clock
        self.on_denied = on_denied
        self.total = 0
        self._lock = threading.Lock()
        # key -> (time of its last line, refusals not logged since)
        self._seen: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self._window = (-interval, 0)  # (start of the current interval, lines written in it)

    def denied(self, key: str, **fields: Any) -> bool:
        """Count one refused handshake of ``key``; True if it was logged."""
        now = self.clock()
        with self._lock:
            self.total += 1
            last = self._seen.get(key)
            if now - self._window[0] >= self.interval:
                self._window = (now, 0)
            recent = last is not None and now - last[0] < self.interval
            if recent or self._window[1] >= self.max_lines:
                first = last[0] if last is not None else now - self.interval  # logged next time
                self._seen[key] = (first, (last[1] if last is not None else 0) + 1)
                self._seen.move_to_end(key)
                logged, suppressed = False, 0
            else:
                self._window = (self._window[0], self._window[1] + 1)
                suppressed = last[1] if last is not None else 0
                self._seen[key] = (now, 0)
                self._seen.move_to_end(key)
                logged = True
            while len(self._seen) > self.max_keys:
                self._seen.popitem(last=False)
        if self.on_denied is not None:
            self.on_denied()
        if logged:
            log(self.event, level="warning", key=key, suppressed=suppressed, **fields)
        return logged
