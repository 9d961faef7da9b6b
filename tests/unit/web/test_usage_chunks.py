"""Usage reports in chunks: a backend answers a chunked usage query with at most the bytes
asked for, and the server's report worker pulls the chunks one at a time."""

from __future__ import annotations

import itertools
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from tmr.backend.store import SqliteStore
from tmr.config import BackendRef
from tmr.keys import generate_keypair
from tmr.protocol import peer_api
from tmr.protocol.codec import pack
from tmr.protocol.errors import ProtocolError
from tmr.replication.messages import (
    DenialQuery,
    DenialRecords,
    DenialRow,
    PeerError,
    UsageQuery,
    UsageRecords,
    UsageRow,
)
from tmr.report.denials import DenialLog
from tmr.report.records import UsageReader
from tmr.report.worker import CHUNK_BYTES, PACE, UsageJob, UsageWorker

T0 = 1_700_000_000.0


def _fill(db: Path, rows: list[UsageRow]) -> None:
    conn = sqlite3.connect(db)
    with conn:
        conn.executemany(
            "INSERT INTO usage (at, recorded_at, event, firm, product, handle, seats, client_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (r.at, r.at, r.event, r.firm, r.product, r.handle, r.seats, r.client_id)
                for r in rows
            ],
        )
    conn.close()


def _rows(n: int, *, long: bool = False) -> list[UsageRow]:
    """``n`` rows; ``long``: handles and client ids of the largest size, client ids in UTF-8
    of two bytes a character (a chunk is bounded in bytes, not characters)."""
    out = []
    for i in range(n):
        handle = f"h{i:06d}" + ("x" * (peer_api.MAX_STR - 7) if long else "")
        cid = "ü" * peer_api.MAX_STR if long else f"c{i % 7}"
        event = "granted" if i % 2 == 0 else "released"
        out.append(UsageRow(T0 + i, event, 2**32 - 1, 2**32 - 2, handle, 2**32 - 1, cid))
    return out


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    store = SqliteStore(tmp_path / "b.sqlite3", usage_retention=1_000_000)
    try:
        yield store.path
    finally:
        store.close()


def _read_chunks(reader: UsageReader, chunk: int, until: float) -> list[tuple[bytes, UsageRecords]]:
    out: list[tuple[bytes, UsageRecords]] = []
    after = 0
    while True:
        q = UsageQuery(len(out) + 1, T0, until, 1000, after, chunk)
        frame = peer_api.encode_usage_answer(q, reader.query(q, "backend-1"))
        msg = peer_api.decode_usage_reply(frame)
        assert isinstance(msg, UsageRecords) and msg.mid == q.mid
        out.append((frame, msg))
        if msg.next is None:
            return out
        assert msg.rows, "a chunk that continues holds at least one row"
        after = msg.next


@pytest.mark.parametrize("long", [False, True])
def test_chunks_hold_the_whole_window_within_their_byte_bound(db: Path, long: bool) -> None:
    rows = _rows(600, long=long)
    _fill(db, rows)
    reader = UsageReader(db)
    whole = reader.query(UsageQuery(1, T0, T0 + 10_000, 10_000), "backend-1")
    chunks = _read_chunks(reader, peer_api.MIN_USAGE_CHUNK, T0 + 10_000)
    assert len(chunks) > 3
    assert all(len(frame) <= peer_api.MIN_USAGE_CHUNK for frame, _ in chunks)
    got = [r for _, msg in chunks for r in msg.rows]
    assert got == list(whole.rows) == rows
    reader.close()


def test_report_chunks_stay_within_chunk_bytes(db: Path) -> None:
    _fill(db, _rows(3000, long=True))
    chunks = _read_chunks(UsageReader(db), CHUNK_BYTES, T0 + 10_000)
    assert len(chunks) > 1
    assert max(len(frame) for frame, _ in chunks) <= CHUNK_BYTES <= 256 * 1024


def test_chunks_keep_the_window_and_the_record_horizon(db: Path) -> None:
    _fill(db, _rows(50))
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("DELETE FROM usage WHERE id <= 10")  # as retention trims
    conn.close()
    reader = UsageReader(db)
    chunks = _read_chunks(reader, peer_api.MIN_USAGE_CHUNK, T0 + 29)
    got = [r.handle for _, msg in chunks for r in msg.rows]
    assert got == [f"h{i:06d}" for i in range(10, 30)]
    assert chunks[0][1].oldest == T0 + 10  # the first chunk says how far back it goes


def test_the_first_chunk_says_whether_the_window_holds_more_than_the_limit(db: Path) -> None:
    """The backend counts the window's rows (up to the limit + 1) with its first chunk, so a
    server refuses an over-long window at once instead of reading that many rows first."""
    _fill(db, _rows(600))
    reader = UsageReader(db)

    def first(limit: int, until: float = T0 + 10_000) -> UsageRecords:
        q = UsageQuery(1, T0, until, limit, 0, peer_api.MIN_USAGE_CHUNK)
        msg = peer_api.decode_usage_reply(peer_api.encode_usage_answer(q, reader.query(q, "b")))
        assert isinstance(msg, UsageRecords) and msg.rows and msg.next is not None
        return msg

    assert first(599).truncated
    assert not first(600).truncated  # exactly the limit is allowed
    assert not first(599, until=T0 + 598).truncated  # the window, not the table, counts
    assert first(598, until=T0 + 598).truncated
    # Later chunks do not count again, and a window read whole in one chunk counts its rows.
    later = reader.query(UsageQuery(2, T0, T0 + 10_000, 10, 50, peer_api.MIN_USAGE_CHUNK), "b")
    assert not later.truncated
    whole = reader.query(UsageQuery(3, T0, T0 + 4, 4, 0, CHUNK_BYTES), "b")
    assert whole.next is None and len(whole.rows) == 5 and whole.truncated
    reader.close()


def test_the_limit_flag_counts_what_the_chunks_hold(db: Path) -> None:
    """Over windows that take in grants made before them (held across the start, or released
    before it) and with limits around the rows read: the first chunk's flag says exactly
    whether the chunks hold more rows than the limit."""
    _fill(db, _rows(600))  # grant at T0 + 2i, its release at T0 + 2i + 1
    conn = sqlite3.connect(db)
    with conn:  # grants never released: held across any later window's start
        conn.executemany(
            "INSERT INTO usage (at, recorded_at, event, firm, product, handle, seats, "
            "client_id) VALUES (?, ?, 'granted', 1, 2, ?, 1, 'c')",
            [(T0 + i + 0.5, T0, f"held{i}") for i in range(0, 600, 7)],
        )
    conn.close()
    reader = UsageReader(db)
    for since, until in ((T0, T0 + 1000), (T0 + 300.2, T0 + 450), (T0 + 590, T0 + 700)):
        rows: list[UsageRow] = []
        after = 0
        while True:
            q = UsageQuery(
                1, since, until, peer_api.MAX_USAGE_ROWS, after, peer_api.MIN_USAGE_CHUNK
            )
            msg = reader.query(q, "b")
            rows += msg.rows
            if msg.next is None:
                break
            after = msg.next
        held = [r for r in rows if r.at < since]  # grants made before the window
        assert held or since == T0
        n = len(rows)
        for limit in (1, n - 1, n, n + 1):
            q = UsageQuery(1, since, until, max(limit, 1), 0, peer_api.MIN_USAGE_CHUNK)
            assert reader.query(q, "b").truncated == (n > max(limit, 1)), (since, limit, n)
    reader.close()


def test_a_query_without_chunk_is_answered_whole(db: Path) -> None:
    """What a server from before chunks sends: all rows in one `usage_records`."""
    _fill(db, _rows(20))
    frame = pack({"t": "usage_query", "mid": 3, "since": T0, "until": T0 + 100, "limit": 100})
    q = peer_api.decode_usage_query(frame)
    assert q.chunk_bytes == 0
    answer = peer_api.encode_usage_answer(q, UsageReader(db).query(q, "b"))
    msg = peer_api.decode_usage_reply(answer)
    assert isinstance(msg, UsageRecords) and len(msg.rows) == 20 and msg.next is None
    assert b"usage_records" in answer


def test_chunk_query_round_trip_and_bounds() -> None:
    q = UsageQuery(5, T0, T0 + 60, 1000, 77, CHUNK_BYTES)
    assert peer_api.decode_usage_query(peer_api.encode_usage_query(q)) == q
    base = {"t": "usage_query", "mid": 1, "since": 0.0, "until": 5.0, "limit": 10, "after": 0}
    for chunk in (0, peer_api.MIN_USAGE_CHUNK - 1, peer_api.MAX_USAGE_CHUNK + 1, "big", True):
        with pytest.raises(ProtocolError):
            peer_api.decode_usage_query(pack({**base, "chunk": chunk}))
    with pytest.raises(ProtocolError):
        peer_api.decode_usage_query(pack({**base, "chunk": 4096, "after": -1}))


def _chunk_body(**change: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "t": "usage_chunk",
        "mid": 1,
        "name": "b",
        "at": [T0, T0 + 1],
        "event": b"\x00\x01",
        "firm": [1, 1],
        "product": [2, 2],
        "handle": ["h1", "h1"],
        "seats": [1, 1],
        "client_id": ["c", ""],
        "oldest": None,
        "next": 9,
    }
    return {**body, **change}


def test_chunk_round_trip() -> None:
    rec = UsageRecords(4, "backend-3", tuple(_rows(3, long=True)), T0 - 5, False, 12)
    assert peer_api.decode_usage_reply(peer_api.encode_usage_chunk(rec)) == rec
    empty = UsageRecords(4, "backend-3", (), None, False, None)
    assert peer_api.decode_usage_reply(peer_api.encode_usage_chunk(empty)) == empty
    assert b"truncated" not in peer_api.encode_usage_chunk(rec)  # sent only when set
    over = UsageRecords(4, "backend-3", tuple(_rows(3)), None, True, 3)
    assert peer_api.decode_usage_reply(peer_api.encode_usage_chunk(over)) == over
    msg = peer_api.decode_usage_reply(pack(_chunk_body(at=[1, 2])))  # integer times are fine
    assert isinstance(msg, UsageRecords) and msg.rows[0].at == 1.0
    assert [r.event for r in msg.rows] == ["granted", "released"]


@pytest.mark.parametrize(
    "change",
    [
        {"at": [T0]},  # a column shorter than the others
        {"at": [T0, float("nan")]},
        {"at": [T0, 10**400]},
        {"at": [T0, "now"]},
        {"event": b"\x00\x07"},
        {"event": b"\x00"},
        {"event": ["granted", "released"]},
        {"firm": [1, True]},
        {"product": [2, -1]},
        {"seats": [1, 2**32]},
        {"handle": ["h1", ""]},
        {"handle": ["h1", 5]},
        {"client_id": ["c", "x" * (peer_api.MAX_STR + 1)]},
        {"next": -1},
        {"next": "more"},
        {"oldest": "yesterday"},
        {"name": ""},
        {"handle": None},
        {"truncated": 1},
        {"truncated": "yes"},
    ],
)
def test_bad_chunks_are_protocol_errors(change: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        peer_api.decode_usage_reply(pack(_chunk_body(**change)))


# ---------------------------------------------------------------- the worker pulls chunks


class FakeBackend:
    """A CURVE ROUTER on loopback that answers usage queries with ``answer(query)``."""

    def __init__(
        self, answer: Callable[[Any], bytes], delay: float = 0.0, name: str = "b1"
    ) -> None:
        self.keys = generate_keypair()
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.curve_secretkey = self.keys.secret.encode()
        self.sock.curve_publickey = self.keys.public.encode()
        self.sock.curve_server = True
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.ref = BackendRef(name, f"tcp://127.0.0.1:{port}", self.keys.public)
        self.answer = answer
        self.delay = delay  # seconds each answer takes
        self.queries: list[Any] = []  # the `UsageQuery`s and `DenialQuery`s received
        self.times: list[tuple[float, float]] = []  # (query received, answer sent), monotonic
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            if not self.sock.poll(50):
                continue
            *envelope, payload = self.sock.recv_multipart()
            received = time.monotonic()
            q = peer_api.decode_backend_frame(payload)
            assert isinstance(q, UsageQuery | DenialQuery)
            self.queries.append(q)
            answer = self.answer(q)
            self._stop.wait(self.delay)  # a backend at work
            self.times.append((received, time.monotonic()))
            self.sock.send_multipart([*envelope, answer])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close(0)
        self.ctx.term()


def _fetch(
    backend: FakeBackend,
    row_limit: int = 1000,
    *others: FakeBackend,
    timeout: float = 5.0,
    slow: bool = False,
    denials: bool = False,
    connect: bool = True,
    then: tuple[str, ...] = (),
) -> tuple[dict[str, Any], dict[str, str]]:
    """``worker.fetch`` (``denials``: then ``fetch_denials``) of the backends. ``slow``: the worker
    process is held up right after each query, until the backend has answered it and the
    query's deadline has passed (what a busy host does to a process at nice 19). ``connect``:
    the links are connected before (else the fetch connects them). ``then``: afterwards a second
    report on the same links, of the backends named, whose fetch is returned."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    backends = (backend, *others)
    names = tuple(b.ref.name for b in backends)
    worker = UsageWorker(
        ctx,
        "tmr-a",
        tuple(b.ref for b in backends),
        generate_keypair(),
        DenialLog(None, 86400),
        timeout=timeout,
        row_limit=row_limit,
    )
    if slow:
        assert not others

        def held_up(ask: Callable[[UsageJob, Any], bool]) -> Callable[[UsageJob, Any], bool]:
            def asked(job: UsageJob, pull: Any) -> bool:
                if not ask(job, pull):
                    return False
                # The answer arrives (read later), and only then does the deadline pass.
                assert pull.socket.poll(10_000, zmq.POLLIN), "the fake backend did not answer"
                while time.monotonic() <= pull.deadline:
                    time.sleep(0.01)
                return True

            return asked

        setattr(worker, "_ask", held_up(worker._ask))  # noqa: B010 (mypy refuses assigning to a method)
    links: dict[str, zmq.Socket[bytes]] = {}
    for name in names if connect else ():  # connected before (a short timeout cuts its grace)
        assert worker._link(links, name).poll(10_000, zmq.POLLOUT), f"{name} did not connect"
    try:
        job = UsageJob(None, "r-1", T0, T0 + 100, names, denial_backends=names)
        got: tuple[dict[str, Any], dict[str, str]] = worker.fetch(job, links)  # as `report` does
        if denials:
            got = worker.fetch_denials(job, links)
        if then:
            job = UsageJob(None, "r-2", T0, T0 + 100, then, denial_backends=then)
            got = worker.fetch_denials(job, links) if denials else worker.fetch(job, links)
        return got
    finally:
        for s in links.values():
            s.close(0)
        worker.wake_socket.close(0)
        ctx.term()


ROWS = _rows(7)


def _in_chunks_of_two(q: UsageQuery) -> bytes:
    assert q.chunk_bytes == CHUNK_BYTES
    part = ROWS[q.after : q.after + 2]
    nxt = q.after + 2 if q.after + 2 < len(ROWS) else None
    oldest = T0 - 1 if q.after == 0 else None
    return peer_api.encode_usage_chunk(UsageRecords(q.mid, "b1", tuple(part), oldest, False, nxt))


def test_the_worker_pulls_one_chunk_after_the_other() -> None:
    backend = FakeBackend(_in_chunks_of_two)
    try:
        answers, problems = _fetch(backend)
    finally:
        backend.close()
    assert problems == {}
    assert list(answers["b1"].rows) == ROWS and answers["b1"].oldest == T0 - 1
    assert not answers["b1"].truncated
    assert [q.after for q in backend.queries] == [0, 2, 4, 6]
    assert len({q.mid for q in backend.queries}) == 4


def test_the_worker_stops_pulling_beyond_the_row_limit() -> None:
    backend = FakeBackend(_in_chunks_of_two)
    try:
        answers, _ = _fetch(backend, row_limit=3)
    finally:
        backend.close()
    assert answers["b1"].truncated and len(answers["b1"].rows) == 3
    assert [q.after for q in backend.queries] == [0, 2]


def _over_the_limit(q: UsageQuery) -> bytes:
    """A backend whose window holds more rows than the limit: its first chunk says so."""
    part = ROWS[q.after : q.after + 2]
    nxt = q.after + 2 if q.after + 2 < len(ROWS) else None
    return peer_api.encode_usage_chunk(
        UsageRecords(q.mid, "b2", tuple(part), None, q.after == 0, nxt)
    )


def test_a_backend_over_the_limit_ends_the_fetch_at_its_first_chunk() -> None:
    """One backend's window holds more rows than the limit: the report will be refused, so
    neither it nor the other backends are read any further."""
    other = FakeBackend(_in_chunks_of_two, delay=5.0)  # cut short by its close()
    over = FakeBackend(_over_the_limit, name="b2")
    try:
        answers, _ = _fetch(other, 1000, over)
    finally:
        other.close()
        over.close()
    assert answers["b2"].truncated
    assert [q.after for q in over.queries] == [0]
    assert [q.after for q in other.queries] == [0]  # its later chunks are not asked for
    assert "b1" not in answers


def _denials_in_chunks_of_two(q: DenialQuery) -> bytes:
    rows = [
        DenialRow(
            f"d{i}",
            T0 + i,
            "tmr-a",
            "NO_LICENSE_AVAILABLE",
            1,
            2,
            1,
            "k",
            "u",
            "h",
            1,
            "",
            1,
            T0 + i,
        )
        for i in range(5)
    ]
    nxt = q.after + 2 if q.after + 2 < len(rows) else None
    part = tuple(rows[q.after : q.after + 2])
    return peer_api.encode_denial_records(DenialRecords(q.mid, "b1", part, None, nxt))


@pytest.mark.parametrize("denials", [False, True])
def test_an_answer_that_came_while_the_worker_was_held_up_is_read(denials: bool) -> None:
    """On a busy host the worker process (nice 19) may be the slow one: every answer arrives
    in time, but the worker looks only after the query's deadline. It reads what came before
    it calls the backend silent."""
    backend = FakeBackend(
        lambda q: (
            _denials_in_chunks_of_two(q) if isinstance(q, DenialQuery) else _in_chunks_of_two(q)
        )
    )
    try:
        answers, problems = _fetch(backend, timeout=0.2, slow=True, denials=denials)
    finally:
        backend.close()
    assert problems == {}
    if denials:
        assert [r.id for r in answers["b1"]] == [f"d{i}" for i in range(5)]
    else:
        assert list(answers["b1"].rows) == ROWS
    asked = [q.after for q in backend.queries if isinstance(q, DenialQuery) == denials]
    assert asked == ([0, 2, 4] if denials else [0, 2, 4, 6])


def test_an_over_the_limit_answer_read_past_the_deadline_ends_the_fetch() -> None:
    backend = FakeBackend(_over_the_limit, name="b2")
    try:
        answers, problems = _fetch(backend, timeout=0.2, slow=True)
    finally:
        backend.close()
    assert answers["b2"].truncated and problems == {}
    assert [q.after for q in backend.queries] == [0]


@pytest.mark.parametrize("denials", [False, True])
def test_a_backend_silent_past_the_deadline_is_reported(denials: bool) -> None:
    backend = FakeBackend(
        lambda q: (
            _denials_in_chunks_of_two(q) if isinstance(q, DenialQuery) else _in_chunks_of_two(q)
        ),
        delay=3.0,
    )
    try:
        answers, problems = _fetch(backend, timeout=0.2, denials=denials)
    finally:
        backend.close()
    assert answers == {} and problems == {"b1": "no answer within 0.2 s"}


def test_the_worker_reads_a_backend_that_answers_whole() -> None:
    """A backend from before chunks ignores the chunk fields and sends every row at once."""

    def whole(q: UsageQuery) -> bytes:
        return peer_api.encode_usage_records(UsageRecords(q.mid, "b1", tuple(ROWS), None, False))

    backend = FakeBackend(whole)
    try:
        answers, problems = _fetch(backend)
    finally:
        backend.close()
    assert problems == {} and list(answers["b1"].rows) == ROWS
    assert len(backend.queries) == 1


def test_the_worker_paces_its_chunk_queries() -> None:
    """After each chunk the worker waits PACE times as long as that chunk took before it asks
    for the next: a report keeps a backend busy at most 1 / (1 + PACE) of the time."""
    assert PACE >= 1.0
    backend = FakeBackend(_in_chunks_of_two, delay=0.05)
    try:
        answers, problems = _fetch(backend)
    finally:
        backend.close()
    assert problems == {} and list(answers["b1"].rows) == ROWS
    assert len(backend.times) == 4
    for (received, sent), (next_received, _) in itertools.pairwise(backend.times):
        assert next_received - sent >= PACE * (sent - received)


def test_a_second_report_after_an_early_stop_drops_the_late_answers() -> None:
    """The fetch stopped at the over-limit backend while the other's first chunk was still on
    its way; the next report on the same links reads that backend from the start and takes
    only the answers to its own queries (the late one is dropped by its query id)."""

    # Its first answer takes 2 s (still on its way when the fetch stops), the others none.
    def first_slow(q: UsageQuery) -> bytes:
        if len(other.queries) > 1:
            other.delay = 0.0
        return _in_chunks_of_two(q)

    other = FakeBackend(first_slow, delay=2.0)
    over = FakeBackend(_over_the_limit, name="b2")
    try:
        answers, problems = _fetch(other, 1000, over, then=("b1",))
    finally:
        other.close()
        over.close()
    assert problems == {}
    assert list(answers["b1"].rows) == ROWS and not answers["b1"].truncated
    assert [q.after for q in other.queries] == [0, 0, 2, 4, 6]  # the first report's, then these


@pytest.mark.parametrize("denials", [False, True])
def test_a_backend_that_does_not_connect_is_reported(denials: bool) -> None:
    gone = FakeBackend(_in_chunks_of_two)
    gone.close()  # nothing listens on its port any more
    started = time.monotonic()
    answers, problems = _fetch(gone, timeout=0.3, connect=False, denials=denials)
    assert answers == {} and problems == {"b1": "not connected"}
    assert time.monotonic() - started < 5.0  # given up after its grace (0.3 s), twice at most


@pytest.mark.parametrize("denials", [False, True])
def test_a_backend_error_is_reported(denials: bool) -> None:
    backend = FakeBackend(lambda q: peer_api.encode_reply(PeerError(q.mid, "unknown message type")))
    try:
        answers, problems = _fetch(backend, denials=denials)
    finally:
        backend.close()
    assert answers == {} and problems == {"b1": "unknown message type"}


def test_more_denial_rows_than_the_limit_is_a_problem_of_that_backend() -> None:
    backend = FakeBackend(
        lambda q: (
            _denials_in_chunks_of_two(q) if isinstance(q, DenialQuery) else _in_chunks_of_two(q)
        )
    )
    try:
        answers, problems = _fetch(backend, row_limit=3, denials=True)
    finally:
        backend.close()
    assert answers == {} and problems == {"b1": "more than 3 denial rows: shorter window"}
    assert [q.after for q in backend.queries if isinstance(q, DenialQuery)] == [0, 2]


def test_a_denial_backend_not_connected_yet_gets_a_moment() -> None:
    """The denial fetch on links not connected yet (as after a restart of the worker process)
    waits for the connection as the usage fetch does, instead of calling the backend not
    connected after one try."""
    backend = FakeBackend(_denials_in_chunks_of_two)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    worker = UsageWorker(
        ctx, "tmr-a", (backend.ref,), generate_keypair(), DenialLog(None, 86400), timeout=5.0
    )
    links: dict[str, zmq.Socket[bytes]] = {}
    try:
        job = UsageJob(None, "r-1", T0, T0 + 100, ("b1",), denial_backends=("b1",))
        got, problems = worker.fetch_denials(job, links)
    finally:
        backend.close()
        for s in links.values():
            s.close(0)
        worker.wake_socket.close(0)
        ctx.term()
    assert problems == {}
    assert [r.id for r in got["b1"]] == [f"d{i}" for i in range(5)]
