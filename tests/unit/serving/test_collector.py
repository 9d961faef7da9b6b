"""`tmr.serving.collector`: while a service's loop runs, the young generation is sized so
that objects in flight do not fill the oldest generation (no full collection walking every
held handle every few seconds), and the thresholds are put back after; the cyclic collector
is paused for one bulk step and running again afterwards, whatever happens in the step; the
server decodes and handles a bulk backend frame (a takeover's table) with it paused, and
everyday frames without; after a bulk step what it built is frozen (out of the collector's
reach), and an adopted table holds no reference cycle (so freezing it leaks nothing)."""

from __future__ import annotations

import gc
import weakref
from collections import deque
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
import zmq

from tmr.server.service import ServerService
from tmr.serving.collector import (
    BULK_FRAME,
    YOUNG_THRESHOLD,
    bulk_step,
    frozen,
    gc_paused,
    service_collector,
    thaw,
)
from tmr.serving.loop import ServiceLoop


@pytest.fixture(autouse=True)
def collector_running() -> Iterator[None]:
    assert gc.isenabled()
    thresholds = gc.get_threshold()
    yield
    assert gc.isenabled(), "a test left the collector paused"
    assert gc.get_threshold() == thresholds, "a test left the thresholds changed"


# ------------------------------------------------------------------ sized for a service


class Entry:
    """A request in flight (the leader's entry awaiting the backends): container objects."""

    __slots__ = ("key", "ops", "rid")

    def __init__(self, rid: int) -> None:
        self.rid = rid
        self.ops = [("checkout", rid)]
        self.key = (rid, str(rid))


def collections(turns: int, per_turn: int = 400, in_flight: int = 3) -> tuple[int, int, int]:
    """Collections of each generation (young, 1, full) while a server-like heap serves
    `turns` loop turns: 50,000 long-lived records (held handles), each turn reading
    `per_turn` requests whose objects stay alive for `in_flight` turns (entries awaiting the
    backends) and leaving 20 reference cycles behind as garbage (what only the collector
    frees). A young collection that starts within a turn finds the requests in flight and
    promotes them. The heap that was there before (pytest's) is frozen, so that only this
    one counts (CPython's rule: a full collection once what was promoted since the last one
    exceeds a quarter of the oldest generation)."""
    counts = [0, 0, 0]

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            counts[info["generation"]] += 1

    gc.collect()
    gc.freeze()
    try:
        held = [[i, str(i)] for i in range(50_000)]
        gc.collect()
        flight: deque[list[Entry]] = deque(maxlen=in_flight)
        gc.callbacks.append(count)
        try:
            for t in range(turns):
                flight.append([Entry(t * per_turn + i) for i in range(per_turn)])
                for _ in range(20):
                    cycle: list[object] = []
                    cycle.append(cycle)
        finally:
            gc.callbacks.remove(count)
        del held, flight
    finally:
        gc.unfreeze()
    return counts[0], counts[1], counts[2]


def test_requests_in_flight_start_no_full_collection_while_a_service_runs() -> None:
    """At CPython 3.11's default thresholds (set here, whatever this Python's are), the
    requests in flight are promoted to the oldest generation and start full collections,
    each of which walks all 50,000 held records; sized for a service, the same turns still
    collect their garbage in young collections, and start no full one."""
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    try:
        young, _, full = collections(1_000)
        assert young >= 100 and full >= 3  # the defaults (the test can fail)
        with service_collector():
            assert gc.get_threshold()[0] == YOUNG_THRESHOLD
            young, _, full = collections(1_000)
        assert young >= 1 and full == 0
    finally:
        gc.set_threshold(*before)


def test_sized_in_the_block_and_put_back_after_also_by_an_exception() -> None:
    before = gc.get_threshold()
    with pytest.raises(ValueError, match="boom"), service_collector():
        assert gc.get_threshold() == (YOUNG_THRESHOLD, before[1], before[2])
        raise ValueError("boom")
    assert gc.get_threshold() == before


def test_overlapping_services_put_the_thresholds_back_when_the_last_ends() -> None:
    """As two services in threads of one process would: the first ends first."""
    before = gc.get_threshold()
    first, second = ExitStack(), ExitStack()
    first.enter_context(service_collector())
    second.enter_context(service_collector())
    first.close()
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD
    second.close()
    assert gc.get_threshold() == before


def test_a_larger_threshold_set_by_the_program_is_kept() -> None:
    before = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD * 2, before[1], before[2])
    try:
        with service_collector():
            assert gc.get_threshold()[0] == YOUNG_THRESHOLD * 2
    finally:
        gc.set_threshold(*before)


def test_automatic_collection_switched_off_stays_off() -> None:
    before = gc.get_threshold()
    gc.set_threshold(0, before[1], before[2])
    try:
        with service_collector():
            assert gc.get_threshold()[0] == 0
        assert gc.get_threshold()[0] == 0
    finally:
        gc.set_threshold(*before)


def test_thresholds_the_program_sets_in_the_block_stay_after_it() -> None:
    before = gc.get_threshold()
    try:
        with service_collector():
            gc.set_threshold(5_000, before[1], before[2])
        assert gc.get_threshold() == (5_000, before[1], before[2])
    finally:
        gc.set_threshold(*before)


def test_a_service_entering_later_sizes_thresholds_lowered_meanwhile() -> None:
    before = gc.get_threshold()
    with ExitStack() as first:
        first.enter_context(service_collector())
        gc.set_threshold(700, before[1], before[2])  # something lowered them
        with service_collector():
            assert gc.get_threshold()[0] == YOUNG_THRESHOLD
    assert gc.get_threshold() == before


def test_the_service_loop_serves_with_the_collector_sized_and_puts_it_back() -> None:
    before = gc.get_threshold()
    loop = ServiceLoop()
    seen: list[tuple[int, int, int]] = []
    loop.every(60.0, lambda now: None, first=0.0)  # the first poll returns at once

    def record(now: float) -> None:
        seen.append(gc.get_threshold())
        loop.stop("done")

    loop.each_turn(record)
    try:
        assert loop.run() == "done"
    finally:
        loop.close()
    assert seen == [(YOUNG_THRESHOLD, before[1], before[2])]
    assert gc.get_threshold() == before


def test_a_step_that_raises_ends_the_loop_with_the_thresholds_put_back() -> None:
    before = gc.get_threshold()
    loop = ServiceLoop()
    loop.every(60.0, lambda now: None, first=0.0)  # the first poll returns at once

    def fail(now: float) -> None:
        raise RuntimeError("step failed")

    loop.each_turn(fail)
    try:
        with pytest.raises(RuntimeError, match="step failed"):
            loop.run()
    finally:
        loop.close()
    assert gc.get_threshold() == before


# ------------------------------------------------------------------ paused for a bulk step


def test_paused_in_the_block_and_running_after() -> None:
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():  # nested: one pause
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_running_again_after_an_exception() -> None:
    with pytest.raises(ValueError, match="boom"), gc_paused():
        raise ValueError("boom")
    assert gc.isenabled()


def test_not_paused_unless_asked() -> None:
    with gc_paused(False):
        assert gc.isenabled()


def test_a_collector_switched_off_by_the_program_stays_off() -> None:
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


class FakeDealer:
    """What `_drain_backend` reads of a backend socket: queued single-frame messages."""

    def __init__(self, frames: list[bytes]) -> None:
        self.frames = frames

    def recv(self, flags: int = 0) -> bytes:
        if not self.frames:
            raise zmq.Again()
        return self.frames.pop(0)

    def get(self, option: int) -> int:
        if option == zmq.EVENTS:
            return zmq.POLLIN if self.frames else 0
        return 0  # RCVMORE: one frame each


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Whatever a test freezes goes back to the collector afterwards."""
    yield
    thaw()


def _tracked(objs: list[list[int]]) -> int:
    """How many of `objs` the collector's generations hold (frozen ones are in none)."""
    ids = {id(o) for o in objs}
    return sum(1 for o in gc.get_objects() if id(o) in ids)


def test_a_bulk_step_freezes_what_it_built(unfrozen: None) -> None:
    with bulk_step():
        assert not gc.isenabled()
        table = [[i] for i in range(2_000)]  # lists: always tracked
    assert gc.isenabled()
    assert _tracked(table) == 0 and gc.get_freeze_count() >= len(table)
    del table  # still freed by reference counting


def test_an_everyday_step_or_one_that_raises_freezes_nothing(unfrozen: None) -> None:
    before = gc.get_freeze_count()
    with bulk_step(False):
        assert gc.isenabled()
        kept = [[i] for i in range(100)]
    with pytest.raises(ValueError, match="boom"), bulk_step():
        also = [[i] for i in range(100)]
        raise ValueError("boom")
    assert gc.isenabled() and gc.get_freeze_count() == before
    assert _tracked(kept) == len(kept) and _tracked(also) == len(also)


def test_the_server_handles_a_bulk_backend_frame_with_the_collector_paused(
    svc: ServerService, monkeypatch: pytest.MonkeyPatch, unfrozen: None
) -> None:
    svc.leader.promote(1.0)  # taking over: the table it gets is kept (frozen)
    seen: list[tuple[int, bool, int]] = []
    monkeypatch.setattr(
        svc,
        "_backend_reply",
        lambda name, frame, now: seen.append((len(frame), gc.isenabled(), gc.get_freeze_count())),
    )
    small, bulk = b"x" * 100, b"y" * BULK_FRAME
    sock = FakeDealer([small, bulk, small])
    svc._drain_backend(sock, "b1", 1.0)  # type: ignore[arg-type]
    assert [(n, on) for n, on, _ in seen] == [(100, True), (BULK_FRAME, False), (100, True)]
    # Frozen after the bulk frame's step, not before it: not counted during it, but after.
    assert seen[0][2] == seen[1][2] < seen[2][2]


def test_a_table_reaching_a_server_no_longer_taking_over_is_not_frozen(
    svc: ServerService, monkeypatch: pytest.MonkeyPatch, unfrozen: None
) -> None:
    """A backend's table that arrives after the takeover ended (a demote, a fence) is not
    the server's state: nothing frozen, nothing left for a thaw that may not come."""
    assert svc.leader.role.value == "standby"
    monkeypatch.setattr(svc, "_backend_reply", lambda name, frame, now: None)
    before = gc.get_freeze_count()
    svc._drain_backend(FakeDealer([b"y" * BULK_FRAME]), "b1", 1.0)  # type: ignore[arg-type]
    assert gc.get_freeze_count() == before
    with bulk_step(keep=lambda: False):
        table = [[i] for i in range(100)]
    assert gc.get_freeze_count() == before and _tracked(table) == len(table)


def test_an_adopted_table_holds_no_reference_cycle() -> None:
    """A takeover's adopted table is frozen (`bulk_step`), and freed only by reference
    counting when a later term replaces it: a cycle in it would never be collected. A
    second takeover by the same server replaces the first's table; the collector then
    finds no cyclic garbage at all."""
    from tests.unit.replication.harness import Harness
    from tests.unit.replication.test_takeover_tables import KEY, take_over
    from tmr.replication.types import LicenseInfo

    h = Harness({KEY: LicenseInfo(7, 500, True)})
    h.promote()
    for i in range(100):
        assert h.call("checkout", f"r{i}", f"c{i}", KEY[0], KEY[1], 1).ok
    take_over(h)
    sb = h.leaders["sb"]
    first = [weakref.ref(p) for p in sb._products.values()]  # each product's table
    assert first and sum(len(p.handles) for p in sb._products.values()) >= 50
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)  # cyclic garbage is kept in gc.garbage, not freed
    try:
        h.run(sb.demote(h.now), "sb")
        h.promote("sb", force=True, settle=2.5)
        assert sb.role.value == "active"
        gc.collect()
        assert gc.garbage == []
        assert all(ref() is None for ref in first)  # freed, by reference counting alone
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def test_a_bulk_step_freezes_before_the_collector_runs_again(unfrozen: None) -> None:
    """Frozen while still paused: a young collection started by the first allocation after
    the pause would walk all that the step built (48-188 ms after a takeover at 100,000)."""
    walked: list[int] = []

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            walked.append(gc.get_count()[0])

    gc.callbacks.append(callback)
    try:
        with bulk_step():
            table = [[i] for i in range(50_000)]  # far beyond any young threshold
    finally:
        gc.callbacks.remove(callback)
    assert all(count < 50_000 for count in walked), walked
    assert _tracked(table) == 0


@pytest.mark.parametrize("event", ["demote", "fenced", "promote_yielded"])
def test_the_end_of_a_term_gives_what_was_frozen_back_to_the_collector(
    svc: ServerService, event: str, unfrozen: None
) -> None:
    from tmr.replication.effects import Effects

    with bulk_step():
        table = [[i] for i in range(1_000)]
    svc.apply(Effects(events=[{"event": "active", "server": "s"}]))
    assert _tracked(table) == 0  # still frozen while the term goes on
    svc.apply(Effects(events=[{"event": event, "server": "s"}]))
    assert gc.get_freeze_count() == 0 and _tracked(table) == len(table)


def _uncountable() -> int:
    raise AssertionError("counted the frozen objects (CPython walks them all)")


def test_whether_anything_is_frozen_is_known_without_counting_it(
    monkeypatch: pytest.MonkeyPatch, unfrozen: None
) -> None:
    """`frozen` is asked for every request with events: it must not count the frozen
    objects (`gc.get_freeze_count` walks the permanent generation, 7 ms at a million)."""
    monkeypatch.setattr(gc, "get_freeze_count", _uncountable)
    assert not frozen()
    with bulk_step(keep=lambda: False):
        [[i] for i in range(100)]
    assert not frozen()
    with bulk_step():
        table = [[i] for i in range(1_000)]
    assert frozen() and _tracked(table) == 0
    thaw()
    assert not frozen() and _tracked(table) == len(table)


def test_a_server_after_a_takeover_serves_requests_without_counting_frozen_objects(
    svc: ServerService, monkeypatch: pytest.MonkeyPatch, unfrozen: None
) -> None:
    """After a takeover's bulk step, every checkout's effects carry events (`handle_granted`):
    the server looks for a term's end among them only while something is frozen, and knows
    that without counting (a count per checkout cost 300 instead of 3,000 checkouts a
    second after a takeover at 10,000 held handles, `bench.run` growth section)."""
    from tmr.replication.effects import Effects

    with bulk_step():
        table = [[i] for i in range(1_000)]
    monkeypatch.setattr(gc, "get_freeze_count", _uncountable)
    for _ in range(3):
        svc.apply(Effects(events=[{"event": "handle_granted", "handle": "h", "server": "s"}]))
    assert frozen() and _tracked(table) == 0
    svc.apply(Effects(events=[{"event": "demote", "server": "s"}]))
    assert not frozen() and _tracked(table) == len(table)
