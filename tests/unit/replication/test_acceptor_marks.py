"""The acceptor's durable commit knowledge (docs/design.md §6): the known committed version
per product, and the grants of entries flagged `notice` marked with their entry's version
until a commit notice covers them."""

from __future__ import annotations

from tmr.replication.acceptor import Acceptor, AcceptorState
from tmr.replication.messages import Accept, AcceptEntry, Prepare, Promise, Snapshot, SnapshotEntry
from tmr.replication.types import (
    ZERO_EPOCH,
    Epoch,
    Grant,
    HandleRecord,
    LicenseInfo,
    Release,
    ReleaseReason,
    Version,
)

KEY = (6000123, 42)
E = Epoch(1, "sa")


def rec(h: str) -> HandleRecord:
    return HandleRecord(h, KEY[0], KEY[1], 1, f"c-{h}", f"r-{h}", 1.0)


def step(acc: Acceptor, msg: Accept | Snapshot) -> None:
    s = acc.handle(msg, 0.0)
    acc.committed(s)


def acceptor() -> Acceptor:
    acc = Acceptor("b1", AcceptorState(ZERO_EPOCH, True), {KEY: LicenseInfo(8, 5, True)})
    step(acc, Snapshot(1, E, (SnapshotEntry(KEY, 0, ()),), committed=True))
    return acc


def test_flagged_grants_are_marked_until_a_notice_covers_them() -> None:
    acc = acceptor()
    step(acc, Accept(2, E, (AcceptEntry(KEY, 1, (Grant(rec("h1")),)),)))  # not flagged
    step(acc, Accept(3, E, (AcceptEntry(KEY, 2, (Grant(rec("h2")),)),), notice=((KEY, 2),)))
    step(acc, Accept(4, E, (AcceptEntry(KEY, 3, (Grant(rec("h3")),)),), notice=((KEY, 3),)))
    assert acc.state.products[KEY].marked == {"h2": Version(E, 2), "h3": Version(E, 3)}
    promise = acc.handle(Prepare(5, Epoch(2, "sb")), 0.0).reply
    assert isinstance(promise, Promise)
    assert promise.marked == {KEY: (("h2", Version(E, 2)), ("h3", Version(E, 3)))}
    assert promise.commits == {KEY: Version(E, 0)}
    step(acc, Accept(6, E, (), ((KEY, 2),)))  # a commit notice of entry 2
    assert acc.state.products[KEY].marked == {"h3": Version(E, 3)}
    assert acc.known_commit == {KEY: Version(E, 2)}
    # A release drops the mark; a duplicate grant of a held handle is not marked again.
    step(
        acc,
        Accept(
            7,
            E,
            (AcceptEntry(KEY, 4, (Release("h3", ReleaseReason.RELEASE, 2.0), Grant(rec("h1")))),),
            notice=((KEY, 4),),
        ),
    )
    assert acc.state.products[KEY].marked == {}


def test_a_snapshot_keeps_the_marks_of_the_records_it_keeps() -> None:
    acc = acceptor()
    grants = (Grant(rec("h1")), Grant(rec("h2")))
    step(acc, Accept(2, E, (AcceptEntry(KEY, 1, grants),), notice=((KEY, 1),)))
    e2 = Epoch(2, "sb")
    # A takeover's proposal without h2 (aborted): h1 keeps its mark of epoch 1.
    step(acc, Snapshot(3, e2, (SnapshotEntry(KEY, 0, (rec("h1"),)),)))
    assert acc.state.products[KEY].marked == {"h1": Version(E, 1)}
    # Committed at (e2, 0): known, so no longer marked.
    step(acc, Snapshot(4, e2, (SnapshotEntry(KEY, 0, (rec("h1"),)),), committed=True))
    assert acc.state.products[KEY].marked == {}
    assert acc.known_commit == {KEY: Version(e2, 0)}


def test_a_notice_is_written_in_the_transaction_of_its_message() -> None:
    acc = acceptor()
    s = acc.handle(Accept(2, E, (AcceptEntry(KEY, 1, (Grant(rec("h1")),)),), ((KEY, 0),)), 0.0)
    assert s.write is not None and len(s.write.products) == 1 and s.write.known == ()
    s = acc.handle(Accept(3, E, (), ((KEY, 1),)), 0.0)  # a bare notice: its own write
    assert s.write is not None and s.write.known == ((KEY, Version(E, 1)),)
    assert acc.known_commit == {KEY: Version(E, 0)}  # applied only once committed
