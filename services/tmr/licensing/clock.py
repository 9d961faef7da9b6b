"""Clock-rollback guard: a durable high-water mark of the wall clock.

A backend must not let an expiring license live longer by setting the clock back. The guard
remembers the highest wall time it has seen (on disk, fsync + atomic rename). ``now()``
returns that trusted time, which never goes backwards, and sets ``rolled_back`` while the
wall clock is more than ``tolerance`` seconds behind it; expiring licenses are then refused
(CLOCK_ROLLBACK) and non-expiring ones keep working. The backend also raises the mark to
the trio's replicated time floor (`raise_to`), so deleting the state file does not reset the
guard once the backend has rejoined its trio.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

from tmr.errors import ConfigError
from tmr.licensing.fileio import write_atomic
from tmr.licensing.model import LicenseError, LicenseReason


class ClockGuard:
    def __init__(
        self,
        path: Path,
        *,
        tolerance: float = 300.0,
        persist_interval: float | None = None,
        time_source: Callable[[], float] = time.time,
    ) -> None:
        """``persist_interval`` (< tolerance; default: 60 s or half the tolerance) bounds the
        disk writes: the high-water mark is written when it has moved that far since the last
        write, so a crash loses less than the tolerance. ``time_source`` is for tests."""
        if persist_interval is None:
            persist_interval = min(60.0, tolerance / 2)
        if not 0 <= persist_interval < tolerance:
            raise ValueError("need 0 <= persist_interval < tolerance")
        self.path = path
        self.tolerance = tolerance
        self._persist_interval = persist_interval
        self._time = time_source
        self._persisted = self._load()
        self._high = self._persisted
        self.rolled_back = False

    @property
    def high_water(self) -> float:
        return self._high

    def now(self) -> float:
        """Trusted time: the highest wall time seen. Updates ``rolled_back``."""
        wall = float(self._time())
        if wall > self._high:
            self._high = wall
            if wall >= self._persisted + self._persist_interval:
                self._persist(wall)
        self.rolled_back = wall < self._high - self.tolerance
        return self._high

    def raise_to(self, trusted: float) -> None:
        """Raise the high-water mark to a trusted time from elsewhere: the trio's replicated
        time floor (a time at least two backends' clocks reached). A wall clock more than
        ``tolerance`` behind it then counts as set back."""
        if trusted > self._high:
            self._high = trusted
            if trusted >= self._persisted + self._persist_interval:
                self._persist(trusted)

    def check_expiry(self, expires: float | None) -> None:
        """Raise LicenseError (EXPIRED or CLOCK_ROLLBACK) if a license with this expiry
        (None: never) must not be used now."""
        if expires is None:
            return
        now = self.now()
        if self.rolled_back:
            raise LicenseError(
                LicenseReason.CLOCK_ROLLBACK,
                "the system clock was set back; expiring licenses are refused",
            )
        if now >= expires:
            raise LicenseError(LicenseReason.EXPIRED, f"expired at unix time {expires:.0f}")

    def _load(self) -> float:
        try:
            text = self.path.read_text(encoding="ascii")
        except FileNotFoundError:
            return 0.0
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read clock state {self.path}: {exc}") from None
        try:
            value = json.loads(text)["highest_time"]
        except (ValueError, KeyError, TypeError):
            value = None
        if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
            raise ConfigError(
                f"clock state {self.path} is corrupt; check the clock, then delete it"
            )
        return float(value)

    def _persist(self, value: float) -> None:
        write_atomic(self.path, json.dumps({"highest_time": value}).encode("ascii") + b"\n")
        self._persisted = value
