"""Refused checkouts, as the TMR server saw them (docs/design.md §7.6, Denials).

Two records:

- `DenialRecorder`: every refusal (`DENIAL_CODES`) with who asked (the CURVE key of the
  connection, and the user, host and pid the client gave), what (license, seats), why (code,
  rule text or message), which server and when. The poll loop records it in a bounded
  buffer, where the same refusal repeated (the same client asking again and again: every
  field but the time) is one row with a count and the time of the last, so a flood costs rows
  per refusing client, not per refusal; and, four times a second, sends the buffer to every
  up backend that keeps denial records (`Denials`, fire and forget, at most `MAX_PER_FLUSH`
  rows each time: 4096 a second). Small batches often rather than one large one a second: a
  backend records a batch in its poll loop (about 15 ms for 1024 rows on a loaded 2-core
  host), and the replication requests queued behind it wait that long. The backends keep them
  (schema 6, `denial_retention`) and the report reads them back from all of them,
  deduplicated by id: the denial report covers both servers and survives a failover.
  The newest `RECENT` refusals also stay in memory for `tmr admin denials` and WebAdmin.
  Best effort: a refusal still in the buffer when the server dies, or sent while every
  backend was down, is lost; beyond `MAX_PENDING` buffered rows, new ones (not repeats of a
  buffered one) are dropped (counted) rather than grow memory.
- `DenialLog`: the older per-server counts of ``NO_LICENSE_AVAILABLE`` per license and
  minute in ``state_dir/denials.json`` (``denial_retention_days``), kept for the usage
  report's ``denials`` column when no backend keeps denial records (before schema 6).
  Thread-safe: the poll loop records, the usage worker reads and writes the file.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections import OrderedDict, deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tmr.errors import ErrorCode
from tmr.logs import log
from tmr.replication.messages import DenialRow
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


# The answers to a checkout recorded as refusals. Not: BAD_REQUEST, UNAUTHORIZED (a malformed or
# unauthenticated request, not a refused license), NOT_ACTIVE (the standby: the SDK asks the
# other server), UNKNOWN_HANDLE (a reused request id), and a queued answer (`wait`).
DENIAL_CODES = frozenset(
    {
        ErrorCode.NO_LICENSE_AVAILABLE,
        ErrorCode.POLICY_DENIED,
        ErrorCode.QUORUM_LOST,
        ErrorCode.LICENSE_EXPIRED,
        ErrorCode.UNKNOWN_LICENSE,
    }
)
FLUSH_INTERVAL = 0.25  # seconds between two sends of the buffer to the backends
MAX_PER_FLUSH = 1024  # rows sent per flush (one `Denials` message per backend)
MAX_PENDING = 20_000  # rows buffered; beyond, new refusals are dropped (and counted)
RECENT = 1000  # refusals kept in memory for `tmr admin denials` and WebAdmin
MAX_RULE = 1024  # characters of a rule text or message kept


def denial_json(r: DenialRow) -> dict[str, Any]:
    return {**r._asdict(), "license": f"{r.firm}:{r.product}"}


class DenialRecorder:
    """This server's refusals: a bounded buffer for the backends, the recent ones in memory.
    Used by the poll loop only (not thread-safe)."""

    def __init__(
        self, server: str, *, max_pending: int = MAX_PENDING, recent: int = RECENT
    ) -> None:
        self.server = server
        # ids unique across the servers and their restarts: server, boot, counter
        self._prefix = f"{server}/{secrets.token_hex(4)}/"
        self._n = 0
        self.max_pending = max_pending
        # what a refusal is (every field but id and time) -> its first row, count, last time
        self.pending: OrderedDict[tuple[Any, ...], tuple[DenialRow, int, float]] = OrderedDict()
        self.recent: deque[DenialRow] = deque(maxlen=recent)
        self.recorded = 0
        self.dropped = 0  # buffer full: not sent to the backends
        self.sent_batches = 0

    def record(
        self,
        at: float,
        code: str,
        firm: int,
        product: int,
        seats: int,
        *,
        owner: str = "",
        user: str = "",
        host: str = "",
        pid: int = 0,
        rule: str = "",
    ) -> DenialRow:
        self._n += 1
        row = DenialRow(
            f"{self._prefix}{self._n}",
            at,
            self.server,
            code,
            firm,
            product,
            seats,
            owner,
            user,
            host,
            pid,
            rule[:MAX_RULE],
            1,
            at,
        )
        self.recorded += 1
        self.recent.append(row)
        what = row[2:12]
        held = self.pending.get(what)
        if held is not None:
            self.pending[what] = (held[0], held[1] + 1, at)
        elif len(self.pending) < self.max_pending:
            self.pending[what] = (row, 1, at)
        else:
            self.dropped += 1
        return row

    def take(self, limit: int = MAX_PER_FLUSH) -> list[DenialRow]:
        """Up to ``limit`` buffered rows, oldest first (removed from the buffer), each with
        the number of times it was refused and the time of the last."""
        out: list[DenialRow] = []
        while self.pending and len(out) < limit:
            _, (first, count, last) = self.pending.popitem(last=False)
            out.append(first._replace(times=count, last=max(last, first.at)))
        return out

    def recent_view(
        self, limit: int = RECENT, product: tuple[int | None, int] | None = None
    ) -> list[dict[str, Any]]:
        """The newest refusals first (at most ``limit``), of ``product`` if given."""
        out: list[dict[str, Any]] = []
        for r in reversed(self.recent):
            if product is not None and (
                r.product != product[1] or (product[0] is not None and r.firm != product[0])
            ):
                continue
            out.append(denial_json(r))
            if len(out) >= limit:
                break
        return out


def batches(rows: list[DenialRow], size: int) -> Iterable[tuple[DenialRow, ...]]:
    for i in range(0, len(rows), size):
        yield tuple(rows[i : i + size])
