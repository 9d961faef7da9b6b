"""Core value types of the replication protocol (DESIGN.md section 5).

Everything here is a plain immutable value: the acceptor, the leader, the SQLite store and
the wire format (`tmr.protocol.peer_api`) all speak in these types.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

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


Op = Grant | Release


@dataclass(frozen=True)
class LicenseInfo:
    """What a backend reports of its own copy of one license (verified by the backend)."""

    tmr_id: int
    quantity: int
    valid: bool
    reason: str = ""  # why not valid: "expired", "clock rollback", ...
    expires: float | None = None
    features: tuple[tuple[str, str], ...] = ()
    # The copy's place in its set (format 2, under the vendor's signature): the server counts
    # each (set_id, set_index), fingerprint and backend_key once, and only from the backend
    # whose CURVE key is backend_key (tmr.licensing.effective). Empty/0: not reported.
    set_id: str = ""
    set_index: int = 0
    fingerprint: str = ""
    backend_key: str = ""  # hex of the raw CURVE public key the copy is bound to


@dataclass
class ProductLog:
    """Durable per-product state on an acceptor: version and handle table."""

    version: Version = ZERO_VERSION
    handles: dict[str, HandleRecord] = field(default_factory=dict)

    def seats(self) -> int:
        return sum(r.seats for r in self.handles.values())

    def copy(self) -> ProductLog:
        return ProductLog(self.version, dict(self.handles))


def apply_ops(handles: dict[str, HandleRecord], ops: tuple[Op, ...]) -> None:
    """Apply ops in order to a handle table, in place. Deterministic and idempotent."""
    for op in ops:
        if isinstance(op, Grant):
            handles.setdefault(op.record.handle, op.record)
        else:
            handles.pop(op.handle, None)


def key_str(key: ProductKey) -> str:
    return f"{key[0]}:{key[1]}"
