"""The backend's durable state in SQLite: promise, catch-up flag, product logs, usage record.

One `Write` of the acceptor is one SQLite transaction (WAL journal, ``synchronous=FULL``):
it is either entirely on disk when `SqliteStore.commit` returns, or not at all. Any SQLite or
OS error raises `StorageError`, after which the in-memory acceptor must not apply the write
(the service reloads its state with `SqliteStore.load`).

Tables (schema version in ``meta``):

- ``acceptor``: one row, the promised epoch and the ``caught_up`` flag;
- ``products``: per (firm, product) the log version (epoch, seq) and the replicated floors
  (the trio's TMR ID and trusted time, schema 4; they only rise);
- ``handles``: the handle table, one row per (firm, product, handle), with the CURVE key that
  owns each handle (schema 3) and the user, host and process id the client gave (schema 5;
  informational, shown by `tmr admin handles`) and its access mode (schema 7: user_limit,
  station_share or exclusive; how the handle counts, `tmr.replication.types.AccessMode`).
  Schema 9: a rowid table in grant order with no index on the handle id. Handle ids are
  random: as the key of a B-tree (schema 2 to 8) every grant and release of a round dirtied a
  page of its own once the table held many handles (1.55x the CPU per round at 100,000 held,
  docs/performance.md); in grant order a round's grants share the last pages and the
  releases of short-lived handles find them there. The store finds a row through an
  in-memory map (firm, product) -> handle -> row id (`SqliteStore._ids`), read from the table
  by `load` (and on the first commit, or when another connection wrote the database), changed
  only once a transaction has committed; the one-row-per-handle rule is the map's;
- ``known_commits``: per product the highest version a leader said is committed (schema 8,
  `AcceptorState.known`), written in the transaction of the message that carried it;
- ``marked_grants``: per product the grants taken from an entry flagged ``notice``, with that
  entry's version, while above the known commit (schema 8, `ProductLog.marked`);
- ``installed``: the highest TMR ID ever installed per product (no-rollback rule);
- ``usage``: committed ops (granted / released / expired), the newest ``usage_retention``
  rows are kept. Older rows are deleted in batches, once 1 % of ``usage_retention`` (at most
  `TRIM_BATCH_MAX`) new rows have come in: a trim on every commit costs about a quarter of
  its page writes. Between trims the table holds up to that many rows more.
- ``denials`` (schema 6): refused checkouts the TMR servers reported (`Denials`), one row
  per refusal id (a batch sent again is not recorded twice); the newest ``denial_retention``
  rows are kept, trimmed like ``usage``. Not replicated state: best effort (design.md §7.6).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from tmr.errors import TmrError
from tmr.replication.acceptor import AcceptorState, ProductWrite, Write
from tmr.replication.messages import DenialRow
from tmr.replication.types import (
    NO_FLOOR,
    ZERO_EPOCH,
    AccessMode,
    Epoch,
    Floor,
    Grant,
    ProductKey,
    ProductLog,
    Release,
    ReleaseReason,
    Version,
    floor_after,
    handle_record,
)

SCHEMA_VERSION = 9
DEFAULT_USAGE_RETENTION = 100_000
DEFAULT_DENIAL_RETENTION = 100_000
TRIM_BATCH_MAX = 1024  # usage rows that may come in between two trims (see the docstring)

# Schema 9: rows in grant order (``id``: the store's own counter, only ever rising), found by
# the store's in-memory map; no index on the handle id (see the module docstring).
_HANDLES = """CREATE TABLE IF NOT EXISTS handles (
    id INTEGER PRIMARY KEY,
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
    mode TEXT NOT NULL DEFAULT 'user_limit'
);"""

_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS acceptor (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    promised_counter INTEGER NOT NULL,
    promised_server TEXT NOT NULL,
    caught_up INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS products (
    firm INTEGER NOT NULL,
    product INTEGER NOT NULL,
    epoch_counter INTEGER NOT NULL,
    epoch_server TEXT NOT NULL,
    seq INTEGER NOT NULL,
    tmr_floor INTEGER NOT NULL DEFAULT 0,
    time_floor REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (firm, product)
);
"""
    + _HANDLES
    + """
CREATE TABLE IF NOT EXISTS known_commits (
    firm INTEGER NOT NULL,
    product INTEGER NOT NULL,
    epoch_counter INTEGER NOT NULL,
    epoch_server TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (firm, product)
);
CREATE TABLE IF NOT EXISTS marked_grants (
    firm INTEGER NOT NULL,
    product INTEGER NOT NULL,
    handle TEXT NOT NULL,
    epoch_counter INTEGER NOT NULL,
    epoch_server TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (firm, product, handle)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS installed (
    firm INTEGER NOT NULL,
    product INTEGER NOT NULL,
    tmr_id INTEGER NOT NULL,
    PRIMARY KEY (firm, product)
);
CREATE TABLE IF NOT EXISTS usage (
    id INTEGER PRIMARY KEY,  -- never reused: trimming always keeps the newest row
    at REAL NOT NULL,
    recorded_at REAL NOT NULL,
    event TEXT NOT NULL,
    firm INTEGER NOT NULL,
    product INTEGER NOT NULL,
    handle TEXT NOT NULL,
    seats INTEGER NOT NULL,
    client_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS denials (
    id INTEGER PRIMARY KEY,  -- never reused: trimming always keeps the newest row
    uid TEXT NOT NULL UNIQUE,  -- the refusal's id (DenialRow.id): one row per refusal
    at REAL NOT NULL,
    recorded_at REAL NOT NULL,
    server TEXT NOT NULL,
    code TEXT NOT NULL,
    firm INTEGER NOT NULL,
    product INTEGER NOT NULL,
    seats INTEGER NOT NULL,
    owner TEXT NOT NULL,
    user TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    rule TEXT NOT NULL,
    times INTEGER NOT NULL,  -- the same refusal repeated within one batch: one row
    last REAL NOT NULL
);
"""
)


# Schema 1 -> 2: the same columns; ``handles`` keyed by its primary key alone (WITHOUT ROWID:
# one B-tree instead of a table and an index) and ``usage`` ids without AUTOINCREMENT (no
# ``sqlite_sequence`` row to update): two page writes fewer per commit. Ids stay increasing, as
# trimming never deletes the newest row. The old tables are renamed, `_SCHEMA` creates the new
# ones, the rows are copied over. Run inside the opening transaction: all or nothing.
_MIGRATE_FROM_1 = (
    "ALTER TABLE handles RENAME TO handles_1",
    "ALTER TABLE usage RENAME TO usage_1",
    _SCHEMA,
    "INSERT INTO handles (firm, product, handle, seats, client_id, request_id, granted_at) "
    "SELECT firm, product, handle, seats, client_id, request_id, granted_at FROM handles_1",
    "INSERT INTO usage SELECT id, at, recorded_at, event, firm, product, handle, seats, client_id "
    "FROM usage_1",
    "DROP TABLE handles_1",
    "DROP TABLE usage_1",
    "DELETE FROM sqlite_sequence WHERE name = 'usage'",
    f"UPDATE meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema_version'",
)

# Schema 2 -> 3: handles are owned by the CURVE key that checked them out. Rows of schema 2
# get the owner "", which no key matches: such a handle is never renewed and expires after
# its lease (its client checks out again). In the opening transaction: all or nothing.
_MIGRATE_FROM_2 = (
    "ALTER TABLE handles ADD COLUMN owner TEXT NOT NULL DEFAULT ''",
    f"UPDATE meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema_version'",
)

# Schema 3 -> 4: each product row carries its replicated floors (TMR ID and trusted time);
# 0 until the leader commits them (a snapshot or a Floor op). In the opening transaction, after
# `_MIGRATE_FROM_2` when coming from 2: all or nothing.
_MIGRATE_FROM_3 = (
    "ALTER TABLE products ADD COLUMN tmr_floor INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE products ADD COLUMN time_floor REAL NOT NULL DEFAULT 0",
    f"UPDATE meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema_version'",
)

# Schema 4 -> 5: each handle carries the user, host and process id its client gave with the
# checkout (informational; `HandleRecord.user`). Rows of schema 4 get "", "", 0 (not given).
# In the opening transaction, after the earlier steps when coming from older schemas.
_MIGRATE_FROM_4 = (
    "ALTER TABLE handles ADD COLUMN user TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE handles ADD COLUMN host TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE handles ADD COLUMN pid INTEGER NOT NULL DEFAULT 0",
    f"UPDATE meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema_version'",
)

# Schema 5 -> 6: the ``denials`` table (refusals the servers reported). `_SCHEMA`, run first
# in the opening transaction, has already created it (CREATE TABLE IF NOT EXISTS); the step
# only records the version.
_MIGRATE_FROM_5 = (f"UPDATE meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema_version'",)

# Schema 6 -> 7: each handle carries its access mode (`HandleRecord.mode`). Rows of older
# schemas get 'user_limit': every handle counted its seats before modes.
_MIGRATE_FROM_6 = (
    "ALTER TABLE handles ADD COLUMN mode TEXT NOT NULL DEFAULT 'user_limit'",
    f"UPDATE meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema_version'",
)

# Schema 7 -> 8: the backend keeps its commit knowledge durably (docs/design.md §6): the
# known committed version per product (``known_commits``) and the grants of entries flagged
# ``notice`` above it (``marked_grants``). Two new tables, no change to existing ones: a
# store of an older schema starts with none known and nothing marked, which is what a
# backend of an older schema reported after a restart. `_SCHEMA`, run first, has already
# created them; the step repeats it (CREATE IF NOT EXISTS).
_MIGRATE_FROM_7 = (
    """CREATE TABLE IF NOT EXISTS known_commits (
        firm INTEGER NOT NULL,
        product INTEGER NOT NULL,
        epoch_counter INTEGER NOT NULL,
        epoch_server TEXT NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (firm, product)
    )""",
    """CREATE TABLE IF NOT EXISTS marked_grants (
        firm INTEGER NOT NULL,
        product INTEGER NOT NULL,
        handle TEXT NOT NULL,
        epoch_counter INTEGER NOT NULL,
        epoch_server TEXT NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (firm, product, handle)
    ) WITHOUT ROWID""",
    f"UPDATE meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema_version'",
)

# Schema 8 -> 9: ``handles`` becomes a rowid table in grant order (module docstring). The old
# table is renamed, the new one created and the rows copied over in the order of their grant
# time (ties by key), then the old table dropped. In the opening transaction: all or nothing.
_HANDLE_COLUMNS = (
    "firm, product, handle, seats, client_id, request_id, granted_at, owner, user, host, pid, mode"
)
_MIGRATE_FROM_8 = (
    "ALTER TABLE handles RENAME TO handles_8",
    _HANDLES,
    f"INSERT INTO handles ({_HANDLE_COLUMNS}) SELECT {_HANDLE_COLUMNS} FROM handles_8 "
    "ORDER BY granted_at, firm, product, handle",
    "DROP TABLE handles_8",
    f"UPDATE meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema_version'",
)

# The upgrade from each schema to the next, in order: a database of schema N runs every step
# from N on, in the opening transaction (all or nothing). A build refuses a database of a newer
# schema (downgrade: restore a copy of the database taken before the upgrade).
_UPGRADES: tuple[tuple[int, tuple[str, ...]], ...] = (
    (2, _MIGRATE_FROM_2),
    (3, _MIGRATE_FROM_3),
    (4, _MIGRATE_FROM_4),
    (5, _MIGRATE_FROM_5),
    (6, _MIGRATE_FROM_6),
    (7, _MIGRATE_FROM_7),
    (8, _MIGRATE_FROM_8),
)


def _execute_all(conn: sqlite3.Connection, script: str) -> None:
    """Run the statements of ``script`` (separated by ";") in the current transaction."""
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


class StorageError(TmrError):
    """The backend's database could not be opened, read or written."""


@dataclass(frozen=True)
class UsageRecord:
    """One committed op as kept in the usage record."""

    id: int
    at: float  # wall time of the op (granted_at / release time, set by the leader)
    recorded_at: float  # wall time at which this backend committed it
    event: str  # "granted", "released", "expired"
    firm: int
    product: int
    handle: str
    seats: int
    client_id: str


_RELEASE_EVENTS = {ReleaseReason.RELEASE: "released", ReleaseReason.EXPIRE: "expired"}
# A row's id is the store's own counter (`_Changes.next_id`): rows stay in grant order.
_INSERT_HANDLE = (
    "INSERT INTO handles (id, firm, product, handle, seats, client_id, request_id, granted_at, "
    "owner, user, host, pid, mode) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_RELEASE = "DELETE FROM handles WHERE id = ? RETURNING seats, client_id"
_DELETE_HANDLE = "DELETE FROM handles WHERE id = ?"
# A product's version is replaced; its floors only ever rise (as in `apply_write`).
_UPSERT_PRODUCT = (
    "INSERT INTO products (firm, product, epoch_counter, epoch_server, seq, tmr_floor, "
    "time_floor) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (firm, product) DO UPDATE SET "
    "epoch_counter = excluded.epoch_counter, epoch_server = excluded.epoch_server, "
    "seq = excluded.seq, tmr_floor = MAX(tmr_floor, excluded.tmr_floor), "
    "time_floor = MAX(time_floor, excluded.time_floor)"
)
_INSERT_USAGE = (
    "INSERT INTO usage (at, recorded_at, event, firm, product, handle, seats, client_id) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
# (at, recorded_at, event, firm, product, handle, seats, client_id): one row of `usage`.
_UsageRow = tuple[float, float, str, int, int, str, int, str]


# (firm, product) -> handle -> row id of ``handles``: the store's map of the table.
_Ids = dict[ProductKey, dict[str, int]]


class _Changes:
    """What one transaction under way did to ``handles``, over the committed map: the rows it
    added (handle -> row id) and deleted (handle -> None), and the products whose rows it
    deleted all at once (a snapshot). `merge` puts them into the map once the transaction has
    committed; a transaction that failed leaves the map as it was (as SQLite leaves the table)."""

    __slots__ = ("cleared", "ids", "next_id", "rows")

    def __init__(self, ids: _Ids, next_id: int) -> None:
        self.ids = ids
        self.next_id = next_id  # the next row id to give (only ever rises)
        self.rows: dict[ProductKey, dict[str, int | None]] = {}
        self.cleared: set[ProductKey] = set()

    def row(self, key: ProductKey, handle: str) -> int | None:
        """The row id of ``handle`` as the transaction sees the table (None: no row)."""
        changed = self.rows.get(key)
        if changed is not None and handle in changed:
            return changed[handle]
        if key in self.cleared:
            return None
        held = self.ids.get(key)
        return None if held is None else held.get(handle)

    def put(self, key: ProductKey, handle: str, row: int | None) -> None:
        changed = self.rows.get(key)
        if changed is None:
            changed = self.rows[key] = {}
        changed[handle] = row

    def clear(self, key: ProductKey) -> list[int]:
        """Forget every row of product ``key``; their row ids (to delete)."""
        rows: dict[str, int | None] = {} if key in self.cleared else dict(self.ids.get(key, {}))
        rows.update(self.rows.pop(key, {}))
        self.cleared.add(key)
        return [row for row in rows.values() if row is not None]

    def merge(self) -> None:
        ids = self.ids
        for key in self.cleared:
            ids.pop(key, None)
        for key, changed in self.rows.items():
            held = ids.get(key)
            if held is None:
                held = ids[key] = {}
            for handle, row in changed.items():
                if row is None:
                    held.pop(handle, None)
                else:
                    held[handle] = row
            if not held:
                del ids[key]


class SqliteStore:
    """The durable store of one backend (see the module docstring)."""

    def __init__(
        self,
        path: Path,
        *,
        usage_retention: int = DEFAULT_USAGE_RETENTION,
        denial_retention: int = DEFAULT_DENIAL_RETENTION,
    ) -> None:
        if usage_retention < 0:
            raise ValueError("usage_retention must be >= 0")
        if denial_retention < 0:
            raise ValueError("denial_retention must be >= 0")
        self.path = path
        self.usage_retention = usage_retention
        self.denial_retention = denial_retention
        self._denial_trim_batch = min(TRIM_BATCH_MAX, denial_retention // 100)
        self._denials_untrimmed = self._denial_trim_batch + 1  # the first batch trims
        self._trim_batch = min(TRIM_BATCH_MAX, usage_retention // 100)
        self._untrimmed = self._trim_batch + 1  # the first commit trims (retention may be lower)
        self._conn: sqlite3.Connection | None = None
        # The map of ``handles`` (module docstring): None until read from the table (by `load`
        # or the first commit); read again when another connection wrote the database (its
        # ``data_version`` moved) or this one was closed.
        self._ids: _Ids | None = None
        self._next_id = 1
        self._data_version = -1
        self._open()

    # ------------------------------------------------------------------ lifecycle

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot open database {self.path}: {exc}") from None
        try:
            self._prepare(conn)
        except (sqlite3.Error, OSError) as exc:
            conn.close()
            raise StorageError(f"cannot initialise database {self.path}: {exc}") from None
        self._conn = conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"journal_mode is {mode}, WAL is required")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._create_schema(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _create_schema(conn: sqlite3.Connection) -> None:
        _execute_all(conn, _SCHEMA)
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('created_at', ?)", (repr(time.time()),)
            )
        elif row[0] == "1":  # products keeps its rows: it gets the floors of schema 4
            # `_SCHEMA` (in `_MIGRATE_FROM_1`) creates handles with every column of this schema.
            for script in (*_MIGRATE_FROM_1, *_MIGRATE_FROM_3):
                _execute_all(conn, script)
        elif row[0] in {str(version) for version, _ in _UPGRADES}:
            for version, steps in _UPGRADES:
                if version >= int(row[0]):
                    for script in steps:
                        _execute_all(conn, script)
        elif row[0] != str(SCHEMA_VERSION):
            raise sqlite3.DatabaseError(
                f"schema version {row[0]} is not supported (this build uses {SCHEMA_VERSION})"
            )
        conn.execute(
            "INSERT OR IGNORE INTO acceptor (id, promised_counter, promised_server, caught_up) "
            "VALUES (1, ?, ?, 0)",
            (ZERO_EPOCH.counter, ZERO_EPOCH.server),
        )

    def close(self) -> None:
        self._ids = None  # a new connection counts data_version afresh
        if self._conn is not None:
            with suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    def _connection(self) -> sqlite3.Connection:
        """The open connection; reopens after a failure closed it."""
        if self._conn is None:
            self._open()
        assert self._conn is not None
        return self._conn

    @contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE .. COMMIT; any error rolls back and becomes a StorageError."""
        if self._conn is None:
            raise StorageError(f"{what}: database {self.path} is closed")
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except (sqlite3.Error, OSError) as exc:
            self._after_failure()
            raise StorageError(f"{what} failed on {self.path}: {exc}") from None

    def _after_failure(self) -> None:
        """A connection that cannot roll back is closed; `load` reopens it."""
        conn = self._conn
        if conn is not None and conn.in_transaction:
            self.close()

    # ------------------------------------------------------------------ acceptor state

    def load(self) -> AcceptorState:
        """The committed state (a fresh database: ZERO_EPOCH, not caught up, no products)."""
        try:
            conn = self._connection()
            return self._read_state(conn)
        except (sqlite3.Error, OSError, ValueError) as exc:  # ValueError: an unknown mode
            self.close()
            raise StorageError(f"cannot read database {self.path}: {exc}") from None

    def _read_state(self, conn: sqlite3.Connection) -> AcceptorState:
        """The state, and the map of ``handles`` read along with it."""
        self._ids = None
        # Read first: a write by another connection from here on moves it (`_handle_ids`).
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        counter, server, caught_up = conn.execute(
            "SELECT promised_counter, promised_server, caught_up FROM acceptor WHERE id = 1"
        ).fetchone()
        state = AcceptorState(Epoch(counter, server), bool(caught_up))
        for firm, product, e_counter, e_server, seq, tmr_floor, time_floor in conn.execute(
            "SELECT firm, product, epoch_counter, epoch_server, seq, tmr_floor, time_floor "
            "FROM products"
        ):
            state.products[(firm, product)] = ProductLog(
                Version(Epoch(e_counter, e_server), seq), floor=Floor(tmr_floor, time_floor)
            )
        ids: _Ids = {}
        top = 0
        for (
            row_id,
            h,
            firm,
            product,
            seats,
            cid,
            rid,
            at,
            owner,
            user,
            host,
            pid,
            mode,
        ) in conn.execute(
            "SELECT id, handle, firm, product, seats, client_id, request_id, granted_at, "
            "owner, user, host, pid, mode FROM handles ORDER BY id"
        ):
            key = (firm, product)
            held = ids.get(key)
            if held is None:
                held = ids[key] = {}
            if h in held:
                raise sqlite3.DatabaseError(f"handle {h} of {firm}/{product} has two rows")
            held[h] = top = row_id
            log = state.products.setdefault(key, ProductLog())
            log.put(
                handle_record(
                    h, firm, product, seats, cid, rid, at, owner, user, host, pid, AccessMode(mode)
                )
            )
        for firm, product, e_counter, e_server, seq in conn.execute(
            "SELECT firm, product, epoch_counter, epoch_server, seq FROM known_commits"
        ):
            state.known[(firm, product)] = Version(Epoch(e_counter, e_server), seq)
        for firm, product, handle, e_counter, e_server, seq in conn.execute(
            "SELECT firm, product, handle, epoch_counter, epoch_server, seq FROM marked_grants"
        ):
            log = state.products.setdefault((firm, product), ProductLog())
            log.marked[handle] = Version(Epoch(e_counter, e_server), seq)
        self._ids, self._data_version = ids, version
        self._next_id = max(self._next_id, top + 1)
        return state

    def _handle_ids(self, conn: sqlite3.Connection) -> _Ids:
        """The map of ``handles``, read from the table (in the transaction under way) when not
        known or when another connection committed since it was read."""
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        if self._ids is not None and version == self._data_version:
            return self._ids
        ids: _Ids = {}
        top = 0
        for row_id, firm, product, h in conn.execute(
            "SELECT id, firm, product, handle FROM handles ORDER BY id"
        ):
            held = ids.get((firm, product))
            if held is None:
                held = ids[(firm, product)] = {}
            if h in held:
                raise sqlite3.DatabaseError(f"handle {h} of {firm}/{product} has two rows")
            held[h] = top = row_id
        self._ids, self._data_version = ids, version
        self._next_id = max(self._next_id, top + 1)
        return ids

    def commit(self, write: Write) -> None:
        """Make ``write`` durable in one transaction (the same effect as `apply_write`)."""
        self.commit_many((write,))

    def commit_many(self, writes: Sequence[Write]) -> None:
        """Make ``writes`` durable, in order, in ONE transaction (one fsync): the same effect
        as `commit` of each in turn, except that either all of them are on disk when this
        returns or none is (group commit)."""
        if not writes:
            return
        # `_transaction` written out: its generator costs a few microseconds per commit, and
        # a backend at low load commits every single replicated op on its own.
        conn = self._conn
        if conn is None:
            raise StorageError(f"commit: database {self.path} is closed")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                changes = _Changes(self._handle_ids(conn), self._next_id)
                usage: list[_UsageRow] = []  # in op order; written together (ids keep it)
                recorded_at = time.time()
                for write in writes:
                    self._write(conn, write, recorded_at, usage, changes)
                if usage and self.usage_retention > 0:  # 0: no usage record at all
                    conn.executemany(_INSERT_USAGE, usage)
                untrimmed = self._untrimmed + len(usage)
                if untrimmed > self._trim_batch:
                    self._trim_usage(conn)
                    untrimmed = 0
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except (sqlite3.Error, OSError) as exc:
            self._after_failure()
            raise StorageError(f"commit failed on {self.path}: {exc}") from None
        # Only once the transaction is committed:
        changes.merge()
        self._next_id = changes.next_id
        self._untrimmed = untrimmed

    def _write(
        self,
        conn: sqlite3.Connection,
        write: Write,
        recorded_at: float,
        usage: list[_UsageRow],
        changes: _Changes,
    ) -> None:
        if write.promised is not None:
            conn.execute(
                "UPDATE acceptor SET promised_counter = ?, promised_server = ? WHERE id = 1",
                (write.promised.counter, write.promised.server),
            )
        if write.caught_up is not None:
            conn.execute("UPDATE acceptor SET caught_up = ? WHERE id = 1", (int(write.caught_up),))
        for pw in write.products:
            self._write_product(conn, pw, recorded_at, usage, changes)
        for (firm, product), marks in write.marks:
            conn.execute(
                "DELETE FROM marked_grants WHERE firm = ? AND product = ?", (firm, product)
            )
            conn.executemany(
                "INSERT OR REPLACE INTO marked_grants (firm, product, handle, epoch_counter, "
                "epoch_server, seq) VALUES (?, ?, ?, ?, ?, ?)",
                [(firm, product, h, v.epoch.counter, v.epoch.server, v.seq) for h, v in marks],
            )
        for (firm, product), v in write.known:
            # Only ever raised (as in `apply_write`): a lower version leaves the row as it is.
            conn.execute(
                "INSERT INTO known_commits (firm, product, epoch_counter, epoch_server, seq) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (firm, product) DO UPDATE SET "
                "epoch_counter = excluded.epoch_counter, epoch_server = excluded.epoch_server, "
                "seq = excluded.seq WHERE (excluded.epoch_counter, excluded.epoch_server, "
                "excluded.seq) > (epoch_counter, epoch_server, seq)",
                (firm, product, v.epoch.counter, v.epoch.server, v.seq),
            )

    @staticmethod
    def _write_product(
        conn: sqlite3.Connection,
        pw: ProductWrite,
        recorded_at: float,
        usage: list[_UsageRow],
        changes: _Changes,
    ) -> None:
        key = pw.key
        firm, product = key
        if pw.replace is not None:
            # Every row of the product, by the row ids of the map (no scan of the table).
            conn.executemany(_DELETE_HANDLE, [(row,) for row in changes.clear(key)])
            latest = {r.handle: r for r in pw.replace}  # a later record wins, as in a dict
            rows = []
            for r in latest.values():
                row = changes.next_id
                changes.next_id = row + 1
                changes.put(key, r.handle, row)
                rows.append(
                    (
                        row,
                        firm,
                        product,
                        r.handle,
                        r.seats,
                        r.client_id,
                        r.request_id,
                        r.granted_at,
                        r.owner,
                        r.user,
                        r.host,
                        r.pid,
                        r.mode.value,
                    )
                )
            conn.executemany(_INSERT_HANDLE, rows)
        else:
            execute = conn.execute
            for op in pw.ops:
                if type(op) is Grant:
                    rec = op.record
                    # A grant is idempotent: an existing handle is kept, and not recorded again.
                    if changes.row(key, rec.handle) is not None:
                        continue
                    row = changes.next_id
                    changes.next_id = row + 1
                    execute(
                        _INSERT_HANDLE,
                        (
                            row,
                            firm,
                            product,
                            rec.handle,
                            rec.seats,
                            rec.client_id,
                            rec.request_id,
                            rec.granted_at,
                            rec.owner,
                            rec.user,
                            rec.host,
                            rec.pid,
                            rec.mode.value,
                        ),
                    )
                    changes.put(key, rec.handle, row)
                    usage.append(
                        (
                            rec.granted_at,
                            recorded_at,
                            "granted",
                            firm,
                            product,
                            rec.handle,
                            rec.seats,
                            rec.client_id,
                        )
                    )
                elif type(op) is Release:
                    # Releasing a handle that is not held is a no-op.
                    held = changes.row(key, op.handle)
                    if held is None:
                        continue
                    found = execute(_RELEASE, (held,)).fetchone()
                    if found is None:  # the map and the table differ: roll back, reload
                        raise sqlite3.DatabaseError(
                            f"handle {op.handle} of {firm}/{product} has no row {held}"
                        )
                    changes.put(key, op.handle, None)
                    seats, client_id = found
                    event = _RELEASE_EVENTS.get(op.reason, "released")
                    usage.append(
                        (op.at, recorded_at, event, firm, product, op.handle, seats, client_id)
                    )
        floor = floor_after(pw.floor or NO_FLOOR, pw.ops)
        conn.execute(
            _UPSERT_PRODUCT,
            (
                firm,
                product,
                pw.version.epoch.counter,
                pw.version.epoch.server,
                pw.version.seq,
                floor.tmr_id,
                floor.time,
            ),
        )

    # ------------------------------------------------------------------ usage record

    def _trim_usage(self, conn: sqlite3.Connection) -> None:
        row = conn.execute("SELECT MAX(id) FROM usage").fetchone()
        if row is None or row[0] is None:
            return
        conn.execute("DELETE FROM usage WHERE id <= ?", (row[0] - self.usage_retention,))

    def usage(self, limit: int | None = None) -> list[UsageRecord]:
        """The usage record, oldest first (the newest ``limit`` rows if given)."""
        query = (
            "SELECT id, at, recorded_at, event, firm, product, handle, seats, client_id "
            "FROM usage ORDER BY id DESC"
        )
        params: tuple[int, ...] = ()
        if limit is not None:
            query += " LIMIT ?"
            params = (limit,)
        try:
            rows = self._connection().execute(query, params).fetchall()
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot read the usage record of {self.path}: {exc}") from None
        return [UsageRecord(*row) for row in reversed(rows)]

    # ------------------------------------------------------------------ denial record

    def add_denials(self, rows: Sequence[DenialRow]) -> int:
        """Record refusals (one transaction); a refusal id already recorded is skipped. The
        number of rows added. Trimmed to the newest ``denial_retention`` rows like ``usage``."""
        if not rows or self.denial_retention == 0:
            return 0
        now = time.time()
        with self._transaction("recording denials") as conn:
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO denials (uid, at, recorded_at, server, code, firm, "
                "product, seats, owner, user, host, pid, rule, times, last) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(r.id, r.at, now, *r[2:]) for r in rows],
            )
            added = conn.total_changes - before
            untrimmed = self._denials_untrimmed + added
            if untrimmed > self._denial_trim_batch:
                top = conn.execute("SELECT MAX(id) FROM denials").fetchone()[0]
                if top is not None:
                    conn.execute(
                        "DELETE FROM denials WHERE id <= ?", (top - self.denial_retention,)
                    )
                untrimmed = 0
        self._denials_untrimmed = untrimmed
        return added

    def denials(self) -> list[DenialRow]:
        """The denial record, oldest first."""
        try:
            rows = (
                self._connection()
                .execute(
                    "SELECT uid, at, server, code, firm, product, seats, owner, user, host, pid, "
                    "rule, times, last FROM denials ORDER BY id"
                )
                .fetchall()
            )
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot read the denial record of {self.path}: {exc}") from None
        return [DenialRow(*r) for r in rows]

    # ------------------------------------------------------------------ installed TMR IDs

    def installed_tmr_ids(self) -> dict[ProductKey, int]:
        """The highest TMR ID ever installed, per (firm, product)."""
        try:
            rows = self._connection().execute("SELECT firm, product, tmr_id FROM installed")
            return {(firm, product): tmr_id for firm, product, tmr_id in rows}
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot read installed TMR IDs from {self.path}: {exc}") from None

    def set_installed_tmr_ids(self, ids: Mapping[ProductKey, int]) -> None:
        """Raise the installed TMR IDs to ``ids`` (never lowers one), in one transaction."""
        with self._transaction("recording installed TMR IDs") as conn:
            for (firm, product), tmr_id in ids.items():
                conn.execute(
                    "INSERT INTO installed (firm, product, tmr_id) VALUES (?, ?, ?) "
                    "ON CONFLICT (firm, product) DO UPDATE SET "
                    "tmr_id = MAX(tmr_id, excluded.tmr_id)",
                    (firm, product, tmr_id),
                )
