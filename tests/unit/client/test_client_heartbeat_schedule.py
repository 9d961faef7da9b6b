"""When a handle's next heartbeat is due (`tmr.client._heartbeats.next_heartbeat`): one
interval after the answer, or, after a late answer (a failover, a paused server), one
interval after the send, so that clients answered together after a failover or a pause keep
their own phases instead of heartbeating together ever after; then moved onto the wall
clock's grid (`on_grid`), so that the clients of a site heartbeat in a few bursts a second.
The exact cases pass `wall_offset=0.0`: the monotonic clock read as the wall clock."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from fake_tmr_server import FakeServer
from hypothesis import given
from hypothesis import strategies as st

from tmr.client import Client
from tmr.client._heartbeats import GRID, LATE, grid_step, next_heartbeat, on_grid
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


def test_an_answer_in_time_is_followed_an_interval_after_it_on_the_grid() -> None:
    """Clients the server answered together keep sharing its wake-ups."""
    assert next_heartbeat(100.0, 100.002, 10.0, 0.0) == pytest.approx(110.1)
    assert next_heartbeat(100.0, 100.0 + LATE - 0.01, 10.0, 0.0) == pytest.approx(111.0)
    assert next_heartbeat(100.0, 100.0, 10.0, 0.0) == pytest.approx(110.0)  # on it: stays


def test_answers_within_one_step_of_the_grid_are_followed_together() -> None:
    """Heartbeats answered 50 ms apart (two turns of the server) whose next times fall in one
    step of the grid come back in one burst: at the same wall-clock time (for each offset of
    the monotonic clock from it tried here, 0.01 and 0.06 s fall in one step)."""
    for offset in (0.0, 0.03, 1.7e9 + 0.0123):
        first = next_heartbeat(0.0, 0.01, 10.0, offset)
        second = next_heartbeat(0.0, 0.06, 10.0, offset)
        assert first == second
        assert 10.06 <= first <= 10.11


def test_late_answers_keep_the_phase_of_their_send() -> None:
    """Three clients that sent at 1, 4 and 7 s, all answered at 15 s (a takeover's end):
    spread as before, not all at 25 s; none less than a quarter interval after the answer
    (17 would be 2 s after it: 27)."""
    due = [next_heartbeat(sent, 15.0, 10.0, 0.0) for sent in (1.0, 4.0, 7.0)]
    assert due == pytest.approx([21.0, 24.0, 27.0])
    due = [next_heartbeat(sent, 15.0, 10.0, 0.0) for sent in (1.02, 4.02, 7.02)]
    assert due == pytest.approx([21.1, 24.1, 27.1])


def test_an_answer_later_than_an_interval_is_not_followed_by_one_at_once() -> None:
    assert next_heartbeat(0.0, 25.0, 10.0, 0.0) == pytest.approx(30.0)
    assert next_heartbeat(0.0, 30.0, 10.0, 0.0) == pytest.approx(40.0)  # exactly a step
    assert next_heartbeat(0.0, 19.999, 10.0, 0.0) == pytest.approx(30.0)  # not 1 ms after


def test_the_grid_step_is_a_twentieth_of_a_short_interval() -> None:
    assert grid_step(10.0) == GRID
    assert grid_step(1.0) == pytest.approx(0.05)
    assert on_grid(1.01, 1.0, 0.0) == pytest.approx(1.05)
    assert next_heartbeat(0.0, 0.001, 0.05, 0.0) == pytest.approx(0.0525)  # 2.5 ms steps


def test_a_time_on_the_grid_stays_when_the_offset_is_read_again() -> None:
    """The load generator and the SDK read the wall clock's offset at each call: a time put
    on the grid by one read stays there with the next (microseconds apart), not a step on."""
    offset = 1.7e9 + 0.3
    due = on_grid(115.14, 10.0, offset)
    for jitter in (-5e-6, 0.0, 5e-6):
        assert on_grid(due, 10.0, offset + jitter) == pytest.approx(due, abs=1e-5)


@given(
    st.floats(0, 1e6, allow_nan=False),
    st.floats(0.05, 1e3, allow_nan=False),
    st.floats(-1e5, 1e5, allow_nan=False) | st.floats(1.6e9, 2.2e9, allow_nan=False),
)
def test_on_the_grid_at_most_one_step_later(due: float, interval: float, offset: float) -> None:
    step = grid_step(interval)
    moved = on_grid(due, interval, offset)
    assert due - 1e-3 * step - 1e-6 <= moved <= due + step * (1 + 1e-6) + 1e-6
    k = (moved + offset) / step
    assert abs(k - round(k)) < 1e-2  # a multiple of the step in wall-clock time (floats
    # near 2e9 s resolve about 0.5 us: a hundredth of the smallest step, 2.5 ms, is 25 us)


@given(
    st.floats(0, 1e6, allow_nan=False),
    st.floats(LATE, 1e4, allow_nan=False),
    st.floats(0.05, 1e3, allow_nan=False),
    st.floats(-1e5, 1e5, allow_nan=False) | st.floats(1.6e9, 2.2e9, allow_nan=False),
)
def test_always_after_the_answer_and_within_an_interval_of_it(
    sent: float, took: float, interval: float, offset: float
) -> None:
    answered = sent + took
    due = next_heartbeat(sent, answered, interval, offset)
    # never at once, never later than 1.25 intervals and a step of the grid (a twentieth of
    # an interval at most: 1.3 intervals; the lease is three)
    slack = grid_step(interval) * 1e-3 + 1e-6  # a time on the grid stays on it
    assert answered + interval / 4 * (1 - 1e-9) - slack <= due
    assert due <= answered + 1.3 * interval * (1 + 1e-9) + 1e-6
    assert due >= sent + interval * (1 - 1e-9) - slack


def test_a_bad_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="interval"):
        next_heartbeat(0.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="interval"):
        on_grid(0.0, -1.0)


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
