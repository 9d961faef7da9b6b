"""The running seat count under access modes against the full recount (issue 17, §7.6).

A wrong running count is a license leak (too low) or a lost seat (too high), so every table
that keeps one (`ProductLog` on the backends, the leader's `Product`, the acceptor's entry
check) is driven through random op sequences, with every mode, snapshots and releases of
handles nobody holds, and compared after every op with `seat_count` and with a recount
written here from the rules' text.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from tmr.replication.acceptor import Acceptor, AcceptorState
from tmr.replication.messages import (
    Accept,
    Accepted,
    AcceptEntry,
    EntryStatus,
    Snapshot,
    SnapshotEntry,
)
from tmr.replication.productlog import Product
from tmr.replication.types import (
    AccessMode,
    Epoch,
    Grant,
    HandleRecord,
    LicenseInfo,
    Op,
    ProductLog,
    Release,
    ReleaseReason,
    SeatCount,
    seat_count,
)

KEY = (6000123, 42)
E = Epoch(1, "sa")
MODES = list(AccessMode)


def recount(records: list[HandleRecord]) -> int:
    """The rules as the docs state them: each user_limit and exclusive handle its seats;
    the station_share handles of one (owner, user, host) the seats of the largest, once."""
    plain = sum(r.seats for r in records if r.mode is not AccessMode.STATION_SHARE)
    stations: dict[tuple[str, str, str], list[int]] = {}
    for r in records:
        if r.mode is AccessMode.STATION_SHARE:
            stations.setdefault((r.owner, r.user, r.host), []).append(r.seats)
    return plain + sum(max(v) for v in stations.values())


@dataclass(frozen=True)
class Do:
    kind: str  # "grant", "release", "snapshot"
    rec: HandleRecord | None = None
    handle: str = ""
    table: tuple[HandleRecord, ...] = ()


# Few owners, users and hosts, so stations collide often; some stations differ only in the
# owner key (the same user and host claimed under another key must not share).
records = st.builds(
    lambda i, seats, mode, owner, user, host: HandleRecord(
        f"h{i}", KEY[0], KEY[1], seats, "c", f"r{i}", 0.0, owner, user, host, 0, mode
    ),
    st.integers(0, 7),
    st.integers(1, 4),
    # station_share most often (its count is the one that is not a sum)
    st.sampled_from([*MODES, AccessMode.STATION_SHARE, AccessMode.STATION_SHARE]),
    st.sampled_from(["K1", "K1", "K2"]),
    st.sampled_from(["alice", "alice", "bob"]),
    st.sampled_from(["ws-1", "ws-1", "ws-2"]),
)
actions = st.one_of(
    st.builds(lambda r: Do("grant", rec=r), records),
    st.builds(lambda i: Do("release", handle=f"h{i}"), st.integers(0, 9)),  # h8, h9: unknown
    st.builds(lambda t: Do("snapshot", table=tuple(t)), st.lists(records, max_size=6)),
)


@settings(max_examples=1000, deadline=None)
@given(st.lists(actions, max_size=60))
def test_a_product_log_keeps_the_count_of_its_table(script: list[Do]) -> None:
    log = ProductLog()
    for do in script:
        if do.kind == "grant":
            assert do.rec is not None
            if do.rec.handle in log.handles:  # a grant of a held handle changes nothing
                before = log.handles[do.rec.handle]
                log.apply((Grant(do.rec),))
                assert log.handles[do.rec.handle] is before
            else:
                log.apply((Grant(do.rec),))
        elif do.kind == "release":
            log.apply((Release(do.handle, ReleaseReason.RELEASE, 0.0),))
        else:
            log.replace_handles(do.table)
        held = list(log.handles.values())
        assert log.seats() == seat_count(held) == recount(held)
        assert log.count.handles == len(held)
        assert log.count.exclusive == sum(r.mode is AccessMode.EXCLUSIVE for r in held)
        copy = log.copy()
        assert copy == log and copy.seats() == log.seats()


@settings(max_examples=1000, deadline=None)
@given(st.lists(actions, max_size=60))
def test_the_leaders_product_keeps_the_count_of_its_table(script: list[Do]) -> None:
    p = Product(KEY)
    for do in script:
        if do.kind == "grant":
            assert do.rec is not None
            if do.rec.handle not in p.handles:
                p.add(do.rec)
        elif do.kind == "release" and do.handle in p.handles:
            p.pop(do.handle)
        held = list(p.handles.values())
        assert p.seats() == recount(held)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(records, max_size=8),
    st.sampled_from(MODES),
    st.sampled_from([("K1", "alice", "ws-1"), ("K2", "alice", "ws-1"), ("K1", "bob", "ws-2")]),
    st.integers(1, 5),
)
def test_increase_is_what_adding_the_handle_adds(
    table: list[HandleRecord], mode: AccessMode, station: tuple[str, str, str], seats: int
) -> None:
    held = list({r.handle: r for r in table}.values())
    count = SeatCount(held)
    new = HandleRecord("new", KEY[0], KEY[1], seats, "c", "r", 0.0, *station, 0, mode)
    assert count.increase(mode, station, seats) == recount([*held, new]) - recount(held)
    conflict = count.conflict(mode)
    exclusive_held = any(r.mode is AccessMode.EXCLUSIVE for r in held)
    assert bool(conflict) == (exclusive_held or (mode is AccessMode.EXCLUSIVE and bool(held)))


def reference_accepts(table: dict[str, HandleRecord], ops: tuple[Op, ...], lq: int) -> bool:
    """Whether a backend of LQ `lq` takes `ops` on `table`: each grant of a new handle must
    keep the exclusive rule and the recount within LQ, with the ops before it applied."""
    work = dict(table)
    for op in ops:
        if isinstance(op, Grant):
            r = op.record
            if r.handle in work:
                continue
            held = list(work.values())
            if any(x.mode is AccessMode.EXCLUSIVE for x in held):
                return False
            if r.mode is AccessMode.EXCLUSIVE and held:
                return False
            work[r.handle] = r
            if recount(list(work.values())) > lq:
                return False
        elif isinstance(op, Release):
            work.pop(op.handle, None)
    return True


op_strategy = st.one_of(
    st.builds(Grant, records),
    st.builds(lambda i: Release(f"h{i}", ReleaseReason.EXPIRE, 0.0), st.integers(0, 9)),
)


@settings(max_examples=250, deadline=None)
@given(
    st.integers(1, 8),
    st.lists(st.lists(op_strategy, min_size=1, max_size=6), max_size=25),
    st.lists(st.tuples(st.integers(0, 24), st.lists(records, max_size=5)), max_size=3),
)
def test_the_acceptor_counts_and_refuses_as_the_recount_says(
    lq: int,
    entries: list[list[Op]],
    snapshots: list[tuple[int, list[HandleRecord]]],
) -> None:
    acc = Acceptor("b1", AcceptorState(E, True), {KEY: LicenseInfo(7, lq, True)})
    at = dict(snapshots)
    seq = 0
    mid = 0
    acc.committed(acc.handle(Snapshot(mid, E, (SnapshotEntry(KEY, seq, ()),), True), 0))
    for i, ops in enumerate(entries):
        mid += 1
        if i in at:  # a committed snapshot replaces the table (any count is recorded)
            seq += 1
            step = acc.handle(Snapshot(mid, E, (SnapshotEntry(KEY, seq, tuple(at[i])),), True), 0)
            acc.committed(step)
            assert isinstance(step.reply, Accepted)
            assert step.reply.results[KEY].status == EntryStatus.OK
            mid += 1
        log = acc.state.products.get(KEY, ProductLog())
        before = dict(log.handles)
        count_before = log.seats()
        expect = reference_accepts(before, tuple(ops), lq)
        step = acc.handle(Accept(mid, E, (AcceptEntry(KEY, seq + 1, tuple(ops)),)), 0)
        # Computing the reply never changes the state (the entry check undoes its count).
        now = acc.state.products.get(KEY, ProductLog())
        assert dict(now.handles) == before and now.seats() == count_before
        assert isinstance(step.reply, Accepted)
        status = step.reply.results[KEY].status
        assert (status == EntryStatus.OK) == expect
        acc.committed(step)
        if status == EntryStatus.OK:
            seq += 1
        held = list(acc.state.products[KEY].handles.values()) if KEY in acc.state.products else []
        assert (acc.state.products[KEY].seats() if held else 0) == recount(held)


@settings(max_examples=500, deadline=None)
@given(st.lists(records, max_size=8), st.lists(actions, max_size=30))
def test_a_trial_count_changes_as_a_copy_and_leaves_its_base(
    table: list[HandleRecord], script: list[Do]
) -> None:
    held = {r.handle: r for r in table}
    base = SeatCount(held.values())
    before = (base.total, base.exclusive, base.handles)
    trial = base.trial()
    work = dict(held)
    for do in script:
        if do.kind == "grant" and do.rec is not None and do.rec.handle not in work:
            st_ = do.rec.station
            assert trial.increase(do.rec.mode, st_, do.rec.seats) == recount(
                [*work.values(), do.rec]
            ) - recount(list(work.values()))
            work[do.rec.handle] = do.rec
            trial.add(do.rec)
        elif do.kind == "release" and do.handle in work:
            trial.remove(work.pop(do.handle))
        assert trial.total == recount(list(work.values()))
        assert trial.handles == len(work)
    assert (base.total, base.exclusive, base.handles) == before
    assert base.total == recount(list(held.values()))
    fresh = SeatCount(held.values())
    for r in held.values():  # the base's stations are intact: removing all reaches zero
        fresh.remove(r)
        base.remove(r)
    assert base.total == fresh.total == 0
