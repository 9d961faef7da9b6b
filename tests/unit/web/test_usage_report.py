"""Usage audit: the backends' record query, denials, the summary, the wire, the CLI."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from tmr.backend.store import SqliteStore
from tmr.cli.report_cmds import format_report, parse_when
from tmr.errors import UsageError
from tmr.protocol import peer_api
from tmr.protocol.client_api import UsageResult
from tmr.protocol.codec import pack
from tmr.protocol.errors import ProtocolError
from tmr.replication.acceptor import ProductWrite, Write
from tmr.replication.messages import PeerError, UsageQuery, UsageRecords, UsageRow
from tmr.replication.types import Epoch, Grant, HandleRecord, Release, ReleaseReason, Version
from tmr.report.denials import DenialLog
from tmr.report.records import UsageReader
from tmr.report.summary import merge_rows, summarize, to_csv

KEY = (6000123, 42)
OTHER = (6000123, 43)
T0 = 1_700_000_000.0
H = 3600.0


def row(
    at: float, event: str, handle: str, seats: int = 1, key: tuple[int, int] = KEY, cid: str = "c1"
) -> UsageRow:
    return UsageRow(at, event, key[0], key[1], handle, seats, cid)


# ---------------------------------------------------------------- summary


def test_peak_and_seat_hours() -> None:
    rows = [
        row(T0 + 0, "granted", "a", 2),
        row(T0 + 1 * H, "granted", "b", 1, cid="c2"),
        row(T0 + 2 * H, "released", "a", 2),
        row(T0 + 3 * H, "expired", "b", 1, cid="c2"),
    ]
    (u,) = summarize(rows, T0, T0 + 4 * H, now=T0 + 10 * H, quantities={KEY: 5})
    assert u["peak_seats"] == 3 and u["peak_at"] == T0 + H
    assert u["seat_hours"] == pytest.approx(2 * 2 + 1 * 2)
    assert (u["checkouts"], u["releases"], u["expiries"]) == (2, 1, 1)
    assert u["clients"] == 2 and u["quantity"] == 5 and u["denials"] == 0


def test_window_clips_and_counts_handles_held_across_its_start() -> None:
    rows = [row(T0 - 10 * H, "granted", "old", 4), row(T0 + 2 * H, "released", "old", 4)]
    (u,) = summarize(rows, T0, T0 + 5 * H, now=T0 + 10 * H)
    assert u["peak_seats"] == 4 and u["peak_at"] == T0
    assert u["seat_hours"] == pytest.approx(8)
    assert u["checkouts"] == 0 and u["releases"] == 1


def test_still_held_counts_until_now_or_the_window_end() -> None:
    rows = [row(T0, "granted", "a", 1)]
    assert summarize(rows, T0, T0 + 5 * H, now=T0 + 2 * H)[0]["seat_hours"] == pytest.approx(2)
    assert summarize(rows, T0, T0 + 5 * H, now=T0 + 9 * H)[0]["seat_hours"] == pytest.approx(5)


def test_hand_over_at_the_same_instant_is_not_a_peak() -> None:
    rows = [
        row(T0, "granted", "a", 1),
        row(T0 + H, "released", "a", 1),
        row(T0 + H, "granted", "b", 1),
    ]
    assert summarize(rows, T0 - H, T0 + 2 * H, now=T0 + 3 * H)[0]["peak_seats"] == 1


def test_trimmed_grant_starts_at_the_record_horizon() -> None:
    rows = [row(T0 + 3 * H, "released", "x", 2)]
    (u,) = summarize(rows, T0, T0 + 4 * H, now=T0 + 5 * H, oldest=T0 + 1 * H)
    assert u["seat_hours"] == pytest.approx(4) and u["peak_seats"] == 2


def test_denials_and_licenses_without_usage_are_listed() -> None:
    out = summarize([], T0, T0 + H, now=T0 + H, denials={KEY: 3}, quantities={KEY: 5, OTHER: 2})
    assert [(u["product"], u["denials"], u["peak_seats"]) for u in out] == [(42, 3, 0), (43, 0, 0)]


def test_merge_dedupes_ops_recorded_by_several_backends() -> None:
    a = [row(T0, "granted", "h1"), row(T0 + 5, "released", "h1")]
    b = [row(T0, "granted", "h1"), row(T0 + 9, "granted", "h2")]
    merged = merge_rows([a, b])
    assert [(r.event, r.handle) for r in merged] == [
        ("granted", "h1"),
        ("released", "h1"),
        ("granted", "h2"),
    ]


def test_csv() -> None:
    (u,) = summarize([row(T0, "granted", "a", 2)], T0, T0 + H, now=T0 + H)
    text = to_csv([u], T0, T0 + H)
    header, line = text.strip().splitlines()
    assert header.startswith("from,to,firm,product,quantity,peak_seats,peak_at,seat_hours")
    assert line.startswith(
        "2023-11-14T22:13:20Z,2023-11-14T23:13:20Z,6000123,42,,2,2023-11-14T22:13:20Z,2.0"
    )


# ---------------------------------------------------------------- backend record query


def commit(store: SqliteStore, seq: int, *ops: Grant | Release) -> None:
    store.commit(Write(products=(ProductWrite(KEY, Version(Epoch(1, "s"), seq), tuple(ops)),)))


def grant(handle: str, at: float, seats: int = 1) -> Grant:
    return Grant(HandleRecord(handle, KEY[0], KEY[1], seats, "host/1/x", "r-" + handle, at))


def test_reader_window_query(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "b.sqlite3")
    try:
        commit(store, 1, grant("before-released", T0 - 100), grant("before-held", T0 - 90, 2))
        commit(store, 2, Release("before-released", ReleaseReason.RELEASE, T0 - 50))
        commit(store, 3, grant("inside", T0 + 10))
        commit(store, 4, Release("inside", ReleaseReason.EXPIRE, T0 + 20))
        commit(store, 5, grant("after", T0 + 1000))
        reader = UsageReader(store.path)
        got = reader.query(UsageQuery(7, T0, T0 + 100, 1000), "backend-1")
        assert got.mid == 7 and got.name == "backend-1" and not got.truncated
        assert [(r.event, r.handle) for r in got.rows] == [
            ("granted", "before-held"),
            ("granted", "inside"),
            ("expired", "inside"),
        ]
        assert got.oldest is None  # nothing trimmed
        assert reader.query(UsageQuery(8, T0, T0 + 100, 2), "b").truncated
        reader.close()
    finally:
        store.close()


def test_reader_reports_the_retention_horizon(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "b.sqlite3", usage_retention=2)
    try:
        for i in range(4):
            commit(store, i + 1, grant(f"h{i}", T0 + i))
        got = UsageReader(store.path).query(UsageQuery(1, 0, T0 + 10, 100), "b")
        assert [r.handle for r in got.rows] == ["h2", "h3"] and got.oldest == T0 + 2
    finally:
        store.close()


# ---------------------------------------------------------------- wire


def test_usage_messages_round_trip() -> None:
    q = UsageQuery(5, T0, T0 + H, 1000)
    assert peer_api.decode_usage_query(peer_api.encode_usage_query(q)) == q
    rec = UsageRecords(5, "backend-2", (row(T0, "granted", "h1", cid=""),), T0 - 5, True)
    assert peer_api.decode_usage_reply(peer_api.encode_usage_records(rec)) == rec
    err = peer_api.decode_usage_reply(pack({"t": "error", "mid": 5, "message": "unknown"}))
    assert err == PeerError(5, "unknown")


@pytest.mark.parametrize(
    "body",
    [
        {"t": "usage_query", "mid": 1, "since": 10.0, "until": 5.0, "limit": 10},
        {"t": "usage_query", "mid": 1, "since": 0.0, "until": 5.0, "limit": 0},
        {"t": "usage_query", "mid": 1, "since": "x", "until": 5.0, "limit": 10},
        {"t": "usage_query", "mid": 1, "since": 0.0, "limit": 10},
        {"t": "probe", "mid": 1},
    ],
)
def test_bad_usage_queries(body: dict[str, object]) -> None:
    with pytest.raises(ProtocolError):
        peer_api.decode_usage_query(pack(body))


def test_bad_usage_records() -> None:
    good = {"t": "usage_records", "mid": 1, "name": "b", "oldest": None, "truncated": False}
    with pytest.raises(ProtocolError):
        peer_api.decode_usage_reply(pack({**good, "rows": [[T0, "stolen", 1, 2, "h", 1, "c"]]}))
    with pytest.raises(ProtocolError):
        peer_api.decode_usage_reply(pack({**good, "rows": [[T0, "granted", 1]]}))
    with pytest.raises(ProtocolError):
        peer_api.decode_usage_reply(pack({"t": "status", "mid": 1}))
    # the replication decoders do not know these messages: they never reach the leader
    with pytest.raises(ProtocolError):
        peer_api.decode_request(peer_api.encode_usage_query(UsageQuery(1, 0, 1, 1)))


# ---------------------------------------------------------------- denials


def test_denial_log_buckets_persist_and_prune(tmp_path: Path) -> None:
    path = tmp_path / "state" / "denials.json"
    log = DenialLog(path, retention=7 * 86400)
    log.record(KEY, T0 + 1)
    log.record(KEY, T0 + 30)
    log.record(OTHER, T0 + 3600)
    assert log.counts(T0, T0 + 59) == {KEY: 2}
    assert log.counts(T0, T0 + 3600) == {KEY: 2, OTHER: 1}
    assert log.flush(T0 + 3600) and not log.flush(T0 + 3600)  # written once, then clean
    again = DenialLog(path, retention=7 * 86400)
    again.load()
    assert again.totals() == {KEY: 2, OTHER: 1}
    again.prune(T0 + 3600 + 7 * 86400 - 60)  # KEY's bucket is now older than the retention
    assert again.totals() == {OTHER: 1}


def test_denial_log_ignores_a_damaged_file(tmp_path: Path) -> None:
    path = tmp_path / "denials.json"
    path.write_text("{not json")
    log = DenialLog(path, retention=86400)
    log.load()
    assert log.totals() == {}


# ---------------------------------------------------------------- CLI


def test_parse_when() -> None:
    now = T0
    assert parse_when("now", now) == now
    assert parse_when("7d", now) == now - 7 * 86400
    assert parse_when("-12h", now) == now - 12 * 3600
    assert parse_when("30m ago", now) == now - 1800
    assert (
        parse_when("2024-01-31T12:00Z", now)
        == dt.datetime(2024, 1, 31, 12, tzinfo=dt.UTC).timestamp()
    )
    assert parse_when("2024-01-31", now) == dt.datetime(2024, 1, 31).timestamp()
    with pytest.raises(UsageError, match="ISO 8601"):
        parse_when("yesterday", now)


def test_format_report() -> None:
    (u,) = summarize([row(T0, "granted", "a", 2)], T0, T0 + H, now=T0 + H, denials={KEY: 4})
    r = UsageResult(
        T0,
        T0 + H,
        "tmr-a",
        (u,),
        ({"backend": "backend-1", "rows": 1, "oldest": T0, "truncated": True},),
        {
            "complete": False,
            "record_starts": T0,
            "unavailable": [{"backend": "backend-3", "reason": "not connected"}],
        },
    )
    text = format_report(r)
    assert "6000123:42" in text and "2.00" in text
    assert "usage record starts" in text and "backend-3 not read: not connected" in text
    assert "backend-1 had more rows" in text


# ---------------------------------------------------------------- worker


def test_worker_without_any_backend_answers_quorum_lost(tmp_path: Path) -> None:
    import zmq

    from tmr.config import BackendRef
    from tmr.keys import generate_keypair
    from tmr.protocol.client_api import ErrorReply, decode_reply
    from tmr.report.worker import UsageJob, UsageWorker

    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    refs = tuple(BackendRef(f"b{i}", f"tcp://127.0.0.1:{i}", "k") for i in (1, 2, 3))
    log = DenialLog(None, 86400)
    worker = UsageWorker(ctx, "tmr-a", refs, generate_keypair(), log, timeout=0.5)
    worker.start()
    try:
        job = UsageJob(("client", True), "r-9", T0, T0 + H, (), {KEY: 3}, ("b1", "b2", "b3"))
        assert worker.submit(job)
        poller = zmq.Poller()
        poller.register(worker.wake_socket, zmq.POLLIN)
        assert poller.poll(10_000), "the worker never answered"
        ((token, rid, payload),) = worker.take()
        reply = decode_reply(payload)
        assert token == ("client", True) and rid == "r-9" and isinstance(reply, ErrorReply)
        assert reply.error == "QUORUM_LOST" and "b1: down" in reply.message
    finally:
        worker.stop()
        ctx.term()
