"""The SDK's retry schedule (`tmr.client._retry.RetrySchedule`): where and when a request is
sent again after a timeout or a NOT_ACTIVE answer."""

from __future__ import annotations

import pytest

from tmr.client._retry import (
    ATTEMPT_TIMEOUT_MAX,
    HELD,
    HELD_MAX,
    NOT_ACTIVE_BACKOFF_MAX,
    NOT_ACTIVE_BACKOFF_MIN,
    STAY_WAIT,
    RetrySchedule,
    grown,
)


def _stay(r: RetrySchedule) -> list[float]:
    """The pauses while the schedule stays with its endpoint after NOT_ACTIVE answers."""
    here = r.index
    pauses: list[float] = []
    while True:
        pause = r.not_active()
        if r.index != here:
            assert not r.staying
            return pauses
        assert r.staying
        pauses.append(pause)


def test_a_timeout_moves_to_the_next_endpoint_with_a_longer_attempt() -> None:
    r = RetrySchedule(2, 0, 0.5)
    r.timed_out()
    assert (r.index, r.wait) == (1, 0.75)
    r.timed_out()
    assert (r.index, r.wait) == (0, 1.125)
    for _ in range(10):
        r.timed_out()
    assert r.wait == ATTEMPT_TIMEOUT_MAX
    assert grown(5.0) == 5.0  # a longer attempt timeout than the maximum is kept


def test_not_active_while_the_other_endpoint_is_silent_stays_with_the_one_that_answers() -> None:
    """The fail-over case: the active server died (its attempt timed out), the other one is
    the standby about to be promoted. Ask it again after a back-off, not the dead one, until
    the pauses add up to one more attempt on the silent endpoint; then try that one."""
    r = RetrySchedule(2, 0, 0.5)
    r.timed_out()  # endpoint 0 is silent; now 1, attempt 0.75 s
    assert _stay(r) == pytest.approx([0.05, 0.1, 0.2, 0.4])  # 0.75 s in all
    assert (r.index, r.wait) == (0, 0.75)  # then the silent one again


def test_a_not_active_the_server_held_is_asked_again_at_once_and_does_not_use_up_the_stay() -> None:
    """A server taking over holds a request before it answers NOT_ACTIVE (a standby answers
    at once): ask it again at once, however often, and stay."""
    r = RetrySchedule(2, 0, 0.5)
    r.timed_out()
    for _ in range(20):
        assert r.not_active(took=HELD) == 0.0
        assert (r.index, r.staying) == (1, True)
    assert r.not_active(took=0.3) == 0.0
    assert _stay(r) == pytest.approx([0.05, 0.1, 0.2, 0.4])  # the stay is all still there
    fresh = RetrySchedule(2, 0, 0.5)  # a held answer while the other one is not silent
    assert fresh.not_active(took=0.3) == 0.0 and fresh.index == 1 and not fresh.staying


def test_a_takeover_that_holds_requests_for_too_long_is_then_treated_as_a_standby() -> None:
    """Held answers are re-asked at once only up to HELD_MAX of held time in one stay: a
    promoted server stuck taking over must not keep the client from the silent endpoint,
    which may have been only slow."""
    r = RetrySchedule(2, 0, 0.5)
    r.timed_out()
    asks = 0
    while r.not_active(took=0.25) == 0.0:
        asks += 1
    assert asks == HELD_MAX / 0.25  # then the stay's pauses, as for a standby
    assert r.staying and r.index == 1
    assert sum(_stay_held(r)) == pytest.approx(0.75 - NOT_ACTIVE_BACKOFF_MIN)
    assert r.index == 0 and not r.staying


def _stay_held(r: RetrySchedule) -> list[float]:
    """The remaining pauses of a stay whose answers are all held."""
    here = r.index
    pauses: list[float] = []
    while True:
        pause = r.not_active(took=0.3)
        if r.index != here:
            return pauses
        pauses.append(pause)


def test_the_stay_is_bounded_by_the_grown_attempt_and_starts_again_after_each_timeout() -> None:
    r = RetrySchedule(2, 0, 0.5)
    r.timed_out()
    _stay(r)
    r.timed_out()  # the silent one is still silent: back to the one that answers
    assert (r.index, r.wait) == (1, 1.125)
    # The back-off starts again; the last pause ends the stay at 1.125 s.
    assert _stay(r) == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.375])


def test_not_active_from_a_standby_while_the_other_endpoint_was_not_tried_moves_on_at_once() -> (
    None
):
    """Both servers up, the client asked the standby first: the active one next, no pause."""
    r = RetrySchedule(2, 0, 0.5)
    assert r.not_active() == 0.0
    assert (r.index, r.staying) == (1, False)


def test_not_active_from_every_endpoint_in_a_row_backs_off() -> None:
    """A takeover under way: all answer NOT_ACTIVE; a pause after each round, doubling."""
    r = RetrySchedule(3, 0, 0.5)
    pauses = [r.not_active() for _ in range(12)]
    assert pauses == [0, 0, 0.05, 0, 0, 0.1, 0, 0, 0.2, 0, 0, 0.4]
    assert [r.not_active() for _ in range(3)][-1] == NOT_ACTIVE_BACKOFF_MAX


def test_one_endpoint_backs_off_after_every_not_active() -> None:
    """The VIP: the same endpoint again (the caller reconnects: the VIP may have moved)."""
    r = RetrySchedule(1, 0, 0.5)
    assert [r.not_active() for _ in range(6)] == [0.05, 0.1, 0.2, 0.4, 0.5, 0.5]
    assert (r.index, r.staying) == (0, False)
    assert r.attempt == 0.5  # no stay: the usual attempt, the VIP may move to the other host


def test_one_endpoint_asks_a_server_taking_over_again_at_once() -> None:
    """The VIP on a server taking over: a held answer (HELD or more after the request was
    sent) is asked again at once, so the request waits at the server for the takeover's end,
    not in a back-off of up to 0.5 s after it; up to HELD_MAX of held answers, then the
    back-off as for a standby."""
    r = RetrySchedule(1, 0, 0.5)
    assert [r.not_active() for _ in range(4)] == [0.05, 0.1, 0.2, 0.4]  # the standby
    asks = 0
    while (pause := r.not_active(took=0.25)) == 0.0:
        asks += 1
    assert asks == HELD_MAX / 0.25
    assert pause == r.not_active(took=0.25) == NOT_ACTIVE_BACKOFF_MAX
    assert (r.index, r.staying, r.attempt) == (0, False, 0.5)


def test_one_endpoint_keeps_the_connection_only_to_ask_a_server_taking_over_again() -> None:
    """A held answer proves the VIP is on the server taking over: asked again on the same
    connection (no CURVE handshake and ZAP request in the middle of its takeover). After an
    answer at once, a back-off and a new connection: the VIP may have moved."""
    r = RetrySchedule(1, 0, 0.5)
    r.not_active(took=0.001)
    assert not r.keeps_connection
    assert r.not_active(took=0.3) == 0.0 and r.keeps_connection
    r.not_active(took=0.001)
    assert not r.keeps_connection
    r.not_active(took=0.3)
    r.timed_out()
    assert not r.keeps_connection
    two = RetrySchedule(2, 0, 0.5)
    two.timed_out()
    two.not_active()
    assert two.staying and two.keeps_connection


def test_a_stay_waits_longer_for_the_server_that_answers() -> None:
    """While staying, an attempt waits at least STAY_WAIT: a server taking over may be in one
    long step (adopting a large table) and hold the request after it, and the client must not
    give up on it for the dead one. Back to the usual attempt once the stay ends."""
    r = RetrySchedule(2, 0, 0.5)
    assert r.attempt == 0.5
    r.timed_out()
    assert r.attempt == r.wait == 0.75  # on its way to the other endpoint: not staying yet
    r.not_active()
    assert r.staying and r.attempt == STAY_WAIT > r.wait
    assert r.not_active(took=0.3) == 0.0 and r.attempt == STAY_WAIT  # held, still staying
    r.timed_out()  # the server it stayed with went silent too
    assert not r.staying and r.attempt == r.wait == 1.125
    _stay(r)  # staying with endpoint 0 ... until the stay is used up
    assert not r.staying and r.attempt == r.wait


def test_an_endpoint_that_answers_is_no_longer_silent() -> None:
    """Three endpoints: a NOT_ACTIVE stays only while every other endpoint is silent, and an
    endpoint that answers (even NOT_ACTIVE) is no longer silent."""
    r = RetrySchedule(3, 0, 0.5)
    r.timed_out()  # 0 silent
    assert r.not_active() == 0.0 and r.index == 2  # 2 not tried yet: move on
    r.timed_out()  # 0 and 2 silent
    assert r.index == 0
    r.timed_out()  # 0 silent again; 1 is the only one answering
    assert r.index == 1
    assert sum(_stay(r)) == pytest.approx(r.wait)  # stayed; then 2
    assert r.index == 2
    r.timed_out()  # 2 silent again
    assert r.index == 0
    r.not_active()  # 0 answers: not silent any more
    assert r.index == 1
    r.not_active()  # 1 answers while 0 is not silent: move on, no stay
    assert r.index == 2 and not r.staying


@pytest.mark.parametrize(
    ("count", "index", "wait"), [(0, 0, 0.5), (2, 2, 0.5), (2, -1, 0.5), (1, 0, 0.0)]
)
def test_bad_arguments_are_refused(count: int, index: int, wait: float) -> None:
    with pytest.raises(ValueError):
        RetrySchedule(count, index, wait)
