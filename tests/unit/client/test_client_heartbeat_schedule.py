"""When a handle's next heartbeat is due (`tmr.client._heartbeats.next_heartbeat`): one
interval after the answer, or, after a late answer (a failover, a paused server), one
interval after the send, so that clients answered together after a failover or a pause keep
their own phases instead of heartbeating together ever after."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.client.fake_tmr_server import FakeServer
from tmr.client import Client
from tmr.client._heartbeats import LATE, next_heartbeat
from tmr.keys import NodeKeys
from tmr.protocol.client_api import HeartbeatRequest, Request

FIRM, PRODUCT = 6000123, 42


@pytest.fixture
def clients(service_keys: NodeKeys) -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(endpoint: str) -> Client:
        # An attempt outlasts the late answer below: no retry.
        made.append(Client([endpoint], service_keys.public, timeout=5.0, attempt_timeout=2.0))
        return made[-1]

    yield make
    for client in made:
        client.close()


def test_an_answer_in_time_is_followed_an_interval_after_it() -> None:
    """Clients the server answered together keep sharing its wake-ups."""
    assert next_heartbeat(100.0, 100.002, 10.0) == 110.002
    assert next_heartbeat(100.0, 100.0 + LATE - 0.01, 10.0) == pytest.approx(110.0 + LATE - 0.01)


def test_late_answers_keep_the_phase_of_their_send() -> None:
    """Three clients that sent at 1, 4 and 7 s, all answered at 15 s (a takeover's end):
    spread as before, not all at 25 s; none less than a quarter interval after the answer
    (17 would be 2 s after it: 27)."""
    due = [next_heartbeat(sent, 15.0, 10.0) for sent in (1.0, 4.0, 7.0)]
    assert due == [21.0, 24.0, 27.0]


def test_an_answer_later_than_an_interval_is_not_followed_by_one_at_once() -> None:
    assert next_heartbeat(0.0, 25.0, 10.0) == 30.0
    assert next_heartbeat(0.0, 30.0, 10.0) == 40.0  # exactly a step: the next one
    assert next_heartbeat(0.0, 19.999, 10.0) == 30.0  # 20 would be 1 ms after the answer


@given(
    st.floats(0, 1e6, allow_nan=False),
    st.floats(LATE, 1e4, allow_nan=False),
    st.floats(0.05, 1e3, allow_nan=False),
)
def test_always_after_the_answer_and_within_an_interval_of_it(
    sent: float, took: float, interval: float
) -> None:
    answered = sent + took
    due = next_heartbeat(sent, answered, interval)
    # never at once, never later than 1.25 intervals (the lease is three)
    assert answered + interval / 4 * (1 - 1e-9) - 1e-6 <= due
    assert due <= answered + 1.25 * interval * (1 + 1e-9) + 1e-6
    assert due >= sent + interval * (1 - 1e-9)


def test_a_bad_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="interval"):
        next_heartbeat(0.0, 1.0, 0.0)


def test_the_sdk_heartbeats_one_interval_after_the_send_of_a_late_answer(
    make_server: Callable[..., FakeServer], clients: Callable[..., Client]
) -> None:
    """The fake server answers the first heartbeat 1.2 s late (lease 6 s: every 2 s). The
    next one comes 2 s after the first was received, not 2 s after its answer."""
    received: list[float] = []

    def late_first_heartbeat(req: Request, server: FakeServer) -> None:
        if isinstance(req, HeartbeatRequest):
            received.append(time.monotonic())
            if len(received) == 1:
                time.sleep(LATE + 0.2)

    server = make_server(lease=6.0, hook=late_first_heartbeat)
    client = clients(server.endpoint)
    with client.checkout(FIRM, PRODUCT):
        server.wait_for(lambda: len(received) >= 2, timeout=8.0)
    gap = received[1] - received[0]
    # 2 s less the first heartbeat's way to the server (its connection is new); 3.2 s
    # when counted from the answer
    assert 1.5 < gap < 2.8, gap
