"""Signals for a service loop (design.md §2, §10): one self-pipe, woken by the C-level
handler through `signal.set_wakeup_fd` and by `SignalPipe.wake` from any thread.

The Python-level handler only queues the signal number; the loop takes the queue after its
poll returns and runs each signal's action once, in the loop's thread, between two turns (so
an action never interrupts the protocol code halfway). Only the signals a service names are
caught; every other one keeps its previous disposition.
"""

from __future__ import annotations

import contextlib
import select
import signal
import socket
import threading
from collections import deque
from types import FrameType
from typing import Any


class SignalPipe:
    """The wake-up pipe of one loop and the signals it catches while installed."""

    def __init__(self) -> None:
        self._r, self._w = socket.socketpair()
        for s in (self._r, self._w):
            s.setblocking(False)
        self._poll = select.poll()  # for `wait`
        self._poll.register(self._r.fileno(), select.POLLIN)
        self._pending: deque[int] = deque()
        self._old_handlers: dict[int, Any] = {}
        self._old_wakeup_fd = -1
        self._installed = False

    def fileno(self) -> int:
        """The end the loop polls."""
        return self._r.fileno()

    def install(self, signums: tuple[int, ...]) -> bool:
        """Catch ``signums`` (main thread only: elsewhere nothing is installed, False)."""
        if not signums or threading.current_thread() is not threading.main_thread():
            return False
        self._old_wakeup_fd = signal.set_wakeup_fd(self._w.fileno(), warn_on_full_buffer=False)
        for signum in signums:
            self._old_handlers[signum] = signal.signal(signum, self._on_signal)
        self._installed = True
        return True

    def restore(self) -> None:
        """Give the signals back their previous handlers and wake-up fd."""
        if self._installed:
            for signum, handler in self._old_handlers.items():
                signal.signal(signum, handler)
            self._old_handlers.clear()
            signal.set_wakeup_fd(self._old_wakeup_fd)
            self._installed = False

    def close(self) -> None:
        self.restore()
        self._r.close()
        self._w.close()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._pending.append(signum)
        self.wake()  # should the handler run after the loop emptied the pipe

    def wake(self) -> None:
        """Make the loop's poll return (thread-safe; never blocks)."""
        with contextlib.suppress(OSError):
            self._w.send(b"\0")

    def wait(self, timeout_ms: float) -> None:
        """Block until the pipe is woken (a signal, `wake`) or ``timeout_ms`` passed
        (fractions rounded up); what is in the pipe stays for `take`."""
        self._poll.poll(timeout_ms)

    def take(self) -> list[int]:
        """Empty the pipe; the signals caught since the last call, each once, in order."""
        with contextlib.suppress(OSError):
            while self._r.recv(512):
                pass
        out: list[int] = []
        while self._pending:
            out.append(self._pending.popleft())
        return out
