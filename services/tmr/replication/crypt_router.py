"""Crypt calls routed to one backend at a time, each answered exactly once.

See docs/design.md §6 (every request answered) and §7.1. A crypt call (HMAC, seal, ...) is
served by one backend that holds the handle's product; a backend that fails or stays silent
for `crypt_timeout` is replaced by another one not tried yet, and when none is left the
client gets QUORUM_LOST.

The router keeps a job only under the message id of its attempt in flight: every way out of
an attempt (its result, its timeout, a rejection, a demote or fence) first takes the job out
of the table, and only a job taken out (or one never sent) is answered or tried again. So a
job cannot outlive its one reply, and a late answer or a second failure finds nothing to
answer.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from tmr.errors import ErrorCode
from tmr.protocol.results import CryptResult as CryptOutput
from tmr.replication.effects import ClientReply, Effects
from tmr.replication.messages import CryptResult
from tmr.replication.types import ProductKey


@dataclass
class CryptJob:
    token: Any
    rid: str
    key: ProductKey
    handle: str
    client_id: str
    operation: str
    data: bytes
    min_seq: int  # the entry of the handle's grant: a backend must have acked it
    owner: str
    tried: set[str] = field(default_factory=set)  # backends tried already


class CryptPort(Protocol):
    """What the router asks of the leader."""

    def crypt_refusal(self, job: CryptJob) -> tuple[ErrorCode, str] | None:
        """Why no backend may serve `job` now (None: some may)."""
        ...

    def crypt_backends(self, job: CryptJob) -> list[str]:
        """The backends that can serve `job`, not tried yet, in a stable order."""
        ...

    def send_crypt(self, backend: str, job: CryptJob, now: float, fx: Effects) -> int:
        """Send `job` to `backend`; return the message id of that attempt."""
        ...


class CryptRouter:
    def __init__(self, port: CryptPort) -> None:
        self._port = port
        self._in_flight: dict[int, CryptJob] = {}  # mid of the attempt in flight -> job
        self._rr = itertools.count()

    @property
    def in_flight(self) -> Mapping[int, CryptJob]:
        """The jobs with an attempt in flight, by its message id (read-only)."""
        return MappingProxyType(self._in_flight)

    def start(self, job: CryptJob, now: float, fx: Effects) -> None:
        """A new call: its first attempt, or its answer if no backend may serve it."""
        self._attempt(job, now, fx)

    def on_result(self, mid: int, msg: CryptResult, backend: str, now: float, fx: Effects) -> None:
        job = self._in_flight.pop(mid, None)
        if job is None:
            return
        if msg.ok:
            _reply(job, ClientReply(job.token, job.rid, CryptOutput(msg.data, backend)), fx)
        elif msg.error == ErrorCode.BAD_REQUEST.value:
            _fail(job, ErrorCode.BAD_REQUEST, msg.message, fx)
        else:
            self._attempt(job, now, fx)

    def on_timeout(self, mid: int, now: float, fx: Effects) -> None:
        """The attempt `mid` is given up: try another backend."""
        job = self._in_flight.pop(mid, None)
        if job is not None:
            self._attempt(job, now, fx)

    def on_rejected(self, mid: int, fx: Effects) -> None:
        """The backend has a newer promise: this server is fenced."""
        job = self._in_flight.pop(mid, None)
        if job is not None:
            _fail(job, ErrorCode.NOT_ACTIVE, "fenced", fx)

    def fail_all(self, code: ErrorCode, message: str, fx: Effects) -> None:
        """This server stops serving: answer every job in flight."""
        jobs, self._in_flight = list(self._in_flight.values()), {}
        for job in jobs:
            _fail(job, code, message, fx)

    def _attempt(self, job: CryptJob, now: float, fx: Effects) -> None:
        """Send the next attempt of `job`, which is in no table, or answer it."""
        refusal = self._port.crypt_refusal(job)
        if refusal is not None:
            _fail(job, *refusal, fx)
            return
        candidates = self._port.crypt_backends(job)
        if not candidates:
            _fail(job, ErrorCode.QUORUM_LOST, "no backend can serve this call", fx)
            return
        backend = candidates[next(self._rr) % len(candidates)]
        job.tried.add(backend)
        self._in_flight[self._port.send_crypt(backend, job, now, fx)] = job


def _fail(job: CryptJob, code: ErrorCode, message: str, fx: Effects) -> None:
    _reply(job, ClientReply(job.token, job.rid, error=code, message=message), fx)


def _reply(job: CryptJob, reply: ClientReply, fx: Effects) -> None:
    fx.replies.append(reply)
