"""The poll loop of a service (design.md §2): one thread, one `zmq.Poller`, steps run in the
order the service added them, timers, signals through a self-pipe, and a clean stop.

A service adds, in the order they must run within one turn:

- `watch(sock, fn)`: ``fn(now)`` when ``sock`` is readable;
- `each_turn(fn)`: ``fn(now)`` every turn (the server's leader pump, after the sockets);
- `every(interval, fn)`: ``fn(now)`` when due (the poll never sleeps past a due timer);

and a step may `hold` the next turn back a little, so that messages arriving meanwhile are
served by one wake-up instead of one each (the server after a turn of heartbeats only);

plus `serve_zap` (first in every turn) and `serve_ctl` (the control socket through a
`CommandRegistry`). `on_signal(signum, fn)` (or `stop_on_signals`) catches a signal from
`install_signals` (or `run`) until `run` returns, main thread only, and runs ``fn`` once per
delivery, in the loop, before the turn's steps; other signals keep their handlers. Logs are
buffered (`tmr.logs`, one write per turn) and flushed when the loop ends. While `run` runs,
the garbage collector's young generation is sized for a service (`tmr.serving.collector`).
`stop` may be called from any thread, or from a step or a signal action.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import zmq

from tmr.logs import configure
from tmr.logs import flush as flush_logs
from tmr.serving.collector import service_collector
from tmr.serving.commands import CtlServer
from tmr.serving.signals import SignalPipe
from tmr.serving.zap import ZapHandler

S = TypeVar("S")
Step = Callable[[float], None]


def configure_service_logs(kind: str, name: str, level: str) -> None:
    """Both services log the same way: JSON lines as ``tmr-<kind>[<name>]``, buffered and
    written once per loop turn (`ServiceLoop.run` flushes)."""
    configure(f"tmr-{kind}[{name}]", level, buffered=True)


@dataclass
class _Step:
    fn: Step
    sock: Any = None  # run when readable; None: every turn (or when due)
    interval: float = 0.0  # > 0: a timer
    due: float = 0.0


class ServiceLoop:
    def __init__(self) -> None:
        self.poller = zmq.Poller()
        self._steps: list[_Step] = []
        self._timers: list[_Step] = []  # the steps of `every`, for the poll's timeout
        self._signals = SignalPipe()
        self._actions: dict[int, Callable[[int], None]] = {}
        self.poller.register(self._signals.fileno(), zmq.POLLIN)
        self.stop_reason = ""
        self._signals_installed = False
        self._hold = 0.0  # seconds the next poll waits for (`hold`)

    # ------------------------------------------------------------------ what to serve

    def watch(self, sock: Any, fn: Step) -> None:
        self.poller.register(sock, zmq.POLLIN)
        self._steps.append(_Step(fn, sock))

    def each_turn(self, fn: Step) -> None:
        self._steps.append(_Step(fn))

    def every(self, interval: float, fn: Step, *, first: float | None = None) -> None:
        """``fn(now)`` every ``interval`` s, the first time after ``first`` s (default: one
        interval; 0: in the first turn)."""
        assert interval > 0
        delay = interval if first is None else first
        step = _Step(fn, None, interval, time.monotonic() + delay)
        self._steps.append(step)
        self._timers.append(step)

    def serve_zap(self, ctx: zmq.Context[zmq.Socket[bytes]], handler: ZapHandler) -> None:
        """Bind the ZAP handler on ``ctx`` (call before binding any CURVE server socket on it)
        and answer handshakes first in every turn."""
        sock = handler.bind(ctx)
        self.poller.register(sock, zmq.POLLIN)
        self._steps.insert(0, _Step(handler.serve, sock))

    def serve_ctl(self, sock: zmq.Socket[bytes], ctl: CtlServer[S]) -> None:
        ctl.sock = sock
        self.watch(sock, ctl.serve)

    def on_signal(self, signum: int, fn: Callable[[int], None]) -> None:
        self._actions[signum] = fn

    def stop_on_signals(self, *signums: int) -> None:
        """`stop` on each of ``signums``, with the signal's name as the reason."""
        for signum in signums:
            self.on_signal(signum, self._stop_by_signal)

    def _stop_by_signal(self, signum: int) -> None:
        self.stop(signal.Signals(signum).name)

    # ------------------------------------------------------------------ running

    def stop(self, reason: str = "stop requested") -> None:
        """Make `run` return after the current step (thread-safe)."""
        self.stop_reason = reason or "stop requested"
        self._signals.wake()

    def wake(self) -> None:
        """Make the poll return now (thread-safe), e.g. when a worker has answers."""
        self._signals.wake()

    def hold(self, seconds: float) -> None:
        """After this turn, wait up to ``seconds`` before polling the sockets again, so that
        the messages that arrive meanwhile are taken by one turn: one wake-up of this thread
        (and of ZeroMQ's I/O thread for the answers) for all of them instead of one each. A
        signal, `stop` or `wake` ends the wait at once, and it never runs past a due timer;
        a watched socket does not (the server's usage-report worker answers on one: such an
        answer waits too). For light, steady traffic only (the caller decides when): a
        message that arrives during the wait is served up to ``seconds`` later."""
        self._hold = max(self._hold, seconds)

    def install_signals(self) -> None:
        """Catch the signals given to `on_signal` from now on (`run` does it if not done):
        one that comes before `run` is served in its first turn."""
        if not self._signals_installed:
            self._signals.install(tuple(self._actions))
            self._signals_installed = True

    def run(self) -> str:
        """Serve until `stop`; the reason it stopped. Python's garbage collector is sized
        for a service while it serves (`tmr.serving.collector.service_collector`)."""
        self.install_signals()
        try:
            with service_collector():
                while not self.stop_reason:
                    self._turn()
        finally:
            self._signals.restore()
            self._signals_installed = False
            flush_logs()
        return self.stop_reason

    def _turn(self) -> None:
        ready = dict(self.poller.poll(self._timeout_ms()))
        now = time.monotonic()
        if self._signals.fileno() in ready:
            for signum in self._signals.take():
                self._actions[signum](signum)
        for step in self._steps:
            if self.stop_reason:
                break
            if step.interval:
                if now >= step.due:
                    step.fn(now)
                    step.due = now + step.interval
            elif step.sock is None or step.sock in ready:
                step.fn(now)
        flush_logs()
        if self._hold:
            self._wait_held()

    def _wait_held(self) -> None:
        wait_ms = self._hold * 1000.0
        self._hold = 0.0
        due_ms = self._timeout_ms()  # whole ms to the next timer, plus one
        if due_ms >= 0:
            wait_ms = min(wait_ms, due_ms - 1)
        if wait_ms > 0 and not self.stop_reason:
            self._signals.wait(wait_ms)  # only the self-pipe ends a hold

    def _timeout_ms(self) -> int:
        if not self._timers:
            return -1
        due = min(s.due for s in self._timers)
        return int(max(0.0, due - time.monotonic()) * 1000) + 1

    def close(self) -> None:
        """Close the self-pipe (after `run`; the service closes its own sockets)."""
        self._signals.close()
