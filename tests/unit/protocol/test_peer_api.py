"""Wire format between TMR servers and backends: round trips and strict refusal."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tmr.protocol.errors import ProtocolError
from tmr.protocol.peer_api import (
    _d_op,
    _d_record,
    _fast_op,
    _fast_record,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
)
from tmr.replication.messages import (
    Accept,
    Accepted,
    AcceptEntry,
    Crypt,
    CryptResult,
    EntryResult,
    EntryStatus,
    PeerError,
    PeerReply,
    PeerRequest,
    Prepare,
    Probe,
    Promise,
    Rejected,
    Snapshot,
    SnapshotEntry,
    Status,
)
from tmr.replication.types import (
    CopyReason,
    Epoch,
    Grant,
    HandleRecord,
    LicenseInfo,
    Release,
    ReleaseReason,
    Version,
)

E = Epoch(3, "tmr-a")
K = (6000123, 42)
R = HandleRecord("h1", 6000123, 42, 2, "client", "rid-1", 1700000000.5)
LIC = {K: LicenseInfo(7, 20, True, CopyReason.NONE, None, (("edition", "pro"),))}

REQUESTS: list[PeerRequest] = [
    Probe(1),
    Prepare(2, E),
    Accept(3, E, (AcceptEntry(K, 1, (Grant(R), Release("h1", ReleaseReason.EXPIRE, 2.0))),)),
    Snapshot(4, E, (SnapshotEntry(K, 0, (R,)),)),
    Crypt(5, E, K, "h1", "client", "hmac", b"\x00data"),
    Probe(6, E),
    Accept(7, E, (AcceptEntry(K, 2, (Release("h1", ReleaseReason.RELEASE, 3.0),)),), ((K, 1),)),
    Accept(8, E, (), ((K, 2), ((7, 1), 3))),  # a commit notice
    Probe(9, None, "tmr-b", "0123456789abcdef"),  # the sender's policy digest
    Accept(10, E, (AcceptEntry(K, 3, (Grant(R),)),), ((K, 2),), ((K, 3),)),  # flagged notice
    Prepare(11, E, tables=False),  # versions only
    Snapshot(12, E, (SnapshotEntry(K, 0, (), base=Version(E, 7)),)),  # by reference
    Probe(13, E, "tmr-a", "ab" * 8, ("0f1e2d3c4b5a6978", 42)),  # the status state it holds
]
# A delta: the products changed since gen 7, two of them without a copy now.
DELTA = Status(15, "backend-1", E, True, {K: Version(E, 4)}, {K: 1}, {}, state=("0f1e", 9))
DELTA = replace(DELTA, since=7, gone=((7, 1), K))
REPLIES: list[PeerReply] = [
    Status(1, "backend-1", E, True, {K: Version(E, 3)}, {K: 2}, LIC),
    Status(7, "backend-1", E, True, {K: Version(E, 3)}, {K: 2}, LIC, leader_age=0.25),
    Status(8, "backend-1", E, True, {}, {}, {}, leader_age=0),
    Status(10, "backend-1", E, True, {}, {}, {}, policies={"tmr-a": "ab" * 8, "tmr-b": ""}),
    Status(13, "backend-1", E, True, {K: Version(E, 3)}, {K: 2}, LIC, state=("0f1e", 7)),
    Status(14, "backend-1", E, True, {}, {}, {}, state=("0f1e", 7), since=7),  # nothing new
    DELTA,
    Promise(2, "backend-1", E, False, {K: (Version(E, 1), (R,))}, LIC),
    Promise(9, "backend-1", E, True, {K: (Version(E, 1), (R,))}, LIC, commits={K: Version(E, 1)}),
    Promise(
        11,
        "backend-1",
        E,
        True,
        {K: (Version(E, 2), (R,))},
        LIC,
        commits={K: Version(E, 1)},
        marked={K: (("h1", Version(E, 2)),)},
    ),
    Promise(13, "backend-1", E, True, {K: (Version(E, 2), ())}, LIC, refs=True, tables=False),
    Rejected(3, E),
    Accepted(4, E, {K: EntryResult(EntryStatus.REFUSED, 3, "above LQ")}, LIC),
    Accepted(12, E, {K: EntryResult(EntryStatus.OK, 3)}, {}, durable=True),
    CryptResult(5, True, b"out"),
    PeerError(6, "bad"),
]


@pytest.mark.parametrize("msg", REQUESTS, ids=lambda m: type(m).__name__)
def test_request_round_trip(msg: object) -> None:
    assert decode_request(encode_request(msg)) == msg  # type: ignore[arg-type]


@pytest.mark.parametrize("msg", REPLIES, ids=lambda m: type(m).__name__)
def test_reply_round_trip(msg: object) -> None:
    assert decode_reply(encode_reply(msg)) == msg  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "body",
    [
        {"t": "probe"},  # no mid
        {"t": "probe", "mid": -1},
        {"t": "prepare", "mid": 1},
        {"t": "prepare", "mid": 1, "epoch": [1]},
        {"t": "prepare", "mid": 1, "epoch": ["1", "a"]},
        {"t": "accept", "mid": 1, "epoch": [1, "a"], "entries": [[[1, 2], 0, []]]},  # seq 0
        {"t": "accept", "mid": 1, "epoch": [1, "a"], "entries": [[[1, 2], 1, [["x"]]]]},
        {"t": "accept", "mid": 1, "epoch": [1, "a"], "entries": [[[1, 2], 1, [["g", [1]]]]]},
        {"t": "snapshot", "mid": 1, "epoch": [1, "a"], "entries": "no"},
        {"t": "crypt", "mid": 1, "epoch": [1, "a"], "key": [1, 2], "handle": "h"},
        {"t": "launch", "mid": 1},
        {"t": "probe", "mid": 1, "epoch": [1]},
        {"t": "probe", "mid": 1, "epoch": "3/tmr-a"},
        {"t": "probe", "mid": 1, "server": 7, "policy": "x"},
        {"t": "probe", "mid": 1, "server": "s", "policy": "x" * 65},
        {"t": "prepare", "mid": 1, "epoch": [1, "a"], "tables": 0},
        # a table by reference carries no handles
        {
            "t": "snapshot",
            "mid": 1,
            "epoch": [1, "a"],
            "entries": [[[1, 2], 0, [["h1", 1, 2, 1, "c", "r", 1.5, ""]], [0, 0.0], [[1, "a"], 3]]],
        },
        {"t": "snapshot", "mid": 1, "epoch": [1, "a"], "entries": [[[1, 2], 0, [], [0, 0.0], 3]]},
        {"t": "probe", "mid": 1, "have": "0f1e:7"},
        {"t": "probe", "mid": 1, "have": ["0f1e"]},
        {"t": "probe", "mid": 1, "have": ["0f1e", -1]},
        {"t": "probe", "mid": 1, "have": ["0f1e", 1.5]},
        {"t": "probe", "mid": 1, "have": ["", 1]},
        {"t": "probe", "mid": 1, "have": ["x" * 65, 1]},
        {"t": "probe", "mid": 1, "have": [7, 1]},
    ],
)
def test_malformed_requests_are_refused(body: dict[str, object]) -> None:
    with pytest.raises(ProtocolError):
        decode_request(msgpack.packb(body))


def test_truncated_frames_are_refused() -> None:
    frame = encode_request(REQUESTS[2])
    for n in range(len(frame)):
        with pytest.raises(ProtocolError):
            decode_request(frame[:n])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_only_raise_protocol_error(data: bytes) -> None:
    for decode in (decode_request, decode_reply):
        try:
            decode(data)
        except ProtocolError:
            pass


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["t", "mid", "epoch", "entries", "key", "handle", "data", "name"]),
        st.recursive(
            st.none()
            | st.booleans()
            | st.integers(-(2**63), 2**64 - 1)
            | st.text(max_size=5)
            | st.binary(max_size=5),
            lambda c: st.lists(c, max_size=3),
            max_leaves=8,
        ),
    )
)
def test_random_maps_only_raise_protocol_error(body: dict[str, object]) -> None:
    frame = msgpack.packb(body)
    for decode in (decode_request, decode_reply):
        try:
            decode(frame)
        except ProtocolError:
            pass


# ------------------------------------------------------------------ rolling upgrades


def test_probe_without_epoch_is_the_old_format() -> None:
    """A standby's probe is byte for byte what servers sent before probes had an epoch."""
    assert encode_request(Probe(1)) == msgpack.packb({"t": "probe", "mid": 1})


def test_old_format_probe_and_status_decode() -> None:
    """Frames of a peer from before the leader-liveness guard: no epoch, no leader_age."""
    assert decode_request(msgpack.packb({"t": "probe", "mid": 4})) == Probe(4, None)
    assert decode_request(msgpack.packb({"t": "probe", "mid": 4, "epoch": None})) == Probe(4)
    old_status = {
        "t": "status",
        "mid": 9,
        "name": "backend-2",
        "promised": [3, "tmr-a"],
        "caught_up": True,
        "versions": [[[6000123, 42], [[3, "tmr-a"], 3]]],
        "seats": [[[6000123, 42], 2]],
        "licenses": [],
    }
    status = decode_reply(msgpack.packb(old_status))
    assert status == Status(9, "backend-2", E, True, {K: Version(E, 3)}, {K: 2}, {}, None)


def test_new_fields_are_ignored_by_an_old_decoder() -> None:
    """What an older peer does with the new frames: it reads only the fields it knows."""
    # A PREPARE asking for tables and a full snapshot are what older servers send.
    assert msgpack.unpackb(encode_request(Prepare(2, E))) == {
        "t": "prepare",
        "mid": 2,
        "epoch": [3, "tmr-a"],
    }
    snap = msgpack.unpackb(encode_request(REQUESTS[3]))
    assert [len(e) for e in snap["entries"]] == [3]
    promise = msgpack.unpackb(encode_reply(REPLIES[4]))
    assert "refs" not in promise and "tables" not in promise
    probe = msgpack.unpackb(encode_request(Probe(2, E)))
    assert probe == {"t": "probe", "mid": 2, "epoch": [3, "tmr-a"]}
    status = msgpack.unpackb(encode_reply(REPLIES[1]))
    assert status["leader_age"] == 0.25
    assert "leader_age" not in msgpack.unpackb(encode_reply(REPLIES[0]))


@pytest.mark.parametrize(
    "policies",
    [
        "tmr-a",
        [["tmr-a"]],
        [["", "x"]],
        [["tmr-a", 3]],
        [[f"s{i}", "x"] for i in range(9)],  # more servers than a backend reports
    ],
)
def test_bad_policies_in_a_status_are_refused(policies: object) -> None:
    body = msgpack.unpackb(encode_reply(REPLIES[0]))
    body["policies"] = policies
    with pytest.raises(ProtocolError):
        decode_reply(msgpack.packb(body))


def test_a_probe_without_a_server_is_the_old_format() -> None:
    """Server and policy go on the wire only when given: an older backend ignores them."""
    assert "server" not in msgpack.unpackb(encode_request(Probe(2, E)))
    assert "policies" not in msgpack.unpackb(encode_reply(REPLIES[0]))


@pytest.mark.parametrize("age", [-0.5, "1", [1.0], float("nan"), float("inf")])
def test_bad_leader_age_is_refused(age: object) -> None:
    body = msgpack.unpackb(encode_reply(REPLIES[0]))
    body["leader_age"] = age
    with pytest.raises(ProtocolError):
        decode_reply(msgpack.packb(body))


# ------------------------------------------------------------------ extension values in arrays
# Peer frames are decoded without walking every array for extension values (`typed_arrays`):
# the decoders check the exact type of each value instead. These tests hold them to it.


def _leaf_paths(value: object, path: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _leaf_paths(v, (*path, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _leaf_paths(v, (*path, i))]
    return [path]


def _replaced(body: object, path: tuple[object, ...], new: object) -> object:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(body, dict):
        return {k: _replaced(v, rest, new) if k == head else v for k, v in body.items()}
    assert isinstance(body, list)
    return [_replaced(v, rest, new) if i == head else v for i, v in enumerate(body)]


@pytest.mark.parametrize(
    ("msg", "decode"),
    [(m, decode_request) for m in REQUESTS] + [(m, decode_reply) for m in REPLIES],
    ids=lambda x: type(x).__name__ if not callable(x) else x.__name__,
)
def test_a_timestamp_in_any_field_is_refused(
    msg: PeerRequest | PeerReply, decode: Callable[[bytes], object]
) -> None:
    if decode is decode_request:
        assert isinstance(msg, PeerRequest)
        body = msgpack.unpackb(encode_request(msg))
    else:
        assert isinstance(msg, PeerReply)
        body = msgpack.unpackb(encode_reply(msg))
    paths = _leaf_paths(body)
    assert paths
    for path in paths:
        frame = msgpack.packb(_replaced(body, path, msgpack.Timestamp(1, 0)), datetime=False)
        with pytest.raises(ProtocolError):
            decode(frame)


def test_entries_encode_the_same_for_every_backend_and_past_the_cache_size() -> None:
    """The ops of a log entry are encoded once per entry (cached by identity): every ACCEPT
    must still carry exactly its own ops, also when the cache overflows and ids are reused."""
    for n in range(1500):
        ops = (
            Grant(HandleRecord(f"h{n}", 6000123, 42, 1, "c", f"r{n}", float(n))),
            Release(f"h{n - 1}", ReleaseReason.RELEASE, float(n)),
        )
        for mid in (3 * n, 3 * n + 1, 3 * n + 2):  # the same entry to three backends
            msg = Accept(mid, E, (AcceptEntry(K, n + 1, ops),))
            assert decode_request(encode_request(msg)) == msg
        del ops  # its id may be reused by the next entry's tuple


# ------------------------------------------------------------------ fast paths
# Ops and handle records are decoded by a fast path that builds no error texts and falls back
# to the strict decoders for anything it does not accept. It must never accept more than they
# do, and what it accepts must decode to the same values.

_FIELD = st.one_of(
    st.sampled_from(["h1-tmr-a-1", "", "x" * 256, "x" * 257, "g", "r", "release", "expire"]),
    st.sampled_from([0, 1, 2, 2**32 - 1, 2**32, -1, True, False, None]),
    st.sampled_from([0.0, 1.5, 1700000000.5, -2.5, float("inf"), float("nan")]),
    st.binary(max_size=3),
    st.lists(st.integers(0, 3), max_size=2),
)


# Per field of a handle record: values the strict decoder accepts, then values it refuses.
_RECORD_FIELDS: list[tuple[list[object], list[object]]] = [
    (["h1", "x" * 256], ["", "x" * 257, b"h1", 1, None]),
    ([0, 6000123, 2**32 - 1], [-1, 2**32, "6000123", True, 1.0]),
    ([0, 42, 2**32 - 1], [-1, 2**32, False, 42.0]),
    ([1, 2, 2**32 - 1], [0, -1, 2**32, True, 1.0]),
    (["client", "c" * 256], ["", "c" * 257, b"c", None]),
    (["rid-1"], ["", "r" * 257, 7]),
    ([0.0, 1.5, 1700000000.5, -2.5, 7], [float("inf"), float("nan"), "1.5", True, None]),
    (["", "K" * 40, "k" * 64], ["k" * 65, b"k", None, 1]),  # owner
    (["", "alice", "u" * 256], ["u" * 257, b"u", None, 1]),  # user
    (["", "ws-17.example", "h" * 256], ["h" * 257, b"h", None, 1]),  # host
    ([0, 4242, 2**32 - 1], [-1, 2**32, "1", True, 1.0, None]),  # pid
]


@st.composite
def _records(draw: st.DrawFn) -> object:
    """A handle record with none, one or two of its fields bad, or something else entirely."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.one_of(st.lists(_FIELD, min_size=6, max_size=11), _FIELD))
    rec = [draw(st.sampled_from(good)) for good, _ in _RECORD_FIELDS]
    for i in draw(st.lists(st.integers(0, len(rec) - 1), max_size=2)):
        rec[i] = draw(st.sampled_from(_RECORD_FIELDS[i][1]))
    return rec


def _ops() -> st.SearchStrategy[object]:
    grant = st.tuples(st.sampled_from(["g", "g", "g", "r", "G", b"g"]), _records()).map(list)
    release = st.tuples(
        st.sampled_from(["r", "r", "r", "g", "R"]),
        st.sampled_from(["h1", "h1", "", "h" * 257, 5]),
        st.sampled_from(["release", "expire", "RELEASE", "", 1, None]),
        st.sampled_from([2.0, 2.0, 3, float("nan"), float("-inf"), "2", False]),
    ).map(list)
    return st.one_of(grant, release, st.lists(_FIELD, max_size=5), _FIELD)


def _strict(decode: object, value: object) -> object:
    try:
        return decode(value, "x")  # type: ignore[operator]
    except ProtocolError:
        return ProtocolError


def _agrees(fast: object, strict: object, value: object) -> None:
    """What the fast path accepts, the strict decoder accepts too, as the same value."""
    got = fast(value)  # type: ignore[operator]
    if got is not None:
        assert _strict(strict, value) == got


@settings(max_examples=600, deadline=None)
@given(_records())
def test_fast_record_decoding_accepts_nothing_the_strict_decoder_refuses(rec: object) -> None:
    _agrees(_fast_record, _d_record, rec)


@settings(max_examples=600, deadline=None)
@given(_ops())
def test_fast_op_decoding_accepts_nothing_the_strict_decoder_refuses(op: object) -> None:
    _agrees(_fast_op, _d_op, op)


@settings(max_examples=300, deadline=None)
@given(st.lists(_ops(), max_size=6))
def test_an_accept_decodes_as_the_strict_decoder_decides_op_by_op(ops: list[object]) -> None:
    frame = msgpack.packb(
        {"t": "accept", "mid": 1, "epoch": [3, "tmr-a"], "entries": [[list(K), 1, ops]]}
    )
    expected = [_strict(_d_op, op) for op in ops]
    if ProtocolError in expected:
        with pytest.raises(ProtocolError):
            decode_request(frame)
    else:
        msg = decode_request(frame)
        assert isinstance(msg, Accept)
        assert list(msg.entries[0].ops) == expected


def test_the_fast_paths_leave_whole_number_times_to_the_strict_decoders() -> None:
    rec = HandleRecord("h1", 6000123, 42, 1, "client", "rid-1", 1700000000.0)
    body = [rec.handle, rec.firm, rec.product, rec.seats, rec.client_id, rec.request_id, 1700000000]
    frame = msgpack.packb(
        {"t": "snapshot", "mid": 1, "epoch": [3, "tmr-a"], "entries": [[list(K), 0, [body]]]}
    )
    msg = decode_request(frame)
    assert isinstance(msg, Snapshot)
    (entry,) = msg.entries
    assert entry.handles == (rec,) and type(entry.handles[0].granted_at) is float


def test_a_bad_op_is_named_by_its_index() -> None:
    good = ["r", "h1", "release", 2.0]
    frame = msgpack.packb(
        {
            "t": "accept",
            "mid": 1,
            "epoch": [3, "tmr-a"],
            "entries": [[list(K), 1, [good, good, ["r", "h1", "later", 2.0]]]],
        }
    )
    with pytest.raises(ProtocolError, match=r"ops\[2\]"):
        decode_request(frame)


BOUND = LicenseInfo(
    8, 30, True, CopyReason.NONE, None, (), set_id="88" * 16, set_index=2, fingerprint="f2" * 32,
    backend_key="02" * 32,
)  # fmt: skip


def test_license_report_carries_the_copys_place_in_its_set() -> None:
    msg = Status(1, "backend-2", E, True, {}, {}, {K: BOUND})
    assert decode_reply(encode_reply(msg)) == msg


def _status_with_license(lic: list[object]) -> bytes:
    body = msgpack.unpackb(encode_reply(Status(1, "b", E, True, {}, {}, LIC)))
    body["licenses"] = [[list(K), lic]]
    data: bytes = msgpack.packb(body)
    return data


def test_license_report_of_an_older_backend_names_no_set() -> None:
    """The 6 fields a backend from before sets sends decode with no set (the server does
    not count such a copy); a wrong set index or an overlong key is refused."""
    reply = decode_reply(_status_with_license([7, 20, True, "", None, []]))
    assert isinstance(reply, Status)
    lic = reply.licenses[K]
    assert (lic.set_id, lic.set_index, lic.fingerprint, lic.backend_key) == ("", 0, "", "")
    good = [8, 30, True, "", None, [], "88" * 16, 2, "f2" * 32, "02" * 32]
    for i, bad in ((7, 4), (7, True), (9, "0" * 65), (6, 5)):
        frame = _status_with_license([*good[:i], bad, *good[i + 1 :]])
        with pytest.raises(ProtocolError):
            decode_reply(frame)
    with pytest.raises(ProtocolError):
        decode_reply(_status_with_license(good[:8]))


@pytest.mark.parametrize("reason", list(CopyReason))
def test_a_copys_reason_is_its_old_string_on_the_wire(reason: CopyReason) -> None:
    """Peers of the previous version send and read the same strings (``"expired"``, ...);
    an unknown reason is a bad frame, not a string carried along."""
    frame = _status_with_license([7, 20, reason == CopyReason.NONE, reason.value, None, []])
    reply = decode_reply(frame)
    assert isinstance(reply, Status) and reply.licenses[K].reason is reason
    lic = LicenseInfo(7, 20, False, reason)
    body = msgpack.unpackb(encode_reply(Status(1, "b", E, True, {}, {}, {K: lic})))
    assert body["licenses"][0][1][3] == reason.value
    with pytest.raises(ProtocolError, match="unknown copy reason"):
        decode_reply(_status_with_license([7, 20, False, "EXPIRED", None, []]))


RI = HandleRecord("h2", 6000123, 42, 1, "c", "r", 1.5, "K" * 40, "alice", "ws-17", 4242)


def test_a_record_carries_the_clients_user_host_and_pid() -> None:
    msg = Snapshot(4, E, (SnapshotEntry(K, 0, (RI,)),))
    got = decode_request(encode_request(msg))
    assert got == msg
    assert isinstance(got, Snapshot)
    (rec,) = got.entries[0].handles
    assert (rec.user, rec.host, rec.pid) == ("alice", "ws-17", 4242)


def test_records_of_older_peers_decode_with_empty_identity() -> None:
    eight = ["h2", 6000123, 42, 1, "c", "r", 1.5, "K" * 40]
    assert _fast_record(eight) == _d_record(eight, "x")
    rec = _d_record(eight, "x")
    assert rec == HandleRecord("h2", 6000123, 42, 1, "c", "r", 1.5, "K" * 40)
    assert (rec.user, rec.host, rec.pid) == ("", "", 0)
    assert _d_record(eight[:7], "x").owner == ""
    with pytest.raises(ProtocolError):
        _d_record([*eight, "alice"], "x")  # 9 fields: no such format


def test_a_record_without_identity_is_sent_as_an_older_peer_writes_it() -> None:
    """So a backend or server from before schema 5 still decodes it (rolling upgrade)."""
    from tmr.protocol.peer_api import _record

    assert len(_record(R)) == 8
    assert len(_record(RI)) == 11
    assert len(_record(HandleRecord("h", 1, 2, 1, "c", "r", 1.0, "K", "", "", 7))) == 11


def test_commit_knowledge_fields_are_absent_while_empty_and_optional_on_decode() -> None:
    """Older peers omit `notice` (ACCEPT) and `marked` (PROMISE); newer ones send neither
    while empty, so an older decoder reads the same bytes as before."""
    accept = Accept(3, E, (AcceptEntry(K, 1, (Grant(R),)),), ((K, 0),))
    body = msgpack.unpackb(encode_request(accept))
    assert "notice" not in body
    assert decode_request(msgpack.packb(body)) == accept
    promise = Promise(2, "backend-1", E, True, {K: (Version(E, 1), (R,))}, LIC)
    body = msgpack.unpackb(encode_reply(promise))
    assert "marked" not in body
    got = decode_reply(msgpack.packb(body))
    assert isinstance(got, Promise) and got.marked == {}
    accepted = Accepted(4, E, {K: EntryResult(EntryStatus.OK, 3)})
    body = msgpack.unpackb(encode_reply(accepted))
    assert "durable" not in body
    assert decode_reply(msgpack.packb(body)) == accepted


@pytest.mark.parametrize(
    "notice",
    [[[[1, 2], 0]], [[1, 2]], "x", [[[1, 2], "3"]], None],
    ids=["seq0", "short", "str", "seq", "null"],  # null: absent is not the same as nil
)
def test_a_bad_notice_is_refused(notice: object) -> None:
    body = msgpack.unpackb(encode_request(REQUESTS[2]))
    body["notice"] = notice
    with pytest.raises(ProtocolError):
        decode_request(msgpack.packb(body))


OLD_STATUS = {
    "t": "status",
    "mid": 9,
    "name": "backend-2",
    "promised": [3, "tmr-a"],
    "caught_up": True,
    "versions": [[[6000123, 42], [[3, "tmr-a"], 3]]],
    "seats": [[[6000123, 42], 2]],
    "licenses": [],
}


@pytest.mark.parametrize(
    "extra",
    [
        {"since": 3},  # a delta without the state it brings the server to
        {"state": None, "since": 3},
        {"state": "0f1e", "since": 3},
        {"state": ["0f1e", 5], "since": -1},
        {"state": ["0f1e", 5], "since": "3"},
        {"state": ["0f1e", 5], "since": 3, "gone": [[1]]},
        {"state": ["0f1e", 5], "since": 3, "gone": {"a": 1}},
        {"state": ["0f1e", 5], "since": 3, "gone": [[-1, 2]]},
        {"state": ["0f1e", 2**63]},
        {"state": [["0f1e"], 5]},
    ],
)
def test_malformed_status_state_is_refused(extra: dict[str, object]) -> None:
    with pytest.raises(ProtocolError):
        decode_reply(msgpack.packb({**OLD_STATUS, **extra}))


def test_status_state_is_new_fields_old_peers_ignore() -> None:
    """A probe that says nothing (an older server) and a status without a state (an older
    backend) are the old frames; the new fields are extra keys an older decoder skips."""
    got = decode_reply(msgpack.packb(OLD_STATUS))
    assert isinstance(got, Status) and got.state is None
    assert "have" not in msgpack.unpackb(encode_request(Probe(1, E, "tmr-a", "x")))
    whole = msgpack.unpackb(encode_reply(REPLIES[4]))
    assert whole["state"] == ["0f1e", 7] and "since" not in whole and "gone" not in whole
    assert {"versions", "seats", "licenses"} <= whole.keys()  # what an older server reads
