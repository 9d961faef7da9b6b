"""Report work in a separate process of low CPU priority.

A usage report decodes, merges and summarises hundreds of thousands of rows: seconds of
CPU. In a thread of a service it would hold the interpreter lock (a single msgpack call on a
4 MB frame holds it for a quarter of a second) and delay the poll loop; on a small host it
would also take the CPU the loop needs. `Offload.run` runs such a function in one worker
process (``spawn``: nothing of the service's sockets or threads is inherited) at nice 19, so
the kernel gives the services the CPU first. The process is started on first use and kept.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

NICE = 19

T = TypeVar("T")


def _lower_priority() -> None:
    """Nice 19; threads started later (ZeroMQ's I/O thread) inherit it. Not SCHED_IDLE: on a
    busy host that starves the report until its backend queries time out."""
    with contextlib.suppress(OSError):
        os.nice(NICE)


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
                initializer=_lower_priority,
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
