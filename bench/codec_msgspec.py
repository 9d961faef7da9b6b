# mypy: allow-subclassing-any
# mypy: disable-error-code="import-not-found,call-arg,no-any-return"
"""The client and peer messages as msgspec Structs: the candidate schema `bench.codec_compare`
measures against the hand-validated decoders of `tmr.protocol`. An experiment: msgspec is not a
dependency of the project, and the settings above keep mypy clean in a venv without it (where
msgspec's classes are Any and their class keywords look like arguments to object).

Same wire as `tmr.protocol.client_api` / `tmr.protocol.peer_api`: client requests are maps
tagged by ``op`` with exactly their keys (``forbid_unknown_fields``); results ignore unknown
keys; peer messages are maps tagged by ``t`` whose records and ops are arrays (``array_like``
Structs, the op's letter as the array's tag). Ranges are `Meta` constraints; what msgspec cannot
express or does not check is added by hand, as a migration would have to: printable strings,
the ok/error shape of a reply, ``until >= since``, duplicate keys (msgspec keeps the last),
deep nesting (a `RecursionError`, not a `DecodeError`), and the values under keys a peer
decoder ignores (msgspec skips them unchecked; the codec's `unpack` then checks the frame).
"""

from __future__ import annotations

import re
import sys
from typing import Annotated, Generic, Literal, TypeVar

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from tmr.protocol.client_api import (
    CID_MAX,
    FIRM_CODE_MAX,
    FIRM_CODE_MIN,
    HANDLE_MAX,
    MAX_CRYPT_DATA,
    MAX_REPLY_SIZE,
    MAX_REQUEST_SIZE,
    PRODUCT_CODE_MAX,
    SEATS_MAX,
)
from tmr.protocol.codec import _map_size, unpack
from tmr.protocol.errors import ProtocolError
from tmr.protocol.peer_api import MAX_OWNER, MAX_PEER_FRAME, MAX_STR, U32, U63
from tmr.replication.types import ReleaseReason

_FMAX = sys.float_info.max
# `ge` refuses NaN, `le` refuses infinity; a pattern needs \A..\Z ("$" also matches before a
# trailing newline, which would let "r-1\n" through).
Finite = Annotated[float, Meta(ge=-_FMAX, le=_FMAX)]
NonNegative = Annotated[float, Meta(ge=0.0, le=_FMAX)]
Rid = Annotated[str, Meta(pattern=r"\A[A-Za-z0-9._:-]{1,64}\Z")]
Cid = Annotated[str, Meta(min_length=1, max_length=CID_MAX)]
Handle = Annotated[str, Meta(min_length=1, max_length=HANDLE_MAX)]
Firm = Annotated[int, Meta(ge=FIRM_CODE_MIN, le=FIRM_CODE_MAX)]
Product = Annotated[int, Meta(ge=0, le=PRODUCT_CODE_MAX)]
Seats = Annotated[int, Meta(ge=1, le=SEATS_MAX)]
Count = Annotated[int, Meta(ge=0, le=U63)]
U32Int = Annotated[int, Meta(ge=0, le=U32)]
PeerStr = Annotated[str, Meta(min_length=1, max_length=MAX_STR)]
_RID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def _printable(name: str, value: str) -> None:
    if not value.isprintable():  # no regex class says exactly what str.isprintable says
        raise ValueError(f"{name!r} must hold printable characters only")


# ------------------------------------------------------------------ client requests


class _Request(Struct, tag_field="op", forbid_unknown_fields=True, frozen=True):
    v: Literal[1]
    rid: Rid


class ListRequest(_Request, tag="list", frozen=True):
    pass


class StatusRequest(_Request, tag="status", frozen=True):
    pass


class CheckoutRequest(_Request, tag="checkout", frozen=True):
    cid: Cid
    firm: Firm
    product: Product
    seats: Seats

    def __post_init__(self) -> None:
        _printable("cid", self.cid)


class HeartbeatRequest(_Request, tag="heartbeat", frozen=True):
    cid: Cid
    handle: Handle

    def __post_init__(self) -> None:
        _printable("cid", self.cid)
        _printable("handle", self.handle)


class ReleaseRequest(_Request, tag="release", frozen=True):
    cid: Cid
    handle: Handle

    def __post_init__(self) -> None:
        _printable("cid", self.cid)
        _printable("handle", self.handle)


class CryptRequest(_Request, tag="crypt", frozen=True):
    cid: Cid
    handle: Handle
    operation: Literal["encrypt", "decrypt", "hmac"]
    data: Annotated[bytes, Meta(max_length=MAX_CRYPT_DATA)]

    def __post_init__(self) -> None:
        _printable("cid", self.cid)
        _printable("handle", self.handle)


class UsageRequest(_Request, tag="usage", frozen=True):
    since: NonNegative
    until: NonNegative

    def __post_init__(self) -> None:
        if self.until < self.since:
            raise ValueError("'until' must not be before 'since'")


Request = (
    ListRequest
    | StatusRequest
    | CheckoutRequest
    | HeartbeatRequest
    | ReleaseRequest
    | CryptRequest
    | UsageRequest
)


class _RidOnly(Struct):
    rid: Rid


_REQUEST_DECODER = msgspec.msgpack.Decoder(Request)
_RID_DECODER = msgspec.msgpack.Decoder(_RidOnly)
ENCODER = msgspec.msgpack.Encoder()


def _rid_of(frame: bytes) -> str | None:
    """The request id of a refused frame (error path only), as `decode_request` reports it."""
    try:
        return _RID_DECODER.decode(frame).rid
    except (msgspec.DecodeError, RecursionError):
        return None


def decode_request(frame: bytes) -> Request:
    """`tmr.protocol.client_api.decode_request` with msgspec: the size first, then one decode.

    Every field of a request is required and unknown keys are refused, so a map header that
    counts exactly the fields (and the tag) cannot hold a duplicate key: the one duplicate
    check msgspec leaves to us costs a byte comparison here.
    """
    if len(frame) > MAX_REQUEST_SIZE:
        raise ProtocolError(f"frame too large: {len(frame)} bytes (max {MAX_REQUEST_SIZE})")
    try:
        req = _REQUEST_DECODER.decode(frame)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise ProtocolError(str(exc), rid=_rid_of(frame)) from None
    except RecursionError:  # deep nesting, even under a key it refuses as unknown
        raise ProtocolError("message nested too deeply", rid=_rid_of(frame)) from None
    if _map_size(frame) != len(req.__struct_fields__) + 1:
        raise ProtocolError("duplicate map key", rid=req.rid)
    return req


_TOP_KEYS = msgspec.msgpack.Decoder(dict[str, msgspec.Raw])


def _unique_keys(frame: bytes) -> set[str]:
    """The top-level keys of a frame msgspec decoded (it keeps the last of duplicate keys):
    refused if the map's header counts more entries than there are distinct keys. Peer frames
    hold no other maps (records, ops and entries are arrays)."""
    keys = _TOP_KEYS.decode(frame)
    if len(keys) != _map_size(frame):
        raise ProtocolError("duplicate map key")
    return set(keys)


# ------------------------------------------------------------------ client replies


class CheckoutResult(Struct, frozen=True):
    handle: Handle
    firm: Firm
    product: Product
    seats: Seats
    lease: NonNegative
    tmr_id: Count

    def __post_init__(self) -> None:
        _printable("handle", self.handle)


class HeartbeatResult(Struct, frozen=True):
    lease: NonNegative


class ReleaseResult(Struct, frozen=True):
    released: bool


class CryptResult(Struct, frozen=True):
    data: Annotated[bytes, Meta(max_length=MAX_REPLY_SIZE)]
    backend: str


R = TypeVar("R")
ErrorCodeStr = Annotated[str, Meta(pattern=r"\A[A-Z][A-Z0-9_]{0,63}\Z")]


class Reply(Struct, Generic[R], forbid_unknown_fields=True, frozen=True):
    """A reply; the ok/error shape is checked after decoding (a tag cannot be a bool)."""

    v: Literal[1]
    rid: str
    ok: bool
    result: R | UnsetType = UNSET
    error: ErrorCodeStr | UnsetType = UNSET
    message: str | UnsetType = UNSET

    def __post_init__(self) -> None:
        if self.rid and _RID_PATTERN.fullmatch(self.rid) is None:
            raise ValueError(f"bad 'rid' {self.rid[:40]!r}")
        if self.ok:
            if self.result is UNSET or self.error is not UNSET or self.message is not UNSET:
                raise ValueError("a successful reply holds exactly v, rid, ok and result")
            if not self.rid:
                raise ValueError("a successful reply needs a 'rid'")
        elif self.result is not UNSET or self.error is UNSET or self.message is UNSET:
            raise ValueError("a failed reply holds exactly v, rid, ok, error and message")


REPLY_DECODERS: dict[str, msgspec.msgpack.Decoder[object]] = {
    "checkout": msgspec.msgpack.Decoder(Reply[CheckoutResult]),
    "heartbeat": msgspec.msgpack.Decoder(Reply[HeartbeatResult]),
    "release": msgspec.msgpack.Decoder(Reply[ReleaseResult]),
    "crypt": msgspec.msgpack.Decoder(Reply[CryptResult]),
}


def decode_reply(frame: bytes, op: str) -> object:
    """`tmr.protocol.client_api.decode_reply(frame, op=op)` with msgspec."""
    if len(frame) > MAX_REPLY_SIZE:
        raise ProtocolError(f"frame too large: {len(frame)} bytes (max {MAX_REPLY_SIZE})")
    try:
        reply = REPLY_DECODERS[op].decode(frame)
    except msgspec.DecodeError as exc:
        raise ProtocolError(str(exc)) from None
    except RecursionError:
        raise ProtocolError("message nested too deeply") from None
    _unique_keys(frame)  # the envelope's; a result's unknown keys stay unchecked
    return reply


# ------------------------------------------------------------------ peer messages (ACCEPT)


class Epoch(Struct, array_like=True, forbid_unknown_fields=True, frozen=True):
    counter: Count
    server: Annotated[str, Meta(max_length=MAX_STR)]


class HandleRecord(Struct, array_like=True, forbid_unknown_fields=True, frozen=True):
    handle: PeerStr
    firm: U32Int
    product: U32Int
    seats: Annotated[int, Meta(ge=1, le=U32)]
    client_id: PeerStr
    request_id: PeerStr
    granted_at: Finite
    owner: Annotated[str, Meta(max_length=MAX_OWNER)] = ""  # 7 fields: an older peer


class Grant(Struct, tag="g", array_like=True, forbid_unknown_fields=True, frozen=True):
    record: HandleRecord


class Release(Struct, tag="r", array_like=True, forbid_unknown_fields=True, frozen=True):
    handle: PeerStr
    reason: ReleaseReason
    at: Finite


class Floor(Struct, tag="f", array_like=True, forbid_unknown_fields=True, frozen=True):
    tmr_id: U32Int
    time: NonNegative


Op = Grant | Release | Floor


class AcceptEntry(Struct, array_like=True, forbid_unknown_fields=True, frozen=True):
    key: tuple[U32Int, U32Int]
    seq: Annotated[int, Meta(ge=1, le=U63)]
    ops: tuple[Op, ...]


class _Peer(Struct, tag_field="t", frozen=True):  # unknown keys ignored: rolling upgrades
    mid: Count


class Probe(_Peer, tag="probe", frozen=True):
    epoch: Epoch | None = None


class Prepare(_Peer, tag="prepare", frozen=True):
    epoch: Epoch


class Accept(_Peer, tag="accept", frozen=True):
    epoch: Epoch
    entries: tuple[AcceptEntry, ...]


PeerRequest = Probe | Prepare | Accept
_PEER_DECODER = msgspec.msgpack.Decoder(PeerRequest)
_PEER_KEYS = {cls: frozenset({"t", *cls.__struct_fields__}) for cls in (Probe, Prepare, Accept)}


def decode_peer_request(frame: bytes) -> PeerRequest:
    """`tmr.protocol.peer_api.decode_request` with msgspec (probe, prepare and accept)."""
    if len(frame) > MAX_PEER_FRAME:
        raise ProtocolError(f"frame too large: {len(frame)} bytes (max {MAX_PEER_FRAME})")
    try:
        msg = _PEER_DECODER.decode(frame)
    except msgspec.DecodeError as exc:
        raise ProtocolError(str(exc)) from None
    except RecursionError:
        raise ProtocolError("message nested too deeply") from None
    if not _unique_keys(frame) <= _PEER_KEYS[type(msg)]:
        # Keys of a newer peer, which msgspec skips unchecked: the codec's rules for them.
        unpack(frame, max_size=MAX_PEER_FRAME)
    return msg
