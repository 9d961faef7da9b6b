"""The load generator's heartbeat hot path (`bench.loadgen`): the packed-once heartbeat
request is the bytes `encode_request` makes, and a reply is checked as `decode_reply` would."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bench.loadgen import HeartbeatTemplate, Worker
from tmr.client._heartbeats import grid_step
from tmr.errors import ErrorCode
from tmr.protocol.client_api import (
    ErrorReply,
    HeartbeatRequest,
    OkReply,
    encode_ok,
    encode_reply,
    encode_request,
)
from tmr.protocol.codec import pack
from tmr.protocol.errors import ProtocolError
from tmr.protocol.results import HeartbeatResult

CID = "bench-hb-0a1b2c-w3-c2499"

RIDS = [
    "r",
    "hb-0a1b2c-w3-c2499-1",
    "x" * 31,  # the longest fixstr
    "y" * 32,  # the shortest str 8
    "A.b:c_d-" * 8,  # 64 characters, every kind the rid allows
]


@pytest.mark.parametrize("rid", RIDS)
@pytest.mark.parametrize("handle", ["h1-0", "h" * 32, "h2-" + "f" * 61])
def test_a_heartbeat_from_its_template_is_the_bytes_encode_request_makes(
    rid: str, handle: str
) -> None:
    template = HeartbeatTemplate(CID, handle)
    assert template.encode(rid) == encode_request(HeartbeatRequest(rid, CID, handle))


@pytest.mark.parametrize("rid", ["", "a b", "x" * 65, "é"])
def test_a_heartbeat_template_refuses_a_bad_rid_as_the_request_does(rid: str) -> None:
    with pytest.raises(ProtocolError):
        HeartbeatRequest(rid, CID, "h1-0")
    with pytest.raises(ProtocolError):
        HeartbeatTemplate(CID, "h1-0").encode(rid)


def test_a_heartbeat_template_checks_the_client_and_the_handle_once() -> None:
    with pytest.raises(ProtocolError):
        HeartbeatTemplate(CID, "")
    with pytest.raises(ProtocolError):
        HeartbeatTemplate("", "h1-0")


@pytest.mark.parametrize("rid", RIDS)
def test_the_ok_reply_to_the_rid_gives_the_renewed_lease(rid: str) -> None:
    assert HeartbeatTemplate.check(encode_ok(rid, HeartbeatResult(30.0)), rid) == (
        HeartbeatResult(30.0)
    )
    # encode_ok is the server's template; encode_reply its reference: the same bytes
    frame = encode_reply(OkReply(rid, HeartbeatResult(12.5)))
    assert HeartbeatTemplate.check(frame, rid) == HeartbeatResult(12.5)


def test_a_reply_to_another_rid_or_an_error_is_left_to_decode_reply() -> None:
    frame = encode_ok("hb-1-c0-7", HeartbeatResult(30.0))
    assert HeartbeatTemplate.check(frame, "hb-1-c0-8") is None
    assert HeartbeatTemplate.check(frame, "hb-1-c0-7x") is None
    assert HeartbeatTemplate.check(frame, "hb-1-c0-") is None
    error = encode_reply(ErrorReply("hb-1-c0-7", ErrorCode.UNKNOWN_HANDLE.value, "gone"))
    assert HeartbeatTemplate.check(error, "hb-1-c0-7") is None
    # the same map in another key order: not the server's bytes, decode_reply reads it
    other = pack({"rid": "hb-1-c0-7", "v": 1, "ok": True, "result": {"lease": 30.0}})
    assert HeartbeatTemplate.check(other, "hb-1-c0-7") is None


@pytest.mark.parametrize(
    "body",
    [
        pack({"lease": -1.0}),  # a lease in the past
        pack({"renewed": True}),  # no lease
        pack([30.0]),  # not a map
        pack({"lease": 30.0}) + b"\x00",  # trailing bytes
        pack({"lease": 30.0})[:-2],  # truncated
        b"",
    ],
)
def test_a_malformed_result_after_the_right_envelope_is_a_protocol_error(body: bytes) -> None:
    frame = encode_ok("hb-1-c0-7", HeartbeatResult(30.0))
    head = frame[: len(frame) - len(pack({"lease": 30.0}))]
    with pytest.raises(ProtocolError):
        HeartbeatTemplate.check(head + body, "hb-1-c0-7")


def _worker(**over: Any) -> Worker:
    spec: dict[str, Any] = {
        "mode": "heartbeat",
        "endpoints": ["tcp://127.0.0.1:1", "tcp://127.0.0.1:2"],
        "server_key": "x" * 40,
        "firm": 6_000_001,
        "product": 2,
        "start_at": 0.0,
        "duration": 0.0,
        "drain": 60.0,
        "clients": 2,
        "period": 10.0,
        **over,
    }
    return Worker(spec)


def test_a_worker_counts_the_reply_to_its_heartbeat_and_ignores_another_rid() -> None:
    w = _worker()
    try:
        c = w.clients[0]
        c.handle = "h1-42"
        w._heartbeat(c, 100.0, 5.0)
        assert c.op == "heartbeat" and c.payload == encode_request(
            HeartbeatRequest(c.rid, c.cid, "h1-42")
        )
        rid = c.rid
        late = encode_ok(rid + "0", HeartbeatResult(30.0))  # not this request's
        w._on_frames(c, [b"", late], 105.1)
        assert w.heartbeats == 0 and c.rid == rid
        w._on_frames(c, [b"", encode_ok(rid, HeartbeatResult(30.0))], 105.1)
        assert w.heartbeats == 1 and w.errors == {}
        assert c.op == "heartbeat" and c.rid != rid  # the next one, a period later
        # a period after the answer, on the wall clock's grid (as the SDK): at most one step
        # later (or a thousandth of one earlier, `on_grid`'s tolerance)
        step = grid_step(10.0)
        assert c.resend_at is not None
        assert 115.1 - step * 1e-3 <= c.resend_at <= 115.1 + step * (1 + 1e-6)
        k = (c.resend_at + time.time() - time.monotonic()) / step
        assert abs(k - round(k)) < 0.02  # on the grid (the offset read again: a few us off)
        # Answered 25 s late (a long failover): as the SDK, the first heartbeat of the
        # client's own phase still ahead (due 115.1, on the grid 115.1-115.2: 30 s later),
        # not a period after the answer.
        # (at most a step later, should the offset read this time cross a step's edge)
        rid, due = c.rid, c.resend_at
        w._on_frames(c, [b"", encode_ok(rid, HeartbeatResult(30.0))], 140.0)
        assert due + 30.0 - step * 1e-3 <= c.resend_at <= due + 30.0 + step * (1 + 1e-6)
        # what a `count` line on stdin prints (bench.heartbeat_cost --pause)
        assert w.counts() == {"heartbeats": 2, "retries": 0, "hb_lost": 0, "errors": 0}
    finally:
        w.ctx.term()


def test_a_worker_checks_out_again_when_its_handle_is_unknown() -> None:
    w = _worker()
    try:
        c = w.clients[0]
        c.handle = "h1-42"
        w.holding = 1
        w._heartbeat(c, 100.0, 5.0)
        error = ErrorReply(c.rid, ErrorCode.UNKNOWN_HANDLE.value, "no such handle")
        w._on_frames(c, [b"", encode_reply(error)], 105.1)
        assert w.hb_lost == 1 and w.errors == {"UNKNOWN_HANDLE": 1} and w.heartbeats == 0
        assert c.op == "checkout" and c.handle is None and c.hb is None and w.holding == 0
    finally:
        w.ctx.term()


def test_a_worker_counts_a_malformed_heartbeat_reply_and_heartbeats_again() -> None:
    w = _worker()
    try:
        c = w.clients[0]
        c.handle = "h1-42"
        w._heartbeat(c, 100.0, 5.0)
        rid = c.rid
        frame = encode_ok(rid, HeartbeatResult(30.0))
        bad = frame[: len(frame) - len(pack({"lease": 30.0}))] + pack({"lease": "soon"})
        w._on_frames(c, [b"", bad], 105.1)
        assert w.errors == {"MALFORMED_REPLY": 1} and w.heartbeats == 0
        assert c.op == "heartbeat" and c.rid != rid
    finally:
        w.ctx.term()


def test_a_result_seen_before_is_looked_up_and_a_new_one_still_checked() -> None:
    first = encode_ok("hb-1-c0-7", HeartbeatResult(30.0))
    assert HeartbeatTemplate.check(first, "hb-1-c0-7") == HeartbeatResult(30.0)
    again = encode_ok("hb-1-c0-8", HeartbeatResult(30.0))
    assert HeartbeatTemplate.check(again, "hb-1-c0-8") == HeartbeatResult(30.0)
    assert HeartbeatTemplate.check(again, "hb-1-c0-9") is None  # the rid is still compared
    head = first[: len(first) - len(pack({"lease": 30.0}))]
    new = head + pack({"lease": 31.0})  # not seen before: decoded
    assert HeartbeatTemplate.check(new, "hb-1-c0-7") == HeartbeatResult(31.0)
    bad = head + pack({"lease": -31.0})
    for _ in range(2):  # a bad result is not remembered as good
        with pytest.raises(ProtocolError):
            HeartbeatTemplate.check(bad, "hb-1-c0-7")


def test_timers_set_a_constant_span_ahead_are_queued_in_order_and_others_heaped() -> None:
    """A heartbeat's next one (a period after its reply) goes to its span's queue; a timer
    due before the last one queued (set earlier in time) goes to the heap; each fires when
    due, not before, and a timer set again voids the older one."""
    import zmq

    w = _worker(server_key=zmq.curve_keypair()[0].decode(), clients=3, attempt_timeout=5.0)
    try:
        for c in w.clients:
            w._connect(c)
            c.handle = f"h1-{c.index}"
        c0, c1, c2 = w.clients
        w._heartbeat(c0, 100.0, w.period)  # due 110
        w._heartbeat(c1, 101.0, w.period)  # due 111
        w._heartbeat(c2, 99.0, w.period)  # due 109: before 111, so on the heap
        assert [t[2] for t in w.spans[w.period]] == [0, 1]
        assert [t[2] for t in w.timers] == [2]
        w._timers_due(108.9)
        assert (c0.sends, c1.sends, c2.sends) == (0, 0, 0)
        w._timers_due(109.0)
        assert (c0.sends, c1.sends, c2.sends) == (0, 0, 1)
        w._heartbeat(c1, 101.5, 0.5)  # c1 set again (another span): due 102, on the heap
        w._timers_due(110.0)
        assert (c0.sends, c1.sends) == (1, 1)  # c1 once, by its newer timer
        w._timers_due(111.0)  # c1's older timer (111) is void
        assert c1.sends == 1 and not w.spans[w.period]
        # the sends' attempt deadlines are in the attempt timeout's queue, in order
        assert [t[0] for t in w.spans[w.attempt_timeout]] == [114.0, 115.0, 115.0]
        w._timers_due(115.0)  # no reply: all three time out and fail over (a new socket each)
        assert (c0.sends, c1.sends, c2.sends) == (2, 2, 2) and w.retries == 3
    finally:
        for sock in list(w.by_sock):
            sock.close(linger=0)
        w.ctx.term()


def test_a_worker_has_one_zeromq_io_thread() -> None:
    """More I/O threads do not help on the benchmark's 2 cores: each is another thread to
    wake per message, and they share the cores with the cluster under test."""
    import zmq

    w = _worker()
    try:
        assert w.ctx.get(zmq.IO_THREADS) == 1
    finally:
        w.ctx.term()


def test_a_worker_sends_each_request_as_one_frame_as_the_sdk_does() -> None:
    import zmq

    public, secret = zmq.curve_keypair()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    server = ctx.socket(zmq.ROUTER)
    server.curve_server = True
    server.curve_publickey, server.curve_secretkey = public, secret
    port = server.bind_to_random_port("tcp://127.0.0.1")
    w = _worker(server_key=public.decode(), endpoints=[f"tcp://127.0.0.1:{port}"], mode="cycle")
    try:
        c = w.clients[0]
        w._connect(c)
        w._checkout(c, time.monotonic())
        assert server.poll(5000), "the checkout did not arrive"
        frames = server.recv_multipart()
        assert frames[1:] == [c.payload]  # the routing id, then the payload alone
    finally:
        for sock in list(w.by_sock):
            sock.close(linger=0)
        server.close(linger=0)
        ctx.term()
        w.ctx.term()


def test_a_worker_fails_over_as_the_sdk_does() -> None:
    """The load generator follows the SDK's retry schedule (`RetrySchedule`): after a timeout
    on the first endpoint and NOT_ACTIVE from the second, it stays with the second (the
    same socket) and asks it again after a back-off."""
    import zmq

    w = _worker(server_key=zmq.curve_keypair()[0].decode(), mode="cycle", duration=60.0)
    try:
        c = w.clients[0]
        w._connect(c)
        w._checkout(c, 100.0)
        assert (c.endpoint, c.sends, c.attempt) == (0, 1, 0.5)
        first = c.sock
        w._timer((c.deadline, c.gen, c.index), c.deadline)  # the attempt timed out
        assert (c.endpoint, c.sends, c.attempt) == (1, 2, 0.75) and c.sock is not first
        second = c.sock
        refusal = encode_reply(ErrorReply(c.rid, ErrorCode.NOT_ACTIVE.value, "standby"))
        w._on_frames(c, [b"", refusal], 100.6)
        assert (c.endpoint, c.sock) == (1, second)  # stays, on the same socket
        assert c.resend_at == pytest.approx(100.65)  # after 50 ms
        assert c.resend_at is not None
        w._timer((c.resend_at, c.gen, c.index), 100.65)
        assert c.sends == 3 and c.endpoint == 1
    finally:
        for sock in list(w.by_sock):
            sock.close(linger=0)
        w.ctx.term()


@pytest.fixture
def hold_server(make_server: Callable[..., Any]) -> Any:
    """The SDK tests' fake TMR server (tests/unit/conftest.py), with room for a few handles."""
    return make_server(quantity=10)


@pytest.fixture
def stdin_pipe(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """Standard input replaced by a pipe (closed after the test): its write end."""
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "r") as reader:
        monkeypatch.setattr(sys, "stdin", reader)
        try:
            yield write_fd
        finally:
            os.close(write_fd)


def _holder(server: Any, **over: Any) -> Any:
    """A hold-mode worker run in a thread against `server` (its result in `.result`)."""
    from fake_tmr_server import FIRM, PRODUCT

    spec: dict[str, Any] = {
        "mode": "hold",
        "hold": 4,
        "endpoints": [server.endpoint],
        "server_key": server.keys.public,
        "firm": FIRM,
        "product": PRODUCT,
        "start_at": time.monotonic(),
        "duration": 0.0,
        "drain": 0.3,  # the checkout wait
        "clients": 2,
        **over,
    }
    worker = Worker(spec)
    thread = threading.Thread(target=lambda: setattr(thread, "result", worker.run()))
    thread.start()
    return thread


def test_a_holder_keeps_its_handles_past_its_checkout_wait_until_told(
    hold_server: Any, stdin_pipe: int
) -> None:
    """The growth benchmark's holders: the handles stay held after the checkout wait
    (`drain`) is over, as long as the parent has not said to let go, and are all released
    when it says so."""
    thread = _holder(hold_server, keep=60.0)
    try:
        hold_server.wait_for(lambda: hold_server.in_use == 4)
        # Absence can only be shown over a span: three checkout waits, which is when a
        # holder that let go on its own would have (once at the start plus `drain`).
        time.sleep(0.9)
        assert hold_server.in_use == 4 and hold_server.released == []
        os.write(stdin_pipe, b"release\n")
        hold_server.wait_for(lambda: hold_server.in_use == 0)
    finally:
        if thread.is_alive():
            os.write(stdin_pipe, b"release\n")
        thread.join(10)
    assert not thread.is_alive()
    assert len(hold_server.released) == 4
    assert thread.result["unfinished"] == 0


def test_a_holder_lets_go_after_keep_seconds_if_never_told(
    hold_server: Any, stdin_pipe: int
) -> None:
    """The wait is bounded: a holder whose parent went away releases its handles `keep`
    seconds after it has them, and ends."""
    thread = _holder(hold_server, keep=0.2)
    hold_server.wait_for(lambda: len(hold_server.released) == 4)
    thread.join(10)
    assert not thread.is_alive()
    assert thread.result["unfinished"] == 0
