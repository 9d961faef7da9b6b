"""The backend's usage queries (`tmr report usage`), answered off the replication loop.

A usage query reads up to hundreds of thousands of rows: on the poll loop it delayed every
ACCEPT queued behind it (checkout p50 from 4 ms to 30-74 ms with a few reports, and servers
saw backends as down). The loop hands each query to `UsageThread.submit` with the envelope of
its sender; a worker thread has the rows read and encoded in a worker process of low CPU
priority (`tmr.report.offload`: the loop's thread never waits for the interpreter lock),
on its own read-only SQLite connection (`tmr.report.records.UsageReader`, WAL: it never
blocks the store's writes), and queues the answer; `wake` tells the loop, which sends what
`take` returns on the peer socket (ZeroMQ sockets stay in the loop's thread). A server asks
for the rows in chunks of at most 256 KiB, one after the other (`tmr.report.worker`), so
what the loop sends for a report is never one large frame.
"""

from __future__ import annotations

import collections
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from tmr.logs import log
from tmr.protocol import peer_api
from tmr.replication.messages import DenialQuery, PeerError, UsageQuery
from tmr.report.offload import Offload, put_stop
from tmr.report.records import UsageReader

MAX_PENDING = 16  # queries queued; beyond, a query is answered "busy" at once

Envelope = list[bytes]
Query = UsageQuery | DenialQuery  # a denial query is answered the same way (schema 6)


class UsageThread:
    def __init__(self, db_path: Path, name: str, wake: Callable[[], None]) -> None:
        self.name = name
        self.wake = wake
        self.db_path = db_path
        self.offload = Offload()
        self._jobs: queue.Queue[tuple[Envelope, Query] | None] = queue.Queue(MAX_PENDING)
        # Answers for the loop: a deque (append and popleft are atomic), so the loop's check
        # in every turn takes no lock and raises no `queue.Empty` when there is none.
        self._done: collections.deque[tuple[Envelope, bytes]] = collections.deque()
        self.storage_errors = 0
        self._thread = threading.Thread(target=self._run, name="tmr-usage-query", daemon=True)
        self._thread.start()

    def submit(self, envelope: Envelope, query: Query) -> bytes | None:
        """Queue a query; None, or the answer to send at once if too many are queued."""
        try:
            self._jobs.put_nowait((envelope, query))
        except queue.Full:
            return encode_error(query.mid, f"busy: {MAX_PENDING} usage queries in progress")
        return None

    def take(self) -> list[tuple[Envelope, bytes]]:
        out = []
        done = self._done
        while done:
            out.append(done.popleft())
        return out

    def close(self, timeout: float = 5.0) -> None:
        put_stop(self._jobs)
        self._thread.join(timeout)
        self.offload.close()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            envelope, query = job
            try:
                reply, problem = self.offload.run(answer_query, str(self.db_path), query, self.name)
                if problem:
                    self.storage_errors += 1
                    log("storage_error", level="error", error=problem, during="usage query")
            except Exception as exc:  # a bug must not kill the thread
                log("internal_error", level="error", error=repr(exc), during="usage query")
                reply = encode_error(query.mid, "usage query failed")
            self._done.append((envelope, reply))
            self.wake()


def encode_error(mid: int, message: str) -> bytes:
    return peer_api.encode_reply(PeerError(mid, message[:1024]))


_READERS: dict[str, UsageReader] = {}  # in the worker process: one connection per database


def answer_query(db_path: str, query: Query, name: str) -> tuple[bytes, str]:
    """(In the worker process.) The encoded answer to ``query``, and a storage problem ("" if
    none; the answer is then an error reply)."""
    reader = _READERS.get(db_path)
    if reader is None:
        reader = _READERS[db_path] = UsageReader(Path(db_path))
    try:
        if isinstance(query, DenialQuery):
            return peer_api.encode_denial_records(reader.denials(query, name)), ""
        return peer_api.encode_usage_answer(query, reader.query(query, name)), ""
    except sqlite3.Error as exc:
        what = "denial" if isinstance(query, DenialQuery) else "usage"
        return encode_error(query.mid, f"cannot read the {what} record: {exc}"), str(exc)
