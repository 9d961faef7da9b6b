"""The queued checkout on the wire (issue 18): the optional `wait` of a checkout request and
the typed `QueuedResult` a checkout may be answered with."""

from __future__ import annotations

import contextlib
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tmr.errors import ErrorCode
from tmr.protocol.client_api import (
    WAIT_MAX,
    CheckoutRequest,
    CheckoutResult,
    OkReply,
    QueuedResult,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
)
from tmr.protocol.codec import pack
from tmr.protocol.errors import ProtocolError

FIRM = 6000123


def checkout(**fields: Any) -> bytes:
    msg = {"v": 1, "op": "checkout", "rid": "r-1", "cid": "c", "firm": FIRM, "product": 42,
           "seats": 1, **fields}  # fmt: skip
    data: bytes = msgpack.packb(msg, use_bin_type=True)
    return data


def test_wait_is_left_out_unless_set() -> None:
    """Older servers never see `wait` from a client that does not queue."""
    plain = msgpack.unpackb(encode_request(CheckoutRequest("r", "c", FIRM, 1)))
    assert "wait" not in plain
    req = decode_request(checkout())
    assert isinstance(req, CheckoutRequest) and req.wait is None
    waiting = CheckoutRequest("r", "c", FIRM, 1, 2, wait=30)
    assert msgpack.unpackb(encode_request(waiting))["wait"] == 30.0
    assert decode_request(encode_request(waiting)) == waiting
    assert waiting.wait == 30.0 and isinstance(waiting.wait, float)


@pytest.mark.parametrize(
    ("wait", "reason"),
    [
        (0, "'wait' out of range"),
        (-1.5, "'wait' out of range"),
        (WAIT_MAX + 1, "'wait' out of range"),
        (float("nan"), "'wait' out of range"),
        (float("inf"), "'wait' out of range"),
        ("10", "'wait' must be a number"),
        (True, "'wait' must be a number"),
        (None, "'wait' must be a number, not nil"),
        ([1], "'wait' must be a number"),
    ],
)
def test_bad_wait_is_a_bad_request(wait: Any, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason) as err:
        decode_request(checkout(wait=wait))
    assert err.value.code == ErrorCode.BAD_REQUEST
    assert err.value.rid == "r-1"


def test_wait_bounds_are_accepted() -> None:
    for wait in (1e-3, 1, WAIT_MAX):
        req = decode_request(checkout(wait=wait))
        assert isinstance(req, CheckoutRequest) and req.wait == float(wait)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.none(), st.floats(), st.integers(-(2**40), 2**40), st.text(max_size=3)))
def test_any_wait_decodes_or_is_refused(wait: Any) -> None:
    try:
        req = decode_request(checkout(wait=wait))
    except ProtocolError as exc:
        assert exc.rid == "r-1"
        return
    assert isinstance(req, CheckoutRequest) and req.wait is not None
    assert 0 < req.wait <= WAIT_MAX
    assert decode_request(encode_request(req)) == req


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0, max_value=WAIT_MAX, exclude_min=True))
def test_valid_waits_round_trip(wait: float) -> None:
    req = CheckoutRequest("r", "c", FIRM, 1, 1, "u", "h", 1, wait)
    assert decode_request(encode_request(req)) == req


def test_queued_result_round_trip() -> None:
    reply = OkReply("r-1", QueuedResult(True, 3, 5.0, 0.5))
    data = encode_reply(reply)
    assert decode_reply(data, op="checkout") == reply
    granted = OkReply("r-1", CheckoutResult("h1", FIRM, 42, 1, 30.0, 8))
    got = decode_reply(encode_reply(granted), op="checkout")
    assert isinstance(got, OkReply) and isinstance(got.result, CheckoutResult)
    ints = decode_reply(pack({"v": 1, "rid": "r", "ok": True,
                              "result": {"queued": True, "position": 1, "hold": 5, "retry": 1}}),
                        op="checkout")  # fmt: skip
    assert isinstance(ints, OkReply) and ints.result == QueuedResult(True, 1, 5.0, 1.0)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"queued": False}, "'queued' must be true"),
        ({"queued": 1}, "'queued' must be a boolean"),
        ({"position": 0}, "'position' out of range"),
        ({"position": "1"}, "'position' must be an integer"),
        ({"hold": -1}, "'hold' out of range"),
        ({"retry": None}, "'retry' must be a number"),
    ],
)
def test_bad_queued_results(changes: dict[str, Any], reason: str) -> None:
    result = {**QueuedResult(True, 2, 5.0, 0.5).to_wire(), **changes}
    with pytest.raises(ProtocolError, match=reason) as err:
        decode_reply(pack({"v": 1, "rid": "r-1", "ok": True, "result": result}), op="checkout")
    assert err.value.rid == "r-1"


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["queued", "position", "hold", "retry", "x"]),
        st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(), st.text(max_size=3)),
    )
)
def test_random_queued_results(changes: dict[str, Any]) -> None:
    result = {**QueuedResult(True, 2, 5.0, 0.5).to_wire(), **changes}
    with contextlib.suppress(ProtocolError):
        reply = decode_reply(
            pack({"v": 1, "rid": "r", "ok": True, "result": result}), op="checkout"
        )
        assert isinstance(reply, OkReply) and isinstance(reply.result, QueuedResult)
        assert reply.result.queued is True and reply.result.position >= 1
