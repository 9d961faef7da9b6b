"""The backend's denial record (schema 6): dedup by refusal id, retention, migration, reads."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tmr.backend.store import SCHEMA_VERSION, SqliteStore
from tmr.replication.messages import DenialQuery, DenialRow
from tmr.report.records import UsageReader

T0 = 1_700_000_000.0


def row(
    n: int, at: float = T0, server: str = "s1", code: str = "NO_LICENSE_AVAILABLE"
) -> DenialRow:
    return DenialRow(
        f"{server}/b00t/{n}", at + n, server, code, 6_000_123, 42, 2, "K" * 40, "ann", "ws-1",
        4242, "all 5 seats in use", 1 + n % 3, at + n + 0.5,
    )  # fmt: skip


def test_denials_round_trip_and_a_batch_sent_twice_is_recorded_once(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "b.sqlite3")
    try:
        rows = [row(i) for i in range(1, 4)]
        assert store.add_denials(rows) == 3
        assert store.add_denials(rows) == 0  # the same ids again (a server's resend)
        assert store.add_denials([row(4), rows[0]]) == 1
        assert store.denials() == [*rows, row(4)]
    finally:
        store.close()


def test_retention_keeps_the_newest_denials(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "b.sqlite3", denial_retention=100)
    try:
        for start in range(0, 1000, 50):
            store.add_denials([row(i) for i in range(start, start + 50)])
        kept = store.denials()
        # trimmed in batches of 1 % of the retention: never more than that over it
        assert 100 <= len(kept) <= 101
        assert kept[-1] == row(999)
        assert [r.id for r in kept] == [row(i).id for i in range(1000 - len(kept), 1000)]
    finally:
        store.close()


def test_retention_zero_records_nothing(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "b.sqlite3", denial_retention=0)
    try:
        assert store.add_denials([row(1)]) == 0
        assert store.denials() == []
    finally:
        store.close()


def test_negative_retention_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="denial_retention"):
        SqliteStore(tmp_path / "b.sqlite3", denial_retention=-1)


def test_a_schema_5_database_gets_the_denials_table(tmp_path: Path) -> None:
    db = tmp_path / "b.sqlite3"
    SqliteStore(db).close()
    conn = sqlite3.connect(db)
    conn.executescript(
        "DROP TABLE denials; UPDATE meta SET value = '5' WHERE key = 'schema_version';"
    )
    conn.close()
    store = SqliteStore(db)
    try:
        assert store.add_denials([row(1)]) == 1
    finally:
        store.close()
    conn = sqlite3.connect(db)
    try:
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    finally:
        conn.close()
    assert version == (str(SCHEMA_VERSION),) and SCHEMA_VERSION == 6


def test_the_reader_answers_a_window_in_chunks(tmp_path: Path) -> None:
    db = tmp_path / "b.sqlite3"
    store = SqliteStore(db)
    try:
        store.add_denials([row(i) for i in range(1, 201)])
    finally:
        store.close()
    reader = UsageReader(db)
    try:
        got: list[DenialRow] = []
        after, chunks = 0, 0
        while True:
            ans = reader.denials(DenialQuery(1, T0 + 50, T0 + 150, after, 4096), "backend-1")
            chunks += 1
            got.extend(ans.rows)
            if ans.next is None:
                break
            after = ans.next
        assert got == [row(i) for i in range(50, 151)]
        assert chunks > 1  # 4 KiB chunks: about 30 rows each
        assert ans.oldest is None  # nothing trimmed
    finally:
        reader.close()
