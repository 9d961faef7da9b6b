"""The backend's durable state in SQLite: promise, catch-up flag, product logs, usage record.

One `Write` of the acceptor is one SQLite transaction (WAL journal, ``synchronous=FULL``):
it is either entirely on disk when `SqliteStore.commit` returns, or not at all. Any SQLite or
OS error raises `StorageError`, after which the in-memory acceptor must not apply the write
(the service reloads its state with `SqliteStore.load`).

Tables (schema version in ``meta``):

- ``acceptor``: one row, the promised epoch and the ``caught_up`` flag;
- ``products``: per (firm, product) the log version (epoch, seq) and the replicated floors
  (the trio's TMR ID and trusted time, schema 4; they only rise);
- ``handles``: the handle table, per (firm, product, handle), with the CURVE key that owns
  each handle (schema 3) and the user, host and process id the client gave (schema 5;
  informational, shown by `tmr admin handles`);
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
    Epoch,
    Floor,
    Grant,
    HandleRecord,
    ProductKey,
    ProductLog,
    Release,
    ReleaseReason,
    Version,
    floor_after,
)

SCHEMA_VERSION = 6
DEFAULT_USAGE_RETENTION = 100_000
DEFAULT_DENIAL_RETENTION = 100_000
TRIM_BATCH_MAX = 1024  # usage rows that may come in between two trims (see the docstring)

_SCHEMA = """
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
CREATE TABLE IF NOT EXISTS handles (
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
# only records the version. A build of schema 5 refuses a database of schema 6 (downgrade:
# restore a copy of the database taken before the upgrade, or drop the table and set 5).
_MIGRATE_FROM_5 = (f"UPDATE meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema_version'",)


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
_INSERT_HANDLE = (
    "{verb} INTO handles (firm, product, handle, seats, client_id, request_id, granted_at, "
    "owner, user, host, pid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_GRANT = _INSERT_HANDLE.format(verb="INSERT OR IGNORE")
_REPLACE_HANDLE = _INSERT_HANDLE.format(verb="INSERT OR REPLACE")
_RELEASE = (
    "DELETE FROM handles WHERE firm = ? AND product = ? AND handle = ? RETURNING seats, client_id"
)
# A product's version is replaced; its floors only ever rise (as in `apply_write`).
_UPSERT_PRODUCT = (
    "INSERT INTO products (firm, product, epoch_counter, epoch_server, seq, tmr_floor, "
    "time_floor) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (firm, product) DO UPDATE SET "
    "epoch_counter = excluded.epoch_counter, epoch_server = excluded.epoch_server, "
    "seq = excluded.seq, tmr_floor = MAX(tmr_floor, excluded.tmr_floor), "
    "time_floor = MAX(time_floor, excluded.time_floor)"
)
# (at, recorded_at, event, firm, product, handle, seats, client_id): one row of `usage`.
_UsageRow = tuple[float, float, str, int, int, str, int, str]


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
            # `_SCHEMA` (in `_MIGRATE_FROM_1`) creates handles with the columns of schema 5.
            for script in (*_MIGRATE_FROM_1, *_MIGRATE_FROM_3, *_MIGRATE_FROM_5):
                _execute_all(conn, script)
        elif row[0] in ("2", "3", "4", "5"):
            steps = {
                "2": (*_MIGRATE_FROM_2, *_MIGRATE_FROM_3, *_MIGRATE_FROM_4),
                "3": (*_MIGRATE_FROM_3, *_MIGRATE_FROM_4),
                "4": _MIGRATE_FROM_4,
            }
            for script in (*steps.get(row[0], ()), *_MIGRATE_FROM_5):
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
        except (sqlite3.Error, OSError) as exc:
            self.close()
            raise StorageError(f"cannot read database {self.path}: {exc}") from None

    @staticmethod
    def _read_state(conn: sqlite3.Connection) -> AcceptorState:
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
        for row in conn.execute(
            "SELECT handle, firm, product, seats, client_id, request_id, granted_at, owner, "
            "user, host, pid FROM handles"
        ):
            log = state.products.setdefault((row[1], row[2]), ProductLog())
            log.handles[row[0]] = HandleRecord(*row)
        return state

    def commit(self, write: Write) -> None:
        """Make ``write`` durable in one transaction (the same effect as `apply_write`)."""
        self.commit_many((write,))

    def commit_many(self, writes: Sequence[Write]) -> None:
        """Make ``writes`` durable, in order, in ONE transaction (one fsync): the same effect
        as `commit` of each in turn, except that either all of them are on disk when this
        returns or none is (group commit)."""
        if not writes:
            return
        with self._transaction("commit") as conn:
            usage: list[_UsageRow] = []  # in op order; written together (ids keep that order)
            recorded_at = time.time()
            for write in writes:
                self._write(conn, write, recorded_at, usage)
            if usage and self.usage_retention > 0:  # 0: no usage record at all
                conn.executemany(
                    "INSERT INTO usage (at, recorded_at, event, firm, product, handle, seats, "
                    "client_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    usage,
                )
            untrimmed = self._untrimmed + len(usage)
            if untrimmed > self._trim_batch:
                self._trim_usage(conn)
                untrimmed = 0
        self._untrimmed = untrimmed  # only once the transaction is committed

    def _write(
        self, conn: sqlite3.Connection, write: Write, recorded_at: float, usage: list[_UsageRow]
    ) -> None:
        if write.promised is not None:
            conn.execute(
                "UPDATE acceptor SET promised_counter = ?, promised_server = ? WHERE id = 1",
                (write.promised.counter, write.promised.server),
            )
        if write.caught_up is not None:
            conn.execute("UPDATE acceptor SET caught_up = ? WHERE id = 1", (int(write.caught_up),))
        for pw in write.products:
            self._write_product(conn, pw, recorded_at, usage)

    def _write_product(
        self, conn: sqlite3.Connection, pw: ProductWrite, recorded_at: float, usage: list[_UsageRow]
    ) -> None:
        firm, product = pw.key
        if pw.replace is not None:
            conn.execute("DELETE FROM handles WHERE firm = ? AND product = ?", (firm, product))
            conn.executemany(  # a later record with the same handle wins, as in a dict
                _REPLACE_HANDLE,
                [
                    (
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
                    )
                    for r in pw.replace
                ],
            )
        else:
            execute = conn.execute
            for op in pw.ops:
                if type(op) is Grant:
                    rec = op.record
                    row = (firm, product, rec.handle, rec.seats, rec.client_id, rec.request_id)
                    # A grant is idempotent: an existing handle is kept, and not recorded again.
                    grant = (*row, rec.granted_at, rec.owner, rec.user, rec.host, rec.pid)
                    if execute(_GRANT, grant).rowcount > 0:
                        usage.append(
                            (rec.granted_at, recorded_at, "granted", *row[:4], rec.client_id)
                        )
                elif type(op) is Release:
                    # Releasing a handle that is not held is a no-op (no row comes back).
                    for seats, client_id in execute(_RELEASE, (firm, product, op.handle)):
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
