"""The handle table of schema 9: rows in grant order, found through the store's in-memory map.

The map (firm, product) -> handle -> row id must always equal the table: after every commit,
after a commit that failed and rolled back, after a reopen or a killed process, and after
another connection wrote the database. A property test drives random group commits of
grants, releases, snapshots (aborts, catch-up, license removal), failed commits and reopens
against `apply_write` on an in-memory state.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.backend.test_store import _dump, _tables
from tmr.backend.store import SCHEMA_VERSION, SqliteStore, StorageError
from tmr.replication.acceptor import AcceptorState, ProductWrite, Write, apply_write
from tmr.replication.types import (
    ZERO_EPOCH,
    Epoch,
    Grant,
    HandleRecord,
    Op,
    ProductKey,
    Release,
    ReleaseReason,
    Version,
)

KEY = (6_000_123, 42)
OTHER = (6_000_123, 43)
E1 = Epoch(1, "s1")
BOOM = "boom"  # a grant of this handle fails its transaction (trigger `_inject_failure`)


def rec(handle: str, seats: int = 1, key: ProductKey = KEY, at: float = 1.7e9) -> HandleRecord:
    return HandleRecord(handle, key[0], key[1], seats, "c1", f"r-{handle}", at)


def grants(key: ProductKey, seq: int, *handles: str) -> Write:
    ops = tuple(Grant(rec(h, key=key)) for h in handles)
    return Write(products=(ProductWrite(key, Version(E1, seq), ops=ops),))


def releases(key: ProductKey, seq: int, *handles: str) -> Write:
    ops = tuple(Release(h, ReleaseReason.RELEASE, 2.0) for h in handles)
    return Write(products=(ProductWrite(key, Version(E1, seq), ops=ops),))


def table(conn: sqlite3.Connection) -> dict[tuple[ProductKey, str], int]:
    """(product, handle) -> row id, as in the table; a handle with two rows fails."""
    rows = conn.execute("SELECT id, firm, product, handle FROM handles").fetchall()
    out = {((firm, product), h): row for row, firm, product, h in rows}
    assert len(out) == len(rows), "a handle has two rows"
    return out


def mapped(store: SqliteStore) -> dict[tuple[ProductKey, str], int]:
    """The store's map, flattened like `table`."""
    assert store._ids is not None
    assert all(store._ids.values()), "a product with no rows is kept in the map"
    return {(key, h): row for key, held in store._ids.items() for h, row in held.items()}


def assert_map_is_table(store: SqliteStore) -> None:
    assert store._conn is not None
    assert mapped(store) == table(store._conn)
    assert store._next_id > max(table(store._conn).values(), default=0)


def _inject_failure(db: Path) -> None:
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(
            f"CREATE TRIGGER fail_boom BEFORE INSERT ON handles WHEN NEW.handle = '{BOOM}' "
            "BEGIN SELECT RAISE(ABORT, 'injected disk error'); END"
        )
    conn.close()


def test_rows_are_in_grant_order_with_no_index_on_the_handle(store: SqliteStore, db: Path) -> None:
    store.load()
    store.commit_many([grants(KEY, 1, "zz", "aa", "mm"), grants(OTHER, 1, "bb")])
    assert store._conn is not None
    rows = store._conn.execute("SELECT handle FROM handles ORDER BY id").fetchall()
    assert rows == [("zz",), ("aa",), ("mm",), ("bb",)]
    assert (
        store._conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'handles'"
        ).fetchall()
        == []
    )
    assert_map_is_table(store)


def test_a_failed_group_commit_leaves_the_map_equal_to_the_table(
    store: SqliteStore, db: Path
) -> None:
    store.load()
    store.commit(grants(KEY, 1, "h1", "h2"))
    _inject_failure(db)
    store.commit(grants(KEY, 2, "h3"))  # reads the map again: the trigger moved data_version
    before = mapped(store)
    ids = store._ids
    with pytest.raises(StorageError, match="injected disk error"):
        store.commit_many(
            [
                releases(KEY, 3, "h1"),  # a row deleted,
                grants(KEY, 4, "h4"),  # one added,
                Write(
                    products=(ProductWrite(OTHER, Version(E1, 1), replace=(rec("o1", key=OTHER),)),)
                ),
                grants(KEY, 5, "h5", BOOM),  # and the transaction fails after them
            ]
        )
    assert store._ids is ids and mapped(store) == before  # not read again: never changed
    assert_map_is_table(store)
    # The store goes on from the committed rows: h1 is still held, h4 never was.
    store.commit_many([releases(KEY, 6, "h1", "h4"), grants(KEY, 7, "h4")])
    assert_map_is_table(store)
    assert {h for (_, h) in mapped(store)} == {"h2", "h3", "h4"}
    assert set(store.load().products[KEY].handles) == {"h2", "h3", "h4"}


def test_a_grant_and_its_release_in_one_group_commit(store: SqliteStore) -> None:
    store.load()
    store.commit_many([grants(KEY, 1, "h1"), releases(KEY, 2, "h1"), grants(KEY, 3, "h1")])
    assert_map_is_table(store)
    assert [(u.event, u.handle) for u in store.usage()] == [
        ("granted", "h1"),
        ("released", "h1"),
        ("granted", "h1"),
    ]
    store.commit(releases(KEY, 4, "h1"))
    assert mapped(store) == {}


def test_a_write_by_another_connection_is_read_again(store: SqliteStore, db: Path) -> None:
    """Another connection (an operator's sqlite3 shell) adds a row: the next commit sees
    data_version move and reads the map again, so a release deletes that row."""
    store.load()
    store.commit(grants(KEY, 1, "h1"))
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(
            "INSERT INTO handles (id, firm, product, handle, seats, client_id, request_id, "
            "granted_at) VALUES (100, ?, ?, 'x', 1, 'c', 'r', 1.0)",
            KEY,
        )
    conn.close()
    store.commit(releases(KEY, 2, "x"))
    assert_map_is_table(store)
    assert {h for (_, h) in mapped(store)} == {"h1"}
    store.commit(grants(KEY, 3, "h2"))
    assert mapped(store)[(KEY, "h2")] == 101  # row ids only ever rise


def test_a_map_that_differs_from_the_table_fails_the_commit_and_load_repairs_it(
    store: SqliteStore,
) -> None:
    store.load()
    store.commit(grants(KEY, 1, "h1", "h2"))
    assert store._ids is not None
    store._ids[KEY]["h1"] = 999  # cannot happen; if it did, no wrong row is deleted
    with pytest.raises(StorageError, match="has no row 999"):
        store.commit_many([releases(KEY, 2, "h2"), releases(KEY, 3, "h1")])
    state = store.load()
    assert set(state.products[KEY].handles) == {"h1", "h2"}
    assert_map_is_table(store)


def test_two_rows_of_one_handle_are_a_storage_error(db: Path) -> None:
    s = SqliteStore(db)
    s.commit(grants(KEY, 1, "h1"))
    s.close()
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(
            "INSERT INTO handles (firm, product, handle, seats, client_id, request_id, "
            "granted_at) VALUES (?, ?, 'h1', 1, 'c', 'r', 1.0)",
            KEY,
        )
    conn.close()
    s = SqliteStore(db)
    try:
        with pytest.raises(StorageError, match="h1 of 6000123/42 has two rows"):
            s.load()
    finally:
        s.close()


def test_handles_survive_a_killed_process_and_the_map_is_read_again(db: Path) -> None:
    """kill -9 for real: a child commits grants and releases and is killed by SIGKILL."""
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from tmr.backend.store import SqliteStore\n"
        "from tmr.replication.acceptor import ProductWrite, Write\n"
        "from tmr.replication.types import Epoch, Grant, HandleRecord, Release, "
        "ReleaseReason, Version\n"
        "s = SqliteStore(Path(sys.argv[1]))\n"
        "k = (6000123, 42)\n"
        "def g(h): return Grant(HandleRecord(h, *k, 1, 'c1', 'r-' + h, 1.7e9))\n"
        "def pw(seq, *ops): return Write(products=(ProductWrite(k, Version(Epoch(1, 's1'), "
        "seq), ops=ops),))\n"
        "s.commit_many([pw(1, g('h1'), g('h2'), g('h3')), pw(2, Release('h2', "
        "ReleaseReason.RELEASE, 2.0))])\n"
        "s.commit(pw(3, g('h4')))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", code, str(db)], check=False, env=env, timeout=60)
    assert done.returncode == -signal.SIGKILL
    store = SqliteStore(db)
    try:
        assert set(store.load().products[KEY].handles) == {"h1", "h3", "h4"}
        assert_map_is_table(store)
        store.commit(releases(KEY, 4, "h1", "h4"))
        assert set(store.load().products[KEY].handles) == {"h3"}
    finally:
        store.close()


# ------------------------------------------------------------------ schema 8 -> 9

_HANDLES_8 = """CREATE TABLE handles (
    firm INTEGER NOT NULL,
    product INTEGER NOT NULL,
    handle TEXT NOT NULL,
    seats INTEGER NOT NULL,
    client_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    granted_at REAL NOT NULL,
    owner TEXT NOT NULL DEFAULT '',
    user TEXT NOT NULL DEFAULT '',
    host TEXT NOT NULL DEFAULT '',
    pid INTEGER NOT NULL DEFAULT 0,
    mode TEXT NOT NULL DEFAULT 'user_limit',
    PRIMARY KEY (firm, product, handle)
) WITHOUT ROWID"""


def _make_schema_8(db: Path) -> None:
    """The database of schema 8: ``handles`` WITHOUT ROWID keyed by the handle id."""
    cols = (
        "firm, product, handle, seats, client_id, request_id, granted_at, owner, user, host, "
        "pid, mode"
    )
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("ALTER TABLE handles RENAME TO handles_9")
        conn.execute(_HANDLES_8)
        conn.execute(f"INSERT INTO handles ({cols}) SELECT {cols} FROM handles_9")
        conn.execute("DROP TABLE handles_9")
        conn.execute("UPDATE meta SET value = '8' WHERE key = 'schema_version'")
    conn.close()


def _old_rows_store(db: Path) -> AcceptorState:
    s = SqliteStore(db)
    writes = [
        Write(promised=E1, caught_up=True),
        Write(
            products=(
                ProductWrite(
                    KEY,
                    Version(E1, 3),
                    ops=(Grant(rec("late", 2, at=30.0)), Grant(rec("early", at=10.0))),
                ),
                ProductWrite(OTHER, Version(E1, 1), ops=(Grant(rec("mid", key=OTHER, at=20.0)),)),
            ),
            known=((KEY, Version(E1, 2)),),
        ),
    ]
    expected = AcceptorState(ZERO_EPOCH, caught_up=False)
    for w in writes:
        s.commit(w)
        apply_write(expected, w)
    s.close()
    return expected


def test_a_schema_8_database_is_migrated_with_every_row_in_grant_order(db: Path) -> None:
    expected = _old_rows_store(db)
    _make_schema_8(db)
    usage_before = _dump(db, "SELECT * FROM usage ORDER BY id")
    store = SqliteStore(db)
    try:
        assert store.load() == expected
        assert_map_is_table(store)
        store.commit_many([releases(KEY, 4, "late"), grants(KEY, 5, "new")])
        assert_map_is_table(store)
        assert set(store.load().products[KEY].handles) == {"early", "new"}
    finally:
        store.close()
    assert _dump(db, "SELECT value FROM meta WHERE key = 'schema_version'") == [
        (str(SCHEMA_VERSION),)
    ]
    tables = _tables(db)
    assert "WITHOUT ROWID" not in tables["handles"] and "handles_8" not in tables
    assert _dump(db, "SELECT handle FROM handles ORDER BY id") == [("early",), ("mid",), ("new",)]
    assert _dump(db, "SELECT * FROM usage ORDER BY id")[: len(usage_before)] == usage_before


def test_a_failed_schema_8_migration_leaves_the_database_untouched(db: Path) -> None:
    _old_rows_store(db)
    _make_schema_8(db)
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("CREATE TABLE handles_8 (x INTEGER)")  # the rename cannot take its name
    conn.close()
    before = _dump(db, "SELECT * FROM handles ORDER BY handle")
    with pytest.raises(StorageError, match="cannot initialise"):
        SqliteStore(db)
    assert _dump(db, "SELECT * FROM handles ORDER BY handle") == before
    assert _dump(db, "SELECT value FROM meta WHERE key = 'schema_version'") == [("8",)]


# ------------------------------------------------------------------ property test

HANDLES = st.sampled_from(["h0", "h1", "h2", "h3", "h4", "h5"])
KEYS = st.sampled_from([KEY, OTHER])
OPS = st.lists(
    st.one_of(
        st.builds(lambda h, s: ("grant", h, s), HANDLES, st.integers(1, 3)),
        st.builds(lambda h: ("release", h, 0), HANDLES),
    ),
    max_size=6,
)
PRODUCT_WRITE = st.one_of(
    st.tuples(st.just("ops"), KEYS, OPS),
    # a snapshot: catch-up, an abort of grants in doubt, an empty one (license removed)
    st.tuples(st.just("replace"), KEYS, OPS.map(lambda ops: [o for o in ops if o[0] == "grant"])),
)
WRITES = st.lists(st.lists(PRODUCT_WRITE, min_size=1, max_size=3), min_size=1, max_size=4)
# one product write of a step: ("ops" | "replace", product, [(op, handle, seats)])
Spec = list[tuple[str, ProductKey, list[tuple[str, str, int]]]]
STEP: st.SearchStrategy[tuple[str, list[Spec]]] = st.one_of(
    st.tuples(st.just("commit"), WRITES),
    st.tuples(st.just("fail"), WRITES),  # the same writes, then a grant that fails them all
    st.tuples(st.just("reopen"), st.just([])),  # close, open, load (a restart)
    st.tuples(st.just("abandon"), st.just([])),  # open anew without closing (kill -9)
)


def _write(spec: Spec, seq: int) -> Write:
    pws = []
    for kind, key, ops in spec:
        if kind == "replace":
            table_ = tuple(rec(h, s, key) for _, h, s in ops)
            pws.append(ProductWrite(key, Version(E1, seq), replace=table_))
        else:
            built: list[Op] = [
                Grant(rec(h, s, key)) if o == "grant" else Release(h, ReleaseReason.EXPIRE, 3.0)
                for o, h, s in ops
            ]
            pws.append(ProductWrite(key, Version(E1, seq), ops=tuple(built)))
    return Write(products=tuple(pws))


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=st.lists(STEP, max_size=12))
def test_random_group_commits_keep_the_map_equal_to_the_table_and_the_model(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, list[Spec]]]
) -> None:
    db = tmp_path_factory.mktemp("rows") / "backend.sqlite3"
    store = SqliteStore(db)
    _inject_failure(db)
    abandoned: list[SqliteStore] = []
    model = store.load()
    seq = 0
    try:
        for kind, specs in steps:
            if kind in {"commit", "fail"}:
                writes = []
                for spec in specs:
                    seq += 1
                    writes.append(_write(spec, seq))
                if kind == "fail":
                    seq += 1
                    writes.append(grants(KEY, seq, BOOM))
                    with pytest.raises(StorageError, match="injected"):
                        store.commit_many(writes)
                else:
                    store.commit_many(writes)
                    for w in writes:
                        apply_write(model, w)
            elif kind == "reopen":
                store.close()
                store = SqliteStore(db)
                assert store.load() == model
            else:
                abandoned.append(store)
                store = SqliteStore(db)
                assert store.load() == model
            if store._ids is not None:
                assert_map_is_table(store)
            assert store._conn is not None
            rows = store._conn.execute(
                "SELECT firm, product, handle, seats FROM handles"
            ).fetchall()
            assert sorted(rows) == sorted(
                (*key, h, r.seats)
                for key, log in model.products.items()
                for h, r in log.handles.items()
            )
        assert store.load() == model
        assert_map_is_table(store)
    finally:
        store.close()
        for s in abandoned:
            s.close()
