"""Core value types of the replication protocol (docs/design.md §5).

Everything here is a plain immutable value: the acceptor, the leader, the SQLite store and
the wire format (`tmr.protocol.peer_api`) all speak in these types.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace

ProductKey = tuple[int, int]  # (firm code, product code)


@dataclass(frozen=True, order=True)
class Epoch:
    """Fencing number of one TMR server's term as leader, ordered (counter, server)."""

    counter: int
    server: str

    def __str__(self) -> str:
        return f"{self.counter}/{self.server}" if self.server else str(self.counter)


ZERO_EPOCH = Epoch(0, "")


@dataclass(frozen=True, order=True)
class Version:
    """Position of a product log: the epoch that wrote it and the sequence number in it."""

    epoch: Epoch
    seq: int


ZERO_VERSION = Version(ZERO_EPOCH, 0)


class AccessMode(enum.StrEnum):
    """How a checkout counts against the license's seats (CodeMeter's access modes,
    docs/design.md §7.6). The values are the strings of the client and peer wires.

    - ``USER_LIMIT`` (CodeMeter "UserLimit", the default): the handle takes its seats.
    - ``STATION_SHARE`` (CodeMeter "NoUserLimit"): the station_share handles of one station,
      (owner CURVE key, user, host), take the seats of the largest of them, once.
    - ``EXCLUSIVE`` (CodeMeter "Exclusive"): the whole license for one handle. Granted only
      while the product holds no handle, and nothing else is granted while it is held; its
      record's seats are the effective LQ at the grant.
    """

    USER_LIMIT = "user_limit"
    STATION_SHARE = "station_share"
    EXCLUSIVE = "exclusive"


Station = tuple[str, str, str]  # (owner CURVE key, user, host): who shares a station_share seat


@dataclass(frozen=True, slots=True)
class HandleRecord:
    """One granted allocation of seats to one client (a row of the handle table). Slots: a
    server holds one per held handle (issue 17: 100,000 of them), 112 bytes instead of 300."""

    handle: str
    firm: int
    product: int
    seats: int
    client_id: str
    request_id: str
    granted_at: float  # wall-clock seconds, for the usage record only (never for leases)
    # The Z85 CURVE public key of the client connection that checked the handle out (its ZAP
    # User-Id). Only that key may heartbeat, release or use the handle; "" (a record written
    # before handles had owners) is owned by no key and simply expires.
    owner: str = ""
    # Who the client says it is (docs/design.md §7.1): its OS user (or a display name the
    # application chose), host name and process id, as the SDK sent them with the checkout.
    # Informational only: shown to administrators, never used to decide who may use the
    # handle (that is `owner`). "" / 0: not given, or a record from before schema 5.
    user: str = ""
    host: str = ""
    pid: int = 0
    # How the handle counts (`AccessMode`, backend schema 6); records of older peers and
    # schemas are user_limit, which is what every handle was before modes.
    mode: AccessMode = AccessMode.USER_LIMIT

    @property
    def key(self) -> ProductKey:
        return (self.firm, self.product)

    @property
    def station(self) -> Station:
        return (self.owner, self.user, self.host)


# A frozen dataclass's __init__ sets each field through object.__setattr__; `handle_record`
# sets them through the slots' own descriptors instead: 1.0 us a record against 1.7 us
# (100,000 records: 0.09-0.13 s against 0.17-0.29 s). A takeover builds one per held handle,
# and so does a backend's start.
_FIELDS = (
    "handle",
    "firm",
    "product",
    "seats",
    "client_id",
    "request_id",
    "granted_at",
    "owner",
    "user",
    "host",
    "pid",
    "mode",
)
if tuple(f.name for f in fields(HandleRecord)) != _FIELDS or hasattr(
    HandleRecord, "__post_init__"
):  # pragma: no cover
    raise ImportError(
        "HandleRecord's fields or construction changed: update types._FIELDS and handle_record"
    )
(
    _set_handle,
    _set_firm,
    _set_product,
    _set_seats,
    _set_client_id,
    _set_request_id,
    _set_granted_at,
    _set_owner,
    _set_user,
    _set_host,
    _set_pid,
    _set_mode,
) = (HandleRecord.__dict__[name].__set__ for name in _FIELDS)
_new = object.__new__


def handle_record(
    handle: str,
    firm: int,
    product: int,
    seats: int,
    client_id: str,
    request_id: str,
    granted_at: float,
    owner: str,
    user: str,
    host: str,
    pid: int,
    mode: AccessMode,
) -> HandleRecord:
    """``HandleRecord(...)`` with every field given, for the paths that build many (a
    takeover's table, a backend's start): the same record (equal, the same hash, frozen),
    built faster. The caller has checked the values, as for the constructor."""
    rec: HandleRecord = _new(HandleRecord)
    _set_handle(rec, handle)
    _set_firm(rec, firm)
    _set_product(rec, product)
    _set_seats(rec, seats)
    _set_client_id(rec, client_id)
    _set_request_id(rec, request_id)
    _set_granted_at(rec, granted_at)
    _set_owner(rec, owner)
    _set_user(rec, user)
    _set_host(rec, host)
    _set_pid(rec, pid)
    _set_mode(rec, mode)
    return rec


def seat_count(records: Iterable[HandleRecord]) -> int:
    """THE seat count of a handle table under access modes (docs/design.md §7.6), by full
    recount: the seats of every user_limit and exclusive handle, plus for each station the
    seats of its largest station_share handle. `SeatCount` keeps the same number running;
    property tests hold the two equal (tests/unit/replication/test_seat_count.py)."""
    total = 0
    shared: dict[Station, int] = {}
    for r in records:
        if r.mode is AccessMode.STATION_SHARE:
            st = r.station
            if r.seats > shared.get(st, 0):
                shared[st] = r.seats
        else:
            total += r.seats
    return total + sum(shared.values())


class SeatCount:
    """The running `seat_count` of one handle table, updated per handle added or removed
    (the backends', the leader's and admission's one count; issue 17: no walk over the
    table per replicated entry). ``total`` equals `seat_count` of the records added and not
    removed; ``exclusive`` and ``handles`` count the exclusive handles and all handles.
    The caller adds a handle id once and removes only a handle it added (the tables that
    own a SeatCount check membership first)."""

    __slots__ = ("_stations", "exclusive", "handles", "total")

    def __init__(self, records: Iterable[HandleRecord] = ()) -> None:
        self.total = 0
        self.exclusive = 0
        self.handles = 0
        # station -> {seats: number of its station_share handles with that many seats}
        self._stations: dict[Station, dict[int, int]] = {}
        for r in records:
            self.add(r)

    def copy(self) -> SeatCount:
        c = SeatCount()
        c.total, c.exclusive, c.handles = self.total, self.exclusive, self.handles
        c._stations = {k: dict(v) for k, v in self._stations.items()}
        return c

    def add(self, r: HandleRecord) -> None:
        self.handles += 1
        mode = r.mode
        if mode is AccessMode.USER_LIMIT:
            self.total += r.seats
            return
        if mode is AccessMode.EXCLUSIVE:
            self.exclusive += 1
            self.total += r.seats
            return
        sizes = self._sizes(r.station)
        top = max(sizes, default=0)
        sizes[r.seats] = sizes.get(r.seats, 0) + 1
        if r.seats > top:
            self.total += r.seats - top

    def remove(self, r: HandleRecord) -> None:
        self.handles -= 1
        mode = r.mode
        if mode is AccessMode.USER_LIMIT:
            self.total -= r.seats
            return
        if mode is AccessMode.EXCLUSIVE:
            self.exclusive -= 1
            self.total -= r.seats
            return
        st = r.station
        sizes = self._sizes(st)
        top = max(sizes)
        left = sizes[r.seats] - 1
        if left:
            sizes[r.seats] = left
        else:
            del sizes[r.seats]
        if not sizes:
            self._forget(st)
        if r.seats == top and not left:
            self.total -= top - max(sizes, default=0)

    def _sizes(self, st: Station) -> dict[int, int]:
        """The station's {seats: handles} to change (created empty)."""
        return self._stations.setdefault(st, {})

    def _forget(self, st: Station) -> None:
        del self._stations[st]

    def trial(self) -> SeatCount:
        """A count that starts as this one and changes without changing it: what-if
        checks (the acceptor's entry check) at a cost per op, not per station or handle."""
        return _TrialCount(self)

    def increase(self, mode: AccessMode, station: Station, seats: int) -> int:
        """How much ``total`` would grow if a handle of ``seats`` in ``mode`` at ``station``
        were added (0 for a station_share within its station's largest handle)."""
        if mode is AccessMode.STATION_SHARE:
            sizes = self._stations.get(station)
            top = max(sizes) if sizes else 0
            return max(0, seats - top)
        return seats

    def conflict(self, mode: AccessMode) -> str:
        """Why the exclusive rule refuses a handle in ``mode`` here ("" if it does not): an
        exclusive handle needs an empty table, and an exclusive handle held refuses all."""
        if self.exclusive:
            return "held exclusively"
        if mode is AccessMode.EXCLUSIVE and self.handles:
            return "exclusive access needs every seat free"
        return ""


class ReleaseReason(enum.StrEnum):
    RELEASE = "release"
    EXPIRE = "expire"


@dataclass(frozen=True, slots=True)
class Grant:
    record: HandleRecord


@dataclass(frozen=True, slots=True)
class Release:
    handle: str
    reason: ReleaseReason
    at: float  # wall-clock seconds, for the usage record only


@dataclass(frozen=True)
class Floor:
    """A product's rollback floors, committed through the quorum like seats: the lowest TMR
    ID a copy may have to count (the effective ID the trio reached) and the trusted time
    against which expiry is checked (a time at least two backends' clocks reached). As an op
    it raises the floors of the product log; floors never go down (`merge` takes the max)."""

    tmr_id: int = 0
    time: float = 0.0

    def merge(self, other: Floor) -> Floor:
        if other.tmr_id <= self.tmr_id and other.time <= self.time:
            return self
        return Floor(max(self.tmr_id, other.tmr_id), max(self.time, other.time))


NO_FLOOR = Floor()


class CopyReason(enum.StrEnum):
    """Why a backend's copy of a license is not valid (`LicenseInfo.reason`): the one
    vocabulary of the backend's license view (`tmr.backend.licenses`), the floors
    (`floor_refusal`), admission and the views. The values are the strings the peer
    protocol has always carried (`tmr.protocol.peer_api`), so peers of the previous version
    read and send the same bytes."""

    NONE = ""  # the copy is valid
    EXPIRED = "expired"  # at the backend's clock, or at the trio's trusted time (floors)
    CLOCK_ROLLBACK = "clock rollback"  # the backend's clock was set back; expiring copies refused
    BELOW_FLOOR = "below floor"  # older than a copy installed, or than the replicated floor


Op = Grant | Release | Floor


@dataclass(frozen=True)
class LicenseInfo:
    """What a backend reports of its own copy of one license (verified by the backend)."""

    tmr_id: int
    quantity: int
    valid: bool
    reason: CopyReason = CopyReason.NONE  # why not valid
    expires: float | None = None
    features: tuple[tuple[str, str], ...] = ()
    # The copy's place in its set (format 2, under the vendor's signature): the server counts
    # each (set_id, set_index), fingerprint and backend_key once, and only from the backend
    # whose CURVE key is backend_key (tmr.licensing.effective). Empty/0: not reported.
    set_id: str = ""
    set_index: int = 0
    fingerprint: str = ""
    backend_key: str = ""  # hex of the raw CURVE public key the copy is bound to

    def __post_init__(self) -> None:
        # A reason given as its string (the wire form) becomes the member; any other string
        # is refused with ValueError (the peer decoder turns it into a bad frame).
        if type(self.reason) is not CopyReason:
            object.__setattr__(self, "reason", CopyReason(self.reason))


class _TrialCount(SeatCount):
    """`SeatCount.trial`: the base's numbers, and its stations copied on first change."""

    __slots__ = ("_base",)

    def __init__(self, base: SeatCount) -> None:
        super().__init__()
        self.total, self.exclusive, self.handles = base.total, base.exclusive, base.handles
        self._base = base._stations

    def _sizes(self, st: Station) -> dict[int, int]:
        sizes = self._stations.get(st)
        if sizes is None:
            sizes = self._stations[st] = dict(self._base.get(st, {}))
        return sizes

    def _forget(self, st: Station) -> None:
        self._stations[st] = {}  # gone here, whatever the base holds

    def increase(self, mode: AccessMode, station: Station, seats: int) -> int:
        if mode is AccessMode.STATION_SHARE and station not in self._stations:
            self._sizes(station)
        return super().increase(mode, station, seats)

    def copy(self) -> SeatCount:
        raise TypeError("a trial count is not copied")


class ProductLog:  # noqa: PLW1641 (mutable: not hashable)
    """Durable per-product state on an acceptor: version, handle table and floors.

    The table changes only through `put`, `drop`, `replace_handles` and `apply`, which keep
    its running seat count (`SeatCount`, `seats()`) in step; ``handles`` is read-only."""

    __slots__ = ("_handles", "count", "floor", "marked", "version")

    def __init__(
        self,
        version: Version = ZERO_VERSION,
        handles: Mapping[str, HandleRecord] | None = None,
        floor: Floor = NO_FLOOR,
        marked: Mapping[str, Version] | None = None,
    ) -> None:
        self.version = version
        self.floor = floor
        self._handles: dict[str, HandleRecord] = dict(handles or {})
        self.count = SeatCount(self._handles.values())
        # Grants taken from an entry flagged `notice` (answered to their client only once two
        # backends durably know them committed), with that entry's version, while the version
        # is above this backend's known commit (docs/design.md §6): a new leader may abort them.
        self.marked: dict[str, Version] = dict(marked or {})

    @property
    def handles(self) -> Mapping[str, HandleRecord]:
        return self._handles

    def seats(self) -> int:
        """`seat_count` of the table, kept running (no walk over the handles)."""
        return self.count.total

    def put(self, rec: HandleRecord) -> None:
        """Add ``rec`` unless its handle is held (a grant is idempotent)."""
        if rec.handle not in self._handles:
            self._handles[rec.handle] = rec
            self.count.add(rec)

    def drop(self, handle: str) -> HandleRecord | None:
        """Remove ``handle`` if held (a release of an unknown handle is a no-op)."""
        rec = self._handles.pop(handle, None)
        if rec is not None:
            self.count.remove(rec)
        return rec

    def replace_handles(self, records: Iterable[HandleRecord]) -> None:
        """The table becomes ``records`` (a later record of the same handle wins)."""
        self._handles = {r.handle: r for r in records}
        self.count = SeatCount(self._handles.values())

    def apply(self, ops: tuple[Op, ...]) -> None:
        """Apply ops in order, in place. Deterministic and idempotent. `Floor` ops do not
        touch the table (see `floor_after`)."""
        for op in ops:
            if isinstance(op, Grant):
                self.put(op.record)
            elif isinstance(op, Release):
                self.drop(op.handle)

    def copy(self) -> ProductLog:
        c = ProductLog(self.version, None, self.floor)
        c._handles = dict(self._handles)
        c.count = self.count.copy()
        c.marked = dict(self.marked)
        return c

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ProductLog):
            return NotImplemented
        return (self.version, self.floor, self._handles, self.marked) == (
            other.version,
            other.floor,
            other._handles,
            other.marked,
        )

    def __repr__(self) -> str:
        return f"ProductLog({self.version!r}, {len(self._handles)} handles, {self.floor!r})"


def apply_ops(handles: dict[str, HandleRecord], ops: tuple[Op, ...]) -> None:
    """Apply ops in order to a plain handle table, in place (deterministic, idempotent);
    `ProductLog.apply` is the same with the running seat count."""
    for op in ops:
        if isinstance(op, Grant):
            handles.setdefault(op.record.handle, op.record)
        elif isinstance(op, Release):
            handles.pop(op.handle, None)


def floor_after(floor: Floor, ops: tuple[Op, ...]) -> Floor:
    """The floors once ``ops`` are applied (the max of ``floor`` and their `Floor` ops)."""
    for op in ops:
        if isinstance(op, Floor):
            floor = floor.merge(op)
    return floor


def floor_refusal(lic: LicenseInfo, floor: Floor) -> CopyReason:
    """Why a copy does not count under the replicated floors (`CopyReason.NONE` if it
    does): older than the trio's TMR ID (BELOW_FLOOR), or expired at the trusted time
    (EXPIRED), whatever the backend's own clock and files say."""
    if lic.tmr_id < floor.tmr_id:
        return CopyReason.BELOW_FLOOR
    if lic.expires is not None and lic.expires <= floor.time:
        return CopyReason.EXPIRED
    return CopyReason.NONE


def under_floor(lic: LicenseInfo, floor: Floor) -> LicenseInfo:
    """``lic`` as the floors make it: not valid, with the reason, if `floor_refusal` says so."""
    why = floor_refusal(lic, floor) if lic.valid else CopyReason.NONE
    return replace(lic, valid=False, reason=why) if why else lic


def key_str(key: ProductKey) -> str:
    return f"{key[0]}:{key[1]}"
