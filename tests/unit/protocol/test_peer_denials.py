"""Wire format of the denial record: `Denials`, `DenialQuery`, `DenialRecords` round trips,
the status capability flag, and strict refusal of malformed frames."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tmr.protocol.errors import ProtocolError
from tmr.protocol.peer_api import (
    MAX_DENIAL_BATCH,
    BadFrame,
    decode_backend_frame,
    decode_denial_reply,
    decode_reply,
    denial_row_size,
    encode_denial_query,
    encode_denial_records,
    encode_denials,
    encode_reply,
)
from tmr.replication.messages import (
    DenialQuery,
    DenialRecords,
    DenialRow,
    Denials,
    PeerError,
    Status,
)
from tmr.replication.types import Epoch

E = Epoch(3, "tmr-a")
ROW = DenialRow(
    "tmr-a/0a1b2c3d/1", 1_700_000_000.25, "tmr-a", "POLICY_DENIED", 6000123, 42, 2, "K" * 40,
    "ann", "ws-1", 4242, "exclude host:ws-1 (policy.toml, license 6000123:42)", 3,
    1_700_000_000.5,
)  # fmt: skip
GOOD_ROW = list(ROW)


def test_denials_round_trip_through_the_backend_decoder() -> None:
    msg = Denials(0, (ROW, ROW._replace(id="tmr-a/0a1b2c3d/2", user="", host="", pid=0)))
    assert decode_backend_frame(encode_denials(msg)) == msg


def test_denial_query_and_records_round_trip() -> None:
    q = DenialQuery(7, 1.0, 2.0, 40, 8192)
    assert decode_backend_frame(encode_denial_query(q)) == q
    rec = DenialRecords(7, "backend-1", (ROW,), 1_600_000_000.0, 41)
    assert decode_denial_reply(encode_denial_records(rec)) == rec
    last = DenialRecords(8, "backend-1", (), None, None)
    assert decode_denial_reply(encode_denial_records(last)) == last
    assert decode_denial_reply(encode_reply(PeerError(9, "busy"))) == PeerError(9, "busy")


def test_the_size_bound_of_a_row_holds() -> None:
    big = ROW._replace(rule="\u00e9" * 1024, user="u" * 256, host="h" * 256)
    for r in (ROW, big):
        assert len(msgpack.packb(list(r))) <= denial_row_size(r)


def test_status_says_whether_a_backend_keeps_denials_and_an_older_one_says_nothing() -> None:
    new = Status(1, "backend-1", E, True, {}, {}, {}, denials=True)
    assert decode_reply(encode_reply(new)) == new
    old = Status(1, "backend-1", E, True, {}, {}, {})
    assert "denials" not in msgpack.unpackb(encode_reply(old))  # what older backends send
    got = decode_reply(encode_reply(old))
    assert isinstance(got, Status) and got.denials is False


def _bad_row(i: int, value: object) -> list[object]:
    row = list(GOOD_ROW)
    row[i] = value
    return row


@pytest.mark.parametrize(
    "body",
    [
        {"t": "denials", "mid": 0},  # no rows
        {"t": "denials", "mid": 0, "rows": "x"},
        {"t": "denials", "mid": 0, "rows": [GOOD_ROW[:13]]},  # a field short
        {"t": "denials", "mid": 0, "rows": [[*GOOD_ROW, 1]]},  # a field too many
        {"t": "denials", "mid": 0, "rows": [_bad_row(0, "")]},  # empty id
        {"t": "denials", "mid": 0, "rows": [_bad_row(0, "i" * 65)]},  # id too long
        {"t": "denials", "mid": 0, "rows": [_bad_row(1, float("nan"))]},
        {"t": "denials", "mid": 0, "rows": [_bad_row(1, -1.0)]},  # before 1970
        {"t": "denials", "mid": 0, "rows": [_bad_row(3, "C" * 33)]},  # code too long
        {"t": "denials", "mid": 0, "rows": [_bad_row(4, -1)]},
        {"t": "denials", "mid": 0, "rows": [_bad_row(6, 2**32)]},  # seats
        {"t": "denials", "mid": 0, "rows": [_bad_row(7, "K" * 65)]},  # owner too long
        {"t": "denials", "mid": 0, "rows": [_bad_row(8, b"ann")]},  # bytes, not text
        {"t": "denials", "mid": 0, "rows": [_bad_row(10, True)]},  # pid
        {"t": "denials", "mid": 0, "rows": [_bad_row(11, "r" * 1025)]},  # rule too long
        {"t": "denials", "mid": 0, "rows": [_bad_row(12, 0)]},  # refused 0 times
        {"t": "denials", "mid": 0, "rows": [_bad_row(13, 1.0)]},  # last before at
        {"t": "denials", "mid": 0, "rows": [GOOD_ROW] * (MAX_DENIAL_BATCH + 1)},
        {"t": "denial_query", "mid": 1, "since": 2.0, "until": 1.0, "after": 0, "chunk": 4096},
        {"t": "denial_query", "mid": 1, "since": 1.0, "until": 2.0, "after": -1, "chunk": 4096},
        {"t": "denial_query", "mid": 1, "since": 1.0, "until": 2.0, "after": 0, "chunk": 1},
        {"t": "denial_query", "mid": 1, "since": 1.0, "until": 2.0, "chunk": 4096},
    ],
)
def test_malformed_denial_frames_are_bad_frames(body: dict[str, object]) -> None:
    assert isinstance(decode_backend_frame(msgpack.packb(body)), BadFrame)


@pytest.mark.parametrize(
    "body",
    [
        {
            "t": "denial_records",
            "mid": 1,
            "name": "b",
            "rows": [GOOD_ROW[:3]],
            "oldest": None,
            "next": None,
        },
        {"t": "denial_records", "mid": 1, "name": "b", "rows": [], "oldest": "x", "next": None},
        {"t": "denial_records", "mid": 1, "name": "b", "rows": [], "oldest": None, "next": -1},
        {"t": "denial_records", "mid": 1, "name": "b", "rows": []},
        {"t": "usage_chunk", "mid": 1},
    ],
)
def test_malformed_denial_answers_are_refused(body: dict[str, object]) -> None:
    with pytest.raises(ProtocolError):
        decode_denial_reply(msgpack.packb(body))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-(2**63), 2**64 - 1),
            st.floats(),
            st.text(max_size=70),
            st.binary(max_size=5),
        ),
        min_size=12,
        max_size=15,
    )
)
def test_random_denial_rows_never_raise_from_the_backend_decoder(row: list[object]) -> None:
    got = decode_backend_frame(msgpack.packb({"t": "denials", "mid": 0, "rows": [row]}))
    assert isinstance(got, Denials | BadFrame)
    if isinstance(got, Denials):
        assert len(got.rows) == 1 and len(row) == 14
