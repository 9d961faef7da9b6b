"""`tmr.serving.loop.ServiceLoop`: step order, timers, stop from another thread, and signals
handled once each, in the loop (pytest runs tests in the main thread, where signals are)."""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time

import pytest

from tmr.serving.loop import ServiceLoop
from tmr.serving.signals import SignalPipe

MAX_TURNS = 10_000  # a loop that does not stop by then fails the test


def _bounded(loop: ServiceLoop) -> list[int]:
    """Count the turns; stop the loop (and fail) after MAX_TURNS."""
    turns = [0]

    def count(now: float) -> None:
        turns[0] += 1
        if turns[0] >= MAX_TURNS:
            loop.stop("too many turns")

    loop.each_turn(count)
    return turns


def test_steps_run_in_the_order_given_and_a_first_timer_runs_in_the_first_turn() -> None:
    loop = ServiceLoop()
    seen: list[str] = []
    loop.each_turn(lambda now: seen.append("a"))
    loop.every(60.0, lambda now: seen.append("tick"), first=0.0)
    loop.every(60.0, lambda now: seen.append("later"))  # not due for a minute
    loop.each_turn(lambda now: (seen.append("b"), loop.stop("done")))
    try:
        assert loop.run() == "done"
    finally:
        loop.close()
    assert seen == ["a", "tick", "b"]


def test_stop_from_another_thread_wakes_a_loop_that_waits_forever() -> None:
    loop = ServiceLoop()  # no timer: the poll has no timeout
    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(loop.run()), daemon=True)
    thread.start()
    loop.stop("asked")
    thread.join(timeout=10)
    loop.close()
    assert not thread.is_alive() and result == ["asked"]


def test_one_signal_runs_its_action_once_and_handlers_are_restored() -> None:
    before = signal.getsignal(signal.SIGHUP), signal.getsignal(signal.SIGTERM)
    loop = ServiceLoop()
    hups: list[int] = []
    loop.on_signal(signal.SIGHUP, hups.append)
    loop.on_signal(signal.SIGTERM, lambda n: loop.stop(signal.Signals(n).name))
    turns = _bounded(loop)
    sent_at: list[int] = []

    def drive(now: float) -> None:
        if not sent_at:
            os.kill(os.getpid(), signal.SIGHUP)
            sent_at.append(turns[0])
        elif hups and turns[0] >= sent_at[0] + 20:  # 20 turns after the action ran
            os.kill(os.getpid(), signal.SIGTERM)
        loop.wake()  # keep turning

    loop.each_turn(drive)
    loop.wake()  # the first turn
    try:
        assert loop.run() == "SIGTERM"
    finally:
        loop.close()
    assert hups == [signal.SIGHUP]
    assert (signal.getsignal(signal.SIGHUP), signal.getsignal(signal.SIGTERM)) == before


def test_a_signal_before_run_is_served_in_the_first_turn() -> None:
    loop = ServiceLoop()
    loop.on_signal(signal.SIGINT, lambda n: loop.stop("SIGINT"))
    ran: list[str] = []
    loop.each_turn(lambda now: ran.append("step"))
    loop.install_signals()
    os.kill(os.getpid(), signal.SIGINT)  # would raise KeyboardInterrupt without the handler
    try:
        assert loop.run() == "SIGINT"
    finally:
        loop.close()
    assert ran == []  # stopped before the turn's steps


def test_signals_are_not_caught_outside_the_main_thread() -> None:
    pipe = SignalPipe()
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(pipe.install((signal.SIGHUP,))))
    thread.start()
    thread.join(timeout=10)
    pipe.close()
    assert result == [False]


def test_a_timer_runs_again_only_after_its_interval() -> None:
    loop = ServiceLoop()
    ticks: list[float] = []

    def tick(now: float) -> None:
        ticks.append(now)
        if len(ticks) == 3:
            loop.stop("three")

    loop.every(0.02, tick, first=0.0)
    _bounded(loop)
    start = time.monotonic()
    try:
        assert loop.run() == "three"
    finally:
        loop.close()
    assert time.monotonic() - start >= 0.04
    assert all(b - a >= 0.02 for a, b in itertools.pairwise(ticks))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_signals_name_the_reason(signum: int) -> None:
    loop = ServiceLoop()
    loop.stop_on_signals(signum)
    loop.every(60.0, lambda now: os.kill(os.getpid(), signum), first=0.0)
    _bounded(loop)
    try:
        assert loop.run() == signal.Signals(signum).name
    finally:
        loop.close()
