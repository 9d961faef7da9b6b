"""A takeover moves each handle table once, not six times (issue 17: 100,000 held handles).

PREPARE asks one backend for its tables (`Prepare.tables`); the others promise versions
only. The snapshot of entry 0 goes to each backend whose promise held the adopted table as
a reference to that table (`SnapshotEntry.base`), which a backend holding another version
refuses (and then gets the table). If the highest version's table is not among the promises
(the status the guess came from was stale), the leader asks its holders and only then adopts.
"""

from __future__ import annotations

from typing import Any

from tests.unit.replication.harness import Harness
from tmr.protocol.results import CheckoutResult
from tmr.replication.acceptor import Acceptor, AcceptorState
from tmr.replication.leader import Role
from tmr.replication.messages import (
    Accepted,
    EntryStatus,
    PeerRequest,
    Prepare,
    Snapshot,
    SnapshotEntry,
)
from tmr.replication.types import ZERO_EPOCH, Epoch, LicenseInfo, Version

KEY = (6000123, 42)


def held(h: Harness, backend: str) -> dict[str, Any]:
    log = h.acceptors[backend].state.products.get(KEY)
    return dict(log.handles) if log else {}


def record_requests(h: Harness) -> list[tuple[str, PeerRequest]]:
    """Every request the acceptors get from now on, with the backend's name."""
    seen: list[tuple[str, PeerRequest]] = []
    for name, acc in h.acceptors.items():
        real = acc.handle

        def handle(req: PeerRequest, now: float, name: str = name, real: Any = real) -> Any:
            seen.append((name, req))
            return real(req, now)

        acc.handle = handle  # type: ignore[method-assign]
    return seen


def cluster_with_handles(n: int = 5) -> tuple[Harness, list[str]]:
    h = Harness({KEY: LicenseInfo(8, 10, True)})
    h.promote()
    handles = []
    for i in range(n):
        reply = h.call("checkout", f"r{i}", f"c{i}", KEY[0], KEY[1], 1)
        assert reply.ok and isinstance(reply.result, CheckoutResult), reply
        handles.append(reply.result.handle)
    return h, handles


def take_over(h: Harness, settle: float = 2.5) -> None:
    h.stopped.add("sa")
    sb = h.add_server("sb")
    h.promote("sb", force=True, settle=settle)
    assert sb.role == Role.ACTIVE


def test_one_backend_sends_its_tables_and_every_backend_keeps_its_own() -> None:
    h, handles = cluster_with_handles()
    before = {n: held(h, n) for n in h.acceptors}
    seen = record_requests(h)
    take_over(h)
    prepares = [(n, m.tables) for n, m in seen if isinstance(m, Prepare)]
    # Versions from all three, then the table of one that holds the highest.
    assert prepares == [("b1", False), ("b2", False), ("b3", False), ("b1", True)]
    snaps = [(n, e) for n, m in seen if isinstance(m, Snapshot) for e in m.entries]
    assert sorted(n for n, _ in snaps) == ["b1", "b2", "b3"]
    assert all(e.base is not None and e.handles == () and e.seq == 0 for _, e in snaps)
    epoch = h.leaders["sb"].epoch
    for n, acc in h.acceptors.items():
        assert held(h, n) == before[n] and set(held(h, n)) == set(handles)
        assert acc.state.products[KEY].version == Version(epoch, 0)  # type: ignore[arg-type]
    # The new leader serves the adopted handles and counts their seats.
    assert h.leaders["sb"].status()["handles"] == len(handles)


def test_a_backend_refuses_a_reference_to_a_table_it_does_not_hold() -> None:
    acc = Acceptor("b1", AcceptorState(ZERO_EPOCH, True), {KEY: LicenseInfo(8, 10, True)})
    e1 = Epoch(1, "sa")
    ref = Snapshot(1, e1, (SnapshotEntry(KEY, 0, (), base=Version(Epoch(1, "sx"), 4)),))
    step = acc.handle(ref, 0.0)
    assert isinstance(step.reply, Accepted)
    result = step.reply.results[KEY]
    assert result.status == EntryStatus.REFUSED and "by reference" in result.reason
    assert step.write is None or not step.write.products


def test_a_backend_wiped_after_its_promise_gets_the_table_whole() -> None:
    h, handles = cluster_with_handles()
    seen = record_requests(h)
    # b3 promises, then loses its state before the snapshot (a restored backup): its table
    # is not the one it promised, so it refuses the reference and is sent the table.
    real = h.acceptors["b3"].handle

    def wipe_after_promise(req: PeerRequest, now: float) -> Any:
        step = real(req, now)
        if isinstance(req, Prepare):
            h.acceptors["b3"].state.products.clear()
        return step

    h.acceptors["b3"].handle = wipe_after_promise  # type: ignore[method-assign]
    take_over(h, settle=2.5)
    h.advance(3.0)  # past refuse_retry: the whole table follows
    assert set(held(h, "b3")) == set(handles)
    to_b3 = [e for n, m in seen if n == "b3" and isinstance(m, Snapshot) for e in m.entries]
    assert to_b3[0].base is not None
    assert any(e.base is None and {r.handle for r in e.handles} == set(handles) for e in to_b3)


def test_the_table_is_asked_of_a_backend_with_the_highest_version() -> None:
    h, handles = cluster_with_handles(3)
    h.cut.add(("sa", "b1"))  # b1 misses the last grant: b2 and b3 are ahead of it
    reply = h.call("checkout", "r9", "c9", KEY[0], KEY[1], 1)
    assert reply.ok and reply.result is not None
    assert len(held(h, "b1")) == 3 and len(held(h, "b2")) == 4
    seen = record_requests(h)
    take_over(h, settle=3.0)
    asked = [(n, m.tables) for n, m in seen if isinstance(m, Prepare)]
    assert [n for n, tables in asked if tables] == ["b2"]
    sb = h.leaders["sb"]
    assert sb.status()["handles"] == len(handles) + 1  # the highest version's table
    # b2 and b3 took entry 0 by reference; b1 the table itself, once entry 0 committed.
    to_b1 = [e for n, m in seen if n == "b1" and isinstance(m, Snapshot) for e in m.entries]
    assert [(e.base, len(e.handles), e.seq) for e in to_b1] == [(None, 4, 0)]
    assert isinstance(next(m for n, m in seen if n == "b1" and isinstance(m, Snapshot)), Snapshot)
    assert set(held(h, "b1")) == set(held(h, "b2"))


def test_a_holder_that_goes_down_before_entry_0_commits_lets_the_others_take_the_table() -> None:
    h, handles = cluster_with_handles(3)
    h.cut.add(("sa", "b1"))  # b1 is behind: only b2 and b3 hold the table sb adopts
    h.call("checkout", "r9", "c9", KEY[0], KEY[1], 1)
    h.stopped.add("sa")
    sb = h.add_server("sb")
    h.lose.append(("sb", "b3", Snapshot))  # b3's reference is lost, and b3 stays away
    seen = record_requests(h)
    h.run(sb.promote(h.now, force=True), "sb")
    h.down.add("b3")
    h.advance(4.0)
    assert sb.role == Role.ACTIVE  # with b2 (by reference) and b1 (the table)
    assert len(held(h, "b1")) == len(handles) + 1
    to_b1 = [e for n, m in seen if n == "b1" and isinstance(m, Snapshot) for e in m.entries]
    assert to_b1 and to_b1[0].base is None and to_b1[0].seq == 0


def test_a_backend_asked_for_its_tables_that_goes_down_does_not_stall_the_takeover() -> None:
    h, handles = cluster_with_handles(3)
    # b1 promises versions only, then goes away before it is asked for its tables: b2 and b3
    # hold the same version, so the leader adopts with the table of one of them.
    real = h.acceptors["b1"].handle

    def down_after_promise(req: PeerRequest, now: float) -> Any:
        step = real(req, now)
        if isinstance(req, Prepare):
            h.down.add("b1")
        return step

    h.acceptors["b1"].handle = down_after_promise  # type: ignore[method-assign]
    take_over(h, settle=6.0)
    assert h.leaders["sb"].status()["handles"] == len(handles)


def test_a_sole_holder_of_the_highest_version_that_goes_down_does_not_stall_the_takeover() -> None:
    h, handles = cluster_with_handles(3)
    h.cut.update({("sa", "b2"), ("sa", "b3")})  # a grant only b1 takes: never committed
    h.run(h.leader.checkout("tok", "r9", "c9", KEY[0], KEY[1], 1, h.now, owner="key-of-c9"))
    assert len(held(h, "b1")) == 4 and len(held(h, "b2")) == 3
    real = h.acceptors["b1"].handle

    def down_after_promise(req: PeerRequest, now: float) -> Any:
        step = real(req, now)
        if isinstance(req, Prepare):
            h.down.add("b1")  # it promised the highest version, and is gone
        return step

    h.acceptors["b1"].handle = down_after_promise  # type: ignore[method-assign]
    take_over(h, settle=6.0)  # adopted from b2 and b3, a quorum of promises
    assert h.leaders["sb"].status()["handles"] == len(handles)
    assert set(held(h, "b2")) == set(held(h, "b3")) == set(handles)
