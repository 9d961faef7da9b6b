"""The server's side of the denial record: which checkout answers are recorded (with who
asked), and that the buffer goes only to up backends that keep denial records."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.unit.fake_socket import FakeSocket, as_zmq_socket
from tmr.errors import ErrorCode
from tmr.protocol import peer_api
from tmr.protocol.client_api import CheckoutRequest, QueuedResult
from tmr.replication.leader import ClientReply, Effects
from tmr.replication.messages import Denials
from tmr.server.service import ServerService

KEY = (6000123, 42)


@pytest.fixture
def dealers(svc: ServerService) -> Iterator[dict[str, FakeSocket]]:
    fakes = {b.name: FakeSocket() for b in svc.leader.backends}
    svc.dealers = {name: as_zmq_socket(fake) for name, fake in fakes.items()}
    yield fakes


def _checkout(svc: ServerService, reply: ClientReply, monkeypatch: pytest.MonkeyPatch) -> None:
    def checkout(*args: Any, **kw: Any) -> Effects:
        fx = Effects()
        fx.replies.append(reply)
        return fx

    monkeypatch.setattr(svc.leader, "checkout", checkout)
    req = CheckoutRequest("r1", "c1", KEY[0], KEY[1], 2, user="ann", host="ws-1", pid=7)
    svc.dispatch(("id", False), req, 1.0, owner="K" * 40)


@pytest.mark.parametrize(
    ("code", "recorded"),
    [
        (ErrorCode.NO_LICENSE_AVAILABLE, True),
        (ErrorCode.POLICY_DENIED, True),
        (ErrorCode.QUORUM_LOST, True),
        (ErrorCode.LICENSE_EXPIRED, True),
        (ErrorCode.UNKNOWN_LICENSE, True),
        (ErrorCode.NOT_ACTIVE, False),
        (ErrorCode.BAD_REQUEST, False),
        (ErrorCode.UNKNOWN_HANDLE, False),
    ],
)
def test_which_answers_are_refusals(
    svc: ServerService,
    monkeypatch: pytest.MonkeyPatch,
    code: ErrorCode,
    recorded: bool,
) -> None:
    _checkout(svc, ClientReply(("id", False), "r1", error=code, message="why"), monkeypatch)
    rows = list(svc.denials.recent)
    assert len(rows) == (1 if recorded else 0)
    if recorded:
        (r,) = rows
        assert (r.code, r.firm, r.product, r.seats, r.rule) == (code.value, *KEY, 2, "why")
        assert (r.owner, r.user, r.host, r.pid, r.server) == ("K" * 40, "ann", "ws-1", 7, "tmr-a")


def test_a_queued_answer_is_not_a_refusal(
    svc: ServerService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _checkout(svc, ClientReply(("id", False), "r1", QueuedResult(True, 1, 5.0, 0.5)), monkeypatch)
    assert not svc.denials.recent


def test_the_buffer_goes_to_up_backends_that_keep_denials_only(
    svc: ServerService,
    dealers: dict[str, FakeSocket],
) -> None:
    for i in range(1500):
        svc.denials.record(float(i), "NO_LICENSE_AVAILABLE", *KEY, 1, user=f"u{i}")
    assert svc.flush_denials() == 0  # no backend said it keeps denials: kept buffered
    assert len(svc.denials.pending) == 1500
    b1, b2, _ = svc.leader.backends
    b1.up = b2.up = True
    svc.denial_backends = {"b1", "b3"}  # b3 keeps them but is down, b2 is up but older
    assert svc.flush_denials() == 1024 and len(svc.denials.pending) == 476  # one batch a turn
    assert svc.flush_denials() == 476 and not svc.denials.pending
    assert dealers["b2"].frames == dealers["b3"].frames == []
    got = [peer_api.decode_backend_frame(f) for f in dealers["b1"].frames]
    sent = [m for m in got if isinstance(m, Denials)]
    assert len(sent) == len(got)
    assert [len(m.rows) for m in sent] == [1024, 476]


def test_a_checkout_parked_during_a_takeover_is_recorded_when_refused(
    svc: ServerService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkout the leader parks (it answers when its takeover ends, with a later input's
    effects) is recorded from that answer, with who asked, as one answered at once is."""

    def parked(*args: Any, **kw: Any) -> Effects:
        return Effects(parked=True)

    monkeypatch.setattr(svc.leader, "checkout", parked)
    monkeypatch.setattr(type(svc.leader), "parked", property(lambda self: 1))
    req = CheckoutRequest("r1", "c1", KEY[0], KEY[1], 2, user="ann", host="ws-1", pid=7)
    svc.dispatch(("id", False), req, 1.0, owner="K" * 40)
    assert list(svc.denials.recent) == []  # not answered yet
    later = Effects()
    later.replies.append(
        ClientReply(("id", False), "r1", error=ErrorCode.NO_LICENSE_AVAILABLE, message="full")
    )
    monkeypatch.setattr(svc, "_send_payload", lambda token, payload: None)
    svc.apply(later)  # e.g. the tick in which the server turned active
    (row,) = svc.denials.recent
    assert (row.code, row.user, row.host, row.pid) == ("NO_LICENSE_AVAILABLE", "ann", "ws-1", 7)
    svc.apply(later)  # the same answer again: recorded once
    assert len(svc.denials.recent) == 1
