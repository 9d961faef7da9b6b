"""Strict msgpack framing: everything that is not exactly one map is a ProtocolError."""

from __future__ import annotations

import contextlib
import datetime
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tmr.errors import BadRequest, ErrorCode
from tmr.protocol import ProtocolError
from tmr.protocol.codec import pack, unpack

MAX = 1024

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)


def raw(obj: Any) -> bytes:
    """msgpack bytes made without our checks (to build bad frames)."""
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def test_round_trip() -> None:
    msg = {"a": 1, "b": [1, 2.5, "x", b"\x00\xff", None, True], "c": {"d": {"e": []}}, "": -1}
    assert unpack(pack(msg), max_size=MAX) == msg


def test_protocol_error_is_a_bad_request() -> None:
    with pytest.raises(ProtocolError) as err:
        unpack(b"", max_size=MAX)
    assert isinstance(err.value, BadRequest)
    assert err.value.code == ErrorCode.BAD_REQUEST
    assert err.value.rid is None


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"", "empty"),
        (raw(1), "must be a map"),
        (raw([1, 2]), "must be a map"),
        (raw("text"), "must be a map"),
        (raw(b"bin"), "must be a map"),
        (raw(None), "must be a map"),
        (raw(1.5), "must be a map"),
        (raw({1: "int key"}), "malformed"),
        (raw({b"k": "bytes key"}), "keys must be strings"),
        (raw({"a": {2: "nested int key"}}), "malformed"),
        (raw({"a": {b"k": 1}}), "keys must be strings"),
        (b"\x82\xa1a\x01\xa1a\x02", "duplicate map key"),
        (raw({"a": 1}) + b"\x00", "trailing bytes"),
        (raw({"a": 1}) + raw({"b": 2}), "trailing bytes"),
        (b"\x81\xa1a\xa2\xff\xfe", "UTF-8"),
        (b"\x81\xa2\xff\xfe\x01", "UTF-8"),
        (b"\xc1", "malformed"),
        (b"\x81\xa1a\xc1", "malformed"),
        (b"\xdf\xff\xff\xff\xff", "malformed"),  # map32 claiming 4 billion entries
        (b"\x81\xa1a\xdd\xff\xff\xff\xff", "malformed"),  # array32 claiming 4 billion items
        (b"\x81\xa1a\xdb\xff\xff\xff\xff", "malformed"),  # str32 claiming 4 GiB
        (raw({"a": msgpack.ExtType(5, b"x")}), "extension"),
        (raw({"a": [msgpack.ExtType(5, b"x")]}), "extension"),
        (raw(msgpack.ExtType(5, b"x")), "extension"),
        (raw({"t": msgpack.Timestamp(1, 0)}), "extension"),
        (raw({"t": [msgpack.Timestamp(1, 0)]}), "extension"),
        (raw(msgpack.Timestamp(1, 0)), "must be a map"),
        (b"\x81\xa1a" + b"\x91" * 5000 + b"\x01", "nested too deeply"),
    ],
)
def test_rejected_frames(frame: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        unpack(frame, max_size=len(frame) + 16)


def test_size_limit_is_checked_first() -> None:
    frame = pack({"a": "x" * 100})
    assert unpack(frame, max_size=len(frame)) == {"a": "x" * 100}
    with pytest.raises(ProtocolError, match="too large"):
        unpack(frame, max_size=len(frame) - 1)


def test_every_truncation_is_rejected() -> None:
    frame = pack({"op": "checkout", "nested": {"l": [1, 2, 3], "b": b"123"}, "f": 1.25})
    for end in range(len(frame)):
        with pytest.raises(ProtocolError):
            unpack(frame[:end], max_size=MAX)


def test_frame_must_be_bytes() -> None:
    with pytest.raises(ProtocolError, match="bytes"):
        unpack("text", max_size=MAX)  # type: ignore[arg-type]
    assert unpack(bytearray(pack({"a": 1})), max_size=MAX) == {"a": 1}


@pytest.mark.parametrize("obj", [{"a": object()}, {"a": datetime.datetime.now()}, {"a": 2**64}])
def test_pack_refuses_what_msgpack_cannot_encode(obj: Any) -> None:
    with pytest.raises(ProtocolError, match="cannot encode"):
        pack(obj)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_protocol_error(data: bytes) -> None:
    try:
        msg = unpack(data, max_size=MAX)
    except ProtocolError:
        return
    assert isinstance(msg, dict)


@settings(max_examples=300, deadline=None)
@given(msgpack_values)
def test_random_values_decode_or_raise_protocol_error(value: Any) -> None:
    frame = raw(value)
    try:
        msg = unpack(frame, max_size=len(frame))
    except ProtocolError:
        assert not isinstance(value, dict)
        return
    assert isinstance(msg, dict)
    assert pack(msg) == frame  # decoding is lossless


@settings(max_examples=300, deadline=None)
@given(msgpack_values, st.data())
def test_random_corruptions_raise_only_protocol_error(value: Any, data: st.DataObject) -> None:
    frame = bytearray(raw({"k": value}))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(frame) - 1))
        frame[pos] = data.draw(st.integers(0, 255))
    with contextlib.suppress(ProtocolError):
        unpack(bytes(frame), max_size=MAX)
