"""The client API of the virtual container: request and reply schemas (docs/design.md §4).

Transport: ZeroMQ, client DEALER -> server ROUTER, CURVE. The SDK sends each request as one
frame ``[payload]``; a client may also send ``[b"", payload]`` (an empty delimiter, as a REQ
socket would); the server strips the delimiter if present and replies with the same envelope.
``payload`` is one msgpack map (`tmr.protocol.codec`).

Requests (at most `MAX_REQUEST_SIZE` bytes) carry ``"v": 1``, ``"op"`` and ``"rid"`` (the
request id, 1-64 of ``[A-Za-z0-9._:-]``), plus per operation::

    list      -
    status    -
    checkout  cid, firm, product, seats [, user, host, pid, wait, mode]
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
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal, TypeAlias, cast

from tmr.errors import ApiError, ErrorCode, TmrError, api_error
from tmr.protocol.codec import pack, unpack, unpack_flat
from tmr.protocol.errors import ProtocolError
from tmr.protocol.results import (
    CID_MAX,
    CRYPT_OPERATIONS,
    ERROR_CODE_MAX,
    FIRM_CODE_MAX,
    FIRM_CODE_MIN,
    HANDLE_MAX,
    HOST_MAX,
    MAX_CRYPT_DATA,
    MAX_REPLY_SIZE,
    MAX_REQUEST_SIZE,
    MESSAGE_MAX,
    PID_MAX,
    PRODUCT_CODE_MAX,
    PROTOCOL_VERSION,
    RESULT_TYPES,
    RID_MAX,
    SEATS_MAX,
    USER_MAX,
    WAIT_MAX,
    AdminReleaseResult,
    BackendStatus,
    CheckoutResult,
    CryptOperation,
    CryptResult,
    HeartbeatResult,
    LicenseEntry,
    ListResult,
    QueuedResult,
    ReleaseResult,
    Result,
    StatusResult,
    UsageResult,
    _check_bytes,
    _check_float,
    _check_int,
    _check_rid,
    _check_str,
    _key_list,
    _set,
    _short,
    _type_name,
    _Wire,
    valid_rid,
)
from tmr.replication.types import AccessMode

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
    "OPS",
    "PID_MAX",
    "PRODUCT_CODE_MAX",
    "PROTOCOL_VERSION",
    "RESULT_TYPES",
    "RID_MAX",
    "SEATS_MAX",
    "USER_MAX",
    "WAIT_MAX",
    "AdminReleaseResult",
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
    "encode_ok",
    "encode_reply",
    "encode_request",
    "valid_rid",
]


_ERROR_CODE_RE: Final = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_ENVELOPE: Final = frozenset({"v", "op", "rid"})
_MODES: Final = {m.value: m for m in AccessMode}


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
    asks again with the same request id before the result's `hold` passed.

    `mode`: the access mode (`AccessMode`, CodeMeter's UserLimit / NoUserLimit / Exclusive;
    docs/design.md §7.6), its string on the wire; left out when user_limit, so older
    servers never see it. Any other string is a `ProtocolError` (BAD_REQUEST) naming the
    modes."""

    rid: str
    cid: str
    firm: int
    product: int
    seats: int = 1
    user: str = ""
    host: str = ""
    pid: int = 0
    wait: float | None = None
    mode: AccessMode = AccessMode.USER_LIMIT
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
            if type(self.mode) is not AccessMode:
                mode = _MODES.get(self.mode) if isinstance(self.mode, str) else None
                if mode is None:
                    raise ProtocolError(
                        f"unknown access mode {_short(self.mode)} "
                        f"(one of {', '.join(m.value for m in AccessMode)})"
                    )
                _set(self, "mode", mode)
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
    "checkout": frozenset({"user", "host", "pid", "wait", "mode"}),
}
# Optional keys whose default is None: on the wire they are left out, never nil.
_NONE_DEFAULT: Final[dict[str, tuple[str, ...]]] = {"checkout": ("wait",)}
OPS: Final[frozenset[str]] = frozenset(_REQUEST_TYPES)


def _request_shapes() -> dict[str, dict[frozenset[str], tuple[str, ...]]]:
    """Per op, every key set a valid request of it may have (each subset of its optional
    keys left out), with the fields present."""
    out: dict[str, dict[frozenset[str], tuple[str, ...]]] = {}
    for op, names in _REQUEST_FIELDS.items():
        optional = sorted(_OPTIONAL_FIELDS.get(op, frozenset()))
        shapes = out[op] = {}
        for mask in range(1 << len(optional)):
            left_out = {n for i, n in enumerate(optional) if mask >> i & 1}
            present = tuple(n for n in names if n not in left_out)
            shapes[_ENVELOPE | frozenset(present)] = present
    return out


_REQUEST_SHAPES: Final = _request_shapes()


def decode_request(frame: bytes) -> Request:
    """Decode and validate one request frame (server side).

    Raises `ProtocolError` (code ``BAD_REQUEST``) with a clear message for anything malformed,
    oversized (> `MAX_REQUEST_SIZE`), wrongly typed or out of range, an unknown ``op``, a wrong
    ``v``, and missing or unknown keys. ``exc.rid`` is the request id when it could be read
    (and is itself valid), else ``None``.

    The usual request (a known op, ``v`` 1, exactly the keys of one of its shapes, no nil)
    takes a fast path that only builds the request (whose class checks every field); any
    other frame, and any request its class refuses, goes through `_decode_request_strict`,
    which decides the same and names the problem.
    """
    msg = unpack_flat(frame, max_size=MAX_REQUEST_SIZE)
    op = msg.get("op")
    version = msg.get("v")
    if type(op) is str and type(version) is int and version == PROTOCOL_VERSION:
        shapes = _REQUEST_SHAPES.get(op)
        names = shapes.get(frozenset(msg)) if shapes is not None else None
        if names is not None and None not in msg.values():
            try:
                return _REQUEST_TYPES[op](**{n: msg[n] for n in names})
            except ProtocolError:
                pass  # the strict path raises it again, with the request id
    return _decode_request_strict(msg)


def _decode_request_strict(msg: dict[str, Any]) -> Request:
    """`decode_request` of a decoded frame, every check in order."""
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
        msg[f.name] = value.value if isinstance(value, AccessMode) else value
    return pack(msg)


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


# `encode_ok` from templates: an OK reply is the map {"v": 1, "rid": rid, "ok": true,
# "result": body}, so its bytes are a constant head, the packed rid, a constant middle and the
# packed body. Bodies of results that do not vary (a release's, a heartbeat's for one lease)
# are packed once.
_OK_HEAD: Final = b"\x84" + pack({"v": PROTOCOL_VERSION})[1:] + b"\xa3rid"
_OK_MID: Final = b"\xa2ok\xc3\xa6result"
_CONSTANT_RESULTS: Final = (ReleaseResult, HeartbeatResult)
_CONSTANT_BODIES: dict[object, bytes] = {}
_CONSTANT_BODIES_MAX = 64


def encode_ok(rid: str, result: Result) -> bytes:
    """`encode_reply(OkReply(rid, result))`, the same bytes, from the templates above (the
    server's hot path: no reply object, no map built for the envelope)."""
    _check_rid(rid)
    if type(result) in _CONSTANT_RESULTS:
        body = _CONSTANT_BODIES.get(result)
        if body is None:
            body = pack(result.to_wire())
            if len(_CONSTANT_BODIES) < _CONSTANT_BODIES_MAX:
                _CONSTANT_BODIES[result] = body
    else:
        body = pack(result.to_wire())
    return b"".join((_OK_HEAD, pack(rid), _OK_MID, body))


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
