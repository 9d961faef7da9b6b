"""`tmr admin release` on the server's control socket: the answer goes to the socket once the
leader answers, and the socket (keepalived's health checks use it too) never waits longer
than ADMIN_CTL_WAIT, whatever the leader does."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tmr.ctl import CtlError
from tmr.protocol.client_api import AdminReleaseResult
from tmr.replication.leader import ClientReply, Effects
from tmr.server.service import ADMIN_CTL_WAIT, ServerService

RELEASED_H1 = AdminReleaseResult(True, "h1-tmr-a-x", 6000123, 42, 1, "ann", "ws1", 7)


class FakeCtl:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, payload: bytes) -> None:
        self.sent.append(json.loads(payload))


@pytest.fixture
def svc(svc: ServerService) -> ServerService:
    """The shared service (tests/unit/conftest.py), its control socket a stand-in."""
    svc.ctl_server.sock = FakeCtl()
    return svc


def _sent(svc: ServerService) -> list[dict[str, Any]]:
    sock = svc.ctl_server.sock
    assert isinstance(sock, FakeCtl)
    return sock.sent


def test_a_standby_answers_the_release_at_once(svc: ServerService) -> None:
    assert svc.ctl_server.handle({"cmd": "release", "handle": "h1-tmr-b-x"}, 10.0) is None
    (answer,) = _sent(svc)
    assert answer["ok"] is False and answer["code"] == "NOT_ACTIVE"
    assert "standby" in answer["error"]
    assert not svc.ctl_server.pending


@pytest.mark.parametrize("handle", [None, 5, "", "h" * 257, "a\nb"])
def test_a_bad_handle_is_refused(svc: ServerService, handle: object) -> None:
    with pytest.raises(CtlError, match="handle"):
        svc.ctl_server.handle({"cmd": "release", "handle": handle}, 10.0)
    assert not svc.ctl_server.pending and _sent(svc) == []


def test_a_leader_that_does_not_answer_times_out_and_its_late_answer_is_dropped(
    svc: ServerService, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens: list[Any] = []

    def silent(token: Any, rid: str, handle: str, now: float, *, by: str) -> Effects:
        tokens.append(token)
        return Effects()

    monkeypatch.setattr(svc.leader, "admin_release", silent)
    assert svc.ctl_server.handle({"cmd": "release", "handle": "h1-tmr-a-x"}, 10.0) is None
    assert svc.ctl_server.pending and _sent(svc) == []
    svc._ctl_admin_overdue(10.0 + ADMIN_CTL_WAIT - 0.1)
    assert _sent(svc) == []
    svc._ctl_admin_overdue(10.0 + ADMIN_CTL_WAIT)
    (answer,) = _sent(svc)
    assert answer["ok"] is False and answer["code"] == "TIMEOUT"
    assert not svc.ctl_server.pending
    # The late answer (the socket may be serving another request by now) is dropped.
    late = Effects()
    late.replies.append(ClientReply(tokens[0], "ctl", RELEASED_H1))
    svc.apply(late)
    assert len(_sent(svc)) == 1


def test_the_answer_goes_to_the_socket_once(
    svc: ServerService, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens: list[Any] = []

    def noted(token: Any, rid: str, handle: str, now: float, *, by: str) -> Effects:
        tokens.append(token)
        return Effects()

    monkeypatch.setattr(svc.leader, "admin_release", noted)
    svc.ctl_server.handle({"cmd": "release", "handle": "h1-tmr-a-x"}, 10.0)
    done = Effects()
    done.replies.append(ClientReply(tokens[0], "ctl", RELEASED_H1))
    svc.apply(done)
    svc.apply(done)  # a duplicate is dropped
    svc._ctl_admin_overdue(10.0 + 2 * ADMIN_CTL_WAIT)  # nothing overdue any more
    assert _sent(svc) == [{"ok": True, **RELEASED_H1.to_wire()}]
    assert _sent(svc)[0]["released"] is True and _sent(svc)[0]["handle"] == "h1-tmr-a-x"


def test_the_queue_command_lists_the_leaders_queue(
    svc: ServerService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`tmr admin queue`: answered at once with the role and `Leader.queue_view`."""
    answer = svc.ctl_server.handle({"cmd": "queue"}, 10.0)
    assert answer == {"ok": True, "role": "standby", "queue": []}
    row = {"firm": 6000123, "product": 42, "position": 1, "seats": 2, "client_id": "c"}
    monkeypatch.setattr(svc.leader, "queue_view", lambda now: [dict(row, hold_left=now)])
    answer = svc.ctl_server.handle({"cmd": "queue"}, 12.5)
    assert answer is not None and answer["queue"] == [dict(row, hold_left=12.5)]
