"""The client API of the virtual container: request and reply schemas (docs/design.md §4).

Transport: ZeroMQ, client DEALER -> server ROUTER, CURVE. A client sends each request as the
two frames ``[b"", payload]`` (an empty delimiter, as a REQ socket would); the server strips
the delimiter if present and replies with the same envelope. ``payload`` is one msgpack map
(`tmr.protocol.codec`).

Requests (at most `MAX_REQUEST_SIZE` bytes) carry ``"v": 1``, ``"op"`` and ``"rid"`` (the
request id, 1-64 of ``[A-Za-z0-9._:-]``), plus per operation::

    list      -
    status    -
    checkout  cid, firm, product, seats [, user, host, pid, wait]
    heartbeat cid, handle
    release   cid, handle
    crypt     cid, handle, operation ("encrypt" | "decrypt" | "hmac"), data (bin <= 64 KiB)
    usage     since, until (UNIX times): per-license usage report (`tmr report usage`)

Replies: ``{"v": 1, "rid": str, "ok": true, "result": {...}}`` or
``{"v": 1, "rid": str, "ok": false, "error": CODE, "message": str}`` (``rid`` is ``""`` when
the request id could not be read).

Server side::

    try:
        req = decode_request(frame)          # ProtocolError (BAD_REQUEST) if malformed
    except ProtocolError as exc:
        out = encode_reply(ErrorReply.from_exception(exc))
    ...
    out = encode_reply(OkReply(req.rid, CheckoutResult(...)))
    out = encode_reply(ErrorReply(req.rid, ErrorCode.NOT_ACTIVE, "standby"))

Client side: `encode_request` and `decode_reply` (pass ``op=`` to get a typed result).

Strictness: requests must hold exactly the keys of their operation. Replies must hold
exactly their top-level keys; inside a result, the documented keys are required and checked,
unknown keys are ignored (checkout, heartbeat, release, crypt) or kept in ``extra``
(list, its license entries, status, its backends) so the server can add fields compatibly.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Literal, Self, TypeAlias, cast

from tmr.errors import ApiError, ErrorCode, TmrError, api_error
from tmr.protocol.codec import pack, unpack, unpack_flat
from tmr.protocol.errors import ProtocolError

__all__ = [
    "CRYPT_OPERATIONS",
    "FIRM_CODE_MAX",
    "FIRM_CODE_MIN",
    "MAX_CRYPT_DATA",
    "MAX_REPLY_SIZE",
    "MAX_REQUEST_SIZE",
    "OPS",
    "PRODUCT_CODE_MAX",
    "PROTOCOL_VERSION",
    "RESULT_TYPES",
    "SEATS_MAX",
    "WAIT_MAX",
    "BackendStatus",
    "CheckoutRequest",
    "CheckoutResult",
    "CryptOperation",
    "CryptRequest",
    "CryptResult",
    "ErrorReply",
    "HeartbeatRequest",
    "HeartbeatResult",
    "LicenseEntry",
    "ListRequest",
    "ListResult",
    "OkReply",
    "QueuedResult",
    "ReleaseRequest",
    "ReleaseResult",
    "Reply",
    "Request",
    "Result",
    "StatusRequest",
    "StatusResult",
    "UsageRequest",
    "UsageResult",
    "decode_reply",
    "decode_request",
    "encode_reply",
    "encode_request",
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

_RID_RE: Final = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_ERROR_CODE_RE: Final = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_ENVELOPE: Final = frozenset({"v", "op", "rid"})


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


# ---------------------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class ListRequest:
    """List the licenses of the virtual container."""

    rid: str
    op: ClassVar[Literal["list"]] = "list"

    def __post_init__(self) -> None:
        _check_rid(self.rid)


@dataclass(frozen=True, slots=True)
class StatusRequest:
    """Status of the TMR server that answers (role, epoch, backends)."""

    rid: str
    op: ClassVar[Literal["status"]] = "status"

    def __post_init__(self) -> None:
        _check_rid(self.rid)


@dataclass(frozen=True, slots=True)
class CheckoutRequest:
    """Allocate `seats` seats of (firm, product) to client `cid`.

    `user`, `host`, `pid`: who the client says it is (its OS user or a display name, its host
    name, its process id), recorded with the handle for administrators. Optional on the wire
    (a client from before them sends none: "", "", 0); not proof of anything (the CURVE key
    of the connection is the identity that cannot be faked).

    `wait`: queue for the license instead of a NO_LICENSE_AVAILABLE answer (seconds, 0 <
    wait <= `WAIT_MAX`; left out on the wire when None, so older servers never see it): the
    answer is then a `QueuedResult` unless the seats are granted at once, and the client
    asks again with the same request id before the result's `hold` passed."""

    rid: str
    cid: str
    firm: int
    product: int
    seats: int = 1
    user: str = ""
    host: str = ""
    pid: int = 0
    wait: float | None = None
    op: ClassVar[Literal["checkout"]] = "checkout"

    def __post_init__(self) -> None:
        rid = _check_rid(self.rid)
        try:
            _check_str("cid", self.cid, 1, CID_MAX, printable=True)
            _check_int("firm", self.firm, FIRM_CODE_MIN, FIRM_CODE_MAX)
            _check_int("product", self.product, 0, PRODUCT_CODE_MAX)
            _check_int("seats", self.seats, 1, SEATS_MAX)
            _check_str("user", self.user, 0, USER_MAX, printable=True)
            _check_str("host", self.host, 0, HOST_MAX, printable=True)
            _check_int("pid", self.pid, 0, PID_MAX)
            if self.wait is not None:
                wait = _check_float("wait", self.wait)
                if not 0 < wait <= WAIT_MAX:
                    raise ProtocolError(f"'wait' out of range (0-{WAIT_MAX:g}]: {self.wait}")
                _set(self, "wait", wait)
        except ProtocolError as exc:
            exc.rid = rid
            raise


@dataclass(frozen=True, slots=True)
class HeartbeatRequest:
    """Renew the lease of `handle`."""

    rid: str
    cid: str
    handle: str
    op: ClassVar[Literal["heartbeat"]] = "heartbeat"

    def __post_init__(self) -> None:
        rid = _check_rid(self.rid)
        try:
            _check_str("cid", self.cid, 1, CID_MAX, printable=True)
            _check_str("handle", self.handle, 1, HANDLE_MAX, printable=True)
        except ProtocolError as exc:
            exc.rid = rid
            raise


@dataclass(frozen=True, slots=True)
class ReleaseRequest:
    """Give back the seats of `handle`."""

    rid: str
    cid: str
    handle: str
    op: ClassVar[Literal["release"]] = "release"

    def __post_init__(self) -> None:
        rid = _check_rid(self.rid)
        try:
            _check_str("cid", self.cid, 1, CID_MAX, printable=True)
            _check_str("handle", self.handle, 1, HANDLE_MAX, printable=True)
        except ProtocolError as exc:
            exc.rid = rid
            raise


@dataclass(frozen=True, slots=True)
class CryptRequest:
    """Encrypt, decrypt or HMAC `data` with the product key of the license behind `handle`."""

    rid: str
    cid: str
    handle: str
    operation: CryptOperation
    data: bytes
    op: ClassVar[Literal["crypt"]] = "crypt"

    def __post_init__(self) -> None:
        rid = _check_rid(self.rid)
        try:
            _check_str("cid", self.cid, 1, CID_MAX, printable=True)
            _check_str("handle", self.handle, 1, HANDLE_MAX, printable=True)
            operation = _check_str("operation", self.operation)
            if operation not in CRYPT_OPERATIONS:
                raise ProtocolError(
                    f"'operation' must be one of {sorted(CRYPT_OPERATIONS)}, "
                    f"got {_short(operation)}"
                )
            _set(self, "data", _check_bytes("data", self.data, MAX_CRYPT_DATA))
        except ProtocolError as exc:
            exc.rid = rid
            raise


@dataclass(frozen=True, slots=True)
class UsageRequest:
    """Per-license usage (peak seats, seat-hours, denials) in the window [since, until]."""

    rid: str
    since: float
    until: float
    op: ClassVar[Literal["usage"]] = "usage"

    def __post_init__(self) -> None:
        rid = _check_rid(self.rid)
        try:
            _set(self, "since", _check_float("since", self.since, lo=0.0))
            _set(self, "until", _check_float("until", self.until, lo=0.0))
            if self.until < self.since:
                raise ProtocolError("'until' must not be before 'since'")
        except ProtocolError as exc:
            exc.rid = rid
            raise


Request: TypeAlias = (
    ListRequest
    | StatusRequest
    | CheckoutRequest
    | HeartbeatRequest
    | ReleaseRequest
    | CryptRequest
    | UsageRequest
)

_REQUEST_TYPES: Final[dict[str, type[Request]]] = {
    cls.op: cls
    for cls in (
        ListRequest,
        StatusRequest,
        CheckoutRequest,
        HeartbeatRequest,
        ReleaseRequest,
        CryptRequest,
        UsageRequest,
    )
}
_REQUEST_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    op: tuple(f.name for f in dataclasses.fields(cls)) for op, cls in _REQUEST_TYPES.items()
}
_REQUEST_KEYS: Final[dict[str, frozenset[str]]] = {
    op: _ENVELOPE | frozenset(names) for op, names in _REQUEST_FIELDS.items()
}
# Keys an op may leave out (their fields keep the default), so that requests of clients from
# before the keys existed still decode; `encode_request` leaves them out when at the default.
_OPTIONAL_FIELDS: Final[dict[str, frozenset[str]]] = {
    "checkout": frozenset({"user", "host", "pid", "wait"}),
}
# Optional keys whose default is None: on the wire they are left out, never nil.
_NONE_DEFAULT: Final[dict[str, tuple[str, ...]]] = {"checkout": ("wait",)}
OPS: Final[frozenset[str]] = frozenset(_REQUEST_TYPES)


def _key_list(keys: list[str]) -> str:
    return ", ".join(_short(k, 30) for k in sorted(keys)[:5]) + (", ..." if len(keys) > 5 else "")


def decode_request(frame: bytes) -> Request:
    """Decode and validate one request frame (server side).

    Raises `ProtocolError` (code ``BAD_REQUEST``) with a clear message for anything malformed,
    oversized (> `MAX_REQUEST_SIZE`), wrongly typed or out of range, an unknown ``op``, a wrong
    ``v``, and missing or unknown keys. ``exc.rid`` is the request id when it could be read
    (and is itself valid), else ``None``.
    """
    msg = unpack_flat(frame, max_size=MAX_REQUEST_SIZE)
    if "rid" not in msg:
        raise ProtocolError("missing key 'rid'")
    rid = _check_rid(msg["rid"])
    try:
        if "v" not in msg:
            raise ProtocolError("missing key 'v'")
        version = msg["v"]
        if not isinstance(version, int) or isinstance(version, bool) or version != 1:
            raise ProtocolError(f"unsupported protocol version {_short(version)} (expected 1)")
        if "op" not in msg:
            raise ProtocolError("missing key 'op'")
        op = msg["op"]
        if not isinstance(op, str):
            raise ProtocolError(f"'op' must be a string, not {_type_name(op)}")
        cls = _REQUEST_TYPES.get(op)
        if cls is None:
            raise ProtocolError(f"unknown op {_short(op)}")
        names = _REQUEST_FIELDS[op]
        if msg.keys() != _REQUEST_KEYS[op]:  # else nothing is missing and nothing extra
            optional = _OPTIONAL_FIELDS.get(op, frozenset())
            missing = [n for n in names if n not in msg and n not in optional]
            if missing:
                raise ProtocolError(f"missing key(s) for op {op!r}: {_key_list(missing)}")
            extra = [k for k in msg if k not in _ENVELOPE and k not in names]
            if extra:
                raise ProtocolError(f"unexpected key(s) for op {op!r}: {_key_list(extra)}")
        nil = [n for n in _NONE_DEFAULT.get(op, ()) if msg.get(n, 0) is None]
        if nil:  # an optional key is left out, never sent as nil
            raise ProtocolError(f"{nil[0]!r} must be a number, not nil")
        if msg.keys() != _REQUEST_KEYS[op]:
            return cls(**{n: msg[n] for n in names if n in msg})
        return cls(**{n: msg[n] for n in names})
    except ProtocolError as exc:
        exc.rid = rid
        raise


def encode_request(req: Request) -> bytes:
    """Encode a request (client side). The dataclass validated its fields when built."""
    msg: dict[str, Any] = {"v": PROTOCOL_VERSION, "op": req.op}
    optional = _OPTIONAL_FIELDS.get(req.op, frozenset())
    for f in dataclasses.fields(req):
        value = getattr(req, f.name)
        if f.name in optional and value == f.default:
            continue
        msg[f.name] = value
    return pack(msg)


# ---------------------------------------------------------------------------- results


class _Wire:
    """Shared `from_wire` / `to_wire` of the result dataclasses.

    Every dataclass field (but ``extra``) is a required wire key; unknown wire keys are kept
    in ``extra`` if the class has such a field, else ignored.
    """

    __slots__ = ()
    _what: ClassVar[str] = "result"

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cast(Any, cls)) if f.name != "extra")

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

    def __post_init__(self) -> None:
        _check_str("handle", self.handle, 1, HANDLE_MAX, printable=True)
        _check_int("firm", self.firm, FIRM_CODE_MIN, FIRM_CODE_MAX)
        _check_int("product", self.product, 0, PRODUCT_CODE_MAX)
        _check_int("seats", self.seats, 1, SEATS_MAX)
        _set(self, "lease", _check_float("lease", self.lease, lo=0.0))
        _check_int("tmr_id", self.tmr_id, 0, None)


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


@dataclass(frozen=True, slots=True)
class HeartbeatResult(_Wire):
    """Result of heartbeat: the renewed lease (seconds from now)."""

    lease: float
    _what: ClassVar[str] = "heartbeat result"

    def __post_init__(self) -> None:
        _set(self, "lease", _check_float("lease", self.lease, lo=0.0))


@dataclass(frozen=True, slots=True)
class ReleaseResult(_Wire):
    """Result of release: whether this request released the handle."""

    released: bool
    _what: ClassVar[str] = "release result"

    def __post_init__(self) -> None:
        _check_bool("released", self.released)


@dataclass(frozen=True, slots=True)
class CryptResult(_Wire):
    """Result of crypt: the output bytes and the backend that computed them."""

    data: bytes
    backend: str
    _what: ClassVar[str] = "crypt result"

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


# ---------------------------------------------------------------------------- replies


@dataclass(frozen=True, slots=True)
class OkReply:
    """A successful reply. `result` is a typed result, or a plain map (e.g. when decoded
    without ``op``)."""

    rid: str
    result: Result | Mapping[str, Any]
    ok: ClassVar[Literal[True]] = True

    def __post_init__(self) -> None:
        _check_rid(self.rid)
        if not isinstance(self.result, _Wire | Mapping):
            raise ProtocolError(f"'result' must be a map, not {_type_name(self.result)}")

    def to_wire(self) -> dict[str, Any]:
        result = self.result
        body = result.to_wire() if isinstance(result, _Wire) else dict(result)
        return {"v": PROTOCOL_VERSION, "rid": self.rid, "ok": True, "result": body}


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """A failed request: ``error`` is an `ErrorCode` value, ``message`` says why.

    ``rid`` is ``""`` when the request id could not be read. Messages longer than 1024
    characters are shortened.
    """

    rid: str
    error: str
    message: str = ""
    ok: ClassVar[Literal[False]] = False

    def __post_init__(self) -> None:
        if self.rid != "":
            _check_rid(self.rid)
        code = str(self.error) if isinstance(self.error, ErrorCode) else self.error
        _check_str("error", code, 1, ERROR_CODE_MAX)
        if not _ERROR_CODE_RE.fullmatch(code):
            raise ProtocolError(f"'error' must be an upper-case code, got {_short(code)}")
        _set(self, "error", code)
        message = _check_str("message", self.message)
        if len(message) > MESSAGE_MAX:
            _set(self, "message", message[: MESSAGE_MAX - 3] + "...")

    @property
    def code(self) -> ErrorCode | None:
        """The error code as an `ErrorCode`, or ``None`` if this client does not know it."""
        try:
            return ErrorCode(self.error)
        except ValueError:
            return None

    def to_exception(self) -> ApiError:
        """The typed exception of `tmr.errors` for this reply."""
        return api_error(self.error, self.message)

    @classmethod
    def from_exception(cls, exc: TmrError, rid: str | None = None) -> ErrorReply:
        """The reply for an exception: its code (``BAD_REQUEST`` if it has none) and message.

        `rid` defaults to ``exc.rid`` for a `ProtocolError`; an invalid rid becomes ``""``.
        """
        if rid is None:
            rid = exc.rid if isinstance(exc, ProtocolError) else None
        if not valid_rid(rid):
            rid = ""
        code = exc.code or ErrorCode.BAD_REQUEST
        return cls(cast(str, rid), code.value, exc.message or str(exc))

    def to_wire(self) -> dict[str, Any]:
        return {
            "v": PROTOCOL_VERSION,
            "rid": self.rid,
            "ok": False,
            "error": self.error,
            "message": self.message,
        }


Reply: TypeAlias = OkReply | ErrorReply

_OK_KEYS: Final = frozenset({"v", "rid", "ok", "result"})
_ERROR_KEYS: Final = frozenset({"v", "rid", "ok", "error", "message"})


def encode_reply(reply: Reply) -> bytes:
    """Encode a reply (server side)."""
    return pack(reply.to_wire())


def decode_reply(frame: bytes, *, op: str | None = None, max_size: int = MAX_REPLY_SIZE) -> Reply:
    """Decode and validate one reply frame (client side).

    With `op` (the operation of the request this answers) the result of an `OkReply` is the
    typed result class of `RESULT_TYPES` (a checkout's is a `QueuedResult` when it holds
    ``queued``); without it, a plain map. Raises `ProtocolError`
    for anything malformed; ``exc.rid`` is the reply's rid when it could be read.
    """
    if op is not None and op not in RESULT_TYPES:
        raise ValueError(f"unknown op {op!r}")
    msg = unpack(frame, max_size=max_size)
    if "rid" not in msg:
        raise ProtocolError("reply: missing key 'rid'")
    rid = msg["rid"]
    if not isinstance(rid, str) or (rid != "" and not valid_rid(rid)):
        raise ProtocolError(f"reply: bad 'rid' {_short(rid)}")
    try:
        version = msg.get("v")
        if not isinstance(version, int) or isinstance(version, bool) or version != 1:
            raise ProtocolError(f"reply: unsupported protocol version {_short(version)}")
        ok = msg.get("ok")
        if not isinstance(ok, bool):
            raise ProtocolError(f"reply: 'ok' must be a boolean, not {_type_name(ok)}")
        expected = _OK_KEYS if ok else _ERROR_KEYS
        keys = set(msg)
        if keys != expected:
            problems = []
            if expected - keys:
                problems.append(f"missing key(s) {_key_list(list(expected - keys))}")
            if keys - expected:
                problems.append(f"unexpected key(s) {_key_list(list(keys - expected))}")
            raise ProtocolError("reply: " + "; ".join(problems))
        if not ok:
            return ErrorReply(rid, msg["error"], msg["message"])
        if rid == "":
            raise ProtocolError("reply: a successful reply needs a 'rid'")
        result = msg["result"]
        if not isinstance(result, dict):
            raise ProtocolError(f"reply: 'result' must be a map, not {_type_name(result)}")
        if op is None:
            return OkReply(rid, result)
        if op == "checkout" and "queued" in result:  # only ever for a checkout with `wait`
            return OkReply(rid, QueuedResult.from_wire(result))
        return OkReply(rid, RESULT_TYPES[op].from_wire(result))
    except ProtocolError as exc:
        exc.rid = rid or None
        raise
