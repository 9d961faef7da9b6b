"""The crypt router (docs/design.md §6): a job exists only for its attempt in flight and gets
exactly one reply, whatever order results, timeouts, rejections and demotes come in."""

from __future__ import annotations

import random

import pytest

from tmr.errors import ErrorCode
from tmr.replication.crypt_router import CryptJob, CryptRouter
from tmr.replication.effects import Effects
from tmr.replication.messages import CryptResult

BACKENDS = ("b1", "b2", "b3")


class FakePort:
    """Every backend can serve unless `refuse` is set; sends are recorded."""

    def __init__(self) -> None:
        self.refuse: tuple[ErrorCode, str] | None = None
        self.sent: list[tuple[int, str, str]] = []  # (mid, backend, rid)
        self._mid = 0

    def crypt_refusal(self, job: CryptJob) -> tuple[ErrorCode, str] | None:
        return self.refuse

    def crypt_backends(self, job: CryptJob) -> list[str]:
        return [b for b in BACKENDS if b not in job.tried]

    def send_crypt(self, backend: str, job: CryptJob, now: float, fx: Effects) -> int:
        self._mid += 1
        self.sent.append((self._mid, backend, job.rid))
        return self._mid


def job(rid: str) -> CryptJob:
    return CryptJob("tok", rid, (1, 1), "h1", "c1", "hmac", b"x", 0, "k")


def ok(mid: int) -> CryptResult:
    return CryptResult(mid, True, b"mac")


def failed(mid: int, error: str = "internal") -> CryptResult:
    return CryptResult(mid, False, b"", error=error, message="boom")


def test_a_job_is_gone_once_answered_and_a_demote_then_answers_nothing_again() -> None:
    """The old defect: retries left stale entries, and a demote answered the call again."""
    port, fx = FakePort(), Effects()
    router = CryptRouter(port)
    router.start(job("r1"), 0.0, fx)
    ((mid1, _, _),) = port.sent
    router.on_timeout(mid1, 1.0, fx)  # retried on another backend
    mid2 = port.sent[-1][0]
    assert dict(router.in_flight) == {mid2: router.in_flight[mid2]}
    router.on_result(mid2, failed(mid2), "b2", 1.1, fx)  # and again
    mid3 = port.sent[-1][0]
    router.on_result(mid3, ok(mid3), "b3", 1.2, fx)
    assert [r.rid for r in fx.replies] == ["r1"] and fx.replies[0].ok
    assert not router.in_flight  # nothing left behind after its reply
    router.fail_all(ErrorCode.NOT_ACTIVE, "server demoted", fx)
    router.on_result(mid1, ok(mid1), "b1", 1.3, fx)  # a late answer to a retried attempt
    router.on_timeout(mid3, 2.0, fx)
    router.on_rejected(mid2, fx)
    assert len(fx.replies) == 1


def test_no_backend_left_answers_quorum_lost_once() -> None:
    port, fx = FakePort(), Effects()
    router = CryptRouter(port)
    router.start(job("r1"), 0.0, fx)
    for _ in BACKENDS:
        router.on_timeout(port.sent[-1][0], 1.0, fx)
    assert len(port.sent) == 3
    assert [(r.rid, r.error) for r in fx.replies] == [("r1", ErrorCode.QUORUM_LOST)]
    assert not router.in_flight


@pytest.mark.parametrize(
    ("refuse", "code"),
    [((ErrorCode.NOT_ACTIVE, "not active"), ErrorCode.NOT_ACTIVE), (None, ErrorCode.BAD_REQUEST)],
)
def test_a_refusal_or_a_bad_request_is_the_one_reply(
    refuse: tuple[ErrorCode, str] | None, code: ErrorCode
) -> None:
    port, fx = FakePort(), Effects()
    port.refuse = refuse
    router = CryptRouter(port)
    router.start(job("r1"), 0.0, fx)
    if refuse is None:
        mid = port.sent[-1][0]
        router.on_result(mid, failed(mid, ErrorCode.BAD_REQUEST.value), "b1", 0.1, fx)
    assert [r.error for r in fx.replies] == [code]
    assert not router.in_flight


@pytest.mark.parametrize("seed", range(200))
def test_any_order_of_events_gives_each_job_exactly_one_reply(seed: int) -> None:
    rnd = random.Random(seed)
    port, fx = FakePort(), Effects()
    router = CryptRouter(port)
    rids = [f"r{i}" for i in range(5)]
    for rid in rids:
        router.start(job(rid), 0.0, fx)
    for _ in range(40):
        mid, backend, rid = rnd.choice(port.sent)  # also stale attempts, on purpose
        kind = rnd.choice(("ok", "fail", "timeout", "rejected", "refuse", "demote"))
        port.refuse = (ErrorCode.NOT_ACTIVE, "x") if kind == "refuse" else None
        if kind == "ok":
            router.on_result(mid, ok(mid), backend, 1.0, fx)
        elif kind == "fail":
            router.on_result(mid, failed(mid), backend, 1.0, fx)
        elif kind in ("timeout", "refuse"):
            router.on_timeout(mid, 1.0, fx)
        elif kind == "rejected":
            router.on_rejected(mid, fx)
        elif rnd.random() < 0.2:
            router.fail_all(ErrorCode.NOT_ACTIVE, "demoted", fx)
        answered = [r.rid for r in fx.replies]
        assert len(answered) == len(set(answered)), answered  # never twice
        waiting = {j.rid for j in router.in_flight.values()}
        assert not waiting & set(answered)  # an answered job is in no table
        assert len(router.in_flight) == len(waiting)  # one attempt in flight per job
        assert waiting | set(answered) == set(rids)  # nor is a job lost unanswered
    router.fail_all(ErrorCode.NOT_ACTIVE, "demoted", fx)
    assert sorted(r.rid for r in fx.replies) == rids
    assert not router.in_flight
