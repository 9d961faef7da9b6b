"""Core value types of the replication protocol (docs/design.md §5).

Everything here is a plain immutable value: the acceptor, the leader, the SQLite store and
the wire format (`tmr.protocol.peer_api`) all speak in these types.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

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


@dataclass(frozen=True)
class HandleRecord:
    """One granted allocation of seats to one client (a row of the handle table)."""

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

    @property
    def key(self) -> ProductKey:
        return (self.firm, self.product)


class ReleaseReason(enum.StrEnum):
    RELEASE = "release"
    EXPIRE = "expire"


@dataclass(frozen=True)
class Grant:
    record: HandleRecord


@dataclass(frozen=True)
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


@dataclass
class ProductLog:
    """Durable per-product state on an acceptor: version and handle table."""

    version: Version = ZERO_VERSION
    handles: dict[str, HandleRecord] = field(default_factory=dict)
    floor: Floor = NO_FLOOR
    # Grants taken from an entry flagged `notice` (answered to their client only once two
    # backends durably know them committed), with that entry's version, while the version is
    # above this backend's known commit (docs/design.md §6): a new leader may abort them.
    marked: dict[str, Version] = field(default_factory=dict)

    def seats(self) -> int:
        return sum(r.seats for r in self.handles.values())

    def copy(self) -> ProductLog:
        return ProductLog(self.version, dict(self.handles), self.floor, dict(self.marked))


def apply_ops(handles: dict[str, HandleRecord], ops: tuple[Op, ...]) -> None:
    """Apply ops in order to a handle table, in place. Deterministic and idempotent.
    `Floor` ops do not touch the table (see `floor_after`)."""
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
