"""Access modes on both wires: the client's checkout request (`mode`, optional, an unknown
one is BAD_REQUEST) and the peers' handle records (12 fields; older records are user_limit;
an unknown mode is a bad frame)."""

from __future__ import annotations

import msgpack
import pytest

from tmr.errors import ErrorCode
from tmr.protocol.client_api import CheckoutRequest, decode_request, encode_request
from tmr.protocol.errors import ProtocolError
from tmr.protocol.peer_api import decode_request as decode_peer
from tmr.protocol.peer_api import encode_request as encode_peer
from tmr.replication.messages import Accept, AcceptEntry, Snapshot, SnapshotEntry
from tmr.replication.types import AccessMode, Epoch, Grant, HandleRecord

E = Epoch(3, "tmr-a")
K = (6000123, 42)


def checkout_frame(**extra: object) -> bytes:
    msg = {"v": 1, "op": "checkout", "rid": "r1", "cid": "c1", "firm": K[0], "product": K[1]}
    msg["seats"] = 1
    data: bytes = msgpack.packb({**msg, **extra})
    return data


@pytest.mark.parametrize("mode", list(AccessMode))
def test_a_checkout_carries_its_mode(mode: AccessMode) -> None:
    req = CheckoutRequest("r1", "c1", K[0], K[1], 2, mode=mode)
    frame = encode_request(req)
    assert decode_request(frame) == req
    # user_limit is left out, so a server from before modes reads the request unchanged
    assert ("mode" in msgpack.unpackb(frame)) == (mode is not AccessMode.USER_LIMIT)


def test_a_checkout_without_mode_is_user_limit() -> None:
    req = decode_request(checkout_frame())
    assert isinstance(req, CheckoutRequest) and req.mode is AccessMode.USER_LIMIT
    req = decode_request(checkout_frame(mode="station_share"))
    assert isinstance(req, CheckoutRequest) and req.mode is AccessMode.STATION_SHARE


@pytest.mark.parametrize("mode", ["borrow", "", "EXCLUSIVE", 3, None, b"exclusive"])
def test_an_unknown_mode_is_a_bad_request_naming_the_modes(mode: object) -> None:
    with pytest.raises(ProtocolError, match="unknown access mode") as info:
        decode_request(checkout_frame(mode=mode))
    assert info.value.code == ErrorCode.BAD_REQUEST and info.value.rid == "r1"
    assert "user_limit, station_share, exclusive" in str(info.value)
    with pytest.raises(ProtocolError, match="unknown access mode"):
        CheckoutRequest("r1", "c1", K[0], K[1], 1, mode=mode)  # type: ignore[arg-type]


def rec(mode: AccessMode, user: str = "") -> HandleRecord:
    return HandleRecord("h1", K[0], K[1], 2, "c1", "r1", 1.5, "O" * 40, user, "", 0, mode)


@pytest.mark.parametrize("mode", list(AccessMode))
@pytest.mark.parametrize("user", ["", "alice"])
def test_records_carry_their_mode_in_grants_and_snapshots(mode: AccessMode, user: str) -> None:
    r = rec(mode, user)
    for msg in (
        Accept(1, E, (AcceptEntry(K, 1, (Grant(r),)),)),
        Snapshot(2, E, (SnapshotEntry(K, 1, (r,)),)),
    ):
        decoded = decode_peer(encode_peer(msg))
        assert decoded == msg
    fields = msgpack.unpackb(encode_peer(Snapshot(2, E, (SnapshotEntry(K, 1, (r,)),))))
    record = fields["entries"][0][2][0]
    # as older peers write them when the mode is user_limit: 11 or 8 fields
    expected = 12 if mode is not AccessMode.USER_LIMIT else (11 if user else 8)
    assert len(record) == expected


@pytest.mark.parametrize("mode", ["borrow", 1, None])
def test_a_record_with_an_unknown_mode_is_a_bad_frame(mode: object) -> None:
    bad = ["h1", K[0], K[1], 2, "c1", "r1", 1.5, "O" * 40, "", "", 0, mode]
    frame = msgpack.packb(
        {"t": "snapshot", "mid": 1, "epoch": [3, "tmr-a"], "entries": [[list(K), 0, [bad]]]}
    )
    with pytest.raises(ProtocolError, match="unknown access mode"):
        decode_peer(frame)
