"""The backend's side of `tmr report usage`: read the usage record for a window.

The usage table is written by `tmr.backend.store.SqliteStore` (one row per committed grant,
release and expiry, newest ``usage_retention`` rows kept). This module only reads it, on its
own read-only connection (WAL lets it read while the store writes), so it never touches the
acceptor's transactions.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from contextlib import suppress
from pathlib import Path
from typing import Any, TypeVar

from tmr.protocol import peer_api
from tmr.replication.messages import (
    DenialQuery,
    DenialRecords,
    DenialRow,
    UsageQuery,
    UsageRecords,
    UsageRow,
)

# The rows of a window: those in it, plus grants made before it whose handle was not yet
# released or expired when it opened (they hold seats inside the window).
_WINDOW = """
  at <= :until
  AND (at >= :since
       OR (event = 'granted' AND handle NOT IN (
             SELECT handle FROM usage WHERE event != 'granted' AND at < :since)))
"""

_WINDOW_SQL = f"""
SELECT at, event, firm, product, handle, seats, client_id FROM usage
WHERE {_WINDOW}
ORDER BY id
LIMIT :limit
"""

# The same rows from record id ``after`` on (a chunked query reads them lazily, as far as
# its chunk goes: the scan follows the primary key).
_CHUNK_SQL = f"""
SELECT id, at, event, firm, product, handle, seats, client_id FROM usage
WHERE id > :after AND {_WINDOW}
ORDER BY id
"""

# How many rows the window holds, counted up to ``cap`` (the first chunk of a report says
# whether the window holds more than the query's limit: the server then refuses the report
# at once instead of reading that many rows first).
_COUNT_SQL = f"""
SELECT COUNT(*) FROM (SELECT 1 FROM usage WHERE {_WINDOW} LIMIT :cap)
"""
# The table's id range, from the primary key: a table of at most ``limit`` rows (retention
# below the limit, the default) needs no count.
_USAGE_IDS_SQL = "SELECT MIN(id), MAX(id) FROM usage"


# The denial rows of a window from record id ``after`` on (schema 6; `SqliteStore.add_denials`).
_DENIAL_SQL = """
SELECT id, uid, at, server, code, firm, product, seats, owner, user, host, pid, rule, times,
       last
FROM denials WHERE id > :after AND at >= :since AND at <= :until ORDER BY id
"""


# The first record id and time of a table (how far back it goes once trimmed).
_USAGE_FIRST_SQL = "SELECT MIN(id), MIN(at) FROM usage"
_DENIAL_FIRST_SQL = "SELECT MIN(id), MIN(at) FROM denials"

_Row = TypeVar("_Row", UsageRow, DenialRow)


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
            first_id, oldest = conn.execute(_USAGE_FIRST_SQL).fetchone()
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
        0) also says how far back the record goes (later ones leave ``oldest`` None) and
        whether the window holds more than ``q.limit`` rows (``truncated``)."""
        budget = q.chunk_bytes - peer_api.USAGE_CHUNK_OVERHEAD - len(name.encode())
        rows, last, oldest = self._read_chunk(
            _CHUNK_SQL, _USAGE_FIRST_SQL, q, budget, UsageRow._make, peer_api.usage_row_size
        )
        # The first chunk says whether the window holds more rows than the query's limit
        # (`UsageRecords.truncated`): the server then refuses the report at once (a server
        # before this flag ignores it and counts the rows it reads, as before).
        over = False
        if q.after == 0:
            over = len(rows) > q.limit if last is None else self._over_limit(q)
        return UsageRecords(q.mid, name, tuple(rows), oldest, over, last)

    def _over_limit(self, q: UsageQuery) -> bool:
        """Whether ``q``'s window holds more than ``q.limit`` rows (counted up to the limit + 1;
        a table whose id range is within the limit holds no more rows than that: no count)."""
        try:
            conn = self._connection()
            first, last = conn.execute(_USAGE_IDS_SQL).fetchone()
            if first is None or last - first + 1 <= q.limit:
                return False
            params = {"since": q.since, "until": q.until, "cap": q.limit + 1}
            (n,) = conn.execute(_COUNT_SQL, params).fetchone()
        except sqlite3.Error:
            self.close()
            raise
        return int(n) > q.limit

    def denials(self, q: DenialQuery, name: str) -> DenialRecords:
        """The denial rows of ``q``'s window after record id ``q.after`` that fit in
        ``q.chunk_bytes`` encoded (at least one, at most `peer_api.MAX_DENIAL_ROWS`), and the
        id to continue from (None: none left). The first chunk says how far back the record
        goes (``oldest``)."""
        budget = q.chunk_bytes - peer_api.DENIAL_CHUNK_OVERHEAD - len(name.encode())
        rows, last, oldest = self._read_chunk(
            _DENIAL_SQL,
            _DENIAL_FIRST_SQL,
            q,
            budget,
            DenialRow._make,
            peer_api.denial_row_size,
            max_rows=peer_api.MAX_DENIAL_ROWS,
        )
        return DenialRecords(q.mid, name, tuple(rows), oldest, last)

    def _read_chunk(
        self,
        sql: str,
        first_sql: str,
        q: UsageQuery | DenialQuery,
        budget: int,
        make: Callable[[Iterable[Any]], _Row],
        size: Callable[[_Row], int],
        max_rows: int | None = None,
    ) -> tuple[list[_Row], int | None, float | None]:
        """One chunk of ``sql`` (rows ``(id, *fields)`` of ``q``'s window from record id
        ``q.after`` on): the rows (``make`` of the fields) that fit in ``budget`` encoded bytes
        (``size`` of each; at least one, at most ``max_rows``), the id to continue from (None:
        every row was read) and, for the first chunk (``after`` 0), how far back the record
        goes (from ``first_sql``, its first id and time; None: nothing was trimmed). Raises
        `sqlite3.Error` (the connection is closed, reopened next time)."""
        after = q.after
        rows: list[_Row] = []
        last: int | None = None
        oldest: float | None = None
        try:
            conn = self._connection()
            cur = conn.execute(sql, {"since": q.since, "until": q.until, "after": after})
            try:
                for rid, *fields in cur:
                    row = make(fields)
                    budget -= size(row)
                    if (budget < 0 and rows) or (max_rows is not None and len(rows) >= max_rows):
                        break  # the row is read again by the next chunk
                    rows.append(row)
                    last = rid
                else:
                    last = None  # every row was read
            finally:
                cur.close()
            if after == 0:
                first_id, first_at = conn.execute(first_sql).fetchone()
                if first_id is not None and first_id > 1:  # ids start at 1: nothing trimmed
                    oldest = float(first_at)
        except sqlite3.Error:
            self.close()
            raise
        return rows, last, oldest
