"""The server answers a usual heartbeat (active, confirmed, the handle held by the key of the
connection under the client id given) through `Leader.renew`, with no `Effects` and no
reply object: the same bytes as the full path. Every other heartbeat goes through
`Leader.heartbeat` as before (tests/sim/test_renew.py checks the two decide alike)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.unit.fake_socket import FakeSocket, as_zmq_socket, frames_sent
from tests.unit.replication.harness import Harness
from tmr.protocol.client_api import (
    ErrorReply,
    HeartbeatRequest,
    OkReply,
    decode_reply,
    encode_ok,
    encode_request,
)
from tmr.protocol.results import CheckoutResult, HeartbeatResult
from tmr.replication.leader import Leader
from tmr.replication.types import LicenseInfo
from tmr.server.service import ServerService

KEY = (6000123, 42)
OWNER = "K" * 40
OTHER = "O" * 40


@pytest.fixture
def active(svc: ServerService) -> Iterator[tuple[ServerService, Harness, str]]:
    """`svc` with the active leader of a harness, a handle held by OWNER as client c1."""
    h = Harness({KEY: LicenseInfo(7, 5, True)})
    h.promote()
    reply = h.call("checkout", "r0", "c1", KEY[0], KEY[1], 1, owner=OWNER)
    assert isinstance(reply.result, CheckoutResult)
    svc.leader = h.leader
    svc.client = as_zmq_socket(FakeSocket())
    svc.dealers = {b.name: as_zmq_socket(FakeSocket()) for b in h.leader.backends}
    yield svc, h, reply.result.handle


def _heartbeat(svc: ServerService, now: float, handle: str, owner: str, cid: str = "c1") -> Any:
    sent = frames_sent(svc.client)
    before = len(sent)
    svc.on_client([b"peer", b"", encode_request(HeartbeatRequest("hb-1", cid, handle))], now, owner)
    assert len(sent) == before + 3
    return sent[-1]


def test_a_usual_heartbeat_is_renewed_without_effects(
    active: tuple[ServerService, Harness, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    svc, h, handle = active
    h.advance(5.0)
    monkeypatch.setattr(svc, "apply", lambda fx: pytest.fail(f"effects applied: {fx}"))
    monkeypatch.setattr(Leader, "heartbeat", lambda *a, **k: pytest.fail("full path taken"))
    payload = _heartbeat(svc, h.now, handle, OWNER)
    assert payload == encode_ok("hb-1", HeartbeatResult(h.lease))
    reply = decode_reply(payload, op="heartbeat")
    assert isinstance(reply, OkReply) and reply.result == HeartbeatResult(h.lease)
    assert h.leader._leases._until[handle] == pytest.approx(h.now + h.lease)


def test_the_same_bytes_as_the_full_path(active: tuple[ServerService, Harness, str]) -> None:
    svc, h, handle = active
    fast = _heartbeat(svc, h.now, handle, OWNER)
    fx = h.leader.heartbeat((b"peer", True), "hb-1", "c1", handle, h.now, owner=OWNER)
    assert [svc._wire_payload(r) for r in fx.replies] == [fast]


@pytest.mark.parametrize(
    ("owner", "cid", "code"),
    [
        ("", "c1", "BAD_REQUEST"),  # no key on the connection (never with CURVE and ZAP)
        (OTHER, "c1", "UNKNOWN_HANDLE"),  # another key's handle
        (OWNER, "c2", "UNKNOWN_HANDLE"),  # another client id of the same key
    ],
)
def test_other_heartbeats_take_the_full_path(
    active: tuple[ServerService, Harness, str], owner: str, cid: str, code: str
) -> None:
    svc, h, handle = active
    until = h.leader._leases._until[handle]
    h.advance(5.0)
    reply = decode_reply(_heartbeat(svc, h.now, handle, owner, cid), op="heartbeat")
    assert isinstance(reply, ErrorReply) and reply.code == code, reply
    assert h.leader._leases._until[handle] == until  # not renewed


def test_a_standby_answers_not_active(svc: ServerService) -> None:
    svc.client = as_zmq_socket(FakeSocket())
    reply = decode_reply(_heartbeat(svc, 1.0, "h-1", OWNER), op="heartbeat")
    assert isinstance(reply, ErrorReply) and reply.code == "NOT_ACTIVE", reply


def test_an_unconfirmed_leader_keeps_the_lease_and_answers_quorum_lost(
    active: tuple[ServerService, Harness, str],
) -> None:
    """Two backends silent for longer than backend_timeout: not renewed from the server's own
    state (a deposed leader's would be stale), but the lease is kept (`Leader.heartbeat`)."""
    svc, h, handle = active
    h.down.update({"b1", "b2"})
    h.advance(h.leader.cfg.backend_timeout + 1.0)
    reply = decode_reply(_heartbeat(svc, h.now, handle, OWNER), op="heartbeat")
    assert isinstance(reply, ErrorReply) and reply.code == "QUORUM_LOST", reply
    assert h.leader._leases._until[handle] == pytest.approx(h.now + h.lease)
