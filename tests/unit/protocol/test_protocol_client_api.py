"""Client API schemas: round trips, and every malformed request gets BAD_REQUEST."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tmr.errors import ErrorCode, NotActive, QuorumLost, Timeout
from tmr.protocol import ProtocolError
from tmr.protocol.client_api import (
    MAX_CRYPT_DATA,
    MAX_REQUEST_SIZE,
    OPS,
    RESULT_TYPES,
    BackendStatus,
    CheckoutRequest,
    CheckoutResult,
    CryptOperation,
    CryptRequest,
    CryptResult,
    ErrorReply,
    HeartbeatRequest,
    HeartbeatResult,
    LicenseEntry,
    ListRequest,
    ListResult,
    OkReply,
    ReleaseRequest,
    ReleaseResult,
    Request,
    Result,
    StatusRequest,
    StatusResult,
    UsageRequest,
    UsageResult,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
    valid_rid,
)
from tmr.protocol.codec import pack

FIRM = 6000123


def frame(msg: dict[str, Any]) -> bytes:
    data: bytes = msgpack.packb(msg, use_bin_type=True)
    return data


def base(op: str, **fields: Any) -> dict[str, Any]:
    return {"v": 1, "op": op, "rid": "r-1", **fields}


VALID: dict[str, dict[str, Any]] = {
    "list": base("list"),
    "status": base("status"),
    "checkout": base("checkout", cid="host/1", firm=FIRM, product=42, seats=1),
    "heartbeat": base("heartbeat", cid="host/1", handle="h1"),
    "release": base("release", cid="host/1", handle="h1"),
    "crypt": base("crypt", cid="host/1", handle="h1", operation="encrypt", data=b"abc"),
    "usage": base("usage", since=1.7e9, until=1.7e9 + 3600),
}

REQUESTS: list[Request] = [
    ListRequest("a"),
    StatusRequest("A.b:c-d_9"),
    CheckoutRequest("x" * 64, "c" * 128, 6_000_000, 0, 1),
    CheckoutRequest("r", "client with spaces é", 6_999_999, 2**32 - 1, 100_000),
    CheckoutRequest("r", "c", 6_000_000, 0, 1, "Alice Ä. (CAD)", "ws-17.example", 4242),
    CheckoutRequest("r", "c", 6_000_000, 0, 1, "u" * 64, "h" * 253, 2**32 - 1),
    HeartbeatRequest("r", "c", "h" * 128),
    ReleaseRequest("r", "c", "handle-1"),
    CryptRequest("r", "c", "h", "encrypt", b""),
    CryptRequest("r", "c", "h", "decrypt", b"\x00" * MAX_CRYPT_DATA),
    CryptRequest("r", "c", "h", "hmac", bytearray(b"xyz")),  # type: ignore[arg-type]
    UsageRequest("r", 0.0, 1.7e9),
]


# ---------------------------------------------------------------------------- requests


@pytest.mark.parametrize("req", REQUESTS, ids=lambda r: r.op)
def test_request_round_trip(req: Request) -> None:
    data = encode_request(req)
    assert len(data) <= MAX_REQUEST_SIZE
    assert decode_request(data) == req


def test_valid_wire_requests_decode() -> None:
    assert set(VALID) == OPS
    for op, msg in VALID.items():
        req = decode_request(frame(msg))
        assert req.op == op and req.rid == "r-1"
    req = decode_request(frame(VALID["crypt"]))
    assert isinstance(req, CryptRequest) and req.data == b"abc"


def with_(which: str, /, **changes: object) -> dict[str, Any]:
    msg = dict(VALID[which])
    for key, value in changes.items():
        if value is DELETE:
            del msg[key]
        else:
            msg[key] = value
    return msg


DELETE = object()

BAD_REQUESTS: list[tuple[dict[str, Any], str]] = [
    # envelope
    (with_("list", v=DELETE), "missing key 'v'"),
    (with_("list", v=2), "unsupported protocol version"),
    (with_("list", v=True), "unsupported protocol version"),
    (with_("list", v=1.0), "unsupported protocol version"),
    (with_("list", v="1"), "unsupported protocol version"),
    (with_("list", op=DELETE), "missing key 'op'"),
    (with_("list", op="lists"), "unknown op"),
    (with_("list", op=""), "unknown op"),
    (with_("list", op=1), "'op' must be a string"),
    (with_("list", op=b"list"), "'op' must be a string"),
    (with_("list", extra=1), "unexpected key"),
    (with_("status", cid="x"), "unexpected key"),
    (with_("checkout", handle="h"), "unexpected key"),
    # checkout
    (with_("checkout", cid=DELETE), "missing key"),
    (with_("checkout", firm=DELETE), "missing key"),
    (with_("checkout", seats=DELETE), "missing key"),
    (with_("checkout", cid=""), "'cid' must be 1-128"),
    (with_("checkout", cid="c" * 129), "'cid' must be 1-128"),
    (with_("checkout", cid="tab\there"), "printable"),
    (with_("checkout", cid="nl\n"), "printable"),
    (with_("checkout", cid=7), "'cid' must be a string"),
    (with_("checkout", cid=None), "'cid' must be a string"),
    (with_("checkout", cid=b"bytes"), "'cid' must be a string"),
    (with_("checkout", firm=5_999_999), "'firm' out of range"),
    (with_("checkout", firm=7_000_000), "'firm' out of range"),
    (with_("checkout", firm=-1), "'firm' out of range"),
    (with_("checkout", firm=True), "'firm' must be an integer"),
    (with_("checkout", firm=6000123.0), "'firm' must be an integer"),
    (with_("checkout", firm="6000123"), "'firm' must be an integer"),
    (with_("checkout", product=-1), "'product' out of range"),
    (with_("checkout", product=2**32), "'product' out of range"),
    (with_("checkout", product=2**64 - 1), "'product' out of range"),
    (with_("checkout", product=[42]), "'product' must be an integer"),
    (with_("checkout", seats=0), "'seats' out of range"),
    (with_("checkout", seats=100_001), "'seats' out of range"),
    (with_("checkout", seats=-(2**63)), "'seats' out of range"),
    (with_("checkout", seats=False), "'seats' must be an integer"),
    (with_("checkout", seats=None), "'seats' must be an integer"),
    # heartbeat / release
    (with_("heartbeat", handle=DELETE), "missing key"),
    (with_("heartbeat", handle=""), "'handle' must be 1-128"),
    (with_("heartbeat", handle="h" * 129), "'handle' must be 1-128"),
    (with_("heartbeat", handle=1), "'handle' must be a string"),
    (with_("heartbeat", cid=DELETE), "missing key"),
    (with_("release", handle={"h": 1}), "'handle' must be a string"),
    (with_("release", handle="\x00"), "printable"),
    (with_("release", cid="c" * 200), "'cid' must be 1-128"),
    (with_("release", seats=1), "unexpected key"),
    # crypt
    (with_("crypt", operation="sign"), "'operation' must be one of"),
    (with_("crypt", operation="ENCRYPT"), "'operation' must be one of"),
    (with_("crypt", operation=None), "'operation' must be a string"),
    (with_("crypt", data="text"), "'data' must be binary"),
    (with_("crypt", data=[1, 2]), "'data' must be binary"),
    (with_("crypt", data=b"x" * (MAX_CRYPT_DATA + 1)), "'data' too long"),
    (with_("crypt", data=DELETE), "missing key"),
]


@pytest.mark.parametrize(("msg", "reason"), BAD_REQUESTS)
def test_bad_requests_keep_their_rid(msg: dict[str, Any], reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason) as err:
        decode_request(frame(msg))
    assert err.value.rid == "r-1"
    assert err.value.code == ErrorCode.BAD_REQUEST
    reply = ErrorReply.from_exception(err.value)
    assert (reply.rid, reply.error) == ("r-1", "BAD_REQUEST")
    assert reason.strip("'") in reply.message or reply.message


@pytest.mark.parametrize(
    ("rid", "reason"),
    [
        (DELETE, "missing key 'rid'"),
        ("", "'rid' must be 1-64"),
        ("r" * 65, "'rid' must be 1-64"),
        ("has space", "'rid' must be 1-64"),
        ("slash/", "'rid' must be 1-64"),
        ("é", "'rid' must be 1-64"),
        ("r\n", "'rid' must be 1-64"),
        (5, "'rid' must be a string"),
        (None, "'rid' must be a string"),
        (b"r-1", "'rid' must be a string"),
    ],
)
def test_bad_rid_gives_no_rid(rid: Any, reason: str) -> None:
    msg = with_("checkout", rid=rid)
    with pytest.raises(ProtocolError, match=reason) as err:
        decode_request(frame(msg))
    assert err.value.rid is None
    assert ErrorReply.from_exception(err.value).rid == ""


def test_oversized_request() -> None:
    msg = with_("crypt", data=b"x" * MAX_CRYPT_DATA, pad="p" * (MAX_REQUEST_SIZE - MAX_CRYPT_DATA))
    with pytest.raises(ProtocolError, match="too large") as err:
        decode_request(frame(msg))
    assert err.value.rid is None  # not even decoded
    biggest = encode_request(CryptRequest("r" * 64, "c" * 128, "h" * 128, "hmac", b"x" * 65536))
    assert len(biggest) < MAX_REQUEST_SIZE


def test_truncated_requests() -> None:
    for req in REQUESTS:
        data = encode_request(req)
        for end in range(len(data)):
            with pytest.raises(ProtocolError):
                decode_request(data[:end])


def test_not_a_map() -> None:
    for value in (1, "list", [1], None, b"x"):
        with pytest.raises(ProtocolError, match="must be a map"):
            decode_request(frame(value))  # type: ignore[arg-type]


def test_constructing_a_bad_request_fails_like_decoding() -> None:
    with pytest.raises(ProtocolError, match="'seats' out of range") as err:
        CheckoutRequest("rid", "cid", FIRM, 1, 0)
    assert err.value.rid == "rid"
    with pytest.raises(ProtocolError, match="'rid'"):
        ListRequest("")
    with pytest.raises(ProtocolError, match="'operation'"):
        CryptRequest("r", "c", "h", "nope", b"")  # type: ignore[arg-type]


def test_checkout_identity_is_optional_on_the_wire() -> None:
    """A client from before user/host/pid sends none of them: it decodes with "", "", 0;
    a request without them is encoded without the keys (an older server accepts it)."""
    req = decode_request(frame(VALID["checkout"]))
    assert isinstance(req, CheckoutRequest)
    assert (req.user, req.host, req.pid) == ("", "", 0)
    plain = msgpack.unpackb(encode_request(CheckoutRequest("r", "c", FIRM, 1)))
    assert not {"user", "host", "pid"} & set(plain)
    msg = with_("checkout", user="alice", host="ws-1", pid=77)
    req = decode_request(frame(msg))
    assert isinstance(req, CheckoutRequest)
    assert (req.user, req.host, req.pid) == ("alice", "ws-1", 77)
    req = decode_request(frame(with_("checkout", user="bob")))
    assert isinstance(req, CheckoutRequest) and (req.user, req.host, req.pid) == ("bob", "", 0)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"user": "u" * 65}, "'user' must be 0-64"),
        ({"user": "al\nice"}, "'user'"),
        ({"user": "\x1b[31mroot"}, "'user'"),
        ({"user": 5}, "'user' must be a string"),
        ({"host": "h" * 254}, "'host' must be 0-253"),
        ({"host": "ws\x00"}, "'host'"),
        ({"pid": -1}, "'pid'"),
        ({"pid": 2**32}, "'pid'"),
        ({"pid": "12"}, "'pid'"),
        ({"pid": True}, "'pid'"),
    ],
)
def test_bad_checkout_identity_is_a_bad_request(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason) as err:
        decode_request(frame(with_("checkout", **changes)))
    assert err.value.code == ErrorCode.BAD_REQUEST
    assert err.value.rid == "r-1"


def test_valid_rid() -> None:
    assert valid_rid("abc.DEF:1-2_3")
    assert not valid_rid("")
    assert not valid_rid(None)
    assert not valid_rid("a" * 65)


# ---------------------------------------------------------------------------- hypothesis

wire_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=30)
    | st.binary(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
known_keys = st.sampled_from(
    ["v", "op", "rid", "cid", "firm", "product", "seats", "handle", "operation", "data", "x"]
)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_request(data)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(known_keys | st.text(max_size=5), wire_values, max_size=8))
def test_random_maps(msg: dict[str, Any]) -> None:
    try:
        req = decode_request(frame(msg))
    except ProtocolError as exc:
        assert exc.rid is None or exc.rid == msg.get("rid")
        return
    assert decode_request(encode_request(req)) == req


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(OPS)), st.data())
def test_mutated_valid_requests(op: str, data: st.DataObject) -> None:
    msg = dict(VALID[op])
    key = data.draw(known_keys.filter(lambda k: k != "rid"))
    msg[key] = data.draw(wire_values)
    try:
        req = decode_request(frame(msg))
    except ProtocolError as exc:
        assert exc.rid == "r-1"  # the rid was intact, so the error carries it
        return
    assert req.rid == "r-1"


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_generated_requests_round_trip(data: st.DataObject) -> None:
    rid = data.draw(st.from_regex(r"[A-Za-z0-9._:-]{1,64}", fullmatch=True))
    cid = data.draw(st.text(min_size=1, max_size=128).filter(str.isprintable))
    handle = data.draw(st.text(min_size=1, max_size=128).filter(str.isprintable))
    firm = data.draw(st.integers(6_000_000, 6_999_999))
    product = data.draw(st.integers(0, 2**32 - 1))
    seats = data.draw(st.integers(1, 100_000))
    operations: list[CryptOperation] = ["encrypt", "decrypt", "hmac"]
    operation = data.draw(st.sampled_from(operations))
    payload = data.draw(st.binary(max_size=2000))
    for req in (
        ListRequest(rid),
        StatusRequest(rid),
        CheckoutRequest(rid, cid, firm, product, seats),
        HeartbeatRequest(rid, cid, handle),
        ReleaseRequest(rid, cid, handle),
        CryptRequest(rid, cid, handle, operation, payload),
    ):
        assert decode_request(encode_request(req)) == req


# ---------------------------------------------------------------------------- replies

ENTRY = LicenseEntry(FIRM, 42, 8, 30, 3, True, "1:#8 2:#8 3:(#7)", 1.9e9, {"edition": "pro"})
RESULTS: dict[str, Result] = {
    "checkout": CheckoutResult("h1", FIRM, 42, 2, 30.0, 8),
    "heartbeat": HeartbeatResult(30.0),
    "release": ReleaseResult(True),
    "crypt": CryptResult(b"\x00\x01", "b2"),
    "list": ListResult(
        "131-0000001",
        "tmr1",
        (ENTRY, LicenseEntry(FIRM, 43, None, 0, 0, False, "1:- 2:- 3:#1", None, {})),
    ),
    "status": StatusResult(
        "tmr1",
        "active",
        (4, "tmr1"),
        None,
        (BackendStatus("b1", True, {"tmr_ids": {"6000123/42": 8}}), BackendStatus("b2", False)),
        12,
        345,
    ),
    "usage": UsageResult(
        1.7e9,
        1.7e9 + 86400,
        "tmr1",
        ({"firm": FIRM, "product": 42, "peak_seats": 3, "seat_hours": 1.5, "denials": 2},),
        ({"backend": "b1", "rows": 10, "oldest": 1.6e9, "truncated": False},),
    ),
}


@pytest.mark.parametrize("op", sorted(RESULTS))
def test_ok_reply_round_trip(op: str) -> None:
    reply = OkReply("r-1", RESULTS[op])
    data = encode_reply(reply)
    assert decode_reply(data, op=op) == reply
    untyped = decode_reply(data)
    assert isinstance(untyped, OkReply)
    assert untyped.result == RESULTS[op].to_wire()
    assert type(RESULTS[op]).from_wire(untyped.result) == RESULTS[op]


def test_results_accept_dicts_and_ints_for_floats() -> None:
    reply = OkReply("r", {"handle": "h", "firm": FIRM, "product": 1, "seats": 1, "lease": 30,
                          "tmr_id": 1})  # fmt: skip
    decoded = decode_reply(encode_reply(reply), op="checkout")
    assert isinstance(decoded, OkReply) and isinstance(decoded.result, CheckoutResult)
    assert decoded.result.lease == 30.0 and isinstance(decoded.result.lease, float)
    status = StatusResult("s", "standby", [1, "x"], "tcp://h:1", [{"name": "b", "up": True}], 0, 0)  # type: ignore[arg-type]
    assert status.epoch == (1, "x") and status.backends == (BackendStatus("b", True),)


def test_error_reply_round_trip() -> None:
    for reply in (
        ErrorReply("r-1", "NOT_ACTIVE", "standby"),
        ErrorReply("", "BAD_REQUEST", "malformed msgpack"),
        ErrorReply("r", ErrorCode.QUORUM_LOST),
    ):
        assert decode_reply(encode_reply(reply)) == reply
        assert decode_reply(encode_reply(reply), op="checkout") == reply
    assert ErrorReply("r", ErrorCode.QUORUM_LOST).error == "QUORUM_LOST"
    assert isinstance(ErrorReply("r", "QUORUM_LOST", "x").to_exception(), QuorumLost)
    assert ErrorReply("r", "FUTURE_CODE").code is None
    assert ErrorReply("r", "NOT_ACTIVE").code == ErrorCode.NOT_ACTIVE


def test_error_reply_from_exceptions() -> None:
    assert ErrorReply.from_exception(NotActive("standby"), "r") == ErrorReply(
        "r", "NOT_ACTIVE", "standby"
    )
    assert ErrorReply.from_exception(Timeout(), "bad rid!").rid == ""
    assert ErrorReply.from_exception(ProtocolError("x", rid="q")).rid == "q"
    long = ErrorReply("r", "BAD_REQUEST", "m" * 5000)
    assert len(long.message) == 1024


def test_extra_result_keys() -> None:
    extra = {**RESULTS["checkout"].to_wire(), "future": 1}
    got = decode_reply(pack({"v": 1, "rid": "r", "ok": True, "result": extra}), op="checkout")
    assert isinstance(got, OkReply) and got.result == RESULTS["checkout"]  # ignored
    listing = {**RESULTS["list"].to_wire(), "generated": 5.0}
    listing["licenses"][0]["max_lease"] = 30
    got = decode_reply(pack({"v": 1, "rid": "r", "ok": True, "result": listing}), op="list")
    assert isinstance(got, OkReply) and isinstance(got.result, ListResult)
    assert got.result.extra == {"generated": 5.0}
    assert got.result.licenses[0].extra == {"max_lease": 30}
    assert got.result.to_wire() == listing  # kept on re-encoding


def reply_frame(**changes: Any) -> bytes:
    msg: dict[str, Any] = {"v": 1, "rid": "r-1", "ok": True, "result": {"lease": 1.0}}
    for key, value in changes.items():
        if value is DELETE:
            del msg[key]
        else:
            msg[key] = value
    return pack(msg)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (reply_frame(rid=DELETE), "missing key 'rid'"),
        (reply_frame(rid=1), "bad 'rid'"),
        (reply_frame(rid="bad rid"), "bad 'rid'"),
        (reply_frame(rid=""), "needs a 'rid'"),
        (reply_frame(v=2), "unsupported protocol version"),
        (reply_frame(v=DELETE), "unsupported protocol version"),
        (reply_frame(ok=1), "'ok' must be a boolean"),
        (reply_frame(ok=DELETE), "'ok' must be a boolean"),
        (reply_frame(extra=1), "unexpected key"),
        (reply_frame(result=DELETE), "missing key"),
        (reply_frame(result=[1]), "'result' must be a map"),
        (reply_frame(ok=False), "missing key"),
        (reply_frame(ok=False, result=DELETE, error="NOT_ACTIVE"), "missing key"),
        (reply_frame(ok=False, result=DELETE, error=1, message=""), "'error' must be"),
        (reply_frame(ok=False, result=DELETE, error="lower", message=""), "upper-case"),
        (reply_frame(ok=False, result=DELETE, error="", message=""), "'error' must be"),
        (reply_frame(ok=False, result=DELETE, error="X", message=None), "'message' must be"),
        (reply_frame(result={}), "heartbeat result: missing key"),
        (reply_frame(result={"lease": "30"}), "'lease' must be a number"),
        (reply_frame(result={"lease": -1.0}), "'lease' out of range"),
        (reply_frame(result={"lease": math.nan}), "'lease' out of range"),
        (reply_frame(result={"lease": math.inf}), "'lease' out of range"),
        (reply_frame(result={"lease": True}), "'lease' must be a number"),
        (b"\x80", "missing key 'rid'"),
        (b"", "empty"),
    ],
)
def test_bad_replies(data: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        decode_reply(data, op="heartbeat")


@pytest.mark.parametrize(
    ("op", "changes", "reason"),
    [
        ("checkout", {"handle": ""}, "'handle' must be 1-128"),
        ("checkout", {"tmr_id": None}, "'tmr_id' must be an integer"),
        ("checkout", {"seats": "1"}, "'seats' must be an integer"),
        ("release", {"released": 1}, "'released' must be a boolean"),
        ("crypt", {"data": "text"}, "'data' must be binary"),
        ("crypt", {"backend": None}, "'backend' must be a string"),
        ("list", {"licenses": {}}, "'licenses' must be an array"),
        ("list", {"licenses": [1]}, "license entry must be a map"),
        ("list", {"licenses": [{"firm": FIRM}]}, "license entry: missing key"),
        ("list", {"serial": 131}, "'serial' must be a string"),
        ("status", {"epoch": [1]}, "'epoch' must be"),
        ("status", {"epoch": ["1", "x"]}, "'epoch\\[0\\]' must be an integer"),
        ("status", {"epoch": 3}, "'epoch' must be"),
        ("status", {"backends": [{"name": "b"}]}, "backend status: missing key\\(s\\) 'up'"),
        ("status", {"backends": [{"name": "b", "up": "yes"}]}, "'up' must be a boolean"),
        ("status", {"handles": -1}, "'handles' out of range"),
        ("status", {"active_hint": 1}, "'active_hint' must be a string"),
        ("status", {"role": ""}, "'role' must be 1-64"),
    ],
)
def test_bad_results(op: str, changes: dict[str, Any], reason: str) -> None:
    result = {**RESULTS[op].to_wire(), **changes}
    data = pack({"v": 1, "rid": "r-1", "ok": True, "result": result})
    with pytest.raises(ProtocolError, match=reason) as err:
        decode_reply(data, op=op)
    assert err.value.rid == "r-1"


def test_bad_license_entries() -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"features": {"a": 1}}, "features"),
        ({"features": []}, "'features' must be a map"),
        ({"expires": "never"}, "'expires' must be a number"),
        ({"available": None}, "'available' must be a boolean"),
        ({"tmr_id": -1}, "'tmr_id' out of range"),
    ]
    for changes, reason in cases:
        entry = {**ENTRY.to_wire(), **changes}
        with pytest.raises(ProtocolError, match=reason):
            LicenseEntry.from_wire(entry)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(RESULT_TYPES)), st.binary(max_size=200))
def test_random_reply_bytes(op: str, data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_reply(data, op=op)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(sorted(RESULT_TYPES)),
    st.dictionaries(st.text(max_size=12), wire_values, max_size=6),
    st.data(),
)
def test_random_results(op: str, result: dict[str, Any], data: st.DataObject) -> None:
    # Start from the valid result, then overwrite a few keys with random values.
    base_result = RESULTS[op].to_wire()
    keys = data.draw(st.lists(st.sampled_from(sorted(base_result)), max_size=3))
    mutated = {**base_result, **result, **{k: data.draw(wire_values) for k in keys}}
    assume(mutated != base_result)
    try:
        decode_reply(pack({"v": 1, "rid": "r", "ok": True, "result": mutated}), op=op)
    except ProtocolError as exc:
        assert exc.rid == "r"


def _outcome(decode: Callable[[bytes], object], msg: bytes) -> object:
    try:
        return decode(msg)
    except ProtocolError as exc:
        return ("refused", exc.message, exc.rid)


@settings(max_examples=600, deadline=None)
@given(
    st.sampled_from(sorted(OPS)),
    st.data(),
    st.sets(st.sampled_from(["user", "host", "pid", "wait"])),
)
def test_the_fast_path_decides_as_the_strict_path(
    op: str, data: st.DataObject, left_out: set[str]
) -> None:
    """`decode_request`'s fast path (a known shape of keys) accepts, refuses and decodes
    exactly as `_decode_request_strict`: valid requests with optional keys left out, and the
    same with a key changed, added or removed."""
    from tmr.protocol.client_api import _decode_request_strict
    from tmr.protocol.codec import unpack

    msg = dict(VALID[op])
    if op == "checkout":
        msg.update({"user": "u", "host": "h", "pid": 7, "wait": 3.0})
        for k in left_out:
            del msg[k]
    change = data.draw(st.sampled_from(["none", "set", "drop"]))
    if change == "set":
        msg[data.draw(known_keys | st.sampled_from(["user", "wait", "pid"]))] = data.draw(
            wire_values
        )
    elif change == "drop":
        msg.pop(data.draw(st.sampled_from(sorted(msg))))
    raw = frame(msg)
    fast = _outcome(decode_request, raw)
    strict = _outcome(lambda f: _decode_request_strict(unpack(f, max_size=65536)), raw)
    assert fast == strict
