"""The backend's side of `tmr report usage`: read the usage record for a window.

The usage table is written by `tmr.backend.store.SqliteStore` (one row per committed grant,
release and expiry, newest ``usage_retention`` rows kept). This module only reads it, on its
own read-only connection (WAL lets it read while the store writes), so it never touches the
acceptor's transactions.
"""

from __future__ import annotations

import sqlite3
from contextlib import suppress
from pathlib import Path

from tmr.protocol import peer_api
from tmr.replication.messages import (
    DenialQuery,
    DenialRecords,
    DenialRow,
    UsageQuery,
    UsageRecords,
    UsageRow,
)

# Rows of the window, plus grants made before it whose handle was not yet released or
# expired when it opened (they hold seats inside the window).
_WINDOW_SQL = """
SELECT at, event, firm, product, handle, seats, client_id FROM usage
WHERE at <= :until
  AND (at >= :since
       OR (event = 'granted' AND handle NOT IN (
             SELECT handle FROM usage WHERE event != 'granted' AND at < :since)))
ORDER BY id
LIMIT :limit
"""

# The same rows from record id ``after`` on (a chunked query reads them lazily, as far as
# its chunk goes: the scan follows the primary key).
_CHUNK_SQL = """
SELECT id, at, event, firm, product, handle, seats, client_id FROM usage
WHERE id > :after
  AND at <= :until
  AND (at >= :since
       OR (event = 'granted' AND handle NOT IN (
             SELECT handle FROM usage WHERE event != 'granted' AND at < :since)))
ORDER BY id
"""


# The denial rows of a window from record id ``after`` on (schema 6; `SqliteStore.add_denials`).
_DENIAL_SQL = """
SELECT id, uid, at, server, code, firm, product, seats, owner, user, host, pid, rule, times,
       last
FROM denials WHERE id > :after AND at >= :since AND at <= :until ORDER BY id
"""


class UsageReader:
    """Read-only access to one backend database's usage table."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            uri = f"file:{self.db_path}?mode=ro"
            self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            with suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    def query(self, q: UsageQuery, name: str) -> UsageRecords:
        """The rows for ``q`` (one chunk of them if ``q`` is chunked); raises `sqlite3.Error`
        if the database cannot be read."""
        if q.chunk_bytes:
            return self._chunk(q, name)
        try:
            conn = self._connection()
            params = {"since": q.since, "until": q.until, "limit": q.limit + 1}
            rows = conn.execute(_WINDOW_SQL, params).fetchall()
            first_id, oldest = conn.execute("SELECT MIN(id), MIN(at) FROM usage").fetchone()
        except sqlite3.Error:
            self.close()  # reopen next time (e.g. the file was replaced)
            raise
        truncated = len(rows) > q.limit
        if first_id is None or first_id <= 1:
            oldest = None  # row ids start at 1: nothing was ever trimmed
        return UsageRecords(
            q.mid,
            name,
            tuple(UsageRow(*r) for r in rows[: q.limit]),
            None if oldest is None else float(oldest),
            truncated,
        )

    def _chunk(self, q: UsageQuery, name: str) -> UsageRecords:
        """The rows after record id ``q.after`` that fit in ``q.chunk_bytes`` encoded (at least
        one), with the id to continue from (None: no row is left). The first chunk (``after``
        0) also says how far back the record goes; later ones leave ``oldest`` None."""
        budget = q.chunk_bytes - peer_api.USAGE_CHUNK_OVERHEAD - len(name.encode())
        rows: list[UsageRow] = []
        last: int | None = None
        oldest: float | None = None
        try:
            conn = self._connection()
            params = {"since": q.since, "until": q.until, "after": q.after}
            cur = conn.execute(_CHUNK_SQL, params)
            try:
                for rid, *fields in cur:
                    row = UsageRow(*fields)
                    budget -= peer_api.usage_row_size(row)
                    if budget < 0 and rows:
                        break  # the row is read again by the next chunk
                    rows.append(row)
                    last = rid
                else:
                    last = None  # every row was read
            finally:
                cur.close()
            if q.after == 0:
                first_id, first_at = conn.execute("SELECT MIN(id), MIN(at) FROM usage").fetchone()
                if first_id is not None and first_id > 1:  # ids start at 1: nothing trimmed
                    oldest = float(first_at)
        except sqlite3.Error:
            self.close()
            raise
        return UsageRecords(q.mid, name, tuple(rows), oldest, False, last)

    def denials(self, q: DenialQuery, name: str) -> DenialRecords:
        """The denial rows of ``q``'s window after record id ``q.after`` that fit in
        ``q.chunk_bytes`` encoded (at least one), and the id to continue from (None: none
        left). The first chunk says how far back the record goes (``oldest``)."""
        budget = q.chunk_bytes - peer_api.DENIAL_CHUNK_OVERHEAD - len(name.encode())
        rows: list[DenialRow] = []
        last: int | None = None
        oldest: float | None = None
        try:
            conn = self._connection()
            params = {"since": q.since, "until": q.until, "after": q.after}
            cur = conn.execute(_DENIAL_SQL, params)
            try:
                for rid, *fields in cur:
                    row = DenialRow(*fields)
                    budget -= peer_api.denial_row_size(row)
                    if (budget < 0 and rows) or len(rows) >= peer_api.MAX_DENIAL_ROWS:
                        break  # read again by the next chunk
                    rows.append(row)
                    last = rid
                else:
                    last = None
            finally:
                cur.close()
            if q.after == 0:
                first_id, first_at = conn.execute("SELECT MIN(id), MIN(at) FROM denials").fetchone()
                if first_id is not None and first_id > 1:  # ids start at 1: nothing trimmed
                    oldest = float(first_at)
        except sqlite3.Error:
            self.close()
            raise
        return DenialRecords(q.mid, name, tuple(rows), oldest, last)
