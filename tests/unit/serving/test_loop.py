"""`tmr.serving.loop.ServiceLoop`: step order, timers, stop from another thread, and signals
handled once each, in the loop (pytest runs tests in the main thread, where signals are)."""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time

import pytest
import zmq

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

    def last(now: float) -> None:
        seen.append("b")
        loop.stop("done")

    loop.each_turn(last)
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


def _three_ticks(loop: ServiceLoop, interval: float) -> list[float]:
    """A timer every ``interval`` s from the first turn that stops the loop ("three") at its
    third run: the times it ran."""
    ticks: list[float] = []

    def tick(now: float) -> None:
        ticks.append(now)
        if len(ticks) == 3:
            loop.stop("three")

    loop.every(interval, tick, first=0.0)
    return ticks


def _hold_every_turn(loop: ServiceLoop, seconds: float) -> threading.Event:
    """Every turn asks for a hold of ``seconds``; the event is set once one was asked for."""
    held = threading.Event()

    def hold(now: float) -> None:
        loop.hold(seconds)
        held.set()

    loop.each_turn(hold)
    return held


def test_a_timer_runs_again_only_after_its_interval() -> None:
    loop = ServiceLoop()
    ticks = _three_ticks(loop, 0.02)
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


def _pair(tag: str) -> tuple[zmq.Context[zmq.Socket[bytes]], zmq.Socket[bytes], zmq.Socket[bytes]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    a.bind(f"inproc://hold-{tag}")
    b.connect(f"inproc://hold-{tag}")
    return ctx, a, b


def test_a_hold_keeps_a_ready_socket_waiting_until_it_ends() -> None:
    """Messages that arrive during a hold are taken together by the turn after it."""
    ctx, inbox, peer = _pair("wait")
    loop = ServiceLoop()
    got: list[tuple[float, int]] = []
    sent_at: list[float] = []

    def take(now: float) -> None:
        n = 0
        while inbox.poll(0):
            inbox.recv()
            n += 1
        got.append((time.monotonic(), n))
        loop.stop("taken")

    def first_turn(now: float) -> None:
        if not sent_at:
            loop.hold(0.3)
            sent_at.append(time.monotonic())
            for _ in range(3):
                peer.send(b"m")  # readable at once, served after the hold

    loop.watch(inbox, take)
    loop.each_turn(first_turn)
    _bounded(loop)
    loop.wake()  # the first turn
    try:
        assert loop.run() == "taken"
    finally:
        loop.close()
        inbox.close(linger=0)
        peer.close(linger=0)
        ctx.term()
    assert len(got) == 1 and got[0][1] == 3  # one turn took all three
    assert got[0][0] - sent_at[0] >= 0.25


def test_stop_from_another_thread_ends_a_hold_at_once() -> None:
    loop = ServiceLoop()
    held = _hold_every_turn(loop, 60.0)
    loop.wake()
    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(loop.run()), daemon=True)
    start = time.monotonic()
    thread.start()
    assert held.wait(10)
    loop.stop("asked")
    thread.join(timeout=20)
    loop.close()
    assert not thread.is_alive() and result == ["asked"]
    assert time.monotonic() - start < 30  # not the 60 s of the hold


def test_a_hold_ends_when_a_timer_is_due() -> None:
    loop = ServiceLoop()
    _hold_every_turn(loop, 60.0)  # every turn asks for a minute
    ticks = _three_ticks(loop, 0.05)
    _bounded(loop)
    start = time.monotonic()
    try:
        assert loop.run() == "three"
    finally:
        loop.close()
    assert time.monotonic() - start < 30  # the timer ran on time, not after the holds
    assert all(b - a < 5.0 for a, b in itertools.pairwise(ticks))


def test_a_signal_ends_a_hold_at_once() -> None:
    loop = ServiceLoop()
    loop.stop_on_signals(signal.SIGTERM)
    held = _hold_every_turn(loop, 60.0)
    _bounded(loop)
    loop.wake()

    def send() -> None:
        if held.wait(10):
            os.kill(os.getpid(), signal.SIGTERM)

    sender = threading.Thread(target=send, daemon=True)
    start = time.monotonic()
    sender.start()
    try:
        assert loop.run() == "SIGTERM"
    finally:
        loop.close()
        sender.join(timeout=10)
    assert time.monotonic() - start < 30  # not the 60 s of the hold
