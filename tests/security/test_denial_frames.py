"""Attack: a peer (an allowed server's key, or a bug) sends malformed or hostile denial frames
to a backend (`Denials`, `DenialQuery`: design.md §7.6).

The backend must never crash or record anything from a bad frame: each one is a typed
`PeerError` (counted as a bad request), the replication state is untouched, and the next
good request is served as before. A denial batch is bounded (`MAX_DENIAL_BATCH` rows, each
field bounded), never answered (fire and forget), and a batch sent again (a resend, or a
replay) adds no row: refusals are deduplicated by id."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.backend.test_service_core import NOW
from tmr.backend.service import BackendService
from tmr.protocol import peer_api
from tmr.replication.messages import DenialRow, Denials, PeerError, Probe, Status

ROW = DenialRow(
    "tmr-a/00000000/1", NOW, "tmr-a", "NO_LICENSE_AVAILABLE", 6_000_123, 42, 1, "K" * 40,
    "ann", "ws-1", 7, "all seats in use", 1, NOW,
)  # fmt: skip


def still_serves(svc: BackendService) -> None:
    reply = svc.handle_frame(peer_api.encode_request(Probe(99)))
    assert reply is not None
    status = peer_api.decode_reply(reply)
    assert isinstance(status, Status) and status.mid == 99 and status.denials


def denials_kept(svc: BackendService) -> int:
    assert svc.store is not None
    return len(svc.store.denials())


@pytest.mark.parametrize(
    "frame",
    [
        msgpack.packb({"t": "denials", "mid": 1, "rows": [[*list(ROW)[:11]]]}),
        msgpack.packb({"t": "denials", "mid": 1, "rows": [list(ROW)] * 1025}),
        msgpack.packb({"t": "denials", "mid": 1, "rows": [[*list(ROW)[:11], "r" * 5000, 1, NOW]]}),
        msgpack.packb({"t": "denials", "mid": 1, "rows": [[{"x": 1}] * 12]}),
        msgpack.packb({"t": "denials", "mid": 1, "rows": {"a": 1}}),
        msgpack.packb({"t": "denials", "mid": 2**64 - 1, "rows": []}),
        msgpack.packb({"t": "denial_query", "mid": 1, "since": 1e308, "until": float("inf")}),
        msgpack.packb(
            {"t": "denial_query", "mid": 1, "since": 0, "until": 1, "after": 0, "chunk": 2**40}
        ),
        peer_api.encode_denials(Denials(1, (ROW,)))[:-3],  # truncated
        b"\xdd\xff\xff\xff\xff",  # an array header claiming 4 billion items
    ],
)
def test_a_malformed_denial_frame_is_a_typed_error_and_records_nothing(
    backend: BackendService, frame: bytes
) -> None:
    acceptor = backend.acceptor
    assert acceptor is not None
    before = denials_kept(backend), acceptor.state.promised
    bad = backend.counters["bad_requests"]
    reply = backend.handle_frame(frame)
    assert reply is not None
    assert isinstance(peer_api.decode_reply(reply), PeerError)
    assert backend.counters["bad_requests"] == bad + 1
    assert (denials_kept(backend), acceptor.state.promised) == before
    still_serves(backend)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.dictionaries(
        st.sampled_from(["t", "mid", "rows", "since", "until", "after", "chunk"]),
        st.one_of(
            st.sampled_from(["denials", "denial_query"]),
            st.integers(-(2**63), 2**64 - 1),
            st.floats(),
            st.lists(
                st.lists(
                    st.one_of(st.integers(-(2**63), 2**64 - 1), st.text(max_size=4)),
                    max_size=13,
                )
            ),
        ),
    )
)
def test_random_denial_frames_never_crash_the_backend(
    backend: BackendService, body: dict[str, object]
) -> None:
    reply = backend.handle_frame(msgpack.packb(body))
    if reply is not None:  # a good `Denials` is never answered
        assert isinstance(peer_api.decode_reply(reply), PeerError)


def test_a_batch_is_not_answered_and_a_replay_adds_nothing(backend: BackendService) -> None:
    rows = tuple(ROW._replace(id=f"tmr-a/replay/{i}") for i in range(peer_api.MAX_DENIAL_BATCH))
    frame = peer_api.encode_denials(Denials(0, rows))
    before = denials_kept(backend)
    assert backend.handle_frames([frame, frame, frame]) == [None, None, None]
    assert denials_kept(backend) == before + len(rows)
    assert backend.handle_frame(frame) is None
    assert denials_kept(backend) == before + len(rows)
    still_serves(backend)
