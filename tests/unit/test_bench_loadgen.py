"""The load generator's heartbeat hot path (`bench.loadgen`): the packed-once heartbeat
request is the bytes `encode_request` makes, and a reply is checked as `decode_reply` would."""

from __future__ import annotations

from typing import Any

import pytest

from bench.loadgen import HeartbeatTemplate, Worker
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
        assert c.resend_at == pytest.approx(115.1)
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
