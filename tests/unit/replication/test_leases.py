"""The lease clock (docs/design.md §5): `due` returns exactly the leases that ran out, and a
scan costs those, not every held handle (issue 17)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tmr.replication import leases
from tmr.replication.leases import Leases

LEASE = 30.0
MARGIN = 1.0


def test_a_lease_is_due_only_after_its_end() -> None:
    ls = Leases(LEASE, MARGIN)
    ls.grant("h1", 0.0)
    assert ls.due(LEASE) == []  # never early: at its very end it still holds
    assert ls.due(LEASE + 0.01) == ["h1"]
    assert ls.due(LEASE + 1.0) == []  # once


def test_a_heartbeat_moves_the_end_without_growing_the_heap() -> None:
    ls = Leases(LEASE, MARGIN)
    ls.grant("h1", 0.0)
    for t in range(1, 1000):
        ls.extend("h1", t / 10)
    assert len(ls._heap) == 1
    end = 999 / 10 + LEASE
    assert ls.due(LEASE + 1.0) == []  # its old entry came up and was armed at the new end
    assert len(ls._heap) == 1
    assert ls.due(end) == []
    assert ls.due(end + 0.01) == ["h1"]


def test_an_adopted_lease_restarts_with_the_margin() -> None:
    ls = Leases(LEASE, MARGIN)
    ls.restart("h1", 10.0)
    assert ls.due(10.0 + LEASE + MARGIN) == []
    assert ls.due(10.0 + LEASE + MARGIN + 0.01) == ["h1"]


def test_a_takeover_restarts_every_adopted_lease_at_once() -> None:
    ls = Leases(LEASE, MARGIN)
    ls.grant("h0", 0.0)
    ls.restart_all(["h1", "h2", "h3"], 10.0)
    assert len(ls) == 4
    assert ls.due(LEASE + 0.01) == ["h0"]
    assert ls.due(10.0 + LEASE + MARGIN) == []
    ls.extend("h2", 20.0)  # a heartbeat since
    assert sorted(ls.due(10.0 + LEASE + MARGIN + 0.01)) == ["h1", "h3"]
    assert ls.due(20.0 + LEASE + 0.01) == ["h2"]


def test_a_heartbeat_of_a_handle_without_a_lease_starts_one() -> None:
    ls = Leases(LEASE, MARGIN)
    ls.extend("h1", 0.0)
    assert ls.due(LEASE + 0.01) == ["h1"]


def test_a_dropped_lease_is_never_due_and_the_heap_stays_bounded() -> None:
    ls = Leases(LEASE, MARGIN)
    ls.grant("kept", 0.0)
    for i in range(10 * leases.COMPACT_MIN):  # checkout + release cycles
        ls.grant(f"h{i}", i / 1000)
        ls.drop(f"h{i}")
    assert len(ls._heap) <= 2 * len(ls) + leases.COMPACT_MIN
    assert ls.due(1000.0) == ["kept"]


def test_again_looks_at_a_lease_at_the_next_scan() -> None:
    ls = Leases(LEASE, MARGIN)
    ls.grant("h1", 0.0)
    assert ls.due(31.0) == ["h1"]
    ls.again("h1", 31.0)  # e.g. its grant is still waiting for the commit
    assert ls.due(31.25) == ["h1"]
    ls.drop("h1")
    ls.again("h1", 31.25)  # dropped: nothing to look at
    assert ls.due(40.0) == []


def test_a_scan_touches_only_the_leases_that_came_up() -> None:
    ls = Leases(LEASE, MARGIN)
    for i in range(10_000):
        ls.grant(f"h{i}", float(i))
    assert ls.due(LEASE + 5.5) == [f"h{i}" for i in range(6)]
    assert len(ls._heap) == 10_000 - 6  # the other entries were not taken out and put back


def test_clear_forgets_every_lease() -> None:
    ls = Leases(LEASE, MARGIN)
    ls.grant("h1", 0.0)
    ls.clear()
    assert ls.due(100.0) == [] and len(ls) == 0 and "h1" not in ls


OPS = st.lists(
    st.tuples(
        st.sampled_from(["grant", "extend", "restart", "drop", "scan", "again"]),
        st.integers(0, 7),  # handle
        st.floats(0.0, 20.0),  # time step
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(OPS)
def test_due_is_the_full_walk_over_every_lease(ops: list[tuple[str, int, float]]) -> None:
    """Against the walk it replaces: after any grants, heartbeats, restarts, drops and
    scans, `due(now)` returns exactly the leases that ended before `now` (and the caller
    then expires them, or hands one back with `again`)."""
    ls = Leases(LEASE, MARGIN)
    until: dict[str, float] = {}  # the reference: every lease's end
    returned: set[str] = set()  # due, not dropped, not handed back
    now = 0.0
    for op, n, step in ops:
        h = f"h{n}"
        now += step
        if op == "grant" and h not in until:
            ls.grant(h, now)
            until[h] = now + LEASE
        elif op == "extend" and h in until and h not in returned:
            ls.extend(h, now)
            until[h] = max(until[h], now + LEASE)
        elif op == "restart" and h not in until:
            ls.restart(h, now)
            until[h] = now + LEASE + MARGIN
        elif op == "drop":
            ls.drop(h)
            until.pop(h, None)
            returned.discard(h)
        elif op == "again" and h in returned:
            ls.again(h, now)
            returned.discard(h)
        elif op == "scan":
            got = ls.due(now)
            assert len(got) == len(set(got))
            want = {x for x, end in until.items() if end < now and x not in returned}
            assert set(got) == want
            returned |= want
