"""What a backend records although it would refuse to vote for it: releases on an expired copy
and committed state above its own LQ. Grants are still checked against both."""

from __future__ import annotations

from tmr.protocol.peer_api import decode_request, encode_request
from tmr.replication.acceptor import Acceptor, AcceptorState
from tmr.replication.messages import (
    Accept,
    Accepted,
    AcceptEntry,
    EntryStatus,
    Snapshot,
    SnapshotEntry,
)
from tmr.replication.types import (
    CopyReason,
    Epoch,
    Grant,
    HandleRecord,
    LicenseInfo,
    Release,
    ReleaseReason,
)

KEY = (6000123, 42)
E = Epoch(1, "sa")


def rec(i: int) -> HandleRecord:
    return HandleRecord(f"h{i}", KEY[0], KEY[1], 1, f"c{i}", f"r{i}", 0.0)


def acceptor(lic: LicenseInfo) -> Acceptor:
    acc = Acceptor("b3", AcceptorState(E, True), {KEY: lic})
    step = acc.handle(Snapshot(1, E, (SnapshotEntry(KEY, 1, tuple(rec(i) for i in range(3))),)), 0)
    acc.committed(step)
    return acc


def status(acc: Acceptor, req: Accept | Snapshot) -> EntryStatus:
    step = acc.handle(req, 0.0)
    acc.committed(step)
    assert isinstance(step.reply, Accepted)
    return step.reply.results[KEY].status


def test_a_committed_snapshot_is_recorded_above_lq_a_proposal_is_not() -> None:
    table = tuple(rec(i) for i in range(5))  # 5 seats, LQ 3
    acc = acceptor(LicenseInfo(7, 3, True))
    assert status(acc, Snapshot(2, E, (SnapshotEntry(KEY, 2, table),))) == EntryStatus.REFUSED
    committed = Snapshot(3, E, (SnapshotEntry(KEY, 2, table),), committed=True)
    assert status(acc, committed) == EntryStatus.OK
    assert acc.state.products[KEY].seats() == 5
    # Above its LQ it still refuses to vote for a grant, and records releases.
    grant = Accept(4, E, (AcceptEntry(KEY, 3, (Grant(rec(9)),)),))
    assert status(acc, grant) == EntryStatus.REFUSED
    release = Accept(5, E, (AcceptEntry(KEY, 3, (Release("h0", ReleaseReason.RELEASE, 0.0),)),))
    assert status(acc, release) == EntryStatus.OK
    assert acc.state.products[KEY].seats() == 4


def test_an_expired_copy_records_releases_and_refuses_grants() -> None:
    acc = acceptor(LicenseInfo(7, 5, True))
    acc.set_licenses({KEY: LicenseInfo(7, 5, False, reason=CopyReason.EXPIRED)})
    grant = Accept(2, E, (AcceptEntry(KEY, 2, (Grant(rec(9)),)),))
    assert status(acc, grant) == EntryStatus.REFUSED
    release = Accept(3, E, (AcceptEntry(KEY, 2, (Release("h1", ReleaseReason.EXPIRE, 0.0),)),))
    assert status(acc, release) == EntryStatus.OK
    assert acc.state.products[KEY].seats() == 2
    # A proposal that adds a handle needs a valid copy; one that only drops handles, and
    # committed state, do not.
    more = (rec(0), rec(7))
    assert status(acc, Snapshot(4, E, (SnapshotEntry(KEY, 3, more),))) == EntryStatus.REFUSED
    assert status(acc, Snapshot(5, E, (SnapshotEntry(KEY, 3, (rec(0),)),))) == EntryStatus.OK
    done = Snapshot(6, E, (SnapshotEntry(KEY, 4, more),), committed=True)
    assert status(acc, done) == EntryStatus.OK


def test_the_committed_flag_crosses_the_wire() -> None:
    for flag in (True, False):
        msg = Snapshot(7, E, (SnapshotEntry(KEY, 2, (rec(1),)),), committed=flag)
        assert decode_request(encode_request(msg)) == msg


def test_a_wiped_backend_is_not_caught_up_by_a_snapshot_it_refused() -> None:
    """I10: a wiped backend whose copy is expired refuses the takeover's table; its promise
    must not count (it holds none of that product's state) until it takes one whole."""
    acc = Acceptor(
        "b1", AcceptorState(E, False), {KEY: LicenseInfo(7, 5, False, CopyReason.EXPIRED)}
    )
    table = (rec(0), rec(1))
    step = acc.handle(Snapshot(1, E, (SnapshotEntry(KEY, 0, table),)), 0.0)
    acc.committed(step)
    assert isinstance(step.reply, Accepted)
    assert step.reply.results[KEY].status == EntryStatus.REFUSED
    assert not acc.state.caught_up
    step = acc.handle(Snapshot(2, E, (SnapshotEntry(KEY, 1, table),), committed=True), 0.0)
    acc.committed(step)
    assert acc.state.caught_up and acc.state.products[KEY].seats() == 2
