"""Refused checkouts (``NO_LICENSE_AVAILABLE``) per license, as the TMR server saw them.

Denials change no seat state, so they are not replicated: each TMR server counts the ones it
answered, in one-minute buckets, and keeps them in ``state_dir/denials.json`` for
``denial_retention_days``. A report through the active server therefore includes the denials
that this server answered (the other server's, from before a fail-over, stay in its file).
Thread-safe: the poll loop records, the usage worker reads and writes the file.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from tmr.logs import log
from tmr.replication.types import ProductKey

BUCKET = 60.0
MAX_BUCKETS = 500_000
FILE_NAME = "denials.json"


class DenialLog:
    def __init__(self, path: Path | None, retention: float) -> None:
        self.path = path
        self.retention = retention
        self._lock = threading.Lock()
        self._counts: dict[tuple[int, int, int], int] = {}  # (firm, product, minute) -> n
        self._dirty = False

    def load(self) -> None:
        """Read the file if there is one; a damaged file is logged and ignored."""
        if self.path is None or not self.path.exists():
            return
        try:
            doc = json.loads(self.path.read_text())
            counts = {
                (int(f), int(p), int(m)): int(n) for f, p, m, n in doc["counts"] if int(n) > 0
            }
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log("denials_unreadable", level="warning", path=str(self.path), error=str(exc))
            return
        with self._lock:
            self._counts = counts

    def record(self, key: ProductKey, at: float, n: int = 1) -> None:
        bucket = (key[0], key[1], int(at // BUCKET))
        with self._lock:
            self._counts[bucket] = self._counts.get(bucket, 0) + n
            self._dirty = True

    def counts(self, since: float, until: float) -> dict[ProductKey, int]:
        """Denials per license in the buckets that overlap [since, until]."""
        lo, hi = int(since // BUCKET), int(until // BUCKET)
        out: dict[ProductKey, int] = {}
        with self._lock:
            for (firm, product, minute), n in self._counts.items():
                if lo <= minute <= hi:
                    out[(firm, product)] = out.get((firm, product), 0) + n
        return out

    def totals(self) -> dict[ProductKey, int]:
        with self._lock:
            out: dict[ProductKey, int] = {}
            for (firm, product, _), n in self._counts.items():
                out[(firm, product)] = out.get((firm, product), 0) + n
            return out

    def prune(self, now: float) -> None:
        floor = int((now - self.retention) // BUCKET)
        with self._lock:
            old = [k for k in self._counts if k[2] < floor]
            for k in old:
                del self._counts[k]
            if len(self._counts) > MAX_BUCKETS:
                for k in sorted(self._counts, key=lambda k: k[2])[
                    : len(self._counts) - MAX_BUCKETS
                ]:
                    del self._counts[k]
            if old:
                self._dirty = True

    def flush(self, now: float) -> bool:
        """Prune and write the file if anything changed; True if it was written."""
        self.prune(now)
        with self._lock:
            if not self._dirty or self.path is None:
                return False
            doc: dict[str, Any] = {
                "version": 1,
                "bucket_seconds": BUCKET,
                "counts": [[f, p, m, n] for (f, p, m), n in sorted(self._counts.items())],
            }
            self._dirty = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(doc, separators=(",", ":")))
            os.replace(tmp, self.path)
        except OSError as exc:
            with self._lock:
                self._dirty = True
            log("denials_write_failed", level="warning", path=str(self.path), error=str(exc))
            return False
        return True
