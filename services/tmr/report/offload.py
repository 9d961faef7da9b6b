"""Report work in a separate process of low CPU priority.

A usage report decodes, merges and summarises hundreds of thousands of rows: seconds of
CPU. In a thread of a service it would hold the interpreter lock (a single msgpack call on a
4 MB frame holds it for a quarter of a second) and delay the poll loop; on a small host it
would also take the CPU the loop needs. `Offload.run` runs such a function in one worker
process (``spawn``: nothing of the service's sockets or threads is inherited) at nice 19, in a
session (and autogroup) of its own, so the kernel gives every service of the host the CPU
first, not only the one that started it. The process is started on first use, kept, and
exits when its service is gone.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

NICE = 19
AUTOGROUP = "/proc/self/autogroup"
PARENT_CHECK = 1.0  # seconds between two looks for the parent process

T = TypeVar("T")


def _lower_priority() -> None:
    """Nice 19, for this process as a whole; threads started later (ZeroMQ's I/O thread)
    inherit it. Not SCHED_IDLE: on a busy host that starves the report until its backend
    queries time out.

    With autogroups (Linux, `/proc/sys/kernel/sched_autogroup_enabled`, the default of most
    distributions) the kernel first shares the CPU between sessions, and a nice value only
    counts within its session: in the service's session this process would take, against
    every other process of the host (another service, a client), as much CPU as the service
    itself. So it starts a session of its own and gives that session's autogroup nice 19 as
    well (an unprivileged process may lower its own autogroup's priority). Where there is no
    autogroup (disabled, or the service runs in a cgroup of its own), the process nice stays."""
    with contextlib.suppress(OSError):
        os.setsid()
    with contextlib.suppress(OSError), open(AUTOGROUP, "w") as f:
        f.write(f"{NICE}\n")
    with contextlib.suppress(OSError):
        os.nice(NICE)


def _watch_parent(parent: int) -> None:
    """Exit when the service that started this process is gone: in a session of its own, it
    is no longer reached by a signal to the service's process group, and a service killed
    outright (SIGKILL) would leave it waiting for work forever."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK)
    os._exit(0)


def _init_worker(parent: int) -> None:
    _lower_priority()
    threading.Thread(target=_watch_parent, args=(parent,), name="parent-watch", daemon=True).start()


class Offload:
    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the worker process (both must pickle); its result or exception.
        A worker process that died is replaced on the next call."""
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(os.getpid(),),
            )
        try:
            return self._pool.submit(fn, *args).result()
        except BrokenProcessPool:
            self.close()
            raise

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def put_stop(jobs: queue.Queue[Any]) -> None:
    """Put the stop marker (None) on a bounded job queue of a report thread, dropping one
    queued job when it is full (its client retries)."""
    while True:
        try:
            jobs.put_nowait(None)
            return
        except queue.Full:
            with contextlib.suppress(queue.Empty):
                jobs.get_nowait()
