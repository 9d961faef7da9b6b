"""The backend's group commit: queued requests share one durable transaction."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest

from tests.unit.backend.test_service_core import (  # noqa: F401 - fixtures
    E1,
    FIRM,
    KEY,
    NOW,
    PRODUCT,
    catch_up,
    expiring,
    svc,
    take_seats,
)
from tmr.backend.service import BackendService
from tmr.protocol.peer_api import decode_reply, encode_request
from tmr.replication.acceptor import Step, Write
from tmr.replication.messages import (
    Accept,
    Accepted,
    AcceptEntry,
    Crypt,
    CryptResult,
    EntryStatus,
    PeerError,
    PeerReply,
    PeerRequest,
    Probe,
    Status,
)
from tmr.replication.types import Grant, HandleRecord, Release, ReleaseReason


def rec(name: str) -> HandleRecord:
    return HandleRecord(name, FIRM, PRODUCT, 1, "c1", f"r-{name}", NOW)


def decode(frame: bytes | None) -> PeerReply:
    assert frame is not None
    return decode_reply(frame)


def accepted(reply: PeerReply) -> Accepted:
    assert isinstance(reply, Accepted)
    return reply


def status(reply: PeerReply) -> Status:
    assert isinstance(reply, Status)
    return reply


def test_batch_commits_once_and_replies_in_order(
    svc: BackendService,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert svc.store is not None and svc.acceptor is not None
    catch_up(svc)
    calls: list[int] = []
    orig = svc.store.commit_many

    def counting(ws: Sequence[Write]) -> None:
        calls.append(len(ws))
        orig(ws)

    monkeypatch.setattr(svc.store, "commit_many", counting)
    frames = [
        encode_request(Accept(10, E1, (AcceptEntry(KEY, 1, (Grant(rec("h1")),)),))),
        encode_request(Probe(11)),
        None,
        encode_request(Accept(12, E1, (AcceptEntry(KEY, 2, (Grant(rec("h2")),)),))),
        encode_request(Crypt(13, E1, KEY, "h2", "c1", "hmac", b"x")),
        encode_request(
            Accept(14, E1, (AcceptEntry(KEY, 3, (Release("h1", ReleaseReason.RELEASE, NOW),)),))
        ),
    ]
    replies = svc.handle_frames(frames)
    assert calls == [3]
    out = [decode(r) for r in replies]
    assert [r.mid for r in out] == [10, 11, 0, 12, 13, 14]
    assert accepted(out[0]).results[KEY].status is EntryStatus.OK
    assert accepted(out[3]).results[KEY].status is EntryStatus.OK
    assert accepted(out[3]).results[KEY].seq == 2
    assert isinstance(out[4], CryptResult) and out[4].ok
    assert accepted(out[5]).results[KEY].seq == 3
    assert svc.store.load() == svc.acceptor.state
    assert set(svc.acceptor.state.products[KEY].handles) == {"h2"}
    assert svc.counters["writes"] == 3 + 2  # catch_up wrote twice


def test_failed_group_commit_sends_nothing_after_first_write(svc: BackendService) -> None:  # noqa: F811
    assert svc.store is not None and svc.acceptor is not None
    catch_up(svc)
    durable = svc.store.load()
    conn = svc.store._conn
    assert conn is not None
    conn.execute("PRAGMA query_only = 1")
    frames = [
        encode_request(Probe(1)),
        encode_request(Accept(2, E1, (AcceptEntry(KEY, 1, (Grant(rec("h1")),)),))),
        encode_request(Probe(3)),
        encode_request(Crypt(4, E1, KEY, "h1", "c1", "hmac", b"x")),
        b"\xc1",
    ]
    replies = svc.handle_frames(frames)
    assert (
        replies[0] is not None and replies[1] is None and replies[2] is None and replies[3] is None
    )
    assert replies[4] is not None
    assert svc.acceptor.state == durable
    conn.execute("PRAGMA query_only = 0")
    assert take_seats(svc, 1, "h1").results[KEY].status is EntryStatus.OK


def test_internal_error_mid_batch_commits_the_earlier(
    svc: BackendService,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert svc.store is not None and svc.acceptor is not None
    catch_up(svc)
    orig = svc.acceptor.handle

    def boom(req: PeerRequest, now: float) -> Step:
        if req.mid == 2:
            raise RuntimeError("bug")
        return orig(req, now)

    monkeypatch.setattr(svc.acceptor, "handle", boom)
    frames = [
        encode_request(Accept(1, E1, (AcceptEntry(KEY, 1, (Grant(rec("h1")),)),))),
        encode_request(Accept(2, E1, (AcceptEntry(KEY, 2, (Grant(rec("h2")),)),))),
        encode_request(Accept(3, E1, (AcceptEntry(KEY, 2, (Grant(rec("h3")),)),))),
    ]
    out = [decode(r) for r in svc.handle_frames(frames)]
    assert accepted(out[0]).results[KEY].status is EntryStatus.OK
    assert isinstance(out[1], PeerError)
    assert accepted(out[2]).results[KEY].status is EntryStatus.OK
    assert accepted(out[2]).results[KEY].seq == 2
    assert svc.store.load() == svc.acceptor.state
    assert set(svc.acceptor.state.products[KEY].handles) == {"h1", "h3"}


def test_leader_age_follows_requests_in_the_promised_epoch(
    svc: BackendService,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The service feeds the acceptor a monotonic clock and records requests that carry no
    write too (a leader's probe), so `Status.leader_age` and `status()` show the leader."""
    clock = [100.0]
    # the `time` module that tmr.backend.service imports and reads its clock from
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    assert status(decode(svc.handle_frames([encode_request(Probe(1))])[0])).leader_age is None
    assert svc.status()["leader_age"] is None  # nobody promised yet
    catch_up(svc)  # PREPARE and SNAPSHOT in E1 at t=100
    clock[0] = 100.5
    assert status(decode(svc.handle_frames([encode_request(Probe(2))])[0])).leader_age == 0.5
    clock[0] = 101.0
    svc.handle_frames([encode_request(Probe(3, E1))])  # the leader's own probe
    clock[0] = 101.25
    assert svc.status()["leader_age"] == 0.25
    reply = status(decode(svc.handle_frames([encode_request(Probe(4))])[0]))
    assert reply.leader_age == 0.25


def test_a_turn_takes_the_queued_requests_without_a_receive_that_finds_none(
    svc: BackendService,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`_serve_peers` drains the peer socket while ZMQ_EVENTS say a request waits: every
    queued request is served in the turn (one group), and no receive comes back empty (a
    `zmq.Again` per turn, the common case of one ACCEPT at low load)."""
    import zmq

    from tmr.backend import service as service_module
    from tmr.zmqio import readable, recv_frames

    catch_up(svc)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.bind("inproc://backend-drain")
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect("inproc://backend-drain")
    received: list[bool] = []

    def counting(sock: zmq.Socket[bytes]) -> list[bytes] | None:
        frames = recv_frames(sock)
        received.append(frames is not None)
        return frames

    monkeypatch.setattr(service_module, "recv_frames", counting)
    svc._router = router
    try:
        for seq in (1, 2, 3):
            entry = AcceptEntry(KEY, seq, (Grant(rec(f"h{seq}")),))
            dealer.send(encode_request(Accept(seq, E1, (entry,))))
        assert router.poll(2000)  # inproc: all three are queued once the first is
        svc._serve_peers(0.0)
        assert received == [True, True, True]
        replies: list[PeerReply] = []
        while dealer.poll(2000) and len(replies) < 3:
            replies.append(decode_reply(dealer.recv()))
        assert [r.mid for r in replies] == [1, 2, 3]
        assert all(accepted(r).results[KEY].status is EntryStatus.OK for r in replies)
        assert not readable(router)
    finally:
        svc._router = None
        router.close(linger=0)
        dealer.close(linger=0)
        ctx.term()
