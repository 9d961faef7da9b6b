"""The backend store keeps the replicated floors: written with the product's version, never
lowered, and added to a schema 2 or 3 database in its opening transaction (all or nothing)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tmr.backend.store import SCHEMA_VERSION, SqliteStore, StorageError
from tmr.replication.acceptor import AcceptorState, ProductWrite, Write, apply_write
from tmr.replication.types import ZERO_EPOCH, Epoch, Floor, Grant, HandleRecord, Version

KEY = (6_000_123, 42)
E1 = Epoch(1, "s1")
WALL = 1_800_000_000.0


def rec(handle: str) -> HandleRecord:
    return HandleRecord(handle, KEY[0], KEY[1], 1, "c1", f"r-{handle}", 1.5)


def test_floors_are_durable_and_never_lowered(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite3"
    writes = [
        Write(products=(ProductWrite(KEY, Version(E1, 1), ops=(Floor(8, WALL), Grant(rec("h")))),)),
        Write(products=(ProductWrite(KEY, Version(E1, 2), ops=(Floor(7, WALL - 5),)),)),
        Write(products=(ProductWrite(KEY, Version(E1, 3), replace=(), floor=Floor(6, WALL + 9)),)),
    ]
    store = SqliteStore(db)
    mirror = AcceptorState(ZERO_EPOCH, False)
    try:
        for w in writes:
            store.commit(w)
            apply_write(mirror, w)
    finally:
        store.close()
    reopened = SqliteStore(db)
    try:
        state = reopened.load()
    finally:
        reopened.close()
    assert state.products[KEY].floor == Floor(8, WALL + 9) == mirror.products[KEY].floor
    assert state.products[KEY].version == Version(E1, 3)


_SCHEMA_3_PRODUCTS = """
CREATE TABLE products (firm INTEGER NOT NULL, product INTEGER NOT NULL,
    epoch_counter INTEGER NOT NULL, epoch_server TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (firm, product));
INSERT INTO products VALUES (6000123, 42, 1, 's1', 7);
"""


def _old_database(db: Path, version: str, extra: str = "") -> None:
    """A database of schema ``version`` (2 or 3): the current tables, ``products`` without
    floors, ``handles`` without the client's user, host and pid (and without owners for 2)."""
    store = SqliteStore(db)
    store.close()
    conn = sqlite3.connect(db)
    try:
        conn.executescript(
            "DROP TABLE products;"
            + _SCHEMA_3_PRODUCTS
            + (
                "DROP TABLE handles; CREATE TABLE handles (firm INTEGER NOT NULL, "
                "product INTEGER NOT NULL, handle TEXT NOT NULL, seats INTEGER NOT NULL, "
                "client_id TEXT NOT NULL, request_id TEXT NOT NULL, granted_at REAL NOT NULL, "
                "PRIMARY KEY (firm, product, handle)) WITHOUT ROWID;"
                if version == "2"
                else "DROP TABLE handles; CREATE TABLE handles (firm INTEGER NOT NULL, "
                "product INTEGER NOT NULL, handle TEXT NOT NULL, seats INTEGER NOT NULL, "
                "client_id TEXT NOT NULL, request_id TEXT NOT NULL, granted_at REAL NOT NULL, "
                "owner TEXT NOT NULL DEFAULT '', PRIMARY KEY (firm, product, handle)) "
                "WITHOUT ROWID;"  # schema 3 and 4: no user, host, pid (schema 5)
            )
            + "INSERT INTO handles (firm, product, handle, seats, client_id, request_id, "
            "granted_at) VALUES (6000123, 42, 'h1', 2, 'c1', 'r-h1', 1.5);"
            + f"UPDATE meta SET value = '{version}' WHERE key = 'schema_version';"
            + extra
        )
    finally:
        conn.close()


def _dump(db: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize("version", ["2", "3"])
def test_an_older_database_gets_the_floors(tmp_path: Path, version: str) -> None:
    db = tmp_path / "s.sqlite3"
    _old_database(db, version)
    store = SqliteStore(db)
    try:
        state = store.load()
        assert state.products[KEY].version == Version(E1, 7)
        assert state.products[KEY].floor == Floor()
        assert state.products[KEY].handles["h1"].seats == 2
        store.commit(Write(products=(ProductWrite(KEY, Version(E1, 8), ops=(Floor(8, WALL),)),)))
        assert store.load().products[KEY].floor == Floor(8, WALL)
    finally:
        store.close()
    assert _dump(db, "SELECT value FROM meta WHERE key = 'schema_version'") == [
        (str(SCHEMA_VERSION),)
    ]


def test_a_failed_migration_leaves_the_schema_3_database_untouched(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite3"
    # A column the migration cannot add (it exists already, with another meaning).
    _old_database(db, "3", "ALTER TABLE products ADD COLUMN time_floor TEXT;")
    before = _dump(db, "SELECT * FROM products") + _dump(db, "SELECT * FROM handles")
    with pytest.raises(StorageError, match="cannot initialise"):
        SqliteStore(db)
    after = _dump(db, "SELECT * FROM products") + _dump(db, "SELECT * FROM handles")
    assert after == before
    columns = [row[1] for row in _dump(db, "PRAGMA table_info(products)")]
    assert "tmr_floor" not in columns  # the first ALTER was rolled back with the rest
    assert _dump(db, "SELECT value FROM meta WHERE key = 'schema_version'") == [("3",)]
