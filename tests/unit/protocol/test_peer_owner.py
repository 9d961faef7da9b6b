"""Handle owners on the peer wire: records and crypto calls carry the owning client key."""

from __future__ import annotations

import msgpack
import pytest

from tmr.protocol.errors import ProtocolError
from tmr.protocol.peer_api import (
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
)
from tmr.replication.messages import Crypt, Promise, Snapshot, SnapshotEntry
from tmr.replication.types import Epoch, HandleRecord, Version

E = Epoch(3, "tmr-a")
K = (6000123, 42)
OWNER = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"  # a Z85 public key: 40 characters
R = HandleRecord("h3-tmr-a-" + "0" * 32, K[0], K[1], 2, "host/1/x", "rid-1", 1.5, OWNER)


def test_records_carry_their_owner_in_snapshots_and_promises() -> None:
    snap = Snapshot(1, E, (SnapshotEntry(K, 4, (R,)),))
    assert decode_request(encode_request(snap)) == snap
    promise = Promise(2, "backend-1", E, True, {K: (Version(E, 4), (R,))}, {})
    assert decode_reply(encode_reply(promise)) == promise


def test_a_record_of_an_older_peer_has_no_owner() -> None:
    """7 fields (before handles had owners): decoded with the owner "", which no key holds."""
    old = [
        R.handle,
        R.firm,
        R.product,
        R.seats,
        R.client_id,
        R.request_id,
        R.granted_at,
    ]
    frame = msgpack.packb(
        {
            "t": "snapshot",
            "mid": 1,
            "epoch": [3, "tmr-a"],
            "entries": [[list(K), 0, [old]]],
        }
    )
    msg = decode_request(frame)
    assert isinstance(msg, Snapshot)
    assert msg.entries[0].handles[0].owner == ""


@pytest.mark.parametrize("owner", ["k" * 65, 7, None, b"key"])
def test_a_bad_owner_is_refused(owner: object) -> None:
    bad = [
        R.handle,
        R.firm,
        R.product,
        R.seats,
        R.client_id,
        R.request_id,
        R.granted_at,
        owner,
    ]
    frame = msgpack.packb(
        {
            "t": "snapshot",
            "mid": 1,
            "epoch": [3, "tmr-a"],
            "entries": [[list(K), 0, [bad]]],
        }
    )
    with pytest.raises(ProtocolError):
        decode_request(frame)


def test_crypt_calls_carry_the_owner() -> None:
    call = Crypt(5, E, K, R.handle, R.client_id, "hmac", b"x", OWNER)
    assert decode_request(encode_request(call)) == call
    body = msgpack.unpackb(encode_request(call))
    del body["owner"]  # an older server
    legacy = decode_request(msgpack.packb(body))
    assert isinstance(legacy, Crypt) and legacy.owner == ""
    body["owner"] = "k" * 65
    with pytest.raises(ProtocolError):
        decode_request(msgpack.packb(body))
