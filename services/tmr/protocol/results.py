"""The typed results of the client API: one class per operation (docs/design.md §4).

Pure data and validation, no I/O and no msgpack: the sans-I/O leader builds these (a
`ClientReply` carries one), the server encodes them with `to_wire` (through
`tmr.protocol.client_api.encode_reply`), and the SDK decodes them with `from_wire`
(`decode_reply(..., op=...)`). `tmr.protocol.client_api` re-exports every public name.

Strictness of `from_wire`: the documented keys are required and checked; unknown keys are
ignored (checkout, heartbeat, release, crypt) or kept in ``extra`` (list, its license
entries, status, its backends, usage) so the server can add fields compatibly.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Literal, Self, TypeAlias, cast

from tmr.protocol.errors import ProtocolError

__all__ = [
    "CID_MAX",
    "CRYPT_OPERATIONS",
    "ERROR_CODE_MAX",
    "FIRM_CODE_MAX",
    "FIRM_CODE_MIN",
    "HANDLE_MAX",
    "HOST_MAX",
    "MAX_CRYPT_DATA",
    "MAX_REPLY_SIZE",
    "MAX_REQUEST_SIZE",
    "MESSAGE_MAX",
    "PID_MAX",
    "PRODUCT_CODE_MAX",
    "PROTOCOL_VERSION",
    "RELEASED",
    "RESULT_TYPES",
    "RID_MAX",
    "SEATS_MAX",
    "USER_MAX",
    "WAIT_MAX",
    "AdminReleaseResult",
    "BackendStatus",
    "CheckoutResult",
    "CryptOperation",
    "CryptResult",
    "HeartbeatResult",
    "LicenseEntry",
    "ListResult",
    "QueuedResult",
    "ReleaseResult",
    "Result",
    "StatusResult",
    "UsageResult",
    "WireResult",
    "valid_rid",
]

PROTOCOL_VERSION: Final = 1
MAX_REQUEST_SIZE: Final = 128 * 1024
MAX_REPLY_SIZE: Final = 16 * 1024 * 1024
MAX_CRYPT_DATA: Final = 65536
FIRM_CODE_MIN: Final = 6_000_000
FIRM_CODE_MAX: Final = 6_999_999
PRODUCT_CODE_MAX: Final = 2**32 - 1
SEATS_MAX: Final = 100_000
RID_MAX: Final = 64
CID_MAX: Final = 128
HANDLE_MAX: Final = 128
# Who the client says it is (checkout; informational, `HandleRecord.user`): printable text.
USER_MAX: Final = 64
HOST_MAX: Final = 253  # a DNS name
PID_MAX: Final = 2**32 - 1
# A queued checkout (`wait`, seconds): 0 < wait <= WAIT_MAX. A client waiting longer asks
# again with a smaller one; the server keeps the place at most its own hold between asks.
WAIT_MAX: Final = 86_400.0
ERROR_CODE_MAX: Final = 64
MESSAGE_MAX: Final = 1024

CryptOperation: TypeAlias = Literal["encrypt", "decrypt", "hmac"]
CRYPT_OPERATIONS: Final[frozenset[str]] = frozenset({"encrypt", "decrypt", "hmac"})

_FLOAT_MAX: Final = sys.float_info.max
_RID_RE: Final = re.compile(r"[A-Za-z0-9._:-]{1,64}")


# ---------------------------------------------------------------------------- validation


def _short(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_name(value: object) -> str:
    match value:
        case None:
            return "nil"
        case bool():
            return "bool"
        case int():
            return "int"
        case float():
            return "float"
        case str():
            return "string"
        case bytes():
            return "binary"
        case list() | tuple():
            return "array"
        case dict():
            return "map"
        case _:
            return type(value).__name__


def valid_rid(value: object) -> bool:
    """True if `value` is a well-formed request id (1-64 of ``[A-Za-z0-9._:-]``)."""
    return isinstance(value, str) and _RID_RE.fullmatch(value) is not None


def _check_rid(value: object) -> str:
    if not isinstance(value, str):
        raise ProtocolError(f"'rid' must be a string, not {_type_name(value)}")
    if not _RID_RE.fullmatch(value):
        raise ProtocolError(
            f"'rid' must be 1-{RID_MAX} characters of [A-Za-z0-9._:-], got {_short(value)}"
        )
    return value


def _check_int(name: str, value: object, lo: int, hi: int | None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError(f"{name!r} must be an integer, not {_type_name(value)}")
    if value < lo or (hi is not None and value > hi):
        bounds = f"{lo}-{hi}" if hi is not None else f">= {lo}"
        raise ProtocolError(f"{name!r} out of range ({bounds}): {value}")
    return value


def _check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ProtocolError(f"{name!r} must be a boolean, not {_type_name(value)}")
    return value


def _check_str(
    name: str, value: object, lo: int = 0, hi: int | None = None, *, printable: bool = False
) -> str:
    if not isinstance(value, str):
        raise ProtocolError(f"{name!r} must be a string, not {_type_name(value)}")
    if len(value) < lo or (hi is not None and len(value) > hi):
        bounds = f"{lo}-{hi}" if hi is not None else f">= {lo}"
        raise ProtocolError(f"{name!r} must be {bounds} characters long, got {len(value)}")
    if printable and not value.isprintable():
        raise ProtocolError(f"{name!r} must hold printable characters only")
    return value


def _check_opt_str(name: str, value: object) -> str | None:
    return None if value is None else _check_str(name, value)


def _check_float(name: str, value: object, *, lo: float | None = None) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ProtocolError(f"{name!r} must be a number, not {_type_name(value)}")
    number = float(value)
    if not math.isfinite(number) or (lo is not None and number < lo):
        raise ProtocolError(f"{name!r} out of range: {value}")
    return number


def _check_opt_float(name: str, value: object) -> float | None:
    return None if value is None else _check_float(name, value)


def _check_bytes(name: str, value: object, hi: int) -> bytes:
    if isinstance(value, bytearray | memoryview):
        value = bytes(value)
    if not isinstance(value, bytes):
        raise ProtocolError(f"{name!r} must be binary, not {_type_name(value)}")
    if len(value) > hi:
        raise ProtocolError(f"{name!r} too long: {len(value)} bytes (max {hi})")
    return value


def _set(obj: object, name: str, value: object) -> None:
    """Normalise a field of a frozen dataclass inside __post_init__."""
    object.__setattr__(obj, name, value)


def _key_list(keys: list[str]) -> str:
    return ", ".join(_short(k, 30) for k in sorted(keys)[:5]) + (", ..." if len(keys) > 5 else "")


# ---------------------------------------------------------------------------- results


_NAMES: Final[dict[type, tuple[str, ...]]] = {}  # each result class's wire keys, by class


class _Wire:
    """Shared `from_wire` / `to_wire` of the result dataclasses.

    Every dataclass field (but ``extra``) is a required wire key; unknown wire keys are kept
    in ``extra`` if the class has such a field, else ignored.
    """

    __slots__ = ()
    _what: ClassVar[str] = "result"
    # Every field a wire scalar (no nested result, array or map, no ``extra``): `to_wire`
    # copies the fields as they are.
    _flat: ClassVar[bool] = False

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        names = _NAMES.get(cls)
        if names is None:
            fields = dataclasses.fields(cast(Any, cls))
            names = _NAMES[cls] = tuple(f.name for f in fields if f.name != "extra")
        return names

    @classmethod
    def _keeps_extra(cls) -> bool:
        return any(f.name == "extra" for f in dataclasses.fields(cast(Any, cls)))

    @classmethod
    def from_wire(cls, data: object) -> Self:
        """Build from a decoded map; raises `ProtocolError` if a key is missing or bad."""
        if not isinstance(data, dict):
            raise ProtocolError(f"{cls._what} must be a map, not {_type_name(data)}")
        names = cls._names()
        missing = [n for n in names if n not in data]
        if missing:
            raise ProtocolError(f"{cls._what}: missing key(s) {_key_list(missing)}")
        kwargs: dict[str, Any] = {n: data[n] for n in names}
        if cls._keeps_extra():
            kwargs["extra"] = {k: v for k, v in data.items() if k not in names}
        try:
            return cls(**kwargs)
        except ProtocolError as exc:
            raise ProtocolError(f"{cls._what}: {exc.message}") from None

    def to_wire(self) -> dict[str, Any]:
        """The map sent on the wire."""
        if self._flat:
            return {name: getattr(self, name) for name in self._names()}
        out: dict[str, Any] = {}
        extra = getattr(self, "extra", None)
        if extra:
            out.update(extra)
        for name in self._names():
            out[name] = _to_wire_value(getattr(self, name))
        return out


def _to_wire_value(value: object) -> Any:
    if isinstance(value, _Wire):
        return value.to_wire()
    if isinstance(value, tuple | list):
        return [_to_wire_value(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _to_wire_value(v) for k, v in value.items()}
    return value


def _check_map(name: str, value: object) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ProtocolError(f"{name!r} must be a map, not {_type_name(value)}")
    for key in value:
        if not isinstance(key, str):
            raise ProtocolError(f"{name!r} keys must be strings")
    return dict(value)


@dataclass(frozen=True, slots=True)
class CheckoutResult(_Wire):
    """Result of checkout: the handle and its lease (seconds)."""

    handle: str
    firm: int
    product: int
    seats: int
    lease: float
    tmr_id: int
    _what: ClassVar[str] = "checkout result"
    _flat: ClassVar[bool] = True

    def __post_init__(self) -> None:
        # The server builds one per checkout: one test for the usual case, the field by
        # field checks (and their messages) only when it fails.
        h, firm, product, seats, lease, tmr_id = (
            self.handle,
            self.firm,
            self.product,
            self.seats,
            self.lease,
            self.tmr_id,
        )
        if (
            type(h) is str
            and 0 < len(h) <= HANDLE_MAX
            and h.isprintable()
            and type(firm) is int
            and FIRM_CODE_MIN <= firm <= FIRM_CODE_MAX
            and type(product) is int
            and 0 <= product <= PRODUCT_CODE_MAX
            and type(seats) is int
            and 1 <= seats <= SEATS_MAX
            and type(lease) is float
            and 0.0 <= lease <= _FLOAT_MAX
            and type(tmr_id) is int
            and tmr_id >= 0
        ):
            return
        _check_str("handle", self.handle, 1, HANDLE_MAX, printable=True)
        _check_int("firm", self.firm, FIRM_CODE_MIN, FIRM_CODE_MAX)
        _check_int("product", self.product, 0, PRODUCT_CODE_MAX)
        _check_int("seats", self.seats, 1, SEATS_MAX)
        _set(self, "lease", _check_float("lease", self.lease, lo=0.0))
        _check_int("tmr_id", self.tmr_id, 0, None)


@dataclass(frozen=True, slots=True)
class HeartbeatResult(_Wire):
    """Result of heartbeat: the renewed lease (seconds from now)."""

    lease: float
    _what: ClassVar[str] = "heartbeat result"
    _flat: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _set(self, "lease", _check_float("lease", self.lease, lo=0.0))


@dataclass(frozen=True, slots=True)
class ReleaseResult(_Wire):
    """Result of release: whether this request released the handle."""

    released: bool
    _what: ClassVar[str] = "release result"
    _flat: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_bool("released", self.released)


RELEASED: Final = ReleaseResult(True)  # what every successful release is answered


@dataclass(frozen=True, slots=True)
class CryptResult(_Wire):
    """Result of crypt: the output bytes and the backend that computed them."""

    data: bytes
    backend: str
    _what: ClassVar[str] = "crypt result"
    _flat: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _set(self, "data", _check_bytes("data", self.data, MAX_REPLY_SIZE))
        _check_str("backend", self.backend)


@dataclass(frozen=True, slots=True)
class LicenseEntry(_Wire):
    """One license of the virtual container, as `list` reports it.

    ``status`` is the per-backend view, e.g. ``"1:#8 2:#8 3:(#7)"``; ``tmr_id`` is the
    effective TMR ID (``None`` when fewer than 2 backends hold a copy); ``expires`` is a UNIX
    time or ``None``.
    """

    firm: int
    product: int
    tmr_id: int | None
    quantity: int
    in_use: int
    available: bool
    status: str
    expires: float | None
    features: Mapping[str, str]
    extra: Mapping[str, Any] = field(default_factory=dict)
    _what: ClassVar[str] = "license entry"

    def __post_init__(self) -> None:
        _check_int("firm", self.firm, 0, None)
        _check_int("product", self.product, 0, PRODUCT_CODE_MAX)
        if self.tmr_id is not None:
            _check_int("tmr_id", self.tmr_id, 0, None)
        _check_int("quantity", self.quantity, 0, None)
        _check_int("in_use", self.in_use, 0, None)
        _check_bool("available", self.available)
        _check_str("status", self.status)
        _set(self, "expires", _check_opt_float("expires", self.expires))
        features = _check_map("features", self.features)
        for key, value in features.items():
            _check_str(f"features[{_short(key)}]", value)
        _set(self, "features", features)
        _set(self, "extra", _check_map("extra", self.extra))

    @property
    def reason(self) -> str | None:
        """Why a backend's copy is not counted (``CLONED_COPY``, ``WRONG_BACKEND_KEY``,
        ``UNBOUND_COPY``; shown as ``!#ID`` in ``status``), if the server says so."""
        value = self.extra.get("reason")
        return value if isinstance(value, str) and value else None


@dataclass(frozen=True, slots=True)
class ListResult(_Wire):
    """Result of list: the virtual container (serial ``131-NNNNNNN``) and its licenses."""

    serial: str
    server: str
    licenses: tuple[LicenseEntry, ...]
    extra: Mapping[str, Any] = field(default_factory=dict)
    _what: ClassVar[str] = "list result"

    def __post_init__(self) -> None:
        _check_str("serial", self.serial)
        _check_str("server", self.server)
        if not isinstance(self.licenses, list | tuple):
            raise ProtocolError(f"'licenses' must be an array, not {_type_name(self.licenses)}")
        _set(
            self,
            "licenses",
            tuple(
                e if isinstance(e, LicenseEntry) else LicenseEntry.from_wire(e)
                for e in self.licenses
            ),
        )
        _set(self, "extra", _check_map("extra", self.extra))


@dataclass(frozen=True, slots=True)
class BackendStatus(_Wire):
    """One backend as the TMR server sees it (extra keys, e.g. TMR IDs, in ``extra``)."""

    name: str
    up: bool
    extra: Mapping[str, Any] = field(default_factory=dict)
    _what: ClassVar[str] = "backend status"

    def __post_init__(self) -> None:
        _check_str("name", self.name)
        _check_bool("up", self.up)
        _set(self, "extra", _check_map("extra", self.extra))


@dataclass(frozen=True, slots=True)
class StatusResult(_Wire):
    """Result of status.

    ``role`` is one of ``active``, ``standby``, ``takeover``, ``fenced``; ``epoch`` is
    ``(counter, server id)`` or ``None``; ``active_hint`` may name the active server's client
    endpoint when this one is not active.
    """

    server: str
    role: str
    epoch: tuple[int, str] | None
    active_hint: str | None
    backends: tuple[BackendStatus, ...]
    handles: int
    ops_committed: int
    extra: Mapping[str, Any] = field(default_factory=dict)
    _what: ClassVar[str] = "status result"

    ROLES: ClassVar[frozenset[str]] = frozenset({"active", "standby", "takeover", "fenced"})

    def __post_init__(self) -> None:
        _check_str("server", self.server)
        _check_str("role", self.role, 1, 64)
        if self.epoch is not None:
            epoch: object = self.epoch
            if not isinstance(epoch, list | tuple) or len(epoch) != 2:
                raise ProtocolError("'epoch' must be [counter, server id] or nil")
            counter = _check_int("epoch[0]", epoch[0], 0, None)
            server = _check_str("epoch[1]", epoch[1])
            _set(self, "epoch", (counter, server))
        _check_opt_str("active_hint", self.active_hint)
        if not isinstance(self.backends, list | tuple):
            raise ProtocolError(f"'backends' must be an array, not {_type_name(self.backends)}")
        _set(
            self,
            "backends",
            tuple(
                b if isinstance(b, BackendStatus) else BackendStatus.from_wire(b)
                for b in self.backends
            ),
        )
        _check_int("handles", self.handles, 0, None)
        _check_int("ops_committed", self.ops_committed, 0, None)
        _set(self, "extra", _check_map("extra", self.extra))


def _check_maps(name: str, value: object) -> tuple[dict[str, Any], ...]:
    if not isinstance(value, list | tuple):
        raise ProtocolError(f"{name!r} must be an array, not {_type_name(value)}")
    return tuple(_check_map(f"{name}[{i}]", v) for i, v in enumerate(value))


@dataclass(frozen=True, slots=True)
class UsageResult(_Wire):
    """Result of usage: the window, one map per license (``firm``, ``product``,
    ``quantity``, ``peak_seats``, ``peak_at``, ``seat_hours``, ``checkouts``, ``releases``,
    ``expiries``, ``denials``, ``clients``) and one map per backend whose usage record was read
    (``backend``, ``rows``, ``oldest``, ``truncated``)."""

    since: float
    until: float
    server: str
    licenses: tuple[Mapping[str, Any], ...]
    sources: tuple[Mapping[str, Any], ...]
    extra: Mapping[str, Any] = field(default_factory=dict)
    _what: ClassVar[str] = "usage result"

    def __post_init__(self) -> None:
        _set(self, "since", _check_float("since", self.since))
        _set(self, "until", _check_float("until", self.until))
        _check_str("server", self.server)
        _set(self, "licenses", _check_maps("licenses", self.licenses))
        _set(self, "sources", _check_maps("sources", self.sources))
        _set(self, "extra", _check_map("extra", self.extra))


@dataclass(frozen=True, slots=True)
class AdminReleaseResult(_Wire):
    """What an administrator's release (`tmr admin release`, WebAdmin) is told once it
    commits: ``released`` and the handle freed with who held it. Not a client operation: the
    control socket and WebAdmin send `to_wire` as JSON."""

    released: bool
    handle: str
    firm: int
    product: int
    seats: int
    user: str
    host: str
    pid: int
    _what: ClassVar[str] = "admin release result"
    _flat: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_bool("released", self.released)
        _check_str("handle", self.handle, 1, HANDLE_MAX)
        _check_int("firm", self.firm, 0, None)
        _check_int("product", self.product, 0, PRODUCT_CODE_MAX)
        _check_int("seats", self.seats, 1, SEATS_MAX)
        _check_str("user", self.user, 0, USER_MAX)
        _check_str("host", self.host, 0, HOST_MAX)
        _check_int("pid", self.pid, 0, PID_MAX)


@dataclass(frozen=True, slots=True)
class QueuedResult(_Wire):
    """Result of a checkout with `wait` that is queued: `position` in its license's queue
    (1: the head), `hold` seconds the server keeps the place without another ask, `retry`
    seconds it suggests before the next ask (same request id). ``queued`` is always true:
    it tells this result from a `CheckoutResult`."""

    queued: bool
    position: int
    hold: float
    retry: float
    _what: ClassVar[str] = "queued result"

    def __post_init__(self) -> None:
        if _check_bool("queued", self.queued) is not True:
            raise ProtocolError("'queued' must be true")
        _check_int("position", self.position, 1, None)
        _set(self, "hold", _check_float("hold", self.hold, lo=0.0))
        _set(self, "retry", _check_float("retry", self.retry, lo=0.0))


Result: TypeAlias = (
    CheckoutResult
    | QueuedResult
    | HeartbeatResult
    | ReleaseResult
    | CryptResult
    | ListResult
    | StatusResult
    | UsageResult
)

RESULT_TYPES: Final[dict[str, type[Result]]] = {
    "checkout": CheckoutResult,
    "heartbeat": HeartbeatResult,
    "release": ReleaseResult,
    "crypt": CryptResult,
    "list": ListResult,
    "status": StatusResult,
    "usage": UsageResult,
}

# What a `ClientReply` of the leader carries: a client operation's result, or an
# administrator's release.
WireResult: TypeAlias = Result | AdminReleaseResult
