"""Messages between a TMR server (leader) and the backends (acceptors).

Plain values; `tmr.protocol.peer_api` turns them into bytes and back. Every request carries a
message id `mid` chosen by the leader; the reply echoes it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import NamedTuple

from tmr.replication.types import (
    NO_FLOOR,
    Epoch,
    Floor,
    HandleRecord,
    LicenseInfo,
    Op,
    ProductKey,
    Version,
)

# ---------------------------------------------------------------- leader -> backend

# A backend's per-product status state (versions, seats, copies, floors): (base, gen). `base`
# is drawn when the acceptor is created or its state reloaded (so a restart never matches),
# `gen` counts the changes since. A server that holds the state at a token is sent only the
# products changed after it (docs/design.md §5, Probes).
StateToken = tuple[str, int]


@dataclass(frozen=True)
class Probe:
    """Ask for a backend's `Status`. `epoch` is the sender's epoch while it leads (ACTIVE, or
    TAKEOVER past its probe phase), None otherwise: a backend whose promise is exactly that
    epoch counts the probe as a sign of life of its leader (`Status.leader_age`)."""

    mid: int
    epoch: Epoch | None = None
    # The sender's server id and the digest of the policy it enforces (tmr.policy): backends
    # keep the latest per server and report them in `Status.policies`, so each server sees
    # the other's (docs/design.md §7.6). Empty from an older server.
    server: str = ""
    policy: str = ""
    # The backend state this server holds from that backend (`Status.state` of the latest
    # status it used): the backend then answers with what changed since (`Status.since`).
    # None: send everything (a server that has nothing yet, and an older server).
    have: StateToken | None = None


@dataclass(frozen=True)
class Prepare:
    mid: int
    epoch: Epoch
    # False: the promise carries each product's version, not its table (`Promise.tables`).
    # A takeover asks the table of one backend, not of all three (older backends always
    # send it).
    tables: bool = True


@dataclass(frozen=True)
class AcceptEntry:
    key: ProductKey
    seq: int
    ops: tuple[Op, ...]


@dataclass(frozen=True)
class Accept:
    mid: int
    epoch: Epoch
    entries: tuple[AcceptEntry, ...]
    # The leader's committed seq per product (its epoch), for the products whose commit
    # advanced since it last told this backend. The backend keeps it in memory and reports
    # it in its Promise: a new leader then knows the table it adopts is committed state
    # (docs/design.md §6). An ACCEPT with no entries is a commit notice only.
    commits: tuple[tuple[ProductKey, int], ...] = ()
    # The entries (product, seq) whose grants are answered to their clients only once two
    # backends durably know them committed (sent during a license update): the backend
    # marks those grants with the entry's version until it knows them committed, and
    # reports the marks in its Promise (`ProductLog.marked`). Older leaders send none.
    notice: tuple[tuple[ProductKey, int], ...] = ()


@dataclass(frozen=True)
class SnapshotEntry:
    key: ProductKey
    seq: int
    handles: tuple[HandleRecord, ...]
    floor: Floor = NO_FLOOR  # the product's replicated floors (a wiped backend is seeded)
    # Not None: the table is the backend's own table at this version (``handles`` is empty),
    # sent only to a backend whose promise held the adopted table at that version and said
    # it takes such entries (`Promise.refs`); one whose table is at another version refuses
    # the entry. A takeover then sends no table to the backends that hold it already.
    base: Version | None = None


@dataclass(frozen=True)
class Snapshot:
    mid: int
    epoch: Epoch
    entries: tuple[SnapshotEntry, ...]
    # Every entry is state a quorum already committed (at a committed seq): a backend
    # records it even above its own LQ. False: a takeover's proposal, checked against LQ.
    committed: bool = False


@dataclass(frozen=True)
class Crypt:
    mid: int
    epoch: Epoch
    key: ProductKey
    handle: str
    client_id: str
    operation: str
    data: bytes
    owner: str = ""  # the client key the leader checked: the backend checks it again


PeerRequest = Probe | Prepare | Accept | Snapshot | Crypt

# ---------------------------------------------------------------- backend -> leader


@dataclass(frozen=True)
class Status:
    mid: int
    name: str
    promised: Epoch
    caught_up: bool
    versions: dict[ProductKey, Version]
    seats: dict[ProductKey, int]
    licenses: dict[ProductKey, LicenseInfo]
    # Seconds since this backend last received a request carrying exactly its promised epoch
    # (monotonic clock, not persisted): None when unknown, e.g. since a restart.
    leader_age: float | None = None
    # The backend's trusted wall time (its clock guard's high-water; None: an older backend)
    # and its replicated floors per product.
    clock: float | None = None
    floors: dict[ProductKey, Floor] = field(default_factory=dict)
    # server id -> the policy digest its latest probe carried (memory only; none from an
    # older backend)
    policies: dict[str, str] = field(default_factory=dict)
    # The backend keeps denial records (`Denials`, `DenialQuery`): a server sends them only
    # to backends that say so (False from an older backend, which would refuse the frame).
    denials: bool = False
    # The token of the per-product state this status brings the server to (None: an older
    # backend, which always sends everything).
    state: StateToken | None = None
    # None: `versions`, `seats`, `licenses` and `floors` are complete. Else a delta from the
    # state at (state[0], since) the probe said the server has: they hold the current entries
    # of the products changed since (`floors` only the raised ones among `versions`), and
    # `gone` the products whose copy was removed; every other product is as it was.
    since: int | None = None
    gone: tuple[ProductKey, ...] = ()


@dataclass(frozen=True)
class Promise:
    mid: int
    name: str
    epoch: Epoch
    caught_up: bool
    logs: dict[ProductKey, tuple[Version, tuple[HandleRecord, ...]]]
    licenses: dict[ProductKey, LicenseInfo]
    floors: dict[ProductKey, Floor] = field(default_factory=dict)
    # The highest version per product this backend was told is committed (by an ACCEPT's
    # `commits` or a committed snapshot), kept durably (older backends: memory only).
    commits: dict[ProductKey, Version] = field(default_factory=dict)
    # Per product, the grants of its table taken from an entry flagged `notice`, with that
    # entry's version, above its known commit (`ProductLog.marked`; older backends: none).
    marked: dict[ProductKey, tuple[tuple[str, Version], ...]] = field(default_factory=dict)
    # The backend takes snapshot entries by reference to its own table (`SnapshotEntry.base`;
    # False from an older backend, which would refuse the frame).
    refs: bool = False
    # False: `logs` carry each product's version with an empty table (`Prepare.tables`).
    tables: bool = True


@dataclass(frozen=True)
class Rejected:
    """The request's epoch is below this backend's promise: the sender is fenced."""

    mid: int
    promised: Epoch


class EntryStatus(enum.StrEnum):
    OK = "ok"  # durable up to `seq`
    NEED_SNAPSHOT = "need_snapshot"  # the entry does not follow this backend's log
    REFUSED = "refused"  # the backend's own license check failed (reason says why)


@dataclass(frozen=True)
class EntryResult:
    status: EntryStatus
    seq: int
    reason: str = ""


@dataclass(frozen=True)
class Accepted:
    """Answer to Accept and Snapshot: per product, what is now durable."""

    mid: int
    epoch: Epoch
    results: dict[ProductKey, EntryResult]
    licenses: dict[ProductKey, LicenseInfo] = field(default_factory=dict)
    # This backend keeps commit knowledge durably: the commits the request carried (an
    # ACCEPT's `commits`, a committed snapshot) are on its disk. Older backends: False (their
    # knowledge is memory only, so the leader does not count it, docs/design.md §6).
    durable: bool = False


@dataclass(frozen=True)
class CryptResult:
    mid: int
    ok: bool
    data: bytes = b""
    error: str = ""  # an ErrorCode value when not ok
    message: str = ""


@dataclass(frozen=True)
class PeerError:
    """A request the backend could not parse or does not serve (mid 0 if unreadable)."""

    mid: int
    message: str


PeerReply = Status | Promise | Rejected | Accepted | CryptResult | PeerError


# ---------------------------------------------------------------- usage record (audit)
# Not part of the replication protocol: a read-only query a TMR server sends on its own
# link to read a backend's usage record (`tmr report usage`). Kept out of PeerRequest and
# PeerReply so the leader and the acceptor never see it.


@dataclass(frozen=True)
class UsageQuery:
    """Ask for the usage rows relevant to the wall-clock window [since, until]."""

    mid: int
    since: float
    until: float
    limit: int
    # Chunked (``chunk_bytes`` > 0): only rows with a record id above ``after``, in an answer
    # of at most ``chunk_bytes`` bytes whose `UsageRecords.next` is the ``after`` of the next
    # chunk. 0: every row in one answer (the only form servers before chunking send).
    after: int = 0
    chunk_bytes: int = 0


class UsageRow(NamedTuple):  # a tuple: hundreds of thousands are built for one report
    at: float  # wall time of the op (set by the leader)
    event: str  # "granted" | "released" | "expired"
    firm: int
    product: int
    handle: str
    seats: int
    client_id: str


@dataclass(frozen=True)
class UsageRecords:
    """A backend's answer to `UsageQuery`: the rows in the window, plus every grant made
    before it whose handle was still held when it opened."""

    mid: int
    name: str
    rows: tuple[UsageRow, ...]
    oldest: float | None  # retention trimmed older rows: `at` of the oldest kept (None: none)
    truncated: bool  # more rows matched than `limit` (a chunked answer: said by the first)
    next: int | None = None  # a chunk: ``after`` for the next one (None: the last chunk)


# ---------------------------------------------------------------- denial record (audit)
# Not part of the replication protocol either: a TMR server tells every up backend about the
# checkouts it refused (`Denials`, fire and forget: no answer), and its report worker reads
# them back (`DenialQuery` -> `DenialRecords`), so the denial report covers both servers
# (docs/design.md §7.6). A denial changes no seat state: it never goes through the log.


class DenialRow(NamedTuple):
    """One refused checkout, as the server that refused it saw it."""

    id: str  # unique per refusal (server, boot, counter): dedup across the three backends
    at: float  # wall time of the refusal (the refusing server's clock)
    server: str  # the server id that refused it
    code: str  # the error code answered (NO_LICENSE_AVAILABLE, POLICY_DENIED, ...)
    firm: int
    product: int
    seats: int  # seats asked
    owner: str  # the CURVE key of the connection (Z85): the identity ZAP checked
    user: str  # what the client said (informational)
    host: str
    pid: int
    rule: str  # the policy rule's text for POLICY_DENIED, else the refusal's message
    # The same refusal (every field above but id and at) repeated within one send to the
    # backends is one row: how many times, and the time of the last (`at`: the first).
    times: int = 1
    last: float = 0.0


@dataclass(frozen=True)
class Denials:
    """A batch of refusals from one server (no answer: best effort, deduplicated by id)."""

    mid: int
    rows: tuple[DenialRow, ...]


@dataclass(frozen=True)
class DenialQuery:
    """Ask for the denial rows with `at` in [since, until] and a record id above `after`, in
    an answer of at most `chunk_bytes` bytes (`DenialRecords.next` continues it)."""

    mid: int
    since: float
    until: float
    after: int = 0
    chunk_bytes: int = 256 * 1024


@dataclass(frozen=True)
class DenialRecords:
    mid: int
    name: str
    rows: tuple[DenialRow, ...]
    oldest: float | None  # retention trimmed older rows: `at` of the oldest kept (None: none)
    next: int | None = None  # ``after`` for the next chunk (None: the last one)
