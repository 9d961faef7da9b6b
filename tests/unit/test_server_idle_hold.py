"""The server holds its next poll back (`idle_hold_ms` of server.toml, 16 ms) only after a
turn that read client requests and left nothing for a backend to answer, while active and
busy (at least `HOLD_MIN_RATE` requests a second; `ServerService._hold_if_idle`): heartbeats
then share wake-ups, a checkout or release is never kept waiting for one, and a quiet server
never holds."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import zmq

from tests.unit.fake_socket import FakeSocket, as_zmq_socket, frames_sent
from tests.unit.replication.harness import Harness
from tmr.config import ServerConfig
from tmr.protocol.client_api import (
    CheckoutRequest,
    HeartbeatRequest,
    ReleaseRequest,
    Request,
    encode_request,
)
from tmr.protocol.results import CheckoutResult
from tmr.replication.roles import Role
from tmr.replication.types import LicenseInfo
from tmr.server.service import HOLD_MIN_RATE, RATE_WINDOW, ServerService

KEY = (6000123, 42)
IDLE_HOLD = ServerConfig.idle_hold_ms / 1000.0  # the default, in seconds
OWNER = "K" * 40


@pytest.fixture
def active(svc: ServerService) -> Iterator[tuple[ServerService, Harness]]:
    """`svc` with the active leader of a harness, its sockets replaced by fakes."""
    h = Harness({KEY: LicenseInfo(7, 5, True)})
    h.promote()
    svc.leader = h.leader
    svc.client = as_zmq_socket(FakeSocket())
    svc.dealers = {b.name: as_zmq_socket(FakeSocket()) for b in h.leader.backends}
    yield svc, h


def _turn(svc: ServerService, now: float, *reqs: Request) -> float:
    """One loop turn at ``now`` that read ``reqs``, its steps in the service's order (the
    requests, the pump, the hold: `test_the_hold_is_decided_last_after_the_pump`): the hold
    it asked for (0: none)."""
    auto_pump, svc.leader.auto_pump = svc.leader.auto_pump, False  # as in the service
    try:
        for req in reqs:
            svc.on_client([b"peer", b"", encode_request(req)], now, OWNER)
        svc._pump(now)
        svc._hold_if_idle(now)
    finally:
        svc.leader.auto_pump = auto_pump
    held, svc.loop._hold = svc.loop._hold, 0.0
    return held


def _window(svc: ServerService, h: Harness, handle: str, rate: float = HOLD_MIN_RATE) -> float:
    """A window with ``rate`` heartbeats a second ends (the leader's clock runs on with it):
    the server counts as busy, or not, until the next one ends. The time of the next turn."""
    svc._hold_if_idle(h.now)  # the window before ends, this one starts
    start = h.now
    h.advance(RATE_WINDOW + 0.05)  # a little more: the harness steps by 0.1 s in floats
    n = math.ceil(rate * (h.now - start))
    _turn(svc, h.now, *(HeartbeatRequest(f"b{i}", "c1", handle) for i in range(n)))  # it ends
    return h.now


def _grant(h: Harness) -> str:
    reply = h.call("checkout", "r0", "c1", KEY[0], KEY[1], 1, owner=OWNER)
    assert isinstance(reply.result, CheckoutResult)
    return reply.result.handle


def test_a_turn_of_heartbeats_holds_the_next_poll(active: tuple[ServerService, Harness]) -> None:
    svc, h = active
    handle = _grant(h)
    now = _window(svc, h, handle)
    assert not h.leader.awaiting_backends()
    two = HeartbeatRequest("r1", "c1", handle), HeartbeatRequest("r2", "c1", handle)
    assert _turn(svc, now, *two) == IDLE_HOLD > 0
    assert svc.loop._hold == 0.0  # asked once per turn, taken by the loop


def test_a_quiet_server_never_holds(active: tuple[ServerService, Harness]) -> None:
    svc, h = active
    handle = _grant(h)
    assert _turn(svc, h.now, HeartbeatRequest("r1", "c1", handle)) == 0.0  # no window yet
    now = _window(svc, h, handle, rate=HOLD_MIN_RATE / 2)
    assert _turn(svc, now, HeartbeatRequest("r2", "c1", handle)) == 0.0
    now = _window(svc, h, handle)
    assert _turn(svc, now, HeartbeatRequest("r3", "c1", handle)) == IDLE_HOLD


def test_a_turn_that_starts_replicating_never_holds(
    active: tuple[ServerService, Harness],
) -> None:
    svc, h = active
    handle = _grant(h)
    now = _window(svc, h, handle)
    checkout = CheckoutRequest("r1", "c1", KEY[0], KEY[1], 1)
    assert _turn(svc, now, HeartbeatRequest("r2", "c1", handle), checkout) == 0.0
    assert h.leader.awaiting_backends()  # the checkout's entry went to the backends


def test_a_release_is_not_held_back(active: tuple[ServerService, Harness]) -> None:
    svc, h = active
    handle = _grant(h)
    now = _window(svc, h, handle)
    assert _turn(svc, now, ReleaseRequest("r1", "c1", handle)) == 0.0
    assert h.leader.awaiting_backends()


def test_a_turn_without_client_requests_never_holds(
    active: tuple[ServerService, Harness],
) -> None:
    svc, h = active
    now = _window(svc, h, _grant(h))
    assert _turn(svc, now) == 0.0


def test_a_standby_never_holds(svc: ServerService) -> None:
    svc.client = as_zmq_socket(FakeSocket())
    svc._hold_if_idle(1.0)
    _turn(svc, 1.0, *(HeartbeatRequest(f"b{i}", "c1", "h1-sa-1") for i in range(1000)))
    svc._hold_if_idle(1.0 + RATE_WINDOW)
    assert svc._busy
    assert _turn(svc, 2.5, HeartbeatRequest("r1", "c1", "h1-sa-1")) == 0.0
    assert frames_sent(svc.client)  # answered NOT_ACTIVE at once


def test_zero_turns_the_hold_off(active: tuple[ServerService, Harness]) -> None:
    svc, h = active
    handle = _grant(h)
    now = _window(svc, h, handle)
    svc.idle_hold = 0.0
    assert _turn(svc, now, HeartbeatRequest("r1", "c1", handle)) == 0.0


def test_the_hold_is_the_configured_one(active: tuple[ServerService, Harness]) -> None:
    svc, h = active
    assert svc.idle_hold == svc.cfg.idle_hold_ms / 1000.0 == 0.016
    handle = _grant(h)
    now = _window(svc, h, handle)
    svc.idle_hold = 0.002
    assert _turn(svc, now, HeartbeatRequest("r1", "c1", handle)) == 0.002


def test_the_hold_is_decided_last_after_the_pump(svc: ServerService) -> None:
    """A turn's checkouts are sent to the backends by the pump: deciding before it would
    hold their commit back."""
    svc.client = svc.ctx.socket(zmq.ROUTER)
    svc.ctl = svc.ctx.socket(zmq.REP)
    svc.by_socket = {}  # the backends' sockets (watched before the steps below)
    try:
        svc._add_steps()
        each_turn = [s.fn for s in svc.loop._steps if s.sock is None and not s.interval]
        assert each_turn[-1] == svc._hold_if_idle
        assert svc._pump in each_turn[:-1]
    finally:
        svc.client.close(linger=0)
        svc.ctl.close(linger=0)


def test_a_backend_down_does_not_stop_the_hold(active: tuple[ServerService, Harness]) -> None:
    """Its probes stay unanswered (until backend_timeout, probed again meanwhile); they
    are not what a client waits for."""
    svc, h = active
    handle = _grant(h)
    h.down.add("b3")
    now = _window(svc, h, handle)
    b3 = next(b for b in h.leader.backends if b.name == "b3")
    assert b3.outstanding and h.leader.role == Role.ACTIVE
    assert _turn(svc, now, HeartbeatRequest("r1", "c1", handle)) == IDLE_HOLD


def test_the_hold_stops_when_the_rate_drops(active: tuple[ServerService, Harness]) -> None:
    svc, h = active
    handle = _grant(h)
    now = _window(svc, h, handle)
    assert _turn(svc, now, HeartbeatRequest("r1", "c1", handle)) == IDLE_HOLD
    now = _window(svc, h, handle, rate=HOLD_MIN_RATE / 4)
    assert _turn(svc, now, HeartbeatRequest("r2", "c1", handle)) == 0.0
