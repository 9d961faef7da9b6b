"""The backend's SQLite store: round trips, replace vs ops, atomicity, durability."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tmr.backend.store import SCHEMA_VERSION, SqliteStore, StorageError
from tmr.replication.acceptor import Acceptor, AcceptorState, ProductWrite, Write, apply_write
from tmr.replication.messages import Accept
from tmr.replication.types import (
    ZERO_EPOCH,
    AccessMode,
    Epoch,
    Grant,
    HandleRecord,
    Release,
    ReleaseReason,
    Version,
)

KEY = (6_000_123, 42)
OTHER = (6_000_123, 43)
E1 = Epoch(1, "s1")
E2 = Epoch(2, "s2")


def rec(
    handle: str, seats: int = 1, key: tuple[int, int] = KEY, client: str = "c1"
) -> HandleRecord:
    return HandleRecord(handle, key[0], key[1], seats, client, f"r-{handle}", 1_700_000_000.5)


def grant(handle: str, seats: int = 1, key: tuple[int, int] = KEY) -> Grant:
    return Grant(rec(handle, seats, key))


def release(handle: str, reason: ReleaseReason = ReleaseReason.RELEASE) -> Release:
    return Release(handle, reason, 1_700_000_100.25)


def reopen(store: SqliteStore) -> AcceptorState:
    """The state as a new process would see it."""
    store.close()
    fresh = SqliteStore(store.path)
    try:
        return fresh.load()
    finally:
        fresh.close()


def commit_grant(store: SqliteStore, seq: int) -> None:
    """Commit entry ``seq`` of KEY: one grant of handle ``h<seq>``."""
    store.commit(Write(products=(ProductWrite(KEY, Version(E1, seq), ops=(grant(f"h{seq}"),)),)))


def commit_all(store: SqliteStore, writes: list[Write]) -> AcceptorState:
    """Commit the writes and return the expected state (apply_write on an in-memory copy)."""
    expected = AcceptorState(ZERO_EPOCH, caught_up=False)
    for w in writes:
        store.commit(w)
        apply_write(expected, w)
    return expected


# ------------------------------------------------------------------ fresh database


def test_fresh_database_is_zero_epoch_not_caught_up(store: SqliteStore) -> None:
    state = store.load()
    assert state == AcceptorState(ZERO_EPOCH, caught_up=False)
    assert store.installed_tmr_ids() == {}
    assert store.usage() == []


def test_schema_is_versioned_and_wal_full(store: SqliteStore, db: Path) -> None:
    conn = sqlite3.connect(db)
    try:
        (version,) = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
    finally:
        conn.close()
    assert version == str(SCHEMA_VERSION)
    assert mode == "wal"


def test_unknown_schema_version_is_refused(store: SqliteStore, db: Path) -> None:
    store.close()
    conn = sqlite3.connect(db)
    conn.execute("UPDATE meta SET value='999' WHERE key='schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(StorageError, match="schema version 999"):
        SqliteStore(db)


_SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE acceptor (id INTEGER PRIMARY KEY CHECK (id = 1), promised_counter INTEGER NOT NULL,
    promised_server TEXT NOT NULL, caught_up INTEGER NOT NULL);
CREATE TABLE products (firm INTEGER NOT NULL, product INTEGER NOT NULL,
    epoch_counter INTEGER NOT NULL, epoch_server TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (firm, product));
CREATE TABLE handles (firm INTEGER NOT NULL, product INTEGER NOT NULL, handle TEXT NOT NULL,
    seats INTEGER NOT NULL, client_id TEXT NOT NULL, request_id TEXT NOT NULL,
    granted_at REAL NOT NULL, PRIMARY KEY (firm, product, handle));
CREATE TABLE installed (firm INTEGER NOT NULL, product INTEGER NOT NULL,
    tmr_id INTEGER NOT NULL, PRIMARY KEY (firm, product));
CREATE TABLE usage (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL,
    recorded_at REAL NOT NULL, event TEXT NOT NULL, firm INTEGER NOT NULL,
    product INTEGER NOT NULL, handle TEXT NOT NULL, seats INTEGER NOT NULL,
    client_id TEXT NOT NULL);
INSERT INTO meta VALUES ('schema_version', '1'), ('created_at', '1700000000.0');
INSERT INTO acceptor VALUES (1, 2, 's2', 1);
INSERT INTO products VALUES (6000123, 42, 2, 's2', 7);
INSERT INTO handles VALUES (6000123, 42, 'h1', 2, 'c1', 'r-h1', 1700000000.5),
    (6000123, 42, 'h3', 1, 'c1', 'r-h3', 1700000000.5);
INSERT INTO installed VALUES (6000123, 42, 7);
INSERT INTO usage (id, at, recorded_at, event, firm, product, handle, seats, client_id) VALUES
    (41, 1.0, 1.0, 'granted', 6000123, 42, 'h1', 2, 'c1'),
    (42, 2.0, 2.0, 'granted', 6000123, 42, 'h2', 1, 'c1'),
    (43, 3.0, 3.0, 'released', 6000123, 42, 'h2', 1, 'c1'),
    (44, 4.0, 4.0, 'granted', 6000123, 42, 'h3', 1, 'c1');
"""


def _write_schema_1(db: Path, extra: str = "") -> None:
    db.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db)
    try:
        conn.executescript(_SCHEMA_1 + extra)
    finally:
        conn.close()


def _dump(db: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _tables(db: Path) -> dict[str, str]:
    """Table name -> its CREATE statement."""
    out: dict[str, str] = {}
    for name, sql in _dump(db, "SELECT name, sql FROM sqlite_master WHERE type = 'table'"):
        assert isinstance(name, str) and isinstance(sql, str)
        out[name] = sql
    return out


def test_a_schema_1_database_is_migrated_with_every_row(db: Path) -> None:
    _write_schema_1(db)
    store = SqliteStore(db)
    try:
        state = store.load()
        assert state.promised == E2 and state.caught_up
        assert state.products[KEY].version == Version(E2, 7)
        assert state.products[KEY].handles == {"h1": rec("h1", 2), "h3": rec("h3")}
        assert store.installed_tmr_ids() == {KEY: 7}
        assert [(u.id, u.event, u.handle) for u in store.usage()] == [
            (41, "granted", "h1"),
            (42, "granted", "h2"),
            (43, "released", "h2"),
            (44, "granted", "h3"),
        ]
        store.commit(Write(products=(ProductWrite(KEY, Version(E2, 8), ops=(release("h1"),)),)))
        assert [(u.id, u.event, u.handle) for u in store.usage()][-1] == (45, "released", "h1")
    finally:
        store.close()
    version = _dump(db, "SELECT value FROM meta WHERE key = 'schema_version'")
    assert version == [(str(SCHEMA_VERSION),)]
    tables = _tables(db)
    assert "id INTEGER PRIMARY KEY" in tables["handles"]  # schema 9: a rowid table
    assert "WITHOUT ROWID" not in tables["handles"]
    assert "AUTOINCREMENT" not in tables["usage"]
    assert not {"handles_1", "usage_1"} & set(tables)
    reopened = SqliteStore(db)  # the current schema opens as it is
    try:
        assert reopened.load().products[KEY].handles == {"h3": rec("h3")}
    finally:
        reopened.close()


def test_a_failed_migration_leaves_the_schema_1_database_untouched(db: Path) -> None:
    _write_schema_1(db, "CREATE TABLE usage_1 (x INTEGER);")  # the migration cannot rename to it
    before = _dump(db, "SELECT * FROM handles ORDER BY handle") + _dump(db, "SELECT * FROM usage")
    with pytest.raises(StorageError, match="cannot initialise"):
        SqliteStore(db)
    after = _dump(db, "SELECT * FROM handles ORDER BY handle") + _dump(db, "SELECT * FROM usage")
    assert after == before
    assert _dump(db, "SELECT value FROM meta WHERE key = 'schema_version'") == [("1",)]


def _write_schema_2(db: Path, owner_column: bool = False) -> None:
    """A schema 2 database (handles WITHOUT ROWID, no owner column) with one handle; with
    `owner_column`, one the migration cannot be run on."""
    extra, value = (", owner TEXT", ", 'x'") if owner_column else ("", "")
    db.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db)
    try:
        conn.executescript(
            f"""
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE acceptor (id INTEGER PRIMARY KEY CHECK (id = 1),
                promised_counter INTEGER NOT NULL, promised_server TEXT NOT NULL,
                caught_up INTEGER NOT NULL);
            CREATE TABLE products (firm INTEGER NOT NULL, product INTEGER NOT NULL,
                epoch_counter INTEGER NOT NULL, epoch_server TEXT NOT NULL,
                seq INTEGER NOT NULL, PRIMARY KEY (firm, product));
            CREATE TABLE handles (firm INTEGER NOT NULL, product INTEGER NOT NULL,
                handle TEXT NOT NULL, seats INTEGER NOT NULL, client_id TEXT NOT NULL,
                request_id TEXT NOT NULL, granted_at REAL NOT NULL{extra},
                PRIMARY KEY (firm, product, handle)) WITHOUT ROWID;
            CREATE TABLE installed (firm INTEGER NOT NULL, product INTEGER NOT NULL,
                tmr_id INTEGER NOT NULL, PRIMARY KEY (firm, product));
            CREATE TABLE usage (id INTEGER PRIMARY KEY, at REAL NOT NULL,
                recorded_at REAL NOT NULL, event TEXT NOT NULL, firm INTEGER NOT NULL,
                product INTEGER NOT NULL, handle TEXT NOT NULL, seats INTEGER NOT NULL,
                client_id TEXT NOT NULL);
            INSERT INTO meta VALUES ('schema_version', '2'), ('created_at', '1700000000.0');
            INSERT INTO acceptor VALUES (1, 2, 's2', 1);
            INSERT INTO products VALUES (6000123, 42, 2, 's2', 7);
            INSERT INTO installed VALUES (6000123, 42, 7);
            INSERT INTO handles VALUES (6000123, 42, 'h1', 2, 'c1', 'r-h1', 1700000000.5{value});
            INSERT INTO usage VALUES (41, 1.0, 1.0, 'granted', 6000123, 42, 'h1', 2, 'c1');
            """
        )
    finally:
        conn.close()


def test_a_schema_2_database_gets_handle_owners_and_keeps_every_row(db: Path) -> None:
    """Handles of schema 2 had no owner: they are kept with the owner "" (no key's)."""
    _write_schema_2(db)
    store = SqliteStore(db)
    try:
        state = store.load()
        assert state.promised == E2 and state.caught_up
        assert state.products[KEY].version == Version(E2, 7)
        assert state.products[KEY].handles == {"h1": rec("h1", 2)}
        assert state.products[KEY].handles["h1"].owner == ""
        assert [(u.id, u.event, u.handle) for u in store.usage()] == [(41, "granted", "h1")]
        owned = HandleRecord("h2", KEY[0], KEY[1], 1, "c2", "r-h2", 1.5, "K" * 40)
        store.commit(Write(products=(ProductWrite(KEY, Version(E2, 8), ops=(Grant(owned),)),)))
    finally:
        store.close()
    version = _dump(db, "SELECT value FROM meta WHERE key = 'schema_version'")
    assert version == [(str(SCHEMA_VERSION),)]
    reopened = SqliteStore(db)
    try:
        handles = reopened.load().products[KEY].handles
        assert handles["h2"].owner == "K" * 40 and handles["h1"].owner == ""
    finally:
        reopened.close()


def test_a_failed_migration_leaves_the_schema_2_database_untouched(db: Path) -> None:
    _write_schema_2(db, owner_column=True)  # the migration cannot add the column again
    before = _dump(db, "SELECT * FROM handles") + _dump(db, "SELECT * FROM usage")
    with pytest.raises(StorageError, match="cannot initialise"):
        SqliteStore(db)
    assert _dump(db, "SELECT * FROM handles") + _dump(db, "SELECT * FROM usage") == before
    assert _dump(db, "SELECT value FROM meta WHERE key = 'schema_version'") == [("2",)]


def test_handle_owners_survive_grants_snapshots_and_restarts(store: SqliteStore) -> None:
    a = HandleRecord("h1", KEY[0], KEY[1], 1, "c1", "r1", 1.5, "A" * 40)
    b = HandleRecord("h2", KEY[0], KEY[1], 2, "c1", "r2", 2.5, "B" * 40)
    store.commit(Write(products=(ProductWrite(KEY, Version(E1, 1), ops=(Grant(a),)),)))
    assert store.load().products[KEY].handles == {"h1": a}
    store.commit(Write(products=(ProductWrite(KEY, Version(E2, 0), replace=(a, b)),)))
    assert reopen(store).products[KEY].handles == {"h1": a, "h2": b}


def _write_schema_4(db: Path) -> None:
    """A schema 4 database (handles with owners, products with floors, no client identity)
    with one handle, as the previous release of the backend leaves it."""
    _write_schema_2(db)
    conn = sqlite3.connect(db)
    try:
        conn.executescript(
            """
            ALTER TABLE handles ADD COLUMN owner TEXT NOT NULL DEFAULT '';
            ALTER TABLE products ADD COLUMN tmr_floor INTEGER NOT NULL DEFAULT 0;
            ALTER TABLE products ADD COLUMN time_floor REAL NOT NULL DEFAULT 0;
            UPDATE handles SET owner = 'K' || substr(hex(zeroblob(20)), 1, 39);
            UPDATE products SET tmr_floor = 7, time_floor = 1700000000.0;
            UPDATE meta SET value = '4' WHERE key = 'schema_version';
            """
        )
    finally:
        conn.close()


def test_a_schema_4_database_gets_empty_client_identity_and_keeps_every_row(db: Path) -> None:
    _write_schema_4(db)
    store = SqliteStore(db)
    try:
        log = store.load().products[KEY]
        old = log.handles["h1"]
        assert old.owner.startswith("K") and len(old.owner) == 40
        assert (old.user, old.host, old.pid) == ("", "", 0)
        assert (log.floor.tmr_id, log.floor.time) == (7, 1_700_000_000.0)
        new = HandleRecord("h2", KEY[0], KEY[1], 1, "c2", "r2", 1.5, "B" * 40, "bob", "ws-2", 99)
        store.commit(Write(products=(ProductWrite(KEY, Version(E2, 8), ops=(Grant(new),)),)))
    finally:
        store.close()
    assert _dump(db, "SELECT value FROM meta WHERE key = 'schema_version'") == [
        (str(SCHEMA_VERSION),)
    ]
    reopened = SqliteStore(db)
    try:
        handles = reopened.load().products[KEY].handles
        assert handles["h2"] == new and handles["h1"] == old
    finally:
        reopened.close()


def test_a_schema_2_database_is_migrated_through_to_client_identity(db: Path) -> None:
    _write_schema_2(db)
    store = SqliteStore(db)
    try:
        assert store.load().products[KEY].handles["h1"].user == ""
    finally:
        store.close()
    columns = [r[1] for r in _dump(db, "PRAGMA table_info(handles)")]
    assert columns[-5:] == ["owner", "user", "host", "pid", "mode"]


def _write_schema_5(db: Path) -> None:
    """A schema 5 database (handles with the client's user, host and pid, no mode), as the
    release before access modes leaves it."""
    _write_schema_4(db)
    conn = sqlite3.connect(db)
    try:
        conn.executescript(
            """
            ALTER TABLE handles ADD COLUMN user TEXT NOT NULL DEFAULT '';
            ALTER TABLE handles ADD COLUMN host TEXT NOT NULL DEFAULT '';
            ALTER TABLE handles ADD COLUMN pid INTEGER NOT NULL DEFAULT 0;
            UPDATE handles SET user = 'alice', host = 'ws-1', pid = 42;
            UPDATE meta SET value = '5' WHERE key = 'schema_version';
            """
        )
    finally:
        conn.close()


def test_a_schema_5_database_gets_user_limit_handles_and_keeps_every_row(db: Path) -> None:
    _write_schema_5(db)
    store = SqliteStore(db)
    try:
        log = store.load().products[KEY]
        old = log.handles["h1"]
        assert (old.user, old.host, old.pid, old.mode) == ("alice", "ws-1", 42, "user_limit")
        assert log.seats() == old.seats
        new = HandleRecord(
            "h2", KEY[0], KEY[1], 1, "c2", "r2", 1.5, "B" * 40, "bob", "ws-2", 99,
            AccessMode.STATION_SHARE,
        )  # fmt: skip
        store.commit(Write(products=(ProductWrite(KEY, Version(E2, 8), ops=(Grant(new),)),)))
    finally:
        store.close()
    assert _dump(db, "SELECT value FROM meta WHERE key = 'schema_version'") == [
        (str(SCHEMA_VERSION),)
    ]
    reopened = SqliteStore(db)
    try:
        log = reopened.load().products[KEY]
        assert log.handles["h2"] == new and log.handles["h1"] == old
        assert log.handles["h2"].mode is AccessMode.STATION_SHARE
        assert log.seats() == old.seats + 1
    finally:
        reopened.close()


def test_modes_survive_snapshots_and_restarts(store: SqliteStore) -> None:
    a = HandleRecord("h1", KEY[0], KEY[1], 2, "c1", "r1", 1.5, "A" * 40, "u", "h", 1,
                     AccessMode.STATION_SHARE)  # fmt: skip
    b = HandleRecord("h2", KEY[0], KEY[1], 3, "c1", "r2", 2.5, "A" * 40, "u", "h", 2,
                     AccessMode.STATION_SHARE)  # fmt: skip
    store.commit(Write(products=(ProductWrite(KEY, Version(E2, 0), replace=(a, b)),)))
    log = reopen(store).products[KEY]
    assert log.handles == {"h1": a, "h2": b} and log.seats() == 3


def test_an_unknown_mode_in_the_database_is_a_storage_error(db: Path, store: SqliteStore) -> None:
    a = HandleRecord("h1", KEY[0], KEY[1], 1, "c1", "r1", 1.5, "A" * 40)
    store.commit(Write(products=(ProductWrite(KEY, Version(E1, 1), ops=(Grant(a),)),)))
    conn = sqlite3.connect(db)
    try:
        conn.execute("UPDATE handles SET mode = 'borrowed'")
        conn.commit()
    finally:
        conn.close()
    with pytest.raises(StorageError, match="cannot read"):
        store.load()


def test_client_identity_survives_grants_snapshots_and_restarts(store: SqliteStore) -> None:
    a = HandleRecord("h1", KEY[0], KEY[1], 1, "c1", "r1", 1.5, "A" * 40, "alice", "ws-1", 10)
    b = HandleRecord("h2", KEY[0], KEY[1], 2, "c1", "r2", 2.5, "B" * 40, "Bob B.", "ws-2", 20)
    store.commit(Write(products=(ProductWrite(KEY, Version(E1, 1), ops=(Grant(a),)),)))
    assert store.load().products[KEY].handles == {"h1": a}
    store.commit(Write(products=(ProductWrite(KEY, Version(E2, 0), replace=(a, b)),)))
    handles = reopen(store).products[KEY].handles
    assert handles == {"h1": a, "h2": b}
    assert (handles["h2"].user, handles["h2"].host, handles["h2"].pid) == ("Bob B.", "ws-2", 20)


def test_not_a_database_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.sqlite3"
    path.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(StorageError, match=str(path)):
        SqliteStore(path)


# ------------------------------------------------------------------ round trips


def test_promise_and_caught_up_round_trip(store: SqliteStore) -> None:
    store.commit(Write(promised=E1))
    assert store.load() == AcceptorState(E1, caught_up=False)
    store.commit(Write(caught_up=True))
    assert reopen(store) == AcceptorState(E1, caught_up=True)


def test_ops_round_trip(store: SqliteStore) -> None:
    writes = [
        Write(promised=E1),
        Write(products=(ProductWrite(KEY, Version(E1, 1), ops=(grant("h1", 2), grant("h2"))),)),
        Write(
            products=(
                ProductWrite(KEY, Version(E1, 2), ops=(release("h1"), grant("h3", 3))),
                ProductWrite(OTHER, Version(E1, 1), ops=(grant("x1", 1, OTHER),)),
            )
        ),
    ]
    expected = commit_all(store, writes)
    assert store.load() == expected
    assert reopen(store) == expected
    assert set(expected.products[KEY].handles) == {"h2", "h3"}
    assert expected.products[KEY].seats() == 4


def test_one_op_commit_runs_seven_statements_with_one_commit(store: SqliteStore) -> None:
    """The statements of a lone replicated op (a backend at low load commits each ACCEPT on
    its own, and every statement costs CPU: docs/performance.md). A new one shows here."""
    store.load()
    commit_grant(store, 1)  # the usage record's first trim and the map read are behind us
    seen: list[str] = []
    conn = store._conn
    assert conn is not None
    conn.set_trace_callback(lambda sql: seen.append(sql.split("(")[0].split(" WHERE")[0]))
    store.commit(
        Write(
            products=(ProductWrite(KEY, Version(E1, 2), ops=(release("h1"),)),),
            known=((KEY, Version(E1, 1)),),
        )
    )
    conn.set_trace_callback(None)
    assert seen == [
        "BEGIN IMMEDIATE",
        "PRAGMA data_version",
        "DELETE FROM handles",
        "INSERT INTO products ",
        "INSERT INTO known_commits ",
        "INSERT INTO usage ",
        "COMMIT",
    ]
    assert reopen(store).known == {KEY: Version(E1, 1)}


def test_grant_of_a_held_handle_keeps_the_first_and_release_is_idempotent(
    store: SqliteStore,
) -> None:
    first = rec("h1", 1)
    again = HandleRecord("h1", KEY[0], KEY[1], 5, "c9", "other", 1.0)
    writes = [
        Write(products=(ProductWrite(KEY, Version(E1, 1), ops=(Grant(first),)),)),
        Write(products=(ProductWrite(KEY, Version(E1, 2), ops=(Grant(again),)),)),
        Write(products=(ProductWrite(KEY, Version(E1, 3), ops=(release("nope"),)),)),
    ]
    expected = commit_all(store, writes)
    assert reopen(store) == expected
    assert expected.products[KEY].handles["h1"] == first


def test_replace_drops_every_row_of_the_product_only(store: SqliteStore) -> None:
    writes = [
        Write(
            products=(
                ProductWrite(KEY, Version(E1, 1), ops=(grant("h1"), grant("h2"))),
                ProductWrite(OTHER, Version(E1, 1), ops=(grant("x1", 1, OTHER),)),
            )
        ),
        Write(
            promised=E2,
            caught_up=True,
            products=(ProductWrite(KEY, Version(E2, 0), replace=(rec("h9", 4), rec("h2"))),),
        ),
    ]
    expected = commit_all(store, writes)
    state = reopen(store)
    assert state == expected
    assert set(state.products[KEY].handles) == {"h9", "h2"}
    assert set(state.products[OTHER].handles) == {"x1"}
    assert state.products[KEY].version == Version(E2, 0)


def test_empty_replace_clears_the_table(store: SqliteStore) -> None:
    writes = [
        Write(products=(ProductWrite(KEY, Version(E1, 1), ops=(grant("h1"),)),)),
        Write(products=(ProductWrite(KEY, Version(E2, 0), replace=()),)),
    ]
    expected = commit_all(store, writes)
    assert reopen(store) == expected
    assert expected.products[KEY].handles == {}


def test_replace_with_a_repeated_handle_keeps_the_last_like_a_dict(store: SqliteStore) -> None:
    w = Write(products=(ProductWrite(KEY, Version(E1, 0), replace=(rec("h1", 1), rec("h1", 3))),))
    expected = commit_all(store, [w])
    assert reopen(store) == expected
    assert expected.products[KEY].handles["h1"].seats == 3


def test_version_only_write_creates_an_empty_log(store: SqliteStore) -> None:
    expected = commit_all(store, [Write(products=(ProductWrite(KEY, Version(E1, 0)),))])
    assert reopen(store) == expected
    assert expected.products[KEY].version == Version(E1, 0)


# ------------------------------------------------------------------ failures


def test_commit_on_a_closed_store_raises_and_changes_nothing(store: SqliteStore) -> None:
    expected = commit_all(store, [Write(promised=E1)])
    store.close()
    with pytest.raises(StorageError, match="closed"):
        store.commit(Write(promised=E2))
    assert reopen(store) == expected


def test_commit_on_a_read_only_connection_raises_and_changes_nothing(store: SqliteStore) -> None:
    expected = commit_all(
        store, [Write(products=(ProductWrite(KEY, Version(E1, 1), ops=(grant("h1"),)),))]
    )
    conn = store._conn
    assert conn is not None
    conn.execute("PRAGMA query_only = 1")  # every write now fails like a read-only file
    with pytest.raises(StorageError, match="readonly"):
        store.commit(Write(promised=E2))
    assert store.load() == expected
    assert reopen(store) == expected


def test_a_failure_mid_transaction_rolls_back_the_whole_write(store: SqliteStore, db: Path) -> None:
    expected = commit_all(store, [Write(promised=E1)])
    conn = sqlite3.connect(db)
    conn.execute(
        "CREATE TRIGGER fail_handles BEFORE INSERT ON handles "
        "BEGIN SELECT RAISE(ABORT, 'injected disk error'); END"
    )
    conn.commit()
    conn.close()
    bad = Write(
        promised=E2,
        caught_up=True,
        products=(
            ProductWrite(OTHER, Version(E2, 1), ops=(release("x"),)),  # no insert: succeeds
            ProductWrite(KEY, Version(E2, 1), ops=(grant("h1"),)),  # trigger fires here
        ),
    )
    with pytest.raises(StorageError, match="injected disk error"):
        store.commit(bad)
    assert store.load() == expected  # promise, flag and the first product all rolled back
    assert reopen(store) == expected


def test_store_keeps_working_after_a_failed_commit(store: SqliteStore) -> None:
    conn = store._conn
    assert conn is not None
    conn.execute("PRAGMA query_only = 1")
    with pytest.raises(StorageError):
        store.commit(Write(promised=E1))
    conn.execute("PRAGMA query_only = 0")
    store.commit(Write(promised=E2))
    assert reopen(store).promised == E2


def test_unwritable_location_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageError, match="cannot open"):
        SqliteStore(blocker / "db.sqlite3")


# ------------------------------------------------------------------ durability


def test_promise_is_never_lost_across_reopen(store: SqliteStore) -> None:
    for counter in range(1, 6):
        store.commit(Write(promised=Epoch(counter, "s1")))
        assert reopen(store).promised == Epoch(counter, "s1")
        store = SqliteStore(store.path)  # like a restarted process
    store.close()


def test_state_after_reopen_equals_committed_state_without_close(db: Path) -> None:
    """kill -9 is simulated by abandoning the connection: WAL content is already durable."""
    first = SqliteStore(db)
    writes = [
        Write(promised=E1),
        Write(products=(ProductWrite(KEY, Version(E1, 1), ops=(grant("h1", 2),)),)),
        Write(products=(ProductWrite(KEY, Version(E1, 2), ops=(grant("h2", 1),)),)),
    ]
    expected = commit_all(first, writes)
    second = SqliteStore(db)  # the first connection is still open and never checkpointed
    try:
        assert second.load() == expected
    finally:
        second.close()
        first.close()


# ------------------------------------------------------------------ installed TMR IDs


def test_installed_tmr_ids_only_go_up(store: SqliteStore) -> None:
    store.set_installed_tmr_ids({KEY: 7, OTHER: 3})
    store.set_installed_tmr_ids({KEY: 5, OTHER: 4})
    assert store.installed_tmr_ids() == {KEY: 7, OTHER: 4}
    store.close()
    again = SqliteStore(store.path)
    try:
        assert again.installed_tmr_ids() == {KEY: 7, OTHER: 4}
    finally:
        again.close()


# ------------------------------------------------------------------ usage record


def test_usage_records_committed_ops(store: SqliteStore) -> None:
    commit_all(
        store,
        [
            Write(products=(ProductWrite(KEY, Version(E1, 1), ops=(grant("h1", 2),)),)),
            Write(products=(ProductWrite(KEY, Version(E1, 2), ops=(grant("h1", 2),)),)),  # dup
            Write(products=(ProductWrite(KEY, Version(E1, 3), ops=(grant("h2"),)),)),
            Write(
                products=(
                    ProductWrite(
                        KEY,
                        Version(E1, 4),
                        ops=(release("h1"), release("h2", ReleaseReason.EXPIRE), release("zz")),
                    ),
                )
            ),
        ],
    )
    usage = store.usage()
    assert [(u.event, u.handle, u.seats, u.client_id) for u in usage] == [
        ("granted", "h1", 2, "c1"),
        ("granted", "h2", 1, "c1"),
        ("released", "h1", 2, "c1"),
        ("expired", "h2", 1, "c1"),
    ]
    assert usage[0].at == 1_700_000_000.5
    assert usage[2].at == 1_700_000_100.25
    assert all((u.firm, u.product) == KEY for u in usage)
    assert [u.handle for u in store.usage(limit=1)] == ["h2"]


def test_one_group_records_usage_in_op_order_across_writes_and_products(
    store: SqliteStore,
) -> None:
    """A group commit collects the usage rows of all its writes and writes them together:
    the record must still follow the ops one by one (ids in op order, a grant of a handle
    already held and a release of one not held leave no row, a handle released and granted
    again within the group has both rows) and match a commit of each write in turn."""
    writes = [
        Write(
            products=(
                ProductWrite(KEY, Version(E1, 1), ops=(grant("h1"), release("h1"), grant("h1", 3))),
                ProductWrite(OTHER, Version(E1, 1), ops=(grant("x1", 2, OTHER), release("zz"))),
            )
        ),
        Write(products=(ProductWrite(KEY, Version(E1, 2), ops=(grant("h1"), release("h1"))),)),
    ]
    expected = AcceptorState(ZERO_EPOCH, caught_up=False)
    for w in writes:
        apply_write(expected, w)
    store.commit_many(writes)
    assert reopen(store) == expected
    usage = store.usage()
    assert [(u.event, u.firm, u.product, u.handle, u.seats) for u in usage] == [
        ("granted", *KEY, "h1", 1),
        ("released", *KEY, "h1", 1),
        ("granted", *KEY, "h1", 3),
        ("granted", *OTHER, "x1", 2),
        ("released", *KEY, "h1", 3),
    ]
    assert [u.id for u in usage] == sorted(u.id for u in usage)
    assert len({u.recorded_at for u in usage}) == 1  # one transaction, one commit time


def test_usage_record_is_bounded(db: Path) -> None:
    store = SqliteStore(db, usage_retention=5)
    try:
        for seq in range(1, 13):
            commit_grant(store, seq)
        usage = store.usage()
        assert [u.handle for u in usage] == [f"h{i}" for i in range(8, 13)]
    finally:
        store.close()


def test_usage_is_trimmed_in_batches_of_one_percent(db: Path) -> None:
    """Above 100 rows of retention, old rows go in batches of 1 % of it: never fewer than
    the retention kept, never more than 1 % above it, always the newest ones."""
    store = SqliteStore(db, usage_retention=300)  # batches of 3 rows
    try:
        counts = []
        for seq in range(1, 401):
            commit_grant(store, seq)
            usage = store.usage()
            counts.append(len(usage))
            assert [u.handle for u in usage][-1] == f"h{seq}"
            assert [u.handle for u in usage] == [
                f"h{i}" for i in range(seq - len(usage) + 1, seq + 1)
            ]
        assert max(counts) == 303 and min(counts[300:]) == 300
        assert len(set(counts[300:])) > 1  # trimmed in batches, not on every commit
    finally:
        store.close()


def test_a_lower_retention_applies_at_the_first_commit(db: Path) -> None:
    store = SqliteStore(db, usage_retention=1000)
    try:
        for seq in range(1, 51):
            commit_grant(store, seq)
    finally:
        store.close()
    store = SqliteStore(db, usage_retention=10)
    try:
        store.commit(Write(products=(ProductWrite(KEY, Version(E1, 51), ops=(release("h1"),)),)))
        assert len(store.usage()) == 10
    finally:
        store.close()


def test_failed_commit_records_no_usage(store: SqliteStore) -> None:
    conn = store._conn
    assert conn is not None
    conn.execute("PRAGMA query_only = 1")
    with pytest.raises(StorageError):
        store.commit(Write(products=(ProductWrite(KEY, Version(E1, 1), ops=(grant("h1"),)),)))
    conn.execute("PRAGMA query_only = 0")
    assert store.usage() == []


def test_a_schema_6_database_keeps_its_denials_and_gets_user_limit_handles(db: Path) -> None:
    """Schema 6 (the denial record, handles without a mode) upgrades to 7 in place."""
    _write_schema_5(db)
    conn = sqlite3.connect(db)
    try:
        conn.execute(
            "CREATE TABLE denials (id INTEGER PRIMARY KEY, uid TEXT NOT NULL UNIQUE, "
            "at REAL NOT NULL, recorded_at REAL NOT NULL, server TEXT NOT NULL, "
            "code TEXT NOT NULL, firm INTEGER NOT NULL, product INTEGER NOT NULL, "
            "seats INTEGER NOT NULL, owner TEXT NOT NULL, user TEXT NOT NULL, "
            "host TEXT NOT NULL, pid INTEGER NOT NULL, rule TEXT NOT NULL, "
            "times INTEGER NOT NULL, last REAL NOT NULL)"
        )
        conn.execute(
            "INSERT INTO denials VALUES (1, 'u1', 1.0, 1.0, 'tmr-a', 'NO_LICENSE_AVAILABLE', "
            "1, 2, 1, 'K', 'alice', 'ws-1', 7, '', 1, 1.0)"
        )
        conn.execute("UPDATE meta SET value = '6' WHERE key = 'schema_version'")
        conn.commit()
    finally:
        conn.close()
    store = SqliteStore(db)
    try:
        old = store.load().products[KEY].handles["h1"]
        assert old.mode is AccessMode.USER_LIMIT
        assert [d.id for d in store.denials()] == ["u1"]
    finally:
        store.close()
    assert _dump(db, "SELECT value FROM meta WHERE key = 'schema_version'") == [
        (str(SCHEMA_VERSION),)
    ]


# ------------------------------------------------------------------ commit knowledge (schema 8)


def knowledge_writes() -> list[Write]:
    """Entries 1 and 2 (2 flagged: its grant is marked), then commit notices of 2 and 1."""
    return [
        Write(products=(ProductWrite(KEY, Version(E1, 1), ops=(grant("h1"),)),)),
        Write(
            products=(ProductWrite(KEY, Version(E1, 2), ops=(grant("h2"),)),),
            marks=((KEY, (("h2", Version(E1, 2)),)),),
        ),
        Write(known=((KEY, Version(E1, 1)), (OTHER, Version(E1, 4)))),
    ]


def test_known_commits_and_marks_survive_reopen_and_only_rise(store: SqliteStore) -> None:
    expected = commit_all(store, knowledge_writes())
    assert expected.known == {KEY: Version(E1, 1), OTHER: Version(E1, 4)}
    assert reopen(store) == expected
    again = SqliteStore(store.path)
    try:
        again.commit(Write(known=((KEY, Version(E1, 0)),)))  # lower: no change
        assert again.load().known[KEY] == Version(E1, 1)
        again.commit(Write(known=((KEY, Version(E2, 0)),), marks=((KEY, ()),)))
        state = again.load()
        assert state.known[KEY] == Version(E2, 0) and state.products[KEY].marked == {}
    finally:
        again.close()


def test_a_commit_notice_is_durable_when_the_acceptor_answers(db: Path) -> None:
    """The acceptor's step for a bare commit notice carries a write (the service commits it
    before replying): a new process reads the knowledge back."""
    first = SqliteStore(db)
    acc = Acceptor("b1", first.load())
    step = acc.handle(Accept(1, E1, (), ((KEY, 3),)), 0.0)
    assert step.write is not None and step.write.known == ((KEY, Version(E1, 3)),)
    first.commit(step.write)
    acc.committed(step)
    assert acc.known_commit == {KEY: Version(E1, 3)}
    second = SqliteStore(db)  # the first connection is abandoned, never closed (kill -9)
    try:
        assert second.load().known == {KEY: Version(E1, 3)}
    finally:
        second.close()
        first.close()


def test_known_commits_survive_a_killed_process(db: Path) -> None:
    """kill -9 for real: a child process commits the knowledge and is killed by SIGKILL."""
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from tmr.backend.store import SqliteStore\n"
        "from tmr.replication.acceptor import Write\n"
        "from tmr.replication.types import Epoch, Version\n"
        "s = SqliteStore(Path(sys.argv[1]))\n"
        "s.commit(Write(known=(((6000123, 42), Version(Epoch(1, 's1'), 7)),)))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", code, str(db)], check=False, env=env, timeout=60)
    assert done.returncode == -signal.SIGKILL
    store = SqliteStore(db)
    try:
        assert store.load().known == {KEY: Version(E1, 7)}
    finally:
        store.close()


def test_a_schema_7_database_gains_commit_knowledge_and_keeps_every_row(db: Path) -> None:
    store = SqliteStore(db)
    expected = commit_all(store, knowledge_writes()[:1])
    store.close()
    conn = sqlite3.connect(db)  # make it a database of schema 7: no knowledge tables
    with conn:
        conn.execute("DROP TABLE known_commits")
        conn.execute("DROP TABLE marked_grants")
        conn.execute("UPDATE meta SET value = '7' WHERE key = 'schema_version'")
    conn.close()
    migrated = SqliteStore(db)
    try:
        assert migrated.load() == expected
        migrated.commit(Write(known=((KEY, Version(E1, 1)),)))
        assert migrated.load().known == {KEY: Version(E1, 1)}
    finally:
        migrated.close()
    assert _dump(db, "SELECT value FROM meta WHERE key = 'schema_version'") == [
        (str(SCHEMA_VERSION),)
    ]
